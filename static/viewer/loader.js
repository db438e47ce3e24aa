// @ts-check
/**
 * Progressive frame loading: a shared pool of parallel connections, a decoded
 * pixel cache with a memory budget, and one loader per image stack that asks
 * for the frames nearest the slice being looked at first.
 *
 * - FetchPool: at most `slots` requests in flight (HTTP/1.1 browsers open six
 *   connections per origin); when a slot frees it takes the next task from the
 *   loaders of visible viewports first, then from prefetching loaders. While a
 *   viewport's current slice is in flight no other request starts, so on a slow
 *   link the slice being looked at does not share bandwidth with its neighbours.
 * - FrameCache: decoded frames within `budgetBytes`; to admit a frame it evicts
 *   frames farther from any viewport's current slice, or refuses it.
 * - StackLoader: per display set, the status of every frame, the current
 *   slice(s) of the viewports showing it, and AbortController-based
 *   cancellation of far-away requests when the user jumps.
 */

import { bytesPerFrame, decodeFrame } from './pixels.js';

const EMPTY = 0, LOADING = 1, LOADED = 2, FAILED = 3, WAITING = 4;
const PREFETCH_DISTANCE = 1e6;
const BATCH_BYTES = 1 << 20; // multi-frame instances: up to ~1 MB per request

/** @typedef {import('./pixels.js').Frame} Frame */
/** @typedef {import('./displaysets.js').Image} Image */
/** @typedef {{loader: StackLoader, index: number, frame: Frame, bytes: number}} CacheEntry */
/**
 * One request for one or more frames of one instance.
 * @typedef {{indices: number[], controller: AbortController, run: () => Promise<void>}} Task
 */
/** @typedef {(index: number, loader: StackLoader) => void} ChangeListener */

export class FrameCache {
  /** @param {number} budgetBytes */
  constructor(budgetBytes) {
    this.budget = budgetBytes;
    this.used = 0;
    this.reserved = 0;
    this.peak = 0;
    this.evictions = 0;
    /** @type {Map<string, CacheEntry>} */
    this.entries = new Map();
  }

  /** @param {StackLoader} loader @param {number} index */
  key(loader, index) { return loader.id + ':' + index; }

  /** @param {StackLoader} loader @param {number} index @returns {Frame | null} */
  get(loader, index) {
    const e = this.entries.get(this.key(loader, index));
    return e ? e.frame : null;
  }

  /**
   * Make room for `bytes` at `distance`; false if everything cached is nearer.
   * @param {number} bytes
   * @param {number} distance
   * @returns {boolean}
   */
  reserve(bytes, distance) {
    while (this.used + this.reserved + bytes > this.budget) {
      let worst = null;
      let worstDistance = -1;
      for (const e of this.entries.values()) {
        const d = e.loader.distance(e.index);
        if (d > worstDistance) { worstDistance = d; worst = e; }
      }
      if (!worst || worstDistance <= distance) return false;
      this.evict(worst);
    }
    this.reserved += bytes;
    return true;
  }

  /** @param {number} bytes */
  release(bytes) { this.reserved = Math.max(0, this.reserved - bytes); }

  /** @param {StackLoader} loader @param {number} index @param {Frame} frame @param {number} reservedBytes */
  put(loader, index, frame, reservedBytes) {
    const bytes = frame.pixels.byteLength;
    this.release(reservedBytes);
    this.entries.set(this.key(loader, index), { loader, index, frame, bytes });
    this.used += bytes;
    this.peak = Math.max(this.peak, this.used);
  }

  /** @param {CacheEntry} entry */
  evict(entry) {
    this.entries.delete(this.key(entry.loader, entry.index));
    this.used -= entry.bytes;
    this.evictions++;
    entry.loader.evicted(entry.index);
  }

  /** @param {StackLoader} loader */
  dropLoader(loader) {
    for (const e of [...this.entries.values()]) if (e.loader === loader) this.evict(e);
  }
}

export class FetchPool {
  /** @param {number} [slots] */
  constructor(slots = 6) {
    this.slots = slots;
    this.running = 0;
    /** @type {Set<StackLoader>} */
    this.loaders = new Set();
    this.scheduled = false;
  }

