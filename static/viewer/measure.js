// @ts-check
/**
 * Measurements in image coordinates (column x, row y, in pixels): length in
 * millimetres from (0028,0030) Pixel Spacing (row spacing, column spacing),
 * the angle between two segments, and mean/SD inside an elliptical ROI in
 * modality units (HU for CT). Without Pixel Spacing, lengths fall back to
 * (0018,1164) Imager Pixel Spacing, then to pixels, and say so.
 */

import { modalityValue } from './pixels.js';

/** @typedef {import('./pixels.js').Desc} Desc */
/** @typedef {import('./geometry.js').Point} Point */
/** A length or an angle, and how to show it. @typedef {{value: number, unit?: string, text: string}} Measure */
/**
 * What an elliptical ROI holds, in modality units; NaN and n = 0 when no pixel.
 * @typedef {{mean: number, sd: number, min?: number, max?: number, n: number, area: number, text: string}} RoiStats
 */

/**
 * [row spacing, column spacing, unit label] for a display.
 * @param {Pick<Desc, 'pixelSpacing' | 'imagerPixelSpacing'>} desc
 * @returns {[number, number, string]}
 */
export function spacingOf(desc) {
  if (desc.pixelSpacing) return [desc.pixelSpacing[0], desc.pixelSpacing[1], 'mm'];
  if (desc.imagerPixelSpacing) return [desc.imagerPixelSpacing[0], desc.imagerPixelSpacing[1], 'mm (detector)'];
  return [1, 1, 'px'];
}

/**
 * The distance between two image points, in mm when the spacing is known.
 * @param {Pick<Desc, 'pixelSpacing' | 'imagerPixelSpacing'>} desc
 * @param {Point} a
 * @param {Point} b
 * @returns {Measure}
 */
export function length(desc, a, b) {
  const [rs, cs, unit] = spacingOf(desc);
  const value = Math.hypot((b.x - a.x) * cs, (b.y - a.y) * rs);
  return { value, unit, text: `${value.toFixed(1)} ${unit}` };
}

/**
 * The angle ABC at vertex B, in degrees, measured in physical space.
 * @param {Pick<Desc, 'pixelSpacing' | 'imagerPixelSpacing'>} desc
 * @param {Point} a
 * @param {Point} b
 * @param {Point} c
 * @returns {Measure}
 */
export function angle(desc, a, b, c) {
  const [rs, cs] = spacingOf(desc);
  const u = [(a.x - b.x) * cs, (a.y - b.y) * rs];
  const v = [(c.x - b.x) * cs, (c.y - b.y) * rs];
  const nu = Math.hypot(u[0], u[1]);
  const nv = Math.hypot(v[0], v[1]);
  if (!nu || !nv) return { value: 0, text: '0.0°' };
  const cos = Math.min(1, Math.max(-1, (u[0] * v[0] + u[1] * v[1]) / (nu * nv)));
  const value = (Math.acos(cos) * 180) / Math.PI;
  return { value, text: `${value.toFixed(1)}°` };
}

/**
 * Mean, SD, min, max and area inside the ellipse inscribed in the box a-b.
 * @param {Desc} desc
 * @param {import('./pixels.js').Frame | null} frame
 * @param {Point} a
 * @param {Point} b
 * @returns {RoiStats}
 */
export function ellipseStats(desc, frame, a, b) {
  const cx = (a.x + b.x) / 2, cy = (a.y + b.y) / 2;
  const rx = Math.abs(b.x - a.x) / 2, ry = Math.abs(b.y - a.y) / 2;
  const [rs, cs, unit] = spacingOf(desc);
  const area = Math.PI * rx * cs * ry * rs;
  const units = desc.units || '';
  if (!frame || rx < 0.5 || ry < 0.5 || desc.samplesPerPixel !== 1) {
    return { mean: NaN, sd: NaN, n: 0, area, text: 'ROI: no pixels' };
  }
  const x0 = Math.max(0, Math.floor(cx - rx)), x1 = Math.min(desc.columns - 1, Math.ceil(cx + rx));
  const y0 = Math.max(0, Math.floor(cy - ry)), y1 = Math.min(desc.rows - 1, Math.ceil(cy + ry));
  let n = 0, sum = 0, sum2 = 0, min = Infinity, max = -Infinity;
  for (let y = y0; y <= y1; y++) {
    const dy = (y + 0.5 - cy) / ry;
    for (let x = x0; x <= x1; x++) {
      const dx = (x + 0.5 - cx) / rx;
      if (dx * dx + dy * dy > 1) continue;
      const v = modalityValue(desc, frame.pixels[y * desc.columns + x]);
      n++; sum += v; sum2 += v * v;
      if (v < min) min = v;
      if (v > max) max = v;
    }
  }
  if (!n) return { mean: NaN, sd: NaN, n: 0, area, text: 'ROI: no pixels' };
  const mean = sum / n;
  const sd = Math.sqrt(Math.max(0, sum2 / n - mean * mean));
  const u = units ? ' ' + units : '';
  const areaUnit = unit === 'px' ? 'px²' : 'mm²';
  return {
    mean, sd, min, max, n, area,
    text: `mean ${mean.toFixed(1)}${u}, SD ${sd.toFixed(1)}${u}, area ${area.toFixed(1)} ${areaUnit}`,
  };
}
