"""The training run: validate inputs, build data and model, create the run directory, fit, finish."""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import DictConfig, OmegaConf

from ldm.callbacks import EmbeddingSnapshot, LossCurve, ResumeCheckpoint, SetupCallback
from ldm.callbacks.save_request import SaveOnRequest
from ldm.callbacks.step_progress import step_progress_bar
from ldm.callbacks.step_timer import StepTimer
from ldm.errors import ConfigError
from ldm.training.attach import attach_objective
from ldm.training.checkpoint_io import AtomicCheckpointIO
from ldm.training.config import network_dtype
from ldm.training.launch import check_inputs, parse_gpus, run_name
from ldm.training.metrics_log import keep_previous_metrics
from ldm.training.start_weights import RANDOM_INIT, random_init_requested
from ldm.util import instantiate_from_config, seed_everything

log = logging.getLogger(__name__)

RUN_NOW_ENV = "LDM_TI_RUN_TIMESTAMP"

# Trainer settings the run owns: data order, checkpointing and validation are handled by our parts.
_OWNED = dict(
    use_distributed_sampler=False,
    enable_checkpointing=False,
    num_sanity_val_steps=0,
    limit_val_batches=0,
    max_epochs=-1,
)


def accelerator_args(gpus: list[int] | None, num_nodes: int, cpu_processes: int = 1) -> dict[str, Any]:
    """GPUs from --gpus; on the CPU, `lightning.trainer.devices=N` runs N gloo DDP processes."""
    if gpus and not torch.cuda.is_available():
        log.warning("--gpus %s asked for GPUs but CUDA is not available; training on the CPU", gpus)
        gpus = None
    if not gpus:
        return {"accelerator": "cpu", "devices": int(cpu_processes), "num_nodes": num_nodes}
    return {"accelerator": "gpu", "devices": gpus, "num_nodes": num_nodes}


def build_model(config: DictConfig, actual_resume: str | None, embedding_ckpt: str | None) -> pl.LightningModule:
    """The model from `actual_resume`; None only for a config that asked for model.params.random_init."""
    from ldm.model_loading import load_model_from_config

    if actual_resume:
        # Load straight into the frozen networks' precision: one copy of the weights in memory, never fp32 first.
        precision = OmegaConf.select(config, "model.params.training.network_precision", default="fp32")
        model = load_model_from_config(config, actual_resume, device="cpu", dtype=network_dtype(precision))
    else:
        if not random_init_requested(config):  # resolve_start_weights refuses this; never train random by accident
            raise ConfigError("no weights to train from: pass --actual_resume <Stable Diffusion .ckpt/.safetensors>")
        log.warning("%s: true: the networks keep their random initialisation", RANDOM_INIT)
        model_config = copy.deepcopy(config.model)
        model_config.params.pop("random_init")
        model = instantiate_from_config(model_config)
    if embedding_ckpt:
        model.embedding_manager.load(embedding_ckpt)
    lr = float(config.model.get("base_learning_rate", 5e-3))
    model.learning_rate = lr
    return model


def scaled_lr(base_lr: float, accumulate: int, devices: int, num_nodes: int, batch_size: int, scale: bool) -> float:
    """Paper rule: lr = accumulate_grad_batches x devices x batch_size x base_lr (when --scale_lr)."""
    if not scale:
        return base_lr
    lr = accumulate * devices * num_nodes * batch_size * base_lr
    log.info(
        "lr = %d (accumulate) x %d (devices) x %d (nodes) x %d (batch) x %.2e (base) = %.2e",
        accumulate,
        devices,
        num_nodes,
        batch_size,
        base_lr,
        lr,
    )
    return lr


def _config_and_data(args: Any, overrides: list[str], training: bool = True):
    """The checked inputs (launch.check_inputs), then the data: every image is decoded before anything is written."""
    resume, config = check_inputs(args, overrides, training)
    seed_everything(config.model.params.training.seed)
    data = instantiate_from_config(config.data)
    data.prepare_data()
    data.setup("fit")  # decodes every image: a corrupt file fails here, before anything is written
    return resume, config, data


def debug_dataset(args: Any, overrides: list[str], n: int = 8) -> list[str]:
    """--debug_dataset: the captions and token ids the run would train on."""
    from ldm.modules.encoders.tokenizer import load_tokenizer

    _, _, data = _config_and_data(args, overrides, training=False)
    tokenizer = load_tokenizer()
    dataset = data.train_dataset
    sizes = getattr(dataset, "bucket_sizes", None)  # each image's trained (h, w): its bucket, or size x size

    def size(index: int) -> str:
        return f" size={sizes[index][0]}x{sizes[index][1]}" if sizes else ""

    return [
        f"k={k} image={index} flip={int(flip)}{size(index)} caption={caption!r} ids={tokenizer(caption).input_ids}"
        for k, caption, index, flip in dataset.debug_items(n)
    ]


