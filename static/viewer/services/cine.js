// @ts-check
/**
 * Cine for the whole viewer: one requestAnimationFrame loop that ticks every
 * visible viewport playing cine and stops when none does, the Cine button's
 * pressed state, and the frame rate typed in the toolbar.
 */

export class CineService {
  /** @param {import('../app.js').ViewerApp} app */
  constructor(app) {
    this.app = app;
    this.running = false;
    this.loop = this.loop.bind(this);
  }

  /** A viewport started or stopped playing. */
  changed() {
    const playing = this.app.viewports.some((vp) => vp.cine.playing);
    const button = document.querySelector('[data-action="cine"]');
    if (button) button.setAttribute('aria-pressed', String(playing));
    if (playing && !this.running) { this.running = true; requestAnimationFrame(this.loop); }
  }

  /** @param {number} now */
  loop(now) {
    let any = false;
    for (const vp of this.app.layout.visible()) {
      if (vp.cine.playing) { any = true; vp.tickCine(now); }
    }
    if (any) requestAnimationFrame(this.loop);
    else this.running = false;
  }

  /** The toolbar's frame rate, 1 to 120. */
  fps() {
    const input = document.getElementById('vw-fps');
    return Math.max(1, Math.min(120, Number(input instanceof HTMLInputElement ? input.value : 0) || 0));
  }
}
