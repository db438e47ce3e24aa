// @ts-check
/**
 * Reading the DICOM JSON model (PS3.18 §F.2): attribute lookup by tag,
 * person names, dates. Values come from the archive and are shown with
 * textContent only, never parsed as HTML.
 */

/**
 * One attribute of the DICOM JSON model: its VR and, unless empty, its values.
 * @typedef {{vr?: string, Value?: unknown[], InlineBinary?: string, BulkDataURI?: string}} Attribute
 */
/**
 * A data set in the DICOM JSON model, attributes keyed by tag ("0020000D").
 * @typedef {Record<string, Attribute | undefined>} DicomJson
 */
/** A Person Name value: its component groups. @typedef {{Alphabetic?: string, Ideographic?: string, Phonetic?: string}} PersonNameValue */

export const TAG = Object.freeze({
  SpecificCharacterSet: '00080005',
  ImageType: '00080008',
  SOPClassUID: '00080016',
  SOPInstanceUID: '00080018',
  StudyDate: '00080020',
  SeriesDate: '00080021',
  StudyTime: '00080030',
  AccessionNumber: '00080050',
  InstanceAvailability: '00080056',
  Modality: '00080060',
  ModalitiesInStudy: '00080061',
  InstitutionName: '00080080',
  ReferringPhysicianName: '00080090',
  StudyDescription: '00081030',
  SeriesDescription: '0008103E',
  PatientName: '00100010',
  PatientID: '00100020',
  PatientBirthDate: '00100030',
  PatientSex: '00100040',
  BodyPartExamined: '00180015',
  SliceThickness: '00180050',
  FrameTime: '00181063',
  CineRate: '00180040',
  ImagerPixelSpacing: '00181164',
  StudyInstanceUID: '0020000D',
  SeriesInstanceUID: '0020000E',
  StudyID: '00200010',
  SeriesNumber: '00200011',
  InstanceNumber: '00200013',
  ImagePositionPatient: '00200032',
  ImageOrientationPatient: '00200037',
  FrameOfReferenceUID: '00200052',
  SliceLocation: '00201041',
  NumberOfStudyRelatedSeries: '00201206',
  NumberOfStudyRelatedInstances: '00201208',
  NumberOfSeriesRelatedInstances: '00201209',
  SamplesPerPixel: '00280002',
  PhotometricInterpretation: '00280004',
  PlanarConfiguration: '00280006',
  NumberOfFrames: '00280008',
  Rows: '00280010',
  Columns: '00280011',
  PixelSpacing: '00280030',
  BitsAllocated: '00280100',
  BitsStored: '00280101',
  HighBit: '00280102',
  PixelRepresentation: '00280103',
  WindowCenter: '00281050',
  WindowWidth: '00281051',
  RescaleIntercept: '00281052',
  RescaleSlope: '00281053',
  RescaleType: '00281054',
  PixelData: '7FE00010',
});

/**
 * All values of an attribute, or [] when absent or empty.
 * @param {DicomJson | null | undefined} obj
 * @param {string} tag
 * @returns {unknown[]}
 */
export function values(obj, tag) {
  const el = obj && obj[tag];
  if (!el || !Array.isArray(el.Value)) return [];
  return el.Value;
}

/**
 * The first value of an attribute, or `fallback`.
 * @param {DicomJson | null | undefined} obj
 * @param {string} tag
 * @param {unknown} [fallback]
 * @returns {unknown}
 */
export function first(obj, tag, fallback = undefined) {
  const v = values(obj, tag);
  return v.length ? v[0] : fallback;
}

/**
 * A number from an IS/DS/US value (DS may arrive as a string), or `fallback`.
 * @template [F=undefined]
 * @param {DicomJson | null | undefined} obj
 * @param {string} tag
 * @param {F} [fallback]
 * @param {number} [index]
 * @returns {number | F}
 */
export function num(obj, tag, fallback = /** @type {F} */ (undefined), index = 0) {
  const v = values(obj, tag)[index];
  if (v === undefined || v === null || v === '') return fallback;
  const n = typeof v === 'number' ? v : Number(String(v).trim());
  return Number.isFinite(n) ? n : fallback;
}

/**
 * All values as numbers (DS multi-valued like PixelSpacing or IPP).
 * @param {DicomJson | null | undefined} obj
 * @param {string} tag
 * @returns {number[]}
 */
export function nums(obj, tag) {
  return values(obj, tag).map((v) => (typeof v === 'number' ? v : Number(String(v).trim())));
}

/**
 * The first value as a string, or `fallback` when there is none.
 * @param {DicomJson | null | undefined} obj
 * @param {string} tag
 * @param {string} [fallback]
 * @returns {string}
 */
export function str(obj, tag, fallback = '') {
  const v = first(obj, tag);
  return v === undefined || v === null ? fallback : String(v);
}

/**
 * "DOE^JANE^^DR" as "DOE, JANE DR" from a PN value's Alphabetic group.
 * @param {DicomJson | null | undefined} obj
 * @param {string} tag
 * @returns {string}
 */
export function personName(obj, tag) {
  const v = first(obj, tag);
  if (!v) return '';
  const pn = /** @type {PersonNameValue} */ (v);
  const raw = typeof v === 'string' ? v : pn.Alphabetic || pn.Ideographic || pn.Phonetic || '';
  const [family = '', given = '', middle = '', prefix = '', suffix = ''] = String(raw).split('^');
  const rest = [prefix, given, middle, suffix].filter(Boolean).join(' ');
  return family && rest ? `${family}, ${rest}` : family || rest;
}

/**
 * YYYYMMDD as YYYY-MM-DD (anything else is returned unchanged).
 * @param {unknown} da
 * @returns {string}
 */
export function formatDate(da) {
  const s = String(da || '');
  return /^\d{8}$/.test(s) ? `${s.slice(0, 4)}-${s.slice(4, 6)}-${s.slice(6, 8)}` : s;
}

/**
 * A DICOM UID: digits and dots, at most 64 characters.
 * @param {unknown} value
 * @returns {value is string}
 */
export function isUID(value) {
  return typeof value === 'string' && value.length > 0 && value.length <= 64 && /^[0-9]+(\.[0-9]+)*$/.test(value);
}
