"""Read a diffusers-format SD 1.x/2.x/SDXL model folder and rename its weights to our checkpoint layout.

A diffusers folder splits the model into `unet/`, `vae/`, `text_encoder/` (+ `tokenizer/`,
`model_index.json`). Each part's keys are mapped explicitly, module by module, from the block structure
its own keys reveal (levels, res blocks per level, which levels have attention); every source key must
be used exactly once and every expected module must appear, so nothing is dropped or invented. The
result is then checked key by key and shape by shape against the built model by `check_state_dict`.
The UNet and VAE rename the same way for both families (SD 2.x's linear projections are plain renames);
an SD 2.x text encoder (exact GELU) goes to the OpenCLIP layout (diffusers_sd2.py). An SDXL folder
(`text_encoder_2/`, StableDiffusionXLPipeline) is read by diffusers_sdxl.py with these same renames.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import torch

from ldm.diffusers_sd2 import is_open_clip_text_encoder, text_encoder_to_open_clip
from ldm.errors import CheckpointError
from ldm.safe_load import read_state_dict

log = logging.getLogger(__name__)

PathLike = str | Path
Tensors = dict[str, torch.Tensor]

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer.text_model."
PARTS = {
    "unet": ("diffusion_pytorch_model",),
    "vae": ("diffusion_pytorch_model",),
    "text_encoder": ("model", "pytorch_model"),
    "text_encoder_2": ("model", "pytorch_model"),
}
SD_PARTS = ("unet", "vae", "text_encoder")

# How each kind of module names its parameters: diffusers sub-module -> CompVis sub-module.
SAME = "same"
UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
VAE_RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "conv_shortcut": "nin_shortcut"}
# diffusers < 0.14 saved the VAE attention as query/key/value/proj_attn; newer as to_q/to_k/to_v/to_out.0.
VAE_ATTENTION = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
    "query": "q",
    "key": "k",
    "value": "v",
    "proj_attn": "proj_out",
}
# UNets of SDXL's sizes (2048 = CLIP-L + bigG, 1280 = the refiner's bigG) in a folder that is not SDXL's.
OTHER_FAMILIES = {1280: "SDXL refiner", 2048: "SDXL"}


def is_diffusers_folder(path: PathLike) -> bool:
    """A folder with model_index.json, or with one of the diffusers component subfolders."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        return False
    return (folder / "model_index.json").is_file() or any((folder / part).is_dir() for part in PARTS)


def read_diffusers_folder(path: PathLike) -> Tensors:
    """All weights of a diffusers SD 1.x/2.x folder, renamed to `model.diffusion_model.*`,
    `first_stage_model.*` and `cond_stage_model.transformer.text_model.*` (SD 1.x) or
    `cond_stage_model.model.*` (SD 2.x, q/k/v stacked: fewer keys than the folder's); an SDXL folder's
    to sgm's `conditioner.embedders.{0,1}.*` (ldm.diffusers_sdxl)."""
    folder = Path(path).expanduser()
    from ldm.diffusers_sdxl import is_sdxl_folder, read_sdxl_folder  # it builds on this module

    if is_sdxl_folder(folder):
        return read_sdxl_folder(folder)
    missing = [part for part in SD_PARTS if not (folder / part).is_dir()]
    if missing:
        raise CheckpointError(
            f"diffusers folder {folder} has no {', '.join(p + '/' for p in missing)} subfolder; "
            "pass a complete diffusers folder (unet/, vae/, text_encoder/) or a .ckpt file"
        )
    unet_config = _read_json(folder / "unet" / "config.json")
    check_unet_config(unet_config, folder)
    out: Tensors = {}
    open_clip = is_open_clip_text_encoder(folder)
    text_encoder = text_encoder_to_open_clip if open_clip else text_encoder_to_ldm
    for part, convert in (("unet", unet_to_ldm), ("vae", vae_to_ldm), ("text_encoder", text_encoder)):
        sd = read_part(folder / part)
        converted = convert(sd, source=f"{folder}/{part}")
        if len(converted) != len(sd) and not (open_clip and part == "text_encoder"):  # one key per tensor
            raise CheckpointError(
                f"{folder}/{part}: {len(sd)} tensors became {len(converted)} keys; the folder's key layout is not SD's"
            )
        out.update(converted)
    if unet_config:
        _check_unet_matches_config(out, unet_config, folder)
    log.info("converted diffusers folder %s: %d tensors", folder, len(out))
    return out


