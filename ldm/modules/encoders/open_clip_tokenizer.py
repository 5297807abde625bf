"""The CLIP BPE tokenizer with OpenCLIP's padding (id 0), for the SD 2.x text encoder.

OpenCLIP rows are BOS 49406, tokens, EOS 49407, then id 0 up to 77 positions. Id 0 is the BPE token
"!", so "!" must never become a special token: a tokenizer whose pad token is "!" (SD 2.x diffusers
folders ship one) splits every "!" out of the text and encodes "wow!!" as [wow, 0, 0] instead of
[wow, "!!"] (diffusers #4153). So the tokenizer is loaded with EOS as its own pad token and the padding
is rewritten to id 0 by position (the attention mask), never by string.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ldm.errors import ConfigError
from ldm.modules.encoders.tokenizer import resolve_tokenizer_dir

PAD_ID = 0
BOS_ID = 49406
EOS_ID = 49407
_EOS_TOKEN = "<|endoftext|>"


def _pad_by_id(ids: Any, mask: Any) -> Any:
    """input_ids with every position the attention mask marks as padding set to PAD_ID."""
    if isinstance(ids, torch.Tensor):
        return ids.masked_fill(torch.as_tensor(mask, device=ids.device) == 0, PAD_ID)
    if isinstance(ids, np.ndarray):
        return np.where(np.asarray(mask) == 0, PAD_ID, ids)
    if ids and isinstance(ids[0], list):
        return [[i if m else PAD_ID for i, m in zip(row, mrow)] for row, mrow in zip(ids, mask)]
    return [i if m else PAD_ID for i, m in zip(ids, mask)]


class OpenCLIPTokenizer:
    """A transformers CLIPTokenizer whose padding is id 0. Calls and attributes pass through to it
    (`tokenizer(texts, add_special_tokens=False)`, `bos_token_id`, `convert_ids_to_tokens`, ...);
    only `pad_token_id`/`pad_token` and the padded ids differ."""

    pad_token_id = PAD_ID

    def __init__(self, tokenizer: Any):
        self._tokenizer = tokenizer

    @property
    def pad_token(self) -> str:
        return self._tokenizer.convert_ids_to_tokens(PAD_ID)

    def __call__(self, text: Any, **kwargs: Any) -> Any:
        keep_mask = kwargs.pop("return_attention_mask", True)
        out = self._tokenizer(text, return_attention_mask=True, **kwargs)
        out["input_ids"] = _pad_by_id(out["input_ids"], out["attention_mask"])
        if not keep_mask:
            del out["attention_mask"]
        return out

    def __len__(self) -> int:
        return len(self._tokenizer)

    def __getattr__(self, name: str) -> Any:
        if name == "_tokenizer":  # not set yet (e.g. during unpickling): avoid recursing
            raise AttributeError(name)
        return getattr(self._tokenizer, name)


def load_open_clip_tokenizer(
    explicit: str | Path | None = None,
    model_path: str | Path | None = None,
    max_length: int = 77,
    subfolder: str = "tokenizer",
) -> OpenCLIPTokenizer:
    """The CLIP vocabulary from local files only (same search order as `load_tokenizer`), padded the
    OpenCLIP way."""
    from transformers import CLIPTokenizer  # heavy import, deferred until a tokenizer is needed

    # Not a tokenizer.json alone: one saved with pad "!" (diffusers' tokenizer_2) holds "!" as an added
    # special token that no load option removes; the same vocabulary is then read from elsewhere.
    path = resolve_tokenizer_dir(explicit, model_path, subfolder, fast_ok=False)
    # EOS as the pad token keeps "!" an ordinary BPE token even where the folder names "!" as pad.
    tokenizer = CLIPTokenizer.from_pretrained(str(path), local_files_only=True, pad_token=_EOS_TOKEN)
    if (tokenizer.bos_token_id, tokenizer.eos_token_id) != (BOS_ID, EOS_ID):
        raise ConfigError(
            f"tokenizer {str(path)!r} has BOS/EOS ids {tokenizer.bos_token_id}/{tokenizer.eos_token_id}, not "
            f"{BOS_ID}/{EOS_ID}: it is not the CLIP vocabulary; point it at a CLIP tokenizer folder or leave it unset"
        )
    tokenizer.model_max_length = max_length
    return OpenCLIPTokenizer(tokenizer)
