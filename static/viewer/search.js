// @ts-check
/**
 * The study search page: a QIDO-RS search from the browser. The patient
 * field is tried as a fuzzy Patient Name and as a Patient ID prefix (two
 * queries, merged); date range, modality and accession narrow both. Every
 * value from the archive is inserted with textContent, never as HTML.
 */

import { DicomWebClient } from './dicomweb.js';
import { TAG, formatDate, isUID, num, personName, str, values } from './dicomjson.js';
import { byId, el } from './dom.js';

/** @typedef {import('./dicomjson.js').DicomJson} DicomJson */
/** The search form's fields. @typedef {{patient: string, from: string, to: string, modality: string, accession: string}} Fields */

const root = byId('study-search', HTMLElement);
const client = new DicomWebClient(root.dataset.dicomweb || '');
const viewerBase = root.dataset.viewer || '';
const form = byId('search-form', HTMLFormElement);
const status = byId('search-status', HTMLElement);
const tbody = byId('search-results', HTMLTableElement).tBodies[0];
const INCLUDE = [
  'StudyDescription', 'ModalitiesInStudy', 'NumberOfStudyRelatedInstances', 'NumberOfStudyRelatedSeries',
  'PatientBirthDate', 'PatientSex',
];
/** @type {AbortController | null} */
let controller = null;

/** @param {string} value an <input type="date"> value @returns {string} */
function dicomDate(value) { return value ? value.replaceAll('-', '') : ''; }

/**
 * Strip QIDO wildcard characters the user did not mean as such, then add a trailing `*`.
 * @param {string} value
 * @returns {string}
 */
function prefix(value) {
  const v = value.trim().replace(/[*?\\]/g, '');
  return v ? `${v}*` : '';
}

/**
 * The QIDO-RS study searches for the form's fields.
 * @param {Fields} fields
 * @returns {import('./dicomweb.js').Query[]}
 */
function queries(fields) {
  /** @type {import('./dicomweb.js').Query} */
  const base = { includefield: INCLUDE, limit: 200 };
  const from = dicomDate(fields.from);
  const to = dicomDate(fields.to);
  if (from || to) base.StudyDate = from === to ? from : `${from}-${to}`;
  if (fields.modality) base.ModalitiesInStudy = fields.modality;
  if (fields.accession.trim()) base.AccessionNumber = fields.accession.trim();
  const patient = fields.patient.trim();
  if (!patient) return [base];
  return [
    { ...base, PatientName: prefix(patient), fuzzymatching: 'true' },
    { ...base, PatientID: prefix(patient) },
  ];
}

/** @param {HTMLTableRowElement} row @param {string} text */
function cell(row, text) { return el('td', '', row, text); }

/** @param {DicomJson[]} studies */
function render(studies) {
  tbody.replaceChildren();
  for (const s of studies) {
    const uid = str(s, TAG.StudyInstanceUID);
    if (!isUID(uid)) continue;
    const href = viewerBase + encodeURIComponent(uid);
    const row = document.createElement('tr');
    row.className = 'vw-result';
    row.dataset.study = uid;
    const nameCell = cell(row, '');
    const link = document.createElement('a');
    link.href = href;
    link.textContent = personName(s, TAG.PatientName) || '(no name)';
    nameCell.appendChild(link);
    cell(row, str(s, TAG.PatientID));
    cell(row, formatDate(str(s, TAG.PatientBirthDate)));
    cell(row, formatDate(str(s, TAG.StudyDate)));
    cell(row, values(s, TAG.ModalitiesInStudy).join(', '));
    cell(row, str(s, TAG.StudyDescription));
    cell(row, str(s, TAG.AccessionNumber));
    cell(row, String(num(s, TAG.NumberOfStudyRelatedInstances, '')));
    row.addEventListener('click', (e) => { if (e.target !== link) location.assign(href); });
    tbody.appendChild(row);
  }
}

/** @param {Event} [event] */
async function search(event) {
  if (event) event.preventDefault();
  if (controller) controller.abort();
  const current = new AbortController();
  controller = current;
  const data = /** @type {Fields} */ (Object.fromEntries(new FormData(form).entries()));
  status.textContent = 'Searching…';
  try {
    const answers = await Promise.all(queries(data).map((q) => client.searchStudies(q, current.signal)));
    const seen = new Map();
    for (const s of answers.flat()) seen.set(str(s, TAG.StudyInstanceUID), s);
    const studies = [...seen.values()].sort((a, b) =>
      (str(b, TAG.StudyDate) + str(b, TAG.StudyTime)).localeCompare(str(a, TAG.StudyDate) + str(a, TAG.StudyTime)));
    render(studies);
    status.textContent = studies.length === 1 ? '1 study' : `${studies.length} studies`;
  } catch (caught) {
    const err = /** @type {{name?: string, status?: number, message?: string}} */ (caught);
    if (err.name === 'AbortError') return;
    tbody.replaceChildren();
    status.textContent = err.status === 401 ? 'Your session has ended: sign in again.'
      : err.status === 403 ? 'Your role cannot search the archive: open the studies shared with you from their links.'
        : `Search failed (${err.message}).`;
  }
}

form.addEventListener('submit', search);
search();
