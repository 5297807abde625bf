"""The FastAPI app: the guard middleware, the static files, one router per page, errors as JSON lines."""

from __future__ import annotations

import importlib
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from ldm.errors import LdmUserError
from ldm.web.body_limit import BodyLimitMiddleware
from ldm.web.pages import PAGES
from ldm.web.security import GuardMiddleware, WebInputError
from ldm.web.settings import WebSettings
from ldm.web.state import STATIC, WebState

log = logging.getLogger(__name__)


def create_app(settings: WebSettings) -> FastAPI:
    app = FastAPI(title="Textual Inversion", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.web = WebState(settings)
    app.add_middleware(BodyLimitMiddleware, settings=settings)
    app.add_middleware(GuardMiddleware, settings=settings)  # added last = runs first: Host/Origin/auth
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    for name, _title in PAGES:
        app.include_router(importlib.import_module(f"ldm.web.pages.{name}").router)

    @app.get("/")
    def home() -> RedirectResponse:
        return RedirectResponse("/generate")

    _add_error_handlers(app, settings)
    return app


def _add_error_handlers(app: FastAPI, settings: WebSettings) -> None:
    """Every failure is JSON {"error": one line} (app.js shows it in the page banner); the server goes on."""

    def short(message: str) -> str:  # paths inside the project read as the user's own, not the server's
        return message.replace(f"{settings.root.absolute()}/", "")

    @app.exception_handler(LdmUserError)
    async def user_error(request: Request, exc: LdmUserError) -> JSONResponse:
        status = exc.status if isinstance(exc, WebInputError) else 400
        return JSONResponse({"error": short(str(exc))}, status_code=status)

    @app.exception_handler(OSError)
    async def os_error(request: Request, exc: OSError) -> JSONResponse:
        from ldm.cli import os_error_message

        return JSONResponse({"error": short(os_error_message(exc))}, status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no page or action at {request.url.path}; use the links at the top"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": validation_message(exc)}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse(
            {"error": f"internal error ({type(exc).__name__}) in {request.url.path}; the server log has the details"},
            status_code=500,
        )


def validation_message(exc: RequestValidationError) -> str:
    """FastAPI's list of field errors as one line: the first field, what is wrong, and how many more."""
    errors = exc.errors()
    if not errors:
        return "the request is not valid; reload the page and try again"
    first = errors[0]
    where = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "form")]
    field = ".".join(where) or "the request"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{field}: {str(first.get('msg', 'invalid')).lower()}{more}; fix it and send again"
