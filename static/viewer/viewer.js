/**
 * The viewer application: loads a study over DICOMweb (QIDO-RS series, WADO-RS
 * metadata, thumbnails, frames), hangs the most relevant series, and wires the
 * toolbar, series list, layouts, keyboard shortcuts, cine, measurements and
 * priors. `window.__viewerStats` exposes timings for the benchmark and
 * `performance.mark('viewer:first-image' | 'viewer:first-full')` are set when
 * the first image, then the first lossless image, is painted.
 */

import { DicomWebClient } from './dicomweb.js';
import { TAG, formatDate, isUID, num, personName, str } from './dicomjson.js';
import { displaySetsOf, hangingOrder, isImageSeries } from './displaysets.js';
import { FetchPool, FrameCache, StackLoader } from './loader.js';
import { PRESETS, Viewport } from './viewport.js';

const MB = 1024 * 1024;
const LAYOUTS = { '1x1': 1, '1x2': 2, '2x2': 4 };

function el(tag, cls, parent, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}

class ViewerApp {
  constructor(root) {
    this.root = root;
    this.studyUID = root.dataset.study;
    this.client = new DicomWebClient(root.dataset.dicomweb);
    this.client.prime([...document.querySelectorAll('link[rel="preload"][as="fetch"]')].map((link) => link.href));
    const params = new URLSearchParams(location.search);
    const budgetMB = Number(params.get('budget')) || Number(root.dataset.budget) || 512;
    this.cache = new FrameCache(budgetMB * MB);
    this.pool = new FetchPool(Number(params.get('connections')) || 6);
    this.tool = 'wl';
    this.displaySets = new Map(); // id -> display set
    this.loaders = new Map(); // id -> StackLoader
    this.seriesEntries = new Map(); // series uid -> {info, metadata promise, sets}
    this.seriesOrder = [];
    this.studies = new Map(); // study uid -> {list element}
    this.annotations = new Map();
    this.layout = '1x1';
    this.stats = {
      firstImage: null, firstFull: null, firstImageFidelity: null, wlChanges: 0, previewErrors: 0,
      errors: [], cineFps: 0,
    };
    window.__viewerStats = this.stats;
    this.firstFull = new Promise((resolve) => { this.resolveFirstFull = resolve; });
    this.status = document.getElementById('vw-status');
    this.grid = document.getElementById('viewports');
    this.seriesList = document.getElementById('series-list');
    this.measureList = document.getElementById('measurements');
    this.viewports = [0, 1, 2, 3].map((i) => new Viewport(this, i));
    this.viewports.forEach((vp) => this.grid.appendChild(vp.root));
    this.active = this.viewports[0];
    this.setLayout('1x1', false);
    this.activate(this.active);
    this.bindToolbar();
    this.bindKeys();
    this.cineLoop = this.cineLoop.bind(this);
    window.__viewer = this;
    setInterval(() => this.updateStats(), 250);
  }

  say(text) { this.status.textContent = text; }

  fail(text, err) {
    this.say(text);
    this.stats.errors.push(String(err && err.message ? err.message : err || text));
    console.error(text, err);
  }

  /* ---------- loading ---------- */

  async start() {
    if (!isUID(this.studyUID)) { this.fail('Invalid study'); return; }
    this.say('Loading study…');
    let series;
    try {
      series = await this.client.searchSeries(this.studyUID, {
        includefield: ['SeriesDescription', 'SeriesNumber', 'Modality', 'NumberOfSeriesRelatedInstances', 'BodyPartExamined'],
      });
    } catch (err) { this.fail('Could not search the series of this study.', err); return; }
    const ordered = hangingOrder(series.filter(isImageSeries));
    if (!ordered.length) { this.say('This study has no images.'); return; }
    this.seriesOrder = ordered.map((s) => str(s, TAG.SeriesInstanceUID));
    ordered.forEach((s) => this.addSeriesEntry(this.studyUID, s, this.seriesList));
    // Hang the first series as soon as its metadata arrives; the others follow.
    const firstUID = this.seriesOrder[0];
    try {
      const sets = await this.loadSeries(firstUID);
      if (sets.length) this.show(this.viewports[0], sets[0].id);
    } catch (err) { this.fail('Could not load the first series.', err); }
    this.say('');
    // Everything else waits for the first lossless image, so it does not compete for the link.
    await Promise.race([this.firstFull, new Promise((resolve) => setTimeout(resolve, 2000))]);
    for (const uid of this.seriesOrder.slice(1)) {
      this.loadSeries(uid).catch((err) => this.fail('Could not load a series.', err));
    }
    this.loadThumbnails();
    this.loadPriors();
  }

