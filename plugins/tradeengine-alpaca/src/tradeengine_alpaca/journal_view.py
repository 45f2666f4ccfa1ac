"""What the Alpaca broker needs of the engine, and nothing more: the journal's open orders and
positions to reconcile against, a place to record differences, the kill switch to halt with,
the connection gauge, and the marks (prices Alpaca sent: fills, positions). `EngineView` reads
them from the engine that `on_start` hands the plugin; tests of the broker alone give it a view
of their own.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any, Protocol

from tradeengine.engine import SYSTEM
from tradeengine.schemas import AuditRecord, Order, utc_now

ACTOR = "alpaca"


class JournalView(Protocol):
    async def open_orders(self) -> list[Order]:
        """Every order the journal holds as open."""
        ...

    async def find_order(self, client_order_id: str) -> Order | None: ...

    async def positions(self) -> dict[str, float]:
        """Signed quantity per symbol, from the journal's fills."""
        ...

    async def record(self, action: str, reason: str, detail: dict[str, Any]) -> None:
        """Journals a reconciliation finding."""
        ...

    def halted(self) -> bool: ...

    async def halt(self, reason: str) -> None:
        """Stops trading (fail closed)."""
        ...

    def set_connected(self, connected: bool) -> None:
        """Publishes `broker_connection_status{broker="alpaca"}`."""
        ...

    async def set_marks(self, prices: Mapping[str, float]) -> None:
        """Marks the symbols at these prices (the gate's checks, the book's PnL, MARK_MAX_AGE)."""
        ...


class EngineView:
    """The engine's journal, kill switch and metrics."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    async def open_orders(self) -> list[Order]:
        engine = self.engine
        by_id = {o.id: o for o in await engine.store.orders() if o.is_open}
        for order in list(engine.open_orders.values()):
            by_id[order.id] = order
        for order_id in [i for i in by_id if i in engine.finished]:
            del by_id[order_id]
        return list(by_id.values())

    async def find_order(self, client_order_id: str) -> Order | None:
        order: Order | None = await self.engine.store.find_order(client_order_id)
        return order

    async def positions(self) -> dict[str, float]:
        await self.engine.journal.drain()
        positions: defaultdict[str, float] = defaultdict(float)
        for fill in await self.engine.store.fills():
            positions[fill.symbol] += fill.qty if fill.side == "buy" else -fill.qty
        return dict(positions)

    async def record(self, action: str, reason: str, detail: dict[str, Any]) -> None:
        record = AuditRecord(actor=ACTOR, action=action, reason=reason, detail=detail, at=utc_now())
        await self.engine.journal.append(record)

    def halted(self) -> bool:
        return self.engine.gate.kill_switch() is not None

    async def halt(self, reason: str) -> None:
        await self.engine.engage_kill_switch(ACTOR, reason)

    def set_connected(self, connected: bool) -> None:
        metrics = self.engine.pm.get_plugin("metrics")
        gauge = getattr(metrics, "broker_status", None)
        if gauge is not None:
            gauge.labels(broker=self.engine.settings.broker_name).set(1 if connected else 0)

    async def set_marks(self, prices: Mapping[str, float]) -> None:
        # The engine's own feeds mark as actor `system`, the one actor allowed to in live mode;
        # the gate's daily-loss and drawdown checks run on these marks as on any other.
        await self.engine.set_marks(dict(prices), actor=SYSTEM)
