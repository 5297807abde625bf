"""A procedural "toy world": one coloured shape on a plain background, with captions.

Every attribute word is a single CLIP token inside a caption, so learning a concept can be measured
per token; every sample is a pure function of (seed, k), so runs are reproducible in any worker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ldm.data.sample_rng import sample_rng

# Only words the shipped CLIP tokenizer keeps as one token in a caption (checked in the tests;
# e.g. "hexagon" and "cyan" split into two tokens and were dropped).
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "heart", "cross", "ring", "diamond")

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 220),
    "yellow": (245, 220, 30),
    "purple": (130, 40, 170),
    "orange": (245, 140, 20),
    "pink": (250, 140, 190),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "brown": (120, 70, 30),
    "gray": (128, 128, 128),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)

# Every template keeps "{colour} {shape}" adjacent, so the concept is always the same two-token span.
CAPTION_TEMPLATES: tuple[str, ...] = (
    "a photo of a {colour} {shape} on a {background} background",
    "a {colour} {shape} against {background}",
    "{colour} {shape}, {background} background",
    "a picture of a {colour} {shape} on {background}",
    "a drawing of a {colour} {shape} with a {background} background",
    "a simple {colour} {shape} on a plain {background} background",
    "an image of one {colour} {shape}, {background} backdrop",
    "a small {colour} {shape} on {background}",
)

# Captions that leave the background out, so "a photo of a red star" alone is a prompt the model knows.
PLAIN_TEMPLATES: tuple[str, ...] = (
    "a photo of a {colour} {shape}",
    "a picture of a {colour} {shape}",
    "a drawing of a {colour} {shape}",
    "a small {colour} {shape}",
)
# The coarse class word, as "cat" is for a pet: some captions say "shape" instead of the shape's name,
# so that "shape" means "some shape" to the base model and makes a fair init word for inversion.
GENERIC_SHAPE_WORD = "shape"

SUPERSAMPLE = 4  # PIL polygons are not anti-aliased: draw at 4x, then downsample
SIZE_RANGE = (0.55, 0.85)  # shape extent as a fraction of the image side: 4-7 latent cells at f=4
# A stream number of our own, apart from the training streams in sample_rng.
TOY_STREAM = 101

PathLike = str | Path


@dataclass(frozen=True)
class ToyScene:
    shape: str
    colour: str
    background: str

    def caption(self, template: str = CAPTION_TEMPLATES[0], generic: bool = False) -> str:
        shape = GENERIC_SHAPE_WORD if generic else self.shape
        return template.format(shape=shape, colour=self.colour, background=self.background)

    def labels(self) -> dict[str, int]:
        return {
            "shape": SHAPES.index(self.shape),
            "colour": COLOUR_NAMES.index(self.colour),
            "background": COLOUR_NAMES.index(self.background),
        }


def _regular_polygon(cx: float, cy: float, r: float, n: int, phase: float) -> list[tuple[float, float]]:
    return [
        (cx + r * math.cos(phase + 2 * math.pi * i / n), cy + r * math.sin(phase + 2 * math.pi * i / n))
        for i in range(n)
    ]


def _star(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    pts = []
    for i in range(10):
        rad = r if i % 2 == 0 else r * 0.5  # a fat star stays legible at 64 px
        a = -math.pi / 2 + math.pi * i / 5
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return pts


def _heart(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    # The classic parametric heart spans x in [-16, 16], y in [-17, 12]; scale it to radius r.
    pts = []
    for i in range(120):
        t = 2 * math.pi * i / 120
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        pts.append((cx + x * r / 16, cy - (y + 2.5) * r / 16))
    return pts


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    shape: str,
    cx: float,
    cy: float,
    r: float,
    fill: tuple[int, int, int],
    hole: tuple[int, int, int],
) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        inner = r * 0.6  # punch the hole with the background colour
        draw.ellipse([cx - inner, cy - inner, cx + inner, cy + inner], fill=hole)
    elif shape == "square":
        s = r * 0.85  # a square of half-side r would look much larger than a circle of radius r
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
    elif shape == "triangle":
        draw.polygon(_regular_polygon(cx, cy + r * 0.15, r * 1.05, 3, -math.pi / 2), fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r * 0.7, cy), (cx, cy + r), (cx - r * 0.7, cy)], fill=fill)
    elif shape == "star":
        draw.polygon(_star(cx, cy, r), fill=fill)
    elif shape == "heart":
        draw.polygon(_heart(cx, cy, r), fill=fill)
    elif shape == "cross":
        w = r * 0.33
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")


def render(
    shape: str, colour: str, background: str, size: int = 64, rng: np.random.Generator | None = None
) -> Image.Image:
    """One `shape` in `colour` on a `background`-coloured square image, size and position jittered."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")
    for name in (colour, background):
        if name not in COLOURS:
            raise ValueError(f"unknown colour {name!r}; choose one of {', '.join(COLOUR_NAMES)}")
    if colour == background:
        raise ValueError(f"shape and background are both {colour!r}; the shape would be invisible")
    rng = rng if rng is not None else np.random.default_rng(0)
    big = size * SUPERSAMPLE
    extent = float(rng.uniform(*SIZE_RANGE)) * big
    r = extent / 2
    # Keep the whole shape inside the frame: the centre moves at most by the free margin.
    slack = (big - extent) / 2
    cx = big / 2 + float(rng.uniform(-slack, slack))
    cy = big / 2 + float(rng.uniform(-slack, slack))
    img = Image.new("RGB", (big, big), COLOURS[background])
    draw = ImageDraw.Draw(img)
    _draw_shape(draw, shape, cx, cy, r, COLOURS[colour], COLOURS[background])
    return img.resize((size, size), Image.BOX)  # box averaging = exact coverage, no ringing