# -- files ---------------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); re-save the diffusers folder") from None
    return data if isinstance(data, dict) else {}


def weight_files(part_dir: Path) -> list[Path]:
    """The file(s) holding one component's weights: full precision before the fp16 variant, safetensors
    before pickles, a sharded index before nothing."""
    for variant in ("", ".fp16"):
        for ext in (".safetensors", ".bin"):
            for stem in PARTS[part_dir.name]:
                single = part_dir / f"{stem}{variant}{ext}"
                if single.is_file():
                    return [single]
                index = part_dir / f"{stem}{variant}{ext}.index.json"
                if index.is_file():
                    shards = sorted(set(_read_json(index).get("weight_map", {}).values()))
                    if not shards:
                        raise CheckpointError(f"{index} lists no shards; re-save the diffusers folder")
                    return [part_dir / name for name in shards]
    found = sorted(p.name for p in part_dir.iterdir()) if part_dir.is_dir() else []
    names = " or ".join(f"{stem}.safetensors/.bin" for stem in PARTS[part_dir.name])
    raise CheckpointError(
        f"{part_dir} has no {names} (found: {', '.join(found[:5]) or 'nothing'}); pass a complete diffusers folder"
    )


def read_part(part_dir: Path) -> Tensors:
    """One component's tensors; pickled `.bin` files go through the safe loader like any checkpoint."""
    sd: Tensors = {}
    for path in weight_files(part_dir):
        if not path.is_file():
            raise CheckpointError(f"{path} is listed in the shard index but missing; re-download the folder")
        sd.update(read_state_dict(path))
    return sd


# -- validation ----------------------------------------------------------------------------------------
def check_unet_config(config: dict[str, Any], folder: Path) -> None:
    """Refuse UNets of other model families by their config, before any weights are read."""
    cross = config.get("cross_attention_dim")
    family = OTHER_FAMILIES.get(cross) if isinstance(cross, int) else None
    if config.get("addition_embed_type") or isinstance(cross, (list, tuple)):
        family = "SDXL"
    if family:
        raise CheckpointError(
            f"diffusers folder {folder} holds a {family} UNet (cross_attention_dim {cross}) but is not an SDXL "
            "pipeline (no text_encoder_2/, model_index.json not StableDiffusionXLPipeline); pass a complete "
            "SD 1.x/2.x or SDXL diffusers folder"
        )


def _check_unet_matches_config(sd: Tensors, config: dict[str, Any], folder: Path) -> None:
    """The weights must agree with unet/config.json: a mismatch means a hand-edited or mixed folder."""
    checks = (
        ("block_out_channels", "input_blocks.0.0.weight", 0, lambda v: v[0] if v else None),
        ("in_channels", "input_blocks.0.0.weight", 1, lambda v: v),
        ("out_channels", "out.2.weight", 0, lambda v: v),
    )
    for name, key, dim, pick in checks:
        want = pick(config[name]) if name in config else None
        tensor = sd.get(UNET_PREFIX + key)
        if want is not None and tensor is not None and tensor.shape[dim] != want:
            raise CheckpointError(
                f"{folder}/unet: config.json says {name} {config[name]} but the weights have "
                f"{tensor.shape[dim]}; re-save the diffusers folder"
            )


def _indices(keys: list[str], pattern: str) -> list[int]:
    return sorted({int(m.group(1)) for k in keys if (m := re.match(pattern, k))})


def _levels(keys: list[str], blocks: str, source: str) -> tuple[int, int, list[bool]]:
    """(levels, res blocks per level, attention per level) of `encoder.down_blocks`-style keys."""
    levels = _indices(keys, rf"{re.escape(blocks)}\.(\d+)\.")
    if not levels or levels != list(range(len(levels))):
        raise CheckpointError(
            f"{source}: no {blocks}.N keys (found {', '.join(keys[:3])}); is this an SD diffusers folder?"
        )
    layers = len(_indices(keys, rf"{re.escape(blocks)}\.0\.resnets\.(\d+)\."))
    attention = [any(k.startswith(f"{blocks}.{i}.attentions.") for k in keys) for i in levels]
    return len(levels), layers, attention


