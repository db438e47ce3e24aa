// @ts-check
/**
 * A small DICOMweb client (PS3.18): QIDO-RS searches, WADO-RS metadata and
 * frames, rendered and thumbnail resources. Same-origin fetches carry the
 * session cookie; nothing else is ever contacted.
 */

import { parseMultipart, mediaParams } from './multipart.js';

export const EXPLICIT_VR_LITTLE_ENDIAN = '1.2.840.10008.1.2.1';
export const FRAMES_ACCEPT =
  `multipart/related; type="application/octet-stream"; transfer-syntax=${EXPLICIT_VR_LITTLE_ENDIAN}`;
const UNCOMPRESSED = new Set(['1.2.840.10008.1.2', EXPLICIT_VR_LITTLE_ENDIAN]);
const JSON_ACCEPT = 'application/dicom+json';
const IMAGE_ACCEPT = 'image/jpeg, image/png;q=0.9';

/** Query parameters: a list becomes the parameter repeated; empty values are left out. @typedef {Record<string, string | number | boolean | string[] | null | undefined>} Query */

export class DicomWebError extends Error {
  /**
   * @param {number} status
   * @param {string} url
   * @param {string} [detail]
   */
  constructor(status, url, detail) {
    super(`DICOMweb ${status}${detail ? ': ' + detail : ''}`);
    this.status = status;
    this.url = url;
  }
}

/**
 * The error to throw for a refused request, with the archive's `detail` if it gave one.
 * @param {Response} response
 * @returns {Promise<DicomWebError>}
 */
async function failure(response) {
  let detail = '';
  try {
    const body = await response.json();
    detail = body && body.detail ? String(body.detail) : '';
  } catch (_) { /* not JSON */ }
  return new DicomWebError(response.status, response.url, detail);
}

/**
 * @param {Query | null | undefined} params
 * @returns {string} "" or "?a=1&b=2"
 */
function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v === undefined || v === null || v === '') continue;
    if (Array.isArray(v)) v.forEach((x) => q.append(k, x));
    else q.append(k, String(v));
  }
  const s = q.toString();
  return s ? '?' + s : '';
}

const seg = encodeURIComponent;
const RETRIES = 3;
const RETRY_MS = 150;
const PRIMED_MS = 30000;

/**
 * @param {number} ms
 * @param {AbortSignal} [signal]
 * @returns {Promise<void>}
 */
function pause(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    if (signal) signal.addEventListener('abort', () => { clearTimeout(timer); reject(new DOMException('Aborted', 'AbortError')); }, { once: true });
  });
}

export class DicomWebClient {
  /** @param {string} root the DICOMweb root path, e.g. "/dicom-web" */
  constructor(root) {
    this.root = root.replace(/\/$/, '');
    this.requests = 0;
    this.bytes = 0;
    /** @type {Map<string, Promise<Response>>} absolute URL -> response, taken once */
    this.primed = new Map();
  }

  /**
   * Start now the requests the page declared as `<link rel="preload" as="fetch">`
   * (the series search, the first series' metadata, its first frame), so they
   * run while the rest of the viewer starts; the first caller of that URL takes
   * the response. The browser answers them from its preload.
   * @param {string[]} urls
   */
  prime(urls) {
    for (const raw of urls) {
      const url = new URL(raw, location.href).href;
      if (this.primed.has(url)) continue;
      const path = new URL(url).pathname;
      const accept = /\/frames\/[0-9,]+$/.test(path) ? FRAMES_ACCEPT : /\/rendered$/.test(path) ? IMAGE_ACCEPT : JSON_ACCEPT;
      // The body is read as soon as it arrives, so whoever takes it does not wait for it.
      const pending = fetch(url, { headers: { Accept: accept }, credentials: 'same-origin' }).then(async (r) => {
        const body = r.status === 204 ? null : await r.arrayBuffer();
        return new Response(body, { status: r.status, statusText: r.statusText, headers: r.headers });
      });
      pending.catch(() => {}); // a failure is reported to whoever takes it
      this.primed.set(url, pending);
      // A hint the viewer did not follow (another series hung first) is not kept.
      setTimeout(() => { if (this.primed.get(url) === pending) this.primed.delete(url); }, PRIMED_MS);
    }
  }

  /**
   * A fetch, counted, answered by a primed request for the same URL if there is one.
   * @param {string} url
   * @param {RequestInit} init
   * @returns {Promise<Response>}
   */
  request(url, init) {
    this.requests++;
    const key = new URL(url, location.href).href;
    const pending = this.primed.get(key);
    if (pending) {
      this.primed.delete(key);
      return pending;
    }
    return fetch(url, init);
  }

  /**
   * A DICOM JSON search or metadata request; network errors, 429 and 5xx are tried three times.
   * @param {string} path
   * @param {Query | null} [params]
   * @param {AbortSignal} [signal]
   * @returns {Promise<import('./dicomjson.js').DicomJson[]>}
   */
  async json(path, params, signal) {
    const url = this.root + path + query(params);
    for (let attempt = 1; ; attempt++) {
      let r;
      try {
        r = await this.request(url, { headers: { Accept: JSON_ACCEPT }, credentials: 'same-origin', signal });
      } catch (err) {
        if (/** @type {Error} */ (err).name === 'AbortError' || attempt >= RETRIES) throw err;
        await pause(RETRY_MS * attempt, signal);
        continue;
      }
      if (r.status === 204) return [];
      if (!r.ok) {
        if ((r.status === 429 || r.status >= 500) && attempt < RETRIES) {
          await pause(RETRY_MS * attempt, signal);
          continue;
        }
        throw await failure(r);
      }
      const body = await r.json();
      return Array.isArray(body) ? body : [];
    }
  }

