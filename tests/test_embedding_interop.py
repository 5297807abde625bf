"""Files as the other tools write them (built here by hand, not by our writer) read with the same vectors:
diffusers' example `learned_embeds.safetensors`, an A1111 `.pt`, a kohya `emb_params` file, an A1111 PNG."""

from __future__ import annotations

import base64
import json

import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from safetensors.torch import save_file

from ldm.embeddings import read_embedding_file

VEC = torch.randn(3, 768, generator=torch.Generator().manual_seed(0))


def test_diffusers_example_learned_embeds(tmp_path):
    path = tmp_path / "learned_embeds.safetensors"
    save_file({"<cat-toy>": VEC[0].clone()}, str(path))  # the example script saves one [768] row per token
    (term,) = read_embedding_file(path)
    assert term.name == "<cat-toy>" and torch.equal(term.vectors, VEC[:1])


def test_a1111_pt(tmp_path):
    path = tmp_path / "mystyle.pt"
    torch.save(
        {
            "string_to_token": {"*": 265},
            "string_to_param": {"*": VEC.clone()},
            "name": "mystyle",
            "step": 1500,
            "sd_checkpoint": "abcd1234",
            "sd_checkpoint_name": "v1-5-pruned-emaonly",
        },
        path,
    )
    (term,) = read_embedding_file(path)
    assert term.name == "mystyle" and term.step == 1500 and torch.equal(term.vectors, VEC)


def test_kohya_emb_params(tmp_path):
    path = tmp_path / "kohya-word.safetensors"
    save_file({"emb_params": VEC[:2].clone()}, str(path), metadata={"ss_network_module": "textual_inversion"})
    (term,) = read_embedding_file(path)
    assert term.name == "kohya-word" and torch.equal(term.vectors, VEC[:2])


def test_a1111_png(tmp_path):
    data = {
        "string_to_token": {"*": 265},
        "string_to_param": {"*": {"TORCHTENSOR": VEC[:2].tolist()}},
        "name": "pngword",
        "step": 800,
        "sd_checkpoint": None,
        "sd_checkpoint_name": None,
    }
    info = PngInfo()
    info.add_text("sd-ti-embedding", base64.b64encode(json.dumps(data).encode()).decode())
    path = tmp_path / "pngword.png"
    Image.new("RGB", (64, 64), "white").save(path, pnginfo=info)
    (term,) = read_embedding_file(path)
    assert term.name == "pngword" and torch.equal(term.vectors, VEC[:2])
