"""The engine against the reference model: hypothesis drives random sequences of submits,
marks, cancels, kill switch, reduce-only and liquidation through a real Engine (simulated
market, memory journal) while the pure-Python ReferenceGate is fed the same decisions and the
fills and cancels the engine journaled. Decisions, positions, PnL, exposure, resting orders
and the trading state must stay identical."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from reference_model import ReferenceGate
from tradeengine.core import trading_day
from tradeengine.engine import Engine
from tradeengine.errors import OrderRejected
from tradeengine.schemas import FillRecord, OrderRecord, OrderRequest
from tradeengine.settings import load_settings
from tradeengine.store import MemoryStore

SYMBOLS = ("AAPL", "MSFT")
LIMITS = {
    "max_position_size": 8_000.0,
    "portfolio_heat_limit": 0.12,
    "max_daily_loss": -400.0,
    "max_drawdown": 0.006,
    "price_collar": 0.10,
}
ENV = {
    "SYNTHETIC_FEED": "false",
    "THROTTLE_ENABLED": "false",
    "MAX_POSITION_SIZE": "8000",
    "PORTFOLIO_HEAT_LIMIT": "0.12",
    "MAX_DAILY_LOSS": "-400",
    "MAX_DRAWDOWN": "0.006",
    "PRICE_COLLAR": "0.10",
    "TRADEENGINE_DISABLED_PLUGINS": "example",
}


def close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)


class EngineAgainstModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.engine = Engine(load_settings(ENV, dotenv=None), store=MemoryStore())
        self.run(self.engine.start())
        self.model = ReferenceGate(throttle_enabled=False, now=0.0, **LIMITS)  # type: ignore[arg-type]
        self.model.roll_day(trading_day(time.time()))
        self.seen_records = 0
        self.count = 0
        self.prices = {"AAPL": 100.0, "MSFT": 50.0}
        self.run(self.engine.set_marks(self.prices))
        for symbol, price in self.prices.items():
            self.model.mark(symbol, price, at=0.0)
        self.sync()

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.engine.stop())
        self.loop.close()

    def sync(self) -> None:
        """Feeds the model what the engine journaled since the last step, in order."""
        store = self.engine.store
        assert isinstance(store, MemoryStore)
        for record in store.records[self.seen_records :]:
            if isinstance(record, FillRecord):
                f = record.fill
                self.model.on_fill(
                    f.client_order_id, f.symbol, f.side, f.qty, f.price, f.fee, at=0.0
                )
            elif isinstance(record, OrderRecord):
                order = record.order
                if order.liquidation and order.status == "pending_new":
                    decision = self.model.check(
                        order.client_order_id, order.symbol, order.side, order.qty,
                        "market", liquidation=True, now=0.0,
                    )  # fmt: skip
                    assert decision is None, f"model refused a liquidation: {decision}"
                elif order.status in ("canceled", "expired", "rejected"):
                    self.model.on_cancel(order.client_order_id)
        self.seen_records = len(store.records)

    @rule(
        symbol=st.sampled_from(SYMBOLS),
        side=st.sampled_from(["buy", "sell"]),
        qty=st.one_of(st.integers(1, 150).map(float), st.sampled_from([0.0, -1.0, 0.5])),
        kind=st.sampled_from(["market", "limit"]),
        offset=st.floats(-0.15, 0.15),
        reduce_only=st.sampled_from([False, False, False, True]),
    )
    def submit(
        self, symbol: str, side: str, qty: float, kind: str, offset: float, reduce_only: bool
    ) -> None:
        self.count += 1
        cid = f"o{self.count}"
        limit = round(self.prices[symbol] * (1 + offset), 2) if kind == "limit" else None
        expected = self.model.check(
            cid, symbol, side, qty, kind, limit, None, "day", reduce_only, False, None, now=0.0
        )
        request = OrderRequest(
            symbol=symbol, side=side, qty=qty, type=kind, limit_price=limit,  # type: ignore[arg-type]
            client_order_id=cid, reduce_only=reduce_only,
        )  # fmt: skip
        try:
            self.run(self.engine.submit(request, "strategy"))
            got = None
        except OrderRejected as exc:
            got = exc.rule
        assert got == (expected[0] if expected else None), (got, expected)
        self.sync()

    @rule(symbol=st.sampled_from(SYMBOLS), move=st.floats(-0.06, 0.06))
    def move(self, symbol: str, move: float) -> None:
        self.mark(symbol, move)

    def mark(self, symbol: str, move: float) -> None:
        price = round(self.prices[symbol] * (1 + move), 2)
        self.prices[symbol] = price
        self.model.mark(symbol, price, at=0.0)
        self.run(self.engine.set_marks({symbol: price}))
        self.sync()

    @rule(symbol=st.sampled_from(SYMBOLS), down=st.booleans())
    def shock(self, symbol: str, down: bool) -> None:
        """A 15% gap: breaches the daily loss and drawdown limits of a loaded book."""
        self.mark(symbol, -0.15 if down else 0.15)

    @precondition(lambda self: bool(self.engine.open_orders))
    @rule(pick=st.integers(0, 1000))
    def cancel(self, pick: int) -> None:
        orders = sorted(self.engine.open_orders)
        self.run(self.engine.cancel(orders[pick % len(orders)], "strategy"))
        self.sync()

    @precondition(lambda self: self.count % 7 == 6)
    @rule()
    def kill(self) -> None:
        self.model.engage_kill_switch("ops", "test", at=0.0)
        self.run(self.engine.engage_kill_switch("ops", "test"))
        self.sync()

    @rule()
    def reset(self) -> None:
        self.model.reset_kill_switch("admin", "ok", at=0.0)
        self.run(self.engine.reset_kill_switch("admin", "ok"))
        self.sync()

    @rule(on=st.sampled_from([False, False, False, True]))
    def reduce_only_mode(self, on: bool) -> None:
        self.model.set_reducing(on)
        self.run(self.engine.set_reduce_only(on, "ops"))
        self.sync()

    @precondition(lambda self: self.count % 5 == 4)
    @rule()
    def liquidate(self) -> None:
        self.run(self.engine.liquidate_all("ops", "test"))
        self.sync()

    @invariant()
    def same_state(self) -> None:
        gate, model = self.engine.gate, self.model
        assert gate.state == model.state
        assert (gate.kill_switch() or ("", "", 0))[:2] == (model.kill_switch() or ("", "", 0))[:2]
        ours, theirs = gate.positions(), model.positions()
        assert [p[0] for p in ours] == [p[0] for p in theirs]
        for a, b in zip(ours, theirs, strict=True):
            assert all(close(x, y) for x, y in zip(a[1:], b[1:], strict=True)), (a, b)
        account, expected = gate.account(), model.account()
        for key, value in expected.items():
            assert close(account[key], value), (key, account[key], value)
        for symbol in SYMBOLS:
            assert all(
                close(x, y)
                for x, y in zip(gate.exposure(symbol), model.exposure(symbol), strict=True)
            )
        assert {r[0] for r in gate.resting_orders()} == {r[0] for r in model.resting_orders()}
        open_ids = {o.client_order_id for o in self.engine.open_orders.values()}
        assert open_ids == {r[0] for r in gate.resting_orders()}


EngineAgainstModel.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None
)
TestEngineAgainstModel = EngineAgainstModel.TestCase
