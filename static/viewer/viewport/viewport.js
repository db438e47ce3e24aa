// @ts-check
/**
 * One viewport: a canvas showing one image of a display set through its view
 * (zoom, pan, rotation, flips) and presentation (window/level, invert). Pixels
 * come from a StackLoader; while a slice's full-fidelity frame is not there
 * yet, the server-rendered preview of that slice is drawn and labelled as
 * such, then replaced. Pointer tools (tools/), text overlays (overlays.js),
 * drawing (draw.js) and the cine clock (cine.js) are kept apart.
 */

import { el } from '../dom.js';
import { planeOf, referenceLine } from '../geometry.js';
import { defaultWindow, renderFrame } from '../pixels.js';
import { PRESETS } from '../presets.js';
import { Cine } from './cine.js';
import { drawAnnotations, drawReferenceLine } from './draw.js';
import { Overlays } from './overlays.js';
import { imageToViewport } from './transform.js';

const PREVIEW_MAX = 512;

/** @typedef {import('../displaysets.js').DisplaySet} DisplaySet */
/** @typedef {import('../displaysets.js').Image} Image */
/** @typedef {import('../loader.js').StackLoader} StackLoader */
/** @typedef {import('../pixels.js').Frame} Frame */
/** @typedef {import('../pixels.js').Window} Window */
/** @typedef {import('../geometry.js').Point} Point */

export class Viewport {
  /**
   * @param {import('../app.js').ViewerApp} app
   * @param {number} number its place in the grid, 0-3
   */
  constructor(app, number) {
    this.app = app;
    this.number = number;
    this.root = el('div', 'vw-viewport');
    this.root.dataset.viewport = String(number);
    this.root.tabIndex = 0;
    this.canvas = el('canvas', 'vw-canvas', this.root);
    const ctx = this.canvas.getContext('2d', { alpha: false });
    if (!ctx) throw new Error('no 2D canvas');
    this.ctx = ctx;
    this.overlays = new Overlays(this.root);
    this.progress = el('div', 'vw-vp-progress', this.root);
    this.bar = el('div', 'vw-vp-bar', this.progress);
    this.empty = el('div', 'vw-empty', this.root);
    this.empty.textContent = 'Drop a series here';
    this.offscreen = document.createElement('canvas');
    const offctx = this.offscreen.getContext('2d');
    if (!offctx) throw new Error('no 2D canvas');
    this.offctx = offctx;
    /** @type {ImageData | null} */
    this.imageData = null;
    /** @type {string | null} */
    this.drawnKey = null;
    /** @type {Frame | null} */
    this.drawnFrame = null;
    /** @type {number | undefined} */
    this.drawnIndex = undefined;
    /** @type {DisplaySet | null} */
    this.ds = null;
    /** @type {StackLoader | null} */
    this.loader = null;
    /** @type {(() => void) | null} */
    this.unlisten = null;
    this.index = 0;
    /** @type {Map<number, ImageBitmap>} slice index -> server-rendered preview */
    this.previews = new Map();
    this.previewWanted = -1;
    /** @type {AbortController | null} */
    this.previewController = null;
    this.cine = new Cine();
    this.shownFull = false;
    /** @type {import('./draw.js').Annotation | null} the measurement being drawn */
    this.pending = null;
    /** @type {Point[] | null} the active viewport's slice across this image */
    this.referenceLine = null;
    this.zoom = 1;
    this.pan = { x: 0, y: 0 };
    this.rotation = 0;
    this.flipH = false;
    this.flipV = false;
    this.invert = false;
    /** @type {Window | null} */
    this.window = null;
    this.resetView();
    this.attach();
    new ResizeObserver(() => this.resize()).observe(this.root);
  }

  resetView() {
    this.zoom = 1;
    this.pan = { x: 0, y: 0 };
    this.rotation = 0;
    this.flipH = false;
    this.flipV = false;
    this.invert = false;
    this.window = null;
    this.drawnKey = null;
  }

