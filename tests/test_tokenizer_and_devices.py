"""Tokenizer lookup (explicit -> beside the model -> shipped copy), CLIP ids, no network; device/precision choice."""

from __future__ import annotations

import filecmp
import shutil
import socket
from pathlib import Path

import pytest
import torch
from sd_helpers import ROOT, TINY_CONFIG

from ldm.devices import choose_device, choose_dtype
from ldm.errors import ConfigError
from ldm.modules.encoders.tokenizer import SHIPPED_TOKENIZER, load_tokenizer, resolve_tokenizer_dir

SHARED = ROOT.parent / "shared" / "clip_tokenizer"


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the network was touched")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_shipped_copy_has_vocab_and_license():
    for name in ("vocab.json", "merges.txt", "LICENSE"):
        assert (SHIPPED_TOKENIZER / name).is_file()
    if SHARED.is_dir():  # identical to the reference vocabulary where it is available
        for name in ("vocab.json", "merges.txt"):
            assert filecmp.cmp(SHIPPED_TOKENIZER / name, SHARED / name, shallow=False)


def test_default_is_shipped_copy_and_ids_are_clip(no_network):
    assert resolve_tokenizer_dir() == SHIPPED_TOKENIZER
    tok = load_tokenizer()
    ids = tok("a photo of *", padding="max_length", max_length=77, truncation=True).input_ids
    assert ids[:6] == [49406, 320, 1125, 539, 265, 49407] and len(ids) == 77
    assert set(ids[5:]) == {49407} and len(tok) == 49408


def test_explicit_path_wins(tmp_path, no_network):
    explicit = tmp_path / "tok"
    shutil.copytree(SHIPPED_TOKENIZER, explicit)
    beside = tmp_path / "model"
    shutil.copytree(SHIPPED_TOKENIZER, beside / "tokenizer")
    assert resolve_tokenizer_dir(explicit, beside / "sd.ckpt") == explicit
    assert resolve_tokenizer_dir(None, beside / "sd.ckpt") == beside / "tokenizer"
    assert resolve_tokenizer_dir(None, beside) == beside / "tokenizer"  # a model folder
    assert resolve_tokenizer_dir(None, tmp_path / "elsewhere" / "sd.ckpt") == SHIPPED_TOKENIZER


def test_bad_explicit_path_is_one_line_error(tmp_path):
    with pytest.raises(ConfigError) as err:
        resolve_tokenizer_dir(tmp_path / "missing")
    assert "missing" in str(err.value) and "\n" not in str(err.value)


def test_loaded_model_uses_tokenizer_beside_checkpoint(tiny_model, tmp_path, no_network):
    from ldm.model_loading import load_model_from_config

    folder = tmp_path / "mymodel"
    (folder / "tokenizer").mkdir(parents=True)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(SHIPPED_TOKENIZER / name, folder / "tokenizer" / name)
    ckpt = folder / "model.ckpt"
    torch.save({"state_dict": tiny_model.state_dict()}, ckpt)
    model = load_model_from_config(TINY_CONFIG, ckpt)
    tok = model.cond_stage_model.tokenizer
    assert Path(tok.name_or_path) == folder / "tokenizer"
    long_prompt = " ".join(["cat"] * 100)
    ids = model.cond_stage_model.tokenize(long_prompt)
    assert ids.shape == (1, 77) and ids[0, 0] == 49406 and ids[0, -1] == 49407


def test_device_choice():
    assert choose_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert choose_device(None).type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            choose_device("cuda")
    with pytest.raises(ConfigError, match="not a torch device"):
        choose_device("gpu0")


@pytest.mark.parametrize(
    "name,device,dtype",
    [
        ("full", "cpu", torch.float32),
        ("autocast", "cpu", torch.float32),
        ("autocast", "cuda", torch.float16),
        ("bf16", "cpu", torch.bfloat16),
        ("fp16", "mps", torch.float16),
        ("fp32", "cuda", torch.float32),
    ],
)
def test_precision_names(name, device, dtype):
    assert choose_dtype(name, torch.device(device)) == dtype


def test_unknown_precision():
    with pytest.raises(ConfigError, match="precision 'fp8'"):
        choose_dtype("fp8", torch.device("cpu"))
