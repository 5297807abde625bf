"""Compare embedding snapshots side by side: one model, one seed, every (prompt, snapshot) pair.

Columns are snapshots (e.g. `embeddings_gs-500.pt`, `embeddings_gs-1000.pt` of a training run), rows are
prompts that use the placeholder. Every cell starts from the same seed, so the columns differ only by
the learned vectors. The model is built once; for each snapshot its vectors are loaded into the
model's embedding manager, whose placeholders are terms of the Generate's conditioner: the prompts use
them, and the conditioner's cache sees the swap (it keys on the parameters and their in-place versions).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from PIL import Image

from ldm.embeddings import LoadedEmbedding, read_embedding_file
from ldm.errors import ConfigError
from ldm.evaluation.xyz_grid import GridLayout, labelled_grid

log = logging.getLogger(__name__)

PathLike = str | Path
SNAPSHOT_GLOB = "embeddings_gs-*.pt"
SDXL_SNAPSHOT_GLOB = "embeddings_gs-*.safetensors"  # SDXL runs write clip_l/clip_g snapshots
MANAGER_TARGET = "ldm.modules.embedding_manager.EmbeddingManager"
_STEP = re.compile(r"gs-(\d+)")


@dataclass
class Snapshot:
    """One column: the file, its label, and its terms (read up front, so a bad file fails before sampling)."""

    path: Path
    label: str
    step: int | None
    terms: list[LoadedEmbedding]


def snapshot_step(path: PathLike) -> int | None:
    """The training step in a snapshot's file name (`embeddings_gs-500.pt` -> 500), else None."""
    match = _STEP.search(Path(path).stem)
    return int(match.group(1)) if match else None


def find_snapshots(logdir: PathLike) -> list[Path]:
    """`checkpoints/embeddings_gs-*.pt` (SDXL: `.safetensors`) of a training run folder (or of a checkpoints
    folder), by step."""
    logdir = Path(logdir).expanduser()
    if not logdir.is_dir():
        raise ConfigError(f"--logdir {logdir} is not a folder; pass a training run folder such as logs/<run>")
    folder = logdir / "checkpoints" if (logdir / "checkpoints").is_dir() else logdir
    files = [p for g in (SNAPSHOT_GLOB, SDXL_SNAPSHOT_GLOB) for p in folder.glob(g) if snapshot_step(p) is not None]
    if not files:
        raise ConfigError(
            f"--logdir {logdir}: no {SNAPSHOT_GLOB} in {folder}; "
            "pass the run folder of a training run, or list files with --embeddings"
        )
    return sorted(files, key=lambda p: (snapshot_step(p), p.name))


def read_snapshots(paths: Sequence[PathLike]) -> list[Snapshot]:
    """Read every file; label each column "step N" (from the file name) or the file stem, made unique."""
    if not paths:
        raise ConfigError("no embedding snapshots given; pass --embeddings FILE ... or --logdir RUN_DIR")
    snaps = []
    for p in paths:
        path = Path(p).expanduser()
        step = snapshot_step(path)
        snaps.append(Snapshot(path, f"step {step}" if step is not None else path.stem, step, read_embedding_file(path)))
    labels = [s.label for s in snaps]
    for s in snaps:
        if labels.count(s.label) > 1:  # e.g. the same step of two runs: say which folder
            s.label = f"{s.path.parent.name}/{s.path.stem}"
    return snaps


def check_prompts(prompts: Sequence[str], placeholders: Sequence[str]) -> list[str]:
    prompts = [str(p) for p in prompts]
    if not prompts:
        raise ConfigError('no prompts given; pass e.g. --prompts "a photo of *" "* on the beach"')
    for prompt in prompts:
        if not any(ph in prompt for ph in placeholders):
            log.warning(
                "prompt %r uses none of the placeholders %s; its row will not change across columns",
                prompt,
                placeholders,
            )
    return prompts


def model_config_with_manager(config: PathLike, placeholder: str = "*") -> Any:
    """The config as an OmegaConf node; without a personalization_config, one with `placeholder` is added
    (its starting vectors do not matter: every snapshot overwrites them)."""
    path = Path(config).expanduser()
    if not path.is_file():
        raise ConfigError(f"config not found: {path}; pass e.g. configs/stable-diffusion/v1-finetune.yaml")
    node = OmegaConf.load(path)
    model = node.model if "model" in node else node
    if model.get("params") is None or model.params.get("personalization_config") is None:
        log.info("%s has no personalization_config; adding an embedding manager for %r", path, placeholder)
        model.params.personalization_config = {
            "target": MANAGER_TARGET,
            "params": {"placeholder_strings": [placeholder], "initializer_words": [placeholder]},
        }
    return node


