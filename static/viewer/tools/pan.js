// @ts-check
/** The pan tool: the image follows the pointer. */

/** @type {import('./pointer.js').Tool} */
export const pan = {
  move(vp, drag, dx, dy) {
    vp.pan.x += dx;
    vp.pan.y += dy;
    vp.render();
  },
};
