// @ts-check
/**
 * The measuring tools (length, angle, elliptical ROI) as one state machine:
 * a press starts a measurement, a drag stretches it, the release keeps it
 * unless it is shorter than 3 screen pixels. An angle's first release fixes
 * its first segment; its third point then follows the pointer and the next
 * press sets it. Kept measurements go to the application's annotation store.
 */

import { angle, ellipseStats, length } from '../measure.js';

/** @typedef {import('../viewport/viewport.js').Viewport} Viewport */
/** @typedef {import('../viewport/draw.js').Annotation} Annotation */
/** @typedef {import('../geometry.js').Point} Point */

/** @type {ReadonlySet<string>} */
const TYPES = new Set(['length', 'angle', 'roi']);

/**
 * What a measurement reads on the viewport's current image.
 * @param {Viewport} vp
 * @param {Annotation} a
 * @returns {{text: string, value: number}}
 */
export function measure(vp, a) {
  const img = vp.image;
  if (!img) return { text: '', value: NaN };
  const d = img.desc;
  const [p, q, r] = a.points;
  if (a.type === 'length') return length(d, p, q);
  if (a.type === 'angle') return r ? angle(d, p, q, r) : length(d, p, q);
  const stats = ellipseStats(d, vp.loader ? vp.loader.frame(vp.index) : null, p, q);
  return { text: stats.text, value: stats.mean };
}

/**
 * Keep the measurement being drawn.
 * @param {Viewport} vp
 */
export function finish(vp) {
  const a = vp.pending, img = vp.image;
  vp.pending = null;
  if (!a || !img) return;
  const result = measure(vp, a);
  a.text = result.text;
  a.value = result.value;
  vp.app.annotations.add(img, a);
  vp.render();
}

/**
 * Is an angle waiting for its third point?
 * @param {Viewport} vp
 * @returns {boolean}
 */
export function awaitingVertex(vp) {
  return Boolean(vp.pending && vp.pending.type === 'angle' && vp.pending.points.length === 3);
}

/**
 * The waiting angle's third point follows the pointer.
 * @param {Viewport} vp
 * @param {Point} p
 */
export function moveVertex(vp, p) {
  const a = vp.pending;
  if (!a) return;
  a.points[2] = p;
  a.text = measure(vp, a).text;
  vp.render();
}

/**
 * A press sets the waiting angle's third point and keeps the angle.
 * @param {Viewport} vp
 * @param {Point} p
 */
export function placeVertex(vp, p) {
  if (!vp.pending) return;
  vp.pending.points[2] = p;
  finish(vp);
}

/**
 * The press that drew a measurement ended.
 * @param {Viewport} vp
 * @param {string} tool the tool that drew it
 */
export function released(vp, tool) {
  const a = vp.pending;
  if (!a) return;
  const [p, q] = a.points;
  const screen = Math.hypot(q.x - p.x, q.y - p.y) * vp.scale();
  if (screen < 3) { vp.pending = null; vp.render(); return; }
  if (tool === 'angle' && a.points.length === 2) {
    a.points.push({ ...q });
    vp.render();
    return;
  }
  finish(vp);
}

/** @type {import('./pointer.js').Tool} */
export const annotate = {
  down(vp, at, name) {
    if (!TYPES.has(name)) return;
    vp.pending = { type: /** @type {Annotation['type']} */ (name), points: [at, { ...at }], text: '' };
    vp.render();
  },
  move(vp, drag, dx, dy, e) {
    const a = vp.pending;
    if (!a) return;
    a.points[1] = vp.toImage(e.clientX, e.clientY);
    a.text = measure(vp, a).text;
    vp.render();
  },
};
