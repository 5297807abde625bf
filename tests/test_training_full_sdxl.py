"""Slow: main.py trains a word on the full-size SDXL architecture (random weights, configs/stable-diffusion/
sdxl-finetune.yaml as shipped, frozen networks in bf16, 256 px buckets), both text encoders' parts moving
from the init word's rows: `pytest -m slow`. The run needs about 12 GB."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest
import torch
from sd_helpers import ROOT, load_config
from train_helpers import make_mixed_photos, only_run_dir, run_main

pytestmark = pytest.mark.slow

SDXL_FINETUNE = ROOT / "configs" / "stable-diffusion" / "sdxl-finetune.yaml"
FILE_PREFIXES = ("model.diffusion_model.", "first_stage_model.", "conditioner.")  # what SDXL files hold
TEXT_KEYS = ("conditioner.embedders.0", "conditioner.embedders.1")  # CLIP-L, OpenCLIP bigG


def _random_tensor(meta: torch.Tensor, is_norm: bool, g: torch.Generator) -> torch.Tensor:
    """Random but meaningful: weights ~ N(0, 1/fan_in), norm scales ~ 1, small biases (fp32, made one by one)."""
    if is_norm:
        return 1 + 0.1 * torch.randn(meta.shape, generator=g)
    if meta.dim() >= 2:
        return torch.randn(meta.shape, generator=g) / math.sqrt(meta[0].numel())
    return 0.05 * torch.randn(meta.shape, generator=g)


@torch.no_grad()
def write_random_sdxl(path: Path, config: Path = SDXL_FINETUNE, seed: int = 0) -> None:
    """A full-size random SDXL .safetensors in the real layout (fp16, as sd_xl_base_1.0 ships), streamed one
    tensor at a time (header first, from the meta shapes): never more than one tensor in memory, where a
    state dict of the 3.5B parameters would take 7 GB before it is written."""
    from ldm.model_loading import _build_on_meta

    model = _build_on_meta(load_config(config).model)
    norms = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm))}
    tensors = {
        n: t for n, t in model.state_dict().items() if n.startswith(FILE_PREFIXES) and t.is_floating_point()
    }  # no position ids: real SDXL files may lack them
    header, offset = {}, 0
    for name, meta in tensors.items():
        size = meta.numel() * 2
        header[name] = {"dtype": "F16", "shape": list(meta.shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    g = torch.Generator().manual_seed(seed)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for name, meta in tensors.items():
            f.write(_random_tensor(meta, name in norms, g).half().numpy().tobytes())


@pytest.fixture(scope="module")
def full_sdxl_ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sdxl") / "sd_xl_base_1.0.safetensors"
    write_random_sdxl(path)
    return path


def test_full_size_sdxl_trains_both_encoders_parts_at_256px_in_bf16(full_sdxl_ckpt, tmp_path):
    from safetensors import safe_open

    from ldm.embeddings import read_embedding_file
    from ldm.modules.encoders.tokenizer import load_tokenizer

    data = make_mixed_photos(tmp_path / "cat")
    logs = tmp_path / "logs"
    result = run_main(
        [
            *("--base", str(SDXL_FINETUNE), "-t", "--actual_resume", str(full_sdxl_ckpt)),
            *("-n", "full-sdxl", "--data_root", str(data), "--init_word", "cat", "-l", str(logs)),
            *("--max_steps", "2", "--precision", "bf16"),
            "data.params.num_workers=0",
            "data.params.train.params.size=256",  # buckets of at most 256 x 256 px, sides 128..512
            "lightning.callbacks.image_logger.params.disabled=true",
        ],
        timeout=2400,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoints = only_run_dir(logs) / "checkpoints"
    (path,) = [p for p in checkpoints.glob("embeddings.*") if p.suffix != ".tmp"]
    (term,) = read_embedding_file(path)
    assert term.step == 2 and term.vectors.shape == (1, 2048) and torch.isfinite(term.vectors).all()

    # Two AdamW steps of lr 5e-3 leave each part next to its own encoder's row of "cat", far from others.
    (cat,) = load_tokenizer()("cat", add_special_tokens=False)["input_ids"]
    with safe_open(str(full_sdxl_ckpt), "pt") as f:
        tables = [
            (slice(0, 768), f.get_tensor(f"{TEXT_KEYS[0]}.transformer.text_model.embeddings.token_embedding.weight")),
            (slice(768, 2048), f.get_tensor(f"{TEXT_KEYS[1]}.model.token_embedding.weight")),
        ]
    for columns, rows in tables:
        part, rows = term.vectors[0, columns], rows.float()
        moved = (part - rows[cat]).abs().max()
        assert 0 < moved < 0.05, (columns, moved)
        others = torch.cat([rows[:cat], rows[cat + 1 :]])
        assert (others - part).abs().amax(dim=1).min() > 0.05
