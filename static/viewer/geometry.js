// @ts-check
/**
 * Patient-space geometry of images (PS3.3 C.7.6.2): an image plane from
 * (0020,0032) Image Position, (0020,0037) Image Orientation, (0028,0030) Pixel
 * Spacing, Rows and Columns, and the reference line of one image on another:
 * where the source image's plane cuts the target image, in the target's
 * image coordinates (column, row; pixel centres at +0.5), clipped to the
 * source image's extent. Planes of different frames of reference, or parallel
 * ones, have no reference line.
 */

import { TAG, nums, str } from './dicomjson.js';
import { add, cross, dot, mul, norm, sub } from './vec3.js';

/**
 * An image plane in patient space.
 * @typedef {object} Plane
 * @property {number[]} origin (0020,0032) Image Position: centre of the first pixel, mm
 * @property {number[]} row direction of increasing column index
 * @property {number[]} column direction of increasing row index
 * @property {number[]} normal unit normal, row x column
 * @property {number[]} spacing [between rows, between columns] in mm
 * @property {number} rows
 * @property {number} columns
 * @property {string} frameOfReference (0020,0052) Frame of Reference UID, or ''
 */
/** A point in image coordinates (column x, row y). @typedef {{x: number, y: number}} Point */
/**
 * What `planeOf` needs of a display-set image; it caches the plane on it.
 * @typedef {{meta: import('./dicomjson.js').DicomJson, desc: import('./pixels.js').Desc, plane?: Plane | null}} PlanedImage
 */

/** Planes closer to parallel than this (sine of the angle between them) have no reference line. */
const PARALLEL = 0.05;

/**
 * The plane of one image, or null when its header lacks the geometry.
 * @param {import('./dicomjson.js').DicomJson} meta
 * @param {Pick<import('./pixels.js').Desc, 'pixelSpacing' | 'rows' | 'columns'>} desc
 * @returns {Plane | null}
 */
export function imagePlane(meta, desc) {
  const ipp = nums(meta, TAG.ImagePositionPatient);
  const iop = nums(meta, TAG.ImageOrientationPatient);
  const spacing = desc.pixelSpacing;
  if (ipp.length !== 3 || iop.length !== 6 || !spacing || !desc.rows || !desc.columns) return null;
  if (![...ipp, ...iop].every(Number.isFinite)) return null;
  const row = iop.slice(0, 3); // direction of increasing column index
  const column = iop.slice(3, 6); // direction of increasing row index
  const normal = cross(row, column);
  const n = norm(normal);
  if (n < 1e-6) return null;
  return {
    origin: ipp, row, column, normal: mul(normal, 1 / n),
    spacing, // [between rows, between columns] in mm
    rows: desc.rows, columns: desc.columns,
    frameOfReference: str(meta, TAG.FrameOfReferenceUID),
  };
}

/**
 * The plane of a display-set image, computed once.
 * @param {PlanedImage | null | undefined} img
 * @returns {Plane | null}
 */
export function planeOf(img) {
  if (!img) return null;
  if (img.plane === undefined) img.plane = img.desc.numberOfFrames > 1 ? null : imagePlane(img.meta, img.desc);
  return img.plane;
}

/**
 * Patient coordinates (mm) of image point (x, y), pixel centres at +0.5.
 * @param {Plane} plane
 * @param {number} x
 * @param {number} y
 * @returns {number[]}
 */
export function toPatient(plane, x, y) {
  const c = x - 0.5, r = y - 0.5;
  return add(plane.origin, add(mul(plane.row, c * plane.spacing[1]), mul(plane.column, r * plane.spacing[0])));
}

/**
 * Image point {x, y} (pixel centres at +0.5) of a patient point projected onto the plane.
 * @param {Plane} plane
 * @param {number[]} p
 * @returns {Point}
 */
export function toImage(plane, p) {
  const d = sub(p, plane.origin);
  return { x: dot(d, plane.row) / plane.spacing[1] + 0.5, y: dot(d, plane.column) / plane.spacing[0] + 0.5 };
}

/**
 * Where `source` cuts `target`: two points in target image coordinates, or null.
 * The segment is the part of the intersection line inside the source image.
 * @param {Plane | null} source
 * @param {Plane | null} target
 * @returns {Point[] | null}
 */
export function referenceLine(source, target) {
  if (!source || !target) return null;
  if (source.frameOfReference && target.frameOfReference && source.frameOfReference !== target.frameOfReference) return null;
  if (norm(cross(source.normal, target.normal)) < PARALLEL) return null;
  // Corners of the source image (outer pixel edges), in order around the rectangle.
  const w = source.columns, h = source.rows;
  const corners = [[0, 0], [w, 0], [w, h], [0, h]].map(([x, y]) => toPatient(source, x, y));
  const distance = corners.map((p) => dot(sub(p, target.origin), target.normal));
  const points = [];
  for (let i = 0; i < 4; i++) {
    const j = (i + 1) % 4;
    const a = distance[i], b = distance[j];
    if (a === 0) points.push(corners[i]);
    if ((a < 0 && b > 0) || (a > 0 && b < 0)) points.push(add(corners[i], mul(sub(corners[j], corners[i]), a / (a - b))));
  }
  if (points.length < 2) return null;
  // Two crossings for a plane through a rectangle; keep the farthest pair if a corner repeats.
  let best = [points[0], points[1]], longest = -1;
  for (let i = 0; i < points.length; i++) {
    for (let j = i + 1; j < points.length; j++) {
      const d = norm(sub(points[i], points[j]));
      if (d > longest) { longest = d; best = [points[i], points[j]]; }
    }
  }
  if (longest <= 0) return null;
  return best.map((p) => toImage(target, p));
}
