"""The wire types of the HTTP API that are not engine types: errors, query strings, replies.

Engine types (orders, positions, configs) live in `tradeengine.schemas`; these are the API's own.
They feed both the decoders and `/openapi.json`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from tradeengine.schemas import Order

NonNegativeSeconds = Annotated[float, msgspec.Meta(ge=0, le=600)]


class ErrorDetail(msgspec.Struct, frozen=True, omit_defaults=True):
    code: str
    message: str
    rule: str | None = None


class ErrorBody(msgspec.Struct, frozen=True):
    """Every error the API answers: `{"error": {"code", "message", "rule"?}}`."""

    error: ErrorDetail


ComponentStatus = Literal["ok", "degraded", "halted", "down"]


class Component(msgspec.Struct, frozen=True, kw_only=True):
    """One part of the service in `GET /api/health`."""

    status: ComponentStatus
    state: str
    """What the part is doing, in one word: `active`, `reducing`, `halted`, `stopping`
    (engine); `writing`, `failing` (store); `connected`, `disconnected` (broker); `engaged`,
    `released` (kill switch)."""


class Health(msgspec.Struct, frozen=True, kw_only=True):
    """`GET /api/health`: answers without a token, so it tells no names or reasons.

    `status` is the worst of the components: `halted` when the kill switch is engaged (or
    the engine halted), `degraded` when the broker is disconnected, the journal's last write
    failed or the engine is in reduce-only mode, `shutting_down` once a shutdown was asked."""

    status: Literal["ok", "halted", "degraded", "shutting_down"]
    version: str
    trading_mode: str
    execution_mode: str
    trading_state: str
    accepting_orders: bool
    kill_switch_engaged: bool
    broker_connected: bool
    uptime_seconds: float
    components: dict[str, Component] = msgspec.field(default_factory=dict)
    """`engine`, `store`, `broker`, `kill_switch`."""


class ReasonRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An optional body naming why an operator acts (kill switch, liquidation, reset)."""

    reason: str = ""


class ReasonQuery(msgspec.Struct, frozen=True):
    reason: str = ""


class ShutdownRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`POST /api/admin/shutdown`: new orders stop at once; reads go on for `grace_seconds`
    (to watch positions, as the runbook does), then the server stops gracefully."""

    reason: str = ""
    grace_seconds: NonNegativeSeconds = 5.0


class ShutdownAccepted(msgspec.Struct, frozen=True, kw_only=True):
    shutting_down: bool
    open_orders: int
    exit_in_seconds: float | None


class ListOrdersQuery(msgspec.Struct, frozen=True):
    """`GET /api/trading/orders`, filtered like Alpaca's list orders."""

    status: Literal["open", "closed", "all"] = "open"
    symbols: str = ""
    """Comma-separated symbols, e.g. `AAPL,MSFT`; empty means all."""
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 50


class AuditQuery(msgspec.Struct, frozen=True):
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100


class CanceledOrders(msgspec.Struct, frozen=True):
    canceled: list[str]
    count: int


class Liquidation(msgspec.Struct, frozen=True):
    orders: list[Order]
    count: int


class ClearedCache(msgspec.Struct, frozen=True):
    cleared: int


class Marks(msgspec.Struct, frozen=True):
    prices: dict[str, float]


MarketPrices = dict[str, float]
"""`POST /api/market/prices`: symbol -> price, e.g. `{"AAPL": 200.0}`."""

Document = dict[str, Any]
"""A JSON object whose keys the engine owns (status, health details)."""
