"""What a broker plugin implements, and what the engine gives it.

A broker receives orders that the gate, the risk plugins and the journal have accepted, and
reports what becomes of them by awaiting `context.emit(event)` with `BrokerAck`, `BrokerFill`,
`BrokerCanceled`, `BrokerExpired` or `BrokerRejected` (see `tradeengine.schemas`). Events may
arrive in any order and more than once: the engine books a fill once per `exec_id`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from tradeengine.schemas import BrokerEvent, Order
from tradeengine.settings import Settings


@dataclass(frozen=True, slots=True)
class BrokerContext:
    """What the engine hands a broker factory."""

    settings: Settings
    emit: Callable[[BrokerEvent], Awaitable[None]]
    executor: ThreadPoolExecutor
    """MAX_WORKERS threads for the broker's blocking calls."""
    mark: Callable[[str], float | None]
    """The engine's latest mark of a symbol."""


class Broker(Protocol):
    """A broker connection. Every method may raise; the engine fails closed on errors."""

    name: str

    async def start(self) -> None:
        """Connects. Called once before the first order."""

    async def stop(self) -> None:
        """Disconnects. Called once at shutdown, after resting orders were handled."""

    async def submit(self, order: Order) -> None:
        """Sends an order. Returns once the broker has it; outcomes come as events."""

    async def cancel(self, order: Order) -> None:
        """Asks the broker to cancel an open order; the outcome comes as an event."""

    async def query(self, order: Order) -> list[BrokerEvent]:
        """What the broker knows of an order, found by its client order id, as events to
        apply (empty when the broker never received it)."""

    async def on_marks(self, prices: Mapping[str, float]) -> None:
        """New marks (the simulated market matches resting orders here; others ignore)."""

    def health(self) -> dict[str, Any]:
        """`/api/health/broker`: at least {"connected": bool}."""

    async def test_connection(self) -> dict[str, Any]:
        """A round trip to the broker with its latency, for `/api/broker/test-connection`."""


class MarketData(Protocol):
    """Optional broker methods the engine uses in live mode when a broker has them."""

    async def latest_price(self, symbol: str) -> float | None:
        """The latest trade or quote midpoint of a symbol, or None when there is none. Asked
        before a market order is checked when the symbol's mark is missing or older than
        MARK_MAX_AGE seconds: the gate never checks a market order blind."""

    async def account_equity(self) -> tuple[float, float] | None:
        """(equity, last_equity) of the broker account: at start the book is seeded with them,
        so that daily PnL and drawdown are the account's. None when unknown."""


BrokerFactory = Callable[[BrokerContext], Broker]
