"""The wire and journal formats: frozen msgspec Structs, decoders built once.

Orders and positions use Alpaca's field names where they overlap. New fields always get
defaults: the journal outlives the code that wrote it.
"""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from typing import Any, Literal

import msgspec

Side = Literal["buy", "sell"]
OrderType = Literal["market", "limit", "stop", "stop_limit"]
TimeInForce = Literal["day", "gtc", "ioc", "fok"]
OrderStatus = Literal[
    "pending_new",
    "new",
    "accepted",
    "partially_filled",
    "filled",
    "pending_cancel",
    "canceled",
    "expired",
    "rejected",
]

OPEN_STATUSES: frozenset[str] = frozenset(
    {"pending_new", "new", "accepted", "partially_filled", "pending_cancel"}
)
TERMINAL_STATUSES: frozenset[str] = frozenset({"filled", "canceled", "expired", "rejected"})


def time_ordered_id() -> str:
    """A UUID version 7 (RFC 9562): 48 bits of Unix milliseconds, then random bits. New ids
    sort after old ones, so the journal's indexes grow at their end instead of at random
    pages (cheaper commits), while staying unguessable and formatted as Alpaca's ids are."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10)) & ((1 << 80) - 1)
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 9562 variant
    return str(uuid.UUID(int=value))


def utc_now() -> str:
    """RFC 3339 time with microseconds, as Alpaca writes it."""
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


class OrderRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`POST /api/trading/orders`. Numbers may be JSON numbers or decimal strings."""

    symbol: str
    side: Side
    qty: float
    type: OrderType = "market"
    time_in_force: TimeInForce = "day"
    limit_price: float | None = None
    stop_price: float | None = None
    client_order_id: str | None = None
    reduce_only: bool = False
    stop_loss: float | None = None


class Order(msgspec.Struct, frozen=True, kw_only=True):
    """An order and its state. Every change of state is journaled as a new snapshot."""

    id: str
    client_order_id: str
    symbol: str
    side: Side
    type: OrderType
    qty: float
    time_in_force: TimeInForce = "day"
    limit_price: float | None = None
    stop_price: float | None = None
    stop_loss: float | None = None
    reduce_only: bool = False
    liquidation: bool = False
    filled_qty: float = 0.0
    filled_avg_price: float | None = None
    status: OrderStatus = "pending_new"
    created_at: str = ""
    updated_at: str = ""
    filled_at: str | None = None
    canceled_at: str | None = None
    reject_reason: str | None = None
    broker_order_id: str | None = None
    actor: str = ""

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def remaining_qty(self) -> float:
        return max(self.qty - self.filled_qty, 0.0)

    def same_request(self, request: OrderRequest) -> bool:
        """Whether `request` asks for exactly this order (idempotent retry)."""
        return (
            request.symbol == self.symbol
            and request.side == self.side
            and request.qty == self.qty
            and request.type == self.type
            and request.time_in_force == self.time_in_force
            and request.limit_price == self.limit_price
            and request.stop_price == self.stop_price
            and request.reduce_only == self.reduce_only
            and request.stop_loss == self.stop_loss
        )


