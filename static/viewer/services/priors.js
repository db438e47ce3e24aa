// @ts-check
/**
 * Prior studies of the same patient ((0010,0020) Patient ID, found by QIDO-RS),
 * newest first, in the side panel. Opening one lists its series and hangs its
 * first display set beside the current study, with synchronized scrolling on.
 */

import { TAG, formatDate, isUID, str } from '../dicomjson.js';
import { hangingOrder, isImageSeries } from '../displaysets.js';
import { el } from '../dom.js';

export class PriorsService {
  /** @param {import('../app.js').ViewerApp} app */
  constructor(app) {
    this.app = app;
  }

  /** List the priors of the patient shown in the first viewport. */
  async load() {
    const app = this.app;
    const vp = app.viewports[0];
    const header = vp.ds ? vp.ds.header : null;
    const patientId = header ? str(header, TAG.PatientID) : '';
    const box = document.getElementById('priors');
    const list = box && box.querySelector('ol');
    if (!patientId || !box || !list) return;
    let studies;
    try {
      studies = await app.client.searchStudies({
        PatientID: patientId,
        includefield: ['StudyDescription', 'ModalitiesInStudy', 'NumberOfStudyRelatedInstances'],
        limit: 50,
      });
    } catch (err) { return; }
    const priors = studies.filter((s) => str(s, TAG.StudyInstanceUID) !== app.studyUID && isUID(str(s, TAG.StudyInstanceUID)));
    priors.sort((a, b) => str(b, TAG.StudyDate).localeCompare(str(a, TAG.StudyDate)));
    list.replaceChildren();
    box.hidden = !priors.length;
    for (const study of priors) {
      const uid = str(study, TAG.StudyInstanceUID);
      const li = el('li', 'vw-prior', list);
      const button = el('button', 'vw-prior-open', li);
      button.type = 'button';
      el('span', 'vw-prior-date', button, formatDate(str(study, TAG.StudyDate)));
      el('span', 'vw-prior-mod', button, str(study, TAG.ModalitiesInStudy));
      el('span', 'vw-prior-desc', button, str(study, TAG.StudyDescription));
      const seriesBox = el('ol', 'vw-series', li);
      button.addEventListener('click', () => this.open(uid, seriesBox, button));
    }
  }

  /**
   * List a prior's series and hang its first display set in the second viewport.
   * @param {string} study
   * @param {HTMLElement} list where its series go
   * @param {HTMLButtonElement} button the prior's button, opened once
   */
  async open(study, list, button) {
    const app = this.app;
    if (button.dataset.opened) return;
    button.dataset.opened = '1';
    try {
      const series = hangingOrder((await app.client.searchSeries(study, {
        includefield: ['SeriesDescription', 'SeriesNumber', 'Modality', 'NumberOfSeriesRelatedInstances'],
      })).filter(isImageSeries));
      const uids = [];
      for (const s of series) { if (app.series.add(study, s, list)) uids.push(str(s, TAG.SeriesInstanceUID)); }
      app.series.order.push(...uids);
      const sets = uids.length ? await app.series.load(uids[0]) : [];
      if (sets.length) {
        const beside = app.viewports[1];
        if (app.layout.size < 2) app.layout.set('1x2', false);
        app.activate(beside);
        app.show(beside, sets[0].id);
        if (!app.sync.on) app.sync.toggle();
        else app.sync.anchor(beside, 0);
      }
      for (const uid of uids.slice(1)) app.series.load(uid).catch(() => {});
    } catch (err) { app.fail('Could not open the prior study.', err); }
  }
}
