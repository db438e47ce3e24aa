// @ts-check
/**
 * The viewport grid: 1x1, 1x2 or 2x2, which viewports are visible, filling
 * empty ones with the next display sets in hanging order, and maximizing one
 * viewport of the grid (double-click) and back.
 */

/** @typedef {import('../viewport/viewport.js').Viewport} Viewport */

/** @type {Readonly<Record<string, number>>} layout name -> viewports shown */
export const LAYOUTS = Object.freeze({ '1x1': 1, '1x2': 2, '2x2': 4 });

export class LayoutService {
  /**
   * @param {import('../app.js').ViewerApp} app
   * @param {HTMLElement} grid the viewports' container
   */
  constructor(app, grid) {
    this.app = app;
    this.grid = grid;
    this.name = '1x1';
  }

  /** How many viewports the layout shows. */
  get size() { return LAYOUTS[this.name]; }

  /** @returns {Viewport[]} */
  visible() { return this.app.viewports.slice(0, this.size); }

  /**
   * @param {string} name one of LAYOUTS
   * @param {boolean} [hang] fill the viewports it shows that are empty
   */
  set(name, hang = true) {
    if (!Object.hasOwn(LAYOUTS, name)) return;
    const app = this.app;
    this.name = name;
    this.grid.dataset.layout = name;
    this.grid.classList.remove('vw-maximized');
    const n = LAYOUTS[name];
    app.viewports.forEach((vp, i) => {
      vp.root.hidden = i >= n;
      if (i >= n && vp.ds) { vp.loader?.clearFocus(vp); vp.stopCine(); }
    });
    if (!this.visible().includes(app.active)) app.activate(app.viewports[0]);
    const select = document.getElementById('vw-layout');
    if (select instanceof HTMLSelectElement) select.value = name;
    for (const vp of this.visible()) if (vp.ds) vp.loader?.setFocus(vp, vp.index);
    if (hang) this.hangEmpty();
    requestAnimationFrame(() => app.viewports.forEach((vp) => vp.resize()));
    app.series.markShown();
  }

  /** Fill empty visible viewports with the next display sets in hanging order. */
  async hangEmpty() {
    const app = this.app;
    for (const uid of app.series.order) {
      const empty = this.visible().filter((vp) => !vp.ds);
      if (!empty.length) return;
      let sets;
      try { sets = await app.series.load(uid); } catch (err) { continue; }
      const used = new Set(this.visible().flatMap((vp) => (vp.ds ? [vp.ds.id] : [])));
      for (const ds of sets) {
        const vp = this.visible().find((v) => !v.ds);
        if (!vp) return;
        if (!used.has(ds.id)) app.show(vp, ds.id);
      }
    }
  }

  /** @param {Viewport} vp the viewport to show alone, or back in the grid */
  toggleMaximize(vp) {
    if (this.size === 1) return;
    const on = !this.grid.classList.contains('vw-maximized');
    this.grid.classList.toggle('vw-maximized', on);
    this.visible().forEach((v) => { v.root.classList.toggle('vw-max', on && v === vp); });
    requestAnimationFrame(() => this.app.viewports.forEach((v) => v.resize()));
  }
}
