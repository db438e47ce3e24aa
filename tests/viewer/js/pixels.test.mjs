import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  buildLut, bytesPerFrame, decodeFrame, defaultWindow, describe, isMonochrome, modalityValue, renderFrame,
} from '../../../static/viewer/pixels.js';
import { ctSlice, dataset } from './helpers.mjs';

const LITTLE = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
/** The grey level of an RGBA pixel from the LUT, whatever the byte order. */
const grey = (rgba) => (LITTLE ? rgba & 0xff : rgba >>> 24);

test('describe reads what the renderer needs, with CT in Hounsfield units', () => {
  const d = describe(ctSlice({ sop: '1.1', z: 0, instance: 1, extra: { WindowCenter: [40, 400], WindowWidth: [400] } }));
  assert.equal(d.rows, 4);
  assert.equal(d.columns, 4);
  assert.equal(d.photometric, 'MONOCHROME2');
  assert.equal(d.intercept, -1024);
  assert.equal(d.units, 'HU');
  assert.deepEqual(d.windows, [{ center: 40, width: 400 }, { center: 400, width: 400 }]);
  assert.deepEqual(d.pixelSpacing, [0.5, 0.5]);
  assert.equal(d.imagerPixelSpacing, null);
  assert.ok(isMonochrome(d));
  assert.equal(bytesPerFrame(d), 32);
});

test('describe never keeps a rescale slope of zero or a non-positive spacing', () => {
  const d = describe(dataset({ Rows: 2, Columns: 2, RescaleSlope: 0, PixelSpacing: [0, 1], PhotometricInterpretation: 'rgb', SamplesPerPixel: 3 }));
  assert.equal(d.slope, 1);
  assert.equal(d.pixelSpacing, null);
  assert.equal(d.photometric, 'RGB');
  assert.equal(isMonochrome(d), false);
});

test('a signed 12-bit frame is sign-extended and its range found', () => {
  const d = { rows: 1, columns: 3, samplesPerPixel: 1, bitsAllocated: 16, bitsStored: 12, pixelRepresentation: 1 };
  // 0xFFF is -1 in 12 bits, 0x800 is -2048, 0x7FF is 2047; the high nibble is garbage.
  const bytes = new Uint8Array([0xff, 0xff, 0x00, 0xf8, 0xff, 0x07]);
  const frame = decodeFrame(bytes, d);
  assert.ok(frame.pixels instanceof Int16Array);
  assert.deepEqual([...frame.pixels], [-1, -2048, 2047]);
  assert.equal(frame.min, -2048);
  assert.equal(frame.max, 2047);
});

test('an unsigned frame is masked to its stored bits and copied out of the response', () => {
  const d = { rows: 1, columns: 2, samplesPerPixel: 1, bitsAllocated: 16, bitsStored: 10, pixelRepresentation: 0 };
  const bytes = new Uint8Array([0xff, 0xff, 0x01, 0x00, 0xaa]);
  const frame = decodeFrame(bytes, d);
  assert.deepEqual([...frame.pixels], [1023, 1]);
  bytes.fill(0);
  assert.deepEqual([...frame.pixels], [1023, 1]);
});

test('1-bit frames are unpacked least significant bit first', () => {
  const d = { rows: 1, columns: 8, samplesPerPixel: 1, bitsAllocated: 1, bitsStored: 1, pixelRepresentation: 0 };
  assert.deepEqual([...decodeFrame(new Uint8Array([0b00000101]), d).pixels], [1, 0, 1, 0, 0, 0, 0, 0]);
});

test('an unsupported Bits Allocated is refused', () => {
  assert.throws(() => decodeFrame(new Uint8Array(8), { rows: 1, columns: 1, samplesPerPixel: 1, bitsAllocated: 12 }), /Bits Allocated 12/);
});

test('the default window is the header one, else the frame range in modality units', () => {
  const d = { windows: [], slope: 2, intercept: -100 };
  assert.equal(modalityValue(d, 50), 0);
  assert.deepEqual(defaultWindow(d, { min: 0, max: 100 }), { center: 0, width: 200 });
  assert.deepEqual(defaultWindow({ ...d, windows: [{ center: 1, width: 2 }] }, { min: 0, max: 1 }), { center: 1, width: 2 });
});

test('the VOI LUT maps below the window to black, above to white, linearly between (PS3.3 C.11.2.1.2)', () => {
  const d = { slope: 1, intercept: 0, photometric: 'MONOCHROME2' };
  const { table, offset } = buildLut(d, { min: -10, max: 110 }, { center: 50, width: 101 }, false);
  assert.equal(offset, -10);
  assert.equal(table.length, 121);
  const at = (v) => grey(table[v - offset]);
  // c - 0.5 = 49.5, w - 1 = 100: x <= -0.5 is black, x > 99.5 white,
  // else ((x - 49.5) / 100 + 0.5) * 255, rounded.
  assert.equal(at(-10), 0);
  assert.equal(at(-1), 0);
  assert.equal(at(0), 1);
  assert.equal(at(50), 129);
  assert.equal(at(99), 254);
  assert.equal(at(100), 255);
  assert.equal(at(110), 255);
  assert.ok(at(25) < at(50) && at(50) < at(75));
});

test('MONOCHROME1 and the user inversion each flip the greys, and together cancel', () => {
  const frame = { min: 0, max: 255 };
  const window = { center: 128, width: 256 };
  const plain = buildLut({ slope: 1, intercept: 0, photometric: 'MONOCHROME2' }, frame, window, false).table;
  const mono1 = buildLut({ slope: 1, intercept: 0, photometric: 'MONOCHROME1' }, frame, window, false).table;
  const both = buildLut({ slope: 1, intercept: 0, photometric: 'MONOCHROME1' }, frame, window, true).table;
  assert.equal(grey(plain[10]), 255 - grey(mono1[10]));
  assert.deepEqual(both, plain);
});

test('renderFrame writes opaque RGBA, and converts YBR_FULL colour to RGB', () => {
  const out = { data: new Uint8ClampedArray(4 * 2) };
  const d = { rows: 1, columns: 2, samplesPerPixel: 1, slope: 1, intercept: 0, photometric: 'MONOCHROME2' };
  renderFrame(d, { pixels: new Uint16Array([0, 255]), min: 0, max: 255 }, { center: 128, width: 256 }, false, out);
  assert.deepEqual([...out.data], [0, 0, 0, 255, 255, 255, 255, 255]);
  const colour = { rows: 1, columns: 1, samplesPerPixel: 3, planarConfiguration: 0, photometric: 'YBR_FULL' };
  const rgb = { data: new Uint8ClampedArray(4) };
  renderFrame(colour, { pixels: new Uint8Array([128, 128, 128]), min: 0, max: 255 }, { center: 0, width: 1 }, false, rgb);
  assert.deepEqual([...rgb.data], [128, 128, 128, 255]);
  renderFrame(colour, { pixels: new Uint8Array([76, 85, 255]), min: 0, max: 255 }, { center: 0, width: 1 }, true, rgb);
  assert.ok(rgb.data[0] < 10 && rgb.data[1] > 240 && rgb.data[2] > 240, String(rgb.data)); // inverted red
});
