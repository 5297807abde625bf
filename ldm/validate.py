"""Checks for the numbers a user gives (flags, invoke> switches, API arguments, config values).

One piece of code for every boundary: NaN, inf and out-of-range values are refused with a `ConfigError`
that names the input and the range, before they can reach a sampler or an optimizer.

    finite_float("--scale", args.scale, 0, 100)           # API / config values
    p.add_argument("--scale", type=float_arg(0, 100))     # argparse: refused while parsing, model unloaded
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from ldm.errors import ConfigError

Number = float | int


def _range_text(lo: Number | None, hi: Number | None, lo_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"a number {'above' if lo_open else 'from'} {lo:g} {'up ' if lo_open else ''}to {hi:g}"
    if lo is not None:
        return f"a number {'above' if lo_open else 'of at least'} {lo:g}"
    if hi is not None:
        return f"a number of at most {hi:g}"
    return "a finite number"


def float_problem(value: object, lo: Number | None = None, hi: Number | None = None, lo_open: bool = False) -> str:
    """Why `value` is not a usable float in the range, e.g. "not a finite number; pass ..." ('' when it is)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return f"not a number; pass {_range_text(lo, hi, lo_open)}"
    if not math.isfinite(number):  # '1e999' parses as inf
        return f"not a finite number; pass {_range_text(lo, hi, lo_open)}"
    below = lo is not None and (number <= lo if lo_open else number < lo)
    if below or (hi is not None and number > hi):
        return f"out of range; pass {_range_text(lo, hi, lo_open)}"
    return ""


def finite_float(
    name: str, value: object, lo: Number | None = None, hi: Number | None = None, *, lo_open: bool = False
) -> float:
    """`value` as a float, or ConfigError `"<name> <value>: <why>; pass <range>"` (e.g. "strength nan: not a ...").

    `lo`/`hi` are inclusive; `lo_open=True` makes `lo` exclusive (a learning rate must be above 0)."""
    problem = float_problem(value, lo, hi, lo_open)
    if problem:
        raise ConfigError(f"{name} {value}: {problem}")
    return float(value)  # type: ignore[arg-type]


def int_in_range(name: str, value: object, lo: int | None = 1, hi: int | None = None) -> int:
    """`value` as an int in [lo, hi], or ConfigError naming `name` and the range (floats like 2.0 are fine)."""
    number = _whole(value)
    if number is None:
        raise ConfigError(f"{name} {value}: not a whole number; pass {_int_range_text(lo, hi)}")
    if (lo is not None and number < lo) or (hi is not None and number > hi):
        raise ConfigError(f"{name} {value}: out of range; pass {_int_range_text(lo, hi)}")
    return number


def _whole(value: object) -> int | None:
    """An int from an int, an integral float or a string of either ("7", "2.0", "1e3"); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())  # exact for big seeds, which a float would round
    except ValueError:
        pass
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) and number == int(number) else None


def _int_range_text(lo: int | None, hi: int | None) -> str:
    if lo is not None and hi is not None:
        return f"a whole number from {lo} to {hi}"
    if lo is not None:
        return f"a whole number of at least {lo}"
    return f"a whole number of at most {hi}" if hi is not None else "a whole number"


def float_arg(lo: Number | None = None, hi: Number | None = None, *, lo_open: bool = False) -> Callable[[str], float]:
    """An argparse `type=`: argparse prefixes the flag (`argument --scale: nan is not a finite number; ...`)."""

    def parse(text: str) -> float:
        problem = float_problem(text, lo, hi, lo_open)
        if problem:
            raise argparse.ArgumentTypeError(f"{text} is {problem}")
        return float(text)

    parse.__name__ = "number"  # argparse's fallback message says "invalid number value"
    return parse


def int_arg(lo: int | None = 1, hi: int | None = None) -> Callable[[str], int]:
    """An argparse `type=` for counts (images, steps, batches): whole numbers in [lo, hi]."""

    def parse(text: str) -> int:
        try:
            return int_in_range("", text.strip(), lo, hi)
        except ConfigError as exc:  # " 1.5: not a whole number; ..." -> "1.5 is not a whole number; ..."
            raise argparse.ArgumentTypeError(str(exc).strip().replace(": ", " is ", 1)) from None

    parse.__name__ = "count"
    return parse
