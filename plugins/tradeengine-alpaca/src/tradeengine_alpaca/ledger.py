"""What this broker has told the engine about each order, so that what Alpaca says — on the
stream, in any order and more than once, or by polling after the stream was down — becomes
each execution booked exactly once.

A fill from the trade_updates stream carries Alpaca's execution id and is reported as is. An
order read over REST has no execution ids, only its cumulative `filled_qty` and average price:
when that is ahead of what was reported, the difference is reported as one catch-up fill whose
id is derived from the cumulative quantity (the same catch-up twice is the same id) and whose
price keeps the average exact. A stream fill that arrives after a catch-up already covered it
would push the reported quantity past the cumulative quantity Alpaca has ever shown: it is
dropped. Everything here is pure and runs on the event loop.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from alpaca.trading.models import Order as AlpacaOrder

from tradeengine.schemas import (
    BrokerAck,
    BrokerCanceled,
    BrokerEvent,
    BrokerExpired,
    BrokerFill,
    BrokerRejected,
    Order,
    OrderStatus,
    utc_now,
)

QTY_EPSILON = 1e-9

# Alpaca's statuses of an order it holds, as the engine's acknowledged statuses.
_ACCEPTED = frozenset({"pending_new", "accepted", "accepted_for_bidding", "pending_review", "held"})
# Alpaca's final statuses that end an order without a complete fill.
_ENDED: dict[str, type[BrokerCanceled | BrokerExpired | BrokerRejected]] = {
    "canceled": BrokerCanceled,
    "expired": BrokerExpired,
    "rejected": BrokerRejected,
}
FINAL_STATUSES = frozenset({"filled", *_ENDED})


def _number(value: Any) -> float | None:
    """Alpaca's decimal strings (or numbers) as floats; None for null, "" and garbage."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z")
    return str(getattr(value, "value", value))


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An Alpaca order as this plugin needs it, from REST (alpaca-py's model) or the stream."""

    client_order_id: str
    broker_order_id: str
    status: str
    symbol: str
    side: str
    qty: float
    filled_qty: float
    filled_avg_price: float | None
    updated_at: str

    @classmethod
    def from_model(cls, order: AlpacaOrder) -> Snapshot:
        return cls(
            client_order_id=order.client_order_id,
            broker_order_id=str(order.id),
            status=_text(order.status),
            symbol=order.symbol or "",
            side=_text(order.side),
            qty=_number(order.qty) or 0.0,
            filled_qty=_number(order.filled_qty) or 0.0,
            filled_avg_price=_number(order.filled_avg_price),
            updated_at=_text(order.updated_at),
        )

    @classmethod
    def from_dict(cls, order: dict[str, Any]) -> Snapshot:
        return cls(
            client_order_id=str(order.get("client_order_id") or ""),
            broker_order_id=str(order.get("id") or ""),
            status=str(order.get("status") or ""),
            symbol=str(order.get("symbol") or ""),
            side=str(order.get("side") or ""),
            qty=_number(order.get("qty")) or 0.0,
            filled_qty=_number(order.get("filled_qty")) or 0.0,
            filled_avg_price=_number(order.get("filled_avg_price")),
            updated_at=str(order.get("updated_at") or ""),
        )

    @property
    def is_open(self) -> bool:
        return self.status not in FINAL_STATUSES


@dataclass(frozen=True, slots=True)
class TradeUpdate:
    """One trade_updates message. Alpaca-py's own model drops a message without `timestamp`
    silently; this one keeps it (a lost fill is worse than a missing time)."""

    event: str
    order: Snapshot
    execution_id: str | None
    price: float | None
    qty: float | None
    timestamp: str

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> TradeUpdate | None:
        data = message.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("order"), dict):
            return None
        execution_id = data.get("execution_id")
        return cls(
            event=str(data.get("event") or ""),
            order=Snapshot.from_dict(data["order"]),
            execution_id=str(execution_id) if execution_id else None,
            price=_number(data.get("price")),
            qty=_number(data.get("qty")),
            timestamp=str(data.get("timestamp") or ""),
        )


@dataclass(slots=True)
class Tracked:
    """One order of ours, and what the engine has been told about it."""

    client_order_id: str
    symbol: str
    liquidation: bool = False
    broker_order_id: str | None = None
    acked: bool = False
    reported_qty: float = 0.0
    reported_notional: float = 0.0
    known_filled_qty: float = 0.0
    """The largest cumulative filled quantity Alpaca has shown for the order."""
    final_status: str | None = None
    exec_ids: set[str] = field(default_factory=set)
    in_flight: bool = False
    """A submit is under way: Alpaca's silence about the order proves nothing yet."""
    since: float = field(default_factory=time.monotonic)

    @property
    def settled(self) -> bool:
        """Final at Alpaca, and every share it filled was reported."""
        return (
            self.final_status is not None
            and self.known_filled_qty <= self.reported_qty + QTY_EPSILON
        )


def _ack_status(status: str) -> OrderStatus:
    return "accepted" if status in _ACCEPTED else "new"


