"""LatentDiffusion: the LightningModule that composes the SD parts (UNet, VAE, text encoder, schedule).

It holds no sampler loops; samplers live in `ldm.models.diffusion.sampling` and talk to the model through
`ldm.models.diffusion.denoiser.CompVisDenoiser`. Parameter and buffer names are exactly those of SD v1 files.
SDXL (sgm's key structure: `network_config`, `conditioner_config`, `denoiser_config`) is the same class: its
text side is `conditioner` (a GeneralConditioner) instead of `cond_stage_model`, and its UNet takes the vector y.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from ldm.config_aliases import parameterization_of_denoiser
from ldm.config_keys import TRAINING_TOP_LEVEL_KEYS
from ldm.errors import CheckpointError, ConfigError
from ldm.models.diffusion.parameterization import check_parameterization
from ldm.models.diffusion.schedule import make_beta_schedule, schedule_buffers
from ldm.models.diffusion.training_objective import TrainingObjective
from ldm.util import get_obj_from_str, instantiate_from_config

log = logging.getLogger(__name__)

# Keys of the paper's configs that this model reads elsewhere or that only mattered to training the
# base model; they are accepted so old configs keep working.
_ACCEPTED_UNUSED = {
    "num_timesteps_cond",
    "log_every_t",
    "first_stage_key",
    "cond_stage_key",
    "image_size",
    "channels",
    "cond_stage_trainable",
    "monitor",
    "scheduler_config",
    "loss_type",
    "ckpt_path",
    "ignore_keys",
    "load_only_unet",
    "clip_denoised",
    "original_elbo_weight",
    "l_simple_weight",
    "learn_logvar",
    "logvar_init",
    "use_positional_encodings",
    "given_betas",
    "cosine_s",
    "concat_mode",
    "cond_stage_forward",
    "scale_by_std",
    "base_learning_rate",
    "make_it_fit",
    "ucg_training",
    "reset_ema",
    "reset_num_ema_updates",
    "use_fp16",
    "unfreeze_model",
    "model_lr",
    # sgm's DiffusionEngine (SDXL): its denoiser/sampler/loss are ours (the schedule is LegacyDDPM's);
    # denoiser_config is read for eps/v only.
    "sampler_config",
    "loss_fn_config",
    "optimizer_config",
    "disable_first_stage_autocast",
    "input_key",
    "log_keys",
    "no_cond_log",
    "compile_model",
    "network_wrapper",
    "en_and_decode_n_samples_a_time",
}
# SD family of a model, by its text encoder class (SDXL: a GeneralConditioner).
_FAMILY_OF_ENCODER = {"FrozenCLIPEmbedder": "sd1", "FrozenOpenCLIPEmbedder": "sd2"}


class DiffusionWrapper(nn.Module):
    """Holds the UNet as `diffusion_model` (the `model.diffusion_model.*` keys) and routes conditioning."""

    def __init__(self, diff_model_config: Mapping[str, Any], conditioning_key: str = "crossattn"):
        super().__init__()
        if conditioning_key != "crossattn":
            raise ConfigError(f"conditioning_key {conditioning_key!r} is not supported; SD v1 uses 'crossattn'")
        self.diffusion_model = instantiate_from_config(diff_model_config)
        self.conditioning_key = conditioning_key

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        c_crossattn: Sequence[torch.Tensor] | None = None,
        y: torch.Tensor | None = None,
    ) -> torch.Tensor:
        context = torch.cat(list(c_crossattn), dim=1) if c_crossattn else None
        if y is None:  # SD 1.x/2.x UNets take no y
            return self.diffusion_model(x, t, context=context)
        return self.diffusion_model(x, t, context=context, y=y)


class LatentDiffusion(pl.LightningModule):
    """SD 1.x/2.x (`unet_config`, `cond_stage_config`) or SDXL (`network_config`, `conditioner_config`)."""

    def __init__(
        self,
        unet_config: Mapping[str, Any] | None = None,
        first_stage_config: Mapping[str, Any] | None = None,
        cond_stage_config: Mapping[str, Any] | None = None,
        timesteps: int = 1000,
        beta_schedule: str = "linear",
        linear_start: float = 0.00085,
        linear_end: float = 0.012,
        scale_factor: float = 0.18215,
        conditioning_key: str = "crossattn",
        parameterization: str | None = None,
        use_ema: bool = False,
        v_posterior: float = 0.0,
        personalization_config: Mapping[str, Any] | None = None,
        training: Mapping[str, Any] | None = None,
        network_config: Mapping[str, Any] | None = None,
        conditioner_config: Mapping[str, Any] | None = None,
        denoiser_config: Mapping[str, Any] | None = None,
        **kwargs,
    ):
        super().__init__()
        unet_config = _one_of("unet_config", unet_config, "network_config", network_config)
        _one_of("cond_stage_config", cond_stage_config, "conditioner_config", conditioner_config)
        if first_stage_config is None:
            raise ConfigError("model.params has no first_stage_config (the VAE); copy it from the model's config")
        unknown = sorted(set(kwargs) - _ACCEPTED_UNUSED - set(TRAINING_TOP_LEVEL_KEYS))
        if unknown:
            log.warning("LatentDiffusion ignores unknown config keys: %s", ", ".join(unknown))
        self.parameterization = _parameterization(parameterization, denoiser_config)  # the config decides
        self.num_timesteps = int(timesteps)
        self.scale_factor = float(scale_factor)
        self.use_ema = use_ema  # read by the loader: take `model_ema.*` weights from the file
        self._schedule_args = (beta_schedule, self.num_timesteps, linear_start, linear_end, v_posterior)
        self.register_schedule()
        self.model = DiffusionWrapper(unet_config, conditioning_key)
        self.first_stage_model = instantiate_from_config(first_stage_config)
        # Exactly one text side: SD 1.x/2.x's `cond_stage_model` or SDXL's `conditioner` (the file's prefixes).
        self.cond_stage_model = instantiate_from_config(cond_stage_config) if conditioner_config is None else None
        self.conditioner = instantiate_from_config(conditioner_config) if conditioner_config is not None else None
        self._freeze(self.first_stage_model)
        self.embedding_manager = None
        if personalization_config is not None:
            self.attach_embedding_manager(personalization_config)
        # The raw `training:` options (and the paper's top-level ones); ldm.training parses and checks them
        # when it attaches the objective that the training hooks below call.
        top_level = {k: kwargs[k] for k in TRAINING_TOP_LEVEL_KEYS if kwargs.get(k) is not None}
        self.training_params: dict[str, Any] = {**top_level, **dict(training or {})}
        self.objective: TrainingObjective | None = None
        self.learning_rate = 1e-4  # set by main.py from base_learning_rate (and --scale_lr)

    def attach_embedding_manager(self, config: Mapping[str, Any]) -> nn.Module:
        """Textual inversion: every network is frozen; only the placeholder vectors learn. Called after
        the weights are loaded when building from a checkpoint, so init words read real token embeddings."""
        params = dict(config.get("params") or {})
        self.embedding_manager = get_obj_from_str(config["target"])(embedder=self.text_module, **params)
        self._freeze(self.model)
        self._freeze(self.text_module)
        return self.embedding_manager

    @staticmethod
    def _freeze(module: nn.Module) -> None:
        module.eval()
        for p in module.parameters():
            p.requires_grad = False

    def register_schedule(self, device: torch.device | None = None) -> None:
        kind, n, start, end, v_posterior = self._schedule_args
        betas = make_beta_schedule(kind, n, linear_start=start, linear_end=end)
        for name, value in schedule_buffers(betas, v_posterior).items():
            self.register_buffer(name, value if device is None else value.to(device))

    def reset_buffers(self) -> None:
        """Recompute the schedule in float32 (after a meta-device build, or to undo a low-precision cast)."""
        self.register_schedule(self.betas.device)

    # -- the three networks --------------------------------------------------------------------------
    def apply_model(
        self, x_noisy: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | Mapping[str, Sequence[torch.Tensor]]
    ) -> torch.Tensor:
        """The UNet's output for latents x_noisy at timesteps t under conditioning cond: a context tensor,
        the prompt conditioner's {"crossattn": context} (SDXL: and "vector": y [B, adm_in_channels]), or the
        paper's {"c_crossattn": [context, ...]}."""
        if isinstance(cond, Mapping):
            if "crossattn" in cond:
                return self.model(x_noisy, t, c_crossattn=[cond["crossattn"]], y=cond.get("vector"))
            return self.model(x_noisy, t, **cond)
        return self.model(x_noisy, t, c_crossattn=[cond])

    @property
    def prompt_conditioner(self) -> Any:
        """Captions -> {"crossattn": context}, the embedding manager's words as terms (ldm.prompts.Conditioner).
        Captions are read literally (no emphasis syntax), as training sees them; longer ones are chunked."""
        # Not `conditioner`: that name is SDXL's text-encoder module (`conditioner.embedders.*` keys).
        if getattr(self, "_prompt_conditioner", None) is None:
            from ldm.prompts.conditioner import Conditioner  # lazy: the prompt stack is not needed to build

            self._prompt_conditioner = Conditioner(self, prompt_syntax=False)
        return self._prompt_conditioner

    def get_learned_conditioning(self, text: str | Sequence[str]) -> torch.Tensor:
        """Prompts -> context [B, 77 * k, D] through `prompt_conditioner` (learned words included)."""
        return self.prompt_conditioner(text)["crossattn"]

    # -- what callers reach through the model for (instead of walking its submodules) -----------------
    @property
    def unet(self) -> nn.Module:
        """The denoising UNet (its weights keep the checkpoint's `model.diffusion_model.*` names)."""
        return self.model.diffusion_model

    @property
    def latent_channels(self) -> int:
        """Channels of the latents the UNet denoises (4 for SD 1.x and 2.x)."""
        return int(self.unet.in_channels)

    @property
    def text_module(self) -> nn.Module:
        """The text side as one module (`cond_stage_model`, or SDXL's `conditioner`): freeze, cast, parameters."""
        return self.conditioner if self.conditioner is not None else self.cond_stage_model

    @property
    def text_encoders(self) -> list[nn.Module]:
        """The text embedders in context order: [cond_stage_model] for SD 1.x/2.x, [CLIP-L, bigG] for SDXL."""
        if self.conditioner is not None:
            return list(self.conditioner.text_encoders)
        return [self.cond_stage_model]

    @property
    def text_width(self) -> int:
        """Width of the context and of a learned vector: the sum of the text encoders' widths (768, 1024, 2048)."""
        return sum(int(e.width) for e in self.text_encoders)

    @property
    def is_sdxl(self) -> bool:
        return self.conditioner is not None

    @property
    def family(self) -> str:
        """ "sd1", "sd2" or "sdxl", from the text side's classes (the config decides, not the weights)."""
        if self.is_sdxl:
            return "sdxl"
        return _FAMILY_OF_ENCODER.get(type(self.cond_stage_model).__name__, "sd1")

    @property
    def uses_vector(self) -> bool:
        """Whether the UNet takes SDXL's vector y (pooled text + sizes) besides the context."""
        return bool(getattr(self.unet, "uses_vector", False))

    @property
    def first_stage_dtype(self) -> torch.dtype:
        """The VAE's dtype: images and latents are cast to it on the way in."""
        return next(self.first_stage_model.parameters()).dtype

    def encode_first_stage(self, x: torch.Tensor):
        return self.first_stage_model.encode(x.to(self.first_stage_dtype))

    def get_first_stage_encoding(self, posterior, generator: torch.Generator | None = None) -> torch.Tensor:
        z = posterior.sample(generator) if hasattr(posterior, "sample") else posterior
        return self.scale_factor * z

    @property
    def latent_factor(self) -> int:
        """Pixels per latent side: 8 for SD's VAE (every encoder level but the last halves the image)."""
        return 2 ** (len(self.first_stage_model.encoder.down) - 1)

    def decode_first_stage(self, z: torch.Tensor) -> torch.Tensor:
        z = (z / self.scale_factor).to(self.first_stage_dtype)
        return self.first_stage_model.decode(z)

    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Forward diffusion: sqrt(a_t) x0 + sqrt(1 - a_t) eps."""
        a = self.sqrt_alphas_cumprod[t].view(-1, *([1] * (x_start.dim() - 1)))
        s = self.sqrt_one_minus_alphas_cumprod[t].view(-1, *([1] * (x_start.dim() - 1)))
        return a.to(x_start.dtype) * x_start + s.to(x_start.dtype) * noise

    def set_network_dtype(self, dtype: torch.dtype) -> LatentDiffusion:
        """Cast the three networks only; the schedule buffers stay float32 for exact sigmas. SDXL's VAE
        overflows in fp16 (NaN images): under fp16 it stays float32."""
        vae_dtype = dtype
        if dtype == torch.float16 and self.is_sdxl:
            vae_dtype = torch.float32
            if not getattr(self, "_told_vae_fp32", False):
                log.info("SDXL: the VAE stays float32 under fp16 (it overflows in fp16); the other networks are fp16")
                self._told_vae_fp32 = True
        for net, net_dtype in ((self.model, dtype), (self.first_stage_model, vae_dtype), (self.text_module, dtype)):
            net.to(net_dtype)
        return self

    # -- textual-inversion training (the LightningModule wires; the attached objective computes) --------
    def attach_objective(self, objective: TrainingObjective) -> None:
        """What the training hooks call; ldm.training.attach.attach_objective builds it before fit."""
        self.objective = objective

    def _attached_objective(self) -> TrainingObjective:
        if self.objective is None:
            raise RuntimeError(
                "LatentDiffusion has no training objective: call ldm.training.attach.attach_objective(model) "
                "before Trainer.fit (main.py does)"
            )
        return self.objective

    def setup(self, stage: str) -> None:
        if stage == "fit":
            if self.embedding_manager is None:
                raise ConfigError("training needs model.params.personalization_config (the embedding manager)")
            self._attached_objective().prepare_networks()

    def on_train_start(self) -> None:
        data = getattr(self.trainer, "datamodule", None)
        if data is not None and hasattr(data, "train_dataset"):
            samples = self.trainer.max_steps * int(getattr(data, "batch_size", 1))
            self._attached_objective().prefill_latents(data.train_dataset, samples)

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        self.embedding_manager.set_step(self.global_step)
        loss, parts = self._attached_objective()(batch)  # a NaN/inf loss stops the run in EmbeddingSnapshot
        self.log("train/loss", loss, prog_bar=True, on_step=True, batch_size=len(batch["caption"]))
        for name, value in parts.items():
            self.log(f"train/{name}", value, on_step=True, batch_size=len(batch["caption"]))
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], prog_bar=True, on_step=True)
        return loss

    def configure_optimizers(self):
        return self._attached_objective().configure_optimizers(self.learning_rate, self.trainer.max_steps)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Resumable checkpoints keep the learned vectors only, never the frozen networks."""
        checkpoint["state_dict"] = {
            k: v for k, v in checkpoint["state_dict"].items() if k.startswith("embedding_manager.")
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint["state_dict"]
        ours = {k for k in self.state_dict() if k.startswith("embedding_manager.")}
        if set(saved) != ours:
            raise CheckpointError(
                f"resume checkpoint holds {sorted(saved)[:3]}, the config expects {sorted(ours)[:3]}; "
                "resume with the run's own configs"
            )
        checkpoint["state_dict"] = {**self.state_dict(), **saved}


def _one_of(name: str, value: Any, other_name: str, other: Any) -> Mapping[str, Any]:
    """Exactly one of two alternative config nodes (ours or sgm's name) -> that node."""
    if (value is None) == (other is None):
        both = "both" if value is not None else "neither"
        raise ConfigError(f"model.params has {both} of {name} and {other_name}; give exactly one")
    return value if value is not None else other


def _parameterization(parameterization: str | None, denoiser_config: Mapping[str, Any] | None) -> str:
    """Ours, or what sgm's denoiser_config says (EpsScaling/VScaling); eps by default."""
    from_denoiser = parameterization_of_denoiser(denoiser_config)
    if parameterization is not None and from_denoiser is not None and parameterization != from_denoiser:
        raise ConfigError(
            f"model.params: parameterization {parameterization!r} but denoiser_config scales for {from_denoiser!r}; "
            "make them agree"
        )
    return check_parameterization(parameterization or from_denoiser or "eps")
