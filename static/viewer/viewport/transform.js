// @ts-check
/**
 * Where an image lands in a viewport: the matrix from image coordinates
 * (column, row) to CSS pixels inside the viewport, from the view's zoom, pan,
 * rotation and flips, fitted to the viewport and keeping non-square pixels
 * (0028,0030) Pixel Spacing, else (0018,1164) Imager Pixel Spacing, in proportion.
 */

/**
 * How a viewport looks at its image.
 * @typedef {object} View
 * @property {number} zoom 1 fits the image to the viewport
 * @property {{x: number, y: number}} pan CSS pixels
 * @property {number} rotation degrees clockwise, a multiple of 90
 * @property {boolean} flipH
 * @property {boolean} flipV
 */

/**
 * Relative size of a pixel across and down: [x, y], the smaller one 1.
 * @param {Pick<import('../pixels.js').Desc, 'pixelSpacing' | 'imagerPixelSpacing'>} desc
 * @returns {[number, number]}
 */
export function aspectOf(desc) {
  const sp = desc.pixelSpacing || desc.imagerPixelSpacing;
  if (!sp) return [1, 1];
  const m = Math.min(sp[0], sp[1]);
  return [sp[1] / m, sp[0] / m]; // x uses column spacing, y row spacing
}

/**
 * Image (column, row) to CSS pixels inside a viewport `width` x `height`.
 * @param {import('../pixels.js').Desc} desc
 * @param {View} view
 * @param {number} width
 * @param {number} height
 * @returns {DOMMatrix}
 */
export function imageToViewport(desc, view, width, height) {
  const [ax, ay] = aspectOf(desc);
  const iw = desc.columns * ax, ih = desc.rows * ay;
  const quarter = view.rotation % 180 !== 0;
  const fit = Math.min(width / (quarter ? ih : iw), height / (quarter ? iw : ih));
  const s = fit * view.zoom;
  return new DOMMatrix()
    .translate(width / 2 + view.pan.x, height / 2 + view.pan.y)
    .rotate(view.rotation)
    .scale(view.flipH ? -1 : 1, view.flipV ? -1 : 1)
    .scale(s * ax, s * ay)
    .translate(-desc.columns / 2, -desc.rows / 2);
}
