import assert from 'node:assert/strict';
import { test } from 'node:test';

import { angle, ellipseStats, length, spacingOf } from '../../../static/viewer/measure.js';

test('a length along a row uses the column spacing, along a column the row spacing', () => {
  const desc = { pixelSpacing: [0.5, 0.8], imagerPixelSpacing: null };
  assert.deepEqual(length(desc, { x: 10, y: 20 }, { x: 50, y: 20 }), { value: 32, unit: 'mm', text: '32.0 mm' });
  assert.equal(length(desc, { x: 20, y: 10 }, { x: 20, y: 50 }).text, '20.0 mm');
});

test('without Pixel Spacing a length says it is at the detector, or in pixels', () => {
  assert.equal(length({ pixelSpacing: null, imagerPixelSpacing: [0.2, 0.2] }, { x: 0, y: 0 }, { x: 10, y: 0 }).text, '2.0 mm (detector)');
  assert.equal(length({ pixelSpacing: null, imagerPixelSpacing: null }, { x: 0, y: 0 }, { x: 3, y: 4 }).text, '5.0 px');
  assert.deepEqual(spacingOf({ pixelSpacing: null, imagerPixelSpacing: null }), [1, 1, 'px']);
});

test('an angle is measured at its middle point in physical space', () => {
  const square = { pixelSpacing: [1, 1], imagerPixelSpacing: null };
  assert.equal(angle(square, { x: 10, y: 0 }, { x: 0, y: 0 }, { x: 0, y: 10 }).text, '90.0°');
  assert.equal(angle(square, { x: 10, y: 0 }, { x: 0, y: 0 }, { x: 10, y: 10 }).text, '45.0°');
  // Pixels twice as tall as wide: the same drawn diagonal is steeper in the patient.
  const tall = { pixelSpacing: [2, 1], imagerPixelSpacing: null };
  const value = angle(tall, { x: 10, y: 0 }, { x: 0, y: 0 }, { x: 10, y: 10 }).value;
  assert.ok(Math.abs(value - (Math.atan(2) * 180) / Math.PI) < 1e-9);
  assert.deepEqual(angle(square, { x: 0, y: 0 }, { x: 0, y: 0 }, { x: 1, y: 1 }), { value: 0, text: '0.0°' });
});

test('an ROI reports mean, SD, min, max and area of the pixels inside the ellipse, in modality units', () => {
  const columns = 8, rows = 8;
  const pixels = new Int16Array(columns * rows).fill(1064); // 40 HU with intercept -1024
  pixels[0] = 0; // a corner outside the ellipse
  const desc = { rows, columns, samplesPerPixel: 1, slope: 1, intercept: -1024, units: 'HU', pixelSpacing: [0.5, 0.5], imagerPixelSpacing: null };
  const stats = ellipseStats(desc, { pixels, min: 0, max: 1064 }, { x: 0, y: 0 }, { x: 8, y: 8 });
  assert.equal(stats.mean, 40);
  assert.equal(stats.sd, 0);
  assert.equal(stats.min, 40);
  assert.equal(stats.max, 40);
  assert.ok(stats.n > 40 && stats.n < 64);
  assert.ok(Math.abs(stats.area - Math.PI * 4 * 0.5 * 4 * 0.5) < 1e-9);
  assert.equal(stats.text, 'mean 40.0 HU, SD 0.0 HU, area 12.6 mm²');
});

test('an ROI with no pixels, too small or on a colour image, says so', () => {
  const desc = { rows: 4, columns: 4, samplesPerPixel: 1, slope: 1, intercept: 0, units: '', pixelSpacing: null, imagerPixelSpacing: null };
  const frame = { pixels: new Uint8Array(16), min: 0, max: 0 };
  assert.equal(ellipseStats(desc, null, { x: 0, y: 0 }, { x: 4, y: 4 }).text, 'ROI: no pixels');
  assert.equal(ellipseStats(desc, frame, { x: 1, y: 1 }, { x: 1.5, y: 3 }).n, 0);
  assert.equal(ellipseStats({ ...desc, samplesPerPixel: 3 }, frame, { x: 0, y: 0 }, { x: 4, y: 4 }).text, 'ROI: no pixels');
  assert.match(ellipseStats(desc, frame, { x: 0, y: 0 }, { x: 4, y: 4 }).text, /area 12\.6 px²$/);
});
