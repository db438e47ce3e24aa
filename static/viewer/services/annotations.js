// @ts-check
/**
 * The measurements kept, per image (SOP Instance UID and frame), and their
 * list in the side panel: add, remove the last one of the active image, clear.
 */

import { el } from '../dom.js';

/** @typedef {import('../viewport/draw.js').Annotation} Annotation */
/** @typedef {{sop: string, frame: number}} ImageKey */

const NAMES = Object.freeze({ length: 'Length', angle: 'Angle', roi: 'ROI' });

/**
 * The key measurements of an image are kept under.
 * @param {ImageKey | null} img
 * @returns {string}
 */
export function annotationKey(img) { return img ? `${img.sop}:${img.frame}` : ''; }

export class AnnotationService {
  /**
   * @param {import('../app.js').ViewerApp} app
   * @param {HTMLElement} list the side panel's measurement list
   */
  constructor(app, list) {
    this.app = app;
    this.list = list;
    /** @type {Map<string, Annotation[]>} */
    this.byImage = new Map();
  }

  /**
   * The measurements on an image.
   * @param {ImageKey | null} img
   * @returns {Annotation[]}
   */
  on(img) { return this.byImage.get(annotationKey(img)) || []; }

  /**
   * @param {ImageKey} img
   * @param {Annotation} a
   */
  add(img, a) {
    const key = annotationKey(img);
    let kept = this.byImage.get(key);
    if (!kept) { kept = []; this.byImage.set(key, kept); }
    kept.push(a);
    const li = el('li', 'vw-measure', this.list);
    li.dataset.type = a.type;
    el('span', 'vw-measure-name', li, NAMES[a.type]);
    el('span', 'vw-measure-value', li, a.text);
    a.item = li;
    a.key = key;
  }

  /** Remove the last measurement on the active viewport's image. */
  removeLast() {
    const vp = this.app.active;
    if (!vp.ds) return;
    const a = this.on(vp.image).pop();
    if (a && a.item) a.item.remove();
    vp.render();
  }

  clear() {
    this.byImage.clear();
    this.list.replaceChildren();
    this.app.layout.visible().forEach((vp) => vp.ds && vp.render());
  }
}
