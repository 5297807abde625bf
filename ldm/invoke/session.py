"""One invoke> session: run commands, save images with their recipe, remember history.

The session never prints; it hands each line of output to `emit` (the script passes `print`).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from pathlib import Path

from ldm.cli import os_error_message
from ldm.errors import LdmUserError
from ldm.fileio import check_output_dir, save_png
from ldm.image_utils import make_grid
from ldm.invoke.metadata import png_chunks, read_dream_command
from ldm.invoke.switches import format_command, parse_command

log = logging.getLogger(__name__)
QUIT = {"q", "quit", "exit"}
_NAME = re.compile(r"^(\d{6})\.")


def legacy_model_hash(path: Path | None) -> str:
    """A1111's short model hash: sha256 of 64 KiB at offset 1 MiB (cheap even for 4 GB files)."""
    if path is None or not Path(path).is_file():
        return ""
    with open(path, "rb") as fh:
        fh.seek(0x100000)
        return hashlib.sha256(fh.read(0x10000)).hexdigest()[:8]


def next_prefix(outdir: Path) -> int:
    numbers = [int(m.group(1)) for p in outdir.glob("*.png") if (m := _NAME.match(p.name))]
    return max(numbers, default=-1) + 1


class InvokeSession:
    def __init__(self, generate, outdir: Path, defaults: dict, emit: Callable[[str], None]):
        self.gen, self.outdir, self.emit = generate, Path(outdir), emit
        self.defaults = dict(defaults)
        self.history: list[str] = []
        self._hash: str | None = None

    def model_hash(self) -> str:
        if self._hash is None:
            self._hash = legacy_model_hash(Path(self.gen.weights) if self.gen.weights else None)
        return self._hash

    def handle(self, line: str) -> bool:
        """Run one line; False means quit. Errors are reported and the session goes on."""
        line = line.strip()
        if not line:
            return True
        if line in QUIT:
            return False
        try:
            if line.startswith("!"):
                self._command(line)
            else:
                self._generate(line)
        except LdmUserError as exc:
            self.emit(f"** {exc}")
        except OSError as exc:  # a full disk or an outdir that is a file fails this command, not the session
            self.emit(f"** {os_error_message(exc)}")
        return True

    def _command(self, line: str) -> None:
        name, _, arg = line.partition(" ")
        if name == "!history":
            for i, entry in enumerate(self.history):
                self.emit(f"[{i}] {entry}")
        elif name == "!fetch":
            command = read_dream_command(arg.strip())
            self.emit(f"fetched: {command}")
            self._generate(command)
        elif name == "!load":
            term = self.gen.library.load_by_name(arg.strip())
            self.emit(f"loaded embedding {getattr(term, 'name', arg.strip())}")
        elif name == "!embeddings":
            for text in self.gen.library.describe() or ["(no embeddings loaded)"]:
                self.emit(text)
        else:
            raise LdmUserError(f"unknown command {name!r}; use !history, !fetch <png>, !embeddings, !load <name> or q")

    def _recipe(self, line: str) -> dict:
        from ldm.prompts.parser import split_negative

        values = {**self.defaults, **parse_command(line)}
        positive, negative = split_negative(values["prompt"])
        values.update(prompt=positive, negative_prompt=negative)
        return values

    def _generate(self, line: str) -> list[Path]:
        recipe = self._recipe(line)
        self.history.append(line)
        if recipe.pop("log_tokenization", False):
            for text in self.gen.conditioner.tokenization_report(recipe["prompt"]):
                self.emit(text)
        outdir = check_output_dir(recipe.pop("outdir", None) or self.outdir, "outdir")  # before minutes of sampling
        grid = recipe.pop("grid", False)
        results = self.gen.prompt2image(
            recipe["prompt"],
            iterations=recipe["iterations"],
            steps=recipe["steps"],
            seed=recipe.get("seed"),
            cfg_scale=recipe["cfg_scale"],
            ddim_eta=recipe["ddim_eta"],
            width=recipe["width"],
            height=recipe["height"],
            sampler_name=recipe["sampler_name"],
            init_img=recipe.get("init_img"),
            strength=recipe["strength"],
            negative_prompt=recipe["negative_prompt"],
            karras=recipe["karras"],
        )
        recipe["embeddings"] = self.gen.conditioner.used_embeddings(recipe["prompt"])
        written = self._save(results, recipe, outdir, grid)
        for path in written:
            self.emit(f"{path}: {format_command({**recipe, 'seed': _seed_of(path)})}")
        return written

    def _save(self, results: list, recipe: dict, outdir: Path, grid: bool) -> list[Path]:
        prefix = next_prefix(outdir)
        name = getattr(self.gen, "weights", "") or ""
        if grid:
            image = make_grid([img for img, _ in results])
            chunks = png_chunks({**recipe, "seed": results[0][1]}, str(name), self.model_hash())
            return [save_png(image, outdir / f"{prefix:06}.{results[0][1]}.grid.png", chunks)]
        paths = []
        for offset, (image, seed) in enumerate(results):
            chunks = png_chunks({**recipe, "seed": seed}, str(name), self.model_hash())
            paths.append(save_png(image, outdir / f"{prefix + offset:06}.{seed}.png", chunks))
        return paths


def _seed_of(path: Path) -> int | None:
    parts = path.name.split(".")
    return int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else None
