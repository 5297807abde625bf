"""Lightning's messages go to our log (stdout), its routine noise to the debug level.

Lightning adds its own stderr handler when it is imported before logging is configured, so its banner
("GPU available", "TPU available", "Tip: ...") would reach stderr ahead of a one-line error. Python
warnings are logged too, so stderr carries only the run's own errors.
"""

from __future__ import annotations

import logging

# Substrings of messages every run prints that say nothing about this run: shown with -v only.
NOISE = (
    "`weights_only` was not set",
    "module(s) in eval mode",
    "Modules in eval mode",  # the model summary table
    "Tip: For seamless",
    "TPU available:",
    "HPU available:",
    "isinstance(treespec, LeafSpec)",
)
LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning")


class DemoteNoise(logging.Filter):
    """On a handler: NOISE records pass as DEBUG when the root logs debug, and are dropped otherwise."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not any(part in record.getMessage() for part in NOISE):
            return True
        if not logging.getLogger().isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


def route_lightning_logs() -> None:
    """Call after logging.basicConfig: Lightning's loggers and Python warnings reach the root handlers."""
    logging.captureWarnings(True)
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, DemoteNoise) for f in handler.filters):
            handler.addFilter(DemoteNoise())
