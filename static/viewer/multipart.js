// @ts-check
/**
 * A multipart/related body parser (RFC 2046, PS3.18 §8.7.1) for WADO-RS
 * frame responses. Parts are returned as Uint8Array views into the response
 * buffer with their headers; no text decoding of the payloads.
 */

const CRLF_CRLF = [13, 10, 13, 10];

/** One body part: its headers (names lower-cased) and its bytes. @typedef {{headers: Record<string, string>, body: Uint8Array}} Part */

/**
 * The boundary parameter of a multipart Content-Type header, or null.
 * @param {string | null | undefined} contentType
 * @returns {string | null}
 */
export function boundaryOf(contentType) {
  const m = /(?:^|;)\s*boundary\s*=\s*(?:"([^"]+)"|([^;\s]+))/i.exec(contentType || '');
  return m ? m[1] || m[2] : null;
}

/**
 * Parameters of a media type, lower-cased names: `type`, `transfer-syntax`...;
 * the media type itself, lower-cased, as `$type`.
 * @param {string | null | undefined} contentType
 * @returns {Record<string, string> & {$type: string}}
 */
export function mediaParams(contentType) {
  const parts = String(contentType || '').split(';');
  const out = { $type: String(parts.shift()).trim().toLowerCase() };
  /** @type {Record<string, string>} */
  const params = out;
  for (const p of parts) {
    const i = p.indexOf('=');
    if (i < 0) continue;
    params[p.slice(0, i).trim().toLowerCase()] = p.slice(i + 1).trim().replace(/^"|"$/g, '');
  }
  return out;
}

/**
 * Where the byte sequence `seq` first occurs in `buf` at or after `from`, or -1.
 * @param {Uint8Array} buf
 * @param {ArrayLike<number>} seq
 * @param {number} from
 * @returns {number}
 */
function indexOfSeq(buf, seq, from) {
  const firstByte = seq[0];
  const n = seq.length;
  let i = buf.indexOf(firstByte, from);
  while (i !== -1 && i + n <= buf.length) {
    let j = 1;
    while (j < n && buf[i + j] === seq[j]) j++;
    if (j === n) return i;
    i = buf.indexOf(firstByte, i + 1);
  }
  return -1;
}

/**
 * A part's header lines, names lower-cased.
 * @param {Uint8Array} bytes
 * @returns {Record<string, string>}
 */
function parseHeaders(bytes) {
  const text = new TextDecoder('latin1').decode(bytes);
  /** @type {Record<string, string>} */
  const headers = {};
  for (const line of text.split(/\r\n/)) {
    const i = line.indexOf(':');
    if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  return headers;
}

/**
 * Split a multipart body into parts.
 * @param {ArrayBuffer} buffer the whole response body
 * @param {string} contentType the response's Content-Type header
 * @returns {Part[]}
 */
export function parseMultipart(buffer, contentType) {
  const boundary = boundaryOf(contentType);
  if (!boundary) throw new Error('multipart response without a boundary');
  const buf = new Uint8Array(buffer);
  const delim = new TextEncoder().encode('--' + boundary);
  const inner = new TextEncoder().encode('\r\n--' + boundary);
  /** @type {Part[]} */
  const parts = [];
  let pos = indexOfSeq(buf, delim, 0);
  if (pos < 0) throw new Error('multipart boundary not found');
  pos += delim.length;
  for (;;) {
    if (buf[pos] === 45 && buf[pos + 1] === 45) break; // closing "--"
    // skip transport padding and the CRLF after the delimiter
    while (pos < buf.length && buf[pos] !== 10) pos++;
    pos++;
    const headerEnd = indexOfSeq(buf, CRLF_CRLF, pos);
    /** @type {Record<string, string>} */
    let headers = {};
    let bodyStart;
    if (buf[pos] === 13 && buf[pos + 1] === 10) {
      bodyStart = pos + 2; // no headers at all
    } else {
      if (headerEnd < 0) throw new Error('truncated multipart headers');
      headers = parseHeaders(buf.subarray(pos, headerEnd));
      bodyStart = headerEnd + 4;
    }
    let bodyEnd;
    const length = Number(headers['content-length']);
    if (Number.isInteger(length) && length >= 0 && bodyStart + length <= buf.length &&
        indexOfSeq(buf.subarray(bodyStart + length, bodyStart + length + inner.length), inner, 0) === 0) {
      bodyEnd = bodyStart + length;
    } else {
      bodyEnd = indexOfSeq(buf, inner, bodyStart);
      if (bodyEnd < 0) throw new Error('truncated multipart body');
    }
    parts.push({ headers, body: buf.subarray(bodyStart, bodyEnd) });
    pos = bodyEnd + inner.length;
    if (pos >= buf.length) break;
  }
  return parts;
}
