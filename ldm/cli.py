"""What every command-line entry point shares: a user error is one line on stderr and exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Callable

from ldm.errors import LdmUserError


def run_cli(body: Callable[[], int]) -> int:
    """Run a script's body; `LdmUserError` becomes `error: <message>` on stderr (no traceback), exit 2."""
    try:
        return body()
    except LdmUserError as exc:
        sys.stderr.write(f"error: {exc}\n")  # the one place ldm writes to a terminal: CLI entry points
        return 2


def configure_logging(verbose: bool) -> None:
    """Warnings only by default, so a user error stays the single line on stderr; -v shows progress."""
    import logging

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
