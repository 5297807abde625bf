"""Helpers for training tests: a small concept folder, the tiny finetune config, and a fixed evaluation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from sd_helpers import ROOT

TINY_FINETUNE = ROOT / "tests" / "fixtures" / "tiny-finetune.yaml"


def make_concept(folder: Path, n: int = 3, size: int = 64, seed: int = 0) -> Path:
    """n images of one 'concept': a red disc on varied grey backgrounds, jittered."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        bg = int(rng.integers(60, 200))
        img = Image.new("RGB", (size, size), (bg, bg, bg))
        r = int(rng.integers(size // 5, size // 3))
        cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
        ImageDraw.Draw(img).ellipse((cx - r, cy - r, cx + r, cy + r), fill=(220, 30, 30))
        img.save(folder / f"img{i}.png")
    return folder


# (width, height) of photos of mixed aspect: square, 3:2 landscape, 2:3 portrait, 16:9, and a portrait stored
# landscape with an EXIF rotation (the dataset must see it upright).
MIXED_PHOTOS = ((64, 64), (96, 64), (64, 96), (112, 63), (90, 60))


def make_mixed_photos(folder: Path, seed: int = 0) -> Path:
    """The red-disc concept in photos of MIXED_PHOTOS sizes; the last one is EXIF-rotated (upright 60 x 90)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i, (w, h) in enumerate(MIXED_PHOTOS):
        bg = int(rng.integers(60, 200))
        img = Image.new("RGB", (w, h), (bg, bg, bg))
        r = min(w, h) // 4
        ImageDraw.Draw(img).ellipse((w // 2 - r, h // 2 - r, w // 2 + r, h // 2 + r), fill=(220, 30, 30))
        exif = Image.Exif()
        if i == len(MIXED_PHOTOS) - 1:
            exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
        img.save(folder / f"photo{i}.jpg", exif=exif.tobytes(), quality=95)
    return folder


def train_args(
    ckpt: Path, data: Path, logdir: Path, steps: int = 8, extra: tuple = (), init_word: str = "sculpture"
) -> list[str]:
    return [
        "--base",
        str(TINY_FINETUNE),
        "-t",
        "--actual_resume",
        str(ckpt),
        "-n",
        "test",
        "--data_root",
        str(data),
        "--init_word",
        init_word,
        "-l",
        str(logdir),
        "--max_steps",
        str(steps),
        "--scale_lr",
        "false",
        "-s",
        "7",
        *extra,
    ]


def tiny_env() -> dict:
    """One thread per process: the tiny model's ops are too small to split, and DDP runs 2 processes."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def run_main(args: list[str], timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or tiny_env(),
    )


def only_run_dir(logdir: Path) -> Path:
    runs = [p for p in logdir.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


@torch.no_grad()
def fixed_eval_loss(model, images: torch.Tensor, caption: str, n_t: int = 8, seed: int = 0) -> float:
    """Diffusion loss on a fixed set of (image, timestep, noise): comparable across embeddings."""
    g = torch.Generator().manual_seed(seed)
    z = model.scale_factor * model.encode_first_stage(images).mean
    total, count = 0.0, 0
    for t_val in torch.linspace(50, 950, n_t).long():
        t = t_val.repeat(z.shape[0])
        noise = torch.randn(z.shape, generator=g)
        cond = model.get_learned_conditioning([caption] * z.shape[0])
        eps = model.apply_model(model.q_sample(z, t, noise), t, cond)
        total += torch.mean((eps - noise) ** 2).item() * z.shape[0]
        count += z.shape[0]
    return total / count


def load_images(folder: Path, size: int = 64) -> torch.Tensor:
    arrays = [
        np.asarray(Image.open(p).convert("RGB").resize((size, size)), dtype=np.float32) / 127.5 - 1
        for p in sorted(folder.glob("*.png"))
    ]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


def bare_trainer(tmp_path: Path, max_steps: int, callbacks: list | None = None):
    """A CPU Lightning trainer with none of main.py's parts (no logger, checkpoints or progress bar): for tests
    that fit a model directly. The data module's own sampler orders the samples, as in main.py."""
    import lightning.pytorch as pl

    return pl.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        use_distributed_sampler=False,
        callbacks=callbacks or [],
        default_root_dir=str(tmp_path),
    )


def changed_tensors(model, fit) -> list[str]:
    """Names of the model's state tensors that `fit()` changed."""
    import copy

    before = copy.deepcopy(model.state_dict())
    fit()
    after = model.state_dict()
    return [k for k in before if not torch.equal(before[k], after[k])]


def trainable_model(cfg, ckpt: Path, lr: float = 5e-2):
    """The finetune config's model loaded from `ckpt` with its textual-inversion objective attached, as main.py
    builds it (without --scale_lr: the learning rate is `lr`)."""
    from ldm.model_loading import load_model_from_config
    from ldm.training.attach import attach_objective

    model = load_model_from_config(cfg, ckpt)
    model.learning_rate = lr
    attach_objective(model)
    return model


def run_invoke(ckpt: Path, config: Path, commands: list[str], tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    """scripts/invoke.py on `commands` (a --from_file script): 64 px, 4 steps, CPU, fp32."""
    script = tmp / "commands.txt"
    script.write_text("\n".join(commands) + "\n", encoding="utf-8")
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "invoke.py"),
            *("--config", str(config), "--weights", str(ckpt), "--outdir", str(tmp / "out")),
            *("--from_file", str(script), "--device", "cpu", "--precision", "full", "--steps", "4"),
            *("-W", "64", "-H", "64", "--history_file", str(tmp / "hist"), *extra),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
