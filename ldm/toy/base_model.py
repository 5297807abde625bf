"""Train the toy world's base model end to end and write it, with its classifier, to a folder.

Stages (one fixed seed, CPU-friendly): autoencoder -> latent scale folded in -> UNet and text
transformer together on cached latents -> attribute classifier on renders and their round trips ->
figures: the classifier's accuracy on fresh renders, and how often the base model draws the shape
and colour a true-words prompt asks for. The SDXL-shaped toy (configs/toy-world/xl-inference.yaml)
runs the same stages, taking the autoencoder and the classifier from the SD 1.x toy (`vae_from`,
`classifier_from`): the same world, latents and judge.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from ldm.data.toy_world import COLOUR_NAMES, SHAPES
from ldm.errors import ConfigError
from ldm.fileio import atomic_path
from ldm.toy.autoencoder_training import fold_latent_scale, latent_std, train_autoencoder
from ldm.toy.classifier import IMAGE_SIZE, AttributeClassifier, accuracy, train_classifier
from ldm.toy.manifest import sha256, write_manifest
from ldm.toy.pool import concat_pools, render_pool, round_trip_pool
from ldm.toy.text_to_image_training import DiffusionSchedule, encode_pool, train_text_to_image
from ldm.util import instantiate_from_config

log = logging.getLogger(__name__)
PathLike = str | Path
WEIGHTS = "toy-world.safetensors"
CLASSIFIER = "classifier.safetensors"


@dataclass
class BaseTrainingSettings:
    seed: int = 0
    pool_size: int = 20000
    plain_p: float = 0.25
    generic_p: float = 0.15
    vae_steps: int = 6000
    vae_batch: int = 4
    vae_lr: float = 3e-4
    diffusion: DiffusionSchedule = field(
        default_factory=lambda: DiffusionSchedule(
            steps=4500, batch_size=64, lr=5e-4, warmup=200, ema_decay=0.999, uncond_p=0.1
        )
    )
    classifier_pool: int = 6000
    classifier_steps: int = 1500
    classifier_batch: int = 64
    classifier_lr: float = 3e-3
    check_renders: int = 2000
    check_concepts: int = 24
    check_samples: int = 16
    vae_from: str | None = None  # a toy base model whose autoencoder is taken instead of training one
    classifier_from: str | None = None  # a trained attribute classifier taken instead of training one


def _seed(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def build_random_model(config_path: PathLike) -> torch.nn.Module:
    config = OmegaConf.load(config_path)
    if float(config.model.params.get("scale_factor", 0.18215)) != 1.0:
        raise ConfigError(
            f"{config_path}: the toy trainer folds the latent scale into the autoencoder; "
            "set model.params.scale_factor: 1.0"
        )
    return instantiate_from_config(config.model)


def save_weights(module: torch.nn.Module, path: Path, dtype: torch.dtype) -> Path:
    state = {
        k: v.detach().to(dtype).contiguous() if v.is_floating_point() else v.contiguous()
        for k, v in module.state_dict().items()
    }
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    return path


@torch.no_grad()
def true_words_agreement(
    generate,
    classifier: AttributeClassifier,
    concepts: int,
    samples: int,
    seed: int,
    steps: int = 25,
    cfg_scale: float = 5.0,
    sampler: str = "ddim",
) -> dict:
    """Share of samples of "a photo of a <colour> <shape>" in which the classifier sees both as asked."""
    from ldm.evaluation.toy_metrics import SamplingSettings, sample_images

    rng = np.random.default_rng(seed)
    pairs = [
        (SHAPES[i % len(SHAPES)], COLOUR_NAMES[int(c)])
        for i, c in enumerate(rng.integers(len(COLOUR_NAMES), size=concepts))
    ]
    settings = SamplingSettings(samples=samples, steps=steps, sampler=sampler, cfg_scale=cfg_scale, size=IMAGE_SIZE)
    right = shape_right = colour_right = 0
    for j, (shape, colour) in enumerate(pairs):
        pred = classifier.predict(sample_images(generate, f"a photo of a {colour} {shape}", settings, seed + j))
        s_ok, c_ok = pred["shape"] == SHAPES.index(shape), pred["colour"] == COLOUR_NAMES.index(colour)
        right += int((s_ok & c_ok).sum())
        shape_right += int(s_ok.sum())
        colour_right += int(c_ok.sum())
    n = concepts * samples
    return {"shape_and_colour": right / n, "shape": shape_right / n, "colour": colour_right / n, "samples": n}


def _autoencoder_stage(model: torch.nn.Module, pool, settings: BaseTrainingSettings, g) -> tuple[list[float], float]:
    vae = model.first_stage_model
    if settings.vae_from:
        from ldm.toy.reused_parts import load_autoencoder

        load_autoencoder(vae, settings.vae_from)
        return [], latent_std(vae, pool)
    losses = train_autoencoder(vae, pool, settings.vae_steps, settings.vae_batch, settings.vae_lr, g)
    std = latent_std(vae, pool)
    fold_latent_scale(vae, 1.0 / std)
    log.info("autoencoder: final loss %.4f, latent std %.3f folded to 1", losses[-1], std)
    return losses, std


def _classifier_stage(model: torch.nn.Module, settings: BaseTrainingSettings, g) -> tuple:
    """(classifier, its losses, its accuracy on fresh renders and on their round trips)."""
    vae = model.first_stage_model

    def round_trip(x: torch.Tensor) -> torch.Tensor:
        return vae.decode(vae.encode(x).mean).clamp(-1, 1)

    if settings.classifier_from:
        from ldm.evaluation.toy_metrics import load_classifier

        classifier, losses = load_classifier(settings.classifier_from), []
    else:
        renders = render_pool(settings.classifier_pool, IMAGE_SIZE, settings.seed + 1)
        classifier = AttributeClassifier()
        losses = train_classifier(
            classifier,
            concat_pools(renders, round_trip_pool(renders, round_trip)),
            settings.classifier_steps,
            settings.classifier_batch,
            settings.classifier_lr,
            g,
        )
    fresh = render_pool(settings.check_renders, IMAGE_SIZE, settings.seed + 2)
    acc = {
        "renders": accuracy(classifier, fresh.float_images(torch.arange(len(fresh))), fresh.labels),
        "round_trips": accuracy(
            classifier, round_trip_pool(fresh, round_trip).float_images(torch.arange(len(fresh))), fresh.labels
        ),
    }
    return classifier, losses, acc


def train_base_model(
    config_path: PathLike, out_dir: PathLike, settings: BaseTrainingSettings, command: str, weights_name: str = WEIGHTS
) -> dict:
    out = Path(out_dir)
    start = time.time()
    g = _seed(settings.seed)
    model = build_random_model(config_path)
    timings = {}

    t = time.time()
    pool = render_pool(settings.pool_size, IMAGE_SIZE, settings.seed, settings.plain_p, settings.generic_p)
    timings["render_s"] = time.time() - t
    t = time.time()
    vae_losses, std = _autoencoder_stage(model, pool, settings, g)
    timings["autoencoder_s"] = time.time() - t

    t = time.time()
    latents = encode_pool(model, pool)
    result = train_text_to_image(model, latents, settings.diffusion, g)
    timings["text_to_image_s"] = time.time() - t

    t = time.time()
    classifier, cls_losses, cls_acc = _classifier_stage(model, settings, g)
    timings["classifier_s"] = time.time() - t
    timings["train_total_s"] = time.time() - start
    log.info("classifier accuracy: %s", cls_acc)

    weights = save_weights(model, out / weights_name, torch.float16)
    # A reused classifier stays where it is (the manifest names it); a trained one is written beside.
    classifier_path = settings.classifier_from or save_weights(classifier, out / CLASSIFIER, torch.float32)

    # The agreement figure is measured on the weights as written (fp16), loaded the way users load them.
    from ldm.generate import Generate
    from ldm.model_loading import load_model_from_config

    t = time.time()
    loaded = load_model_from_config(config_path, weights, with_embedding_manager=False)
    agreement = true_words_agreement(
        Generate(config=config_path, model=loaded),
        classifier,
        settings.check_concepts,
        settings.check_samples,
        settings.seed + 3,
    )
    timings["check_s"] = time.time() - t
    log.info("true-words agreement: %s", agreement)
    figures = {
        "classifier_accuracy": cls_acc,
        "true_words_agreement": agreement,
        "timings": timings,
        "losses": {
            "autoencoder_final": vae_losses[-1] if vae_losses else None,
            "classifier_final": cls_losses[-1] if cls_losses else None,
            "text_to_image_last_200": float(np.mean(result["losses"][-200:])),
        },
        "latent_std_folded": std,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    written = [weights] if settings.classifier_from else [weights, classifier_path]
    extra = {"config": str(config_path), "settings": asdict(settings), "figures": figures}
    if settings.classifier_from:
        extra["classifier"] = {"path": str(settings.classifier_from), "sha256": sha256(settings.classifier_from)}
    write_manifest(out, written, command, extra)
    return figures
