// @ts-check
/**
 * Synchronized scrolling: when on, scrolling one viewport moves the others by
 * the same distance along the slice normal from where each was when it was
 * turned on (by slice index for images without a position), to their nearest
 * slice.
 */

/** @typedef {import('../viewport/viewport.js').Viewport} Viewport */

/**
 * Where slice `index` of a viewport's display set lies: its position along the
 * normal in mm, else the index itself.
 * @param {Viewport} vp
 * @param {number} index
 * @returns {number}
 */
export function positionOf(vp, index) {
  const img = vp.ds ? vp.ds.images[index] : null;
  return img && img.position !== null && Number.isFinite(img.position) ? img.position : index;
}

/**
 * The index of the image nearest `target`.
 * @param {number[]} positions
 * @param {number} target
 * @param {number} fallback returned when there is no image
 * @returns {number}
 */
export function nearest(positions, target, fallback) {
  let best = fallback, bestD = Infinity;
  positions.forEach((p, i) => {
    const d = Math.abs(p - target);
    if (d < bestD) { bestD = d; best = i; }
  });
  return best;
}

export class SyncService {
  /** @param {import('../app.js').ViewerApp} app */
  constructor(app) {
    this.app = app;
    this.on = false;
    /** @type {Map<Viewport, number>} where each synchronized viewport was when sync was turned on */
    this.anchors = new Map();
  }

  toggle() {
    this.on = !this.on;
    const button = document.querySelector('[data-action="sync"]');
    if (button) button.setAttribute('aria-pressed', String(this.on));
    this.anchors = new Map();
    if (this.on) {
      for (const vp of this.app.layout.visible()) if (vp.ds) this.anchors.set(vp, positionOf(vp, vp.index));
    }
  }

  /**
   * Take a viewport into the synchronized set from its slice `index`.
   * @param {Viewport} vp
   * @param {number} index
   */
  anchor(vp, index) { this.anchors.set(vp, positionOf(vp, index)); }

  /** @param {Viewport} source the viewport the user scrolled */
  synchronize(source) {
    const start = this.anchors.get(source);
    if (!this.on || !source.ds || start === undefined) return;
    const delta = positionOf(source, source.index) - start;
    for (const vp of this.app.layout.visible()) {
      const anchor = this.anchors.get(vp);
      if (vp === source || !vp.ds || anchor === undefined) continue;
      const positions = vp.ds.images.map((_, i) => positionOf(vp, i));
      vp.setIndex(nearest(positions, anchor + delta, vp.index), true);
    }
  }
}
