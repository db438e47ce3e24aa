// @ts-check
/** The scroll tool: dragging down moves down the stack, one slice per 6 CSS pixels. */

const PIXELS_PER_SLICE = 6;

/** @type {import('./pointer.js').Tool} */
export const scroll = {
  move(vp, drag, dx, dy) {
    drag.acc += dy;
    const steps = Math.trunc(drag.acc / PIXELS_PER_SLICE);
    if (steps) { drag.acc -= steps * PIXELS_PER_SLICE; vp.scroll(steps); }
  },
};
