// @ts-check
/**
 * One StackLoader per display set, and what loads when: the display sets the
 * visible viewports show first; once they are complete, the next display set
 * in hanging order is prefetched, one at a time. Each card's progress meter
 * follows its loader.
 */

import { StackLoader } from '../loader.js';

/** @typedef {import('../displaysets.js').DisplaySet} DisplaySet */

export class PrefetchService {
  /** @param {import('../app.js').ViewerApp} app */
  constructor(app) {
    this.app = app;
    /** @type {Map<string, StackLoader>} display set id -> loader */
    this.loaders = new Map();
    /** @type {Set<string>} display sets whose every frame was loaded at the last change */
    this.complete = new Set();
  }

  /**
   * The loader of a display set, made the first time.
   * @param {DisplaySet} ds
   * @returns {StackLoader}
   */
  loaderFor(ds) {
    let loader = this.loaders.get(ds.id);
    if (!loader) {
      loader = new StackLoader(ds, this.app.client, this.app.pool, this.app.cache);
      loader.onChange(() => this.updateProgress(ds));
      this.loaders.set(ds.id, loader);
    }
    return loader;
  }

  /** Prefetch the next display set after the shown ones once they are complete. */
  schedule() {
    const shown = new Set(this.app.layout.visible().flatMap((vp) => (vp.ds ? [vp.ds.id] : [])));
    const busy = [...shown].some((id) => { const l = this.loaders.get(id); return l && l.loaded < l.total; });
    for (const [id, loader] of this.loaders) if (!shown.has(id)) loader.setPrefetch(false);
    if (busy) return;
    const series = this.app.series;
    for (const uid of series.order) {
      const entry = series.entries.get(uid);
      for (const ds of (entry && entry.sets) || []) {
        if (shown.has(ds.id)) continue;
        const loader = this.loaderFor(ds);
        if (loader.loaded < loader.total) { loader.setPrefetch(true); return; }
      }
    }
  }

  /** @param {DisplaySet} ds a display set whose loading moved */
  updateProgress(ds) {
    const loader = this.loaders.get(ds.id);
    const loaded = loader ? loader.loaded : 0;
    const total = ds.images.length;
    const card = this.app.series.cards.get(ds.id);
    if (card) {
      card.progressText.textContent = `${loaded}/${total} loaded`;
      card.progressBar.style.width = `${(100 * loaded) / total}%`;
    }
    if (loader && loaded === total && !this.complete.has(ds.id)) { this.complete.add(ds.id); this.schedule(); }
    if (loader && loaded < total) this.complete.delete(ds.id);
  }
}