  resize() {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(this.root.clientWidth * dpr));
    const h = Math.max(1, Math.round(this.root.clientHeight * dpr));
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
      this.render();
    }
  }

  /** Double-click maximizes; a display set card dropped here is shown here. */
  attach() {
    const r = this.root;
    r.addEventListener('contextmenu', (e) => e.preventDefault());
    r.addEventListener('dblclick', () => this.app.layout.toggleMaximize(this));
    r.addEventListener('dragover', (e) => { if (e.dataTransfer?.types.includes('application/x-displayset')) { e.preventDefault(); r.classList.add('vw-drop'); } });
    r.addEventListener('dragleave', () => r.classList.remove('vw-drop'));
    r.addEventListener('drop', (e) => {
      r.classList.remove('vw-drop');
      const id = e.dataTransfer?.getData('application/x-displayset');
      if (id) { e.preventDefault(); this.app.activate(this); this.app.show(this, id); }
    });
  }

  /* ---------- content ---------- */

  /**
   * Show a display set (or nothing), from slice `index`.
   * @param {DisplaySet | null} ds
   * @param {StackLoader | null} loader
   * @param {number} [index]
   */
  setDisplaySet(ds, loader, index = 0) {
    if (this.loader) { this.loader.clearFocus(this); this.unlisten?.(); }
    this.stopCine();
    this.ds = ds;
    this.loader = loader;
    this.resetView();
    this.previews.clear();
    this.shownFull = false;
    this.root.classList.toggle('vw-has-image', Boolean(ds));
    if (!ds || !loader) { this.render(); return; }
    this.index = Math.min(Math.max(0, index), ds.images.length - 1);
    this.unlisten = loader.onChange((i) => this.onLoaded(i));
    loader.setFocus(this, this.index);
    this.requestPreview(this.index);
    this.render();
    if (ds.kind === 'multiframe') this.startCine(Math.min(60, Math.round(ds.cineRate) || 15));
  }

  /** The image shown, or null. */
  get image() { return this.ds ? this.ds.images[this.index] : null; }

  /** @param {number} i a slice whose frame arrived, failed or was evicted */
  onLoaded(i) {
    if (i === this.index) this.render();
    this.updateProgress();
  }

  /**
   * Show slice `i` (clamped); a move by the user is passed on to synchronized viewports.
   * @param {number} i
   * @param {boolean} [fromSync]
   */
  setIndex(i, fromSync = false) {
    if (!this.ds || !this.loader) return;
    const n = this.ds.images.length;
    const next = Math.min(Math.max(0, i), n - 1);
    if (next === this.index && this.drawnIndex === next) return;
    this.index = next;
    const wanted = this.loader.status[next] === 0; // neither loaded nor on its way yet
    this.loader.setFocus(this, next);
    if (wanted) this.requestPreview(next);
    this.render();
    if (!fromSync) this.app.sync.synchronize(this);
    if (this.app.active === this) this.app.referenceChanged();
  }

  /** @param {number} delta slices, down the stack when positive */
  scroll(delta) { if (this.ds) this.setIndex(this.index + delta); }

  /**
   * Fetch the server-rendered preview of slice `index`, unless it is there or on its way.
   * @param {number} index
   */
  async requestPreview(index) {
    const ds = this.ds;
    if (!ds) return;
    const img = ds.images[index];
    if (this.previews.has(index) || this.previewWanted === index) return;
    if (this.previewController) this.previewController.abort();
    const controller = new AbortController();
    this.previewController = controller;
    this.previewWanted = index;
    const scale = Math.min(1, PREVIEW_MAX / Math.max(img.desc.columns, img.desc.rows));
    const w = Math.max(1, Math.round(img.desc.columns * scale));
    const h = Math.max(1, Math.round(img.desc.rows * scale));
    try {
      const frame = img.desc.numberOfFrames > 1 ? img.frame : 0;
      const bitmap = await this.app.client.rendered(img.study, img.series, img.sop, frame, w, h, controller.signal);
      if (this.ds !== ds) { bitmap.close(); return; }
      this.previews.set(index, bitmap);
      for (const [k, b] of this.previews) {
        if (this.previews.size <= 8) break;
        this.previews.delete(k);
        b.close();
      }
      if (index === this.index && !this.loader?.isLoaded(index)) this.render();
    } catch (err) {
      if (/** @type {Error} */ (err).name !== 'AbortError' && this.app.stats) this.app.stats.previewErrors++;
    } finally {
      if (this.previewWanted === index) this.previewWanted = -1;
    }
  }

  /* ---------- geometry ---------- */

  /**
   * Image (column, row) to CSS pixels inside the viewport.
   * @returns {DOMMatrix}
   */
  matrix() {
    const img = this.image;
    if (!img) return new DOMMatrix();
    return imageToViewport(img.desc, this, this.root.clientWidth, this.root.clientHeight);
  }

  /** Screen pixels per image column. */
  scale() { const m = this.matrix(); return Math.hypot(m.a, m.b) || 1; }

  /**
   * The image point under a pointer.
   * @param {number} clientX
   * @param {number} clientY
   * @returns {Point}
   */
  toImage(clientX, clientY) {
    const r = this.root.getBoundingClientRect();
    const p = this.matrix().inverse().transformPoint(new DOMPoint(clientX - r.left, clientY - r.top));
    return { x: p.x, y: p.y };
  }

  /**
   * Where an image point is on the page.
   * @param {number} x
   * @param {number} y
   * @returns {Point}
   */
  toClient(x, y) {
    const r = this.root.getBoundingClientRect();
    const p = this.matrix().transformPoint(new DOMPoint(x, y));
    return { x: p.x + r.left, y: p.y + r.top };
  }

  /* ---------- drawing ---------- */

  /**
   * The window in use, settling on the image's default once its frame is there.
   * @param {Frame | null} frame
   * @returns {Window | null}
   */
  currentWindow(frame) {
    if (!this.window) {
      const img = this.image;
      if (!img) return null;
      if (!frame) return img.desc.windows[0] || null;
      this.window = defaultWindow(img.desc, frame);
    }
    return this.window;
  }

  render() {
    const ctx = this.ctx;
    const dpr = window.devicePixelRatio || 1;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = '#000';
    ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    const ds = this.ds, loader = this.loader, img = this.image;
    if (!ds || !loader || !img) { this.overlays.clear(); return; }
    const d = img.desc;
    const frame = loader.frame(this.index);
    /** @type {CanvasImageSource | null} */
    let source = null;
    /** @type {import('./overlays.js').Fidelity} */
    let fidelity = 'loading';
    if (frame) {
      const win = this.currentWindow(frame);
      const key = `${loader.id}:${this.index}:${win ? win.center + '/' + win.width : ''}:${this.invert}`;
      if (this.drawnKey !== key || this.drawnFrame !== frame) {
        if (!this.imageData || this.imageData.width !== d.columns || this.imageData.height !== d.rows) {
          this.imageData = new ImageData(d.columns, d.rows);
          this.offscreen.width = d.columns;
          this.offscreen.height = d.rows;
        }
        renderFrame(d, frame, win || { center: 0, width: 1 }, this.invert, this.imageData);
        this.offctx.putImageData(this.imageData, 0, 0);
        this.drawnKey = key;
        this.drawnFrame = frame;
      }
      source = this.offscreen;
      fidelity = 'full';
    } else {
      const preview = this.previews.get(this.index);
      if (preview) {
        source = preview;
        fidelity = 'preview';
      }
    }
    const toView = this.matrix();
    const m = new DOMMatrix().scale(dpr, dpr).multiply(toView);
    if (source) {
      ctx.setTransform(m);
      ctx.imageSmoothingEnabled = this.scale() < 3;
      ctx.imageSmoothingQuality = 'high';
      if (fidelity === 'preview' && this.invert) ctx.filter = 'invert(1)';
      ctx.drawImage(source, 0, 0, d.columns, d.rows);
      ctx.filter = 'none';
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    this.drawReferenceLine(ctx, toView);
    drawAnnotations(ctx, toView, this.app.annotations.on(img), this.pending);
    this.drawnIndex = this.index;
    this.shownFull = fidelity === 'full';
    this.overlays.update(this, ds, img, fidelity);
    this.updateProgress();
    if (source) this.app.painted(this, fidelity);
  }

  /**
   * The active viewport's current slice as a line across this one, when the planes cross.
   * @param {CanvasRenderingContext2D} ctx
   * @param {DOMMatrix} toView image to CSS pixels
   */
  drawReferenceLine(ctx, toView) {
    const source = this.app.active;
    let line = null;
    if (source && source !== this && source.ds && source.ds !== this.ds && !source.root.hidden) {
      line = referenceLine(planeOf(source.image), planeOf(this.image));
    }
    this.referenceLine = line;
    if (line) drawReferenceLine(ctx, toView, line);
  }

  updateProgress() {
    if (!this.loader) { this.progress.hidden = true; return; }
    const { loaded, total } = this.loader;
    this.progress.hidden = loaded >= total;
    this.bar.style.width = `${total ? (100 * loaded) / total : 0}%`;
  }

  /* ---------- presentation ---------- */

  /** @param {Window} win */
  setWindow(win) { this.window = { ...win }; this.render(); }

  /**
   * A named window: one of PRESETS, 'default' (the image's own) or 'full' (the frame's range).
   * @param {string} name
   */
  applyPreset(name) {
    const img = this.image;
    if (!this.loader || !img) return;
    if (name === 'default') {
      const frame = this.loader.frame(this.index);
      this.window = img.desc.windows[0] ? { ...img.desc.windows[0] } : frame ? defaultWindow({ ...img.desc, windows: [] }, frame) : null;
    } else if (name === 'full') {
      const frame = this.loader.frame(this.index);
      if (frame) this.window = defaultWindow({ ...img.desc, windows: [] }, frame);
    } else if (Object.hasOwn(PRESETS, name)) {
      this.window = { ...PRESETS[name] };
    }
    this.render();
  }

  toggleInvert() { this.invert = !this.invert; this.render(); }
  /** @param {number} [deg] */
  rotate(deg = 90) { this.rotation = (this.rotation + deg + 360) % 360; this.render(); }
  /** @param {'h' | 'v'} axis */
  flip(axis) { if (axis === 'h') this.flipH = !this.flipH; else this.flipV = !this.flipV; this.render(); }
  reset() { this.resetView(); this.render(); }
  /** @param {number} f */
  zoomBy(f) { this.zoom = Math.min(40, Math.max(0.05, this.zoom * f)); this.render(); }

  /* ---------- cine ---------- */

  /** @param {number} [fps] else the rate it last played at, else the display set's */
  startCine(fps) {
    if (!this.ds || this.ds.images.length < 2) return;
    this.cine.start(fps || this.cine.fps || Math.round(this.ds.cineRate) || 15);
    this.app.cine.changed();
    this.render();
  }

  stopCine() {
    if (!this.cine.playing) return;
    this.cine.stop();
    this.app.cine.changed();
    if (this.ds) this.render();
  }

  /** @param {number} [fps] */
  toggleCine(fps) { if (this.cine.playing) this.stopCine(); else this.startCine(fps); }

  /** @param {number} now a requestAnimationFrame time */
  tickCine(now) {
    if (!this.ds || !this.loader || !this.cine.due(now)) return;
    const next = (this.index + 1) % this.ds.images.length;
    if (!this.loader.isLoaded(next)) return; // wait for pixels rather than show a blank
    this.cine.advanced(now);
    this.setIndex(next);
  }

  /** Drop the measurement being drawn. */
  cancelPending() { if (this.pending) { this.pending = null; this.render(); } }
}