# -- mapping -------------------------------------------------------------------------------------------
def _rename(sd: Tensors, modules: list[tuple[str, str, Any]], prefix: str, source: str) -> Tensors:
    """Rename every key of `sd` through `modules` [(diffusers module, CompVis module, leaf map)]; each key
    must fall under exactly one module and each module must receive at least one key."""
    table = {theirs: (ours, leaves) for theirs, ours, leaves in modules}
    used: set[str] = set()
    out: Tensors = {}
    for key, value in sd.items():
        parts = key.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            module = ".".join(parts[:cut])
            if module in table:
                break
        else:
            raise CheckpointError(
                f"{source}: unexpected key '{key}'; the folder is not an SD 1.x/2.x model "
                "(or another diffusers version); pass an SD 1.x/2.x folder or .ckpt"
            )
        ours, leaves = table[module]
        leaf_module, _, param = ".".join(parts[cut:]).rpartition(".")
        if leaves is not SAME:
            if leaf_module not in leaves:
                raise CheckpointError(f"{source}: unexpected key '{key}'; pass an SD 1.x/2.x diffusers folder")
            leaf_module = leaves[leaf_module]
            if leaves is VAE_ATTENTION and param == "weight" and value.dim() == 2:
                value = value[:, :, None, None]  # diffusers' Linear [C, C] is CompVis' 1x1 conv [C, C, 1, 1]
        target = prefix + ".".join(p for p in (ours, leaf_module, param) if p)
        if target in out:
            raise CheckpointError(
                f"{source}: two keys map to '{target}' (the second is '{key}'); "
                "the folder mixes layouts; re-save it with one diffusers version"
            )
        out[target] = value
        used.add(module)
    unused = [theirs for theirs in table if theirs not in used]
    if unused:
        raise CheckpointError(
            f"{source}: {len(unused)} modules have no weights, first {', '.join(unused[:3])}; "
            "the folder is incomplete or not SD 1.x/2.x"
        )
    return out


def unet_modules(
    levels: int, layers: int, attention: list[bool], label_emb: bool = False
) -> list[tuple[str, str, Any]]:
    """diffusers UNet2DConditionModel modules -> CompVis UNetModel modules, for the SD block pattern (any
    levels with or without attention; the transformer depth inside an attention module keeps its names).
    `label_emb`: SDXL's vector embedding (diffusers' `add_embedding`, a TimestepEmbedding MLP)."""
    m: list[tuple[str, str, Any]] = [
        ("conv_in", "input_blocks.0.0", SAME),
        ("time_embedding.linear_1", "time_embed.0", SAME),
        ("time_embedding.linear_2", "time_embed.2", SAME),
        ("conv_norm_out", "out.0", SAME),
        ("conv_out", "out.2", SAME),
        ("mid_block.resnets.0", "middle_block.0", UNET_RESNET),
        ("mid_block.attentions.0", "middle_block.1", SAME),
        ("mid_block.resnets.1", "middle_block.2", UNET_RESNET),
    ]
    if label_emb:
        m += [("add_embedding.linear_1", "label_emb.0.0", SAME), ("add_embedding.linear_2", "label_emb.0.2", SAME)]
    for i in range(levels):  # input_blocks: conv_in, then per level `layers` res(+attn) blocks and a downsampler
        for j in range(layers):
            block = 1 + i * (layers + 1) + j
            m.append((f"down_blocks.{i}.resnets.{j}", f"input_blocks.{block}.0", UNET_RESNET))
            if attention[i]:
                m.append((f"down_blocks.{i}.attentions.{j}", f"input_blocks.{block}.1", SAME))
        if i < levels - 1:
            m.append((f"down_blocks.{i}.downsamplers.0.conv", f"input_blocks.{(i + 1) * (layers + 1)}.0.op", SAME))
    for i in range(levels):  # output_blocks run deepest level first, with one extra res block per level
        has_attention = attention[levels - 1 - i]
        for j in range(layers + 1):
            block = i * (layers + 1) + j
            m.append((f"up_blocks.{i}.resnets.{j}", f"output_blocks.{block}.0", UNET_RESNET))
            if has_attention:
                m.append((f"up_blocks.{i}.attentions.{j}", f"output_blocks.{block}.1", SAME))
        if i < levels - 1:  # the upsampler follows the last res block (and its attention, if any)
            last = i * (layers + 1) + layers
            m.append(
                (f"up_blocks.{i}.upsamplers.0.conv", f"output_blocks.{last}.{2 if has_attention else 1}.conv", SAME)
            )
    return m


