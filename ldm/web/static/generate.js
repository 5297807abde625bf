// The Generate page: the form, the embedding picker, the job's progress, the gallery and "reuse this recipe".
// One closure: nothing here is a global another page script could clash with.
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);

  function imageUrl(id, download) {
    return "/api/generate/image/" + encodeURIComponent(id) + (download ? "?download=true" : "");
  }

  function selectedModelSize() {
    const option = $("gen-model").selectedOptions[0];
    return option ? option.dataset.size : "";
  }

  function setSizeFromModel() {
    const size = selectedModelSize();
    if (size) { $("gen-width").value = size; $("gen-height").value = size; }
  }

  function fillEmbeddings(embeddings) {
    const select = $("gen-embedding");
    select.replaceChildren(new Option("(embeddings folder)", ""));
    for (const e of embeddings) {
      if (e.error) {
        const option = new Option(e.file + ": unreadable", "");
        option.disabled = true;
        option.title = e.error;
        select.add(option);
        continue;
      }
      for (const word of e.words) {
        const option = new Option(word + "  (" + e.file + ", " + e.vectors + " vectors, " + (e.family || e.width + " wide") + ")", word);
        option.dataset.file = e.file;
        select.add(option);
      }
    }
  }

  function fillSnapshots(runs) {
    const select = $("gen-snapshot");
    const keep = select.value;
    select.replaceChildren(new Option("(none)", ""));
    for (const run of runs) {
      const group = document.createElement("optgroup");
      group.label = run.run;
      for (const snap of run.snapshots) {
        const option = new Option(snap.step === null ? snap.file + " (latest)" : "step " + snap.step, run.run + "\n" + snap.file);
        option.dataset.run = run.run;
        option.dataset.file = snap.file;
        group.appendChild(option);
      }
      select.appendChild(group);
    }
    select.value = keep;
  }

  async function loadOptions() {
    const options = await api("/api/generate/options");
    fillEmbeddings(options.embeddings);
    fillSnapshots(options.runs);
  }

  function insertWord() {
    const word = $("gen-embedding").value;
    if (!word) { showError("pick an embedding first; its word goes into the prompt at the cursor"); return; }
    const box = $("gen-prompt");
    const start = box.selectionStart ?? box.value.length;
    const end = box.selectionEnd ?? start;
    const before = box.value.slice(0, start), after = box.value.slice(end);
    const pad = (before && !/\s$/.test(before) ? " " : "");
    const tail = (after && !/^\s/.test(after) ? " " : "");
    box.value = before + pad + word + tail + after;
    box.focus();
    const caret = (before + pad + word).length;
    box.setSelectionRange(caret, caret);
    showError("");
  }

  function figure(id, caption, withActions) {
    const fig = document.createElement("figure");
    fig.dataset.image = id;
    const link = document.createElement("a");
    link.href = imageUrl(id, false);
    link.target = "_blank";
    const img = document.createElement("img");
    img.src = imageUrl(id, false);
    img.alt = caption;
    link.appendChild(img);
    const cap = document.createElement("figcaption");
    cap.className = "muted recipe";
    cap.textContent = caption;
    fig.append(link, cap);
    if (withActions) {
      const reuse = document.createElement("button");
      reuse.type = "button";
      reuse.className = "secondary reuse";
      reuse.textContent = "Reuse recipe";
      reuse.dataset.image = id;
      reuse.addEventListener("click", () => reuseRecipe(id));
      const download = document.createElement("a");
      download.href = imageUrl(id, true);
      download.className = "download";
      download.textContent = "Download";
      download.setAttribute("download", id);
      fig.append(reuse, document.createTextNode(" "), download);
    }
    return fig;
  }

  async function loadGallery() {
    const { images } = await api("/api/generate/gallery");
    $("gallery").replaceChildren(...images.map((item) => figure(item.id, item.command || item.id, true)));
  }

  function setField(id, value) {
    if (value !== null && value !== undefined) $(id).value = value;
  }

  async function reuseRecipe(id) {
    const recipe = await api("/api/generate/recipe/" + encodeURIComponent(id));
    if (recipe.model) {
      const known = [...$("gen-model").options].some((o) => o.value === recipe.model);
      if (known) $("gen-model").value = recipe.model;
      else showError("this image was made with " + recipe.model + ", which is not in models/ any more; pick a model");
    }
    setField("gen-prompt", recipe.prompt);
    setField("gen-negative", recipe.negative_prompt);
    setField("gen-sampler", recipe.sampler);
    setField("gen-steps", recipe.steps);
    setField("gen-cfg", recipe.cfg_scale);
    setField("gen-seed", recipe.seed);
    setField("gen-width", recipe.width);
    setField("gen-height", recipe.height);
    $("gen-images").value = 1;
    $("gen-karras").checked = !!recipe.karras;
    $("gen-init").value = "";
    $("gen-init-id").value = recipe.init_id || "";
    $("gen-init-reused").textContent = recipe.init_id ? "reusing init image " + recipe.init_id : "";
    if (recipe.init_id) setField("gen-strength", recipe.strength);
    if (recipe.init_missing) showError("the recipe's init image is gone; upload it again for img2img");
    showNotice("recipe of " + id + " loaded: " + recipe.command);
    window.scrollTo(0, 0);
  }

  function showProgress(job) {
    const bar = $("gen-progress");
    bar.hidden = false;
    bar.max = Math.max(job.total, 1);
    bar.value = job.done;
    $("gen-status").textContent = (job.message || job.state) + (job.total ? " " + job.done + "/" + job.total : "");
  }

  function watchJob() {
    $("gen-run-button").disabled = true;
    $("gen-stop").hidden = false;
    poll(async () => {
      const { job } = await api("/api/generate/job");
      if (!job) return false;
      showProgress(job);
      if (job.state === "running") return true;
      $("gen-run-button").disabled = false;
      $("gen-stop").hidden = true;
      $("gen-progress").hidden = true;
      if (job.state === "failed") {
        showError(job.error);
        $("gen-status").textContent = "failed";
      } else {
        const images = job.result.images;
        $("gen-status").textContent = "done: " + images.length + " image(s) in " + job.seconds + " s";
        $("gen-results").replaceChildren(...images.map((id) => figure(id, id, true)));
        await loadGallery();
      }
      return false;
    }, 500);
  }

  async function submitForm(event) {
    event.preventDefault();
    const snapshot = $("gen-snapshot").selectedOptions[0];
    $("gen-run").value = snapshot && snapshot.dataset.run ? snapshot.dataset.run : "";
    $("gen-snapshot-file").value = snapshot && snapshot.dataset.file ? snapshot.dataset.file : "";
    const data = new FormData($("generate-form"));
    if (!$("gen-init").files.length) data.delete("init");
    showNotice("");
    try {
      await postForm("/api/generate/run", data);
    } catch (err) {
      return;
    }
    watchJob();
  }

  document.addEventListener("DOMContentLoaded", async () => {
    setSizeFromModel();
    $("gen-model").addEventListener("change", setSizeFromModel);
    $("gen-insert").addEventListener("click", insertWord);
    $("gen-init-clear").addEventListener("click", () => {
      $("gen-init").value = "";
      $("gen-init-id").value = "";
      $("gen-init-reused").textContent = "";
    });
    $("gen-init").addEventListener("change", () => { $("gen-init-id").value = ""; $("gen-init-reused").textContent = ""; });
    $("generate-form").addEventListener("submit", submitForm);
    $("gen-stop").addEventListener("click", () => postJSON("/api/generate/stop", {}).catch(() => {}));
    try {
      await Promise.all([loadOptions(), loadGallery()]);
      const { job } = await api("/api/generate/job");
      if (job && job.state === "running") watchJob();
    } catch (err) { /* shown in the banner */ }
  });
})();
