"""Pure ASGI middleware (no BaseHTTPMiddleware: it buffers and breaks streaming)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tradeengine.api.errors import PayloadTooLarge, error_response

MAX_BODY_BYTES = 64 * 1024


class BodyLimitMiddleware:
    """Answers 413 to a body over `max_bytes` without reading it all: at once when
    Content-Length says so, else as soon as the streamed body passes the limit (the handler
    reading it gets PayloadTooLarge, which the error handlers turn into the 413)."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            response = error_response(
                413, PayloadTooLarge.code, self._message(), headers={"Connection": "close"}
            )
            await response(scope, receive, send)
            return
        if declared == -1:
            response = error_response(400, "bad_request", "Content-Length is not a number")
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise PayloadTooLarge(self._message())
            return message

        await self.app(scope, limited_receive, send)

    def _message(self) -> str:
        return f"the request body is over the limit of {self.max_bytes} bytes"


def _content_length(scope: Scope) -> int | None:
    """The declared body length; -1 when the header is not a number."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return -1
            return length if length >= 0 else -1
    return None
