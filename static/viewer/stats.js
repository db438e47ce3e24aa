// @ts-check
/**
 * Benchmark counters, opt-in. Only a viewer page opened with `#bench` in its
 * URL (bench/viewer_bench.py and the browser tests open it so) counts: its
 * application is then `window.__viewer` and these counters
 * `window.__viewerStats`, refreshed when `__viewer.updateStats()` is called.
 * A normal page has neither global, no counters and no timer; it only sets the
 * standard `performance.mark('viewer:first-image' | 'viewer:first-full')`.
 */

/** The URL fragment parameter that asks for the counters: `#bench`. */
export const BENCH_FLAG = 'bench';

/**
 * Was the page opened for the benchmark (`#bench`, or `#bench&...`)?
 * @param {{hash: string}} loc the page's location
 * @returns {boolean}
 */
export function benchRequested(loc) {
  return new URLSearchParams(loc.hash.replace(/^#/, '')).has(BENCH_FLAG);
}

/**
 * What one visible viewport shows, for the benchmark.
 * @typedef {object} ViewportStats
 * @property {string | null} displaySet
 * @property {string | null} kind
 * @property {number} index
 * @property {number} total
 * @property {boolean} full shown at full fidelity
 * @property {number} loaded
 * @property {number} cine frames per second while playing, else 0
 * @property {number} cineShown
 * @property {number} cineSince
 * @property {import('./pixels.js').Window | null} window
 */

export class Stats {
  constructor() {
    /** @type {number | null} ms since navigation start */
    this.firstImage = null;
    /** @type {number | null} */
    this.firstFull = null;
    /** @type {string | null} 'preview' or 'full' */
    this.firstImageFidelity = null;
    this.wlChanges = 0;
    this.previewErrors = 0;
    /** @type {string[]} */
    this.errors = [];
    this.cineFps = 0;
    this.requests = 0;
    this.bytes = 0;
    this.cacheBytes = 0;
    this.peakCacheBytes = 0;
    this.budgetBytes = 0;
    this.evictions = 0;
    /** @type {ViewportStats[]} */
    this.viewports = [];
  }

  /**
   * Copy the figures that change all the time from where they are kept.
   * @param {{requests: number, bytes: number}} client
   * @param {import('./loader.js').FrameCache} cache
   * @param {import('./viewport/viewport.js').Viewport[]} visible
   * @returns {this}
   */
  refresh(client, cache, visible) {
    this.requests = client.requests;
    this.bytes = client.bytes;
    this.cacheBytes = cache.used;
    this.peakCacheBytes = cache.peak;
    this.budgetBytes = cache.budget;
    this.evictions = cache.evictions;
    this.viewports = visible.map((vp) => ({
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
    return this;
  }
}