  /** @param {StackLoader} loader */
  add(loader) { this.loaders.add(loader); this.schedule(); }

  /** @param {StackLoader} loader */
  remove(loader) { this.loaders.delete(loader); }

  schedule() {
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => { this.scheduled = false; this.pump(); });
  }

  /** A viewport waits for its current slice: give that request the whole link. */
  focusPending() {
    for (const loader of this.loaders) if (loader.focusPending()) return true;
    return false;
  }

  pump() {
    while (this.running < this.slots) {
      if (this.running > 0 && this.focusPending()) return;
      const ordered = [...this.loaders].sort((a, b) => a.level() - b.level());
      /** @type {Task | null} */
      let task = null;
      for (const loader of ordered) {
        if (loader.level() === Infinity) break;
        task = loader.nextTask();
        if (task) break;
      }
      if (!task) return;
      this.running++;
      task.run().finally(() => { this.running--; this.schedule(); });
    }
  }
}

let nextId = 1;

export class StackLoader {
  /**
   * @param {{images: Image[]}} displaySet
   * @param {import('./dicomweb.js').DicomWebClient} client
   * @param {FetchPool} pool
   * @param {FrameCache} cache
   */
  constructor(displaySet, client, pool, cache) {
    this.id = 'L' + nextId++;
    this.ds = displaySet;
    this.client = client;
    this.pool = pool;
    this.cache = cache;
    this.status = new Uint8Array(displaySet.images.length);
    this.attempts = new Uint8Array(displaySet.images.length);
    /** @type {Map<object, number>} viewer (a viewport) -> the index it shows */
    this.focuses = new Map();
    this.prefetch = false;
    /** @type {Set<Task>} */
    this.inflight = new Set();
    /** @type {Set<ChangeListener>} */
    this.listeners = new Set();
    this.loaded = 0;
    this.failed = 0;
    /** @type {unknown} */
    this.lastError = null;
    pool.add(this);
  }

  get total() { return this.status.length; }

  /**
   * Call `fn` when a frame is loaded, fails or is evicted.
   * @param {ChangeListener} fn
   * @returns {() => void} stops calling it
   */
  onChange(fn) { this.listeners.add(fn); return () => { this.listeners.delete(fn); }; }

  /** @param {number} index */
  emit(index) { for (const fn of this.listeners) fn(index, this); }

  /** 0 while a viewport shows this stack, 1 while prefetching, else Infinity. */
  level() { return this.focuses.size ? 0 : this.prefetch ? 1 : Infinity; }

  /** @param {number} index @returns {number} */
  distance(index) {
    if (this.focuses.size) {
      let d = Infinity;
      for (const f of this.focuses.values()) d = Math.min(d, Math.abs(index - f));
      return d;
    }
    return this.prefetch ? PREFETCH_DISTANCE + index : Infinity;
  }

  /** Is the slice a viewport shows still on its way? */
  focusPending() {
    for (const f of this.focuses.values()) if (this.status[f] === LOADING) return true;
    return false;
  }

  /** @param {number} index @returns {Frame | null} */
  frame(index) { return this.status[index] === LOADED ? this.cache.get(this, index) : null; }

  /** @param {number} index */
  isLoaded(index) { return this.status[index] === LOADED; }

  /** @param {object} owner @param {number} index */
  setFocus(owner, index) {
    const before = this.focuses.get(owner);
    this.focuses.set(owner, index);
    const window = Math.max(12, this.pool.slots * 2);
    if (before === undefined || Math.abs(index - before) > window) {
      for (const task of [...this.inflight]) {
        const near = task.indices.some((i) => this.distance(i) <= window);
        if (!near) task.controller.abort();
      }
    }
    this.pool.pump(); // now, not after the repaint this focus change is about to cause
  }

  /** @param {object} owner */
  clearFocus(owner) {
    this.focuses.delete(owner);
    if (!this.focuses.size && !this.prefetch) for (const task of [...this.inflight]) task.controller.abort();
    this.pool.schedule();
  }

