// @ts-check
/**
 * One viewport's cine clock: whether it plays, at what rate, and when the
 * next frame is due. The frame is only advanced once its pixels are there,
 * and the clock keeps its cadence across a late frame rather than drifting.
 */

export class Cine {
  constructor() {
    this.playing = false;
    this.fps = 0;
    this.last = 0; // when the last frame was due, ms
    this.shown = 0; // frames advanced since it started
    this.since = 0; // when it started, ms
  }

  /** @param {number} fps */
  start(fps) {
    this.playing = true;
    this.fps = fps;
    this.last = 0;
    this.shown = 0;
    this.since = performance.now();
  }

  stop() { this.playing = false; }

  /**
   * Is the next frame due at `now` (a requestAnimationFrame time)?
   * @param {number} now
   * @returns {boolean}
   */
  due(now) {
    if (!this.playing) return false;
    return !(this.last && now - this.last < 1000 / this.fps - 1);
  }

  /**
   * The next frame was shown at `now`.
   * @param {number} now
   */
  advanced(now) {
    const interval = 1000 / this.fps;
    this.last = this.last && now - this.last < 2 * interval ? this.last + interval : now;
    this.shown++;
  }
}
