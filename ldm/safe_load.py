"""Read weights files without ever running code from them.

`.safetensors` are plain data. `.ckpt`/`.pt`/`.bin` are pickles: they are read with
`torch.load(weights_only=True)` plus an explicit allow-list of the few non-tensor objects that legacy
SD checkpoints carry (a Lightning callback class used as a dict key, NumPy scalars). Anything else a
pickle asks to import is refused with `UnsafeCheckpointError`.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ldm.errors import CheckpointError, UnsafeCheckpointError

log = logging.getLogger(__name__)

PathLike = str | Path


class LegacyLightningObject:
    """Stand-in for Lightning classes pickled into old checkpoints (e.g. the ModelCheckpoint class
    used as a key of `callbacks`). It is never called; it only lets the dict be rebuilt."""


def _numpy_allow_list() -> list:
    core = getattr(np, "_core", None) or np.core  # numpy 2 moved numpy.core to numpy._core
    multiarray = core.multiarray
    entries: list = [np.dtype, np.ndarray]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        entries += [(multiarray.scalar, f"{module}.scalar"), (multiarray._reconstruct, f"{module}._reconstruct")]
    entries += [type(np.dtype(name)) for name in ("float16", "float32", "float64", "int32", "int64", "bool")]
    return entries


_LIGHTNING_NAMES = (
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
    "lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint",
    "pytorch_lightning.callbacks.early_stopping.EarlyStopping",
)


def safe_globals() -> list:
    return [(LegacyLightningObject, name) for name in _LIGHTNING_NAMES] + _numpy_allow_list()


# torch 2.x says "Unsupported global: GLOBAL getattr was not ..." (older: "GLOBAL getattr"); the name follows GLOBAL
_GLOBAL_RE = re.compile(r"(?:Unsupported global:\s*)?GLOBAL\s+([\w.]+)|Unsupported global:\s*([\w.]+)")


def safe_torch_load(path: PathLike, extra_globals: Iterable = ()) -> Any:
    """torch.load restricted to tensors, containers and the allow-list; raises our errors, one line each."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(safe_globals() + list(extra_globals)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _GLOBAL_RE.search(str(exc))
        if found:
            name = found.group(1) or found.group(2)
            raise UnsafeCheckpointError(
                f"refusing to load {path}: its pickle asks for '{name}', which is not on the allow-list "
                "of what model and embedding files contain (it could run code); use a .safetensors copy or a "
                "trusted source"
            ) from None
        # torch's text starts with advice to retry with weights_only=False; report only the actual reason.
        detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(exc))
        reason = detail.group(1).strip()[:200] if detail else _first_line(exc)
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({reason}); pass a .ckpt/.pt/.safetensors weights file"
        ) from None
    except Exception as exc:  # any other failure of a malformed pickle is still "not a checkpoint"
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({_first_line(exc)}); "
            "pass a .ckpt/.pt/.safetensors weights file"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _read_into_owned_tensors(path: PathLike) -> dict[str, torch.Tensor]:
    """Read every tensor into memory of its own, allocated by torch (aligned, anonymous), with plain reads.

    safetensors' load_file hands out views of a memory map instead: the weights then sit in file pages at
    arbitrary alignment, which made a bf16 UNet forward ~20% slower on CPU here, and keeps the whole file
    mapped (counted in RSS) while the model holds any of it.
    """
    import json

    out: dict[str, torch.Tensor] = {}
    with open(path, "rb") as fh:
        size = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(size))
        base = 8 + size
        for name, info in header.items():
            if name == "__metadata__":
                continue
            begin, end = info["data_offsets"]
            tensor = torch.empty(info["shape"], dtype=_SAFETENSORS_DTYPES[info["dtype"]])
            if tensor.numel():
                fh.seek(base + begin)
                buffer = tensor.view(-1).view(torch.uint8).numpy()
                if fh.readinto(memoryview(buffer)) != end - begin or buffer.nbytes != end - begin:
                    raise ValueError(f"tensor {name!r} is truncated")
            out[name] = tensor
    return out


def read_safetensors(path: PathLike) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), "pt") as f:  # validates the header and offsets
            dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
        if dtypes <= set(_SAFETENSORS_DTYPES):
            return _read_into_owned_tensors(path)
        return load_file(str(path), device="cpu")  # rarer dtypes (fp8, ...): safetensors' own reader
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable .safetensors file ({_first_line(exc)})") from None


def read_state_dict(path: PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a model file (.ckpt/.pt/.pth/.bin pickle or .safetensors), unwrapped from `state_dict`."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}; pass the path of an SD v1 .ckpt or .safetensors file")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder; pass the .ckpt or .safetensors file inside it")
    if path.suffix.lower() == ".safetensors":
        obj: Any = read_safetensors(path)
    else:
        obj = safe_torch_load(path)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path} holds no state dict (found {type(obj).__name__}); is it a model checkpoint?")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path} holds no tensors; is it a model checkpoint?")
    return tensors
