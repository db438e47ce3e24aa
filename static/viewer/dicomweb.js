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

export class DicomWebError extends Error {
  constructor(status, url, detail) {
    super(`DICOMweb ${status}${detail ? ': ' + detail : ''}`);
    this.status = status;
    this.url = url;
  }
}

async function failure(response) {
  let detail = '';
  try {
    const body = await response.json();
    detail = body && body.detail ? String(body.detail) : '';
  } catch (_) { /* not JSON */ }
  return new DicomWebError(response.status, response.url, detail);
}

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

export class DicomWebClient {
  /** @param {string} root the DICOMweb root path, e.g. "/dicom-web" */
  constructor(root) {
    this.root = root.replace(/\/$/, '');
    this.requests = 0;
    this.bytes = 0;
  }

  async json(path, params, signal) {
    const url = this.root + path + query(params);
    this.requests++;
    const r = await fetch(url, { headers: { Accept: 'application/dicom+json' }, credentials: 'same-origin', signal });
    if (r.status === 204) return [];
    if (!r.ok) throw await failure(r);
    const body = await r.json();
    return Array.isArray(body) ? body : [];
  }

  searchStudies(params, signal) { return this.json('/studies', params, signal); }

  searchSeries(study, params, signal) { return this.json(`/studies/${seg(study)}/series`, params, signal); }

  seriesMetadata(study, series, signal) {
    return this.json(`/studies/${seg(study)}/series/${seg(series)}/metadata`, null, signal);
  }

  instanceUrl(study, series, sop) {
    return `${this.root}/studies/${seg(study)}/series/${seg(series)}/instances/${seg(sop)}`;
  }

  /**
   * Uncompressed frames of one instance, in request order.
   * @returns {Promise<Uint8Array[]>}
   */
  async frames(study, series, sop, frameNumbers, signal) {
    const url = `${this.instanceUrl(study, series, sop)}/frames/${frameNumbers.join(',')}`;
    this.requests++;
    const r = await fetch(url, { headers: { Accept: FRAMES_ACCEPT }, credentials: 'same-origin', signal });
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

  /** A rendered JPEG of one instance (or frame) fitted to `width`x`height`, as an ImageBitmap. */
  async rendered(study, series, sop, frame, width, height, signal) {
    const base = this.instanceUrl(study, series, sop) + (frame ? `/frames/${frame}` : '');
    return this.image(`${base}/rendered?viewport=${width},${height}`, signal);
  }

  seriesThumbnailUrl(study, series, size = 128) {
    return `${this.root}/studies/${seg(study)}/series/${seg(series)}/thumbnail?viewport=${size},${size}`;
  }

  instanceThumbnailUrl(study, series, sop, size = 128) {
    return `${this.instanceUrl(study, series, sop)}/thumbnail?viewport=${size},${size}`;
  }

  async blob(url, signal) {
    this.requests++;
    const r = await fetch(url, { headers: { Accept: 'image/jpeg, image/png;q=0.9' }, credentials: 'same-origin', signal });
    if (!r.ok) throw await failure(r);
    const b = await r.blob();
    this.bytes += b.size;
    return b;
  }

  async image(url, signal) {
    return createImageBitmap(await this.blob(url, signal));
  }
}
