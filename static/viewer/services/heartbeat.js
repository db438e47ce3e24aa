// @ts-check
/**
 * The claim's heartbeat: while the study is open and its tab visible, the
 * page tells the worklist every few seconds that its reader is still here
 * (POST to the #viewer's data-heartbeat, CSRF token from data-csrf), which
 * keeps the reader's claim on the study from expiring (portal/worklist/reading.py).
 * A hidden tab sends nothing and beats at once when shown again if a beat is
 * due; a closed one sends nothing ever, so an abandoned claim still expires.
 * Nor does a visible page whose reader has gone: once nobody has touched the
 * page (pointer, wheel, key) for the claim's idle limit, beats stop being sent
 * until someone does, so a viewer left open on a desk does not hold a STAT
 * study for ever.
 * A refusal (signed out, not a reader, study not visible) stops the beats;
 * a network error does not. The clock and the page's visibility are passed
 * in, so the unit tests run it on a fake clock.
 */

/**
 * @typedef {object} Clock
 * @property {() => number} now milliseconds
 * @property {(fn: () => void, ms: number) => unknown} setTimeout
 * @property {(id: unknown) => void} clearTimeout
 */

/** Answers after which the page stops beating: signed out (a redirect to the sign-in), refused, not found. */
const FINAL = new Set([0, 400, 401, 403, 404, 405]);

export class Heartbeat {
  /**
   * @param {object} options
   * @param {number} options.everyMs the time between two beats
   * @param {() => Promise<number>} options.send posts one beat, resolves to the HTTP status (0: redirected)
   * @param {() => boolean} options.hidden is the page hidden now?
   * @param {number} [options.idleMs] the claim's idle limit: no beat once the reader did nothing for this long
   * @param {Clock} [options.clock]
   */
  constructor({ everyMs, send, hidden, idleMs, clock }) {
    this.everyMs = Math.max(1000, everyMs);
    this.send = send;
    this.hidden = hidden;
    /** @type {Clock} */
    this.clock = clock || {
      now: () => Date.now(),
      setTimeout: (fn, ms) => setTimeout(fn, ms),
      clearTimeout: (id) => clearTimeout(/** @type {number} */ (id)),
    };
    this.last = this.clock.now();
    this.idleMs = idleMs && idleMs > 0 ? idleMs : Infinity;
    this.lastActivity = this.clock.now();
    /** @type {unknown} */
    this.timer = null;
    this.stopped = false;
    this.beats = 0;
  }

  /** Start counting from now (the page was just opened: that was activity already). */
  start() {
    this.last = this.clock.now();
    this.lastActivity = this.last;
    if (!this.hidden()) this.schedule(this.everyMs);
  }

  /** The tab was hidden or shown: stop waiting while hidden; once shown, beat now if one is due. */
  visibilityChanged() {
    this.cancel();
    if (this.stopped || this.hidden()) return;
    const waited = this.clock.now() - this.last;
    if (waited >= this.everyMs) this.beat();
    else this.schedule(this.everyMs - waited);
  }

  /** The reader touched the page (pointer, wheel, key): beats go on. */
  activity() {
    this.lastActivity = this.clock.now();
  }

  /** Send one beat and wait for the next (unless the answer says to stop); nothing while the reader is away. */
  async beat() {
    this.timer = null;
    if (this.stopped || this.hidden()) return;
    if (this.clock.now() - this.lastActivity >= this.idleMs) { this.schedule(this.everyMs); return; }
    this.last = this.clock.now();
    this.beats += 1;
    let status = -1;
    try { status = await this.send(); } catch { /* the network: try again at the next beat */ }
    if (FINAL.has(status)) { this.stop(); return; }
    if (!this.hidden() && this.timer === null) this.schedule(this.everyMs);
  }

  stop() {
    this.stopped = true;
    this.cancel();
  }

  /** @param {number} ms */
  schedule(ms) {
    this.cancel();
    this.timer = this.clock.setTimeout(() => { this.beat(); }, ms);
  }

  cancel() {
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = null;
  }
}

/**
 * Beat for the page's #viewer when it names a heartbeat URL (readers only); null otherwise.
 * @param {HTMLElement} root
 * @returns {Heartbeat | null}
 */
export function startHeartbeat(root) {
  const url = root.dataset.heartbeat;
  const csrf = root.dataset.csrf || '';
  const seconds = Number(root.dataset.heartbeatEvery);
  const idle = Number(root.dataset.heartbeatIdle);
  if (!url || !(seconds > 0)) return null;
  const heart = new Heartbeat({
    everyMs: seconds * 1000,
    idleMs: idle > 0 ? idle * 1000 : undefined,
    hidden: () => document.visibilityState === 'hidden',
    send: async () => {
      const response = await fetch(url, {
        method: 'POST', credentials: 'same-origin', redirect: 'manual', headers: { 'X-CSRFToken': csrf, Accept: 'application/json' },
      });
      return response.type === 'opaqueredirect' ? 0 : response.status;
    },
  });
  document.addEventListener('visibilitychange', () => heart.visibilityChanged());
  for (const type of ['pointerdown', 'pointermove', 'wheel', 'keydown']) {
    document.addEventListener(type, () => heart.activity(), { passive: true, capture: true });
  }
  heart.start();
  return heart;
}
