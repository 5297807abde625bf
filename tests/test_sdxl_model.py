"""The SDXL model side: the UNet's label_emb and per-level depths, LatentDiffusion built from sgm's keys
(network_config, conditioner_config) with its accessors, apply_model with the vector, the VAE kept fp32 under
fp16, and a real-layout SDXL file loading with every key accounted for."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from ldm.errors import ConfigError
from ldm.model_loading import SDXL_POSITION_IDS, load_model_from_config
from ldm.modules.encoders.general_conditioner import GeneralConditioner

SIZES = {"original_size_as_tuple": (64, 64), "crop_coords_top_left": (0, 0), "target_size_as_tuple": (64, 64)}


def _cond(model, captions=("a cat", "")) -> dict[str, torch.Tensor]:
    batch = {key: torch.tensor([value] * len(captions)) for key, value in SIZES.items()}
    with torch.no_grad():
        return model.conditioner({"txt": list(captions), **batch})


def test_tiny_sdxl_has_sdxls_parts_and_accessors(tiny_sdxl_model):
    model = tiny_sdxl_model
    assert model.is_sdxl and model.family == "sdxl" and model.uses_vector
    assert model.cond_stage_model is None and isinstance(model.conditioner, GeneralConditioner)
    assert model.text_module is model.conditioner
    assert model.text_encoders == model.conditioner.text_encoders and len(model.text_encoders) == 2
    assert model.text_width == 96 == model.unet.context_dim
    assert [e.columns for e in model.text_encoders] == [slice(0, 32), slice(32, 96)]
    keys = model.state_dict()
    assert keys["model.diffusion_model.label_emb.0.0.weight"].shape == (128, 112)  # [4 * mc, adm_in_channels]
    assert keys["model.diffusion_model.label_emb.0.2.weight"].shape == (128, 128)
    assert any(k.startswith("conditioner.embedders.0.transformer.text_model.") for k in keys)
    assert any(k.startswith("conditioner.embedders.1.model.transformer.resblocks.") for k in keys)


def test_sd1_and_sd2_models_answer_the_accessors_as_before(tiny_model, tiny_v2_model):
    for model, family, width in ((tiny_model, "sd1", 32), (tiny_v2_model, "sd2", 32)):
        assert model.family == family and not model.is_sdxl and not model.uses_vector
        assert model.conditioner is None and model.text_module is model.cond_stage_model
        assert model.text_encoders == [model.cond_stage_model] and model.text_width == model.cond_stage_model.width
        assert model.text_width == width


def test_unet_levels_without_attention_and_depth_per_level(tiny_sdxl_model):
    unet = tiny_sdxl_model.unet
    # level 0 (ds 1) has no transformer; level 1 depth 1, level 2 depth 2, middle = last level's
    assert len(unet.input_blocks[1]) == 1
    assert len(unet.input_blocks[3][1].transformer_blocks) == 1
    assert len(unet.input_blocks[5][1].transformer_blocks) == 2
    assert len(unet.middle_block[1].transformer_blocks) == 2
    assert all(len(block) == 1 or not hasattr(block[1], "transformer_blocks") for block in unet.output_blocks[-2:])


def test_apply_model_takes_the_vector_and_it_changes_the_output(tiny_sdxl_model):
    model, cond = tiny_sdxl_model, _cond(tiny_sdxl_model)
    x, t = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([10, 700])
    with torch.no_grad():
        out = model.apply_model(x, t, cond)
        other = model.apply_model(x, t, {**cond, "vector": cond["vector"] + 1})
        direct = model.unet(x, t, context=cond["crossattn"], y=cond["vector"])
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert torch.equal(out, direct)
    assert not torch.allclose(out, other)


def test_unet_needs_y_exactly_when_it_has_label_emb(tiny_sdxl_model, tiny_model):
    cond = _cond(tiny_sdxl_model)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([1, 2])
    with pytest.raises(ValueError, match="needs y"):
        tiny_sdxl_model.apply_model(x, t, cond["crossattn"])
    with pytest.raises(ValueError, match="takes no y"):
        tiny_model.unet(x, t, context=torch.randn(2, 77, 32), y=torch.randn(2, 112))


@pytest.mark.parametrize("height, width", [(5, 7), (3, 9)])
def test_latent_sides_that_do_not_halve_evenly_come_back_to_their_size(tiny_sdxl_model, height, width):
    cond = _cond(tiny_sdxl_model)
    x = torch.randn(2, 4, height, width)
    with torch.no_grad():
        out = tiny_sdxl_model.apply_model(x, torch.tensor([10, 700]), cond)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_sd1_unet_at_a_40_px_side_no_longer_crashes(tiny_model):
    x = torch.randn(1, 4, 5, 8)  # 40 x 64 px: the 5-latent side halves to 3, then comes back to 5
    with torch.no_grad():
        out = tiny_model.apply_model(x, torch.tensor([10]), torch.randn(1, 77, tiny_model.text_width))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_default_image_side_of_sdxl_configs(tiny_sdxl_config):
    from sd_helpers import SDXL_CONFIG

    from ldm.image_size import default_image_side

    assert default_image_side(SDXL_CONFIG) == 1024
    assert default_image_side(tiny_sdxl_config) == 64
    node = tiny_sdxl_config.model.copy()
    del node.params["image_size"]  # sgm's own configs carry none: SDXL's 1024
    assert default_image_side(node) == 1024


def test_fp16_keeps_the_sdxl_vae_in_float32(tiny_sdxl_config, caplog):
    from ldm.model_loading import build_model

    model = build_model(tiny_sdxl_config.model, random_init=False)
    with caplog.at_level("INFO", logger="ldm.models.diffusion.ddpm"):
        model.set_network_dtype(torch.float16)
    assert model.first_stage_dtype == torch.float32
    assert {p.dtype for p in model.model.parameters()} == {torch.float16}
    assert {p.dtype for p in model.conditioner.parameters()} == {torch.float16}
    assert "VAE stays float32" in caplog.text
    model.set_network_dtype(torch.bfloat16)  # bf16 does not overflow: the VAE follows
    assert model.first_stage_dtype == torch.bfloat16


def test_sd1_vae_follows_fp16(tiny_config):
    from ldm.model_loading import build_model

    model = build_model(tiny_config.model, random_init=False).set_network_dtype(torch.float16)
    assert model.first_stage_dtype == torch.float16


@pytest.mark.parametrize("with_position_ids", [False, True])
def test_sdxl_file_loads_every_key(tiny_sdxl_config, tiny_sdxl_ckpt, tmp_path, with_position_ids):
    path = tiny_sdxl_ckpt
    if with_position_ids:  # some real files hold CLIP-L's position ids, some not: both load
        sd = load_file(str(tiny_sdxl_ckpt))
        sd[SDXL_POSITION_IDS] = torch.arange(77)[None]
        path = tmp_path / "with-ids.safetensors"
        save_file(sd, str(path))
    model = load_model_from_config(tiny_sdxl_config, path)
    want = load_file(str(tiny_sdxl_ckpt))
    got = model.state_dict()
    assert set(want) <= set(got)
    assert all(torch.equal(got[k], v) for k, v in want.items())
    assert model.conditioner.training is False and not any(p.requires_grad for p in model.conditioner.parameters())


def test_sdxl_file_loads_with_frozen_networks_in_bf16(tiny_sdxl_config, tiny_sdxl_ckpt):
    model = load_model_from_config(tiny_sdxl_config, tiny_sdxl_ckpt, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_exactly_one_text_side(tiny_sdxl_config, tiny_config):
    from ldm.util import instantiate_from_config

    both = tiny_sdxl_config.model.copy()
    both.params.cond_stage_config = tiny_config.model.params.cond_stage_config
    with pytest.raises(ConfigError, match="both of cond_stage_config and conditioner_config"):
        instantiate_from_config(both)
    both.params.unet_config = both.params.network_config
    with pytest.raises(ConfigError, match="both of unet_config and network_config"):
        instantiate_from_config(both)


def _sgm_sd_xl_base_node() -> dict:
    """The model node of Stability's generative-models configs/inference/sd_xl_base.yaml, sgm targets and all."""
    size = {"target": "sgm.modules.encoders.modules.ConcatTimestepEmbedderND", "params": {"outdim": 256}}
    return {
        "target": "sgm.models.diffusion.DiffusionEngine",
        "params": {
            "scale_factor": 0.13025,
            "disable_first_stage_autocast": True,
            "denoiser_config": {
                "target": "sgm.modules.diffusionmodules.denoiser.DiscreteDenoiser",
                "params": {
                    "num_idx": 1000,
                    "scaling_config": {"target": "sgm.modules.diffusionmodules.denoiser_scaling.EpsScaling"},
                    "discretization_config": {
                        "target": "sgm.modules.diffusionmodules.discretizer.LegacyDDPMDiscretization"
                    },
                },
            },
            "network_config": {
                "target": "sgm.modules.diffusionmodules.openaimodel.UNetModel",
                "params": {
                    "adm_in_channels": 2816,
                    "num_classes": "sequential",
                    "use_checkpoint": True,
                    "in_channels": 4,
                    "out_channels": 4,
                    "model_channels": 320,
                    "attention_resolutions": [4, 2],
                    "num_res_blocks": 2,
                    "channel_mult": [1, 2, 4],
                    "num_head_channels": 64,
                    "use_linear_in_transformer": True,
                    "transformer_depth": [1, 2, 10],
                    "context_dim": 2048,
                    "spatial_transformer_attn_type": "softmax-xformers",
                },
            },
            "conditioner_config": {
                "target": "sgm.modules.GeneralConditioner",
                "params": {
                    "emb_models": [
                        {
                            "is_trainable": False,
                            "input_key": "txt",
                            "target": "sgm.modules.encoders.modules.FrozenCLIPEmbedder",
                            "params": {"layer": "hidden", "layer_idx": 11},
                        },
                        {
                            "is_trainable": False,
                            "input_key": "txt",
                            "target": "sgm.modules.encoders.modules.FrozenOpenCLIPEmbedder2",
                            "params": {
                                "arch": "ViT-bigG-14",
                                "version": "laion2b_s39b_b160k",
                                "freeze": True,
                                "layer": "penultimate",
                                "always_return_pooled": True,
                                "legacy": False,
                            },
                        },
                        {"is_trainable": False, "input_key": "original_size_as_tuple", **size},
                        {"is_trainable": False, "input_key": "crop_coords_top_left", **size},
                        {"is_trainable": False, "input_key": "target_size_as_tuple", **size},
                    ]
                },
            },
            "first_stage_config": {
                "target": "sgm.models.autoencoder.AutoencoderKLInferenceWrapper",
                "params": {
                    "embed_dim": 4,
                    "monitor": "val/rec_loss",
                    "ddconfig": {
                        "attn_type": "vanilla-xformers",
                        "double_z": True,
                        "z_channels": 4,
                        "resolution": 256,
                        "in_channels": 3,
                        "out_ch": 3,
                        "ch": 128,
                        "ch_mult": [1, 2, 4, 4],
                        "num_res_blocks": 2,
                        "attn_resolutions": [],
                        "dropout": 0.0,
                    },
                    "lossconfig": {"target": "torch.nn.Identity"},
                },
            },
        },
    }


