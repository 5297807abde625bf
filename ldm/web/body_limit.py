"""Cap every request body while it streams in: a multipart upload at settings.max_upload_bytes, anything
else at settings.max_body_bytes. A declared Content-Length over the cap is refused before a byte is read;
a chunked body is cut off at the first chunk past it (so a huge upload never fills the disk first)."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ldm.web.settings import MiB, WebSettings


class BodyTooLarge(HTTPException):
    """An HTTPException, so FastAPI's body parsing passes it on instead of turning it into a 400."""

    def __init__(self, message: str):
        super().__init__(status_code=413, detail=message)


def size_text(limit: int) -> str:
    """E.g. "20 MiB", for messages."""
    return f"{limit / MiB:g} MiB" if limit >= MiB else f"{limit} bytes"


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, settings: WebSettings):
        self.app = app
        self.settings = settings

    def limit_for(self, headers: Headers) -> tuple[int, str]:
        if headers.get("content-type", "").lower().startswith("multipart/form-data"):
            limit = self.settings.max_upload_bytes
            return limit, f"the upload is larger than {size_text(limit)} in all; send fewer or smaller files at a time"
        limit = self.settings.max_body_bytes
        return limit, f"the request body is larger than {size_text(limit)}; send less at a time"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        limit, message = self.limit_for(headers)
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await JSONResponse({"error": message}, status_code=413)(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(message)
            return msg

        async def tracked_send(msg: Message) -> None:
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except BodyTooLarge:
            if started:  # the app answered before reading it all; nothing more to say
                return
            await JSONResponse({"error": message}, status_code=413)(scope, receive, send)
