"""scripts/preprocess.py: crops, flips, tiles, captions, and refusing bad input with one line."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ldm.data.preprocess import focus_square_box, tile_boxes

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "preprocess.py"


def _script():
    spec = importlib.util.spec_from_file_location("preprocess_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(capsys, *argv) -> tuple[int, str]:
    rc = _script().main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def _thirds(w: int, h: int) -> Image.Image:
    """Left third red, middle green, right third blue."""
    a = np.zeros((h, w, 3), dtype=np.uint8)
    a[:, : w // 3, 0] = 255
    a[:, w // 3 : 2 * w // 3, 1] = 255
    a[:, 2 * w // 3 :, 2] = 255
    return Image.fromarray(a)


def _mean(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32).mean(axis=(0, 1))


def test_center_crop_flip_and_caption(tmp_path, capsys):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    _thirds(90, 30).save(src / "00012-a_photo-of cat.png")
    (src / "notes.json").write_text("{}")
    rc, err = run(capsys, "--src", src, "--dst", dst, "--size", 24, "--flip", "--caption_from_filename")
    assert rc == 0, err
    stem = "00012-a_photo-of cat"
    assert sorted(p.name for p in dst.iterdir()) == [
        f"{stem}-flipped.png",
        f"{stem}-flipped.txt",
        f"{stem}.png",
        f"{stem}.txt",
    ]
    out = dst / "00012-a_photo-of cat.png"
    assert Image.open(out).size == (24, 24)
    assert _mean(out)[1] > 230 and _mean(out)[0] < 20  # the centre third (green) only
    flipped = np.asarray(Image.open(dst / "00012-a_photo-of cat-flipped.png"))
    assert np.array_equal(flipped, np.asarray(Image.open(out))[:, ::-1])
    assert (dst / "00012-a_photo-of cat.txt").read_text().strip() == "a photo of cat"


def test_sidecar_caption_is_carried_over_and_wins(tmp_path, capsys):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    _thirds(30, 30).save(src / "dog_photo.png")
    (src / "dog_photo.txt").write_text("my own caption, tags")
    assert run(capsys, "--src", src, "--dst", dst, "--size", 8, "--caption_from_filename")[0] == 0
    assert (dst / "dog_photo.txt").read_text().strip() == "my own caption, tags"


def test_focus_crop_finds_the_detailed_region(tmp_path, capsys):
    a = np.full((40, 160, 3), 128, dtype=np.uint8)
    a[:, 110:150] = np.random.default_rng(0).integers(0, 256, (40, 40, 3))  # detail on the right
    image = Image.fromarray(a)
    left, top, right, bottom = focus_square_box(image)
    assert (top, bottom, right - left) == (0, 40, 40) and 100 <= left <= 120
    assert focus_square_box(Image.new("RGB", (160, 40), "gray")) == (60, 0, 100, 40)  # flat: centre
    portrait = focus_square_box(image.transpose(Image.Transpose.TRANSPOSE))
    assert portrait[0] == 0 and 100 <= portrait[1] <= 120
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    image.save(src / "detail.png")
    assert run(capsys, "--src", src, "--dst", dst, "--size", 32, "--crop", "focus")[0] == 0
    assert np.asarray(Image.open(dst / "detail.png"), dtype=np.float32).std() > 40


def test_crop_none_keeps_aspect(tmp_path, capsys):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    _thirds(60, 40).save(src / "wide.png")
    assert run(capsys, "--src", src, "--dst", dst, "--size", 32, "--crop", "none")[0] == 0
    assert Image.open(dst / "wide.png").size == (48, 32)


def test_split_oversized_into_overlapping_tiles(tmp_path, capsys):
    boxes = tile_boxes(200, 50)
    assert len(boxes) == 5 and boxes[0][0] == 0 and boxes[-1][2] == 200
    assert all(b[2] - b[0] == 50 and b[3] == 50 for b in boxes)
    assert all(nxt[0] < cur[2] - 0.2 * 50 + 1 for cur, nxt in zip(boxes, boxes[1:]))  # >= 20% overlap
    assert [b[1] for b in tile_boxes(50, 200)] == [b[0] for b in boxes]
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    _thirds(150, 50).save(src / "long.png")
    _thirds(60, 50).save(src / "normal.png")  # aspect 1.2: cropped as usual
    assert run(capsys, "--src", src, "--dst", dst, "--size", 16, "--split_oversized")[0] == 0
    names = sorted(p.name for p in dst.iterdir())
    assert names == [f"long-tile{j}.png" for j in range(4)] + ["normal.png"]  # 3 tiles would not overlap
    assert _mean(dst / "long-tile0.png")[0] > 150 and _mean(dst / "long-tile3.png")[2] > 150


def test_exif_orientation_applied_before_crop(tmp_path, capsys):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    stored = Image.new("RGB", (60, 20), (255, 0, 0))
    stored.paste((0, 0, 255), (30, 0, 60, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(src / "phone.jpg", exif=exif.tobytes(), quality=95)
    assert run(capsys, "--src", src, "--dst", dst, "--size", 20, "--crop", "none")[0] == 0
    assert Image.open(dst / "phone.png").size == (20, 60)  # portrait after rotation


def test_min_size_skips_small_images(tmp_path, capsys):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    _thirds(64, 64).save(src / "big.png")
    _thirds(10, 10).save(src / "tiny.png")
    assert run(capsys, "--src", src, "--dst", dst, "--size", 16, "--min_size", 32)[0] == 0
    assert [p.name for p in dst.iterdir()] == ["big.png"]


def _bad_inputs(tmp_path: Path) -> dict:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "caption.txt").write_text("no images here")
    good = tmp_path / "good"
    good.mkdir()
    _thirds(30, 30).save(good / "a.png")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    _thirds(30, 30).save(corrupt / "a.png")
    (corrupt / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return {
        "missing": (tmp_path / "nope", [], "no such folder"),
        "empty": (empty, [], "has no images"),
        "size": (good, ["--size", "0"], "--size"),
        "negative": (good, ["--size", "-5"], "--size"),
        "corrupt": (corrupt, [], "zz_broken.png"),
        "same": (good, ["--dst", str(good)], "--dst"),
        "too_small": (good, ["--min_size", "100"], "--min_size"),
    }


@pytest.mark.parametrize("case", ["missing", "empty", "size", "negative", "corrupt", "same", "too_small"])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys, case):
    src, extra, needle = _bad_inputs(tmp_path)[case]
    dst = tmp_path / "out"
    before = sorted(src.iterdir()) if src.is_dir() else None
    argv = ["--src", src, "--dst", dst, *extra] if "--dst" not in extra else ["--src", src, *extra]
    rc, err = run(capsys, *argv)
    assert rc == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err
    assert not dst.exists()
    assert (sorted(src.iterdir()) if src.is_dir() else None) == before


def test_script_help_runs_as_a_file():
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0 and "--split_oversized" in out.stdout and "--caption_from_filename" in out.stdout
