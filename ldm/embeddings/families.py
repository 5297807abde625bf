"""Which model family an embedding's width belongs to, for messages that refuse a term of the wrong width.

Nothing in an embedding file says which model it was trained for; its width (the text encoder's token
embedding size) is the only clue, and users recognise the family name, not the number.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ldm.embeddings.loaded import EmbeddingFileError, LoadedEmbedding

# Text-encoder width -> the model family whose embeddings have it.
WIDTH_FAMILIES = {
    768: "SD 1.x (CLIP ViT-L)",
    1024: "SD 2.x (OpenCLIP ViT-H)",
    1280: "SDXL (its OpenCLIP ViT-bigG half, clip_g)",
    2048: "SDXL (CLIP ViT-L + OpenCLIP ViT-bigG)",
}
SDXL_WIDTH = 2048


def family_of_width(width: int) -> str | None:
    """The family whose text encoder is `width` wide, or None for a width no known family has."""
    return WIDTH_FAMILIES.get(int(width))


def width_and_family(width: int) -> str:
    """E.g. "768 wide for SD 1.x (CLIP ViT-L)"; just "32 wide" for a width no known family has."""
    family = family_of_width(width)
    return f"{width} wide for {family}" if family else f"{width} wide"


def _halves(part_widths: Sequence[int]) -> str:
    return " + ".join(f"{key} {w}" for key, w in zip(("clip_l", "clip_g"), part_widths))


def width_mismatch(width: int, model_width: int, part_widths: Sequence[int] | None = None) -> str:
    """The clause after a term's name: its width and the family it fits, the model's width, what to use.
    `part_widths`: the model's text encoders' widths when it has two (SDXL, also a small SDXL-shaped one)."""
    theirs, ours = family_of_width(width), family_of_width(model_width)
    made_for = f"an embedding for {theirs}" if theirs else "a width no known model family has"
    if (part_widths is not None and len(part_widths) == 2) or model_width == SDXL_WIDTH:
        halves = _halves(part_widths if part_widths is not None else (768, 1280))
        return (
            f"is {width} wide, {made_for}, but this is an SDXL model, whose embeddings hold {halves} "
            f"({model_width} wide): use an SDXL embedding (a clip_l/clip_g file)"
        )
    return (
        f"is {width} wide, {made_for}, but this model's text encoder takes {model_width}: "
        f"use an embedding trained for {ours or 'this model'}"
    )


def check_width(
    terms: Iterable[LoadedEmbedding], model_width: int, where: str, part_widths: Sequence[int] | None = None
) -> None:
    """A one-line EmbeddingFileError naming the first term whose width is not `model_width`, its width and
    the family it fits (e.g. a 768-wide SD 1.x term on an SD 2.x or SDXL model). With the model's
    `part_widths` (two text encoders), an SDXL term must also split where the model does."""
    for term in terms:
        if term.dim != model_width:
            raise EmbeddingFileError(
                f"{where}: term {term.name!r} {width_mismatch(term.dim, model_width, part_widths)}"
            )
        theirs = term.part_widths
        if part_widths is not None and theirs is not None and tuple(theirs) != tuple(part_widths):
            raise EmbeddingFileError(
                f"{where}: term {term.name!r} holds {_halves(theirs)}, but this model's text encoders take "
                f"{_halves(part_widths)}; use an embedding trained for this model"
            )