  /** @param {boolean} on */
  setPrefetch(on) { this.prefetch = on; this.pool.schedule(); }

  /** @param {number} index */
  evicted(index) {
    if (this.status[index] === LOADED) { this.status[index] = EMPTY; this.loaded--; this.emit(index); }
  }

  /**
   * The nearest frame still to fetch, batched with its neighbours for multi-frame instances.
   * @returns {Task | null}
   */
  nextTask() {
    const n = this.total;
    if (!n) return null;
    let center = 0;
    for (const f of this.focuses.values()) { center = f; break; }
    let pick = -1;
    let best = Infinity;
    if (this.focuses.size <= 1) {
      for (let k = 0; k < n; k++) {
        const a = center + k, b = center - k - 1;
        if (a < n && this.status[a] === EMPTY) { pick = a; break; }
        if (b >= 0 && this.status[b] === EMPTY) { pick = b; break; }
        if (a >= n && b < 0) break;
      }
    } else {
      for (let i = 0; i < n; i++) {
        if (this.status[i] !== EMPTY) continue;
        const d = this.distance(i);
        if (d < best) { best = d; pick = i; }
      }
    }
    if (pick < 0) return null;
    const img = this.ds.images[pick];
    const size = bytesPerFrame(img.desc);
    const indices = [pick];
    if (img.desc.numberOfFrames > 1) {
      let bytes = size;
      for (let j = pick + 1; j < n && bytes + size <= BATCH_BYTES; j++) {
        const o = this.ds.images[j];
        if (o.sop !== img.sop || this.status[j] !== EMPTY) break;
        indices.push(j);
        bytes += size;
      }
    }
    const reserveBytes = size * indices.length;
    if (!this.cache.reserve(reserveBytes, this.distance(pick))) return null;
    for (const i of indices) this.status[i] = LOADING;
    const controller = new AbortController();
    /** @type {Task} */
    const task = { indices, controller, run: () => this.run(task, img, reserveBytes) };
    this.inflight.add(task);
    return task;
  }

  /** @param {Task} task @param {Image} img @param {number} reservedBytes */
  async run(task, img, reservedBytes) {
    const frames = task.indices.map((i) => this.ds.images[i].frame);
    let remaining = reservedBytes;
    try {
      const bodies = await this.client.frames(img.study, img.series, img.sop, frames, task.controller.signal);
      bodies.forEach((body, k) => {
        const index = task.indices[k];
        const d = this.ds.images[index].desc;
        const frame = decodeFrame(body, d);
        const share = bytesPerFrame(d);
        remaining -= share;
        if (this.status[index] !== LOADING) { this.cache.release(share); return; }
        this.cache.put(this, index, frame, share);
        this.status[index] = LOADED;
        this.loaded++;
        this.emit(index);
      });
    } catch (caught) {
      const err = /** @type {{name?: string, status?: number}} */ (caught);
      const aborted = err && err.name === 'AbortError';
      // Network errors, 429 and 5xx are retried (three attempts, backing off); 4xx are final.
      const transient = !aborted && (err.status === undefined || err.status === 429 || err.status >= 500);
      let retry = false;
      for (const i of task.indices) {
        if (this.status[i] !== LOADING) continue;
        if (aborted) { this.status[i] = EMPTY; continue; }
        this.attempts[i]++;
        if (transient && this.attempts[i] < 3) { this.status[i] = WAITING; retry = true; continue; }
        this.status[i] = FAILED;
        this.failed++;
        this.lastError = err;
        this.emit(i);
      }
      if (retry) {
        setTimeout(() => {
          for (const i of task.indices) if (this.status[i] === WAITING) this.status[i] = EMPTY;
          this.pool.schedule();
        }, 250 * Math.max(...task.indices.map((i) => this.attempts[i])));
      }
      if (!aborted) console.warn('frame request failed', err);
    } finally {
      this.cache.release(Math.max(0, remaining));
      this.inflight.delete(task);
    }
  }

  dispose() {
    for (const task of [...this.inflight]) task.controller.abort();
    this.pool.remove(this);
    this.cache.dropLoader(this);
    this.listeners.clear();
  }
}