  addSeriesEntry(study, info, list) {
    const uid = str(info, TAG.SeriesInstanceUID);
    if (!isUID(uid)) return;
    const item = el('li', 'vw-series-item vw-series-pending', list);
    item.dataset.series = uid;
    const entry = { study, info, item, sets: null, promise: null };
    this.seriesEntries.set(uid, entry);
    const label = el('div', 'vw-series-label', item);
    el('span', 'vw-series-number', label, `${num(info, TAG.SeriesNumber, '')}`);
    el('span', 'vw-series-mod', label, str(info, TAG.Modality));
    el('span', 'vw-series-desc', label, str(info, TAG.SeriesDescription) || '(no description)');
    el('span', 'vw-series-count', label, `${num(info, TAG.NumberOfSeriesRelatedInstances, '?')} images`);
    el('div', 'vw-sets', item);
    return entry;
  }

  loadSeries(uid) {
    const entry = this.seriesEntries.get(uid);
    if (!entry.promise) {
      entry.promise = this.client.seriesMetadata(entry.study, uid).then((metadata) => {
        const sets = displaySetsOf(entry.study, entry.info, metadata);
        entry.sets = sets;
        entry.item.classList.remove('vw-series-pending');
        const box = entry.item.querySelector('.vw-sets');
        for (const ds of sets) {
          this.displaySets.set(ds.id, ds);
          ds.entry = entry;
          this.renderSetCard(ds, box);
        }
        return sets;
      });
    }
    return entry.promise;
  }

  renderSetCard(ds, box) {
    const card = el('button', 'vw-set', box);
    card.type = 'button';
    card.draggable = true;
    card.dataset.displayset = ds.id;
    card.title = 'Click to show in the active viewport, or drag into a viewport';
    ds.thumb = el('img', 'vw-thumb', card);
    ds.thumb.alt = '';
    const text = el('span', 'vw-set-text', card);
    el('span', 'vw-set-kind', text, ds.kind === 'multiframe' ? `Clip · ${ds.images.length} frames` : `${ds.images.length} images`);
    ds.progressText = el('span', 'vw-set-progress', text, '');
    const meter = el('span', 'vw-meter', card);
    ds.progressBar = el('span', 'vw-meter-bar', meter);
    card.addEventListener('click', () => this.show(this.active, ds.id));
    card.addEventListener('dragstart', (e) => {
      e.dataTransfer.setData('application/x-displayset', ds.id);
      e.dataTransfer.effectAllowed = 'copy';
    });
    this.updateProgress(ds);
  }

  async loadThumbnails() {
    for (const uid of this.seriesOrder) {
      const entry = this.seriesEntries.get(uid);
      try {
        const sets = await this.loadSeries(uid);
        for (const ds of sets) {
          const url = ds.kind === 'multiframe'
            ? this.client.instanceThumbnailUrl(ds.study, ds.series, ds.thumbnailSop)
            : this.client.seriesThumbnailUrl(ds.study, ds.series);
          const blob = await this.client.blob(url);
          ds.thumb.src = URL.createObjectURL(blob);
        }
      } catch (err) {
        entry.item.classList.add('vw-thumb-missing');
      }
    }
  }