def _meta_shapes(node) -> dict[str, tuple[int, ...]]:
    from ldm.model_loading import _build_on_meta

    model = _build_on_meta(node)
    return model, {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_stabilitys_sd_xl_base_yaml_builds_the_same_model_as_ours(caplog):
    """sgm's targets go through the alias table; the full-size model is built on the meta device only."""
    from omegaconf import OmegaConf
    from sd_helpers import SDXL_CONFIG, load_config

    from ldm.model_family import SDXL, family_of_config

    with caplog.at_level("WARNING"):
        theirs, their_shapes = _meta_shapes(OmegaConf.create(_sgm_sd_xl_base_node()))
    assert "ignores unknown config keys" not in caplog.text
    ours, our_shapes = _meta_shapes(load_config(SDXL_CONFIG).model)
    assert their_shapes == our_shapes
    assert theirs.parameterization == ours.parameterization == "eps" and theirs.scale_factor == 0.13025
    assert family_of_config(OmegaConf.create(_sgm_sd_xl_base_node())) == SDXL
    assert our_shapes["model.diffusion_model.label_emb.0.0.weight"] == (1280, 2816)
    assert our_shapes["model.diffusion_model.input_blocks.4.1.proj_in.weight"] == (640, 640)  # linear projections
    assert ours.text_width == 2048 and [e.columns for e in ours.text_encoders] == [slice(0, 768), slice(768, 2048)]
    assert ours.conditioner.vector_width == 2816
    unet_params = sum(v.numel() for k, v in ours.state_dict().items() if k.startswith("model.diffusion_model."))
    assert 2.56e9 < unet_params < 2.58e9  # SDXL base's UNet: 2.57B


def test_a_denoiser_that_scales_for_v_makes_a_v_model_and_a_contradiction_is_one_error():
    from omegaconf import OmegaConf

    from ldm.model_loading import _build_on_meta

    node = OmegaConf.create(_sgm_sd_xl_base_node())
    node.params.denoiser_config.params.scaling_config.target = "sgm.modules.diffusionmodules.denoiser_scaling.VScaling"
    assert _build_on_meta(node).parameterization == "v"
    node.params.parameterization = "eps"
    with pytest.raises(ConfigError, match="denoiser_config scales for 'v'"):
        _build_on_meta(node)


@pytest.mark.slow
def test_full_size_sdxl_file_loads_with_every_key(tmp_path):
    """A random sd_xl_base_1.0-layout file (bf16, CLIP-L position ids included, no schedule) loads through our
    loader with sdxl-base-inference.yaml: nothing missing or left over, every weight the file's. ~7 GB file,
    ~8 GB peak: the model is freed before loading, and loading assigns the file's tensors."""
    import gc

    from safetensors import safe_open
    from sd_helpers import SDXL_CONFIG, load_config

    from ldm.model_loading import _build_on_meta

    cfg = load_config(SDXL_CONFIG)
    model = _build_on_meta(cfg.model).set_network_dtype(torch.bfloat16)
    model.to_empty(device="cpu")
    g = torch.Generator().manual_seed(0)
    sd = {}
    for key, value in model.state_dict().items():
        if key.startswith(("model.", "first_stage_model.", "conditioner.")) and value.is_floating_point():
            value.copy_(torch.randn(value.shape, generator=g, dtype=torch.float32).mul_(0.02))
            sd[key] = value
    sd[SDXL_POSITION_IDS] = torch.arange(77)[None]
    path = tmp_path / "sd_xl_base_random.safetensors"
    save_file(sd, str(path))
    keys = set(sd)
    del model, sd
    gc.collect()
    loaded = load_model_from_config(cfg, path, dtype=torch.bfloat16, with_embedding_manager=False)
    got = loaded.state_dict()
    assert loaded.is_sdxl and loaded.first_stage_dtype == torch.bfloat16
    assert keys - {SDXL_POSITION_IDS} <= set(got)
    with safe_open(str(path), framework="pt") as f:
        assert all(torch.equal(got[k], f.get_tensor(k)) for k in keys if k != SDXL_POSITION_IDS)
    del loaded, got
    gc.collect()
