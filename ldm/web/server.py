"""Serve the UI with uvicorn. Off localhost the server needs --auth and says so."""

from __future__ import annotations

import logging

from ldm.errors import ConfigError
from ldm.web.settings import WebSettings

log = logging.getLogger(__name__)


def parse_auth(value: str | None) -> tuple[str, str] | None:
    if value is None:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ConfigError(f"--auth {value!r} is not user:password; pass both, e.g. --auth me:a-long-password")
    return user, password


def check_exposure(settings: WebSettings) -> None:
    """Every interface means anyone on the network: refuse without a password, warn with one."""
    if settings.host in ("127.0.0.1", "localhost", "::1"):
        return
    if settings.auth is None:
        raise ConfigError(
            f"--host {settings.host} opens the UI to the network; add --auth user:password, or drop --host"
        )
    log.warning(
        "serving on %s:%d: anyone who can reach it and knows the password can train and generate",
        settings.host,
        settings.port,
    )


def serve(settings: WebSettings) -> None:
    import uvicorn

    from ldm.web.app import create_app

    check_exposure(settings)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning")
