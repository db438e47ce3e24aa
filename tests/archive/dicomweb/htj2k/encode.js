#!/usr/bin/env node
// Encode raw pixels as a High-Throughput JPEG 2000 (ISO/IEC 15444-15) code
// stream with OpenJPH compiled to WebAssembly (@cornerstonejs/codec-openjph).
// Test-only: tests/archive/dicomweb/test_htj2k.py runs it to make HTJ2K DICOM objects, which no
// Python encoder on Python 3.11 can make.
//
//   node encode.js --width 64 --height 48 --bits 16 [--signed] [--components 3]
//                  [--color-transform] [--rpcl | --order LRCP] [--lossy STEP]
//                  < pixels.raw > frame.j2c
//
// stdin: one frame of pixels, little endian, colour-by-pixel (R G B R G B ...).
// stdout: the bare code stream (SOC ... EOC), no JP2/JPH box wrapper.
// --rpcl gives what the HTJ2K Lossless RPCL transfer syntax needs (PS3.5
// §10.18): RPCL progression and TLM marker segments (tile-parts split at
// resolutions). --order picks another progression (default RPCL).
// --lossy STEP: irreversible 9/7 wavelet, quantisation base step STEP (e.g.
// 0.0001 for 16-bit CT); otherwise lossless (reversible 5/3).
// --color-transform: RGB coded with the reversible (or, lossy, irreversible)
// colour transform, i.e. DICOM's YBR_RCT (YBR_ICT).
"use strict";

const fs = require("fs");
const openjph = require("@cornerstonejs/codec-openjph");

const PROGRESSION = { LRCP: 0, RLCP: 1, RPCL: 2, PCRL: 3, CPRL: 4 };

function fail(message) {
  process.stderr.write(`encode.js: ${message}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { components: 1, signed: false, colorTransform: false, rpcl: false, lossy: null, order: null };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) fail(`${arg} needs a value`);
      return argv[++i];
    };
    switch (arg) {
      case "--width": opts.width = Number(next()); break;
      case "--height": opts.height = Number(next()); break;
      case "--bits": opts.bits = Number(next()); break;
      case "--components": opts.components = Number(next()); break;
      case "--signed": opts.signed = true; break;
      case "--color-transform": opts.colorTransform = true; break;
      case "--rpcl": opts.rpcl = true; break;
      case "--order": opts.order = next().toUpperCase(); break;
      case "--lossy": opts.lossy = Number(next()); break;
      default: fail(`unknown argument ${arg}`);
    }
  }
  for (const name of ["width", "height"]) {
    if (!Number.isInteger(opts[name]) || opts[name] < 1) fail(`--${name} must be a positive integer`);
  }
  // The binding sizes samples as bits / 8 bytes (so 8 or 16 only) and copies
  // 16-bit samples as one component, so colour is 8-bit only.
  if (opts.bits !== 8 && opts.bits !== 16) fail("--bits must be 8 or 16");
  if (opts.components !== 1 && opts.components !== 3) fail("--components must be 1 or 3");
  if (opts.components === 3 && opts.bits !== 8) fail("colour needs --bits 8");
  if (opts.colorTransform && opts.components !== 3) fail("--color-transform needs --components 3");
  if (opts.lossy !== null && !(opts.lossy > 0)) fail("--lossy needs a positive quantisation step");
  if (opts.order !== null && !(opts.order in PROGRESSION)) fail(`--order must be one of ${Object.keys(PROGRESSION)}`);
  if (opts.rpcl && (opts.lossy !== null || opts.order !== null)) fail("--rpcl is lossless and RPCL by definition");
  return opts;
}

// Without a colour transform OpenJPH takes the components one after another
// (planar: every line of component 0, then every line of component 1...), but
// the binding hands it line y of component c as its call y * components + c.
// Reorder the samples so that call k carries line k % height of component
// floor(k / height). With a colour transform the lines interleave as the
// binding expects.
function planarOrder(pixels, { width, height, components }) {
  const out = Buffer.alloc(pixels.length);
  for (let y = 0; y < height; y++) {
    for (let c = 0; c < components; c++) {
      const k = y * components + c;
      const row = k % height;
      const component = Math.floor(k / height);
      for (let x = 0; x < width; x++) {
        out[(y * width + x) * components + c] = pixels[(row * width + x) * components + component];
      }
    }
  }
  return out;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const pixels = fs.readFileSync(0);
  const expected = opts.width * opts.height * opts.components * (opts.bits / 8);
  if (pixels.length !== expected) fail(`stdin holds ${pixels.length} bytes; ${expected} expected`);

  const codec = await openjph();
  const encoder = new codec.HTJ2KEncoder();
  const frameInfo = {
    width: opts.width,
    height: opts.height,
    bitsPerSample: opts.bits,
    componentCount: opts.components,
    isSigned: opts.signed,
    isUsingColorTransform: opts.colorTransform,
  };
  const planar = opts.components > 1 && !opts.colorTransform;
  encoder.getDecodedBuffer(frameInfo).set(planar ? planarOrder(pixels, opts) : pixels);
  encoder.setQuality(opts.lossy === null, opts.lossy === null ? 0 : opts.lossy);
  if (opts.rpcl) {
    encoder.setProgressionOrder(PROGRESSION.RPCL);
    encoder.setTLMMarker(true);
    encoder.setTilePartDivisionsAtResolutions(true);
  } else if (opts.order !== null) {
    encoder.setProgressionOrder(PROGRESSION[opts.order]);
  }
  encoder.encode();
  process.stdout.write(Buffer.from(encoder.getEncodedBuffer()));
  encoder.delete();
}

main().catch((err) => fail(err && err.stack ? err.stack : String(err)));