  loaderFor(ds) {
    let loader = this.loaders.get(ds.id);
    if (!loader) {
      loader = new StackLoader(ds, this.client, this.pool, this.cache);
      loader.onChange(() => this.updateProgress(ds));
      this.loaders.set(ds.id, loader);
    }
    return loader;
  }

  show(viewport, id) {
    const ds = this.displaySets.get(id);
    if (!ds) return;
    viewport.setDisplaySet(ds, this.loaderFor(ds), 0);
    this.referenceChanged();
    this.markShown();
    this.schedulePrefetch();
  }

  markShown() {
    const shown = new Set(this.visibleViewports().map((vp) => vp.ds && vp.ds.id));
    for (const card of this.root.querySelectorAll('.vw-set')) card.classList.toggle('vw-set-shown', shown.has(card.dataset.displayset));
  }

  /** Prefetch the next display set after the shown ones once they are complete. */
  schedulePrefetch() {
    const shown = new Set(this.visibleViewports().filter((vp) => vp.ds).map((vp) => vp.ds.id));
    const busy = [...shown].some((id) => { const l = this.loaders.get(id); return l && l.loaded < l.total; });
    for (const [id, loader] of this.loaders) if (!shown.has(id)) loader.setPrefetch(false);
    if (busy) return;
    for (const uid of this.seriesOrder) {
      const entry = this.seriesEntries.get(uid);
      for (const ds of entry.sets || []) {
        if (shown.has(ds.id)) continue;
        const loader = this.loaderFor(ds);
        if (loader.loaded < loader.total) { loader.setPrefetch(true); return; }
      }
    }
  }

  updateProgress(ds) {
    const loader = this.loaders.get(ds.id);
    const loaded = loader ? loader.loaded : 0;
    const total = ds.images.length;
    if (ds.progressText) {
      ds.progressText.textContent = `${loaded}/${total} loaded`;
      ds.progressBar.style.width = `${(100 * loaded) / total}%`;
    }
    if (loader && loaded === total && !ds.complete) { ds.complete = true; this.schedulePrefetch(); }
    if (loader && loaded < total) ds.complete = false;
  }

  /* ---------- painting and stats ---------- */

  painted(viewport, fidelity) {
    const s = this.stats;
    if (s.firstImage === null) {
      performance.mark('viewer:first-image');
      s.firstImage = performance.now();
      s.firstImageFidelity = fidelity;
    }
    if (fidelity === 'full' && s.firstFull === null) {
      performance.mark('viewer:first-full');
      s.firstFull = performance.now();
      this.resolveFirstFull();
    }
  }

  updateStats() {
    const s = this.stats;
    s.requests = this.client.requests;
    s.bytes = this.client.bytes;
    s.cacheBytes = this.cache.used;
    s.peakCacheBytes = this.cache.peak;
    s.budgetBytes = this.cache.budget;
    s.evictions = this.cache.evictions;
    s.viewports = this.visibleViewports().map((vp) => ({
      displaySet: vp.ds ? vp.ds.id : null,
      kind: vp.ds ? vp.ds.kind : null,
      index: vp.index,
      total: vp.ds ? vp.ds.images.length : 0,
      full: vp.shownFull,
      loaded: vp.loader ? vp.loader.loaded : 0,
      cine: vp.cine.playing ? vp.cine.fps : 0,
      cineShown: vp.cine.shown,
      cineSince: vp.cine.since,
      window: vp.window ? { ...vp.window } : null,
    }));
    return s;
  }

  /* ---------- viewports and layout ---------- */

  visibleViewports() { return this.viewports.slice(0, LAYOUTS[this.layout]); }

  activate(vp) {
    const changed = this.active !== vp;
    this.active = vp;
    for (const v of this.viewports) v.root.classList.toggle('vw-active', v === vp);
    if (changed) this.referenceChanged();
  }

  /** The active viewport's slice moved: redraw the reference lines it casts on the others. */
  referenceChanged() {
    for (const vp of this.visibleViewports()) if (vp !== this.active && vp.ds) vp.render();
  }

