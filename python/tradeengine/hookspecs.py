"""The hooks a tradeengine plugin can implement (pluggy project name `tradeengine`, entry-point
group `tradeengine`). Decorate implementations with `tradeengine.hookspecs.hookimpl`.

Every hook says when it is called, what it returns, and whether the first result wins.
Observer hooks run on the engine's event loop: keep them fast, and never raise (an exception
from an observer is logged and swallowed so that it cannot stop trading).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
import pluggy

from tradeengine.broker import BrokerFactory
from tradeengine.schemas import Fill, KillSwitchState, Order, RejectionRecord

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

hookspec = pluggy.HookspecMarker("tradeengine")
hookimpl = pluggy.HookimplMarker("tradeengine")


class RiskRejection(msgspec.Struct, frozen=True):
    """What a risk rule returns to refuse an order. `rule` is its stable name."""

    rule: str
    reason: str


class RiskContext(msgspec.Struct, frozen=True, kw_only=True):
    """The state a risk rule may look at, as of the check."""

    position_qty: float
    mark: float | None
    equity: float
    daily_pnl: float
    trading_state: str


@hookspec
def register_brokers(register: Callable[[str, BrokerFactory], None]) -> None:
    """Called once at start. Call `register(name, factory)` for each broker the plugin offers;
    BROKER (or `sim` in backtest mode) picks the one used. All implementations are called; a
    name registered twice is an error."""


@hookspec(firstresult=True)
def check_order(order: Order, context: RiskContext) -> RiskRejection | None:
    """Called for every new order after the Rust gate accepted it, before it is journaled.
    Return a `RiskRejection` to refuse it, None to let it pass. The first rejection wins and
    the remaining rules are not asked. Not called for liquidation orders."""


@hookspec
def on_order(order: Order, previous_status: str | None) -> None:
    """Called after every change of an order's state was journaled (new, filled, canceled...).
    `previous_status` is None for a new order. Results are ignored."""


@hookspec
def on_submit(order: Order, latency_seconds: float) -> None:
    """Called once per accepted order when `submit` returns, with the time from the call to
    the broker's acknowledgement. Results are ignored."""


@hookspec
def on_fill(fill: Fill, order: Order) -> None:
    """Called once per booked fill (never for a duplicate `exec_id`). Results are ignored."""


@hookspec
def on_risk_block(rejection: RejectionRecord) -> None:
    """Called for every order refused by the gate or a risk plugin. Results are ignored."""


@hookspec
def on_kill_switch(state: KillSwitchState) -> None:
    """Called when the kill switch is engaged or reset (by anyone, or by a limit breach).
    Results are ignored."""


@hookspec
def on_start(engine: Any) -> None:
    """Called once the engine has recovered and is about to accept orders."""


@hookspec
def on_stop(engine: Any) -> None:
    """Called once when the engine stops, after resting orders were handled."""


@hookspec
def register_routes(register: Callable[[BaseRoute], None]) -> None:
    """Called once when the HTTP app is built. Call `register(route)` with Starlette routes to
    serve them; plugin routes are mounted under `/api/plugins/`. All implementations are
    called."""
