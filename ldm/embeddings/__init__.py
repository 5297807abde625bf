"""Embedding files: the neutral in-memory term (`LoadedEmbedding`) and readers/writers for every format."""

from ldm.embeddings.formats import read_embedding_file, write_embedding_file
from ldm.embeddings.loaded import (
    A1111_PNG,
    DIFFUSERS,
    EMB_PARAMS,
    FORMATS,
    PAPER,
    SDXL,
    EmbeddingFileError,
    LoadedEmbedding,
)

__all__ = [
    "LoadedEmbedding",
    "EmbeddingFileError",
    "read_embedding_file",
    "write_embedding_file",
    "FORMATS",
    "PAPER",
    "EMB_PARAMS",
    "DIFFUSERS",
    "A1111_PNG",
    "SDXL",
]