def render_cells(
    generate: Any,
    snapshots: Sequence[Snapshot],
    prompts: Sequence[str],
    seed: int,
    steps: int,
    width: int,
    height: int,
    cfg_scale: float,
    sampler_name: str | None = None,
    negative_prompt: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> list[list[Image.Image]]:
    """cells[row][col]: prompt `row` with snapshot `col` loaded, all from `seed`. `generate` is a
    `ldm.generate.Generate` built with `model=` a model with an embedding manager (its placeholders are
    the conditioner's learned words). `progress(done, total)` is called with done=0 once every input is
    checked, then after each cell."""
    manager = getattr(generate.load_model(), "embedding_manager", None)
    if manager is None:
        raise ConfigError(
            "the model has no embedding manager; build it from a config with a "
            "personalization_config (e.g. configs/stable-diffusion/v1-finetune.yaml)"
        )
    for snap in snapshots:  # every file must fit before the first image: dimension and term count
        manager.load(snap.terms)
    check_prompts(prompts, manager.placeholders)
    cells: list[list[Image.Image]] = [[None] * len(snapshots) for _ in prompts]  # type: ignore[list-item]
    total, done = len(snapshots) * len(prompts), 0
    if progress is not None:
        progress(0, total)  # inputs are checked: a progress bar may appear now
    for c, snap in enumerate(snapshots):
        manager.load(snap.terms)
        for r, prompt in enumerate(prompts):
            ((image, _),) = generate.txt2img(
                prompt,
                negative_prompt=negative_prompt,
                steps=steps,
                seed=seed,
                cfg_scale=cfg_scale,
                width=width,
                height=height,
                sampler_name=sampler_name,
            )
            cells[r][c] = image
            done += 1
            log.info("cell %d/%d: %s | %s", done, total, snap.label, prompt)
            if progress is not None:
                progress(done, total)
    return cells


def grid_title(seed: int, steps: int, cfg_scale: float, sampler_name: str, ckpt: PathLike) -> str:
    return f"{Path(ckpt).name} | seed {seed} | {sampler_name}, {steps} steps | scale {cfg_scale:g}"


def compare_embeddings(
    config: PathLike,
    ckpt: PathLike,
    snapshots: Sequence[PathLike],
    prompts: Sequence[str],
    seed: int = 42,
    steps: int = 30,
    width: int | None = None,
    height: int | None = None,
    cfg_scale: float = 7.5,
    sampler_name: str = "k_lms",
    negative_prompt: str = "",
    placeholder: str = "*",
    device: str | None = None,
    precision: str = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Image.Image, GridLayout, dict[str, str]]:
    """Build the model once, render every cell, and return (labelled grid, its layout, PNG text metadata).
    `width`/`height` not given: the config's training size (512, 768, or 1024 for SDXL)."""
    from ldm.devices import choose_device, choose_dtype
    from ldm.generate import Generate, check_size
    from ldm.image_size import resolve_size
    from ldm.model_loading import load_model_from_config
    from ldm.models.diffusion.sample import check_steps
    from ldm.models.diffusion.sampling import get_sampler

    width, height = resolve_size(width, height, config)
    check_size(width, height)
    check_steps(steps)
    snaps = read_snapshots(snapshots)
    prompts = [str(p) for p in prompts]
    if not prompts:
        raise ConfigError('no prompts given; pass e.g. --prompts "a photo of *" "* on the beach"')
    torch_device = choose_device(device)
    dtype = choose_dtype(precision, torch_device)
    get_sampler(sampler_name)  # fail before loading
    node = model_config_with_manager(config, placeholder)
    log.info("loading %s with %s", ckpt, config)
    model = load_model_from_config(node, ckpt, device=torch_device, dtype=dtype)
    # Handed the model, Generate's conditioner takes the manager's placeholders as terms (swapped per column).
    generate = Generate(
        config=config, model=model, device=str(torch_device), precision=precision, sampler_name=sampler_name
    )
    cells = render_cells(
        generate,
        snaps,
        prompts,
        seed=seed,
        steps=steps,
        width=width,
        height=height,
        cfg_scale=cfg_scale,
        sampler_name=sampler_name,
        negative_prompt=negative_prompt,
        progress=progress,
    )
    image, layout = labelled_grid(
        cells, [s.label for s in snaps], prompts, title=grid_title(seed, steps, cfg_scale, sampler_name, ckpt)
    )
    metadata = {
        "embeddings": json.dumps([str(s.path) for s in snaps]),
        "prompts": json.dumps(prompts),
        "negative_prompt": negative_prompt,
        "seed": str(seed),
        "steps": str(steps),
        "sampler": sampler_name,
        "cfg_scale": str(cfg_scale),
        "size": f"{width}x{height}",
        "ckpt": str(ckpt),
        "config": str(config),
    }
    return image, layout, metadata