  /** @param {Query} params @param {AbortSignal} [signal] */
  searchStudies(params, signal) { return this.json('/studies', params, signal); }

  /** @param {string} study @param {Query} params @param {AbortSignal} [signal] */
  searchSeries(study, params, signal) { return this.json(`/studies/${seg(study)}/series`, params, signal); }

  /** @param {string} study @param {string} series @param {AbortSignal} [signal] */
  seriesMetadata(study, series, signal) {
    return this.json(`/studies/${seg(study)}/series/${seg(series)}/metadata`, null, signal);
  }

  /** @param {string} study @param {string} series @param {string} sop @returns {string} */
  instanceUrl(study, series, sop) {
    return `${this.root}/studies/${seg(study)}/series/${seg(series)}/instances/${seg(sop)}`;
  }

  /**
   * Uncompressed frames of one instance, in request order.
   * @param {string} study
   * @param {string} series
   * @param {string} sop
   * @param {number[]} frameNumbers 1-based
   * @param {AbortSignal} [signal]
   * @returns {Promise<Uint8Array[]>}
   */
  async frames(study, series, sop, frameNumbers, signal) {
    const url = `${this.instanceUrl(study, series, sop)}/frames/${frameNumbers.join(',')}`;
    const r = await this.request(url, { headers: { Accept: FRAMES_ACCEPT }, credentials: 'same-origin', signal });
    if (!r.ok) throw await failure(r);
    const contentType = r.headers.get('Content-Type') || '';
    const buffer = await r.arrayBuffer();
    this.bytes += buffer.byteLength;
    const type = mediaParams(contentType);
    let parts;
    if (type.$type === 'multipart/related') {
      parts = parseMultipart(buffer, contentType);
    } else if (type.$type === 'application/octet-stream') {
      parts = [{ headers: { 'content-type': contentType }, body: new Uint8Array(buffer) }];
    } else {
      throw new DicomWebError(r.status, url, `unexpected frames media type ${type.$type}`);
    }
    for (const p of parts) {
      const ts = mediaParams(p.headers['content-type'] || type.type || '')['transfer-syntax'];
      if (ts && !UNCOMPRESSED.has(ts)) throw new DicomWebError(r.status, url, `frames in transfer syntax ${ts}`);
    }
    if (parts.length !== frameNumbers.length) {
      throw new DicomWebError(r.status, url, `asked for ${frameNumbers.length} frames, got ${parts.length}`);
    }
    return parts.map((p) => p.body);
  }

  /**
   * A rendered JPEG of one instance (or frame) fitted to `width`x`height`, as an ImageBitmap.
   * @param {string} study
   * @param {string} series
   * @param {string} sop
   * @param {number} frame 1-based, or 0 for the instance
   * @param {number} width
   * @param {number} height
   * @param {AbortSignal} [signal]
   * @returns {Promise<ImageBitmap>}
   */
  async rendered(study, series, sop, frame, width, height, signal) {
    const base = this.instanceUrl(study, series, sop) + (frame ? `/frames/${frame}` : '');
    return this.image(`${base}/rendered?viewport=${width},${height}`, signal);
  }

  /** @param {string} study @param {string} series @param {number} [size] @returns {string} */
  seriesThumbnailUrl(study, series, size = 128) {
    return `${this.root}/studies/${seg(study)}/series/${seg(series)}/thumbnail?viewport=${size},${size}`;
  }

  /** @param {string} study @param {string} series @param {string} sop @param {number} [size] @returns {string} */
  instanceThumbnailUrl(study, series, sop, size = 128) {
    return `${this.instanceUrl(study, series, sop)}/thumbnail?viewport=${size},${size}`;
  }

  /**
   * What the archive answers for `url` without keeping the body: its status and, for a
   * 503 during a restore, the Retry-After seconds and the body's estimate of the restore.
   * @param {string} url
   * @param {AbortSignal} [signal]
   * @returns {Promise<{status: number, retryAfter: number, estimateSeconds: number}>}
   */
  async probe(url, signal) {
    const r = await this.request(url, { headers: { Accept: IMAGE_ACCEPT }, credentials: 'same-origin', signal });
    const retryAfter = Number(r.headers.get('Retry-After')) || 0;
    let estimateSeconds = 0;
    if (r.status === 503) {
      try {
        const body = await r.json();
        estimateSeconds = Number(body && body.restoring && body.restoring.estimate_seconds) || 0;
      } catch (_) { /* not JSON */ }
    } else {
      await r.arrayBuffer();
    }
    return { status: r.status, retryAfter, estimateSeconds };
  }

  /** @param {string} url @param {AbortSignal} [signal] @returns {Promise<Blob>} */
  async blob(url, signal) {
    const r = await this.request(url, { headers: { Accept: IMAGE_ACCEPT }, credentials: 'same-origin', signal });
    if (!r.ok) throw await failure(r);
    const b = await r.blob();
    this.bytes += b.size;
    return b;
  }

  /** @param {string} url @param {AbortSignal} [signal] @returns {Promise<ImageBitmap>} */
  async image(url, signal) {
    return createImageBitmap(await this.blob(url, signal));
  }
}
