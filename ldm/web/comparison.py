"""The Compare page's work: a run's snapshots x prompt variants at one seed (the XYZ plot), and "use this
snapshot" (a copy into the embeddings folder under a chosen word).

Every cell is saved on its own (the page shows them as a clickable table) and the labelled grid of
ldm/evaluation/xyz_grid.py beside them for download, in outputs/web/compare/<grid id>/; the folder
appears whole or not at all. The model is the cache's; each snapshot is loaded explicitly into its own
`Generate` over it, so `*` and the snapshot's own word name its vectors, and a snapshot of another
model's width is the library's one-line error before the first cell.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ldm.web.catalog import get_model
from ldm.web.embedding_words import folder_embeddings
from ldm.web.generators import Generators
from ldm.web.jobs import Job
from ldm.web.security import WebInputError, check_id, child
from ldm.web.settings import WebSettings
from ldm.web.snapshots import snapshot_path

MAX_SNAPSHOTS = 16
MAX_PROMPTS = 8
WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # a chosen embedding name: also its word in prompts


@dataclass(frozen=True)
class CompareRequest:
    model: str
    run: str
    snapshots: tuple[str, ...]
    prompts: tuple[str, ...]
    negative_prompt: str
    seed: int
    steps: int
    cfg_scale: float
    sampler: str
    width: int
    height: int


def compare_dir(settings: WebSettings) -> Path:
    return settings.outputs_dir / "compare"


def _list(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise WebInputError(f"{what} must be a list of strings")
    return [v.strip() for v in value if v.strip()]


def _given(body: Mapping[str, Any], key: str, default: Any) -> Any:
    """The value, or `default` when the field is missing or empty (0 is a value, and is checked)."""
    value = body.get(key)
    return default if value is None or (isinstance(value, str) and not value.strip()) else value


def parse_compare(settings: WebSettings, body: Mapping[str, Any]) -> CompareRequest:
    """Check the JSON body before any model loads: ids inside their roots, numbers in range, some of each."""
    from ldm.generate import MAX_CFG_SCALE, SEED_RANGE, check_size
    from ldm.models.diffusion.sample import check_steps
    from ldm.models.diffusion.sampling import get_sampler
    from ldm.validate import finite_float, int_in_range

    if not isinstance(body, Mapping):
        raise WebInputError("the request must be a JSON object")
    entry = get_model(settings, str(body.get("model", "")))
    run = check_id(str(body.get("run", "")), "run")
    snapshots = _list(body.get("snapshots", []), "snapshots")
    if not 1 <= len(snapshots) <= MAX_SNAPSHOTS:
        raise WebInputError(f"pick 1 to {MAX_SNAPSHOTS} snapshots of the run (got {len(snapshots)})")
    for snapshot in snapshots:
        snapshot_path(settings, run, snapshot)
    prompts = _list(body.get("prompts", []), "prompts")
    if not 1 <= len(prompts) <= MAX_PROMPTS:
        raise WebInputError(f"give 1 to {MAX_PROMPTS} prompts, one per line, e.g. 'a photo of *' (got {len(prompts)})")
    sampler = str(_given(body, "sampler", "k_lms"))
    get_sampler(sampler)
    width = int_in_range("width", _given(body, "width", entry.size), 8, None)
    height = int_in_range("height", _given(body, "height", entry.size), 8, None)
    check_size(width, height)
    return CompareRequest(
        model=entry.id,
        run=run,
        snapshots=tuple(snapshots),
        prompts=tuple(prompts),
        negative_prompt=str(body.get("negative_prompt") or ""),
        seed=int_in_range("seed", _given(body, "seed", 42), *SEED_RANGE),
        steps=check_steps(_given(body, "steps", 30)),
        cfg_scale=finite_float("cfg_scale", _given(body, "cfg_scale", 7.5), 0, MAX_CFG_SCALE),
        sampler=sampler,
        width=width,
        height=height,
    )


def run_compare(gens: Generators, settings: WebSettings, req: CompareRequest, job: Job) -> dict[str, Any]:
    """The job: every (prompt, snapshot) cell from req.seed, saved with the labelled grid."""
    from ldm.evaluation.compare_embeddings import grid_title, read_snapshots
    from ldm.evaluation.xyz_grid import labelled_grid
    from ldm.fileio import atomic_folder, check_output_dir, save_png

    check_output_dir(compare_dir(settings), "the comparison folder")
    entry = get_model(settings, req.model)
    paths = [snapshot_path(settings, req.run, s) for s in req.snapshots]
    snaps = read_snapshots(paths)
    gens_by_snapshot = [gens.generate(entry, [p], folder=False, job=job) for p in paths]  # misfits fail here
    per_cell = gens_by_snapshot[0].step_count(req.steps, req.sampler)
    job.progress(0, per_cell * len(paths) * len(req.prompts), "sampling")
    cells: list[list[Any]] = [[None] * len(paths) for _ in req.prompts]  # cells[row = prompt][col = snapshot]
    for c, gen in enumerate(gens_by_snapshot):
        for r, prompt in enumerate(req.prompts):
            ((image, _seed),) = gen.txt2img(
                prompt,
                negative_prompt=req.negative_prompt,
                steps=req.steps,
                seed=req.seed,
                cfg_scale=req.cfg_scale,
                width=req.width,
                height=req.height,
                sampler_name=req.sampler,
                step_callback=job.step,
            )
            cells[r][c] = image
    title = grid_title(req.seed, req.steps, req.cfg_scale, req.sampler, entry.weights)
    grid, _layout = labelled_grid(cells, [s.label for s in snaps], list(req.prompts), title=title)
    grid_id = time.strftime("%Y%m%d-%H%M%S") + f"-{job.id}"
    metadata = {
        "model": entry.id,
        "run": req.run,
        "embeddings": json.dumps(list(req.snapshots)),
        "prompts": json.dumps(list(req.prompts)),
        "negative_prompt": req.negative_prompt,
        "seed": str(req.seed),
        "steps": str(req.steps),
        "sampler": req.sampler,
        "cfg_scale": str(req.cfg_scale),
        "size": f"{req.width}x{req.height}",
    }
    with atomic_folder(compare_dir(settings) / grid_id) as folder:
        for r, row in enumerate(cells):
            for c, cell in enumerate(row):
                save_png(cell, folder / f"cell-{r}-{c}.png")
        save_png(grid, folder / "grid.png", metadata)
    return {
        "grid": grid_id,
        "run": req.run,
        "prompts": list(req.prompts),
        "columns": [{"snapshot": s, "label": snap.label, "step": snap.step} for s, snap in zip(req.snapshots, snaps)],
        "cells": [[f"cell-{r}-{c}.png" for c in range(len(paths))] for r in range(len(req.prompts))],
    }


def compare_image(settings: WebSettings, grid_id: str, name: str) -> Path:
    """outputs/web/compare/<grid>/<cell or grid>.png (404 when absent)."""
    if not name.endswith(".png"):
        raise WebInputError(f"{name!r} is not an image of a comparison; pick a cell of the grid")
    path = child(compare_dir(settings), grid_id, name, what="comparison image")
    if not path.is_file():
        raise WebInputError(f"no comparison image {grid_id}/{name}; render the grid again", status=404)
    return path


def use_snapshot(settings: WebSettings, run: str, snapshot: str, name: str) -> dict[str, Any]:
    """Copy a snapshot into the embeddings folder as `<name>.<suffix>`, its one term renamed `name` so
    prompts on the Generate page write `name`; an existing file or word is never overwritten (409)."""
    from ldm.embeddings import read_embedding_file, write_embedding_file
    from ldm.web.embedding_words import describe_file

    if not isinstance(name, str) or not WORD.fullmatch(name):
        raise WebInputError(
            f"name {name!r} is not a usable word; use letters, digits, '-' and '_' (up to 64), e.g. 'purple-star'"
        )
    source = snapshot_path(settings, run, snapshot)
    target = settings.embeddings_dir / f"{name}{source.suffix}"
    if target.exists():
        raise WebInputError(f"{settings.embeddings_dir.name}/{target.name} exists already; choose another name", 409)
    taken = {w.lower(): e.file for e in folder_embeddings(settings.embeddings_dir) for w in e.words}
    if name.lower() in taken:
        raise WebInputError(f"the word {name!r} is used by {taken[name.lower()]} already; choose another name", 409)
    terms = read_embedding_file(source)
    if len(terms) == 1:  # one concept: the chosen name is its word; several keep their own words
        terms = [replace(terms[0], name=name)]
    write_embedding_file(target, terms)
    return {"file": target.name, "words": list(describe_file(target).words), "step": terms[0].step}
