"""Differential test: the Rust gate against the plain-Python reference model.

A hypothesis state machine drives the same random sequence of calls through `tradeengine.Gate`
and `reference_model.ReferenceGate` (orders of every type, valid and not; fills, cancels, marks,
limit and throttle changes, time, the kill switch, reduce-only mode, day rolls) and after every
step requires the same decisions and the same state. No wall clock is involved: both gates are
built at `now=0.0` and every call passes `now=` or `at=`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import tradeengine
from reference_model import (
    InvalidArgument,
    InvalidConfig,
    InvalidState,
    ReferenceGate,
    _rust_display,
    _rust_fixed,
    symbol_is_well_formed,
)
from tradeengine import Gate
from tradeengine.core import symbol_is_well_formed as core_symbol_is_well_formed

REL_TOL = 1e-9
ABS_TOL = 1e-6

MARKED = ("AAPL", "MSFT", "BRK.B")
"""Symbols marked at the start and re-marked at random."""
UNMARKED = "NOMK"
"""Never passed to `mark` (a fill still gives it one, as it would in production)."""
SYMBOLS = (*MARKED, UNMARKED)
ALL_SYMBOLS = (*SYMBOLS, "aapl")
"""Every symbol orders name (one not well formed), each compared after every step."""
START_MARKS = {"AAPL": 100.0, "MSFT": 250.0, "BRK.B": 400.0}

NAN = math.nan
INF = math.inf
INVALID_QTYS = (0.0, -1.0, NAN, INF, -INF, 2e9, -0.0)
INVALID_PRICES = (0.0, -5.0, NAN, INF, 2e9)
INVALID_MARKS = (0.0, -1.0, NAN, INF, -INF, -0.0)
BAD_IDS = ("", "has space", "é", "x" * 129, "tab\there")


# --- comparison ---------------------------------------------------------------------------------


def close(a: float, b: float) -> bool:
    """Equal floats: NaN equals NaN, infinities must match, the rest within the tolerances."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)


