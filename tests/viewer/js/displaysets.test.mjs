import assert from 'node:assert/strict';
import { test } from 'node:test';

import { displaySetsOf, hangingOrder, isImageSeries } from '../../../static/viewer/displaysets.js';
import { ctSlice, dataset } from './helpers.mjs';

const SERIES = dataset({ SeriesInstanceUID: '1.2.3.4', Modality: 'CT', SeriesDescription: 'AXIAL', SeriesNumber: 2 });

test('single-frame images make one stack sorted along the normal, highest first', () => {
  const metadata = [
    ctSlice({ sop: '1.1', z: 0, instance: 1 }),
    ctSlice({ sop: '1.2', z: 40, instance: 2 }),
    ctSlice({ sop: '1.3', z: 20, instance: 3 }),
  ];
  const [stack, ...rest] = displaySetsOf('9.9', SERIES, metadata);
  assert.equal(rest.length, 0);
  assert.equal(stack.kind, 'stack');
  assert.equal(stack.id, '1.2.3.4#0');
  assert.deepEqual(stack.images.map((i) => i.sop), ['1.2', '1.3', '1.1']);
  assert.deepEqual(stack.images.map((i) => i.position), [40, 20, 0]);
  assert.equal(stack.description, 'AXIAL');
  assert.equal(stack.seriesNumber, 2);
  assert.equal(stack.study, '9.9');
  assert.equal(stack.localizer, false);
  assert.equal(stack.thumbnailSop, null);
});

test('without positions a stack is ordered by Instance Number', () => {
  const metadata = [3, 1, 2].map((n) => ctSlice({ sop: `1.${n}`, z: 0, instance: n, extra: { ImagePositionPatient: null } }));
  const [stack] = displaySetsOf('9.9', SERIES, metadata);
  assert.deepEqual(stack.images.map((i) => i.instanceNumber), [1, 2, 3]);
});

test('a multi-frame instance is a clip of its own, at its Cine Rate or from its Frame Time', () => {
  const clip = dataset({ SOPInstanceUID: '5.1', Rows: 8, Columns: 8, NumberOfFrames: 3, CineRate: 30, InstanceNumber: 2 });
  const timed = dataset({ SOPInstanceUID: '5.2', Rows: 8, Columns: 8, NumberOfFrames: 2, FrameTime: 40, InstanceNumber: 1 });
  const sets = displaySetsOf('9.9', SERIES, [clip, timed]);
  assert.deepEqual(sets.map((s) => [s.kind, s.cineRate, s.images.length, s.thumbnailSop]), [
    ['multiframe', 25, 2, '5.2'],
    ['multiframe', 30, 3, '5.1'],
  ]);
  assert.deepEqual(sets[1].images.map((i) => i.frame), [1, 2, 3]);
  assert.deepEqual(sets.map((s) => s.id), ['1.2.3.4#0', '1.2.3.4#1']);
});

test('instances without rows and columns are not images and are left out', () => {
  const sr = dataset({ SOPInstanceUID: '7.1', Modality: 'SR' });
  const sets = displaySetsOf('9.9', SERIES, [sr, ctSlice({ sop: '1.1', z: 0, instance: 1 })]);
  assert.equal(sets.length, 1);
  assert.equal(sets[0].images.length, 1);
});

test('a localizer is recognised by its description or Image Type', () => {
  const scout = dataset({ SeriesInstanceUID: '1.2.3.5', Modality: 'CT', SeriesDescription: 'Topogram 0.6' });
  assert.equal(displaySetsOf('9.9', scout, [ctSlice({ sop: '1.1', z: 0, instance: 1 })])[0].localizer, true);
  const typed = ctSlice({ sop: '1.2', z: 0, instance: 1, extra: { ImageType: ['ORIGINAL', 'PRIMARY', 'LOCALIZER'] } });
  assert.equal(displaySetsOf('9.9', SERIES, [typed])[0].localizer, true);
});

test('hanging puts the biggest diagnostic series first, localizers and non-images last', () => {
  const series = (uid, modality, count, description, number) =>
    dataset({ SeriesInstanceUID: uid, Modality: modality, NumberOfSeriesRelatedInstances: count, SeriesDescription: description, SeriesNumber: number });
  const ordered = hangingOrder([
    series('1', 'SR', 1000, 'REPORT', 1),
    series('2', 'CT', 500, 'SCOUT', 2),
    series('3', 'CT', 100, 'AXIAL', 3),
    series('4', 'CT', 300, 'CORONAL', 4),
    series('5', 'CT', 100, 'SAGITTAL', 5),
  ]);
  assert.deepEqual(ordered.map((s) => s['0020000E'].Value[0]), ['4', '3', '5', '2', '1']);
  assert.equal(isImageSeries(series('1', 'SR', 1, '', 1)), false);
  assert.equal(isImageSeries(series('1', 'MR', 1, '', 1)), true);
});