  setLayout(name, hang = true) {
    if (!LAYOUTS[name]) return;
    this.layout = name;
    this.grid.dataset.layout = name;
    this.grid.classList.remove('vw-maximized');
    const n = LAYOUTS[name];
    this.viewports.forEach((vp, i) => {
      vp.root.hidden = i >= n;
      if (i >= n && vp.ds) { vp.loader.clearFocus(vp); vp.stopCine(); }
    });
    if (!this.visibleViewports().includes(this.active)) this.activate(this.viewports[0]);
    const select = document.getElementById('vw-layout');
    if (select) select.value = name;
    for (const vp of this.visibleViewports()) if (vp.ds) vp.loader.setFocus(vp, vp.index);
    if (hang) this.hangEmpty();
    requestAnimationFrame(() => this.viewports.forEach((vp) => vp.resize()));
    this.markShown();
  }

  /** Fill empty visible viewports with the next display sets in hanging order. */
  async hangEmpty() {
    for (const uid of this.seriesOrder) {
      const empty = this.visibleViewports().filter((vp) => !vp.ds);
      if (!empty.length) return;
      let sets;
      try { sets = await this.loadSeries(uid); } catch (err) { continue; }
      const used = new Set(this.visibleViewports().filter((vp) => vp.ds).map((vp) => vp.ds.id));
      for (const ds of sets) {
        const vp = this.visibleViewports().find((v) => !v.ds);
        if (!vp) return;
        if (!used.has(ds.id)) this.show(vp, ds.id);
      }
    }
  }

  toggleMaximize(vp) {
    if (LAYOUTS[this.layout] === 1) return;
    const on = !this.grid.classList.contains('vw-maximized');
    this.grid.classList.toggle('vw-maximized', on);
    this.visibleViewports().forEach((v) => { v.root.classList.toggle('vw-max', on && v === vp); });
    requestAnimationFrame(() => this.viewports.forEach((v) => v.resize()));
  }

  /* ---------- annotations ---------- */

  annotationKey(img) { return img ? `${img.sop}:${img.frame}` : ''; }

  annotationsFor(img) { return this.annotations.get(this.annotationKey(img)) || []; }

  addAnnotation(img, a) {
    const key = this.annotationKey(img);
    if (!this.annotations.has(key)) this.annotations.set(key, []);
    this.annotations.get(key).push(a);
    const li = el('li', 'vw-measure', this.measureList);
    li.dataset.type = a.type;
    const name = { length: 'Length', angle: 'Angle', roi: 'ROI' }[a.type];
    el('span', 'vw-measure-name', li, name);
    el('span', 'vw-measure-value', li, a.text);
    a.item = li;
    a.key = key;
  }

  removeLastAnnotation() {
    const vp = this.active;
    if (!vp.ds) return;
    const list = this.annotationsFor(vp.image);
    const a = list.pop();
    if (a && a.item) a.item.remove();
    vp.render();
  }

  clearAnnotations() {
    this.annotations.clear();
    this.measureList.replaceChildren();
    this.visibleViewports().forEach((vp) => vp.ds && vp.render());
  }

  /* ---------- cine ---------- */

  cineChanged() {
    const playing = this.viewports.some((vp) => vp.cine.playing);
    const button = document.querySelector('[data-action="cine"]');
    if (button) button.setAttribute('aria-pressed', String(playing));
    if (playing && !this.cineRunning) { this.cineRunning = true; requestAnimationFrame(this.cineLoop); }
  }

  cineLoop(now) {
    let any = false;
    for (const vp of this.visibleViewports()) {
      if (vp.cine.playing) { any = true; vp.tickCine(now); }
    }
    if (any) requestAnimationFrame(this.cineLoop);
    else this.cineRunning = false;
  }

  cineFps() { return Math.max(1, Math.min(120, Number(document.getElementById('vw-fps').value) || 0)); }