def same(a: Any, b: Any) -> bool:
    """Structural equality with `close` for floats (bools and ints must be equal)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and close(a, b)
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(type(a) is type(b) and a == b)


def assert_same(what: str, rust: Any, model: Any) -> None:
    assert same(rust, model), f"{what}: rust {rust!r} != model {model!r}"


Decision = tuple[str, str, float | None] | None


def assert_same_decision(what: str, rust: Decision, model: Decision) -> None:
    """Same accept, or the same rule and retry_after; reasons need not match."""
    if rust is None or model is None:
        assert rust == model, f"{what}: rust {rust!r} != model {model!r}"
        return
    assert rust[0] == model[0], f"{what}: rule rust {rust!r} != model {model!r}"
    assert same(rust[2], model[2]), f"{what}: retry_after rust {rust!r} != model {model!r}"


# --- orders -------------------------------------------------------------------------------------


FLAWS = (
    "bad_id",
    "bad_symbol",
    "bad_qty",
    "bad_price",
    "missing_price",
    "unexpected_price",
    "bad_stop_loss",
)
"""What can make an order invalid whatever the state; an order has at most one."""


@dataclass(frozen=True)
class OrderSpec:
    """A random order, resolved against the current state by `DifferentialGates.order`."""

    flaw: str
    id_kind: str
    pick: int
    symbol: str
    side: str
    qty_kind: str
    qty: float
    order_type: str
    limit_factor: float
    stop_factor: float
    time_in_force: str
    reduce_only: bool
    liquidation: bool
    stop_loss_kind: str
    stop_loss_factor: float


# Mostly within the default 10% price collar, sometimes beyond.
price_factors = st.one_of(st.floats(0.92, 1.08), st.floats(0.8, 1.2))
order_specs = st.builds(
    OrderSpec,
    flaw=st.sampled_from(("none",) * 14 + FLAWS),
    id_kind=st.sampled_from(("new",) * 12 + ("dup", "reuse")),
    pick=st.integers(0, 1_000),
    symbol=st.sampled_from((*MARKED, UNMARKED)),
    side=st.sampled_from(("buy", "sell")),
    qty_kind=st.sampled_from(("plain",) * 6 + ("position",) * 4 + ("dust",)),
    qty=st.one_of(
        st.integers(1, 300).map(float),
        st.floats(0.001, 150.0),
        st.sampled_from((0.25, 0.5, 1.0, 1.2)),
    ),
    order_type=st.sampled_from(("market", "market", "limit", "stop", "stop_limit")),
    limit_factor=price_factors,
    stop_factor=price_factors,
    time_in_force=st.sampled_from(("day", "gtc", "ioc", "fok")),
    reduce_only=st.sampled_from((False,) * 5 + (True,)),
    liquidation=st.sampled_from((False,) * 7 + (True,)),
    stop_loss_kind=st.sampled_from(("none", "none", "protective", "wrong_side")),
    stop_loss_factor=st.floats(0.005, 0.3),
)

valid_limits = st.fixed_dictionaries(
    {},
    optional={
        "max_position_size": st.sampled_from((2_000.0, 20_000.0, 60_000.0, INF)),
        "max_order_notional": st.sampled_from((1_000.0, 10_000.0, INF)),
        "portfolio_heat_limit": st.sampled_from((0.02, 0.25, 1.0, 50.0)),
        "max_daily_loss": st.sampled_from((-100.0, -1_000.0, -5_000.0, -INF)),
        "max_drawdown": st.sampled_from((0.01, 0.1, 0.5, 1.0, INF)),
        "price_collar": st.sampled_from((0.02, 0.1, 0.5)),
        "auto_kill": st.booleans(),
    },
)
invalid_limits = st.sampled_from(
    (
        {"max_daily_loss": 500.0},
        {"max_daily_loss": 0.0},
        {"max_daily_loss": NAN},
        {"max_drawdown": 10.0},
        {"max_drawdown": 0.0},
        {"max_position_size": 0.0},
        {"max_position_size": -1.0},
        {"max_order_notional": NAN},
        {"portfolio_heat_limit": NAN},
        {"portfolio_heat_limit": -0.5},
        {"price_collar": -0.1},
        {"price_collar": 0.0},
    )
)
fees = st.sampled_from((0.0, 0.0, 0.0, 0.35, 1.0, 25.0))


class DifferentialGates(RuleBasedStateMachine):
    """Both gates, driven in lock step."""

    def __init__(self) -> None:
        super().__init__()
        self.rust = Gate(now=0.0)
        self.model = ReferenceGate(now=0.0)
        self.now = 0.0
        self.counter = 0
        self.used: list[str] = []
        self.accepted: list[str] = []

    @initialize(
        starting_cash=st.sampled_from((100_000.0, 25_000.0, 5_000.0)),
        per_minute=st.sampled_from((2, 5, 20, 600)),
        throttle_enabled=st.sampled_from((True, True, True, False)),
        auto_kill=st.booleans(),
        limits=valid_limits,
    )
    def build(
        self,
        starting_cash: float,
        per_minute: int,
        throttle_enabled: bool,
        auto_kill: bool,
        limits: dict[str, Any],
    ) -> None:
        kwargs: dict[str, Any] = {
            "starting_cash": starting_cash,
            "max_orders_per_minute": per_minute,
            "throttle_enabled": throttle_enabled,
            "max_position_size": 20_000.0,
            "auto_kill": auto_kill,
            **limits,
            "now": 0.0,
        }
        self.rust = Gate(**kwargs)
        self.model = ReferenceGate(**kwargs)
        for symbol, price in START_MARKS.items():
            assert_same("initial mark", self.rust.mark(symbol, price, at=0.0), None)
            assert self.model.mark(symbol, price, at=0.0) is None

    # -- orders --

    def order(self, spec: OrderSpec) -> dict[str, Any]:
        """The keyword arguments of `check` for a spec, given the model's current state."""
        flaw = spec.flaw
        symbol = "aapl" if flaw == "bad_symbol" else spec.symbol
        position = self.model.position(symbol)
        pos_qty = 0.0 if position is None else position[0]
        ref = self.model.get_mark(symbol) or 100.0
        side = spec.side
        qty = spec.qty
        if flaw == "bad_qty":
            qty = INVALID_QTYS[spec.pick % len(INVALID_QTYS)]
        elif spec.qty_kind != "plain" and pos_qty != 0.0:
            # Towards flat (or through it): what reduce-only and liquidation orders need.
            side = "sell" if pos_qty > 0 else "buy"
            qty = abs(pos_qty) * (spec.qty if spec.qty <= 1.2 else 1.0)
            if spec.qty_kind == "dust":
                # Just within or just beyond the 1e-9 a reducing order may overshoot by.
                qty = abs(pos_qty) + (5e-10, 2e-9)[spec.pick % 2]
        needs_limit = spec.order_type in ("limit", "stop_limit")
        needs_stop = spec.order_type in ("stop", "stop_limit")
        limit_price = round(ref * spec.limit_factor, 2) if needs_limit else None
        stop_price = round(ref * spec.stop_factor, 2) if needs_stop else None
        if flaw == "missing_price":
            if needs_stop:
                stop_price = None
            else:
                limit_price = None
        elif flaw == "unexpected_price":
            if needs_limit and not needs_stop:
                stop_price = round(ref * spec.stop_factor, 2)
            else:
                limit_price = round(ref * spec.limit_factor, 2)
        elif flaw == "bad_price":
            bad = INVALID_PRICES[spec.pick % len(INVALID_PRICES)]
            if needs_limit:
                limit_price = bad
            else:
                stop_price = bad
        stop_loss: float | None = None
        distance = ref * spec.stop_loss_factor
        if flaw == "bad_stop_loss":
            stop_loss = (-1.0, NAN, 0.0, INF)[spec.pick % 4]
        elif spec.stop_loss_kind == "protective":
            stop_loss = max(round(ref - distance if side == "buy" else ref + distance, 2), 0.01)
        elif spec.stop_loss_kind == "wrong_side":
            stop_loss = max(round(ref + distance if side == "buy" else ref - distance, 2), 0.01)
        if flaw == "bad_id":
            client_order_id = BAD_IDS[spec.pick % len(BAD_IDS)]
        else:
            client_order_id = self.client_order_id(spec)
        return {
            "client_order_id": client_order_id,
            "symbol": symbol,
            "side": side,
            "qty": qty,
            "order_type": spec.order_type,
            "limit_price": limit_price,
            "stop_price": stop_price,
            "time_in_force": spec.time_in_force,
            "reduce_only": spec.reduce_only,
            "liquidation": spec.liquidation,
            "stop_loss": stop_loss,
        }

    def client_order_id(self, spec: OrderSpec) -> str:
        """A fresh id, an accepted one (a duplicate) or any tried before (refused ids are not
        burnt)."""
        if spec.id_kind == "dup" and self.accepted:
            return self.accepted[spec.pick % len(self.accepted)]
        if spec.id_kind == "reuse" and self.used:
            return self.used[spec.pick % len(self.used)]
        self.counter += 1
        cid = f"o{self.counter}"
        self.used.append(cid)
        return cid

    def check_both(self, kwargs: dict[str, Any], now: float, revoke: bool = False) -> None:
        """One order through both gates; with `revoke`, an accept is undone at once, as the
        engine does when a risk plugin or the journal refuses the order."""
        rust = self.rust.check(**kwargs, now=now)
        model = self.model.check(**kwargs, now=now)
        assert_same_decision(f"check({kwargs}, now={now})", rust, model)
        if rust is not None:
            return
        cid, liquidation = kwargs["client_order_id"], kwargs["liquidation"]
        if revoke:
            rust_revoked = self.rust.revoke(cid, liquidation)
            model_revoked = self.model.revoke(cid, liquidation)
            assert_same(f"revoke({cid}, {liquidation})", rust_revoked, model_revoked)
            self.same_state()
        else:
            self.accepted.append(cid)

    @rule(
        specs=st.lists(order_specs, min_size=1, max_size=3),
        stale=st.sampled_from((0.0,) * 9 + (5.0,)),
        revoke=st.sampled_from((False,) * 4 + (True,)),
    )
    def submit(self, specs: list[OrderSpec], stale: float, revoke: bool) -> None:
        """Orders one by one; now and then at a `now` behind the latest (a late caller), and
        now and then each accept revoked."""
        for spec in specs:
            self.check_both(self.order(spec), self.now - stale, revoke)

    @rule(specs=st.lists(order_specs, min_size=1, max_size=4))
    def submit_batch(self, specs: list[OrderSpec]) -> None:
        orders = []
        for spec in specs:
            o = self.order(spec)
            orders.append(
                (
                    o["client_order_id"],
                    o["symbol"],
                    o["side"],
                    o["qty"],
                    o["order_type"],
                    o["limit_price"],
                    o["stop_price"],
                    o["time_in_force"],
                    o["reduce_only"],
                    o["liquidation"],
                    o["stop_loss"],
                )
            )
        rust = self.rust.check_batch(orders, now=self.now)
        model = self.model.check_batch(orders, now=self.now)
        assert len(rust) == len(model) == len(orders)
        for order, r, m in zip(orders, rust, model, strict=True):
            assert_same_decision(f"check_batch {order}", r, m)
            if r is None:
                self.accepted.append(order[0])

    # -- fills and cancels --

    @precondition(lambda self: bool(self.model.resting_orders()))
    @rule(
        fills=st.lists(
            st.tuples(
                st.integers(0, 1_000),
                st.sampled_from(("full", "full", "partial", "partial", "over", "dust", "zero")),
                st.floats(0.05, 0.95),
                st.floats(0.85, 1.15),
                fees,
            ),
            min_size=1,
            max_size=2,
        )
    )
    def fill_resting(self, fills: list[tuple[int, str, float, float, float]]) -> None:
        """Partial, full, over-, dust and zero fills of resting orders, at prices near
        theirs."""
        for pick, how, fraction, price_factor, fee in fills:
            resting = self.model.resting_orders()
            if not resting:
                return
            cid, symbol, side, remaining, price = resting[pick % len(resting)]
            qty = {
                "full": remaining,
                "partial": remaining * fraction,
                "over": remaining * (1.0 + fraction),
                # Leaves (or nearly leaves) less than the 1e-9 the book treats as nothing.
                "dust": remaining - (5e-10, 2e-9)[pick % 2],
                "zero": 0.0,
            }[how]
            base = price if price > 0.0 else (self.model.get_mark(symbol) or 100.0)
            fill_price = round(base * price_factor, 4 if pick % 3 else 0) or 1.0
            rust = self.rust.on_fill(cid, symbol, side, qty, fill_price, fee, at=self.now)
            model = self.model.on_fill(cid, symbol, side, qty, fill_price, fee, at=self.now)
            what = f"on_fill({cid}, {symbol}, {side}, {qty}, {fill_price}, {fee})"
            assert_same(what, rust, model)

    @rule(
        symbol=st.sampled_from(SYMBOLS),
        side=st.sampled_from(("buy", "sell")),
        qty=st.one_of(st.integers(1, 100).map(float), st.floats(0.001, 50.0)),
        price_factor=st.floats(0.85, 1.15),
        fee=fees,
    )
    def fill_unknown_order(
        self, symbol: str, side: str, qty: float, price_factor: float, fee: float
    ) -> None:
        """A fill the gate never checked (an order placed before a restart, say)."""
        price = round((self.model.get_mark(symbol) or 100.0) * price_factor, 4)
        rust = self.rust.on_fill("ext", symbol, side, qty, price, fee, at=self.now)
        model = self.model.on_fill("ext", symbol, side, qty, price, fee, at=self.now)
        assert_same("on_fill(ext)", rust, model)

    @rule(
        fills=st.lists(
            st.tuples(
                st.integers(0, 1_000),
                st.sampled_from(SYMBOLS),
                st.sampled_from(("buy", "sell")),
                st.integers(1, 50).map(float),
                st.floats(0.9, 1.1),
                fees,
            ),
            max_size=3,
        )
    )
    def replay(self, fills: list[tuple[int, str, str, float, float, float]]) -> None:
        """Journaled fills, some of resting orders: booked, but never engaging anything."""
        resting = self.model.resting_orders()
        journal = []
        for pick, symbol, side, qty, factor, fee in fills:
            cid = resting[pick % len(resting)][0] if resting and pick % 2 else f"j{pick}"
            price = round((self.model.get_mark(symbol) or 100.0) * factor, 4)
            journal.append((cid, symbol, side, qty, price, fee))
        assert self.rust.replay_fills(journal) == self.model.replay_fills(journal) == len(journal)

    @rule(pick=st.integers(0, 1_000), known=st.booleans())
    def cancel(self, pick: int, known: bool) -> None:
        """A resting order, or one that is not resting (filled, cancelled, refused, unknown)."""
        resting = [r[0] for r in self.model.resting_orders()]
        if known and resting:
            cid = resting[pick % len(resting)]
        elif self.used:
            cid = self.used[pick % len(self.used)]
        else:
            cid = "unknown"
        assert_same(f"on_cancel({cid})", self.rust.on_cancel(cid), self.model.on_cancel(cid))

    @rule(pick=st.integers(0, 1_000), known=st.booleans(), liquidation=st.booleans())
    def revoke(self, pick: int, known: bool, liquidation: bool) -> None:
        """Revoking any order, also one that has (partly) filled or is not resting, with
        either liquidation flag."""
        resting = [r[0] for r in self.model.resting_orders()]
        if known and resting:
            cid = resting[pick % len(resting)]
        elif self.used:
            cid = self.used[pick % len(self.used)]
        else:
            cid = "unknown"
        rust = self.rust.revoke(cid, liquidation)
        model = self.model.revoke(cid, liquidation)
        assert_same(f"revoke({cid}, {liquidation})", rust, model)

    # -- marks, time, days --

    @rule(symbol=st.sampled_from(MARKED), factor=st.floats(0.7, 1.3), whole=st.booleans())
    def mark(self, symbol: str, factor: float, whole: bool) -> None:
        """A new mark; whole dollars half the time, so that PnL and drawdown can land exactly
        on a limit."""
        price = round((self.model.get_mark(symbol) or 100.0) * factor, 0 if whole else 2) or 1.0
        rust = self.rust.mark(symbol, price, at=self.now)
        model = self.model.mark(symbol, price, at=self.now)
        assert_same(f"mark({symbol}, {price})", rust, model)

    @rule(dt=st.one_of(st.sampled_from((0.5, 1.0, 3.0, 20.0, 61.0)), st.floats(0.0, 10.0)))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule(day=st.integers(0, 4))
    def roll_day(self, day: int) -> None:
        assert_same(f"roll_day({day})", self.rust.roll_day(day), self.model.roll_day(day))

    # -- configuration and trading state --

    @rule(
        what=st.sampled_from(("limits", "limits", "throttle")),
        limits=valid_limits,
        per_minute=st.sampled_from((1, 2, 5, 30, 60, 600, 10_000_000)),
        enabled=st.sampled_from((True, True, False)),
    )
    def configure(self, what: str, limits: dict[str, Any], per_minute: int, enabled: bool) -> None:
        if what == "limits":
            self.rust.set_limits(**limits)
            self.model.set_limits(**limits)
        else:
            self.rust.set_throttle(per_minute, enabled, now=self.now)
            self.model.set_throttle(per_minute, enabled, now=self.now)

    @rule(
        what=st.sampled_from(("engage", "reset", "reset", "reducing", "active", "active")),
        actor=st.sampled_from(("alice", "ops")),
        # U+001F is not whitespace to Rust's trim (it is to Python's strip): a valid reason.
        reason=st.sampled_from(("runaway strategy", "fixed", "\x1f")),
    )
    def control(self, what: str, actor: str, reason: str) -> None:
        """Kill switch engage and reset (compared returns), reduce-only mode on and off."""
        if what == "engage":
            rust = self.rust.engage_kill_switch(actor, reason, at=self.now)
            model = self.model.engage_kill_switch(actor, reason, at=self.now)
            assert_same("engage_kill_switch", rust, model)
        elif what == "reset":
            rust = self.rust.reset_kill_switch(actor, reason, at=self.now)
            model = self.model.reset_kill_switch(actor, reason, at=self.now)
            assert_same("reset_kill_switch", rust, model)
        else:
            self.rust.set_reducing(what == "reducing")
            self.model.set_reducing(what == "reducing")

    @rule(
        what=st.sampled_from(("limits", "throttle", "mark", "reset", "unparsable")),
        bad_limits=invalid_limits,
        good_limits=valid_limits,
        per_minute=st.sampled_from((0, 10_000_001)),
        symbol=st.sampled_from(SYMBOLS),
        price=st.sampled_from(INVALID_MARKS),
        actor=st.sampled_from(("", " ", "\t", "admin")),
        reason=st.sampled_from(("", "  ", "\n", "\u3000")),
        field=st.sampled_from(("side", "order_type", "time_in_force")),
        value=st.sampled_from(("", "BUY", "hold", "iceberg", "opg")),
    )
    def misuse(
        self,
        what: str,
        bad_limits: dict[str, float],
        good_limits: dict[str, Any],
        per_minute: int,
        symbol: str,
        price: float,
        actor: str,
        reason: str,
        field: str,
        value: str,
    ) -> None:
        """Calls both must refuse, changing nothing (the invariant checks that)."""
        rust_error: type[Exception]
        model_error: type[Exception]
        rust_call: Callable[[], object]
        model_call: Callable[[], object]
        if what == "limits":
            # All or nothing: a valid change next to an invalid one is not applied either.
            kwargs = {**good_limits, **bad_limits}
            rust_error, model_error = tradeengine.ConfigError, InvalidConfig
            rust_call = partial(self.rust.set_limits, **kwargs)
            model_call = partial(self.model.set_limits, **kwargs)
        elif what == "throttle":
            rust_error, model_error = tradeengine.ConfigError, InvalidConfig
            rust_call = partial(self.rust.set_throttle, per_minute, True, now=self.now)
            model_call = partial(self.model.set_throttle, per_minute, True, now=self.now)
        elif what == "mark":
            rust_error, model_error = tradeengine.InvalidArgumentError, InvalidArgument
            rust_call = partial(self.rust.mark, symbol, price, at=self.now)
            model_call = partial(self.model.mark, symbol, price, at=self.now)
        elif what == "reset":
            if actor == "admin":
                reason = ""
            rust_error, model_error = tradeengine.InvalidStateError, InvalidState
            rust_call = partial(self.rust.reset_kill_switch, actor, reason, at=self.now)
            model_call = partial(self.model.reset_kill_switch, actor, reason, at=self.now)
        else:
            order: dict[str, Any] = {
                "client_order_id": "never",
                "symbol": "AAPL",
                "side": "buy",
                "qty": 1.0,
                field: value,
            }
            rust_error, model_error = tradeengine.InvalidArgumentError, InvalidArgument
            rust_call = partial(self.rust.check, **order, now=self.now)
            model_call = partial(self.model.check, **order, now=self.now)
        with pytest.raises(rust_error):
            rust_call()
        with pytest.raises(model_error):
            model_call()

    # -- the same state after every step --

    @invariant()
    def same_state(self) -> None:
        rust, model = self.rust, self.model
        assert rust.state == model.state
        assert_same("kill_switch", rust.kill_switch(), model.kill_switch())
        assert_same("last_reset", rust.last_reset(), model.last_reset())
        assert_same("breach", rust.breach(), model.breach())
        assert_same("limits", rust.limits(), model.limits())
        assert_same("throttle", rust.throttle(), model.throttle())
        assert_same(
            "tokens_available",
            rust.tokens_available(now=self.now),
            model.tokens_available(now=self.now),
        )
        assert_same("marks", sorted(rust.marks().items()), sorted(model.marks().items()))
        assert_same("positions", rust.positions(), model.positions())
        for symbol in ALL_SYMBOLS:
            assert_same(f"position({symbol})", rust.position(symbol), model.position(symbol))
            assert_same(f"exposure({symbol})", rust.exposure(symbol), model.exposure(symbol))
        assert_same("resting_orders", rust.resting_orders(), model.resting_orders())
        assert_same(
            "knows", [rust.knows(c) for c in self.used], [model.knows(c) for c in self.used]
        )
        assert_same("account", rust.account(), model.account())


