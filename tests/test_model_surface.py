"""What LatentDiffusion answers for (its UNet, latent channels, text width, VAE dtype) and how the training code
attaches to it: the model keeps the raw `training:` options, ldm.training parses them and hands in the objective."""

from __future__ import annotations

import logging

import pytest
import torch
from omegaconf import OmegaConf
from sd_helpers import TINY_CONFIG, TINY_V2_CONFIG, load_config
from train_helpers import TINY_FINETUNE

from ldm.errors import ConfigError
from ldm.model_loading import build_model


@pytest.mark.parametrize("config_path", [TINY_CONFIG, TINY_V2_CONFIG], ids=["sd1", "sd2"])
def test_the_model_answers_for_its_parts(config_path):
    cfg = load_config(config_path)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    unet = cfg.model.params.unet_config.params
    assert model.unet is model.model.diffusion_model  # the checkpoint keys stay model.diffusion_model.*
    assert model.latent_channels == unet.in_channels
    assert model.text_width == unet.context_dim == model.cond_stage_model.token_embedding.weight.shape[1]
    assert model.first_stage_dtype == torch.float32
    model.set_network_dtype(torch.bfloat16)
    assert model.first_stage_dtype == torch.bfloat16
    images = torch.rand(1, 3, 16, 16) * 2 - 1  # float32 in: cast to the VAE's dtype on the way
    z = model.get_first_stage_encoding(model.encode_first_stage(images).mode())
    assert z.dtype == torch.bfloat16 and z.shape[1] == model.latent_channels
    assert model.decode_first_stage(z.float()).dtype == torch.bfloat16


def _finetune_model_config(**params):
    cfg = OmegaConf.load(TINY_FINETUNE)
    for key, value in params.items():
        OmegaConf.update(cfg, f"model.params.{key}", value)
    return cfg.model


def test_training_options_stay_raw_in_the_model_until_training_parses_them(caplog):
    from ldm.training.attach import attach_objective, training_config

    config = _finetune_model_config(embedding_reg_weight=0.25, frobnicate=1, **{"training.lr_warmup_steps": 3})
    with caplog.at_level(logging.WARNING, logger="ldm.models.diffusion.ddpm"):
        model = build_model(config)
    warnings = [r.getMessage() for r in caplog.records if "unknown config keys" in r.getMessage()]
    # the paper's top-level training key is known without ldm.models importing ldm.training
    assert len(warnings) == 1 and "frobnicate" in warnings[0] and "embedding_reg_weight" not in warnings[0]
    assert model.training_params["embedding_reg_weight"] == 0.25 and model.training_params["lr_warmup_steps"] == 3
    parsed = training_config(model)
    assert parsed.embedding_reg_weight == 0.25 and parsed.lr_warmup_steps == 3 and parsed.latent_sampling == "once"
    objective = attach_objective(model)
    assert model.objective is objective and objective.config == parsed
    model.setup("fit")  # prepare_networks applies the top-level regulariser weight to the manager
    assert model.embedding_manager.embedding_reg_weight == 0.25


def test_the_training_option_wins_over_the_top_level_one():
    from ldm.training.attach import training_config

    model = build_model(_finetune_model_config(embedding_reg_weight=0.25, **{"training.embedding_reg_weight": 0.5}))
    assert training_config(model).embedding_reg_weight == 0.5


def test_a_bad_training_option_is_refused_when_training_attaches_not_when_the_model_is_built():
    from ldm.training.attach import attach_objective

    model = build_model(_finetune_model_config(**{"training.latent_sampling": "sometimes"}))
    with pytest.raises(ConfigError, match=r"model\.params\.training\.latent_sampling='sometimes' is unknown"):
        attach_objective(model)
    assert model.objective is None


def test_training_without_an_attached_objective_says_how_to_attach_one():
    model = build_model(_finetune_model_config())
    with pytest.raises(RuntimeError, match=r"ldm\.training\.attach\.attach_objective\(model\)"):
        model.setup("fit")
