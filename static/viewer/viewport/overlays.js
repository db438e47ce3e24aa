// @ts-check
/**
 * The text a viewport shows over its image: patient (top left), study (top
 * right), series, slice and cine (bottom left), window, zoom and orientation
 * flags (bottom right), and whether the pixels are the lossless frame or the
 * server's lossy preview. Values from the archive are set as textContent.
 */

import { TAG, formatDate, personName, str } from '../dicomjson.js';
import { el } from '../dom.js';
import { isMonochrome } from '../pixels.js';

/** @typedef {'full' | 'preview' | 'loading'} Fidelity */

/**
 * Make `box` hold one line per text, reusing the lines it has.
 * @param {HTMLElement} box
 * @param {string[]} lines
 */
export function setLines(box, lines) {
  while (box.childElementCount > lines.length) box.lastElementChild?.remove();
  lines.forEach((text, i) => {
    const line = box.children[i] || el('div', 'vw-ov-line', box);
    if (line.textContent !== text) line.textContent = text;
  });
}

export class Overlays {
  /** @param {HTMLElement} root the viewport's element, which the overlays are appended to */
  constructor(root) {
    this.corners = {
      tl: el('div', 'vw-ov vw-ov-tl', root),
      tr: el('div', 'vw-ov vw-ov-tr', root),
      bl: el('div', 'vw-ov vw-ov-bl', root),
      br: el('div', 'vw-ov vw-ov-br', root),
    };
    this.fidelity = el('div', 'vw-fidelity', root);
  }

  /** Nothing shown: no text. */
  clear() {
    for (const box of Object.values(this.corners)) setLines(box, []);
    this.fidelity.textContent = '';
  }

  /**
   * The texts for what a viewport shows now.
   * @param {import('./viewport.js').Viewport} vp a viewport showing a display set
   * @param {import('../displaysets.js').DisplaySet} ds what it shows
   * @param {import('../displaysets.js').Image} img its current image
   * @param {Fidelity | null} fidelity
   */
  update(vp, ds, img, fidelity) {
    const h = img.meta;
    const win = vp.window || img.desc.windows[0];
    const n = ds.images.length;
    const sex = str(h, TAG.PatientSex);
    const birth = formatDate(str(h, TAG.PatientBirthDate));
    setLines(this.corners.tl, [
      personName(h, TAG.PatientName),
      `ID: ${str(h, TAG.PatientID)}`,
      [birth, sex].filter(Boolean).join(' '),
    ]);
    setLines(this.corners.tr, [
      str(h, TAG.StudyDescription),
      formatDate(str(h, TAG.StudyDate)),
      str(h, TAG.AccessionNumber) ? `Acc: ${str(h, TAG.AccessionNumber)}` : '',
      str(h, TAG.InstitutionName),
    ]);
    const loc = img.sliceLocation ?? img.position;
    const bl = [
      `Se: ${ds.seriesNumber} ${ds.description}`.trim(),
      ds.kind === 'multiframe' ? `Fr: ${vp.index + 1}/${n}` : `Im: ${vp.index + 1}/${n}`,
    ];
    if (loc !== null && loc !== undefined && Number.isFinite(loc)) bl.push(`Loc: ${loc.toFixed(1)} mm`);
    if (img.sliceThickness !== undefined && Number.isFinite(img.sliceThickness)) bl.push(`Thk: ${img.sliceThickness} mm`);
    if (vp.cine.playing) bl.push(`Cine: ${vp.cine.fps} fps`);
    setLines(this.corners.bl, bl);
    const br = [];
    if (win && isMonochrome(img.desc)) br.push(`W: ${Math.round(win.width)} L: ${Math.round(win.center)}`);
    br.push(`Zoom: ${(vp.scale()).toFixed(2)}x`);
    const flags = [vp.rotation ? `Rot ${vp.rotation}°` : '', vp.flipH ? 'Flip H' : '', vp.flipV ? 'Flip V' : '', vp.invert ? 'Inverted' : ''];
    if (flags.some(Boolean)) br.push(flags.filter(Boolean).join(' '));
    setLines(this.corners.br, br);
    this.fidelity.textContent = fidelity === 'full' ? 'Lossless' : fidelity === 'preview' ? 'Preview (lossy)' : 'Loading…';
    this.fidelity.dataset.fidelity = fidelity || 'loading';
  }
}
