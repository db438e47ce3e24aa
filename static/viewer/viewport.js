/**
 * One viewport: a canvas showing one image of a display set, its transform
 * (zoom, pan, rotation, flips), presentation (window/level, invert), text
 * overlays, measurements and cine. Pixels come from a StackLoader; while a
 * slice's full-fidelity frame is not there yet, the server-rendered preview of
 * that slice is drawn and labelled as such, then replaced.
 */

import { TAG, formatDate, num, personName, str } from './dicomjson.js';
import { defaultWindow, isMonochrome, renderFrame } from './pixels.js';
import { angle, ellipseStats, length } from './measure.js';
import { planeOf, referenceLine } from './geometry.js';

export const PRESETS = Object.freeze({
  'soft tissue': { center: 40, width: 400 },
  lung: { center: -600, width: 1500 },
  bone: { center: 400, width: 1800 },
  brain: { center: 40, width: 80 },
  abdomen: { center: 60, width: 400 },
  mediastinum: { center: 50, width: 350 },
});

const PREVIEW_MAX = 512;
export const REFERENCE_COLOR = '#00e676';

function el(tag, cls, parent) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (parent) parent.appendChild(e);
  return e;
}

function setLines(box, lines) {
  while (box.childElementCount > lines.length) box.lastElementChild.remove();
  lines.forEach((text, i) => {
    const line = box.children[i] || el('div', 'vw-ov-line', box);
    if (line.textContent !== text) line.textContent = text;
  });
}