TestDifferential = DifferentialGates.TestCase
TestDifferential.settings = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# --- the model on its own -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"starting_cash": INF},
        {"starting_cash": NAN},
        {"max_orders_per_minute": 0},
        {"max_orders_per_minute": 10_000_001},
        {"max_daily_loss": 1.0},
        {"max_drawdown": 1.5},
        {"price_collar": 0.0},
    ],
)
def test_construction_refuses_what_rust_refuses(kwargs: dict[str, Any]) -> None:
    with pytest.raises(tradeengine.ConfigError):
        Gate(**kwargs, now=0.0)
    with pytest.raises(InvalidConfig):
        ReferenceGate(**kwargs, now=0.0)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=20), st.from_regex(r"[A-Z][A-Z0-9./-]{0,17}", fullmatch=True)))
def test_symbol_validation_is_the_same(symbol: str) -> None:
    assert symbol_is_well_formed(symbol) == core_symbol_is_well_formed(symbol)


def test_the_model_has_no_clock() -> None:
    gate = ReferenceGate(now=0.0)
    with pytest.raises(TypeError, match="no clock"):
        gate.check("c1", "AAPL", "buy", 1.0)
    with pytest.raises(TypeError, match="no clock"):
        gate.mark("AAPL", 100.0)


@pytest.mark.parametrize(
    ("x", "display", "fixed2"),
    [
        (1.0, "1", "1.00"),
        (0.1, "0.1", "0.10"),
        (-0.0, "-0", "-0.00"),
        (1e20, "100000000000000000000", "100000000000000000000.00"),
        (1.5e-7, "0.00000015", "0.00"),
        (-1000.125, "-1000.125", "-1000.12"),
        (INF, "inf", "inf"),
        (-INF, "-inf", "-inf"),
        (NAN, "NaN", "NaN"),
    ],
)
def test_float_formatting_follows_rust(x: float, display: str, fixed2: str) -> None:
    """The auto-kill reason quotes figures with Rust's `{}` and `{:.2}`."""
    assert _rust_display(x) == display
    assert _rust_fixed(x, 2) == fixed2


