"""scripts/txt2img.py as a user runs it: a real subprocess against a tiny checkpoint. Outputs, numbering,
seeds, sampler flags, prompt files, and the one-line exit-2 errors for bad inputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ldm.models.diffusion.sampling import SAMPLERS

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = "scripts/txt2img.py"
TINY = [
    "--config",
    "tests/fixtures/tiny-v1.yaml",
    "--H",
    "64",
    "--W",
    "64",
    "--ddim_steps",
    "3",
    "--n_samples",
    "2",
    "--n_iter",
    "1",
    "--device",
    "cpu",
    "--precision",
    "full",
]


def txt2img(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, SCRIPT, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def ok(*args) -> subprocess.CompletedProcess:
    result = txt2img(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return result


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "RGB" and im.size == (64, 64), (path, im.mode, im.size)
        return np.asarray(im).astype(np.int16)


def names(folder: Path, pattern: str = "*.png") -> list[str]:
    return sorted(p.name for p in folder.glob(pattern))


@pytest.fixture(scope="module")
def two_runs(tiny_ckpt, tmp_path_factory):
    """The same command twice into one outdir (default seed 42 both times)."""
    out = tmp_path_factory.mktemp("txt2img")
    first = ok("--ckpt", tiny_ckpt, "--outdir", out, "--prompt", "a red cube", *TINY)
    snapshot = (names(out / "samples"), names(out, "grid-*.png"))
    second = ok("--ckpt", tiny_ckpt, "--outdir", out, "--prompt", "a red cube", *TINY)
    return out, first, snapshot, second


def test_writes_samples_and_grid(two_runs):
    out, first, (samples, grids), _ = two_runs
    assert samples == ["00000.png", "00001.png"]
    assert grids == ["grid-0000.png"]
    a, b = pixels(out / "samples" / "00000.png"), pixels(out / "samples" / "00001.png")
    assert not np.array_equal(a, b)  # two samples of one batch have different noise
    assert a.std() > 1  # not a blank image
    with Image.open(out / "grid-0000.png") as grid:
        assert grid.mode == "RGB" and grid.width > 2 * 64 and grid.height >= 64  # 2 images side by side
    with Image.open(out / "samples" / "00000.png") as im:
        assert im.text.get("prompt") == "a red cube" and im.text.get("seed") == "42"
        assert im.text.get("sampler") == "ddim"
    assert "wrote 3 files" in first.stdout


def test_second_run_continues_numbering_and_same_seed_is_identical(two_runs):
    out, _, _, second = two_runs
    assert names(out / "samples") == ["00000.png", "00001.png", "00002.png", "00003.png"]
    assert names(out, "grid-*.png") == ["grid-0000.png", "grid-0001.png"]
    for i in (0, 1):
        assert np.array_equal(pixels(out / "samples" / f"{i:05}.png"), pixels(out / "samples" / f"{i + 2:05}.png"))
    assert "wrote 3 files" in second.stdout


@pytest.mark.parametrize(
    "flags, name",
    [
        pytest.param(["--plms"], "plms", marks=pytest.mark.slow),  # for time; PLMS itself: test_samplers.py
        (["--sampler", "k_euler_a", "--seed", "7"], "k_euler_a"),
    ],
)
def test_other_samplers(two_runs, tiny_ckpt, tmp_path, flags, name):
    out = two_runs[0]
    ok("--ckpt", tiny_ckpt, "--outdir", tmp_path, "--prompt", "a red cube", *TINY, *flags)
    assert names(tmp_path / "samples") == ["00000.png", "00001.png"]
    assert names(tmp_path, "grid-*.png") == ["grid-0000.png"]
    with Image.open(tmp_path / "samples" / "00000.png") as im:
        assert im.text.get("sampler") == name
    # another sampler (and for k_euler_a another seed) gives another image than ddim
    assert not np.array_equal(pixels(tmp_path / "samples" / "00000.png"), pixels(out / "samples" / "00000.png"))


def test_from_file_two_prompts_write_four_samples(tiny_ckpt, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red cube\n\n a blue sphere \n", encoding="utf-8")
    out = tmp_path / "out"
    ok("--ckpt", tiny_ckpt, "--outdir", out, "--from-file", prompts, *TINY)
    assert names(out / "samples") == [f"{i:05}.png" for i in range(4)]
    assert names(out, "grid-*.png") == ["grid-0000.png"]
    texts = []
    for i in range(4):
        with Image.open(out / "samples" / f"{i:05}.png") as im:
            texts.append(im.text.get("prompt"))
    assert texts == ["a red cube", "a red cube", "a blue sphere", "a blue sphere"]
    # same seed, different prompt -> different image
    assert not np.array_equal(pixels(out / "samples" / "00000.png"), pixels(out / "samples" / "00002.png"))


def test_help_exits_zero():
    result = txt2img("--help", timeout=60)
    assert result.returncode == 0
    for flag in ("--ckpt", "--sampler", "--plms", "--from-file", "--negative_prompt", "--ddim_steps"):
        assert flag in result.stdout
    assert "k_euler_a" in result.stdout


def _random_bytes_ckpt(tmp_path: Path) -> Path:
    path = tmp_path / "random.ckpt"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return path


BAD_INPUTS = {
    "height": (lambda ckpt, tmp: ["--ckpt", ckpt, "--H", "60"], ["60"]),
    "sampler": (lambda ckpt, tmp: ["--ckpt", ckpt, "--sampler", "nope"], ["nope", *SAMPLERS]),
    "missing ckpt": (lambda ckpt, tmp: ["--ckpt", "/nonexistent.ckpt"], ["/nonexistent.ckpt"]),
    "random ckpt": (lambda ckpt, tmp: ["--ckpt", _random_bytes_ckpt(tmp)], ["random.ckpt"]),
    "missing prompt file": (lambda ckpt, tmp: ["--ckpt", ckpt, "--from-file", tmp / "none.txt"], ["none.txt"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line(tiny_ckpt, tmp_path, case):
    make_args, expected = BAD_INPUTS[case]
    out = tmp_path / "out"
    result = txt2img(*TINY, "--outdir", out, *make_args(tiny_ckpt, tmp_path))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    assert not list(out.glob("**/*.png"))  # nothing written
