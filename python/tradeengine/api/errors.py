"""One error shape for every answer that is not a success:
`{"error": {"code": ..., "message": ..., "rule"?: ...}}`, with the HTTP status of the error.

`exception_handlers` maps what can go wrong to that shape: the engine's errors (with their own
status, code and rule), Starlette's 404/405, msgspec decode errors (422), the core's argument
errors, and, last, anything unexpected (a logged 500: a bug, never something a client sent).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

import tradeengine
from tradeengine.api.models import ErrorBody, ErrorDetail
from tradeengine.errors import EngineError

log = logging.getLogger("tradeengine.api")

_encoder = msgspec.json.Encoder()
ORDERS_PATH = "/api/trading/orders"


class Unauthorized(EngineError):
    status = 401
    code = "unauthorized"


class Forbidden(EngineError):
    status = 403
    code = "forbidden"


class PayloadTooLarge(EngineError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(EngineError):
    status = 415
    code = "unsupported_media_type"


def error_body(code: str, message: str, rule: str | None = None) -> bytes:
    return _encoder.encode(ErrorBody(ErrorDetail(code=code, message=message, rule=rule)))


def error_response(
    status: int,
    code: str,
    message: str,
    rule: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    return Response(
        error_body(code, message, rule),
        status_code=status,
        headers=dict(headers or {}),
        media_type="application/json",
    )


def retry_after_header(seconds: float | None) -> dict[str, str]:
    """Retry-After in whole seconds, rounded up, at least 1 (HTTP allows no fractions)."""
    if seconds is None or not math.isfinite(seconds):
        return {"Retry-After": "1"}
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


async def engine_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, EngineError)
    headers = retry_after_header(exc.retry_after) if exc.status == 429 else None
    if exc.status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="tradeengine"'}
    refused = exc.rule is None or exc.code == "shutting_down"
    if refused and request.method == "POST" and request.url.path == ORDERS_PATH:
        # Risk blocks are counted by the metrics plugin; these refusals (409 conflicts, 503
        # while shutting down or failing closed) are counted here, by their code.
        engine = getattr(request.app.state, "engine", None)
        metrics = engine.pm.get_plugin("metrics") if engine is not None else None
        if metrics is not None:
            metrics.count_refusal(exc.code)
    return error_response(exc.status, exc.code, exc.message, exc.rule, headers)


_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
}


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail
    if exc.status_code == 404:
        message = f"no such endpoint: {request.url.path}"
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        message = f"{request.method} is not allowed on {request.url.path} (allowed: {allowed})"
    return error_response(exc.status_code, code, message, headers=exc.headers)


async def decode_error(request: Request, exc: Exception) -> Response:
    """msgspec's messages name the field, e.g. `Expected 'str', got 'int' - at '$.symbol'`."""
    code = "validation_error" if isinstance(exc, msgspec.ValidationError) else "invalid_json"
    return error_response(422, code, str(exc))


_CORE_ERRORS: dict[type[Exception], tuple[int, str]] = {
    tradeengine.InvalidArgumentError: (422, "invalid_argument"),
    tradeengine.ConfigError: (422, "invalid_config"),
    tradeengine.UnknownOrderError: (404, "not_found"),
    tradeengine.InvalidStateError: (409, "conflict"),
}


async def core_error(request: Request, exc: Exception) -> Response:
    for kind, (status, code) in _CORE_ERRORS.items():
        if isinstance(exc, kind):
            return error_response(status, code, str(exc))
    return await server_error(request, exc)


async def client_disconnect(request: Request, exc: Exception) -> Response:
    # Nobody reads this answer: the client went away while sending its body.
    return error_response(400, "client_disconnected", "the client closed the connection")


async def server_error(request: Request, exc: Exception) -> Response:
    log.error(
        "ERROR unexpected %s on %s %s: %s",
        type(exc).__name__,
        request.method,
        request.url.path,
        exc,
        exc_info=exc,
    )
    return error_response(500, "internal_error", "internal error: the details are in the log")


exception_handlers: dict[Any, Any] = {
    EngineError: engine_error,
    HTTPException: http_error,
    msgspec.DecodeError: decode_error,
    tradeengine.TradeEngineError: core_error,
    ClientDisconnect: client_disconnect,
    Exception: server_error,
}
