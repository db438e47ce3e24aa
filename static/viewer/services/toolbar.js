// @ts-check
/**
 * The toolbar: the pointer tool buttons, the actions on the active viewport
 * (invert, rotate, flip, reset, cine) and on the viewer (sync, undo, clear),
 * the window preset menu, the layout menu and the cine frame rate.
 */

import { byId, el } from '../dom.js';
import { PRESETS } from '../presets.js';

/** @typedef {import('../viewport/viewport.js').Viewport} Viewport */

export class ToolbarService {
  /** @param {import('../app.js').ViewerApp} app */
  constructor(app) {
    this.app = app;
  }

  /** @param {string} tool a name in tools/pointer.js TOOLS */
  setTool(tool) {
    const app = this.app;
    app.tool = tool;
    for (const b of app.root.querySelectorAll('[data-tool]')) {
      if (b instanceof HTMLElement) b.setAttribute('aria-pressed', String(b.dataset.tool === tool));
    }
    app.viewports.forEach((vp) => vp.cancelPending());
  }

  /**
   * @param {string} name a toolbar `data-action`, or 'rotate-left'
   * @param {Viewport} [vp]
   */
  action(name, vp = this.app.active) {
    const app = this.app;
    switch (name) {
      case 'reset': vp.reset(); break;
      case 'invert': vp.toggleInvert(); break;
      case 'rotate': vp.rotate(90); break;
      case 'rotate-left': vp.rotate(-90); break;
      case 'flip-h': vp.flip('h'); break;
      case 'flip-v': vp.flip('v'); break;
      case 'cine': vp.toggleCine(app.cine.fps()); break;
      case 'sync': app.sync.toggle(); break;
      case 'undo': app.annotations.removeLast(); break;
      case 'clear': app.annotations.clear(); break;
      default: break;
    }
  }

  bind() {
    const app = this.app;
    for (const b of app.root.querySelectorAll('[data-tool]')) {
      if (b instanceof HTMLElement) b.addEventListener('click', () => this.setTool(b.dataset.tool || ''));
    }
    for (const b of app.root.querySelectorAll('[data-action]')) {
      if (b instanceof HTMLElement) b.addEventListener('click', () => this.action(b.dataset.action || ''));
    }
    const preset = byId('vw-preset', HTMLSelectElement);
    fillPresetMenu(preset);
    preset.addEventListener('change', () => { if (preset.value) app.active.applyPreset(preset.value); preset.value = ''; });
    const layout = byId('vw-layout', HTMLSelectElement);
    layout.addEventListener('change', () => app.layout.set(layout.value));
    byId('vw-fps', HTMLInputElement).addEventListener('change', () => {
      const vp = app.active;
      if (vp.cine.playing) vp.startCine(app.cine.fps());
    });
    this.setTool('wl');
  }
}

/**
 * The named windows of presets.js as menu entries, numbered by the key that
 * applies each, before the page's own "Default" and "Full range" entries.
 * @param {HTMLSelectElement} menu
 */
export function fillPresetMenu(menu) {
  const before = menu.querySelector('option[value="default"]');
  Object.keys(PRESETS).forEach((name, i) => {
    const option = el('option', '', null, `${i + 1} ${name[0].toUpperCase()}${name.slice(1)}`);
    option.value = name;
    menu.insertBefore(option, before);
  });
}

