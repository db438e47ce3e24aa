// @ts-check
/**
 * Vector drawing over a viewport's image, in CSS pixels: the reference line
 * another viewport's slice casts on this image, and the measurements (lengths,
 * angles, elliptical ROIs), the one being drawn in another colour.
 */

export const REFERENCE_COLOR = '#00e676';
const ANNOTATION_COLOR = '#4fc3f7';
const PENDING_COLOR = '#ffd54f';

/** @typedef {import('../geometry.js').Point} Point */
/**
 * A measurement on one image, in image coordinates.
 * @typedef {object} Annotation
 * @property {'length' | 'angle' | 'roi'} type
 * @property {Point[]} points two (length, ROI box) or three (angle, vertex second)
 * @property {string} text
 * @property {number} [value]
 * @property {HTMLElement} [item] its line in the measurement list
 * @property {string} [key] the image it belongs to
 */

/**
 * The reference line, from image coordinates through `m`.
 * @param {CanvasRenderingContext2D} ctx
 * @param {DOMMatrix} m image to CSS pixels
 * @param {Point[]} line two points
 */
export function drawReferenceLine(ctx, m, line) {
  const [a, b] = line.map((p) => m.transformPoint(new DOMPoint(p.x, p.y)));
  ctx.save();
  ctx.strokeStyle = REFERENCE_COLOR;
  ctx.lineWidth = 2;
  ctx.beginPath();
  ctx.moveTo(a.x, a.y);
  ctx.lineTo(b.x, b.y);
  ctx.stroke();
  ctx.restore();
}

/**
 * The measurements of the image shown, and the one being drawn.
 * @param {CanvasRenderingContext2D} ctx
 * @param {DOMMatrix} m image to CSS pixels
 * @param {Annotation[]} list
 * @param {Annotation | null} pending
 */
export function drawAnnotations(ctx, m, list, pending) {
  const all = pending ? [...list, pending] : list;
  if (!all.length) return;
  ctx.lineWidth = 1.5;
  ctx.font = '13px system-ui, sans-serif';
  for (const a of all) {
    const pts = a.points.map((p) => m.transformPoint(new DOMPoint(p.x, p.y)));
    ctx.strokeStyle = a === pending ? PENDING_COLOR : ANNOTATION_COLOR;
    ctx.fillStyle = ctx.strokeStyle;
    ctx.beginPath();
    if (a.type === 'roi') {
      const c = m.transformPoint(new DOMPoint((a.points[0].x + a.points[1].x) / 2, (a.points[0].y + a.points[1].y) / 2));
      const rx = Math.abs(a.points[1].x - a.points[0].x) / 2, ry = Math.abs(a.points[1].y - a.points[0].y) / 2;
      // draw the ellipse in image space so rotation/flip/aspect apply
      ctx.save();
      ctx.setTransform(new DOMMatrix().scale(window.devicePixelRatio || 1).multiply(m));
      ctx.beginPath();
      ctx.ellipse((a.points[0].x + a.points[1].x) / 2, (a.points[0].y + a.points[1].y) / 2, Math.max(rx, 0.01), Math.max(ry, 0.01), 0, 0, 2 * Math.PI);
      ctx.restore();
      ctx.stroke();
      ctx.fillText(a.text || '', c.x + 6, c.y - 6);
      continue;
    }
    pts.forEach((p, i) => (i ? ctx.lineTo(p.x, p.y) : ctx.moveTo(p.x, p.y)));
    ctx.stroke();
    for (const p of pts) ctx.fillRect(p.x - 2, p.y - 2, 4, 4);
    const at = pts[a.type === 'angle' ? 1 : pts.length - 1];
    ctx.fillText(a.text || '', at.x + 8, at.y - 8);
  }
}
