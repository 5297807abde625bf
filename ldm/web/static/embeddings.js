// The Embeddings page: every action posts, then the page reloads to show the library as it now is.
"use strict";

const NOTICE_KEY = "embeddings-notice";

function reloadWith(message) {
  sessionStorage.setItem(NOTICE_KEY, message);
  location.reload();
}

function names(result) {
  return result.added.map((f) => f.id).join(", ");
}

function onSubmit(id, handler) {
  const form = document.getElementById(id);
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try { await handler(form); } catch (err) { /* api() already showed the message */ } finally { button.disabled = false; }
  });
}

onSubmit("emb-upload-form", async (form) => {
  const result = await postForm("/api/embeddings/upload", form);
  reloadWith("added " + names(result));
});

onSubmit("emb-convert-form", async (form) => {
  const data = Object.fromEntries(new FormData(form));
  const picked = form.elements.file.selectedOptions[0];
  if (data.format === "diffusers" && picked && picked.dataset.sdxl) {
    // diffusers takes an SDXL embedding as two files: they come as one zip download, not a library file
    window.location.href = "/api/embeddings/pair/" + encodeURIComponent(data.file);
    return;
  }
  for (const key of ["out", "name"]) if (!data[key]) delete data[key];
  const result = await postJSON("/api/embeddings/convert", data);
  reloadWith("wrote " + names(result));
});

onSubmit("emb-merge-form", async (form) => {
  const files = [...document.querySelectorAll(".emb-pick:checked")].map((box) => box.value);
  const data = { files, out: form.elements.out.value, rename: form.elements.rename.checked };
  const result = await postJSON("/api/embeddings/merge", data);
  reloadWith("merged into " + names(result));
});

document.addEventListener("click", async (event) => {
  const target = event.target;
  if (target.matches(".emb-delete")) {
    if (!confirm("Delete " + target.dataset.file + "?")) return;
    const result = await postJSON("/api/embeddings/delete", { file: target.dataset.file }).catch(() => null);
    if (result) reloadWith("deleted " + result.deleted.join(", "));
  } else if (target.matches(".emb-add-run")) {
    const result = await postJSON("/api/embeddings/add-run", { run: target.dataset.run }).catch(() => null);
    if (result) reloadWith("added " + names(result));
  }
});

const pending = sessionStorage.getItem(NOTICE_KEY);
if (pending) {
  sessionStorage.removeItem(NOTICE_KEY);
  showNotice(pending);
}
