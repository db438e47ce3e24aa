// @ts-check
/**
 * From DICOMweb answers to what the viewer shows: display sets and hanging.
 *
 * A display set is one scrollable stack: the single-frame images of a series
 * sorted along the slice normal (else by Instance Number), or one multi-frame
 * instance (an ultrasound clip, a multi-frame CT) on its own. Non-image
 * instances (SR, presentation states, key objects) are left out. The hanging
 * protocol puts the largest diagnostic series first and localizers last.
 */

import { TAG, num, nums, str, first } from './dicomjson.js';
import { describe } from './pixels.js';
import { cross, dot } from './vec3.js';

/** @typedef {import('./dicomjson.js').DicomJson} DicomJson */
/**
 * One scrollable image: a single-frame instance, or one frame of a multi-frame one.
 * @typedef {object} Image
 * @property {string} study
 * @property {string} series
 * @property {string} sop (0008,0018) SOP Instance UID
 * @property {number} frame 1-based frame number
 * @property {DicomJson} meta the instance's WADO-RS metadata
 * @property {import('./pixels.js').Desc} desc
 * @property {number} instanceNumber
 * @property {number | null} position along the slice normal, mm
 * @property {number | undefined} sliceLocation
 * @property {number | undefined} sliceThickness
 * @property {import('./geometry.js').Plane | null} [plane] cached by geometry.planeOf
 */
/**
 * One stack the viewer scrolls through, with what the series list shows of it.
 * @typedef {object} DisplaySet
 * @property {'stack' | 'multiframe'} kind
 * @property {Image[]} images
 * @property {number} cineRate frames per second
 * @property {number} instanceNumber
 * @property {string} id "<series uid>#<k>"
 * @property {string} study
 * @property {string} series
 * @property {string} modality
 * @property {string} description
 * @property {number} seriesNumber
 * @property {DicomJson} info the QIDO-RS series result
 * @property {DicomJson} header the series' first instance's metadata
 * @property {string | null} thumbnailSop
 * @property {boolean} localizer
 */

const NON_IMAGE = new Set(['SR', 'PR', 'KO', 'SEG', 'RTSTRUCT', 'RTPLAN', 'RTDOSE', 'REG', 'DOC', 'AU', 'ECG']);
const LOCALIZER = /\b(scout|localizer|localiser|topogram|survey|scanogram|3.?plane)\b/i;

/**
 * Position of an image along its slice normal, or null.
 * @param {DicomJson} meta
 * @returns {number | null}
 */
function slicePosition(meta) {
  const ipp = nums(meta, TAG.ImagePositionPatient);
  const iop = nums(meta, TAG.ImageOrientationPatient);
  if (ipp.length !== 3 || iop.length !== 6 || ![...ipp, ...iop].every(Number.isFinite)) return null;
  return dot(cross(iop.slice(0, 3), iop.slice(3, 6)), ipp);
}

/**
 * @param {string} study
 * @param {string} series
 * @param {DicomJson} meta
 * @param {number} frame
 * @param {import('./pixels.js').Desc} desc
 * @returns {Image}
 */
function image(study, series, meta, frame, desc) {
  return {
    study, series, sop: str(meta, TAG.SOPInstanceUID), frame, meta, desc,
    instanceNumber: num(meta, TAG.InstanceNumber, 0),
    position: slicePosition(meta),
    sliceLocation: num(meta, TAG.SliceLocation),
    sliceThickness: num(meta, TAG.SliceThickness),
  };
}

/**
 * Display sets of one series from its WADO-RS metadata.
 * @param {string} study
 * @param {DicomJson} seriesInfo QIDO-RS series result (DICOM JSON)
 * @param {DicomJson[]} metadata WADO-RS series metadata
 * @returns {DisplaySet[]}
 */
export function displaySetsOf(study, seriesInfo, metadata) {
  const series = str(seriesInfo, TAG.SeriesInstanceUID);
  const modality = str(seriesInfo, TAG.Modality) || str(metadata[0], TAG.Modality);
  const description = str(seriesInfo, TAG.SeriesDescription) || str(metadata[0], TAG.SeriesDescription);
  const seriesNumber = num(seriesInfo, TAG.SeriesNumber, num(metadata[0], TAG.SeriesNumber, 0));
  /** @type {Image[]} */
  const singles = [];
  /** @type {{kind: 'stack' | 'multiframe', images: Image[], cineRate: number, instanceNumber: number}[]} */
  const sets = [];
  for (const meta of metadata) {
    if (!meta[TAG.Rows] || !meta[TAG.Columns]) continue; // not an image
    const desc = describe(meta);
    if (!desc.rows || !desc.columns) continue;
    if (desc.numberOfFrames > 1) {
      const images = [];
      for (let f = 1; f <= desc.numberOfFrames; f++) images.push(image(study, series, meta, f, desc));
      const frameTime = num(meta, TAG.FrameTime);
      const cineRate = num(meta, TAG.CineRate) || (frameTime ? 1000 / frameTime : 0) || 15;
      sets.push({ kind: 'multiframe', images, cineRate, instanceNumber: num(meta, TAG.InstanceNumber, 0) });
    } else {
      singles.push(image(study, series, meta, 1, desc));
    }
  }
  if (singles.length) {
    const positioned = singles.every((i) => i.position !== null);
    singles.sort((a, b) => (positioned ? Number(b.position) - Number(a.position) : 0) || a.instanceNumber - b.instanceNumber);
    sets.unshift({ kind: 'stack', images: singles, cineRate: 15, instanceNumber: 0 });
  }
  sets.sort((a, b) => a.instanceNumber - b.instanceNumber);
  const first0 = metadata[0] || {};
  return sets.map((s, k) => ({
    ...s,
    id: `${series}#${k}`,
    study,
    series,
    modality,
    description,
    seriesNumber,
    info: seriesInfo,
    header: first0,
    thumbnailSop: s.kind === 'multiframe' ? s.images[0].sop : null,
    localizer: LOCALIZER.test(description) || s.images[0].desc.imageType.some((t) => /LOCALIZER/i.test(t)),
  }));
}

/**
 * Order QIDO series results for hanging: diagnostic images first, biggest first.
 * @param {DicomJson[]} seriesResults
 * @returns {DicomJson[]}
 */
export function hangingOrder(seriesResults) {
  /** @param {DicomJson} s */
  const score = (s) => {
    const modality = str(s, TAG.Modality);
    const count = num(s, TAG.NumberOfSeriesRelatedInstances, 0);
    const description = str(s, TAG.SeriesDescription);
    let value = count;
    if (NON_IMAGE.has(modality)) value -= 1e9;
    if (LOCALIZER.test(description)) value -= 1e6;
    return value;
  };
  return [...seriesResults].sort(
    (a, b) => score(b) - score(a) || num(a, TAG.SeriesNumber, 0) - num(b, TAG.SeriesNumber, 0),
  );
}

/**
 * False for series of non-image modalities (SR, PR, KO...).
 * @param {DicomJson} s
 * @returns {boolean}
 */
export function isImageSeries(s) {
  return !NON_IMAGE.has(str(s, TAG.Modality));
}

export { first };
