"""The simulated market (broker `sim`, EXECUTION_MODE=backtest).

Market orders fill at the mark +/- SIM_SLIPPAGE_BPS; limit orders rest until the mark crosses
their price; stop orders trigger when the mark reaches the stop (a stop_limit then rests as a
limit). IOC and FOK orders that are not marketable at once are canceled. SIM_PARTIAL_FILLS
splits each fill in two; SIM_LATENCY_MS delays every acknowledgement.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Mapping
from typing import Any

from tradeengine.broker import BrokerContext, BrokerFactory
from tradeengine.hookspecs import hookimpl
from tradeengine.schemas import (
    BrokerAck,
    BrokerCanceled,
    BrokerEvent,
    BrokerFill,
    BrokerRejected,
    Order,
    utc_now,
)


@hookimpl
def register_brokers(register: Callable[[str, BrokerFactory], None]) -> None:
    register("sim", SimBroker)


class SimBroker:
    name = "sim"

    def __init__(self, context: BrokerContext) -> None:
        self.context = context
        settings = context.settings
        self.slippage = settings.sim_slippage_bps / 10_000
        self.partial_fills = settings.sim_partial_fills
        self.latency = settings.sim_latency_ms / 1000
        self.resting: dict[str, Order] = {}
        self.triggered: set[str] = set()
        self.received: set[str] = set()
        self.connected = False
        self._exec_ids = itertools.count(1)

    async def start(self) -> None:
        self.connected = True

    async def stop(self) -> None:
        self.connected = False

    def restore(self, orders: list[Order]) -> None:
        """Puts back resting orders after a restart."""
        for order in orders:
            self.received.add(order.client_order_id)
            self.resting[order.client_order_id] = order

    async def submit(self, order: Order) -> None:
        if self.latency:
            await asyncio.sleep(self.latency)
        self.received.add(order.client_order_id)
        emit = self.context.emit
        await emit(BrokerAck(order.client_order_id, f"sim-{order.id}", "new"))
        mark = self.context.mark(order.symbol)
        if order.type == "market" and mark is None:
            await emit(BrokerRejected(order.client_order_id, f"no market price for {order.symbol}"))
            return
        price = self._execution_price(order, mark)
        if price is not None:
            await self._fill(order, price)
        elif order.time_in_force in ("ioc", "fok"):
            await emit(
                BrokerCanceled(order.client_order_id, f"{order.time_in_force} order not marketable")
            )
        else:
            self.resting[order.client_order_id] = order

    def _execution_price(self, order: Order, mark: float | None) -> float | None:
        """The price the order executes at now, or None while it rests."""
        if mark is None:
            return None
        buy = order.side == "buy"
        if order.type in ("stop", "stop_limit") and order.client_order_id not in self.triggered:
            assert order.stop_price is not None
            if (buy and mark < order.stop_price) or (not buy and mark > order.stop_price):
                return None
            self.triggered.add(order.client_order_id)
        slipped = mark * (1 + self.slippage) if buy else mark * (1 - self.slippage)
        if order.type in ("market", "stop"):
            return slipped
        assert order.limit_price is not None
        if buy:
            return min(slipped, order.limit_price) if mark <= order.limit_price else None
        return max(slipped, order.limit_price) if mark >= order.limit_price else None

    async def _fill(self, order: Order, price: float) -> None:
        self.resting.pop(order.client_order_id, None)
        self.triggered.discard(order.client_order_id)
        remaining = order.qty - order.filled_qty
        parts = [remaining / 2, remaining - remaining / 2] if self.partial_fills else [remaining]
        for qty in parts:
            await self.context.emit(
                BrokerFill(
                    order.client_order_id,
                    exec_id=f"sim-{order.id}-{next(self._exec_ids)}",
                    qty=qty,
                    price=price,
                    at=utc_now(),
                )
            )

    async def cancel(self, order: Order) -> None:
        self.resting.pop(order.client_order_id, None)
        self.triggered.discard(order.client_order_id)
        await self.context.emit(BrokerCanceled(order.client_order_id, "canceled"))

    async def query(self, order: Order) -> list[BrokerEvent]:
        if order.client_order_id in self.received:
            return [BrokerAck(order.client_order_id, f"sim-{order.id}", "new")]
        return []

    async def on_marks(self, prices: Mapping[str, float]) -> None:
        for order in [o for o in self.resting.values() if o.symbol in prices]:
            price = self._execution_price(order, prices[order.symbol])
            if price is not None and order.client_order_id in self.resting:
                await self._fill(order, price)

    def health(self) -> dict[str, Any]:
        return {"connected": self.connected, "broker": "sim", "resting_orders": len(self.resting)}

    async def test_connection(self) -> dict[str, Any]:
        return {"ok": self.connected, "broker": "sim", "latency_ms": 0.0}
