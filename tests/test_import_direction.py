"""Imports point one way (docs/architecture.md): the model code never reaches into training, data or the
Lightning callbacks, and the building blocks never reach into the model, training or data. Every file under
ldm/ is parsed, so an import inside a function (a lazy one) counts as much as one at the top."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LDM = Path(__file__).resolve().parent.parent / "ldm"

# package -> the packages it must not import (a package covers its subpackages)
FORBIDDEN = {
    "ldm.models": ("ldm.training", "ldm.data", "ldm.callbacks"),
    "ldm.modules": ("ldm.models", "ldm.training", "ldm.data", "ldm.callbacks"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(LDM.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> list[tuple[int, list[str]]]:
    """Per import statement anywhere in the source: its line and the absolute module names it may load
    (`from ldm import training` may load ldm or ldm.training); relative imports are resolved."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, [alias.name]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - (node.level - 1)] + ([base] if base else []))
            found.append((node.lineno, [base] + [f"{base}.{alias.name}" for alias in node.names]))
    return sorted(found)


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """`module:line imports name` for each import that a rule of FORBIDDEN bans."""
    banned = [
        b for owner, group in FORBIDDEN.items() if module == owner or module.startswith(owner + ".") for b in group
    ]
    bad = []
    for line, names in imported_modules(source, module, is_package):
        hits = [n for n in names for b in banned if n == b or n.startswith(b + ".")]
        if hits:
            bad.append(f"{module}:{line} imports {hits[0]}")
    return bad


def test_the_checker_sees_lazy_relative_and_package_imports():
    source = (
        "import torch\n"
        "from ldm.modules.attention import CrossAttention\n"
        "def hook(self):\n"
        "    from ldm.training.objective import TextualInversionObjective\n"
        "    import ldm.data.templates\n"
        "from ldm import callbacks\n"
        "from ...training import config\n"
        "from . import sampling\n"
    )
    found = violations(source, "ldm.models.diffusion.ddpm")
    assert found == [
        "ldm.models.diffusion.ddpm:4 imports ldm.training.objective",
        "ldm.models.diffusion.ddpm:5 imports ldm.data.templates",
        "ldm.models.diffusion.ddpm:6 imports ldm.callbacks",
        "ldm.models.diffusion.ddpm:7 imports ldm.training",
    ], found
    assert violations(source, "ldm.generate") == []  # the rules bind models and modules only
    assert violations("from ldm.models.diffusion.ddpm import LatentDiffusion\n", "ldm.modules.foo") != []
    # in ldm/modules/__init__.py, `..` is ldm itself
    assert violations("from .. import models\n", "ldm.modules", is_package=True) == ["ldm.modules:1 imports ldm.models"]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_point_one_way(package):
    root = LDM / package.split(".", 1)[1]
    files = sorted(root.rglob("*.py"))
    assert len(files) > 3, f"{root} has no Python files: the test would pass vacuously"
    bad = [v for f in files for v in violations(f.read_text(encoding="utf-8"), module_name(f), f.name == "__init__.py")]
    assert bad == [], "imports against the direction of docs/architecture.md:\n" + "\n".join(bad)
