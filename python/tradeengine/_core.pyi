"""Stubs of the Rust extension (core-rs/src/python.rs). Checked by `python -m mypy.stubtest`."""

from collections.abc import Sequence
from typing import Final

from typing_extensions import disjoint_base

__all__ = [
    "RULES",
    "ConfigError",
    "Gate",
    "InvalidArgumentError",
    "InvalidStateError",
    "TradeEngineError",
    "UnknownOrderError",
    "__version__",
    "symbol_is_well_formed",
]

__version__: Final[str]
RULES: Final[list[str]]

def symbol_is_well_formed(symbol: str) -> bool: ...

class TradeEngineError(Exception): ...
class InvalidArgumentError(TradeEngineError): ...
class ConfigError(TradeEngineError): ...
class UnknownOrderError(TradeEngineError): ...
class InvalidStateError(TradeEngineError): ...

_Reject = tuple[str, str, float | None]
_OrderTuple = tuple[
    str, str, str, float, str, float | None, float | None, str, bool, bool, float | None
]
_FillTuple = tuple[str, str, str, float, float, float]

@disjoint_base
class Gate:
    def __new__(
        cls,
        starting_cash: float = 100000.0,
        max_orders_per_minute: int = 60,
        throttle_enabled: bool = True,
        max_position_size: float = 10000.0,
        max_order_notional: float = ...,
        portfolio_heat_limit: float = 0.25,
        max_daily_loss: float = ...,
        max_drawdown: float = 0.1,
        price_collar: float = 0.1,
        auto_kill: bool = True,
        now: float = 0.0,
    ) -> Gate: ...
    def clock(self) -> float: ...
    def check(
        self,
        client_order_id: str,
        symbol: str,
        side: str,
        qty: float,
        order_type: str = "market",
        limit_price: float | None = None,
        stop_price: float | None = None,
        time_in_force: str = "day",
        reduce_only: bool = False,
        liquidation: bool = False,
        stop_loss: float | None = None,
        now: float | None = None,
    ) -> _Reject | None: ...
    def check_batch(
        self, orders: Sequence[_OrderTuple], now: float | None = None
    ) -> list[_Reject | None]: ...
    def on_fill(
        self,
        client_order_id: str,
        symbol: str,
        side: str,
        qty: float,
        price: float,
        fee: float = 0.0,
        at: float | None = None,
    ) -> str | None: ...
    def replay_fills(self, fills: Sequence[_FillTuple]) -> int: ...
    def on_cancel(self, client_order_id: str) -> bool: ...
    def mark(self, symbol: str, price: float, at: float | None = None) -> str | None: ...
    def get_mark(self, symbol: str) -> float | None: ...
    def marks(self) -> dict[str, float]: ...
    @property
    def state(self) -> str: ...
    def set_reducing(self, reducing: bool) -> None: ...
    def engage_kill_switch(self, actor: str, reason: str, at: float | None = None) -> bool: ...
    def reset_kill_switch(self, actor: str, reason: str, at: float | None = None) -> bool: ...
    def kill_switch(self) -> tuple[str, str, float] | None: ...
    def last_reset(self) -> tuple[str, str, float] | None: ...
    def limits(self) -> dict[str, float | bool]: ...
    def set_limits(
        self,
        max_position_size: float | None = None,
        max_order_notional: float | None = None,
        portfolio_heat_limit: float | None = None,
        max_daily_loss: float | None = None,
        max_drawdown: float | None = None,
        price_collar: float | None = None,
        auto_kill: bool | None = None,
    ) -> None: ...
    def throttle(self) -> tuple[int, bool]: ...
    def set_throttle(
        self, max_orders_per_minute: int, enabled: bool, now: float | None = None
    ) -> None: ...
    def tokens_available(self, now: float | None = None) -> float: ...
    def position(
        self, symbol: str
    ) -> tuple[float, float, float, float, float | None, float | None] | None: ...
    def positions(self) -> list[tuple[str, float, float, float, float, float | None]]: ...
    def exposure(self, symbol: str) -> tuple[float, float]: ...
    def resting_orders(self) -> list[tuple[str, str, str, float, float]]: ...
    def account(self) -> dict[str, float]: ...
    def roll_day(self, day: int) -> bool: ...
    def restore_account(self, peak_equity: float, day: int, day_start_equity: float) -> None: ...
    def restore_resting(
        self,
        client_order_id: str,
        symbol: str,
        side: str,
        qty: float,
        price: float,
        stop_loss: float | None = None,
        risk: float = 0.0,
    ) -> None: ...
    def knows(self, client_order_id: str) -> bool: ...
    def revoke(self, client_order_id: str, liquidation: bool = False) -> bool: ...
    def remember(self, client_order_id: str) -> None: ...
    def breach(self) -> str | None: ...