def test_auto_kill_reason_is_word_for_word() -> None:
    rust, model = Gate(max_drawdown=0.05, now=0.0), ReferenceGate(max_drawdown=0.05, now=0.0)
    for gate in (rust, model):
        gate.mark("AAPL", 100.0, at=0.0)
        assert gate.check("a", "AAPL", "buy", 50.0, now=0.0) is None
        assert gate.on_fill("a", "AAPL", "buy", 50.0, 100.0, at=1.0) is None
    assert rust.mark("AAPL", 79.995, at=2.0) == model.mark("AAPL", 79.995, at=2.0)
    assert rust.kill_switch() == model.kill_switch()
    assert rust.kill_switch() is not None


def both(**kwargs: Any) -> tuple[Gate, ReferenceGate]:
    """A Rust gate and a model gate built alike, at now=0."""
    return Gate(**kwargs, now=0.0), ReferenceGate(**kwargs, now=0.0)


@pytest.mark.parametrize(
    ("limits", "mark", "breach"),
    [
        # 10 shares bought at 100 marked at 90: daily PnL is exactly -100.
        ({"max_daily_loss": -100.0, "max_drawdown": 1.0}, 90.0, "max_daily_loss"),
        ({"max_daily_loss": -100.0, "max_drawdown": 1.0}, 90.01, None),
        # 200 shares bought at 500 marked at 450: equity 90,000 is exactly 10% off its peak.
        ({"max_daily_loss": -INF, "max_drawdown": 0.1}, 450.0, "max_drawdown"),
        ({"max_daily_loss": -INF, "max_drawdown": 0.1}, 450.01, None),
    ],
)
def test_loss_limits_trip_at_the_limit(
    limits: dict[str, float], mark: float, breach: str | None
) -> None:
    """Exact boundaries the random walk is unlikely to land on: at the limit is a breach."""
    qty = 10.0 if limits["max_drawdown"] == 1.0 else 200.0
    price = 100.0 if qty == 10.0 else 500.0
    for gate in both(max_position_size=INF, portfolio_heat_limit=10.0, auto_kill=False, **limits):
        gate.mark("AAPL", price, at=0.0)
        assert gate.check("a", "AAPL", "buy", qty, now=0.0) is None
        assert gate.on_fill("a", "AAPL", "buy", qty, price, at=0.0) is None
        assert gate.mark("AAPL", mark, at=1.0) is None
        assert gate.breach() == breach
        refusal = gate.check("b", "AAPL", "buy", 1.0, now=1.0)
        assert (refusal and refusal[0]) == breach


@pytest.mark.parametrize(
    ("limit_price", "rule"), [(110.0, None), (110.01, "price_collar"), (90.0, None)]
)
def test_collar_is_inclusive(limit_price: float, rule: str | None) -> None:
    for gate in both():
        gate.mark("AAPL", 100.0, at=0.0)
        refusal = gate.check("a", "AAPL", "buy", 1.0, "limit", limit_price, now=0.0)
        assert (refusal and refusal[0]) == rule


@pytest.mark.parametrize(("stop_loss", "rule"), [(90.0, None), (89.99, "portfolio_heat")])
def test_heat_is_inclusive(stop_loss: float, rule: str | None) -> None:
    """1% of 100,000 is 1,000 at risk: 100 shares with a 10-dollar stop is exactly that."""
    for gate in both(max_position_size=INF, portfolio_heat_limit=0.01):
        gate.mark("AAPL", 100.0, at=0.0)
        refusal = gate.check("a", "AAPL", "buy", 100.0, stop_loss=stop_loss, now=0.0)
        assert (refusal and refusal[0]) == rule
