"""The per-image tokens of the paper's `per_image_tokens` option: one extra learned word per training image.

They live here, beside the embedding manager that learns them, and the dataset (ldm.data.templates) imports
them from here, so the model code never depends on the data package.
"""

from __future__ import annotations

# Rare characters that the CLIP BPE vocabulary encodes as ONE token each, also inside a caption (checked in
# tests/test_data.py). Thai and Devanagari consonants: unlikely in user prompts.
PER_IMAGE_TOKENS: list[str] = list("กคงชดตทนบพมยรลวสอ") + list("कगजतदनपबमयरलवशसह")
