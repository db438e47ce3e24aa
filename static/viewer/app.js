// @ts-check
/**
 * The viewer application: loads a study over DICOMweb (QIDO-RS series, WADO-RS
 * metadata, thumbnails, frames), hangs the most relevant series, and holds
 * together the viewports, their pointer tools and the services that each do
 * one job (series list, prefetch, layout, annotations, cine, sync, priors,
 * toolbar, keyboard). `performance.mark('viewer:first-image' | 'viewer:first-full')`
 * are set when the first image, then the first lossless image, is painted;
 * benchmark counters only exist on request (see stats.js).
 */

import { TAG, isUID, str } from './dicomjson.js';
import { DicomWebClient } from './dicomweb.js';
import { hangingOrder, isImageSeries } from './displaysets.js';
import { byId } from './dom.js';
import { FetchPool, FrameCache } from './loader.js';
import { AnnotationService } from './services/annotations.js';
import { CineService } from './services/cine.js';
import { bindKeys } from './services/keyboard.js';
import { LayoutService } from './services/layout.js';
import { PrefetchService } from './services/prefetch.js';
import { PriorsService } from './services/priors.js';
import { RestoreService, StudyOffline } from './services/restore.js';
import { SeriesService } from './services/series.js';
import { SyncService } from './services/sync.js';
import { ToolbarService } from './services/toolbar.js';
import { Stats } from './stats.js';
import { PointerInput } from './tools/pointer.js';
import { Viewport } from './viewport/viewport.js';

const MB = 1024 * 1024;

export class ViewerApp {
  /**
   * @param {HTMLElement} root the page's #viewer, carrying data-dicomweb and data-study
   * @param {{stats?: boolean}} [options] keep benchmark counters
   */
  constructor(root, options = {}) {
    this.root = root;
    this.studyUID = root.dataset.study || '';
    this.client = new DicomWebClient(root.dataset.dicomweb || '');
    this.client.prime([...document.querySelectorAll('link[rel="preload"][as="fetch"]')].map((link) => /** @type {HTMLLinkElement} */ (link).href));
    const params = new URLSearchParams(location.search);
    const budgetMB = Number(params.get('budget')) || Number(root.dataset.budget) || 512;
    this.cache = new FrameCache(budgetMB * MB);
    this.pool = new FetchPool(Number(params.get('connections')) || 6);
    /** The pointer tool of the primary button, a name in tools/pointer.js TOOLS. */
    this.tool = 'wl';
    /** @type {Stats | null} */
    this.stats = options.stats ? new Stats() : null;
    /** @type {() => void} */
    this.resolveFirstFull = () => {};
    /** @type {Promise<void>} */
    this.firstFull = new Promise((resolve) => { this.resolveFirstFull = resolve; });
    this.firstImageShown = false;
    this.firstFullShown = false;
    this.status = byId('vw-status', HTMLElement);
    this.seriesList = byId('series-list', HTMLElement);
    const grid = byId('viewports', HTMLElement);
    this.series = new SeriesService(this);
    this.prefetch = new PrefetchService(this);
    this.layout = new LayoutService(this, grid);
    this.annotations = new AnnotationService(this, byId('measurements', HTMLElement));
    this.cine = new CineService(this);
    this.sync = new SyncService(this);
    this.priors = new PriorsService(this);
    this.restore = new RestoreService(this);
    this.toolbar = new ToolbarService(this);
    this.viewports = [0, 1, 2, 3].map((i) => new Viewport(this, i));
    for (const vp of this.viewports) {
      new PointerInput(vp);
      grid.appendChild(vp.root);
    }
    this.active = this.viewports[0];
    this.layout.set('1x1', false);
    this.activate(this.active);
    this.toolbar.bind();
    bindKeys(this);
  }

  /** @param {string} text shown in the side panel's status line */
  say(text) { this.status.textContent = text; }