class Position(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    qty: float
    side: Literal["long", "short", "flat"]
    avg_entry_price: float
    current_price: float | None
    market_value: float
    cost_basis: float
    unrealized_pl: float
    realized_pl: float


class Fill(msgspec.Struct, frozen=True, kw_only=True):
    """One execution. `exec_id` is the broker's execution id: a fill is booked once."""

    exec_id: str
    order_id: str
    client_order_id: str
    symbol: str
    side: Side
    qty: float
    price: float
    fee: float = 0.0
    at: str = ""
    liquidation: bool = False


class KillSwitchState(msgspec.Struct, frozen=True, kw_only=True):
    engaged: bool
    actor: str | None = None
    reason: str | None = None
    at: str | None = None
    last_reset_actor: str | None = None
    last_reset_reason: str | None = None
    last_reset_at: str | None = None
    canceled_orders: list[str] = msgspec.field(default_factory=list)


class RiskConfig(msgspec.Struct, frozen=True, kw_only=True):
    max_daily_loss: float
    max_position_size: float
    max_order_notional: float | None
    portfolio_heat_limit: float
    max_drawdown: float
    price_collar: float
    kill_switch_enabled: bool


class RiskConfigUpdate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`PUT /api/config/risk`: any subset of the limits; all or nothing."""

    max_daily_loss: float | None = None
    max_position_size: float | None = None
    max_order_notional: float | None = None
    portfolio_heat_limit: float | None = None
    max_drawdown: float | None = None
    price_collar: float | None = None
    kill_switch_enabled: bool | None = None


class ThrottleConfig(msgspec.Struct, frozen=True, kw_only=True):
    max_orders_per_minute: int
    enabled: bool
    tokens_available: float = 0.0


class ThrottleConfigUpdate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    max_orders_per_minute: int | None = None
    enabled: bool | None = None


# Broker events: what a broker plugin tells the engine about an order.


class BrokerAck(msgspec.Struct, frozen=True, tag="ack"):
    client_order_id: str
    broker_order_id: str | None = None
    status: OrderStatus = "new"


class BrokerFill(msgspec.Struct, frozen=True, tag="fill"):
    client_order_id: str
    exec_id: str
    qty: float
    price: float
    fee: float = 0.0
    at: str = ""


class BrokerCanceled(msgspec.Struct, frozen=True, tag="canceled"):
    client_order_id: str
    reason: str = ""


class BrokerExpired(msgspec.Struct, frozen=True, tag="expired"):
    client_order_id: str
    reason: str = ""


class BrokerRejected(msgspec.Struct, frozen=True, tag="rejected"):
    client_order_id: str
    reason: str = ""


BrokerEvent = BrokerAck | BrokerFill | BrokerCanceled | BrokerExpired | BrokerRejected


# Journal records.


class OrderRecord(msgspec.Struct, frozen=True, tag="order"):
    order: Order


class FillRecord(msgspec.Struct, frozen=True, tag="fill"):
    fill: Fill


class RejectionRecord(msgspec.Struct, frozen=True, tag="rejection", kw_only=True):
    client_order_id: str
    symbol: str
    side: str
    qty: float
    rule: str
    reason: str
    actor: str = ""
    at: str = ""


class KillSwitchRecord(msgspec.Struct, frozen=True, tag="kill_switch", kw_only=True):
    engaged: bool
    actor: str
    reason: str
    at: str


class ConfigRecord(msgspec.Struct, frozen=True, tag="config", kw_only=True):
    kind: Literal["risk", "throttle", "reduce_only"]
    values: dict[str, Any]
    actor: str
    at: str


class AuditRecord(msgspec.Struct, frozen=True, tag="audit", kw_only=True):
    """An operator action: who did what, when and why."""

    actor: str
    action: str
    reason: str = ""
    detail: dict[str, Any] = msgspec.field(default_factory=dict)
    at: str = ""


class TokenRecord(msgspec.Struct, frozen=True, kw_only=True):
    """An API token: only its SHA-256 hash is stored."""

    name: str
    role: Literal["viewer", "trader", "operator", "admin"]
    token_hash: str
    created_at: str
    revoked_at: str | None = None


Record = OrderRecord | FillRecord | RejectionRecord | KillSwitchRecord | ConfigRecord | AuditRecord

# Decoders built once. Order requests accept decimal strings, as Alpaca's clients send them.
order_request_decoder = msgspec.json.Decoder(OrderRequest, strict=False)
risk_update_decoder = msgspec.json.Decoder(RiskConfigUpdate, strict=False)
throttle_update_decoder = msgspec.json.Decoder(ThrottleConfigUpdate, strict=False)
record_encoder = msgspec.json.Encoder()
record_decoder = msgspec.json.Decoder(Record)
