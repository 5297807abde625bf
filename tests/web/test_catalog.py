"""The model catalog: which files under models/ are offered, with which configs, family and size."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ldm.web.catalog import get_model, list_models
from ldm.web.security import WebInputError
from ldm.web.settings import WebSettings

from .payloads import MarkerPayload

REPO = Path(__file__).resolve().parents[2]
TOY_ID = "toy-world/toy-world.safetensors"


def _ids(settings: WebSettings) -> list[str]:
    return [entry.id for entry in list_models(settings)]


def test_toy_world_is_listed_with_its_manifest_configs(web_settings):
    entry = get_model(web_settings, TOY_ID)
    assert entry.weights.resolve() == (REPO / "models" / TOY_ID).resolve()
    assert entry.inference_config.resolve() == (REPO / "configs/toy-world/inference.yaml").resolve()
    assert entry.finetune_config.resolve() == (REPO / "configs/toy-world/finetune.yaml").resolve()
    assert entry.finetune_style_config is None  # the toy world has no style config
    assert (entry.family, entry.size) == ("sd1", 32)


def test_files_that_are_not_models_are_not_listed(web_settings):
    assert _ids(web_settings) == [TOY_ID]  # classifier.safetensors sits in the same folder


def test_xl_toy_and_configs_from_the_checkout_when_the_project_has_none(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "xl").symlink_to(REPO / "models" / "toy-world-xl", target_is_directory=True)
    entry = get_model(WebSettings(root=tmp_path), "xl/toy-world-xl.safetensors")
    assert entry.family == "sdxl"
    assert entry.inference_config == REPO / "configs/toy-world/xl-inference.yaml"
    assert entry.finetune_config == REPO / "configs/toy-world/xl-finetune.yaml"


@pytest.mark.parametrize(
    ("key", "family", "config"),
    [
        ("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight", "sd1", "v1-inference.yaml"),
        ("cond_stage_model.model.token_embedding.weight", "sd2", "v2-inference-v.yaml"),
        ("conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight", "sdxl", None),
    ],
)
def test_a_file_without_config_gets_its_familys_stock_configs(web_root, key, family, config):
    save_file({key: torch.zeros(2, 3)}, web_root / "models" / "mine.safetensors")
    entry = get_model(WebSettings(root=web_root), "mine.safetensors")
    config = config or "sdxl-base-inference.yaml"
    assert entry.family == family
    assert entry.inference_config == web_root / "configs/stable-diffusion" / config
    assert entry.finetune_config.name == f"{config.split('-')[0]}-finetune.yaml"
    assert entry.finetune_style_config.name == f"{config.split('-')[0]}-finetune_style.yaml"
    assert entry.size == {"sd1": 512, "sd2": 768, "sdxl": 1024}[family]


def test_a_sidecar_yaml_wins_and_ckpt_keys_are_read_safely(web_root):
    folder = web_root / "models" / "sub" / "dir"
    folder.mkdir(parents=True)
    torch.save({"state_dict": {"cond_stage_model.transformer.x": torch.zeros(1)}}, folder / "tiny.ckpt")
    shutil.copy(REPO / "tests/fixtures/tiny-v1.yaml", folder / "tiny.yaml")
    entry = get_model(WebSettings(root=web_root), "sub/dir/tiny.ckpt")
    assert entry.inference_config == folder / "tiny.yaml"
    assert entry.finetune_config == web_root / "configs/stable-diffusion/v1-finetune.yaml"
    assert entry.family == "sd1"


def test_a_code_running_ckpt_is_left_out_and_never_run(web_root, tmp_path):
    marker = tmp_path / "pwned"
    torch.save(
        {"state_dict": {"cond_stage_model.transformer.x": MarkerPayload(marker)}}, web_root / "models" / "evil.ckpt"
    )
    assert _ids(WebSettings(root=web_root)) == [TOY_ID]
    assert not marker.exists()


def test_a_broken_sidecar_drops_only_that_model(web_root):
    save_file(
        {"cond_stage_model.model.token_embedding.weight": torch.zeros(1, 1)}, web_root / "models" / "b.safetensors"
    )
    (web_root / "models" / "b.yaml").write_text("model: [unclosed\n")
    assert _ids(WebSettings(root=web_root)) == [TOY_ID]


@pytest.mark.parametrize("model_id", ["nope.safetensors", "../models/toy-world/toy-world.safetensors", "/etc/passwd"])
def test_an_unknown_model_id_is_refused_by_name(web_settings, model_id):
    with pytest.raises(WebInputError, match="is not in models/; pick one from the list"):
        get_model(web_settings, model_id)


def test_no_models_folder_means_an_empty_list(tmp_path):
    assert list_models(WebSettings(root=tmp_path)) == []
