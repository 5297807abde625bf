"""Captions from a BLIP model on disk: ldm/data/captioning.py and scripts/preprocess.py --caption_model,
with a tiny random BLIP built here (nothing downloaded)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from blip_helpers import WORDS, make_tiny_blip
from PIL import Image
from test_preprocess import ROOT, run

from ldm.data.captioning import Captioner, caption_files
from ldm.errors import CheckpointError


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory) -> Path:
    return make_tiny_blip(tmp_path_factory.mktemp("blip") / "tiny-blip")


@pytest.fixture(scope="module")
def captioner(blip_dir) -> Captioner:
    return Captioner.load(blip_dir, batch_size=2, max_new_tokens=12)


def _noise(seed: int, size=(40, 30)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def test_captions_are_words_of_the_tokenizer_and_depend_on_the_image(captioner):
    captions = captioner.caption([_noise(i) for i in range(4)])
    assert len(captions) == 4
    for caption in captions:
        assert isinstance(caption, str) and caption
        assert set(caption.split()) <= set(WORDS), caption  # decoded by the folder's BERT tokenizer
        assert "[" not in caption  # special tokens ([DEC], [SEP], [PAD]) are skipped
    assert len(set(captions)) > 1  # the image reaches the decoder


def test_captions_are_deterministic_and_batching_changes_nothing(captioner, blip_dir):
    images = [_noise(i) for i in range(5)]
    batched = captioner.caption(images)  # batches of 2, 2, 1
    one_by_one = [captioner.caption([image])[0] for image in images]
    reloaded = Captioner.load(blip_dir, batch_size=8, max_new_tokens=12).caption(images)
    assert batched == one_by_one == reloaded


def test_caption_files_writes_only_missing_captions_unless_overwrite(captioner, tmp_path):
    paths = []
    for i in range(3):
        _noise(10 + i).save(tmp_path / f"img{i}.png")
        paths.append(tmp_path / f"img{i}.png")
    (tmp_path / "img1.txt").write_text("my own words\n")
    written = caption_files(captioner, paths)
    assert set(written) == {paths[0], paths[2]}
    assert (tmp_path / "img1.txt").read_text() == "my own words\n"
    for path in (paths[0], paths[2]):
        assert path.with_suffix(".txt").read_text().strip() == captioner.caption([Image.open(path)])[0]
    written = caption_files(captioner, paths, overwrite=True)
    assert set(written) == set(paths)
    assert (tmp_path / "img1.txt").read_text().strip() == captioner.caption([Image.open(paths[1])])[0]


def _copy_blip(blip_dir: Path, dst: Path) -> Path:
    shutil.copytree(blip_dir, dst)
    return dst


@pytest.mark.parametrize(
    "damage, message",
    [
        ("missing", "no such folder"),
        ("no_config", "has no config.json"),
        ("clip_config", "holds a 'clip' model, not BLIP"),
        ("vqa", "not BlipForConditionalGeneration"),
        ("pickle_only", "has no model.safetensors"),
        ("no_processor", "has no preprocessor_config.json"),
        ("bad_weights", "cannot be loaded"),
    ],
)
def test_a_wrong_folder_is_one_line_naming_it(blip_dir, tmp_path, damage, message):
    folder = tmp_path / "model"
    if damage != "missing":
        _copy_blip(blip_dir, folder)
    config = folder / "config.json"
    if damage == "no_config":
        config.unlink()
    elif damage in ("clip_config", "vqa"):
        data = json.loads(config.read_text())
        if damage == "clip_config":
            data["model_type"] = "clip"
        else:
            data["architectures"] = ["BlipForQuestionAnswering"]
        config.write_text(json.dumps(data))
    elif damage == "pickle_only":
        (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    elif damage == "no_processor":
        (folder / "processor_config.json").unlink()
    elif damage == "bad_weights":
        (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError) as info:
        Captioner.load(folder, what="--caption_model")
    text = str(info.value)
    assert message in text and str(folder) in text and "\n" not in text


def test_preprocess_script_captions_the_prepared_images(blip_dir, tmp_path, capsys):
    captioner = Captioner.load(blip_dir)  # the script's default length
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    _noise(1, (60, 40)).save(src / "first.png")
    _noise(2, (40, 40)).save(src / "second.png")
    (src / "second.txt").write_text("kept caption")
    rc, err = run(capsys, "--src", src, "--dst", dst, "--size", 32, "--flip", "--caption_model", blip_dir)
    assert rc == 0, err
    assert (dst / "second.txt").read_text().strip() == "kept caption"
    assert (dst / "second-flipped.txt").read_text().strip() == "kept caption"
    for stem in ("first", "first-flipped"):
        expected = captioner.caption([Image.open(dst / f"{stem}.png")])[0]
        assert (dst / f"{stem}.txt").read_text().strip() == expected
    rc, err = run(capsys, "--src", src, "--dst", dst, "--size", 32, "--caption_model", blip_dir, "--overwrite_captions")
    assert rc == 0, err
    assert (dst / "second.txt").read_text().strip() == captioner.caption([Image.open(dst / "second.png")])[0]


def test_preprocess_script_refuses_a_bad_caption_model_before_writing(tmp_path, capsys):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    _noise(1).save(src / "a.png")
    rc, err = run(capsys, "--src", src, "--dst", dst, "--caption_model", tmp_path / "nowhere")
    assert rc == 2
    assert err.startswith("error: --caption_model") and "no such folder" in err and err.count("\n") == 1
    assert not dst.exists()


def test_invoke_web_refuses_a_bad_caption_model_before_serving(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("invoke_script", ROOT / "scripts" / "invoke.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "config.json").write_text('{"model_type": "clip"}')
    rc = module.main(["--web", "--port", "1", "--caption_model", str(tmp_path / "clip")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: --caption_model") and "not BLIP" in err and err.count("\n") == 1
