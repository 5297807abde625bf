"""Parse one invoke> command: a prompt followed by InvokeAI 2.x switches (-s 50 -S 42 -W 512 ...)."""

from __future__ import annotations

import argparse
import shlex

from ldm.errors import ConfigError
from ldm.generate import MAX_CFG_SCALE, MAX_ITERATIONS, SEED_RANGE
from ldm.models.diffusion.sample import MAX_STEPS
from ldm.validate import float_arg, int_arg


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so a bad switch never ends the REPL."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(f'{message}; type a prompt followed by switches, e.g. "a photo of *" -s 30 -S 42')

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        raise ConfigError((message or "").strip() or "invalid command")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="invoke>", add_help=False, allow_abbrev=False)
    p.add_argument("prompt", nargs="*")
    # Numbers are checked here (finite, in range) so a bad switch never reaches the sampler; the size's
    # multiple-of-8 and memory limits are Generate's check_size.
    p.add_argument("-s", "--steps", type=int_arg(1, MAX_STEPS))
    p.add_argument("-S", "--seed", type=int_arg(*SEED_RANGE))
    p.add_argument("-n", "--iterations", type=int_arg(1, MAX_ITERATIONS))
    p.add_argument("-W", "--width", type=int_arg(None))
    p.add_argument("-H", "--height", type=int_arg(None))
    p.add_argument("-C", "--cfg_scale", type=float_arg(0, MAX_CFG_SCALE))
    p.add_argument("-A", "--sampler", dest="sampler_name")
    p.add_argument("-I", "--init_img")
    p.add_argument("-f", "--strength", type=float_arg(0, 1, lo_open=True))
    p.add_argument("-e", "--ddim_eta", type=float_arg(0, 1))
    p.add_argument("-K", "--karras", action="store_true", default=None)
    p.add_argument("-g", "--grid", action="store_true", default=None)
    p.add_argument("-o", "--outdir")
    p.add_argument("-t", "--log_tokenization", action="store_true", default=None)
    return p


_PARSER = build_parser()


def parse_command(line: str) -> dict:
    """`"a photo of *" -s 30 -S 42` -> {"prompt": "a photo of *", "steps": 30, "seed": 42}.

    Unset switches are absent."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise ConfigError(f"cannot parse {line!r} ({exc}); close the quotes around the prompt") from None
    # A switch-looking word with a negative number (-S -1) is fine; a lone '-' word is not a switch.
    ns = _PARSER.parse_args(words)
    values = {k: v for k, v in vars(ns).items() if v is not None}
    values["prompt"] = " ".join(values.get("prompt", []))
    if not values["prompt"].strip():
        raise ConfigError("no prompt; type the prompt first, then switches")
    return values


def format_command(values: dict) -> str:
    """The inverse of parse_command (used for the `Dream` chunk and !history)."""
    order = [
        ("steps", "-s"),
        ("seed", "-S"),
        ("iterations", "-n"),
        ("width", "-W"),
        ("height", "-H"),
        ("cfg_scale", "-C"),
        ("sampler_name", "-A"),
        ("init_img", "-I"),
        ("strength", "-f"),
        ("ddim_eta", "-e"),
    ]
    parts = [shlex.quote(values["prompt"]) if values["prompt"] else '""']
    for key, flag in order:
        if key == "strength" and not values.get("init_img"):
            continue  # strength means nothing without an init image
        if values.get(key) is not None:
            parts += [flag, shlex.quote(str(values[key]))]
    for key, flag in (("karras", "-K"), ("grid", "-g")):
        if values.get(key):
            parts.append(flag)
    return " ".join(parts)
