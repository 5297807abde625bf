"""Lightning callbacks of a training run (kept out of main.py): setup, images, snapshots, resume, losses."""

from ldm.callbacks.embedding_snapshot import EmbeddingSnapshot
from ldm.callbacks.image_logger import ImageLogger
from ldm.callbacks.loss_curve import LossCurve
from ldm.callbacks.resume_checkpoint import ResumeCheckpoint
from ldm.callbacks.setup import SetupCallback

__all__ = ["EmbeddingSnapshot", "ImageLogger", "LossCurve", "ResumeCheckpoint", "SetupCallback"]
