// @ts-check
/**
 * The pixel pipeline, entirely in the browser: raw little-endian frames become
 * typed arrays (Uint8/Uint16/Int16...), then Modality LUT (rescale slope and
 * intercept), VOI LUT (window centre/width, PS3.3 C.11.2.1.2) and the
 * presentation (MONOCHROME1 inversion, user inversion) are folded into one
 * precomputed lookup table from stored value to RGBA, so a window/level change
 * costs one table rebuild and one pass over the pixels — no server round trip.
 */

import { TAG, num, nums, str, values } from './dicomjson.js';

/**
 * What the renderer needs to know about an instance (see `describe`).
 * @typedef {object} Desc
 * @property {number} rows
 * @property {number} columns
 * @property {number} samplesPerPixel
 * @property {string} photometric (0028,0004) Photometric Interpretation, upper case
 * @property {number} planarConfiguration
 * @property {number} bitsAllocated
 * @property {number} bitsStored
 * @property {number} pixelRepresentation 0 unsigned, 1 signed
 * @property {number} numberOfFrames
 * @property {number} slope (0028,1053) Rescale Slope, never 0
 * @property {number} intercept
 * @property {string} modality
 * @property {string} units 'HU' for CT, else (0028,1054) Rescale Type
 * @property {Window[]} windows from (0028,1050) Window Center and (0028,1051) Window Width
 * @property {number[] | null} pixelSpacing [between rows, between columns] in mm
 * @property {number[] | null} imagerPixelSpacing
 * @property {string[]} imageType
 */
/** A VOI window in modality units. @typedef {{center: number, width: number}} Window */
/** @typedef {Uint8Array | Uint16Array | Int16Array | Uint32Array | Int32Array} PixelArray */
/** A decoded frame: stored values and their range. @typedef {{pixels: PixelArray, min: number, max: number}} Frame */

/**
 * What the renderer needs to know about an instance, read from its DICOM JSON.
 * @param {import('./dicomjson.js').DicomJson} meta
 * @returns {Desc}
 */
export function describe(meta) {
  const modality = str(meta, TAG.Modality);
  const slope = num(meta, TAG.RescaleSlope, 1);
  const intercept = num(meta, TAG.RescaleIntercept, 0);
  const rescaleType = str(meta, TAG.RescaleType);
  const spacing = nums(meta, TAG.PixelSpacing);
  const imagerSpacing = nums(meta, TAG.ImagerPixelSpacing);
  const wc = nums(meta, TAG.WindowCenter);
  const ww = nums(meta, TAG.WindowWidth);
  return {
    rows: num(meta, TAG.Rows, 0),
    columns: num(meta, TAG.Columns, 0),
    samplesPerPixel: num(meta, TAG.SamplesPerPixel, 1),
    photometric: str(meta, TAG.PhotometricInterpretation, 'MONOCHROME2').toUpperCase(),
    planarConfiguration: num(meta, TAG.PlanarConfiguration, 0),
    bitsAllocated: num(meta, TAG.BitsAllocated, 16),
    bitsStored: num(meta, TAG.BitsStored, num(meta, TAG.BitsAllocated, 16)),
    pixelRepresentation: num(meta, TAG.PixelRepresentation, 0),
    numberOfFrames: num(meta, TAG.NumberOfFrames, 1),
    slope: slope === 0 ? 1 : slope,
    intercept,
    modality,
    units: rescaleType === 'HU' || (modality === 'CT' && rescaleType === '') ? 'HU' : rescaleType || '',
    windows: wc.map((c, i) => ({ center: c, width: ww[i] ?? ww[0] })).filter((w) => Number.isFinite(w.center) && w.width > 0),
    pixelSpacing: spacing.length === 2 && spacing.every((s) => s > 0) ? spacing : null,
    imagerPixelSpacing: imagerSpacing.length === 2 && imagerSpacing.every((s) => s > 0) ? imagerSpacing : null,
    imageType: values(meta, TAG.ImageType).map(String),
  };
}

/**
 * Bytes of one uncompressed frame.
 * @param {Desc} d
 * @returns {number}
 */
export function bytesPerFrame(d) {
  return d.rows * d.columns * d.samplesPerPixel * Math.ceil(d.bitsAllocated / 8);
}

/**
 * True for single-channel images handled by a VOI LUT.
 * @param {Desc} d
 * @returns {boolean}
 */
export function isMonochrome(d) {
  return d.samplesPerPixel === 1 && d.photometric.startsWith('MONOCHROME');
}

/**
 * A frame as a typed array of stored values plus its min/max.
 * The bytes are copied into an aligned buffer of their own so the response
 * body can be garbage-collected.
 * @param {Uint8Array} bytes
 * @param {Desc} d
 * @returns {Frame}
 */