def vae_modules(levels: int, layers: int) -> list[tuple[str, str, Any]]:
    """diffusers AutoencoderKL modules -> CompVis AutoencoderKL modules (the decoder's `up` is numbered
    from the lowest resolution in diffusers and from the highest in CompVis)."""
    m: list[tuple[str, str, Any]] = [("quant_conv", "quant_conv", SAME), ("post_quant_conv", "post_quant_conv", SAME)]
    for side in ("encoder", "decoder"):
        m += [
            (f"{side}.conv_in", f"{side}.conv_in", SAME),
            (f"{side}.conv_out", f"{side}.conv_out", SAME),
            (f"{side}.conv_norm_out", f"{side}.norm_out", SAME),
            (f"{side}.mid_block.resnets.0", f"{side}.mid.block_1", VAE_RESNET),
            (f"{side}.mid_block.attentions.0", f"{side}.mid.attn_1", VAE_ATTENTION),
            (f"{side}.mid_block.resnets.1", f"{side}.mid.block_2", VAE_RESNET),
        ]
    for i in range(levels):
        m += [
            (f"encoder.down_blocks.{i}.resnets.{j}", f"encoder.down.{i}.block.{j}", VAE_RESNET) for j in range(layers)
        ]
        if i < levels - 1:
            m.append((f"encoder.down_blocks.{i}.downsamplers.0.conv", f"encoder.down.{i}.downsample.conv", SAME))
        up = levels - 1 - i
        m += [
            (f"decoder.up_blocks.{i}.resnets.{j}", f"decoder.up.{up}.block.{j}", VAE_RESNET) for j in range(layers + 1)
        ]
        if i < levels - 1:
            m.append((f"decoder.up_blocks.{i}.upsamplers.0.conv", f"decoder.up.{up}.upsample.conv", SAME))
    return m


def unet_to_ldm(sd: Tensors, source: str = "unet") -> Tensors:
    keys = list(sd)
    levels, layers, attention = _levels(keys, "down_blocks", source)
    label_emb = any(k.startswith("add_embedding.") for k in keys)
    return _rename(sd, unet_modules(levels, layers, attention, label_emb), UNET_PREFIX, source)


def vae_to_ldm(sd: Tensors, source: str = "vae") -> Tensors:
    levels, layers, _ = _levels(list(sd), "encoder.down_blocks", source)
    return _rename(sd, vae_modules(levels, layers), VAE_PREFIX, source)


def text_encoder_to_ldm(sd: Tensors, source: str = "text_encoder", prefix: str = TEXT_PREFIX) -> Tensors:
    """transformers 4 saves CLIPTextModel keys as `text_model.*`, transformers 5 without that level.
    `prefix`: SD 1.x's `cond_stage_model.transformer.text_model.` or SDXL's CLIP-L one."""
    out: Tensors = {}
    for key, value in sd.items():
        bare = key[len("text_model.") :] if key.startswith("text_model.") else key
        if not bare.startswith(("embeddings.", "encoder.", "final_layer_norm.")):
            raise CheckpointError(
                f"{source}: unexpected key '{key}'; SD 1.x uses a plain CLIPTextModel "
                "text encoder; pass an SD 1.x diffusers folder"
            )
        if prefix + bare in out:
            raise CheckpointError(
                f"{source}: '{bare}' appears with and without the text_model. prefix; re-save the text encoder"
            )
        out[prefix + bare] = value
    return out
