import assert from 'node:assert/strict';
import { test } from 'node:test';

import { imagePlane, planeOf, referenceLine, toImage, toPatient } from '../../../static/viewer/geometry.js';
import { cross, dot, norm } from '../../../static/viewer/vec3.js';
import { dataset } from './helpers.mjs';

const desc = (rows, columns, spacing = [0.7, 0.7]) => ({ rows, columns, pixelSpacing: spacing });

/** An axial 64x64 image at height z. */
const axial = (z, frame = '1.2.3') => imagePlane(dataset({
  ImagePositionPatient: [-22.4, -22.4, z], ImageOrientationPatient: [1, 0, 0, 0, 1, 0], FrameOfReferenceUID: frame,
}), desc(64, 64));
/** A coronal 64x64 image at y, its top row at z = 0 running downwards. */
const coronal = (y, frame = '1.2.3') => imagePlane(dataset({
  ImagePositionPatient: [-22.4, y, 0], ImageOrientationPatient: [1, 0, 0, 0, 0, -1], FrameOfReferenceUID: frame,
}), desc(64, 64));

test('the cross product of the row and column directions is the slice normal', () => {
  assert.deepEqual(cross([1, 0, 0], [0, 1, 0]), [0, 0, 1]);
  assert.equal(dot([1, 2, 3], [4, 5, 6]), 32);
  assert.equal(norm([3, 4, 12]), 13);
});

test('an image plane needs position, orientation, spacing and size', () => {
  const plane = axial(-5);
  assert.deepEqual(plane.normal, [0, 0, 1]);
  assert.deepEqual(plane.spacing, [0.7, 0.7]);
  assert.equal(plane.frameOfReference, '1.2.3');
  assert.equal(imagePlane(dataset({ ImagePositionPatient: [0, 0, 0] }), desc(4, 4)), null);
  const degenerate = dataset({ ImagePositionPatient: [0, 0, 0], ImageOrientationPatient: [1, 0, 0, 1, 0, 0] });
  assert.equal(imagePlane(degenerate, desc(4, 4)), null);
  assert.equal(imagePlane(dataset({ ImagePositionPatient: [0, 0, 0], ImageOrientationPatient: [1, 0, 0, 0, 1, 0] }), desc(4, 4, null)), null);
});

test('image and patient coordinates convert both ways, pixel centres at +0.5', () => {
  const plane = axial(10);
  assert.deepEqual(toPatient(plane, 0.5, 0.5), [-22.4, -22.4, 10]);
  const p = toPatient(plane, 10.5, 20.5);
  assert.ok(Math.abs(p[0] - (-22.4 + 7)) < 1e-9 && Math.abs(p[1] - (-22.4 + 14)) < 1e-9);
  const back = toImage(plane, p);
  assert.ok(Math.abs(back.x - 10.5) < 1e-9 && Math.abs(back.y - 20.5) < 1e-9);
});

test('an axial slice crosses a coronal image along the row at its height', () => {
  const line = referenceLine(axial(-2.5 * 3), coronal(0));
  assert.ok(line);
  const expectedY = (2.5 * 3) / 0.7 + 0.5;
  for (const p of line) assert.ok(Math.abs(p.y - expectedY) < 1e-6, JSON.stringify(line));
  assert.deepEqual(line.map((p) => Math.round(p.x * 1e6) / 1e6 + 0).sort((a, b) => a - b), [0, 64]);
});

test('parallel planes, other frames of reference and missing planes have no reference line', () => {
  assert.equal(referenceLine(axial(0), axial(5)), null);
  assert.equal(referenceLine(axial(-5, '1.2.3'), coronal(0, '9.9.9')), null);
  assert.equal(referenceLine(null, coronal(0)), null);
});

test('a slice that misses the target image entirely still gives the line of its plane within the source', () => {
  // The coronal image spans z from 0 down to -44.8 mm; an axial slice at z = +10 mm is above it.
  const line = referenceLine(axial(10), coronal(0));
  assert.ok(line);
  for (const p of line) assert.ok(p.y < 0);
});

test('the plane of a display-set image is computed once, and multi-frame images have none', () => {
  const img = { meta: dataset({ ImagePositionPatient: [0, 0, 0], ImageOrientationPatient: [1, 0, 0, 0, 1, 0] }), desc: { ...desc(4, 4), numberOfFrames: 1 } };
  const plane = planeOf(img);
  assert.ok(plane);
  assert.equal(planeOf(img), plane);
  const clip = { meta: img.meta, desc: { ...img.desc, numberOfFrames: 10 } };
  assert.equal(planeOf(clip), null);
  assert.equal(planeOf(null), null);
});
