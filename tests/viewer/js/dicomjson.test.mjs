import assert from 'node:assert/strict';
import { test } from 'node:test';

import { TAG, first, formatDate, isUID, num, nums, personName, str, values } from '../../../static/viewer/dicomjson.js';
import { dataset } from './helpers.mjs';

test('values are empty for an absent or empty attribute', () => {
  assert.deepEqual(values({}, TAG.Modality), []);
  assert.deepEqual(values(dataset({ Modality: null }), TAG.Modality), []);
  assert.deepEqual(values(null, TAG.Modality), []);
});

test('first gives the first value or the fallback', () => {
  assert.equal(first(dataset({ ImageType: ['ORIGINAL', 'PRIMARY'] }), TAG.ImageType), 'ORIGINAL');
  assert.equal(first({}, TAG.ImageType, 'none'), 'none');
});

test('num reads a decimal string as a number and falls back on garbage', () => {
  const ds = dataset({ SliceThickness: ' 2.5 ', RescaleSlope: 'abc', WindowCenter: [40, '-600'] });
  assert.equal(num(ds, TAG.SliceThickness), 2.5);
  assert.equal(num(ds, TAG.RescaleSlope, 1), 1);
  assert.equal(num(ds, TAG.WindowCenter, 0, 1), -600);
  assert.equal(num({}, TAG.SliceThickness), undefined);
  assert.equal(num(dataset({ SeriesNumber: '' }), TAG.SeriesNumber, '?'), '?');
});

test('nums reads every value of a multi-valued attribute', () => {
  assert.deepEqual(nums(dataset({ PixelSpacing: ['0.7', 0.8] }), TAG.PixelSpacing), [0.7, 0.8]);
});

test('str turns a number into text and an absent attribute into the fallback', () => {
  assert.equal(str(dataset({ SeriesNumber: 3 }), TAG.SeriesNumber), '3');
  assert.equal(str({}, TAG.Modality), '');
  assert.equal(str({}, TAG.Modality, 'OT'), 'OT');
});

test('a person name reads family name first, then the other components', () => {
  assert.equal(personName(dataset({ PatientName: { Alphabetic: 'DOE^JANE^^DR' } }), TAG.PatientName), 'DOE, DR JANE');
  assert.equal(personName(dataset({ PatientName: 'ROE^RICHARD' }), TAG.PatientName), 'ROE, RICHARD');
  assert.equal(personName(dataset({ PatientName: { Alphabetic: 'SOLO' } }), TAG.PatientName), 'SOLO');
  assert.equal(personName(dataset({ PatientName: { Ideographic: '山田^太郎' } }), TAG.PatientName), '山田, 太郎');
  assert.equal(personName({}, TAG.PatientName), '');
});

test('a DICOM date is shown as ISO and anything else is left alone', () => {
  assert.equal(formatDate('20240301'), '2024-03-01');
  assert.equal(formatDate('2024'), '2024');
  assert.equal(formatDate(undefined), '');
});

test('a UID is digits and dots, at most 64 characters', () => {
  assert.ok(isUID('1.2.840.10008.1.2.1'));
  for (const bad of ['', '1.2.', '.1', '1..2', '1.2a', '1'.repeat(65), 12, null]) assert.equal(isUID(bad), false, String(bad));
  assert.ok(isUID('1'.repeat(64)));
});
