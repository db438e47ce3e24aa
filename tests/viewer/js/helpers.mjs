// Builders of DICOM JSON (PS3.18 §F.2) for the unit tests: an attribute by
// keyword, and the metadata of a CT-like image.
import { TAG } from '../../../static/viewer/dicomjson.js';

/** A data set from {Keyword: value or [values]}; null leaves the attribute empty. */
export function dataset(attributes) {
  const out = {};
  for (const [keyword, value] of Object.entries(attributes)) {
    const tag = TAG[keyword];
    if (!tag) throw new Error(`no tag for ${keyword}`);
    out[tag] = value === null ? { vr: 'UN' } : { vr: 'UN', Value: Array.isArray(value) ? value : [value] };
  }
  return out;
}

/** WADO-RS metadata of one 4x4 16-bit CT slice at height z (axial, head first). */
export function ctSlice({ sop, z, instance, extra = {} }) {
  return dataset({
    SOPInstanceUID: sop,
    Modality: 'CT',
    Rows: 4,
    Columns: 4,
    BitsAllocated: 16,
    BitsStored: 16,
    PixelRepresentation: 1,
    RescaleSlope: 1,
    RescaleIntercept: -1024,
    PixelSpacing: [0.5, 0.5],
    ImagePositionPatient: [0, 0, z],
    ImageOrientationPatient: [1, 0, 0, 0, 1, 0],
    InstanceNumber: instance,
    SeriesInstanceUID: '1.2.3.4',
    ...extra,
  });
}