export class Viewport {
  constructor(app, number) {
    this.app = app;
    this.number = number;
    this.root = el('div', 'vw-viewport');
    this.root.dataset.viewport = String(number);
    this.root.tabIndex = 0;
    this.canvas = el('canvas', 'vw-canvas', this.root);
    this.ctx = this.canvas.getContext('2d', { alpha: false });
    this.overlays = {};
    for (const corner of ['tl', 'tr', 'bl', 'br']) this.overlays[corner] = el('div', `vw-ov vw-ov-${corner}`, this.root);
    this.fidelity = el('div', 'vw-fidelity', this.root);
    this.progress = el('div', 'vw-vp-progress', this.root);
    this.bar = el('div', 'vw-vp-bar', this.progress);
    this.empty = el('div', 'vw-empty', this.root);
    this.empty.textContent = 'Drop a series here';
    this.offscreen = document.createElement('canvas');
    this.offctx = this.offscreen.getContext('2d');
    this.imageData = null;
    this.drawnKey = null;
    this.ds = null;
    this.loader = null;
    this.index = 0;
    this.previews = new Map();
    this.previewWanted = -1;
    this.previewController = null;
    this.cine = { playing: false, fps: 0, last: 0, shown: 0, since: 0 };
    this.shownFull = false;
    this.sync = null;
    this.drag = null;
    this.pending = null;
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

  /* ---------- content ---------- */

  setDisplaySet(ds, loader, index = 0) {
    if (this.loader) { this.loader.clearFocus(this); this.unlisten?.(); }
    this.stopCine();
    this.ds = ds;
    this.loader = loader;
    this.resetView();
    this.previews.clear();
    this.shownFull = false;
    this.root.classList.toggle('vw-has-image', Boolean(ds));
    if (!ds) { this.render(); return; }
    this.index = Math.min(Math.max(0, index), ds.images.length - 1);
    this.unlisten = loader.onChange((i) => this.onLoaded(i));
    loader.setFocus(this, this.index);
    this.requestPreview(this.index);
    this.render();
    if (ds.kind === 'multiframe') this.startCine(Math.min(60, Math.round(ds.cineRate) || 15));
  }

  get image() { return this.ds ? this.ds.images[this.index] : null; }

  onLoaded(i) {
    if (i === this.index) this.render();
    this.updateProgress();
  }

  setIndex(i, fromSync = false) {
    if (!this.ds) return;
    const n = this.ds.images.length;
    const next = Math.min(Math.max(0, i), n - 1);
    if (next === this.index && this.drawnIndex === next) return;
    this.index = next;
    const wanted = this.loader.status[next] === 0; // neither loaded nor on its way yet
    this.loader.setFocus(this, next);
    if (wanted) this.requestPreview(next);
    this.render();
    if (!fromSync) this.app.synchronize(this);
    if (this.app.active === this) this.app.referenceChanged();
  }

  scroll(delta) { if (this.ds) this.setIndex(this.index + delta); }

  async requestPreview(index) {
    const img = this.ds.images[index];
    if (this.previews.has(index) || this.previewWanted === index) return;
    if (this.previewController) this.previewController.abort();
    const controller = new AbortController();
    this.previewController = controller;
    this.previewWanted = index;
    const ds = this.ds;
    const scale = Math.min(1, PREVIEW_MAX / Math.max(img.desc.columns, img.desc.rows));
    const w = Math.max(1, Math.round(img.desc.columns * scale));
    const h = Math.max(1, Math.round(img.desc.rows * scale));
    try {
      const frame = img.desc.numberOfFrames > 1 ? img.frame : 0;
      const bitmap = await this.app.client.rendered(img.study, img.series, img.sop, frame, w, h, controller.signal);
      if (this.ds !== ds) { bitmap.close(); return; }
      this.previews.set(index, bitmap);
      while (this.previews.size > 8) {
        const [k, b] = this.previews.entries().next().value;
        this.previews.delete(k);
        b.close();
      }
      if (index === this.index && !this.loader.isLoaded(index)) this.render();
    } catch (err) {
      if (err.name !== 'AbortError') this.app.stats.previewErrors++;
    } finally {
      if (this.previewWanted === index) this.previewWanted = -1;
    }
  }

  /* ---------- geometry ---------- */

  aspect() {
    const d = this.image.desc;
    const sp = d.pixelSpacing || d.imagerPixelSpacing;
    if (!sp) return [1, 1];
    const m = Math.min(sp[0], sp[1]);
    return [sp[1] / m, sp[0] / m]; // x uses column spacing, y row spacing
  }

  /** Image (column, row) to CSS pixels inside the viewport. */
  matrix() {
    const d = this.image.desc;
    const [ax, ay] = this.aspect();
    const w = this.root.clientWidth, h = this.root.clientHeight;
    const iw = d.columns * ax, ih = d.rows * ay;
    const quarter = this.rotation % 180 !== 0;
    const fit = Math.min(w / (quarter ? ih : iw), h / (quarter ? iw : ih));
    const s = fit * this.zoom;
    return new DOMMatrix()
      .translate(w / 2 + this.pan.x, h / 2 + this.pan.y)
      .rotate(this.rotation)
      .scale(this.flipH ? -1 : 1, this.flipV ? -1 : 1)
      .scale(s * ax, s * ay)
      .translate(-d.columns / 2, -d.rows / 2);
  }

  /** Screen pixels per image column. */
  scale() { const m = this.matrix(); return Math.hypot(m.a, m.b) || 1; }

  toImage(clientX, clientY) {
    const r = this.root.getBoundingClientRect();
    const p = this.matrix().inverse().transformPoint(new DOMPoint(clientX - r.left, clientY - r.top));
    return { x: p.x, y: p.y };
  }

  toClient(x, y) {
    const r = this.root.getBoundingClientRect();
    const p = this.matrix().transformPoint(new DOMPoint(x, y));
    return { x: p.x + r.left, y: p.y + r.top };
  }

  /* ---------- drawing ---------- */

  currentWindow(frame) {
    if (!this.window) {
      const img = this.image;
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
    if (!this.ds) { this.updateOverlays(null); return; }
    const img = this.image;
    const d = img.desc;
    const frame = this.loader.frame(this.index);
    let source = null;
    let fidelity = 'loading';
    if (frame) {
      const win = this.currentWindow(frame);
      const key = `${this.loader.id}:${this.index}:${win ? win.center + '/' + win.width : ''}:${this.invert}`;
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
    } else if (this.previews.has(this.index)) {
      source = this.previews.get(this.index);
      fidelity = 'preview';
    }
    const m = new DOMMatrix().scale(dpr, dpr).multiply(this.matrix());
    if (source) {
      ctx.setTransform(m);
      ctx.imageSmoothingEnabled = this.scale() < 3;
      ctx.imageSmoothingQuality = 'high';
      if (fidelity === 'preview' && this.invert) ctx.filter = 'invert(1)';
      ctx.drawImage(source, 0, 0, d.columns, d.rows);
      ctx.filter = 'none';
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    this.drawReferenceLines(ctx);
    this.drawAnnotations(ctx);
    this.drawnIndex = this.index;
    this.shownFull = fidelity === 'full';
    this.updateOverlays(fidelity);
    this.updateProgress();
    if (source) this.app.painted(this, fidelity);
  }

  /** The active viewport's current slice as a line across this one, when the planes cross. */
  drawReferenceLines(ctx) {
    const source = this.app.active;
    let line = null;
    if (source && source !== this && source.ds && source.ds !== this.ds && !source.root.hidden) {
      line = referenceLine(planeOf(source.image), planeOf(this.image));
    }
    this.referenceLine = line;
    if (!line) return;
    const m = this.matrix();
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

  drawAnnotations(ctx) {
    const list = this.app.annotationsFor(this.image);
    const all = this.pending ? [...list, this.pending] : list;
    if (!all.length) return;
    const m = this.matrix();
    ctx.lineWidth = 1.5;
    ctx.font = '13px system-ui, sans-serif';
    for (const a of all) {
      const pts = a.points.map((p) => m.transformPoint(new DOMPoint(p.x, p.y)));
      ctx.strokeStyle = a === this.pending ? '#ffd54f' : '#4fc3f7';
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

  updateOverlays(fidelity) {
    if (!this.ds) {
      for (const box of Object.values(this.overlays)) setLines(box, []);
      this.fidelity.textContent = '';
      return;
    }
    const img = this.image;
    const h = img.meta;
    const win = this.window || img.desc.windows[0];
    const n = this.ds.images.length;
    const sex = str(h, TAG.PatientSex);
    const birth = formatDate(str(h, TAG.PatientBirthDate));
    setLines(this.overlays.tl, [
      personName(h, TAG.PatientName),
      `ID: ${str(h, TAG.PatientID)}`,
      [birth, sex].filter(Boolean).join(' '),
    ]);
    setLines(this.overlays.tr, [
      str(h, TAG.StudyDescription),
      formatDate(str(h, TAG.StudyDate)),
      str(h, TAG.AccessionNumber) ? `Acc: ${str(h, TAG.AccessionNumber)}` : '',
      str(h, TAG.InstitutionName),
    ]);
    const loc = img.sliceLocation ?? img.position;
    const bl = [
      `Se: ${this.ds.seriesNumber} ${this.ds.description}`.trim(),
      this.ds.kind === 'multiframe' ? `Fr: ${this.index + 1}/${n}` : `Im: ${this.index + 1}/${n}`,
    ];
    if (loc !== null && loc !== undefined && Number.isFinite(loc)) bl.push(`Loc: ${loc.toFixed(1)} mm`);
    if (Number.isFinite(img.sliceThickness)) bl.push(`Thk: ${img.sliceThickness} mm`);
    if (this.cine.playing) bl.push(`Cine: ${this.cine.fps} fps`);
    setLines(this.overlays.bl, bl);
    const br = [];
    if (win && isMonochrome(img.desc)) br.push(`W: ${Math.round(win.width)} L: ${Math.round(win.center)}`);
    br.push(`Zoom: ${(this.scale()).toFixed(2)}x`);
    const flags = [this.rotation ? `Rot ${this.rotation}°` : '', this.flipH ? 'Flip H' : '', this.flipV ? 'Flip V' : '', this.invert ? 'Inverted' : ''];
    if (flags.some(Boolean)) br.push(flags.filter(Boolean).join(' '));
    setLines(this.overlays.br, br);
    this.fidelity.textContent = fidelity === 'full' ? 'Lossless' : fidelity === 'preview' ? 'Preview (lossy)' : 'Loading…';
    this.fidelity.dataset.fidelity = fidelity || 'loading';
  }

  updateProgress() {
    if (!this.loader) { this.progress.hidden = true; return; }
    const { loaded, total } = this.loader;
    this.progress.hidden = loaded >= total;
    this.bar.style.width = `${total ? (100 * loaded) / total : 0}%`;
  }

  /* ---------- presentation ---------- */

  setWindow(win) { this.window = { ...win }; this.render(); }

  applyPreset(name) {
    if (!this.ds) return;
    const img = this.image;
    if (name === 'default') {
      const frame = this.loader.frame(this.index);
      this.window = img.desc.windows[0] ? { ...img.desc.windows[0] } : frame ? defaultWindow({ ...img.desc, windows: [] }, frame) : null;
    } else if (name === 'full') {
      const frame = this.loader.frame(this.index);
      if (frame) this.window = defaultWindow({ ...img.desc, windows: [] }, frame);
    } else if (PRESETS[name]) {
      this.window = { ...PRESETS[name] };
    }
    this.render();
  }

  toggleInvert() { this.invert = !this.invert; this.render(); }
  rotate(deg = 90) { this.rotation = (this.rotation + deg + 360) % 360; this.render(); }
  flip(axis) { if (axis === 'h') this.flipH = !this.flipH; else this.flipV = !this.flipV; this.render(); }
  reset() { this.resetView(); this.render(); }

  /* ---------- cine ---------- */

  startCine(fps) {
    if (!this.ds || this.ds.images.length < 2) return;
    this.cine = { playing: true, fps: fps || this.cine.fps || Math.round(this.ds.cineRate) || 15, last: 0, shown: 0, since: performance.now() };
    this.app.cineChanged();
    this.render();
  }

  stopCine() {
    if (!this.cine.playing) return;
    this.cine.playing = false;
    this.app.cineChanged();
    if (this.ds) this.render();
  }

  toggleCine(fps) { if (this.cine.playing) this.stopCine(); else this.startCine(fps); }

  tickCine(now) {
    const c = this.cine;
    if (!c.playing || !this.ds) return;
    const interval = 1000 / c.fps;
    if (c.last && now - c.last < interval - 1) return;
    const next = (this.index + 1) % this.ds.images.length;
    if (!this.loader.isLoaded(next)) return; // wait for pixels rather than show a blank
    c.last = c.last && now - c.last < 2 * interval ? c.last + interval : now;
    c.shown++;
    this.setIndex(next);
  }

  /* ---------- pointer ---------- */

  attach() {
    const r = this.root;
    r.addEventListener('contextmenu', (e) => e.preventDefault());
    r.addEventListener('pointerdown', (e) => this.onDown(e));
    r.addEventListener('pointermove', (e) => this.onMove(e));
    r.addEventListener('pointerup', (e) => this.onUp(e));
    r.addEventListener('pointercancel', (e) => this.onUp(e));
    r.addEventListener('wheel', (e) => this.onWheel(e), { passive: false });
    r.addEventListener('dblclick', () => this.app.toggleMaximize(this));
    r.addEventListener('dragover', (e) => { if (e.dataTransfer.types.includes('application/x-displayset')) { e.preventDefault(); r.classList.add('vw-drop'); } });
    r.addEventListener('dragleave', () => r.classList.remove('vw-drop'));
    r.addEventListener('drop', (e) => {
      r.classList.remove('vw-drop');
      const id = e.dataTransfer.getData('application/x-displayset');
      if (id) { e.preventDefault(); this.app.activate(this); this.app.show(this, id); }
    });
    this.wheelAcc = 0;
  }

  onWheel(e) {
    if (!this.ds) return;
    e.preventDefault();
    if (e.ctrlKey) { this.zoomBy(Math.exp(-e.deltaY * 0.002)); return; }
    const px = e.deltaMode === 1 ? e.deltaY * 40 : e.deltaMode === 2 ? e.deltaY * 400 : e.deltaY;
    // One slice per mouse-wheel notch (~100 px); small trackpad deltas accumulate.
    this.wheelAcc += px;
    if (Math.abs(this.wheelAcc) < 50) return;
    const steps = Math.sign(this.wheelAcc) * Math.min(10, Math.max(1, Math.floor(Math.abs(this.wheelAcc) / 100)));
    this.wheelAcc = 0;
    this.scroll(steps);
  }

  zoomBy(f) { this.zoom = Math.min(40, Math.max(0.05, this.zoom * f)); this.render(); }

  onDown(e) {
    this.app.activate(this);
    if (!this.ds) return;
    this.root.focus({ preventScroll: true });
    const tool = e.button === 1 ? 'pan' : e.button === 2 ? 'zoom' : this.app.tool;
    const p = this.toImage(e.clientX, e.clientY);
    if (this.pending && this.pending.type === 'angle' && this.pending.points.length === 3) {
      this.pending.points[2] = p;
      this.finishAnnotation();
      return;
    }
    this.drag = { tool, x: e.clientX, y: e.clientY, acc: 0, id: e.pointerId };
    this.root.setPointerCapture(e.pointerId);
    if (tool === 'length' || tool === 'angle' || tool === 'roi') {
      this.pending = { type: tool, points: [p, { ...p }], text: '' };
      this.render();
    }
    if (tool === 'wl' && !this.window) this.currentWindow(this.loader.frame(this.index));
  }

  onMove(e) {
    if (!this.drag) {
      if (this.pending && this.pending.type === 'angle' && this.pending.points.length === 3) {
        this.pending.points[2] = this.toImage(e.clientX, e.clientY);
        this.pending.text = this.measure(this.pending).text;
        this.render();
      }
      return;
    }
    const dx = e.clientX - this.drag.x, dy = e.clientY - this.drag.y;
    this.drag.x = e.clientX;
    this.drag.y = e.clientY;
    switch (this.drag.tool) {
      case 'wl': {
        const win = this.window || this.currentWindow(this.loader.frame(this.index));
        if (!win) return;
        const frame = this.loader.frame(this.index);
        const range = frame ? Math.max(1, (frame.max - frame.min) * Math.abs(this.image.desc.slope)) : 4096;
        const k = Math.max(range / 1024, 0.25);
        this.window = { center: win.center + dy * k, width: Math.max(1, win.width + dx * k) };
        this.render();
        this.app.stats.wlChanges++;
        break;
      }
      case 'pan': this.pan.x += dx; this.pan.y += dy; this.render(); break;
      case 'zoom': this.zoomBy(Math.exp(-dy * 0.01)); break;
      case 'scroll': {
        this.drag.acc += dy;
        const steps = Math.trunc(this.drag.acc / 6);
        if (steps) { this.drag.acc -= steps * 6; this.scroll(steps); }
        break;
      }
      default:
        if (this.pending) {
          this.pending.points[1] = this.toImage(e.clientX, e.clientY);
          this.pending.text = this.measure(this.pending).text;
          this.render();
        }
    }
  }

  onUp(e) {
    if (!this.drag || e.pointerId !== this.drag.id) return;
    const tool = this.drag.tool;
    this.drag = null;
    if (this.root.hasPointerCapture(e.pointerId)) this.root.releasePointerCapture(e.pointerId);
    if (!this.pending) return;
    const [a, b] = this.pending.points;
    const screen = Math.hypot(b.x - a.x, b.y - a.y) * this.scale();
    if (screen < 3) { this.pending = null; this.render(); return; }
    if (tool === 'angle' && this.pending.points.length === 2) {
      this.pending.points.push({ ...b });
      this.render();
      return;
    }
    this.finishAnnotation();
  }

  measure(a) {
    const d = this.image.desc;
    if (a.type === 'length') return length(d, a.points[0], a.points[1]);
    if (a.type === 'angle') return a.points.length === 3 ? angle(d, ...a.points) : length(d, a.points[0], a.points[1]);
    return ellipseStats(d, this.loader.frame(this.index), a.points[0], a.points[1]);
  }

  finishAnnotation() {
    const a = this.pending;
    this.pending = null;
    const result = this.measure(a);
    a.text = result.text;
    a.value = result.value ?? result.mean;
    this.app.addAnnotation(this.image, a);
    this.render();
  }

  cancelPending() { if (this.pending) { this.pending = null; this.render(); } }
}