class Ledger:
    """The tracked orders by client order id; settled ones are kept (up to `keep`) so that a
    late or repeated message about them is still recognised."""

    def __init__(self, keep: int = 10_000) -> None:
        self.orders: OrderedDict[str, Tracked] = OrderedDict()
        self.keep = keep

    def get(self, client_order_id: str) -> Tracked | None:
        return self.orders.get(client_order_id)

    def track(self, order: Order) -> Tracked:
        """Starts tracking an engine order (new, or restored from the journal at start)."""
        tracked = self.orders.get(order.client_order_id)
        if tracked is None:
            filled = order.filled_qty
            tracked = Tracked(
                client_order_id=order.client_order_id,
                symbol=order.symbol,
                liquidation=order.liquidation,
                broker_order_id=order.broker_order_id,
                acked=order.status != "pending_new",
                reported_qty=filled,
                reported_notional=filled * (order.filled_avg_price or 0.0),
                known_filled_qty=filled,
            )
            self.orders[order.client_order_id] = tracked
            self._evict()
        return tracked

    def _evict(self) -> None:
        """Forgets the oldest settled orders beyond `keep` (an unsettled one is never
        forgotten)."""
        excess = len(self.orders) - self.keep
        if excess > 0:
            for client_order_id in [c for c, t in self.orders.items() if t.settled][:excess]:
                del self.orders[client_order_id]

    def unsettled(self) -> list[Tracked]:
        return [t for t in self.orders.values() if not t.settled]

    def on_snapshot(self, snapshot: Snapshot) -> list[BrokerEvent]:
        """The events that bring the engine to what Alpaca's order says (REST)."""
        tracked = self.orders.get(snapshot.client_order_id)
        if tracked is None:
            return []
        events: list[BrokerEvent] = []
        self._ack(tracked, snapshot, events)
        tracked.known_filled_qty = max(tracked.known_filled_qty, snapshot.filled_qty)
        missing = snapshot.filled_qty - tracked.reported_qty
        if missing > QTY_EPSILON and snapshot.filled_avg_price is not None:
            total = snapshot.filled_qty * snapshot.filled_avg_price
            price = (total - tracked.reported_notional) / missing
            if not (math.isfinite(price) and price > 0):
                price = snapshot.filled_avg_price
            events.append(
                BrokerFill(
                    snapshot.client_order_id,
                    exec_id=f"{snapshot.broker_order_id}:filled:{snapshot.filled_qty!r}",
                    qty=missing,
                    price=price,
                    at=snapshot.updated_at or utc_now(),
                )
            )
            tracked.reported_qty += missing
            tracked.reported_notional += missing * price
        self._end(tracked, snapshot, "", events)
        return events

    def on_trade_update(self, update: TradeUpdate) -> list[BrokerEvent]:
        """The events one stream message brings (none for a duplicate, or for an execution a
        catch-up fill already reported)."""
        snapshot = update.order
        tracked = self.orders.get(snapshot.client_order_id)
        if tracked is None:
            return []
        events: list[BrokerEvent] = []
        self._ack(tracked, snapshot, events)
        if update.event in ("fill", "partial_fill"):
            self._fill(tracked, update, events)
        tracked.known_filled_qty = max(tracked.known_filled_qty, snapshot.filled_qty)
        if update.event in _ENDED:
            self._end(tracked, snapshot, update.event, events)
        elif update.event == "fill":
            self._end(tracked, snapshot, "filled", events)
        return events

    def _ack(self, tracked: Tracked, snapshot: Snapshot, events: list[BrokerEvent]) -> None:
        if snapshot.broker_order_id:
            tracked.broker_order_id = snapshot.broker_order_id
        if not tracked.acked and snapshot.status != "rejected" and snapshot.broker_order_id:
            events.append(
                BrokerAck(
                    snapshot.client_order_id, snapshot.broker_order_id, _ack_status(snapshot.status)
                )
            )
            tracked.acked = True

    def _fill(self, tracked: Tracked, update: TradeUpdate, events: list[BrokerEvent]) -> None:
        exec_id, qty, price = update.execution_id, update.qty, update.price
        if not exec_id or qty is None or price is None or qty <= 0:
            return
        if exec_id in tracked.exec_ids:
            return
        tracked.exec_ids.add(exec_id)
        cumulative = max(tracked.known_filled_qty, update.order.filled_qty)
        if update.order.filled_qty <= 0:
            cumulative = max(cumulative, tracked.reported_qty + qty)
        if tracked.reported_qty + qty > cumulative + QTY_EPSILON:
            return  # a catch-up fill already reported this execution
        events.append(
            BrokerFill(
                tracked.client_order_id,
                exec_id=exec_id,
                qty=qty,
                price=price,
                at=update.timestamp or utc_now(),
            )
        )
        tracked.reported_qty += qty
        tracked.reported_notional += qty * price

    def _end(
        self, tracked: Tracked, snapshot: Snapshot, event: str, events: list[BrokerEvent]
    ) -> None:
        status = event or snapshot.status
        if status not in FINAL_STATUSES or tracked.final_status is not None:
            return
        tracked.final_status = status
        ended = _ENDED.get(status)
        if ended is not None:
            events.append(ended(tracked.client_order_id, f"{status} at Alpaca"))
