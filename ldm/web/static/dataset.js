// The Dataset page: concept folders, uploads, preprocessing, the caption grid and tag edits.
// Uses app.js (api, postJSON, postForm, showNotice). Text from files reaches the page only as textContent.
"use strict";

const conceptSelect = () => document.getElementById("concept-select");
const currentConcept = () => conceptSelect().value;
const conceptUrl = (concept) => "/api/dataset/" + encodeURIComponent(concept);
const field = (id) => document.getElementById(id);  // by id: form.action / form.target are built-ins

// Rebuild the concept list from the server; keep (or choose) `selected`.
async function loadConcepts(selected) {
  const { concepts } = await api("/api/dataset/concepts");
  const select = conceptSelect();
  const keep = selected || select.value;
  select.replaceChildren();
  for (const c of concepts) {
    const option = document.createElement("option");
    option.value = c.name;
    option.textContent = `${c.name} (${c.images} images, ${c.captioned} captioned)`;
    select.append(option);
  }
  if (concepts.some((c) => c.name === keep)) select.value = keep;
  const none = document.getElementById("concept-none");
  if (none) none.hidden = concepts.length > 0;
  await loadGrid();
}

function figureFor(concept, item, index) {
  const figure = document.createElement("figure");
  figure.id = "image-" + index;
  figure.dataset.file = item.file;
  const img = document.createElement("img");
  img.src = conceptUrl(concept) + "/image/" + encodeURIComponent(item.file) + "?t=" + Date.now();
  img.alt = item.file;
  const pick = document.createElement("label");
  const box = document.createElement("input");
  box.type = "checkbox";
  box.className = "image-pick";
  box.id = "image-pick-" + index;
  pick.append(box, " " + item.file);
  const caption = document.createElement("textarea");
  caption.id = "caption-" + index;
  caption.className = "caption";
  caption.rows = 3;
  caption.value = item.caption;
  const save = document.createElement("button");
  save.type = "button";
  save.id = "caption-save-" + index;
  save.className = "caption-save";
  save.textContent = "Save";
  save.addEventListener("click", async () => {
    const result = await postJSON(conceptUrl(concept) + "/caption", { file: item.file, caption: caption.value });
    caption.value = result.caption;
    showNotice(`saved the caption of ${item.file}`);
    await loadTags();
  });
  const remove = document.createElement("button");
  remove.type = "button";
  remove.id = "image-delete-" + index;
  remove.className = "secondary image-delete";
  remove.textContent = "Delete";
  remove.addEventListener("click", async () => {
    if (!confirm(`Delete ${item.file} and its caption?`)) return;
    await postJSON(conceptUrl(concept) + "/delete", { file: item.file });
    await loadConcepts(concept);
  });
  figure.append(img, pick, caption, save, " ", remove);
  return figure;
}

function showTags(tags) {
  const list = document.getElementById("tag-list");
  list.replaceChildren();
  for (const [tag, count] of tags) {
    const chip = document.createElement("button");
    chip.type = "button";
    chip.className = "secondary tag";
    chip.textContent = `${tag} (${count})`;
    chip.addEventListener("click", () => { document.getElementById("tags-tag").value = tag; });
    list.append(chip, " ");
  }
}

async function loadTags() {
  const concept = currentConcept();
  if (concept) showTags((await api(conceptUrl(concept) + "/images")).tags);
}

async function loadGrid() {
  const grid = document.getElementById("dataset-grid");
  const summary = document.getElementById("dataset-summary");
  const concept = currentConcept();
  grid.replaceChildren();
  showTags([]);
  if (!concept) { summary.textContent = ""; return; }
  history.replaceState(null, "", "/dataset?concept=" + encodeURIComponent(concept));
  const view = await api(conceptUrl(concept) + "/images");
  view.images.forEach((item, i) => grid.append(figureFor(concept, item, i)));
  const captioned = view.images.filter((item) => item.caption).length;
  summary.textContent = `${concept}: ${view.images.length} images, ${captioned} captioned`;
  showTags(view.tags);
}

function pickedFiles() {
  return [...document.querySelectorAll("#dataset-grid figure")]
    .filter((figure) => figure.querySelector(".image-pick").checked)
    .map((figure) => figure.dataset.file);
}

function showTagFields() {
  const action = field("tags-action").value;
  // style, not the hidden attribute: app.css gives labels display: inline-block, which beats [hidden]
  field("tags-new-label").style.display = action === "replace" ? "" : "none";
  field("tags-where-label").style.display = action === "add" ? "" : "none";
}

function setUp() {
  const wanted = new URLSearchParams(location.search).get("concept");
  if (wanted && [...conceptSelect().options].some((o) => o.value === wanted)) conceptSelect().value = wanted;
  conceptSelect().addEventListener("change", loadGrid);

  document.getElementById("concept-create-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = document.getElementById("concept-name").value.trim();
    const result = await postJSON("/api/dataset/concepts", { name });
    document.getElementById("concept-name").value = "";
    showNotice(`created concept ${result.concept}`);
    await loadConcepts(result.concept);
  });

  document.getElementById("upload-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const concept = currentConcept();
    if (!concept) { showError("create or pick a concept first"); return; }
    const button = document.getElementById("upload-button");
    button.disabled = true;
    try {
      const result = await postForm(conceptUrl(concept) + "/upload", event.target);
      event.target.reset();
      showNotice(`added ${result.added.length} photos to ${concept}`);
      await loadConcepts(concept);
    } finally { button.disabled = false; }
  });

  document.getElementById("preprocess-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = field("prep-run");
    button.disabled = true;
    try {
      const result = await postJSON(conceptUrl(currentConcept()) + "/preprocess", {
        size: Number(field("prep-size").value),
        crop: field("prep-crop").value,
        flip: field("prep-flip").checked,
        split_oversized: field("prep-split").checked,
        caption_from_filename: field("prep-filewords").checked,
        target: field("prep-target").value.trim() || null,
        replace: field("prep-replace").checked,
      });
      showNotice(`wrote ${result.images} prepared images to ${result.concept}`);
      await loadConcepts(result.concept);
    } finally { button.disabled = false; }
  });

  document.getElementById("tags-action").addEventListener("change", showTagFields);
  showTagFields();
  document.getElementById("tags-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const payload = { action: field("tags-action").value, tag: field("tags-tag").value, where: field("tags-where").value };
    if (payload.action === "replace") payload.new = field("tags-new").value;
    if (field("tags-selected-only").checked) payload.files = pickedFiles();
    const result = await postJSON(conceptUrl(currentConcept()) + "/tags", payload);
    showNotice(`${payload.action}: ${result.changed} captions changed`);
    await loadGrid();
  });

  const captionModel = document.getElementById("caption-model-run");
  if (captionModel) {
    captionModel.addEventListener("click", async () => {
      captionModel.disabled = true;
      showNotice("captioning: this can take a while with a large model");
      try {
        const overwrite = document.getElementById("caption-model-overwrite").checked;
        const result = await postJSON(conceptUrl(currentConcept()) + "/caption-model", { overwrite });
        showNotice(`the model captioned ${result.captioned} images`);
        await loadConcepts(currentConcept());
      } finally { captionModel.disabled = false; }
    });
  }
  loadGrid();
}

document.addEventListener("DOMContentLoaded", setUp);
