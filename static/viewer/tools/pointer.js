// @ts-check
/**
 * The pointer state machine of one viewport: a press picks the tool (the
 * toolbar's for the primary button, pan for the middle one, zoom for the
 * secondary one), moves while pressed go to that tool, the release ends it.
 * The wheel scrolls slices (one per notch; Ctrl+wheel zooms). An angle's third
 * point follows the pointer without a button and is set by the next press.
 */

import { annotate, awaitingVertex, moveVertex, placeVertex, released } from './annotate.js';
import { pan } from './pan.js';
import { scroll } from './scroll.js';
import { windowLevel } from './windowlevel.js';
import { zoom } from './zoom.js';

/** @typedef {import('../viewport/viewport.js').Viewport} Viewport */
/** @typedef {import('../geometry.js').Point} Point */
/**
 * A press in progress.
 * @typedef {object} Drag
 * @property {string} tool
 * @property {number} x last pointer position, client pixels
 * @property {number} y
 * @property {number} acc movement not yet turned into slices (scroll tool)
 * @property {number} id the pointer's id
 */
/**
 * A pointer tool: what a press starts and what moving while pressed does.
 * @typedef {object} Tool
 * @property {(vp: Viewport, at: Point, name: string) => void} [down]
 * @property {(vp: Viewport, drag: Drag, dx: number, dy: number, e: PointerEvent) => void} move
 */

/** @type {Readonly<Record<string, Tool>>} */
export const TOOLS = Object.freeze({
  wl: windowLevel,
  pan,
  zoom,
  scroll,
  length: annotate,
  angle: annotate,
  roi: annotate,
});

/** @param {string} name @returns {Tool} */
function toolNamed(name) { return Object.hasOwn(TOOLS, name) ? TOOLS[name] : annotate; }

export class PointerInput {
  /** @param {Viewport} vp */
  constructor(vp) {
    this.vp = vp;
    /** @type {Drag | null} */
    this.drag = null;
    this.wheelAcc = 0;
    const r = vp.root;
    r.addEventListener('pointerdown', (e) => this.onDown(e));
    r.addEventListener('pointermove', (e) => this.onMove(e));
    r.addEventListener('pointerup', (e) => this.onUp(e));
    r.addEventListener('pointercancel', (e) => this.onUp(e));
    r.addEventListener('wheel', (e) => this.onWheel(e), { passive: false });
  }

  /** @param {WheelEvent} e */
  onWheel(e) {
    const vp = this.vp;
    if (!vp.ds) return;
    e.preventDefault();
    if (e.ctrlKey) { vp.zoomBy(Math.exp(-e.deltaY * 0.002)); return; }
    const px = e.deltaMode === 1 ? e.deltaY * 40 : e.deltaMode === 2 ? e.deltaY * 400 : e.deltaY;
    // One slice per mouse-wheel notch (~100 px); small trackpad deltas accumulate.
    this.wheelAcc += px;
    if (Math.abs(this.wheelAcc) < 50) return;
    const steps = Math.sign(this.wheelAcc) * Math.min(10, Math.max(1, Math.floor(Math.abs(this.wheelAcc) / 100)));
    this.wheelAcc = 0;
    vp.scroll(steps);
  }

  /** @param {PointerEvent} e */
  onDown(e) {
    const vp = this.vp;
    vp.app.activate(vp);
    if (!vp.ds) return;
    vp.root.focus({ preventScroll: true });
    const tool = e.button === 1 ? 'pan' : e.button === 2 ? 'zoom' : vp.app.tool;
    const p = vp.toImage(e.clientX, e.clientY);
    if (awaitingVertex(vp)) { placeVertex(vp, p); return; }
    this.drag = { tool, x: e.clientX, y: e.clientY, acc: 0, id: e.pointerId };
    vp.root.setPointerCapture(e.pointerId);
    toolNamed(tool).down?.(vp, p, tool);
  }

  /** @param {PointerEvent} e */
  onMove(e) {
    const vp = this.vp, drag = this.drag;
    if (!drag) {
      if (awaitingVertex(vp)) moveVertex(vp, vp.toImage(e.clientX, e.clientY));
      return;
    }
    const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    drag.x = e.clientX;
    drag.y = e.clientY;
    toolNamed(drag.tool).move(vp, drag, dx, dy, e);
  }

  /** @param {PointerEvent} e */
  onUp(e) {
    const vp = this.vp;
    if (!this.drag || e.pointerId !== this.drag.id) return;
    const tool = this.drag.tool;
    this.drag = null;
    if (vp.root.hasPointerCapture(e.pointerId)) vp.root.releasePointerCapture(e.pointerId);
    if (vp.pending) released(vp, tool);
  }
}
