"""At the end of a run, draw the loss curve from the CSV log into `loss.png` (PIL only)."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import lightning.pytorch as pl
from PIL import Image, ImageDraw

from ldm.fileio import save_png
from ldm.training.metrics_log import LOSS, read_metrics

log = logging.getLogger(__name__)


def read_losses(metrics_csv: Path, column: str = "train/loss") -> list[tuple[int, float]]:
    if not metrics_csv.is_file():
        return []
    points = []
    with metrics_csv.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row.get(column) not in (None, "") and row.get("step") not in (None, ""):
                points.append((int(row["step"]), float(row[column])))
    return points


def draw_curve(points: list[tuple[int, float]], size: tuple[int, int] = (640, 360), smooth: int = 10) -> Image.Image:
    """Raw losses in grey, a moving average in blue; axes labelled with the step and loss ranges."""
    w, h = size
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    if not points:
        draw.text((10, 10), "no loss recorded", fill="black")
        return img
    steps, losses = zip(*points)
    lo, hi = min(losses), max(losses)
    span, x0, x1 = (hi - lo) or 1.0, min(steps), max(max(steps), min(steps) + 1)

    def xy(step: float, loss: float) -> tuple[float, float]:
        return 50 + (step - x0) / (x1 - x0) * (w - 70), 20 + (1 - (loss - lo) / span) * (h - 50)

    draw.line([xy(s, v) for s, v in points], fill=(180, 180, 180), width=1)
    avg = [
        sum(losses[max(0, i - smooth + 1) : i + 1]) / len(losses[max(0, i - smooth + 1) : i + 1])
        for i in range(len(losses))
    ]
    draw.line([xy(s, v) for s, v in zip(steps, avg)], fill=(30, 80, 200), width=2)
    draw.text((5, 5), f"loss {hi:.4f}", fill="black")
    draw.text((5, h - 25), f"{lo:.4f}", fill="black")
    draw.text((50, h - 15), f"step {x0}", fill="black")
    draw.text((w - 90, h - 15), f"step {x1}", fill="black")
    return img


class LossCurve(pl.Callback):
    def __init__(self, logdir: str):
        self.logdir = Path(logdir)

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.global_rank != 0:
            return
        for logger in trainer.loggers:
            if hasattr(logger, "experiment") and hasattr(logger.experiment, "save"):
                logger.experiment.save()  # flush the CSV before reading it
        points = read_metrics(self.logdir, (LOSS,))[LOSS]  # every part, across resumes
        save_png(draw_curve(points), self.logdir / "loss.png")
