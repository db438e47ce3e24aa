// The EHR launch page: the one-time token arrives in the URL fragment, which no server ever sees.
// Take it, erase it from the address bar and this history entry, hand it to the server in a POST body,
// then replace this page with wherever the answer points (the viewer, the waiting page, or a problem page),
// so no history entry ever holds the token.
const form = document.getElementById("ehr-launch");
const token = decodeURIComponent(location.hash.slice(1));
history.replaceState(null, "", location.pathname);
if (!token) {
  location.replace(form.dataset.missing);
} else {
  const body = new URLSearchParams(new FormData(form));
  body.set("token", token);
  fetch(form.action, {
    method: "POST",
    body,
    credentials: "same-origin",
    // The page says no-referrer; this request alone keeps same-origin, so Chromium sends our Origin to CSRF.
    referrerPolicy: "same-origin",
    headers: { Accept: "application/json" },
  })
    .then((response) => response.json())
    .then((answer) => location.replace(answer.location))
    .catch(() => location.replace(form.dataset.failed));
}