  /**
   * @param {string} text
   * @param {unknown} [err]
   */
  fail(text, err) {
    this.say(text);
    if (this.stats) {
      const message = err instanceof Error ? err.message : '';
      this.stats.errors.push(String(message || err || text));
    }
    console.error(text, err);
  }

  /* ---------- loading ---------- */

  async start() {
    if (!isUID(this.studyUID)) { this.fail('Invalid study'); return; }
    this.say('Loading study…');
    let series;
    const search = () => this.client.searchSeries(this.studyUID, {
      includefield: ['SeriesDescription', 'SeriesNumber', 'Modality', 'NumberOfSeriesRelatedInstances', 'BodyPartExamined', 'InstanceAvailability'],
    });
    try {
      series = await search();
    } catch (err) { this.fail('Could not search the series of this study.', err); return; }
    try {
      // A study on an archive tier: "Restoring…" until it is back, then it opens.
      series = await this.restore.untilOnline(series, search);
    } catch (err) {
      this.fail(err instanceof StudyOffline
        ? 'This study is offline: an administrator must bring its storage media back.'
        : 'Could not restore this study from archive storage.', err);
      return;
    }
    this.say('Loading study…');
    const ordered = hangingOrder(series.filter(isImageSeries));
    if (!ordered.length) { this.say('This study has no images.'); return; }
    this.series.order = ordered.map((s) => str(s, TAG.SeriesInstanceUID));
    ordered.forEach((s) => this.series.add(this.studyUID, s, this.seriesList));
    // Hang the first series as soon as its metadata arrives; the others follow.
    const firstUID = this.series.order[0];
    try {
      const sets = await this.series.load(firstUID);
      if (sets.length) this.show(this.viewports[0], sets[0].id);
    } catch (err) { this.fail('Could not load the first series.', err); }
    this.say('');
    // Everything else waits for the first lossless image, so it does not compete for the link.
    await Promise.race([this.firstFull, new Promise((resolve) => setTimeout(resolve, 2000))]);
    for (const uid of this.series.order.slice(1)) {
      this.series.load(uid).catch((err) => this.fail('Could not load a series.', err));
    }
    this.series.loadThumbnails();
    this.priors.load();
  }

  /**
   * Show a display set in a viewport.
   * @param {Viewport} viewport
   * @param {string} id
   */
  show(viewport, id) {
    const ds = this.series.displaySets.get(id);
    if (!ds) return;
    viewport.setDisplaySet(ds, this.prefetch.loaderFor(ds), 0);
    this.referenceChanged();
    this.series.markShown();
    this.prefetch.schedule();
  }

  /* ---------- painting and stats ---------- */

  /**
   * A viewport painted an image (the benchmark wraps this to follow painting).
   * @param {Viewport} viewport
   * @param {'full' | 'preview' | 'loading'} fidelity
   */
  painted(viewport, fidelity) {
    const s = this.stats;
    if (!this.firstImageShown) {
      this.firstImageShown = true;
      performance.mark('viewer:first-image');
      if (s) { s.firstImage = performance.now(); s.firstImageFidelity = fidelity; }
    }
    if (fidelity === 'full' && !this.firstFullShown) {
      this.firstFullShown = true;
      performance.mark('viewer:first-full');
      if (s) s.firstFull = performance.now();
      this.resolveFirstFull();
    }
  }

  /** The benchmark counters brought up to date, or null when the page keeps none. */
  updateStats() {
    return this.stats ? this.stats.refresh(this.client, this.cache, this.layout.visible()) : null;
  }

  /* ---------- the active viewport ---------- */

  /** @param {Viewport} vp the viewport keys and the toolbar act on */
  activate(vp) {
    const changed = this.active !== vp;
    this.active = vp;
    for (const v of this.viewports) v.root.classList.toggle('vw-active', v === vp);
    if (changed) this.referenceChanged();
  }

  /** The active viewport's slice moved: redraw the reference lines it casts on the others. */
  referenceChanged() {
    for (const vp of this.layout.visible()) if (vp !== this.active && vp.ds) vp.render();
  }
}
