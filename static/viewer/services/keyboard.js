// @ts-check
/**
 * Keyboard shortcuts, on the active viewport: arrows and Page Up/Down scroll,
 * Home/End jump, letters pick tools and actions (the toolbar's titles say
 * which), 1-6 apply the window presets in their order and 7 the image's own,
 * +/- zoom, Space plays cine, Esc resets; ] and [ open the next and previous
 * study to read (the worklist's links, for readers). Typing in a form field
 * (the report beside the images included) is left alone.
 */

import { PRESETS } from '../presets.js';

/**
 * Go where the page's link of this id leads (the worklist's next or previous study), if the page has it.
 * @param {string} id
 */
function follow(id) {
  const link = document.getElementById(id);
  if (link instanceof HTMLAnchorElement) location.assign(link.href);
}

/** @param {import('../app.js').ViewerApp} app */
export function bindKeys(app) {
  const toolbar = app.toolbar;
  document.addEventListener('keydown', (e) => {
    const t = e.target;
    if (t instanceof HTMLInputElement || t instanceof HTMLSelectElement || t instanceof HTMLTextAreaElement) return;
    if (t instanceof HTMLElement && t.isContentEditable) return;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const vp = app.active;
    const page = vp.ds ? Math.max(1, Math.round(vp.ds.images.length / 10)) : 1;
    /** @type {Record<string, () => unknown>} */
    const keys = {
      ArrowDown: () => vp.scroll(1), ArrowRight: () => vp.scroll(1),
      ArrowUp: () => vp.scroll(-1), ArrowLeft: () => vp.scroll(-1),
      PageDown: () => vp.scroll(page), PageUp: () => vp.scroll(-page),
      Home: () => vp.setIndex(0), End: () => vp.ds && vp.setIndex(vp.ds.images.length - 1),
      ' ': () => toolbar.action('cine'),
      w: () => toolbar.setTool('wl'), p: () => toolbar.setTool('pan'), z: () => toolbar.setTool('zoom'),
      s: () => toolbar.setTool('scroll'), l: () => toolbar.setTool('length'), a: () => toolbar.setTool('angle'),
      o: () => toolbar.setTool('roi'), i: () => toolbar.action('invert'), r: () => toolbar.action('rotate'),
      R: () => toolbar.action('rotate-left'), h: () => toolbar.action('flip-h'), v: () => toolbar.action('flip-v'),
      Escape: () => { app.viewports.forEach((v) => v.cancelPending()); toolbar.action('reset'); },
      0: () => toolbar.action('reset'), Delete: () => toolbar.action('undo'), Backspace: () => toolbar.action('undo'),
      y: () => toolbar.action('sync'),
      ']': () => follow('vw-next-study'), '[': () => follow('vw-previous-study'),
      '+': () => vp.zoomBy(1.25), '=': () => vp.zoomBy(1.25), '-': () => vp.zoomBy(0.8),
    };
    Object.keys(PRESETS).forEach((name, i) => { keys[String(i + 1)] = () => vp.applyPreset(name); });
    keys[String(Object.keys(PRESETS).length + 1)] = () => vp.applyPreset('default');
    const fn = Object.hasOwn(keys, e.key) ? keys[e.key] : undefined;
    if (fn) { e.preventDefault(); fn(); }
  });
}
