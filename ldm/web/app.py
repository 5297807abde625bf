"""The FastAPI app: the guard middleware, the static files, one router per page, errors as JSON lines."""

from __future__ import annotations

import importlib

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from ldm.errors import LdmUserError
from ldm.web.pages import PAGES
from ldm.web.security import GuardMiddleware, WebInputError
from ldm.web.settings import WebSettings
from ldm.web.state import STATIC, WebState


def create_app(settings: WebSettings) -> FastAPI:
    app = FastAPI(title="Textual Inversion", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.web = WebState(settings)
    app.add_middleware(GuardMiddleware, settings=settings)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    for name, _title in PAGES:
        app.include_router(importlib.import_module(f"ldm.web.pages.{name}").router)

    @app.get("/")
    def home() -> RedirectResponse:
        return RedirectResponse("/generate")

    @app.exception_handler(LdmUserError)
    async def user_error(request: Request, exc: LdmUserError) -> JSONResponse:
        status = exc.status if isinstance(exc, WebInputError) else 400
        return JSONResponse({"error": str(exc)}, status_code=status)

    @app.exception_handler(OSError)
    async def os_error(request: Request, exc: OSError) -> JSONResponse:
        from ldm.cli import os_error_message

        return JSONResponse({"error": os_error_message(exc)}, status_code=400)

    return app
