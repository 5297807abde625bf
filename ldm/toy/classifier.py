"""The attribute classifier: image -> (shape, colour, background). Used only to score samples.

A small CNN. The trainer shows it renders and their autoencoder round trips alike, so that the slight
blur of decoded samples is not mistaken for a different shape.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from ldm.data.toy_world import COLOUR_NAMES, SHAPES
from ldm.toy.pool import ScenePool

log = logging.getLogger(__name__)
IMAGE_SIZE = 32  # the toy world's image side (configs/toy-world: 32 px images, 8x8 latents)
HEADS = {"shape": len(SHAPES), "colour": len(COLOUR_NAMES), "background": len(COLOUR_NAMES)}


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


class AttributeClassifier(nn.Module):
    """IMAGE_SIZE x IMAGE_SIZE RGB in [-1, 1] -> logits per attribute."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            _block(3, width),
            _block(width, 2 * width),
            _block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.heads = nn.ModuleDict({name: nn.Linear(4 * width, n) for name, n in HEADS.items()})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(images)
        return {name: head(h) for name, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
        """Class indices per attribute for images [N, 3, H, W] in [-1, 1]."""
        self.eval()
        out: dict[str, list[torch.Tensor]] = {name: [] for name in HEADS}
        for i in range(0, images.shape[0], batch_size):
            images_i = images[i : i + batch_size]
            if images_i.shape[-1] != IMAGE_SIZE:
                images_i = F.interpolate(images_i, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", antialias=True)
            for name, logits in self(images_i).items():
                out[name].append(logits.argmax(-1))
        return {name: torch.cat(v) for name, v in out.items()}


def train_classifier(
    classifier: AttributeClassifier, pool: ScenePool, steps: int, batch_size: int, lr: float, generator: torch.Generator
) -> list[float]:
    """Cross-entropy on all three heads, AdamW with a one-cycle schedule. Returns the losses."""
    classifier.train()
    opt = torch.optim.AdamW(classifier.parameters(), lr=lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    losses = []
    for step in range(steps):
        idx = torch.randint(len(pool), (batch_size,), generator=generator)
        x = pool.float_images(idx)
        logits = classifier(x)
        loss = sum(F.cross_entropy(logits[name], pool.labels[name][idx]) for name in HEADS)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        scheduler.step()
        losses.append(loss.item())
        if step % 100 == 0 or step == steps - 1:
            log.info("classifier step %d/%d loss %.4f", step + 1, steps, losses[-1])
    classifier.eval()
    return losses


def accuracy(classifier: AttributeClassifier, images: torch.Tensor, labels: dict[str, torch.Tensor]) -> dict:
    """Per-attribute accuracy and the joint one (all three right)."""
    pred = classifier.predict(images)
    right = {name: pred[name] == labels[name] for name in HEADS}
    joint = torch.stack(list(right.values())).all(0)
    return {**{name: float(r.float().mean()) for name, r in right.items()}, "all": float(joint.float().mean())}
