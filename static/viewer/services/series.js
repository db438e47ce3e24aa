// @ts-check
/**
 * The series list: one entry per series (QIDO-RS result), its WADO-RS
 * metadata fetched once and turned into display sets, a card per display set
 * (thumbnail, frame count, load progress) that shows it in the active viewport
 * when clicked or in another when dragged there, and the thumbnails.
 */

import { TAG, isUID, num, str } from '../dicomjson.js';
import { displaySetsOf } from '../displaysets.js';
import { el } from '../dom.js';

/** @typedef {import('../dicomjson.js').DicomJson} DicomJson */
/** @typedef {import('../displaysets.js').DisplaySet} DisplaySet */
/**
 * One series in the list.
 * @typedef {object} SeriesEntry
 * @property {string} study
 * @property {DicomJson} info its QIDO-RS result
 * @property {HTMLLIElement} item
 * @property {DisplaySet[] | null} sets once its metadata is in
 * @property {Promise<DisplaySet[]> | null} promise
 */
/**
 * The card of one display set.
 * @typedef {{thumb: HTMLImageElement, progressText: HTMLElement, progressBar: HTMLElement}} Card
 */

export class SeriesService {
  /** @param {import('../app.js').ViewerApp} app */
  constructor(app) {
    this.app = app;
    /** @type {Map<string, DisplaySet>} id -> display set */
    this.displaySets = new Map();
    /** @type {Map<string, SeriesEntry>} series uid -> entry */
    this.entries = new Map();
    /** @type {string[]} series uids in hanging order, the current study's first, then opened priors' */
    this.order = [];
    /** @type {Map<string, Card>} display set id -> card */
    this.cards = new Map();
  }

  /**
   * Add a series to a list, unless its UID is malformed.
   * @param {string} study
   * @param {DicomJson} info
   * @param {HTMLElement} list
   * @returns {SeriesEntry | undefined}
   */
  add(study, info, list) {
    const uid = str(info, TAG.SeriesInstanceUID);
    if (!isUID(uid)) return undefined;
    const item = el('li', 'vw-series-item vw-series-pending', list);
    item.dataset.series = uid;
    /** @type {SeriesEntry} */
    const entry = { study, info, item, sets: null, promise: null };
    this.entries.set(uid, entry);
    const label = el('div', 'vw-series-label', item);
    el('span', 'vw-series-number', label, `${num(info, TAG.SeriesNumber, '')}`);
    el('span', 'vw-series-mod', label, str(info, TAG.Modality));
    el('span', 'vw-series-desc', label, str(info, TAG.SeriesDescription) || '(no description)');
    el('span', 'vw-series-count', label, `${num(info, TAG.NumberOfSeriesRelatedInstances, '?')} images`);
    el('div', 'vw-sets', item);
    return entry;
  }

  /**
   * The display sets of a listed series, its metadata fetched the first time.
   * @param {string} uid
   * @returns {Promise<DisplaySet[]>}
   */
  load(uid) {
    const entry = this.entries.get(uid);
    if (!entry) return Promise.reject(new Error(`series ${uid} is not listed`));
    if (!entry.promise) {
      entry.promise = this.app.client.seriesMetadata(entry.study, uid).then((metadata) => {
        const sets = displaySetsOf(entry.study, entry.info, metadata);
        entry.sets = sets;
        entry.item.classList.remove('vw-series-pending');
        const box = entry.item.querySelector('.vw-sets');
        for (const ds of sets) {
          this.displaySets.set(ds.id, ds);
          if (box) this.renderCard(ds, box);
        }
        return sets;
      });
    }
    return entry.promise;
  }

  /**
   * @param {DisplaySet} ds
   * @param {Element} box
   */
  renderCard(ds, box) {
    const card = el('button', 'vw-set', box);
    card.type = 'button';
    card.draggable = true;
    card.dataset.displayset = ds.id;
    card.title = 'Click to show in the active viewport, or drag into a viewport';
    const thumb = el('img', 'vw-thumb', card);
    thumb.alt = '';
    const text = el('span', 'vw-set-text', card);
    el('span', 'vw-set-kind', text, ds.kind === 'multiframe' ? `Clip · ${ds.images.length} frames` : `${ds.images.length} images`);
    const progressText = el('span', 'vw-set-progress', text, '');
    const meter = el('span', 'vw-meter', card);
    const progressBar = el('span', 'vw-meter-bar', meter);
    this.cards.set(ds.id, { thumb, progressText, progressBar });
    card.addEventListener('click', () => this.app.show(this.app.active, ds.id));
    card.addEventListener('dragstart', (e) => {
      if (!e.dataTransfer) return;
      e.dataTransfer.setData('application/x-displayset', ds.id);
      e.dataTransfer.effectAllowed = 'copy';
    });
    this.app.prefetch.updateProgress(ds);
  }

  /** Fetch the thumbnails, one at a time, in hanging order. */
  async loadThumbnails() {
    const client = this.app.client;
    for (const uid of this.order) {
      const entry = this.entries.get(uid);
      if (!entry) continue;
      try {
        const sets = await this.load(uid);
        for (const ds of sets) {
          const url = ds.kind === 'multiframe' && ds.thumbnailSop
            ? client.instanceThumbnailUrl(ds.study, ds.series, ds.thumbnailSop)
            : client.seriesThumbnailUrl(ds.study, ds.series);
          const blob = await client.blob(url);
          const card = this.cards.get(ds.id);
          if (card) card.thumb.src = URL.createObjectURL(blob);
        }
      } catch (err) {
        entry.item.classList.add('vw-thumb-missing');
      }
    }
  }

  /** Mark the cards of the display sets the visible viewports show. */
  markShown() {
    const shown = new Set(this.app.layout.visible().map((vp) => vp.ds && vp.ds.id));
    for (const card of this.app.root.querySelectorAll('.vw-set')) {
      if (card instanceof HTMLElement) card.classList.toggle('vw-set-shown', shown.has(card.dataset.displayset ?? null));
    }
  }
}
