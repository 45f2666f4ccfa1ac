"""Recovery at start: the engine's state rebuilt from the journal before any order is accepted,
and the task that keeps a running engine in step with what others write to the journal.

`recover(engine)` is called by `Engine.start()` after the store is opened and the broker
connected. In order:

1. risk, throttle and reduce-only config: every ConfigRecord replayed in journal order; then
   the settings (environment) win where they changed since the last start;
2. the marks, then the book: resting orders put back, every fill replayed in one batch call
   into Rust (`Gate.replay_fills`, no GIL), every client order id remembered, the equity peak
   and the day's starting equity restored;
3. the kill switch latch, from its history (engaged stays engaged);
4. the engine's open orders, its exec-id dedupe set, the simulated market's resting orders;
5. orders left in flight (pending_new, pending_cancel): the broker is asked what became of
   each; one the broker never received is rejected, a cancel is sent again.

`follow_journal(engine)` runs while the engine runs: it applies kill switch records written by
`tradeengine kill-switch` (within a second) and saves the account figures once a second.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import gc
import logging
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from tradeengine.schemas import BrokerRejected, ConfigRecord, KillSwitchRecord, Order, utc_now
from tradeengine.settings import Settings
from tradeengine.store.base import AccountSnapshot

if TYPE_CHECKING:
    from tradeengine.core import Gate
    from tradeengine.engine import Engine

log = logging.getLogger("tradeengine.recovery")

SETTINGS_ACTOR = "settings"
"""The actor of the config records that note the settings an engine started with."""
IN_FLIGHT = frozenset({"pending_new", "pending_cancel"})
KILL_SWITCH_WAIT = 0.5
"""Longest wait for a kill switch record per turn (PostgreSQL wakes at once on NOTIFY,
SQLite polls every 0.2 s), so a change made with `tradeengine kill-switch` lands in < 1 s."""
ACCOUNT_EVERY = 1.0


class RecoveryError(Exception):
    """The journal and the broker could not be brought into agreement: the engine does not
    start rather than trade on a state it cannot vouch for."""


async def recover(engine: Engine) -> None:
    """Rebuilds the book, the kill switch latch, the limits and the resting orders."""
    started = time.perf_counter()
    # A journal of a million fills is millions of fresh tuples and strings, none of them in a
    # cycle: the cyclic collector would only walk them again and again while they load.
    collecting = gc.isenabled()
    gc.disable()
    try:
        await _recover(engine)
    finally:
        if collecting:
            gc.enable()
    log.info("recovered from the journal in %.3fs", time.perf_counter() - started)


async def _recover(engine: Engine) -> None:
    state = await engine.store.load()
    gate = engine.gate
    await _restore_config(engine, state.config)

    account = state.account
    if account is not None:
        for symbol, price in account.marks.items():
            gate.mark(symbol, price)
    # Orders are put back at their full size before the fills are replayed, as they rested
    # when their fills came: a fill then releases its share and hands the order's stop loss
    # to the position, exactly as live. What a finished order still holds is released after.
    restored = [o for o in state.orders_to_restore if o.is_open or o.filled_qty > 0]
    for order in restored:
        price, risk = _reservation(gate, order)
        gate.restore_resting(
            order.client_order_id, order.symbol, order.side, order.qty, price, order.stop_loss, risk
        )
    gate.replay_fills(state.fills)
    for order in restored:
        if not order.is_open:
            gate.on_cancel(order.client_order_id)
    collections.deque(map(gate.remember, state.client_order_ids), maxlen=0)
    if account is not None:
        gate.restore_account(account.peak_equity, account.day, account.day_start_equity)

    _restore_kill_switch(gate, state.kill_switch)
    engine._exec_ids.update(state.exec_ids)
    open_orders = [o for o in restored if o.is_open]
    for order in open_orders:
        engine._track(order)
    restore = getattr(engine.broker, "restore", None)
    if restore is not None:
        # The simulated market lives in this process: it knows again what it had acknowledged.
        restore([o for o in open_orders if o.status != "pending_new"])
    await _resolve_in_flight(engine, [o for o in open_orders if o.status in IN_FLIGHT])

    engaged = gate.kill_switch()
    if engaged is not None:
        log.critical(
            "KILL_SWITCH still engaged after restart (actor=%s reason=%s): new orders are "
            "refused until an admin resets it",
            engaged[0],
            engaged[1],
        )
    log.info(
        "journal: %d orders, %d open, %d fills, %d positions",
        len(state.client_order_ids),
        len(engine.open_orders),
        len(state.fills),
        len(engine.positions()),
    )


# ---- config ---------------------------------------------------------------------------


def settings_config(settings: Settings) -> dict[Literal["risk", "throttle"], dict[str, Any]]:
    """The risk and throttle config the settings ask for, as ConfigRecord values."""
    notional = settings.max_order_notional
    return {
        "risk": {
            "max_daily_loss": settings.max_daily_loss,
            "max_position_size": settings.max_position_size,
            "max_order_notional": None if math.isinf(notional) else notional,
            "portfolio_heat_limit": settings.portfolio_heat_limit,
            "max_drawdown": settings.max_drawdown,
            "price_collar": settings.price_collar,
            "kill_switch_enabled": settings.kill_switch_enabled,
        },
        "throttle": {
            "max_orders_per_minute": settings.max_orders_per_minute,
            "enabled": settings.throttle_enabled,
        },
    }


def _apply_config(gate: Gate, kind: str, values: Mapping[str, Any]) -> None:
    if kind == "risk":
        notional = values.get("max_order_notional")
        gate.set_limits(
            max_position_size=values.get("max_position_size"),
            # A settings record writes None for "no limit"; a live change never omits it.
            max_order_notional=(
                math.inf if "max_order_notional" in values and notional is None else notional
            ),
            portfolio_heat_limit=values.get("portfolio_heat_limit"),
            max_daily_loss=values.get("max_daily_loss"),
            max_drawdown=values.get("max_drawdown"),
            price_collar=values.get("price_collar"),
            auto_kill=values.get("kill_switch_enabled"),
        )
    elif kind == "throttle":
        per_minute, enabled = gate.throttle()
        gate.set_throttle(
            int(values.get("max_orders_per_minute", per_minute)),
            bool(values.get("enabled", enabled)),
        )
    elif kind == "reduce_only":
        gate.set_reducing(bool(values.get("enabled", False)))


async def _restore_config(engine: Engine, records: list[ConfigRecord]) -> None:
    """Live changes survive a restart; a setting changed in the environment since the last
    start wins over them (the newest intent wins), and is journaled as such."""
    started_with: dict[str, dict[str, Any]] = {}
    for record in records:
        _apply_config(engine.gate, record.kind, record.values)
        if record.actor == SETTINGS_ACTOR:
            started_with[record.kind] = record.values
    for kind, values in settings_config(engine.settings).items():
        if started_with.get(kind) == values:
            continue
        if kind in started_with:
            log.warning("CONFIG %s changed in the settings since the last start: %s", kind, values)
        _apply_config(engine.gate, kind, values)
        await engine.journal.append(
            ConfigRecord(kind=kind, values=values, actor=SETTINGS_ACTOR, at=utc_now())
        )


# ---- book -----------------------------------------------------------------------------


def _reservation(gate: Gate, order: Order) -> tuple[float, float]:
    """The price and the risk an order reserves, as the gate computed them at its check.
    Reduce-only and liquidation orders reserve no risk; another order that happened to
    reduce a position is counted at full risk (worst case)."""
    mark = gate.get_mark(order.symbol)
    if order.type in ("limit", "stop_limit"):
        price = order.limit_price
    elif order.type == "stop":
        price = order.stop_price
    else:
        price = mark if mark is not None else order.filled_avg_price
    price = price or 0.0
    if order.liquidation or order.reduce_only:
        return price, 0.0
    if order.stop_loss is not None:
        return price, order.qty * abs(price - order.stop_loss)
    return price, order.qty * price


def _timestamp(at: str) -> float:
    try:
        return dt.datetime.fromisoformat(at).timestamp()
    except ValueError:
        return time.time()


def _restore_kill_switch(gate: Gate, history: list[KillSwitchRecord]) -> None:
    """Replays the history, so that the latch and the last reset are both as recorded."""
    for record in history:
        at = _timestamp(record.at)
        if record.engaged:
            gate.engage_kill_switch(record.actor, record.reason, at)
        elif gate.kill_switch() is not None:
            gate.reset_kill_switch(record.actor, record.reason or "no reason recorded", at)


async def _resolve_in_flight(engine: Engine, orders: list[Order]) -> None:
    broker = engine.broker
    if broker is None:
        return
    for order in orders:
        try:
            events = await broker.query(order)
        except Exception as exc:
            raise RecoveryError(
                f"order {order.id} client_order_id={order.client_order_id} was {order.status} "
                f"when the engine stopped and the broker cannot be asked about it: {exc}"
            ) from exc
        if not events:
            events = [
                BrokerRejected(
                    order.client_order_id, "broker has no record of the order after a restart"
                )
            ]
        log.warning(
            "order %s client_order_id=%s was %s at restart; the broker says: %s",
            order.id,
            order.client_order_id,
            order.status,
            ", ".join(type(e).__name__ for e in events),
        )
        for event in events:
            await engine.on_broker_event(event)
        current = engine.open_orders.get(order.id)
        if current is not None and current.status == "pending_cancel":
            await engine._request_cancel(current, "system")


# ---- while running ----------------------------------------------------------------------


async def follow_journal(engine: Engine) -> None:
    """Applies kill switch records that another process (`tradeengine kill-switch`) writes to
    the journal, and saves the account figures for the next recovery. Runs until cancelled."""
    seen = 0
    saved: AccountSnapshot | None = None
    next_save = 0.0
    try:
        while True:
            try:
                changes = await engine.store.kill_switch_changes(seen, KILL_SWITCH_WAIT)
                if changes:
                    seen = changes[-1][0]
                    await _follow_kill_switch(engine, changes[-1][1])
                if time.monotonic() >= next_save:
                    next_save = time.monotonic() + ACCOUNT_EVERY
                    saved = await _save_account(engine, saved)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("ERROR following the journal failed; retrying")
                await asyncio.sleep(ACCOUNT_EVERY)
    finally:
        try:
            await _save_account(engine, saved)
        except Exception as exc:
            log.warning("the account figures could not be saved at stop: %s", exc)


async def _follow_kill_switch(engine: Engine, record: KillSwitchRecord) -> None:
    """Applies the newest kill switch record when it is newer than the engine's own state
    (records this engine wrote itself agree with its state and change nothing)."""
    gate = engine.gate
    at = _timestamp(record.at)
    engaged = gate.kill_switch()
    if record.engaged and engaged is None:
        reset = gate.last_reset()
        if reset is None or reset[2] <= at:
            log.warning("kill switch engaged in the journal by %s: applying", record.actor)
            await engine.engage_kill_switch(record.actor, record.reason)
    elif not record.engaged and engaged is not None and engaged[2] <= at:
        log.warning("kill switch reset in the journal by %s: applying", record.actor)
        await engine.reset_kill_switch(record.actor, record.reason)


def account_snapshot(gate: Gate) -> AccountSnapshot:
    account = gate.account()
    return AccountSnapshot(
        peak_equity=account["peak_equity"],
        day=int(account["day"]),
        day_start_equity=account["day_start_equity"],
        marks=gate.marks(),
        at=utc_now(),
    )


def _figures(snapshot: AccountSnapshot) -> tuple[float, int, float, dict[str, float]]:
    return snapshot.peak_equity, snapshot.day, snapshot.day_start_equity, snapshot.marks


async def _save_account(engine: Engine, saved: AccountSnapshot | None) -> AccountSnapshot:
    """Saves the account figures when they changed since `saved`; returns what is saved."""
    snapshot = account_snapshot(engine.gate)
    if saved is not None and _figures(saved) == _figures(snapshot):
        return saved
    await engine.store.save_account(snapshot)
    return snapshot
