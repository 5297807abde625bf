"""One machine, one heavy job: while a training run holds it, generation and comparison wait or are refused."""

from __future__ import annotations

from ldm.web.security import WebInputError
from ldm.web.state import WebState


def machine_busy(state: WebState) -> str | None:
    """Why the machine is busy (a training run holds it), or None when it is free."""
    training = state.services.get("training")
    return training.busy_message() if training is not None else None


def require_idle(state: WebState) -> None:
    """Refuse (HTTP 409) a request that needs the machine while a training run holds it."""
    reason = machine_busy(state)
    if reason is not None:
        raise WebInputError(f"{reason}; stop it on the Train page or wait until it finishes", status=409)
