// @ts-check
/**
 * The restoring state. A study whose images sit on a tier that needs a restore
 * (Instance Availability NEARLINE or OFFLINE in its QIDO series) cannot be read
 * yet: asking for one of its images answers 503 with Retry-After, and starts the
 * restore of the whole study. Instead of an error, the reader sees "Restoring from
 * archive storage, about N min" (N from the archive's estimate); the service waits
 * as long as Retry-After says (at least a second, at most five minutes, so it
 * polls politely), searches the series again, and hands them back once every one
 * is ONLINE, so the study opens by itself. A series OFFLINE (media that need an
 * administrator) will not come back by waiting: the service stops at once with
 * {@link StudyOffline} (the archive starts no restore for it).
 */

import { TAG, str } from '../dicomjson.js';

const MAX_WAIT_S = 300;

/** @param {import('../dicomjson.js').DicomJson} series */
function online(series) {
  const availability = str(series, TAG.InstanceAvailability);
  return !availability || availability === 'ONLINE';
}

/** The study holds OFFLINE series: no restore starts by itself, an administrator must bring the media back. */
export class StudyOffline extends Error {}

/** @param {number} ms */
function sleep(ms) { return new Promise((resolve) => setTimeout(resolve, ms)); }

export class RestoreService {
  /** @param {import('../app.js').ViewerApp} app */
  constructor(app) {
    this.app = app;
    /** How many times the archive was asked while the study was restoring (the benchmark page shows it). */
    this.polls = 0;
  }

  /**
   * The series once every one of them is online (at once when they already are).
   * @param {import('../dicomjson.js').DicomJson[]} series
   * @param {() => Promise<import('../dicomjson.js').DicomJson[]>} search the same series search again
   * @returns {Promise<import('../dicomjson.js').DicomJson[]>}
   */
  async untilOnline(series, search) {
    const app = this.app;
    while (series.some((s) => !online(s))) {
      if (series.some((s) => str(s, TAG.InstanceAvailability) === 'OFFLINE')) {
        app.root.classList.remove('vw-restoring');
        throw new StudyOffline('the study is offline');
      }
      const waiting = /** @type {import('../dicomjson.js').DicomJson} */ (series.find((s) => !online(s)));
      const url = app.client.seriesThumbnailUrl(app.studyUID, str(waiting, TAG.SeriesInstanceUID));
      const answer = await app.client.probe(url);
      this.polls++;
      if (answer.status === 503) {
        const minutes = Math.max(1, Math.round(answer.estimateSeconds / 60));
        app.root.classList.add('vw-restoring');
        app.say(`Restoring from archive storage, about ${minutes} min`);
        await sleep(Math.min(Math.max(answer.retryAfter, 1), MAX_WAIT_S) * 1000);
      } else if (answer.status >= 400 && answer.status !== 404) {
        throw new Error(`the archive answered ${answer.status} while the study was restoring`);
      }
      series = await search();
    }
    app.root.classList.remove('vw-restoring');
    return series;
  }
}
