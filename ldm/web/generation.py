"""One Generate-page request: its fields checked before any work, then sampled and saved as a job.

The prompt takes the project's syntax (`[words]` are negative, A1111 emphasis `(word:1.3)`, BREAK); the
negative field is joined to any bracketed words. Images go to the gallery folder as invoke.py writes them
(`NNNNNN.<seed>.png` with the `Dream`, `sd-metadata` and `parameters` chunks), so `invoke> !fetch` and
other tools read their recipe too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ldm.errors import ConfigError
from ldm.web.catalog import ModelEntry, get_model
from ldm.web.embedding_words import describe_file, uses_word
from ldm.web.generators import Generators
from ldm.web.jobs import Job
from ldm.web.security import WebInputError
from ldm.web.settings import WebSettings
from ldm.web.snapshots import snapshot_path

log = logging.getLogger(__name__)

MAX_IMAGES = 16  # images per request; each is its own seed (seed, seed + 1, ...)


@dataclass(frozen=True)
class GenerationRequest:
    model: str
    prompt: str  # positive part
    negative_prompt: str
    sampler: str
    steps: int
    cfg_scale: float
    seed: int | None  # None: a random one, recorded in each image
    width: int
    height: int
    images: int
    karras: bool = False
    strength: float = 0.75
    init_id: str | None = None  # a re-encoded upload in the init folder (gallery.init_dir)
    run: str | None = None  # a training run whose snapshot joins the embeddings
    snapshot: str | None = None


def _text(form: Mapping[str, Any], name: str, default: str = "") -> str:
    value = form.get(name, default)
    return default if value is None else str(value).strip()


def _flag(form: Mapping[str, Any], name: str) -> bool:
    return _text(form, name).lower() in ("1", "true", "on", "yes")


def parse_request(settings: WebSettings, form: Mapping[str, Any], init_id: str | None = None) -> GenerationRequest:
    """Check every field (a ConfigError/WebInputError naming the field and the fix), before any model loads."""
    from ldm.generate import MAX_CFG_SCALE, SEED_RANGE, check_size
    from ldm.models.diffusion.sample import check_steps
    from ldm.models.diffusion.sampling import get_sampler
    from ldm.prompts.parser import split_negative
    from ldm.validate import finite_float, int_in_range

    entry = get_model(settings, _text(form, "model"))
    positive, bracketed = split_negative(_text(form, "prompt"))
    if not positive.strip():
        raise WebInputError("prompt is empty; type what the image should show, e.g. 'a photo of *'")
    negative = ", ".join(p for p in (bracketed, _text(form, "negative_prompt")) if p)
    sampler = _text(form, "sampler", "k_lms")
    get_sampler(sampler)
    width = int_in_range("width", _text(form, "width") or entry.size, 8, None)
    height = int_in_range("height", _text(form, "height") or entry.size, 8, None)
    check_size(width, height)
    seed_text = _text(form, "seed")
    run, snapshot = _text(form, "run") or None, _text(form, "snapshot") or None
    if (run is None) != (snapshot is None):
        raise WebInputError("run and snapshot go together; pick a snapshot of a run, or neither")
    if snapshot is not None:
        snapshot_path(settings, run, snapshot)
    strength = finite_float("strength", _text(form, "strength") or 0.75, 0, 1, lo_open=True) if init_id else 0.75
    return GenerationRequest(
        model=entry.id,
        prompt=positive.strip(),
        negative_prompt=negative,
        sampler=sampler,
        steps=check_steps(_text(form, "steps") or 30),
        cfg_scale=finite_float("cfg_scale", _text(form, "cfg_scale") or 7.5, 0, MAX_CFG_SCALE),
        seed=None if seed_text == "" else int_in_range("seed", seed_text, *SEED_RANGE),
        width=width,
        height=height,
        images=int_in_range("images", _text(form, "images") or 1, 1, MAX_IMAGES),
        karras=_flag(form, "karras"),
        strength=strength,
        init_id=init_id,
        run=run,
        snapshot=snapshot,
    )


def check_folder_words(library: Any, folder: Path, prompts: list[str]) -> None:
    """A prompt that names a folder embedding the library skipped (another model's width) would silently
    draw the word as plain text; refuse it with the library's own reason instead."""
    for filename, reason in library.skipped.items():
        path = folder / filename
        if not path.is_file():
            continue
        words = describe_file(path).words or (path.stem,)
        for word in words:
            if any(uses_word(p, word) for p in prompts):
                raise ConfigError(f"{folder.name}/{filename}: {reason}")


def run_generation(gens: Generators, settings: WebSettings, req: GenerationRequest, job: Job) -> dict[str, Any]:
    """The job: load (or reuse) the model, sample `req.images` images, save each with its recipe."""
    from ldm.fileio import check_output_dir
    from ldm.web.gallery import init_path, save_results

    check_output_dir(settings.outputs_dir, "the gallery folder")
    entry: ModelEntry = get_model(settings, req.model)
    extra = [snapshot_path(settings, req.run, req.snapshot)] if req.snapshot else []
    gen = gens.generate(entry, extra, job=job)
    check_folder_words(gen.library, settings.embeddings_dir, [req.prompt, req.negative_prompt])
    init = init_path(settings, req.init_id) if req.init_id else None
    strength = req.strength if init is not None else None
    per_image = gen.step_count(req.steps, req.sampler, req.karras, strength)
    job.progress(0, per_image * req.images, "sampling")

    results = gen.prompt2image(
        req.prompt,
        iterations=req.images,
        steps=req.steps,
        seed=req.seed,
        cfg_scale=req.cfg_scale,
        width=req.width,
        height=req.height,
        sampler_name=req.sampler,
        init_img=init,
        strength=req.strength,
        negative_prompt=req.negative_prompt,
        karras=req.karras,
        step_callback=job.step,
    )
    used = gen.conditioner.used_embeddings(req.prompt)
    paths = save_results(settings, results, req, used, gens.model_hash(entry))
    return {"images": [p.name for p in paths]}