export function decodeFrame(bytes, d) {
  const n = d.rows * d.columns * d.samplesPerPixel;
  /** @type {PixelArray} */
  let pixels;
  if (d.bitsAllocated === 8) {
    pixels = new Uint8Array(n);
    pixels.set(bytes.subarray(0, n));
  } else if (d.bitsAllocated === 16) {
    const copy = new Uint8Array(n * 2);
    copy.set(bytes.subarray(0, n * 2));
    pixels = d.pixelRepresentation === 1 ? new Int16Array(copy.buffer) : new Uint16Array(copy.buffer);
    if (d.bitsStored < 16) {
      const shift = 16 - d.bitsStored;
      if (d.pixelRepresentation === 1) {
        for (let i = 0; i < n; i++) pixels[i] = (pixels[i] << shift) >> shift;
      } else {
        const mask = (1 << d.bitsStored) - 1;
        for (let i = 0; i < n; i++) pixels[i] &= mask;
      }
    }
  } else if (d.bitsAllocated === 32) {
    const copy = new Uint8Array(n * 4);
    copy.set(bytes.subarray(0, n * 4));
    pixels = d.pixelRepresentation === 1 ? new Int32Array(copy.buffer) : new Uint32Array(copy.buffer);
  } else if (d.bitsAllocated === 1) {
    pixels = new Uint8Array(n);
    for (let i = 0; i < n; i++) pixels[i] = (bytes[i >> 3] >> (i & 7)) & 1;
  } else {
    throw new Error(`Bits Allocated ${d.bitsAllocated} is not supported`);
  }
  let min = Infinity;
  let max = -Infinity;
  if (d.samplesPerPixel === 1) {
    for (let i = 0; i < n; i++) {
      const v = pixels[i];
      if (v < min) min = v;
      if (v > max) max = v;
    }
  } else {
    min = 0;
    max = 255;
  }
  return { pixels, min, max };
}

/**
 * Modality value (e.g. HU) of a stored value.
 * @param {Pick<Desc, 'slope' | 'intercept'>} d
 * @param {number} stored
 * @returns {number}
 */
export function modalityValue(d, stored) {
  return stored * d.slope + d.intercept;
}

/**
 * The window to start with: the first one in the header, else the full range.
 * @param {Pick<Desc, 'windows' | 'slope' | 'intercept'>} d
 * @param {Pick<Frame, 'min' | 'max'>} frame
 * @returns {Window}
 */
export function defaultWindow(d, frame) {
  if (d.windows.length) return { ...d.windows[0] };
  const lo = modalityValue(d, frame.min);
  const hi = modalityValue(d, frame.max);
  return { center: (lo + hi) / 2, width: Math.max(1, hi - lo) };
}

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/**
 * An opaque grey as one RGBA pixel in the platform's byte order.
 * @param {number} g 0-255
 * @returns {number}
 */
function rgba(g) {
  return LITTLE_ENDIAN ? (0xff000000 | (g << 16) | (g << 8) | g) >>> 0 : ((g << 24) | (g << 16) | (g << 8) | 0xff) >>> 0;
}

const GRAY = new Uint32Array(256).map((_, g) => rgba(g));

/**
 * A lookup table from stored value (offset by `frame.min`) to RGBA.
 * @param {Pick<Desc, 'slope' | 'intercept' | 'photometric'>} d
 * @param {Pick<Frame, 'min' | 'max'>} frame
 * @param {Window} window
 * @param {boolean} invert
 * @returns {{table: Uint32Array, offset: number}}
 */
export function buildLut(d, frame, window, invert) {
  const size = frame.max - frame.min + 1;
  const table = new Uint32Array(Math.max(1, size));
  const c = window.center - 0.5;
  const w = Math.max(1, window.width) - 1;
  const lo = c - w / 2;
  const hi = c + w / 2;
  const flip = (d.photometric === 'MONOCHROME1') !== Boolean(invert);
  for (let i = 0; i < size; i++) {
    const x = (frame.min + i) * d.slope + d.intercept;
    let y;
    if (x <= lo) y = 0;
    else if (x > hi) y = 255;
    else y = w <= 0 ? 255 : Math.round(((x - c) / w + 0.5) * 255);
    if (y < 0) y = 0; else if (y > 255) y = 255;
    table[i] = GRAY[flip ? 255 - y : y];
  }
  return { table, offset: frame.min };
}

/**
 * Fill `out` (ImageData of the frame's size) from a frame.
 * @param {Desc} d
 * @param {Frame} frame
 * @param {Window} window
 * @param {boolean} invert
 * @param {{data: Uint8ClampedArray}} out
 */
export function renderFrame(d, frame, window, invert, out) {
  const dst = new Uint32Array(out.data.buffer);
  const px = frame.pixels;
  const n = d.rows * d.columns;
  if (d.samplesPerPixel === 1) {
    const { table, offset } = buildLut(d, frame, window, invert);
    if (offset === 0) {
      for (let i = 0; i < n; i++) dst[i] = table[px[i]];
    } else {
      for (let i = 0; i < n; i++) dst[i] = table[px[i] - offset];
    }
    return;
  }
  const rgb = out.data;
  const planar = d.planarConfiguration === 1;
  const ybr = d.photometric.startsWith('YBR_FULL');
  for (let i = 0; i < n; i++) {
    let r, g, b;
    if (planar) { r = px[i]; g = px[i + n]; b = px[i + 2 * n]; } else { r = px[3 * i]; g = px[3 * i + 1]; b = px[3 * i + 2]; }
    if (ybr) {
      const y = r, cb = g - 128, cr = b - 128;
      r = y + 1.402 * cr; g = y - 0.344136 * cb - 0.714136 * cr; b = y + 1.772 * cb;
    }
    if (invert) { r = 255 - r; g = 255 - g; b = 255 - b; }
    rgb[4 * i] = r; rgb[4 * i + 1] = g; rgb[4 * i + 2] = b; rgb[4 * i + 3] = 255;
  }
}
