"""Each training step's wall time, read inside the run: loading, start-up and the final save left out.

Ours logs `time/step_s` to its metrics CSV (ldm/callbacks/step_timer.py). diffusers' example shows a tqdm
bar, "Steps:  40%|...| 4/10 [...]", written to stderr after every step; the time each new count first
appears there is when that step ended. Both figures are the loop's period: from one step's end to the next.
"""

from __future__ import annotations

import re
import statistics
import threading
import time
from collections import deque
from pathlib import Path
from typing import IO

from ldm.callbacks.step_timer import STEP_TIME
from ldm.training.metrics_log import read_metrics

_EXAMPLE_BAR = re.compile(r"Steps:.*?\|\s*(\d+)/(\d+)\s*\[")


class ProgressWatch:
    """Reads a child's stderr as it comes: when each count of the example's step bar first appeared, and
    the last lines (for an error message)."""

    def __init__(self, stream: IO[bytes], keep: int = 40):
        self.counts: dict[int, float] = {}
        self.tail: deque[str] = deque(maxlen=keep)
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        piece = b""
        while chunk := stream.read1(65536):
            now = time.perf_counter()
            *done, piece = re.split(rb"[\r\n]", piece + chunk)
            for raw in done:
                self._line(raw.decode("utf-8", "replace"), now)
            # tqdm ends a display with the next one's "\r": time the bar when it arrives, not when it is ended
            self._bar(piece.decode("utf-8", "replace"), now)
        if piece:
            self._line(piece.decode("utf-8", "replace"), time.perf_counter())

    def _line(self, text: str, now: float) -> None:
        if not text.strip():
            return
        self.tail.append(text)
        self._bar(text, now)

    def _bar(self, text: str, now: float) -> None:
        match = _EXAMPLE_BAR.search(text)
        if match:
            self.counts.setdefault(int(match.group(1)), now)

    def join(self, timeout: float = 10) -> None:
        self._thread.join(timeout)

    def step_times(self) -> list[float]:
        """Seconds of step 1, 2, ...: between consecutive counts (step 1 from when the bar showed 0)."""
        return intervals(self.counts)


def intervals(counts: dict[int, float]) -> list[float]:
    """{count: time first seen} to the duration of each step whose start and end were both seen."""
    return [counts[n] - counts[n - 1] for n in sorted(counts) if n - 1 in counts]


def main_step_times(logdir: Path) -> list[float]:
    """`time/step_s` of the one run main.py wrote under `logdir` (its --logdir)."""
    runs = [p for p in Path(logdir).iterdir() if (p / "csv").is_dir()] if Path(logdir).is_dir() else []
    if len(runs) != 1:
        return []
    return [t for _, t in read_metrics(runs[0], (STEP_TIME,))[STEP_TIME]]


def steady(times: list[float], skip: int = 2) -> float | None:
    """The median step once `skip` warm-up steps are past (None when none are left)."""
    rest = times[skip:]
    return statistics.median(rest) if rest else None
