"""Pure ASGI middleware (no BaseHTTPMiddleware: it buffers and breaks streaming)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Protocol

from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
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


UNMATCHED_ROUTE = "unmatched"
"""The route label of a request no route matched (any 404 path): one value, so a scanner
cannot grow the label set."""
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class HttpObserver(Protocol):
    def observe_http(self, route: str, method: str, status: str, seconds: float) -> None: ...


class HttpMetricsMiddleware:
    """Counts and times every HTTP request by the path template of the route that matched
    (`/api/trading/orders/{order_id}`, never the id itself), the method (unknown methods as
    `OTHER`) and the status class (`2xx`...). A request that raised before answering counts as
    `5xx`. The time runs from the request's arrival to the end of its answer.

    The template is found from the endpoint the router put in the scope, so matching costs
    nothing beyond the router's own work. `metrics` is the metrics plugin (None when it is
    disabled: then requests pass through untouched)."""

    def __init__(self, app: ASGIApp, metrics: HttpObserver | None) -> None:
        self.app = app
        self.metrics = metrics
        self._templates: dict[Any, str] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.metrics is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            self.metrics.observe_http(
                self._route(scope),
                method,
                f"{status // 100}xx" if status else "5xx",
                time.perf_counter() - started,
            )

    def _route(self, scope: Scope) -> str:
        endpoint = scope.get("endpoint")
        if endpoint is None:
            return UNMATCHED_ROUTE
        if self._templates is None:
            self._templates = route_templates(scope["app"].routes)
        return self._templates.get(endpoint, UNMATCHED_ROUTE)


def route_templates(routes: Iterable[BaseRoute], prefix: str = "") -> dict[Any, str]:
    """endpoint -> path template of every route, mounted ones (plugin routes) included."""
    templates: dict[Any, str] = {}
    for route in routes:
        if isinstance(route, Route | WebSocketRoute):
            templates[route.endpoint] = prefix + route.path
        elif isinstance(route, Mount):
            inner: Any = route.app
            while not hasattr(inner, "routes") and hasattr(inner, "app"):
                inner = inner.app  # through wrappers such as the plugin routes' guard
            templates.update(route_templates(getattr(inner, "routes", ()), prefix + route.path))
    return templates
