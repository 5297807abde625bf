"""The run's CSV metrics (`csv/metrics.csv`) across resumes.

Lightning's CSVLogger deletes an existing metrics.csv when a logger opens its folder again, so `-r` would
lose the loss history before the resume. `keep_previous_metrics` moves it to `csv_parts/metrics-N.csv`
first (outside csv/, which the logger wants empty); `read_metrics` joins the parts in order, a later part
replacing the steps it trains again.
"""

from __future__ import annotations

import csv
from pathlib import Path

METRICS, PARTS = "metrics.csv", "csv_parts"
LOSS, LR = "train/loss", "lr"


def _parts(logdir: Path) -> list[Path]:
    """The earlier parts in order, then the current csv/metrics.csv."""
    parts = sorted((Path(logdir) / PARTS).glob("metrics-*.csv"), key=lambda p: int(p.stem.split("-", 1)[1]))
    current = Path(logdir) / "csv" / METRICS
    return parts + ([current] if current.is_file() else [])


def keep_previous_metrics(logdir: Path) -> Path | None:
    """Before a resumed run's loggers start: move csv/metrics.csv to csv_parts/metrics-N.csv (None if none)."""
    current = Path(logdir) / "csv" / METRICS
    if not current.is_file():
        return None
    target = Path(logdir) / PARTS / f"metrics-{len(_parts(logdir)) - 1}.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    current.replace(target)
    return target


def _rows(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except (OSError, csv.Error, UnicodeDecodeError):  # being rewritten right now: the next poll reads it
        return []


def read_metrics(logdir: Path, columns: tuple[str, ...] = (LOSS, LR)) -> dict[str, list[tuple[int, float]]]:
    """{column: [(step, value), ...]} sorted by step, over every part; steps count from 1 (optimizer steps
    done), and a step a later part logged again takes that part's value."""
    values: dict[str, dict[int, float]] = {column: {} for column in columns}
    for path in _parts(logdir):
        rows = [r for r in _rows(path) if (r.get("step") or "").isdigit()]
        first = min((int(r["step"]) for r in rows), default=None)
        for column in columns:
            if first is not None:  # a resumed part retrains from `first`: drop what the earlier parts said after it
                values[column] = {s: v for s, v in values[column].items() if s <= first}
            for row in rows:
                try:
                    values[column][int(row["step"]) + 1] = float(row[column])
                except (KeyError, TypeError, ValueError):
                    continue
    return {column: sorted(points.items()) for column, points in values.items()}
