// The report editor: autosave with optimistic versioning, the conflict (both texts) on a stale save,
// and the report panel beside the viewer. Every text from the server is set with textContent, never as HTML.
const DELAY_MS = 1500;
const LABELS = { indication: 'Indication', technique: 'Technique', comparison: 'Comparison', findings: 'Findings', impression: 'Impression' };

function cell(text, tag = 'td', cls = '') {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (tag === 'td') {
    const pre = document.createElement('pre');
    pre.textContent = text;
    node.append(pre);
  } else {
    node.textContent = text;
  }
  return node;
}

function showConflict(root, data) {
  const box = root.querySelector('#report-conflict');
  const body = box.querySelector('tbody');
  body.replaceChildren();
  for (const [name, label] of Object.entries(LABELS)) {
    const row = document.createElement('tr');
    row.append(cell(label, 'th'), cell(data.theirs[name] || '', 'td', 'theirs'), cell(data.yours[name] || '', 'td', 'yours'));
    body.append(row);
  }
  box.hidden = false;
}

export function initEditor(root) {
  const form = root.querySelector('#report-editor');
  if (!form) return;
  const saved = root.querySelector('#report-saved');
  const version = form.querySelector('input[name=version]');
  const shown = root.querySelector('#report-version');
  const token = form.querySelector('input[name=csrfmiddlewaretoken]').value;
  let timer = null;
  let inflight = null;
  let stopped = false;

  const save = () => {
    timer = null;
    if (stopped) return Promise.resolve();
    const body = new FormData(form);
    saved.textContent = 'Saving…';
    inflight = fetch(root.dataset.save, {
      method: 'POST', body, credentials: 'same-origin',
      headers: { Accept: 'application/json', 'X-CSRFToken': token },
    }).then(async (response) => {
      const data = await response.json().catch(() => ({}));
      if (response.ok) {
        version.value = String(data.version);
        if (shown) shown.textContent = String(data.version);
        saved.textContent = 'Draft saved';
      } else if (response.status === 409 && data.error === 'conflict') {
        stopped = true;
        showConflict(root, data);
        saved.textContent = 'Not saved: someone else saved first';
      } else {
        saved.textContent = `Not saved: ${data.error || response.status}`;
      }
    }).catch(() => { saved.textContent = 'Not saved: the server did not answer'; })
      .finally(() => { inflight = null; });
    return inflight;
  };

  form.addEventListener('input', () => {
    saved.textContent = 'Editing…';
    if (timer) clearTimeout(timer);
    timer = setTimeout(save, DELAY_MS);
  });
  // Ctrl+Enter (Cmd+Enter) signs final, with Shift preliminary: the Sign buttons' own submit (a stale second factor re-prompts).
  // Once: a held key repeats, and a second post would only meet the version the first one moved (a conflict).
  let signing = false;
  form.addEventListener('keydown', (event) => {
    if (event.key !== 'Enter' || !(event.ctrlKey || event.metaKey) || event.altKey) return;
    const button = form.querySelector(event.shiftKey ? 'button.sign-preliminary' : 'button.sign-final');
    if (!button) return;
    event.preventDefault();
    if (event.repeat || signing) return;
    signing = true;
    form.requestSubmit(button);
  });
  form.addEventListener('submit', (event) => {
    // The form posts the text itself: drop a pending autosave, but let one in flight finish (it moves the version).
    if (timer) { clearTimeout(timer); timer = null; }
    if (inflight) {
      event.preventDefault();
      const submitter = event.submitter;
      inflight.then(() => form.requestSubmit(submitter));
    }
  });
}

async function loadPanel(panel) {
  const response = await fetch(panel.dataset.src, { credentials: 'same-origin', headers: { Accept: 'text/html' } });
  if (!response.ok) { panel.hidden = true; return; }
  // The fragment is rendered by our server with every value escaped.
  panel.innerHTML = await response.text();
  const root = panel.querySelector('#report');
  if (root) initEditor(root);
}

const panel = document.getElementById('report-panel');
if (panel && panel.dataset.src) {
  loadPanel(panel);
} else {
  const root = document.getElementById('report');
  if (root) initEditor(root);
}
