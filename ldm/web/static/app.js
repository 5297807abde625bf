// Shared helpers for every page (our own code; no framework, nothing fetched from a CDN).
"use strict";

// Show a one-line error (from the server's {"error": ...} or a network failure) in the page banner.
function showError(message) {
  const box = document.getElementById("error");
  if (!box) return;
  box.textContent = message || "";
  box.hidden = !message;
}

function showNotice(message) {
  const box = document.getElementById("notice");
  if (!box) return;
  box.textContent = message || "";
  box.hidden = !message;
}

// fetch() that returns parsed JSON, or throws Error(server's message) after showing it.
async function api(url, options = {}) {
  let response;
  try {
    response = await fetch(url, { credentials: "same-origin", ...options });
  } catch (err) {
    showError("the server did not answer: " + err.message);
    throw err;
  }
  const type = response.headers.get("content-type") || "";
  const body = type.includes("application/json") ? await response.json() : await response.text();
  if (!response.ok) {
    const message = (body && body.error) || (typeof body === "string" ? body : response.statusText);
    showError(message);
    throw new Error(message);
  }
  showError("");
  return body;
}

// POST a form (multipart, so files travel too) or a plain object as JSON.
function postForm(url, form) {
  const data = form instanceof FormData ? form : new FormData(form);
  return api(url, { method: "POST", body: data });
}

function postJSON(url, payload) {
  return api(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(payload) });
}

// Call fn every `ms` until it returns false (or throws); returns a stop function.
function poll(fn, ms) {
  let stopped = false;
  async function tick() {
    if (stopped) return;
    let again = true;
    try { again = (await fn()) !== false; } catch (err) { again = true; }
    if (again && !stopped) setTimeout(tick, ms);
  }
  tick();
  return () => { stopped = true; };
}