  /* ---------- synchronized scrolling ---------- */

  toggleSync() {
    this.syncOn = !this.syncOn;
    const button = document.querySelector('[data-action="sync"]');
    if (button) button.setAttribute('aria-pressed', String(this.syncOn));
    this.syncAnchors = new Map();
    if (this.syncOn) {
      for (const vp of this.visibleViewports()) if (vp.ds) this.syncAnchors.set(vp, this.positionOf(vp, vp.index));
    }
  }

  positionOf(vp, index) {
    const img = vp.ds.images[index];
    return Number.isFinite(img.position) ? img.position : index;
  }

  synchronize(source) {
    if (!this.syncOn || !source.ds || !this.syncAnchors.has(source)) return;
    const delta = this.positionOf(source, source.index) - this.syncAnchors.get(source);
    for (const vp of this.visibleViewports()) {
      if (vp === source || !vp.ds || !this.syncAnchors.has(vp)) continue;
      const target = this.syncAnchors.get(vp) + delta;
      let best = vp.index, bestD = Infinity;
      vp.ds.images.forEach((_, i) => {
        const d = Math.abs(this.positionOf(vp, i) - target);
        if (d < bestD) { bestD = d; best = i; }
      });
      vp.setIndex(best, true);
    }
  }

  /* ---------- priors ---------- */

  async loadPriors() {
    const vp = this.viewports[0];
    const header = vp.ds ? vp.ds.header : null;
    const patientId = header ? str(header, TAG.PatientID) : '';
    const box = document.getElementById('priors');
    if (!patientId || !box) return;
    let studies;
    try {
      studies = await this.client.searchStudies({
        PatientID: patientId,
        includefield: ['StudyDescription', 'ModalitiesInStudy', 'NumberOfStudyRelatedInstances'],
        limit: 50,
      });
    } catch (err) { return; }
    const priors = studies.filter((s) => str(s, TAG.StudyInstanceUID) !== this.studyUID && isUID(str(s, TAG.StudyInstanceUID)));
    priors.sort((a, b) => str(b, TAG.StudyDate).localeCompare(str(a, TAG.StudyDate)));
    const list = box.querySelector('ol');
    list.replaceChildren();
    box.hidden = !priors.length;
    for (const study of priors) {
      const uid = str(study, TAG.StudyInstanceUID);
      const li = el('li', 'vw-prior', list);
      const button = el('button', 'vw-prior-open', li);
      button.type = 'button';
      el('span', 'vw-prior-date', button, formatDate(str(study, TAG.StudyDate)));
      el('span', 'vw-prior-mod', button, str(study, TAG.ModalitiesInStudy));
      el('span', 'vw-prior-desc', button, str(study, TAG.StudyDescription));
      const seriesBox = el('ol', 'vw-series', li);
      button.addEventListener('click', () => this.openPrior(uid, seriesBox, button));
    }
  }

  async openPrior(study, list, button) {
    if (button.dataset.opened) return;
    button.dataset.opened = '1';
    try {
      const series = hangingOrder((await this.client.searchSeries(study, {
        includefield: ['SeriesDescription', 'SeriesNumber', 'Modality', 'NumberOfSeriesRelatedInstances'],
      })).filter(isImageSeries));
      const uids = [];
      for (const s of series) { if (this.addSeriesEntry(study, s, list)) uids.push(str(s, TAG.SeriesInstanceUID)); }
      this.seriesOrder.push(...uids);
      const sets = uids.length ? await this.loadSeries(uids[0]) : [];
      if (sets.length) {
        if (LAYOUTS[this.layout] < 2) this.setLayout('1x2', false);
        this.activate(this.viewports[1]);
        this.show(this.viewports[1], sets[0].id);
        if (!this.syncOn) this.toggleSync();
        else this.syncAnchors.set(this.viewports[1], this.positionOf(this.viewports[1], 0));
      }
      for (const uid of uids.slice(1)) this.loadSeries(uid).catch(() => {});
    } catch (err) { this.fail('Could not open the prior study.', err); }
  }

