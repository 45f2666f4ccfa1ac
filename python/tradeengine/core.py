"""The Python face of the Rust core.

`Gate` is the Rust gate itself (subclassed only to add documented helpers): every order is
decided by one `Gate.check` call against the kill switch, the trading state, the throttle and
the limits. Nothing here re-implements a check.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from tradeengine import _core
from tradeengine._core import symbol_is_well_formed

__all__ = ["EXCHANGE_TZ", "Gate", "Rejection", "symbol_is_well_formed", "trading_day"]

EXCHANGE_TZ = ZoneInfo("America/New_York")
_EPOCH_DAY = dt.date(1970, 1, 1)


def trading_day(at: float) -> int:
    """The exchange's trading day (America/New_York) of a Unix time, as days since 1970-01-01.

    Daily PnL is measured from the equity at the start of this day.
    """
    local = dt.datetime.fromtimestamp(at, EXCHANGE_TZ).date()
    return (local - _EPOCH_DAY).days


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why the gate refused an order. `rule` is stable: it is the API's error rule, the
    `risk_blocks_total{rule}` label and the word after `RISK_BLOCK` in the log."""

    rule: str
    reason: str
    retry_after: float | None = None

    @classmethod
    def from_core(cls, reject: tuple[str, str, float | None]) -> Rejection:
        rule, reason, retry_after = reject
        return cls(rule, reason, retry_after)


class Gate(_core.Gate):
    """The order gate. See `core-rs/src/gate.rs` for the order of the checks.

    Call `check(...)` for every new order: it returns None when the order is accepted (its
    throttle token and exposure are taken at once) or a `(rule, reason, retry_after)` tuple.
    Feed it every fill (`on_fill`), cancel (`on_cancel`) and mark (`mark`); `on_fill` and `mark`
    return the rule whose breach engaged the kill switch, when KILL_SWITCH_ENABLED made them.
    """

    def decide(
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
    ) -> Rejection | None:
        """`check`, with the rejection as a `Rejection`."""
        reject = self.check(
            client_order_id,
            symbol,
            side,
            qty,
            order_type,
            limit_price,
            stop_price,
            time_in_force,
            reduce_only,
            liquidation,
            stop_loss,
            now,
        )
        return None if reject is None else Rejection.from_core(reject)

    def roll_to(self, at: float) -> bool:
        """Rolls the book to the trading day of Unix time `at`; True when a new day began."""
        return self.roll_day(trading_day(at))
