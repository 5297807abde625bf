"""What every command-line entry point shares: a user error is one line on stderr and exit code 2.

User errors are `LdmUserError`s, bad flags (argparse, via `ArgumentParser` here) and `OSError`s: a folder
that is a file, a read-only or full disk. Each becomes `error: <what>: <why>; <fix>`, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Callable
from typing import NoReturn

from ldm.errors import LdmUserError

# What to do about the OS errors a user can cause with a path (by errno; the default covers the rest).
_OS_FIXES = {
    errno.ENOSPC: "free some disk space or pass a folder on another disk",
    errno.EDQUOT: "free some of your disk quota or pass a folder on another disk",
    errno.EROFS: "the file system is read-only; pass a folder on a writable disk",
    errno.EACCES: "you may not write there; fix its permissions or pass another folder",
    errno.EPERM: "you may not write there; fix its permissions or pass another folder",
    errno.ENOTDIR: "a part of that path is a file, not a folder; pass another folder",
    errno.EEXIST: "a file is in the way; remove it or pass another path",
    errno.EISDIR: "that is a folder; pass a file path",
    errno.ENOENT: "check the path",
    errno.ENAMETOOLONG: "use a shorter path",
}


def os_error_message(exc: OSError) -> str:
    """`<path>: <reason>; <fix>` for an OSError (the REPL shows it too, without the `error:` prefix)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    fix = _OS_FIXES.get(exc.errno or 0, "check the path and the disk, then try again")
    if exc.filename is None:
        return f"{reason}; {fix}"
    target = f"{exc.filename} -> {exc.filename2}" if exc.filename2 is not None else f"{exc.filename}"
    return f"{target}: {reason}; {fix}"


def run_cli(body: Callable[[], int]) -> int:
    """Run a script's body; a user error (`LdmUserError`, `OSError`) becomes one `error: ...` line, exit 2."""
    try:
        return body()
    except LdmUserError as exc:
        sys.stderr.write(f"error: {exc}\n")  # the one place ldm writes to a terminal: CLI entry points
        return 2
    except OSError as exc:  # the file system said no (full, read-only, a file where a folder should be)
        sys.stderr.write(f"error: {os_error_message(exc)}\n")
        return 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line (`error: argument --scale: ...; see --help`), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}; see {self.prog} --help\n")


def configure_logging(verbose: bool) -> None:
    """Warnings only by default, so a user error stays the single line on stderr; -v shows progress."""
    import logging

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
