"""Which model family an embedding's width belongs to, for messages that refuse a term of the wrong width.

Nothing in an embedding file says which model it was trained for; its width (the text encoder's token
embedding size) is the only clue, and users recognise the family name, not the number.
"""

from __future__ import annotations

from collections.abc import Iterable

from ldm.embeddings.loaded import EmbeddingFileError, LoadedEmbedding

# Text-encoder width -> the model family whose embeddings have it.
WIDTH_FAMILIES = {
    768: "SD 1.x (CLIP ViT-L)",
    1024: "SD 2.x (OpenCLIP ViT-H)",
    1280: "SDXL (its OpenCLIP ViT-bigG half, clip_g)",
    2048: "SDXL (CLIP ViT-L + OpenCLIP ViT-bigG)",
}
# An SDXL file holds one term per text encoder: clip_l [n, 768] and clip_g [n, 1280].
SDXL_PAIR = "SDXL (clip_l 768 + clip_g 1280)"


def family_of_width(width: int) -> str | None:
    """The family whose text encoder is `width` wide, or None for a width no known family has."""
    return WIDTH_FAMILIES.get(int(width))


def width_and_family(width: int) -> str:
    """E.g. "768 wide for SD 1.x (CLIP ViT-L)"; just "32 wide" for a width no known family has."""
    family = family_of_width(width)
    return f"{width} wide for {family}" if family else f"{width} wide"


def width_mismatch(width: int, model_width: int) -> str:
    """The clause after a term's name: its width and the family it fits, the model's width, what to use."""
    theirs, ours = family_of_width(width), family_of_width(model_width)
    made_for = f"an embedding for {theirs}" if theirs else "a width no known model family has"
    return (
        f"is {width} wide, {made_for}, but this model's text encoder takes {model_width}: "
        f"use an embedding trained for {ours or 'this model'}"
    )


def check_width(terms: Iterable[LoadedEmbedding], model_width: int, where: str) -> None:
    """A one-line EmbeddingFileError naming the first term whose width is not `model_width`, its width and
    the family it fits (e.g. a 768-wide SD 1.x term on an SD 2.x model)."""
    for term in terms:
        if term.dim != model_width:
            raise EmbeddingFileError(f"{where}: term {term.name!r} {width_mismatch(term.dim, model_width)}")