def sample_scene(rng: np.random.Generator) -> ToyScene:
    """A uniformly random scene whose shape colour differs from its background."""
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    colour = COLOUR_NAMES[int(rng.integers(len(COLOUR_NAMES)))]
    others = [c for c in COLOUR_NAMES if c != colour]
    background = others[int(rng.integers(len(others)))]
    return ToyScene(shape, colour, background)


def image_to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB -> float [3, H, W] in [-1, 1], the range the autoencoder expects."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())


class ToyWorldDataset(torch.utils.data.Dataset):
    """Item k is a pure function of (seed, k): no state, identical in every worker and on resume."""

    def __init__(
        self,
        size: int = 64,
        length: int = 100000,
        seed: int = 0,
        templates: tuple[str, ...] = CAPTION_TEMPLATES,
        plain_p: float = 0.0,
        generic_p: float = 0.0,
    ) -> None:
        if length <= 0:
            raise ValueError(f"length must be positive, got {length}")
        for name, p in (("plain_p", plain_p), ("generic_p", generic_p)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        self.size = size
        self.length = length
        self.seed = seed
        self.templates = templates
        self.plain_p = plain_p  # share of captions without the background
        self.generic_p = generic_p  # share of captions that say "shape" instead of the shape's name

    def __len__(self) -> int:
        return self.length

    def scene(self, k: int) -> tuple[ToyScene, str, np.random.Generator]:
        rng = sample_rng(self.seed, k, TOY_STREAM)
        scene = sample_scene(rng)
        template = self.templates[int(rng.integers(len(self.templates)))]
        # Extra draws only when asked for, so the default stream (and its images) stays as it was.
        if self.plain_p > 0 and rng.random() < self.plain_p:
            template = PLAIN_TEMPLATES[int(rng.integers(len(PLAIN_TEMPLATES)))]
        generic = self.generic_p > 0 and rng.random() < self.generic_p
        return scene, scene.caption(template, generic), rng

    def __getitem__(self, k: int) -> dict:
        if not 0 <= k < self.length:
            raise IndexError(f"index {k} out of range for a toy world of {self.length} items")
        scene, caption, rng = self.scene(k)
        img = render(scene.shape, scene.colour, scene.background, self.size, rng)
        return {"image": image_to_tensor(img), "caption": caption, **scene.labels()}


def render_concept_images(
    shape: str, colour: str, n: int, folder: PathLike, seed: int = 0, size: int = 512, captions: bool = False
) -> list[Path]:
    """Write n PNGs of one (shape, colour) concept on varied backgrounds, e.g. for training_data/toy-*/.
    With `captions`, each PNG gets a sidecar `<stem>.txt` naming what is not the concept ("pink background"):
    the [filewords] of a training template, as a user captions photos."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([TOY_STREAM, int(seed) & (2**64 - 1)])
    others = [c for c in COLOUR_NAMES if c != colour]
    # Cycle through a shuffled background order so backgrounds vary evenly, not by luck.
    order = [others[int(i)] for i in rng.permutation(len(others))]
    paths = []
    for i in range(n):
        img = render(shape, colour, order[i % len(order)], size, rng)
        path = out / f"{shape}-{colour}-{i:03d}.png"
        img.save(path)
        if captions:
            path.with_suffix(".txt").write_text(f"{order[i % len(order)]} background\n")
        paths.append(path)
    return paths
