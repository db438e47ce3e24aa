// @ts-check
/** The zoom tool: dragging up zooms in, down zooms out, smoothly (about x2.7 per 100 px). */

/** @type {import('./pointer.js').Tool} */
export const zoom = {
  move(vp, drag, dx, dy) {
    vp.zoomBy(Math.exp(-dy * 0.01));
  },
};