  /* ---------- toolbar and keys ---------- */

  setTool(tool) {
    this.tool = tool;
    for (const b of this.root.querySelectorAll('[data-tool]')) b.setAttribute('aria-pressed', String(b.dataset.tool === tool));
    this.viewports.forEach((vp) => vp.cancelPending());
  }

  action(name, vp = this.active) {
    switch (name) {
      case 'reset': vp.reset(); break;
      case 'invert': vp.toggleInvert(); break;
      case 'rotate': vp.rotate(90); break;
      case 'rotate-left': vp.rotate(-90); break;
      case 'flip-h': vp.flip('h'); break;
      case 'flip-v': vp.flip('v'); break;
      case 'cine': vp.toggleCine(this.cineFps()); break;
      case 'sync': this.toggleSync(); break;
      case 'undo': this.removeLastAnnotation(); break;
      case 'clear': this.clearAnnotations(); break;
      default: break;
    }
  }

  bindToolbar() {
    for (const b of this.root.querySelectorAll('[data-tool]')) b.addEventListener('click', () => this.setTool(b.dataset.tool));
    for (const b of this.root.querySelectorAll('[data-action]')) b.addEventListener('click', () => this.action(b.dataset.action));
    const preset = document.getElementById('vw-preset');
    preset.addEventListener('change', () => { if (preset.value) this.active.applyPreset(preset.value); preset.value = ''; });
    document.getElementById('vw-layout').addEventListener('change', (e) => this.setLayout(e.target.value));
    document.getElementById('vw-fps').addEventListener('change', () => {
      const vp = this.active;
      if (vp.cine.playing) vp.startCine(this.cineFps());
    });
    this.setTool('wl');
  }

  bindKeys() {
    const presetKeys = ['soft tissue', 'lung', 'bone', 'brain', 'abdomen', 'mediastinum'];
    document.addEventListener('keydown', (e) => {
      if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement) return;
      if (e.ctrlKey || e.metaKey || e.altKey) return;
      const vp = this.active;
      const page = vp.ds ? Math.max(1, Math.round(vp.ds.images.length / 10)) : 1;
      const keys = {
        ArrowDown: () => vp.scroll(1), ArrowRight: () => vp.scroll(1),
        ArrowUp: () => vp.scroll(-1), ArrowLeft: () => vp.scroll(-1),
        PageDown: () => vp.scroll(page), PageUp: () => vp.scroll(-page),
        Home: () => vp.setIndex(0), End: () => vp.ds && vp.setIndex(vp.ds.images.length - 1),
        ' ': () => this.action('cine'),
        w: () => this.setTool('wl'), p: () => this.setTool('pan'), z: () => this.setTool('zoom'),
        s: () => this.setTool('scroll'), l: () => this.setTool('length'), a: () => this.setTool('angle'),
        o: () => this.setTool('roi'), i: () => this.action('invert'), r: () => this.action('rotate'),
        R: () => this.action('rotate-left'), h: () => this.action('flip-h'), v: () => this.action('flip-v'),
        Escape: () => { this.viewports.forEach((v) => v.cancelPending()); this.action('reset'); },
        0: () => this.action('reset'), Delete: () => this.action('undo'), Backspace: () => this.action('undo'),
        y: () => this.action('sync'),
        '+': () => vp.zoomBy(1.25), '=': () => vp.zoomBy(1.25), '-': () => vp.zoomBy(0.8),
      };
      presetKeys.forEach((name, i) => { keys[String(i + 1)] = () => vp.applyPreset(name); });
      keys['7'] = () => vp.applyPreset('default');
      const fn = keys[e.key];
      if (fn) { e.preventDefault(); fn(); }
    });
  }
}

const root = document.getElementById('viewer');
if (root) {
  const app = new ViewerApp(root);
  app.start();
}

export { ViewerApp, PRESETS };