def train(args: Any, overrides: list[str]) -> Path:
    """Run textual-inversion training as main.py describes; returns the run directory."""
    resume, config, data = _config_and_data(args, overrides)
    gpus = parse_gpus(args.gpus)
    num_nodes = int(args.num_nodes)
    lightning_config = config.pop("lightning", OmegaConf.create())
    trainer_kwargs = OmegaConf.to_container(lightning_config.get("trainer", {}), resolve=True)
    actual_resume = config.get("actual_resume")
    model = build_model(config, actual_resume, args.embedding_manager_ckpt)
    objective = attach_objective(model)  # what the model's training hooks call

    if resume:
        logdir, now = resume.logdir, resume.logdir.name
        remove_stale_temp_files(logdir)
        keep_previous_metrics(logdir)  # the CSV logger would delete the loss history before the resume
    else:
        now, name = run_name(
            config.data.params.train.params.data_root, args.name, args.postfix, now=os.environ.get(RUN_NOW_ENV)
        )
        logdir = Path(args.logdir) / name
    os.environ[RUN_NOW_ENV] = now  # DDP ranks re-run this script: they must pick the same run directory
    ckptdir = logdir / "checkpoints"
    cpu_processes = int(trainer_kwargs.get("devices", 1) or 1) if not gpus else 1
    accel = accelerator_args(gpus, num_nodes, cpu_processes)
    devices = len(accel["devices"]) if isinstance(accel["devices"], list) else accel["devices"]
    accumulate = int(trainer_kwargs.get("accumulate_grad_batches", 1))
    model.learning_rate = scaled_lr(
        model.learning_rate, accumulate, devices, num_nodes, int(config.data.params.batch_size), config.scale_lr
    )

    every = int(OmegaConf.select(lightning_config, "modelcheckpoint.params.every_n_train_steps", default=500))
    snapshot, resumable = (
        EmbeddingSnapshot(str(ckptdir), every, sd_checkpoint=actual_resume),
        ResumeCheckpoint(str(ckptdir), every),
    )
    callbacks = [
        SetupCallback(str(logdir), now, OmegaConf.merge(config, {"lightning": lightning_config}), lightning_config),
        snapshot,
        resumable,
        SaveOnRequest(str(logdir), snapshot, resumable),  # "save now" and SIGTERM (Stop) save first
        LossCurve(str(logdir)),
        StepTimer(),
    ]
    for cb_config in (lightning_config.get("callbacks") or {}).values():
        cb_params = dict(cb_config.get("params") or {})
        callbacks.append(
            instantiate_from_config(
                {"target": _target(cb_config.target), "params": {**cb_params, "logdir": str(logdir)}}
            )
        )
    if trainer_kwargs.get("enable_progress_bar", True) and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(step_progress_bar())  # 'train 130/400' across resumes, not 'Epoch 0/-2 130/270'
    strategy = DDPStrategy(find_unused_parameters=True) if devices * num_nodes > 1 else "auto"
    trainer_kwargs = {
        k: v for k, v in trainer_kwargs.items() if k not in ("gpus", "accelerator", "devices", "strategy")
    }
    # Lightning's summary table lists frozen modules "in eval mode": noise for textual inversion; opt in to see it.
    trainer_kwargs.setdefault("enable_model_summary", False)
    trainer = pl.Trainer(
        **trainer_kwargs,
        **accel,
        **_OWNED,
        strategy=strategy,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=str(logdir),
        logger=_loggers(logdir),
        log_every_n_steps=objective.config.log_every_n_steps,
    )
    start_step = resume.step if resume else 0
    data.set_start_batch(start_step * accumulate)
    trainer.fit(model, data, ckpt_path=str(resume.ckpt) if resume else None)
    return logdir


def remove_stale_temp_files(logdir: Path) -> None:
    """A run killed mid-write leaves `.name.XXXX.tmp` files; the real files are intact, drop the temps."""
    for tmp in logdir.rglob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def _target(target: str) -> str:
    """Old configs name `main.ImageLogger`; the callbacks live in ldm.callbacks now."""
    return f"ldm.callbacks.{target.split('.', 1)[1]}" if target.startswith("main.") else target


def _loggers(logdir: Path) -> list:
    # Flushed at every logged step: the web UI draws the loss curve live from this file.
    loggers = [CSVLogger(str(logdir), name="csv", version="", flush_logs_every_n_steps=1)]
    try:
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(str(logdir), name="tensorboard", version=""))
    except (ImportError, ModuleNotFoundError):
        log.info("tensorboard is not installed; losses go to the CSV log only")
    return loggers
