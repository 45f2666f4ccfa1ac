"""The Python face of the Rust core: what a caller of `tradeengine.Gate` relies on."""

from __future__ import annotations

import math

import pytest

import tradeengine
from tradeengine import Gate
from tradeengine.core import Rejection, trading_day


def open_gate(**kwargs: float) -> Gate:
    gate = Gate(**kwargs)  # type: ignore[arg-type]
    gate.mark("AAPL", 100.0)
    return gate


def test_accept_returns_none_and_reserves_exposure() -> None:
    gate = open_gate()
    assert gate.check("c1", "AAPL", "buy", 10) is None
    assert gate.exposure("AAPL") == (10.0, 0.0)
    assert gate.resting_orders() == [("c1", "AAPL", "buy", 10.0, 100.0)]


def test_rejections_name_their_rule() -> None:
    gate = open_gate()
    assert gate.decide("c1", "MSFT", "buy", 1) == Rejection(
        "no_mark", "no market price for MSFT: a market order cannot be checked blind", None
    )
    rejection = gate.decide("c2", "AAPL", "buy", 1, "limit", limit_price=1000.0)
    assert rejection is not None
    assert rejection.rule == "price_collar"
    assert rejection.rule in tradeengine.RULES


def test_bad_enumerations_raise_the_core_error_hierarchy() -> None:
    gate = open_gate()
    with pytest.raises(tradeengine.InvalidArgumentError, match="buy or sell"):
        gate.check("c1", "AAPL", "hold", 1)
    with pytest.raises(tradeengine.ConfigError, match="max_daily_loss"):
        gate.set_limits(max_daily_loss=500.0)
    assert gate.limits()["max_daily_loss"] == -1000.0
    with pytest.raises(tradeengine.InvalidStateError):
        gate.reset_kill_switch("admin", "")
    assert issubclass(tradeengine.ConfigError, tradeengine.TradeEngineError)


def test_throttle_answers_with_the_wait() -> None:
    gate = open_gate(max_orders_per_minute=2)
    assert gate.check("a", "AAPL", "buy", 1, now=0.0) is None
    assert gate.check("b", "AAPL", "buy", 1, now=0.0) is None
    rejection = gate.check("c", "AAPL", "buy", 1, now=0.0)
    assert rejection is not None
    assert rejection[0] == "throttle"
    assert rejection[2] == pytest.approx(30.0)
    assert gate.check("c", "AAPL", "buy", 1, now=30.0) is None


def test_kill_switch_latches_with_who_and_why() -> None:
    gate = open_gate()
    assert gate.engage_kill_switch("alice", "runaway strategy", at=1.0)
    assert gate.state == "halted"
    assert gate.kill_switch() == ("alice", "runaway strategy", 1.0)
    assert gate.check("c1", "AAPL", "buy", 1) is not None
    assert gate.reset_kill_switch("admin", "strategy fixed", at=2.0)
    assert gate.state == "active"
    assert gate.last_reset() == ("admin", "strategy fixed", 2.0)


def test_fills_book_positions_and_pnl() -> None:
    gate = open_gate()
    assert gate.check("c1", "AAPL", "buy", 10) is None
    assert gate.on_fill("c1", "AAPL", "buy", 10, 100.0) is None
    gate.mark("AAPL", 110.0)
    qty, avg, realized, unrealized, mark, stop = gate.position("AAPL") or (0, 0, 0, 0, None, None)
    assert (qty, avg, realized, unrealized, mark, stop) == (10.0, 100.0, 0.0, 100.0, 110.0, None)
    assert gate.account()["equity"] == 100_100.0
    assert gate.exposure("AAPL") == (0.0, 0.0)


def test_batch_entry_points_match_single_calls() -> None:
    single, batch = open_gate(), open_gate()
    orders = [
        (f"c{i}", "AAPL", "buy" if i % 3 else "sell", float(i % 7 + 1), "market")
        for i in range(200)
    ]
    expected = [single.check(*o, now=0.0) for o in orders]
    full = [(*o, None, None, "day", False, False, None) for o in orders]
    assert batch.check_batch(full, now=0.0) == expected
    fills = [(f"f{i}", "AAPL", "buy", 1.0, 100.0 + i, 0.0) for i in range(100)]
    assert batch.replay_fills(fills) == 100
    position = batch.position("AAPL")
    assert position is not None
    assert position[0] == 100.0
    assert math.isclose(position[1], 149.5)


def test_trading_day_is_new_york_time() -> None:
    # 2026-03-09 03:30 UTC is still Sunday 2026-03-08 in New York.
    assert trading_day(1_773_027_000.0) == trading_day(1_772_960_000.0)
    assert trading_day(1_773_027_000.0 + 86_400) == trading_day(1_773_027_000.0) + 1
