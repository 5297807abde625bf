// The Compare page: pick a run's snapshots and prompts, render the grid as a job, click a cell to use it.
// One closure: nothing here is a global another page script could clash with.
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  let runs = [];
  let picked = null; // {run, snapshot, label} of the clicked cell

  function imageUrl(grid, name, download) {
    return "/api/compare/image/" + encodeURIComponent(grid) + "/" + encodeURIComponent(name) + (download ? "?download=true" : "");
  }

  function setSizeFromModel() {
    const option = $("cmp-model").selectedOptions[0];
    if (option) { $("cmp-width").value = option.dataset.size; $("cmp-height").value = option.dataset.size; }
  }

  function showSnapshots() {
    const run = runs.find((r) => r.run === $("cmp-run").value);
    const box = $("cmp-snapshots");
    box.querySelectorAll("label").forEach((el) => el.remove());
    if (!run) return;
    run.snapshots.forEach((snap, i) => {
      const label = document.createElement("label");
      const input = document.createElement("input");
      input.type = "checkbox";
      input.value = snap.file;
      input.id = "cmp-snap-" + i;
      input.checked = snap.step !== null; // the step snapshots; the latest copy is usually the last step again
      label.append(input, " " + (snap.step === null ? snap.file + " (latest)" : "step " + snap.step));
      box.appendChild(label);
    });
  }

  async function loadRuns() {
    runs = (await api("/api/compare/runs")).runs;
    const select = $("cmp-run");
    const keep = select.value;
    select.replaceChildren(...runs.map((r) => new Option(r.run, r.run)));
    if (!runs.length) select.add(new Option("(no run with snapshots in logs/)", ""));
    if (keep && runs.some((r) => r.run === keep)) select.value = keep;
    showSnapshots();
  }

  function request() {
    return {
      model: $("cmp-model").value,
      run: $("cmp-run").value,
      snapshots: [...$("cmp-snapshots").querySelectorAll("input:checked")].map((el) => el.value),
      prompts: $("cmp-prompts").value.split("\n").map((p) => p.trim()).filter((p) => p),
      negative_prompt: $("cmp-negative").value,
      seed: $("cmp-seed").value,
      sampler: $("cmp-sampler").value,
      steps: $("cmp-steps").value,
      cfg_scale: $("cmp-cfg").value,
      width: $("cmp-width").value,
      height: $("cmp-height").value,
    };
  }

  function pickCell(result, r, c) {
    const column = result.columns[c];
    picked = { run: result.run, snapshot: column.snapshot, label: column.label };
    document.querySelectorAll("#cmp-table td.picked").forEach((td) => td.classList.remove("picked"));
    $("cmp-cell-" + r + "-" + c).classList.add("picked");
    $("cmp-use-label").textContent = column.label + " (" + column.snapshot + ")";
    $("cmp-use-run").textContent = result.run;
    $("cmp-use").hidden = false;
    $("cmp-use-name").focus();
  }

  function showResult(result) {
    const table = $("cmp-table");
    const head = document.createElement("tr");
    head.appendChild(document.createElement("th"));
    for (const column of result.columns) {
      const th = document.createElement("th");
      th.textContent = column.label;
      th.title = column.snapshot;
      head.appendChild(th);
    }
    const rows = result.prompts.map((prompt, r) => {
      const tr = document.createElement("tr");
      const th = document.createElement("th");
      th.textContent = prompt;
      tr.appendChild(th);
      result.cells[r].forEach((name, c) => {
        const td = document.createElement("td");
        td.id = "cmp-cell-" + r + "-" + c;
        td.className = "cell";
        const img = document.createElement("img");
        img.src = imageUrl(result.grid, name, false);
        img.alt = prompt + " | " + result.columns[c].label;
        img.title = "use " + result.columns[c].label;
        img.addEventListener("click", () => pickCell(result, r, c));
        td.appendChild(img);
        tr.appendChild(td);
      });
      return tr;
    });
    table.replaceChildren(head, ...rows);
    $("cmp-grid-download").href = imageUrl(result.grid, "grid.png", true);
    $("cmp-use").hidden = true;
    $("cmp-result").hidden = false;
  }

  function watchJob() {
    $("cmp-run-button").disabled = true;
    $("cmp-stop").hidden = false;
    poll(async () => {
      const { job } = await api("/api/compare/job");
      if (!job) return false;
      const bar = $("cmp-progress");
      bar.hidden = job.state !== "running";
      bar.max = Math.max(job.total, 1);
      bar.value = job.done;
      $("cmp-status").textContent = (job.message || job.state) + (job.total ? " " + job.done + "/" + job.total : "");
      if (job.state === "running") return true;
      $("cmp-run-button").disabled = false;
      $("cmp-stop").hidden = true;
      if (job.state === "failed") { showError(job.error); $("cmp-status").textContent = "failed"; }
      else { $("cmp-status").textContent = "done in " + job.seconds + " s"; showResult(job.result); }
      return false;
    }, 500);
  }

  async function submitForm(event) {
    event.preventDefault();
    showNotice("");
    try { await postJSON("/api/compare/run", request()); } catch (err) { return; }
    watchJob();
  }

  async function useSnapshot() {
    if (!picked) return;
    const name = $("cmp-use-name").value.trim();
    try {
      const made = await postJSON("/api/compare/use", { run: picked.run, snapshot: picked.snapshot, name });
      showNotice("copied to embeddings/" + made.file + ": write " + made.words.join(", ") + " in prompts on the Generate page");
    } catch (err) { /* shown in the banner */ }
  }

  document.addEventListener("DOMContentLoaded", async () => {
    setSizeFromModel();
    $("cmp-model").addEventListener("change", setSizeFromModel);
    $("cmp-run").addEventListener("change", showSnapshots);
    $("compare-form").addEventListener("submit", submitForm);
    $("cmp-use-button").addEventListener("click", useSnapshot);
    $("cmp-stop").addEventListener("click", () => postJSON("/api/compare/stop", {}).catch(() => {}));
    try {
      await loadRuns();
      const { job } = await api("/api/compare/job");
      if (job && job.state === "running") watchJob();
      else if (job && job.state === "done") showResult(job.result);
    } catch (err) { /* shown in the banner */ }
  });
})();
