"""Fidelity and editability of a toy-world concept, the paper's two metrics in miniature.

For each way of naming the concept (the learned embedding, the init word, the true words) the same
seeds draw K images of "a photo of a {}" and K of "a photo of a {} on a <colour> background" per colour.
The attribute classifier then decides:
  fidelity    = share of plain samples whose shape and colour are the concept's;
  editability = share of background samples with the asked background while shape and colour hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from ldm.data.toy_world import COLOUR_NAMES, SHAPES
from ldm.errors import ConfigError
from ldm.image_utils import pil_to_tensor
from ldm.toy.classifier import IMAGE_SIZE, AttributeClassifier

PLAIN_PROMPT = "a photo of a {}"
BACKGROUND_PROMPT = "a photo of a {} on a {} background"


@dataclass(frozen=True)
class Concept:
    shape: str
    colour: str

    @classmethod
    def parse(cls, text: str) -> Concept:
        """ "purple star" -> Concept("star", "purple")."""
        words = text.split()
        if len(words) != 2 or words[0] not in COLOUR_NAMES or words[1] not in SHAPES:
            raise ConfigError(
                f"concept {text!r} is not '<colour> <shape>'; colours: {', '.join(COLOUR_NAMES)}; "
                f"shapes: {', '.join(SHAPES)}"
            )
        return cls(words[1], words[0])

    @property
    def words(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass
class Scores:
    name: str  # how the concept was named in the prompt
    fidelity: float
    editability: float
    background: float  # background as asked, whatever the shape
    samples: int


@dataclass
class SamplingSettings:
    samples: int = 32
    steps: int = 25
    sampler: str = "ddim"
    cfg_scale: float = 5.0
    seed: int = 1000
    size: int = IMAGE_SIZE


def default_backgrounds(concept: Concept, n: int = 4) -> list[str]:
    """n background colours other than the concept's own, spread over the palette."""
    others = [c for c in COLOUR_NAMES if c != concept.colour]
    step = max(1, len(others) // n)
    return others[::step][:n]


def sample_images(generate, prompt: str, settings: SamplingSettings, seed: int) -> torch.Tensor:
    """settings.samples images of `prompt` from one seed, as a tensor [K, 3, H, W] in [-1, 1]."""
    images = generate.prompt2image(
        prompt,
        iterations=1,
        batch_size=settings.samples,
        steps=settings.steps,
        seed=seed,
        cfg_scale=settings.cfg_scale,
        sampler_name=settings.sampler,
        width=settings.size,
        height=settings.size,
    )
    return torch.cat([pil_to_tensor(image) for image, _ in images])


def score(
    generate,
    classifier: AttributeClassifier,
    phrase: str,
    concept: Concept,
    backgrounds: Sequence[str],
    settings: SamplingSettings,
    name: str | None = None,
) -> Scores:
    """Scores for one way (`phrase`) of naming `concept`; the seeds are the same for every phrase."""
    shape_id, colour_id = SHAPES.index(concept.shape), COLOUR_NAMES.index(concept.colour)
    pred = classifier.predict(sample_images(generate, PLAIN_PROMPT.format(phrase), settings, settings.seed))
    holds = (pred["shape"] == shape_id) & (pred["colour"] == colour_id)
    edits, bg_right = [], []
    for j, background in enumerate(backgrounds):
        prompt = BACKGROUND_PROMPT.format(phrase, background)
        p = classifier.predict(sample_images(generate, prompt, settings, settings.seed + 1 + j))
        bg_ok = p["background"] == COLOUR_NAMES.index(background)
        bg_right.append(bg_ok)
        edits.append(bg_ok & (p["shape"] == shape_id) & (p["colour"] == colour_id))
    return Scores(
        name or phrase,
        float(holds.float().mean()),
        float(torch.cat(edits).float().mean()),
        float(torch.cat(bg_right).float().mean()),
        settings.samples * (1 + len(backgrounds)),
    )


def table(rows: Sequence[Scores]) -> str:
    lines = [f"{'prompt word':<28} {'fidelity':>9} {'editability':>12} {'background':>11} {'samples':>8}"]
    for r in rows:
        lines.append(f"{r.name:<28} {r.fidelity:>9.1%} {r.editability:>12.1%} {r.background:>11.1%} {r.samples:>8}")
    return "\n".join(lines)


def as_dict(rows: Sequence[Scores]) -> list[dict]:
    return [asdict(r) for r in rows]


def load_classifier(path) -> AttributeClassifier:
    from pathlib import Path

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"classifier {path} does not exist; it comes with the toy model in models/toy-world/ "
            "(or make it with scripts/train_toy_world.py)"
        )
    classifier = AttributeClassifier()
    try:
        classifier.load_state_dict(load_file(str(path)))
    except (SafetensorError, RuntimeError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"classifier {path} is not the toy attribute classifier ({first}); "
            "use models/toy-world/classifier.safetensors"
        ) from None
    return classifier.eval()


def evaluate_toy(
    config,
    weights,
    classifier_path,
    concept: Concept,
    init_word: str,
    embedding_path=None,
    placeholder: str = "*",
    backgrounds: Sequence[str] | None = None,
    settings: SamplingSettings | None = None,
) -> dict:
    """Rows for the embedding (when given), the init word and the true words; same seeds for each."""
    from ldm.generate import Generate

    settings = settings or SamplingSettings()
    backgrounds = list(backgrounds) if backgrounds else default_backgrounds(concept)
    for background in backgrounds:
        if background not in COLOUR_NAMES:
            raise ConfigError(
                f"background {background!r} is not a toy-world colour; use some of: {', '.join(COLOUR_NAMES)}"
            )
    if settings.samples < 1:
        raise ConfigError(f"samples {settings.samples}; use 1 or more")
    classifier = load_classifier(classifier_path)
    paths = [embedding_path] if embedding_path else []
    generate = Generate(config=config, weights=weights, embedding_paths=paths, sampler_name=settings.sampler)
    rows = []
    if embedding_path:
        rows.append(
            score(generate, classifier, placeholder, concept, backgrounds, settings, name=f"embedding ({placeholder})")
        )
    rows.append(score(generate, classifier, init_word, concept, backgrounds, settings, name=f"init word ({init_word})"))
    rows.append(
        score(generate, classifier, concept.words, concept, backgrounds, settings, name=f"true words ({concept.words})")
    )
    true = rows[-1]
    result = {"concept": concept.words, "backgrounds": backgrounds, "settings": asdict(settings), "rows": as_dict(rows)}
    if embedding_path:
        result["fidelity_vs_true_words"] = rows[0].fidelity / true.fidelity if true.fidelity > 0 else None
    return result
