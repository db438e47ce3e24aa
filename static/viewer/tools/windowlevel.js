// @ts-check
/**
 * The window/level tool: dragging right widens the window, dragging down
 * raises its centre, in steps scaled to the frame's range of modality values
 * (no server round trip: the pixels are re-mapped in the browser).
 */

/** @typedef {import('./pointer.js').Tool} Tool */

/**
 * The window after a drag of (dx, dy) CSS pixels over a frame spanning `range` modality units.
 * @param {import('../pixels.js').Window} win
 * @param {number} dx
 * @param {number} dy
 * @param {number} range
 * @returns {import('../pixels.js').Window}
 */
export function draggedWindow(win, dx, dy, range) {
  const k = Math.max(range / 1024, 0.25);
  return { center: win.center + dy * k, width: Math.max(1, win.width + dx * k) };
}

/** @type {Tool} */
export const windowLevel = {
  down(vp) {
    if (!vp.window && vp.loader) vp.currentWindow(vp.loader.frame(vp.index));
  },
  move(vp, drag, dx, dy) {
    const img = vp.image;
    if (!vp.loader || !img) return;
    const win = vp.window || vp.currentWindow(vp.loader.frame(vp.index));
    if (!win) return;
    const frame = vp.loader.frame(vp.index);
    const range = frame ? Math.max(1, (frame.max - frame.min) * Math.abs(img.desc.slope)) : 4096;
    vp.window = draggedWindow(win, dx, dy, range);
    vp.render();
    if (vp.app.stats) vp.app.stats.wlChanges++;
  },
};
