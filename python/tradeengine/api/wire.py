"""Decoding requests and encoding replies with msgspec (decoders built once, by type)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from tradeengine.api.errors import UnsupportedMediaType
from tradeengine.errors import InvalidRequest

T = TypeVar("T")

_encoder = msgspec.json.Encoder()


@functools.cache
def decoder(kind: Any) -> msgspec.json.Decoder[Any]:
    # strict=False: numbers may come as decimal strings, as Alpaca's clients send them.
    return msgspec.json.Decoder(kind, strict=False)


def is_json(content_type: str) -> bool:
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def read_json(request: Request, kind: type[T], *, default: T | None = None) -> T:
    """The body decoded as `kind`. An empty body gives `default` when there is one (optional
    bodies), else a 422; a body that is not declared as JSON is a 415."""
    body = await request.body()
    if not body.strip():
        if default is not None:
            return default
        raise InvalidRequest("a JSON body is required", code="body_required")
    content_type = request.headers.get("content-type", "")
    if not is_json(content_type):
        raise UnsupportedMediaType(
            f"send the body as JSON with `Content-Type: application/json` (got {content_type!r})"
        )
    result: T = decoder(kind).decode(body)  # type: ignore[arg-type]
    return result


def read_query(request: Request, kind: type[T]) -> T:
    """The query string converted to `kind` (unknown parameters are ignored, as Alpaca does)."""
    return msgspec.convert(dict(request.query_params), kind, strict=False)


def reply(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        _encoder.encode(body),
        status_code=status,
        headers=dict(headers or {}),
        media_type="application/json",
    )
