"""`/openapi.json`: built from the route table and the msgspec schemas, so it cannot drift
from what is served and decoded."""

from __future__ import annotations

import re
import typing
from typing import Any

import msgspec

from tradeengine import __version__
from tradeengine.api.auth import ROLES
from tradeengine.api.models import ErrorBody
from tradeengine.api.routes import Endpoint

REF_TEMPLATE = "#/components/schemas/{name}"
_ERROR_REF = REF_TEMPLATE.format(name="ErrorBody")
_PATH_PARAM = re.compile(r"{(\w+)}")

# Errors any endpoint may answer, besides its own.
_COMMON_ERRORS = {
    413: "The body is over the size limit",
    415: "The body is not JSON",
    422: "The request does not decode or validate",
}
_AUTH_ERRORS = {
    401: "No token, or a token that is not valid",
    403: "The token's role is too low, or (no tokens configured) the client is not loopback",
}
_DESCRIPTIONS = {
    403: "Refused: a role too low, or a risk block (kill switch, reduce-only)",
    404: "Not found",
    409: "Conflict (e.g. a client_order_id reused for another order, not in backtest mode)",
    429: "Throttled: retry after Retry-After seconds",
    503: "Fail closed: the journal or the broker is unavailable, or shutting down",
}

DESCRIPTION = """\
Execution and risk gateway. Every error answers `{"error": {"code", "message", "rule"?}}`.
Authenticate with `Authorization: Bearer <token>` (roles viewer < trader < operator < admin;
`x-required-role` on each operation). With no token configured, paper mode serves loopback
clients only, as admin. See docs/api.md."""


def _query_parameters(kind: Any) -> list[dict[str, Any]]:
    hints = typing.get_type_hints(kind, include_extras=True)
    info = msgspec.inspect.type_info(kind)
    assert isinstance(info, msgspec.inspect.StructType)
    parameters = []
    for field in info.fields:
        schema = msgspec.json.schema(hints[field.name])
        if not field.required:
            schema["default"] = field.default
        parameters.append(
            {"name": field.name, "in": "query", "required": field.required, "schema": schema}
        )
    return parameters


def _error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {"schema": {"$ref": REF_TEMPLATE.format(name="ErrorBody")}}
        },
    }


def _operation(endpoint: Endpoint, schemas: dict[Any, Any]) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": endpoint.handler.__name__,
        "summary": endpoint.summary,
        "tags": [endpoint.path.split("/")[2] if endpoint.path.startswith("/api/") else "ops"],
        "x-required-role": endpoint.access,
    }
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAM.findall(endpoint.path)
    ]
    if endpoint.query is not None:
        parameters += _query_parameters(endpoint.query)
    if parameters:
        operation["parameters"] = parameters
    if endpoint.body is not None:
        operation["requestBody"] = {
            "required": endpoint.body_required,
            "content": {"application/json": {"schema": schemas[endpoint.body]}},
        }
    success: dict[str, Any] = {"description": "Success"}
    if endpoint.response is not None:
        success["content"] = {endpoint.media_type: {"schema": schemas[endpoint.response]}}
    else:
        success["content"] = {endpoint.media_type: {"schema": {"type": "string"}}}
    responses: dict[str, Any] = {str(endpoint.status): success}
    if endpoint.status == 201:
        responses["200"] = {**success, "description": "Idempotent retry: the original order"}
    errors = dict(_COMMON_ERRORS)
    if endpoint.access != "public":
        operation["security"] = [{"bearer": []}]
        errors.update(_AUTH_ERRORS)
    for status in endpoint.errors:
        errors.setdefault(status, _DESCRIPTIONS[status])
    for status, description in sorted(errors.items()):
        responses[str(status)] = _error_response(description)
    operation["responses"] = responses
    return operation


def build_openapi(table: tuple[Endpoint, ...]) -> dict[str, Any]:
    kinds = {ErrorBody}
    for endpoint in table:
        kinds.update(k for k in (endpoint.body, endpoint.response) if k is not None)
    ordered = list(kinds)
    generated, components = msgspec.json.schema_components(ordered, ref_template=REF_TEMPLATE)
    schemas = dict(zip(ordered, generated, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in table:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint, schemas)
    return {
        "openapi": "3.1.0",
        "info": {"title": "tradeengine", "version": __version__, "description": DESCRIPTION},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": f"An API token; roles: {' < '.join(ROLES)}",
                }
            },
        },
    }
