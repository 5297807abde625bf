"""Build a model from its config and load an SD checkpoint into it, explicitly and checked.

The file's keys are matched to the model's one by one: the known extras of SD files are handled by
name (EMA copy, the CLIP `position_ids` buffer, the noise schedule, VAE training-loss weights) and any
other missing, unexpected or mis-shaped key is an error naming the component, never `strict=False`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from ldm.diffusers_folder import is_diffusers_folder, read_diffusers_folder
from ldm.diffusers_sd2 import check_prediction_type, fit_text_config
from ldm.diffusers_sdxl import fit_sdxl_text_config
from ldm.errors import CheckpointError, ConfigError
from ldm.model_family import check_family, family_of_state_dict
from ldm.models.diffusion.schedule import SCHEDULE_BUFFERS
from ldm.safe_load import read_state_dict
from ldm.util import instantiate_from_config

log = logging.getLogger(__name__)

COMPONENTS = (
    ("model.diffusion_model.", "UNet (model.diffusion_model)"),
    ("first_stage_model.", "VAE (first_stage_model)"),
    ("cond_stage_model.", "text encoder (cond_stage_model)"),
    ("conditioner.embedders.0.", "CLIP-L text encoder (conditioner.embedders.0)"),
    ("conditioner.embedders.1.", "OpenCLIP bigG text encoder (conditioner.embedders.1)"),
    ("conditioner.", "text encoders (conditioner)"),
    ("embedding_manager.", "embedding manager"),
)
# The CLIP position ids buffer: some files hold it, some not (SD 1.x, SDXL's CLIP-L); rebuilt, never read.
POSITION_IDS = "cond_stage_model.transformer.text_model.embeddings.position_ids"
SDXL_POSITION_IDS = "conditioner.embedders.0.transformer.text_model.embeddings.position_ids"
EMA_PREFIX = "model_ema."
IGNORED_PREFIXES = ("first_stage_model.loss.",)  # VAE training loss (LPIPS/discriminator) some files carry


def component_of(key: str) -> str:
    for prefix, name in COMPONENTS:
        if key.startswith(prefix):
            return name
    return "LatentDiffusion"


def _build_on_meta(model_config: Mapping[str, Any]) -> nn.Module:
    # The embedding manager is not part of an SD file; load_model_from_config attaches it after loading.
    model_config = OmegaConf.create(OmegaConf.to_container(OmegaConf.create(model_config), resolve=True))
    model_config.params.pop("personalization_config", None)
    with torch.device("meta"):
        return instantiate_from_config(model_config)


def build_model(model_config: Mapping[str, Any], random_init: bool = True) -> nn.Module:
    """Instantiate `model_config`; with random_init=False, skip weight initialisation entirely
    (build on the meta device, then allocate) because a checkpoint is about to overwrite every weight;
    that SD-only build leaves out the embedding manager."""
    if random_init:
        return instantiate_from_config(model_config)
    model = _build_on_meta(model_config)
    model.to_empty(device="cpu")
    for module in model.modules():
        if hasattr(module, "reset_buffers"):
            module.reset_buffers()
    return model


def _ema_to_model_keys(model_keys: set[str]) -> dict[str, str]:
    """LitEma stores `model.diffusion_model.a.b` as `model_ema.diffusion_modela b` without dots."""
    return {EMA_PREFIX + k[len("model.") :].replace(".", ""): k for k in model_keys if k.startswith("model.")}


def prepare_state_dict(
    model: nn.Module, sd: Mapping[str, torch.Tensor], use_ema: bool = False, source: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """Map a file's keys onto the model's: take or drop the EMA copy, drop known extras, keep our schedule."""
    expected = set(model.state_dict().keys())
    out: dict[str, torch.Tensor] = {}
    ema: dict[str, torch.Tensor] = {}
    dropped = 0
    for key, value in sd.items():
        if key.startswith(EMA_PREFIX):
            ema[key] = value
        elif key in (POSITION_IDS, SDXL_POSITION_IDS) or key.startswith(IGNORED_PREFIXES):
            dropped += 1
        elif key in SCHEDULE_BUFFERS:
            _check_schedule(model, key, value, source)
        else:
            out[key] = value
    if use_ema:
        if not ema:
            raise CheckpointError(f"{source} has no model_ema.* weights; load it without use_ema")
        mapping = _ema_to_model_keys(expected)
        taken = {mapping[k]: v for k, v in ema.items() if k in mapping}
        log.info("using the EMA weights of %s for %d UNet tensors", source, len(taken))
        out.update(taken)
    elif ema:
        log.info(
            "%s carries EMA weights (%d tensors); using the non-EMA ones (ask use_ema to switch)", source, len(ema)
        )
    if dropped:
        log.debug("dropped %d known extra keys of %s", dropped, source)
    for key in SCHEDULE_BUFFERS:
        out[key] = getattr(model, key) if hasattr(model, key) else None
    return {k: v for k, v in out.items() if v is not None}


def _check_schedule(model: nn.Module, key: str, value: torch.Tensor, source: str) -> None:
    ours = getattr(model, key, None)
    if ours is None or ours.shape != value.shape:
        raise CheckpointError(
            f"{source}: noise schedule '{key}' has shape {tuple(value.shape)}, the config gives "
            f"{tuple(ours.shape) if ours is not None else 'none'}; pass the matching --config"
        )
    # fp16 files store the schedule with ~1e-3 relative error; anything larger is another schedule.
    if not torch.allclose(value.float(), ours.float(), rtol=5e-3, atol=1e-5):
        log.warning("%s: its '%s' differs from the config's schedule; the config's is used", source, key)


def check_state_dict(model: nn.Module, sd: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise one line naming the component and the first offending keys if `sd` does not fit `model`."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    shapes = [k for k in sd if k in expected and tuple(sd[k].shape) != expected[k]]
    if not (missing or unexpected or shapes):
        return
    family = family_of_state_dict(expected)
    kind = f"an {family}" if family else "a Stable Diffusion"
    config_of = f" for this {family} config" if family else ""
    if not any(k in expected for k in sd if k not in SCHEDULE_BUFFERS):
        raise CheckpointError(
            f"{source} does not look like a Stable Diffusion checkpoint{config_of}: none of the model's "
            f"{len(expected)} keys are in it (first keys: {', '.join(list(sd)[:3])})"
        )
    parts = []
    if shapes:
        k = shapes[0]
        parts.append(
            f"{component_of(k)}: '{k}' expected {list(expected[k])} got {list(sd[k].shape)}"
            + (f" (+{len(shapes) - 1} more shape mismatches)" if len(shapes) > 1 else "")
        )
    for label, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            parts.append(f"{len(keys)} {label} keys, first in {component_of(keys[0])}: " + ", ".join(keys[:3]))
    raise CheckpointError(
        f"{source} does not fit the config ({'; '.join(parts)}); is it {kind} model? pass the matching --config"
    )


def _assign_state_dict(model: nn.Module, sd: dict[str, torch.Tensor], use_ema: bool, source: str) -> None:
    """Load into a model whose networks are still on the meta device: the file's tensors become the
    parameters (cast one by one where the dtype differs), so no second copy of the weights ever exists.
    Empties `sd` (its tensors now belong to the model)."""
    prepared = prepare_state_dict(model, sd, use_ema=use_ema, source=source)
    sd.clear()
    check_state_dict(model, prepared, source)
    targets = model.state_dict()
    for key in list(prepared):
        value, target = prepared[key], targets[key]
        if value.is_floating_point() and target.is_floating_point() and value.dtype != target.dtype:
            prepared[key] = value.to(target.dtype)  # the file's tensor is freed as soon as it is replaced
    model.load_state_dict(prepared, strict=True, assign=True)
    del prepared
    for module in model.modules():  # buffers no file carries (the CLIP position ids)
        if module is not model and hasattr(module, "reset_buffers"):
            module.reset_buffers()
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise CheckpointError(f"{source}: {len(left)} tensors were not loaded, first {left[0]}")


def _model_node(config: Any) -> Any:
    if isinstance(config, (str, Path)):
        path = Path(config)
        if not path.is_file():
            raise ConfigError(f"config not found: {path}; pass e.g. configs/stable-diffusion/v1-inference.yaml")
        config = OmegaConf.load(path)
    return config.model if "model" in config else config


def _read_weights(model_config: Any, ckpt: str | Path) -> dict[str, torch.Tensor]:
    """The file's tensors in our layout, their family checked against the config's first (that message
    names the config to pass). A diffusers folder is renamed here, its v/eps checked and the config fitted
    to its SD 2.x text encoder; any other folder is refused by read_state_dict."""
    if not is_diffusers_folder(ckpt):
        sd = dict(read_state_dict(ckpt))
        check_family(model_config, sd, str(ckpt))
        fit_sdxl_text_config(model_config, sd, str(ckpt))  # files converted from diffusers lack bigG's logit_scale
        return sd
    sd = read_diffusers_folder(ckpt)
    check_family(model_config, sd, str(ckpt))
    parameterization = model_config.params.get("parameterization", "eps")
    if parameterization in ("eps", "v"):  # anything else is the config's own error, raised when building
        check_prediction_type(Path(ckpt).expanduser(), parameterization)
    fit_text_config(model_config, sd, str(ckpt))
    return sd


def load_model_from_config(
    config: Any,
    ckpt: str | Path,
    use_ema: bool | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    with_embedding_manager: bool = True,
) -> nn.Module:
    """Build the model described by `config` (a path, or an OmegaConf node with `model`), load `ckpt`
    (an SD 1.x/2.x/SDXL file, or a diffusers model folder) into it with every key accounted for, and return it
    in eval mode on `device`."""
    model_config = OmegaConf.create(OmegaConf.to_container(_model_node(config), resolve=True))
    sd = _read_weights(model_config, ckpt)
    cond = model_config.params.get("cond_stage_config") or model_config.params.get("conditioner_config")
    if cond is not None:
        if cond.get("params") is None:
            cond.params = {}
        if not cond.params.get("model_path"):
            cond.params.model_path = str(ckpt)  # lets the tokenizer search beside the model
    # The embedding manager is attached after loading: its init words need the real token embeddings.
    personalization = model_config.params.get("personalization_config")
    # The networks stay on the meta device (already in `dtype`) until the file's tensors are assigned to
    # them: the peak is one copy of the weights, where an fp32 build plus the file used to be two or three.
    model = _build_on_meta(model_config)
    if dtype is not None and hasattr(model, "set_network_dtype"):
        model.set_network_dtype(dtype)
    model.to_empty(device="cpu", recurse=False)  # LatentDiffusion's own buffers: the noise schedule
    if hasattr(model, "reset_buffers"):
        model.reset_buffers()
    if use_ema is None:
        use_ema = bool(getattr(model, "use_ema", False))
    _assign_state_dict(model, sd, use_ema=use_ema, source=str(ckpt))
    del sd
    if personalization is not None and with_embedding_manager:
        model.attach_embedding_manager(personalization)
    model.eval()
    if dtype is not None and hasattr(model, "set_network_dtype"):
        model.set_network_dtype(dtype)
    return model.to(device)
