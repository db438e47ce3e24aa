import assert from 'node:assert/strict';
import { test } from 'node:test';

import { boundaryOf, mediaParams, parseMultipart } from '../../../static/viewer/multipart.js';

const TYPE = 'multipart/related; type="application/octet-stream"; boundary=XyZ';

/** An ArrayBuffer of its own holding `text` (a small Buffer's .buffer is a shared pool). */
function arrayBuffer(text) { return new TextEncoder().encode(text).buffer; }

/** A multipart body from parts given as [header lines, bytes]. */
function body(parts, { boundary = 'XyZ', preamble = '' } = {}) {
  const chunks = [Buffer.from(preamble)];
  for (const [headers, bytes] of parts) {
    chunks.push(Buffer.from(`--${boundary}\r\n${headers.map((h) => h + '\r\n').join('')}\r\n`), Buffer.from(bytes));
    chunks.push(Buffer.from('\r\n'));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  const all = Buffer.concat(chunks);
  return all.buffer.slice(all.byteOffset, all.byteOffset + all.length);
}

test('the boundary is read quoted or bare, in any case', () => {
  assert.equal(boundaryOf(TYPE), 'XyZ');
  assert.equal(boundaryOf('multipart/related; BOUNDARY="a b;c"'), 'a b;c');
  assert.equal(boundaryOf('application/octet-stream'), null);
  assert.equal(boundaryOf(undefined), null);
});

test('media type parameters are lower-cased by name and unquoted', () => {
  const p = mediaParams('Multipart/Related; Type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1');
  assert.equal(p.$type, 'multipart/related');
  assert.equal(p.type, 'application/octet-stream');
  assert.equal(p['transfer-syntax'], '1.2.840.10008.1.2.1');
});

test('parts come back with their headers and exact bytes, CRLFs inside the payload kept', () => {
  const payload = [13, 10, 45, 45, 0, 255, 13, 10];
  const parts = parseMultipart(body([
    [['Content-Type: application/octet-stream'], payload],
    [['Content-Type: application/octet-stream', 'Content-Length: 3'], [1, 2, 3]],
  ], { preamble: 'ignored preamble\r\n' }), TYPE);
  assert.equal(parts.length, 2);
  assert.deepEqual([...parts[0].body], payload);
  assert.equal(parts[0].headers['content-type'], 'application/octet-stream');
  assert.deepEqual([...parts[1].body], [1, 2, 3]);
  assert.equal(parts[1].headers['content-length'], '3');
});

test('a part whose payload contains the boundary text is cut at its Content-Length', () => {
  const tricky = Buffer.from('a\r\n--XyZ inside');
  const parts = parseMultipart(body([[[`Content-Length: ${tricky.length}`], tricky]]), TYPE);
  assert.equal(Buffer.from(parts[0].body).toString(), 'a\r\n--XyZ inside');
});

test('a part without headers starts right after the blank line', () => {
  const parts = parseMultipart(body([[[], [7, 8]]]), TYPE);
  assert.deepEqual(parts[0].headers, {});
  assert.deepEqual([...parts[0].body], [7, 8]);
});

test('a body without a boundary or cut short is refused', () => {
  assert.throws(() => parseMultipart(new ArrayBuffer(4), 'multipart/related'), /without a boundary/);
  assert.throws(() => parseMultipart(arrayBuffer('nothing here'), TYPE), /boundary not found/);
  assert.throws(() => parseMultipart(arrayBuffer('--XyZ\r\nContent-Type: x\r\n\r\nno end'), TYPE), /truncated multipart body/);
  assert.throws(() => parseMultipart(arrayBuffer('--XyZ\r\nContent-Type: x'), TYPE), /truncated multipart headers/);
});
