// The Train page: start a run from the form, follow it live (progress, ETA, loss and lr curves drawn as
// inline SVG, every preview grid, the snapshots), Stop / Save now / Resume, and the list of runs.
// Uses app.js (api, postJSON, showNotice, poll). Text from the server reaches the page only as textContent.
"use strict";

const $ = (id) => document.getElementById(id);
const runUrl = (run) => "/api/train/runs/" + encodeURIComponent(run);
const SVG = "http://www.w3.org/2000/svg";
let current = null;  // the run shown
let lastStatus = null;

// Polling must not clear an error the user has not read yet, so it reads without api()'s banner reset.
async function getJSON(url) {
  const response = await fetch(url, { credentials: "same-origin" });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function formValues() {
  const form = $("train-form");
  const values = {};
  for (const el of form.elements) {
    if (!el.name) continue;
    values[el.name] = el.type === "checkbox" ? el.checked : el.value;
  }
  return values;
}

function svgEl(name, attrs) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

// A line chart of [step, value] points with its ranges written on the axes; `smooth` adds a moving average.
function drawChart(svg, points, smooth) {
  svg.replaceChildren();
  const w = +svg.getAttribute("width"), h = +svg.getAttribute("height");
  const left = 56, right = 8, top = 8, bottom = 22;
  svg.append(svgEl("rect", { x: left, y: top, width: w - left - right, height: h - top - bottom, fill: "#fff", stroke: "#d9dde3" }));
  if (!points.length) {
    const t = svgEl("text", { x: left + 8, y: h / 2, fill: "#666c75" });
    t.textContent = "no values yet";
    svg.append(t);
    return;
  }
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(Math.max(...xs), x0 + 1);
  let y0 = Math.min(...ys), y1 = Math.max(...ys);
  if (y1 === y0) { y0 -= Math.abs(y0) * 0.1 || 1; y1 += Math.abs(y1) * 0.1 || 1; }
  const X = (s) => left + ((s - x0) / (x1 - x0)) * (w - left - right);
  const Y = (v) => top + (1 - (v - y0) / (y1 - y0)) * (h - top - bottom);
  const line = (pts, color, width) =>
    svgEl("polyline", { points: pts.map((p) => `${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(" "),
      fill: "none", stroke: color, "stroke-width": width });
  svg.append(line(points, smooth ? "#b4b4b4" : "#3a5ccc", smooth ? 1 : 2));
  if (smooth && points.length > 2) {
    const avg = points.map((p, i) => {
      const win = points.slice(Math.max(0, i - smooth + 1), i + 1);
      return [p[0], win.reduce((a, q) => a + q[1], 0) / win.length];
    });
    svg.append(line(avg, "#3a5ccc", 2));
  }
  const label = (x, y, text, anchor) => {
    const t = svgEl("text", { x, y, "font-size": 11, fill: "#1d1f23", "text-anchor": anchor || "start" });
    t.textContent = text;
    svg.append(t);
  };
  label(left - 4, top + 10, y1.toPrecision(3), "end");
  label(left - 4, h - bottom, y0.toPrecision(3), "end");
  label(left, h - 6, "step " + x0);
  label(w - right, h - 6, "step " + x1, "end");
}

function formatEta(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const s = Math.round(seconds);
  const m = Math.floor(s / 60);
  return "about " + (m ? `${m} min ${s % 60} s` : `${s} s`) + " left";
}

function showPreviews(run, names) {
  const box = $("train-previews");
  const shown = [...box.children].map((f) => f.dataset.name);
  const wanted = [...names].reverse();  // newest first
  if (shown.join("\n") === wanted.join("\n")) return;  // unchanged: keep the images (no flicker)
  box.replaceChildren();
  for (const name of wanted) {
    const figure = document.createElement("figure");
    figure.dataset.name = name;
    figure.className = "train-preview";
    const img = document.createElement("img");
    img.src = runUrl(run) + "/preview/" + encodeURIComponent(name);
    img.alt = name;
    const caption = document.createElement("figcaption");
    const step = /gs-0*(\d+)/.exec(name);
    caption.textContent = step ? "step " + step[1] : name;
    figure.append(img, caption);
    box.append(figure);
  }
}

function showSnapshots(run, status) {
  const list = $("train-snapshots");
  list.replaceChildren();
  const names = [...status.snapshots];
  if (status.latest) names.push(status.latest);
  for (const name of names) {
    const item = document.createElement("li");
    const link = document.createElement("a");
    link.href = runUrl(run) + "/snapshot/" + encodeURIComponent(name);
    link.textContent = name;
    link.className = "train-snapshot";
    item.append(link);
    if (name === status.latest) item.append(" (latest)");
    list.append(item);
  }
}

function showStatus(status) {
  lastStatus = status;
  $("train-run").hidden = false;
  $("train-run-name").textContent = status.run;
  $("train-state").textContent = status.state + (status.save_pending ? " · saving" : "");
  $("train-state").dataset.state = status.state;
  const total = status.max_steps || 1;
  $("train-progress").max = total;
  $("train-progress").value = Math.min(status.step, total);
  $("train-step").textContent = `step ${status.step} of ${status.max_steps ?? "?"}`;
  $("train-eta").textContent = status.state === "running" ? formatEta(status.eta_s) : "";
  $("train-command").textContent = status.command || "";
  const log = $("train-log");
  log.hidden = !status.log_tail.length;
  log.textContent = status.log_tail.join("\n");
  drawChart($("train-loss-chart"), status.losses, 10);
  drawChart($("train-lr-chart"), status.lrs, 0);
  showPreviews(status.run, status.previews);
  showSnapshots(status.run, status);
  const running = status.state === "running";
  $("train-stop").disabled = !running;
  $("train-save").disabled = !running;
  $("train-resume").disabled = !status.resumable;
}

async function showRuns() {
  const { runs } = await getJSON("/api/train/runs");
  const body = $("train-runs").querySelector("tbody");
  body.replaceChildren();
  runs.forEach((run, i) => {
    const row = document.createElement("tr");
    row.id = "train-run-" + i;
    row.dataset.run = run.run;
    for (const text of [run.run, run.state, `${run.step} / ${run.max_steps ?? "?"}`]) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.append(cell);
    }
    const cell = document.createElement("td");
    const open = document.createElement("button");
    open.type = "button";
    open.className = "secondary train-open";
    open.textContent = run.resumable ? "Open (resumable)" : "Open";
    open.addEventListener("click", () => select(run.run));
    cell.append(open);
    row.append(cell);
    body.append(row);
  });
  return runs;
}

async function select(run) {
  current = run;
  showStatus(await getJSON(runUrl(run)));
}

async function action(verb) {
  if (!current) return;
  const status = await postJSON(runUrl(current) + "/" + verb, {});
  showStatus(status);
  showNotice({ stop: "Stopping: the run saves after this step, then exits.", save: "A snapshot is written after this step.",
    resume: "Resumed from the last checkpoint." }[verb]);
  await showRuns();
}

let ticks = 0;
async function tick() {
  try {
    // The runs table every 4th tick (each row reads a run folder), or when the shown run changes state
    const before = lastStatus && lastStatus.state;
    if (ticks++ % 4 === 0 || !current) {
      const runs = await showRuns();
      if (!current && runs.length) current = (runs.find((r) => r.state === "running") || runs[0]).run;
    }
    if (current) showStatus(await getJSON(runUrl(current)));
    if (lastStatus && before && lastStatus.state !== before) await showRuns();
  } catch (err) {
    // the next tick tries again; a lasting problem shows in the runs table staying as it was
  }
  return true;
}

document.addEventListener("DOMContentLoaded", () => {
  $("train-template").addEventListener("change", () => {
    $("train-custom-label").hidden = $("train-template").value !== "custom";
  });
  $("train-placeholder").addEventListener("change", () => {
    const prompt = $("train-preview-prompt");
    if (/^a photo of \S+$/.test(prompt.value)) prompt.value = "a photo of " + $("train-placeholder").value;
  });
  $("train-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const status = await postJSON("/api/train/start", formValues());
    current = status.run;
    showStatus(status);
    showNotice("Started " + status.run);
    await showRuns();
  });
  $("train-stop").addEventListener("click", () => action("stop"));
  $("train-save").addEventListener("click", () => action("save"));
  $("train-resume").addEventListener("click", () => action("resume"));
  poll(tick, 1500);
});
