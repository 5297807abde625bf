"""A full-size SDXL base 1.0 diffusers folder with random weights, for running diffusers'
textual_inversion_sdxl.py offline: the same component classes and configs as
stabilityai/stable-diffusion-xl-base-1.0 (unet, vae, text_encoder, text_encoder_2, both tokenizers,
scheduler), saved in fp32 as that repository's default files are. Each network is built on the meta
device and filled once (random init of 2.6B parameters takes many minutes), one network at a time so the
peak is the UNet's 10 GB.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from ldm.fileio import atomic_folder
from ldm.modules.encoders.tokenizer import SHIPPED_TOKENIZER

log = logging.getLogger(__name__)
PathLike = str | Path

# stabilityai/stable-diffusion-xl-base-1.0, unet/config.json
UNET = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    block_out_channels=[320, 640, 1280],
    layers_per_block=2,
    attention_head_dim=[5, 10, 20],
    transformer_layers_per_block=[1, 2, 10],
    cross_attention_dim=2048,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
    flip_sin_to_cos=True,
    freq_shift=0,
)
# vae/config.json
VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[128, 256, 512, 512],
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=1024,
    scaling_factor=0.13025,
    force_upcast=True,
)
# text_encoder/config.json (CLIP ViT-L/14) and text_encoder_2/config.json (OpenCLIP ViT-bigG/14), with the
# legacy special-token ids those files carry.
_TEXT = dict(vocab_size=49408, max_position_embeddings=77, layer_norm_eps=1e-5, bos_token_id=0, eos_token_id=2)
TEXT_ENCODER = dict(
    _TEXT,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    hidden_act="quick_gelu",
    projection_dim=768,
    pad_token_id=1,
)
TEXT_ENCODER_2 = dict(
    _TEXT,
    hidden_size=1280,
    intermediate_size=5120,
    num_hidden_layers=32,
    num_attention_heads=20,
    hidden_act="gelu",
    projection_dim=1280,
    pad_token_id=1,
)
# scheduler/scheduler_config.json; the example reads it with DDPMScheduler.from_pretrained.
SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "interpolation_type": "linear",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "clip_sample": False,
    "use_karras_sigmas": False,
}
MODEL_INDEX = {
    "_class_name": "StableDiffusionXLPipeline",
    "force_zeros_for_empty_prompt": True,
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
}


@torch.no_grad()
def fill_random(module: torch.nn.Module, g: torch.Generator) -> torch.nn.Module:
    """Materialise a meta-built module on the CPU with fan-in scaled random weights (activations stay in
    range, as trained weights keep them): norms 1, biases 0, embeddings N(0, 0.02)."""
    module.to_empty(device="cpu")
    for name, p in module.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "bias":
            p.zero_()
        elif p.ndim == 1:
            p.fill_(1.0)
        elif "embedding" in name:
            p.normal_(0.0, 0.02, generator=g)
        else:
            p.normal_(0.0, 1.0 / math.sqrt(p[0].numel()), generator=g)
    for name, b in module.named_buffers():
        if not name.endswith("position_ids"):
            raise ValueError(f"fill_random: no rule for buffer {name}")
        b.copy_(torch.arange(b.shape[-1]).expand_as(b))
    return module.eval()


def _build(part: str) -> Any:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with torch.device("meta"):
        if part == "unet":
            return UNet2DConditionModel(**UNET)
        if part == "vae":
            return AutoencoderKL(**VAE)
        if part == "text_encoder":
            return CLIPTextModel(CLIPTextConfig(**TEXT_ENCODER))
        return CLIPTextModelWithProjection(CLIPTextConfig(**TEXT_ENCODER_2))


def _tokenizer(dest: Path, pad_token: str) -> None:
    """The shipped CLIP tokenizer; SDXL's tokenizer_2 pads with "!" (id 0) where tokenizer pads with EOS."""
    shutil.copytree(SHIPPED_TOKENIZER, dest)
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        data = json.loads((dest / name).read_text())
        data["pad_token"] = pad_token
        (dest / name).write_text(json.dumps(data, indent=2))


def _write(tmp: Path, seed: int) -> None:
    import diffusers

    g = torch.Generator().manual_seed(seed)
    for part in ("text_encoder", "text_encoder_2", "vae", "unet"):
        log.info("random SDXL %s -> %s", part, tmp / part)
        module = fill_random(_build(part), g)
        module.save_pretrained(tmp / part)
        del module
    _tokenizer(tmp / "tokenizer", "<|endoftext|>")
    _tokenizer(tmp / "tokenizer_2", "!")
    (tmp / "scheduler").mkdir()
    version = {"_diffusers_version": diffusers.__version__}
    (tmp / "scheduler" / "scheduler_config.json").write_text(json.dumps({**SCHEDULER, **version}, indent=2))
    (tmp / "model_index.json").write_text(json.dumps({**MODEL_INDEX, **version}, indent=2))


def random_sdxl_folder(folder: PathLike, seed: int = 0) -> Path:
    """Write (once) a full-size SDXL diffusers folder of random weights; a finished folder is reused, and an
    interrupted write leaves nothing behind that could be taken for one."""
    folder = Path(folder)
    if (folder / "model_index.json").is_file():
        return folder
    with atomic_folder(folder) as tmp:
        _write(tmp, seed)
    return folder


def _cast_copy(folder: Path, dest: Path, dtype: torch.dtype) -> None:
    """The folder with every float tensor in `dtype`, streamed one tensor at a time (the fp32 UNet alone is
    10 GB; this keeps the peak at the cast copy's size)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    for src in folder.rglob("*"):
        out = dest / src.relative_to(folder)
        if src.is_dir():
            out.mkdir(parents=True, exist_ok=True)
        elif src.suffix != ".safetensors":
            shutil.copy2(src, out)
        else:
            tensors = {}
            with safe_open(str(src), framework="pt") as f:
                for key in f.keys():
                    value = f.get_tensor(key)
                    tensors[key] = value.to(dtype) if value.is_floating_point() else value
            save_file(tensors, str(out))
            del tensors


def checkpoint_from_folder(folder: PathLike, path: PathLike, dtype: torch.dtype = torch.bfloat16) -> Path:
    """Write (once) the weights of an SDXL diffusers folder as one checkpoint in the sgm key layout, as
    sd_xl_base_1.0.safetensors holds them (our side of the benchmark loads that, as users do)."""
    from safetensors.torch import save_file

    from ldm.diffusers_folder import read_diffusers_folder
    from ldm.fileio import atomic_path

    path = Path(path)
    if path.is_file():
        return path
    log.info("SDXL diffusers folder %s -> checkpoint %s", folder, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".cast-", dir=path.parent) as tmp:
        _cast_copy(Path(folder), Path(tmp), dtype)
        state = read_diffusers_folder(tmp)
    state = {k: v.contiguous() for k, v in state.items()}
    with atomic_path(path) as tmp_file:
        save_file(state, str(tmp_file))
    return path
