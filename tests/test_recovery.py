"""Recovery: an engine stopped (or cut off) and started again on the same journal comes back
with the same book, latch, limits and resting orders, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest

from test_engine import buy, sell
from tradeengine.engine import Engine
from tradeengine.errors import Conflict, OrderRejected
from tradeengine.schemas import (
    Order,
    OrderRecord,
    RiskConfigUpdate,
    ThrottleConfigUpdate,
)
from tradeengine.settings import VARIABLES, Settings, load_settings
from tradeengine.store import open_store

T = TypeVar("T")

BASE_ENV = {
    "SYNTHETIC_FEED": "false",
    "MAX_ORDERS_PER_MINUTE": "600",
    "MAX_POSITION_SIZE": "100000",
    "PORTFOLIO_HEAT_LIMIT": "5",
    # Resting orders stay at the broker over a restart, as after a crash.
    "SHUTDOWN_CANCEL_ORDERS": "false",
}


def settings(url: str, **env: str) -> Settings:
    return load_settings({**BASE_ENV, "DATABASE_URL": url, **env}, dotenv=None)


def session(url: str, test: Callable[[Engine], Awaitable[T]], **env: str) -> T:
    """Starts an engine on the journal at `url`, runs `test`, stops the engine."""

    async def main() -> T:
        s = settings(url, **env)
        engine = Engine(s, store=open_store(s))
        await engine.start()
        try:
            return await test(engine)
        finally:
            await engine.stop()

    return asyncio.run(main())


def count_submits(engine: Engine) -> list[str]:
    """The client order ids the broker receives from now on."""
    sent: list[str] = []
    broker = engine.broker
    assert broker is not None
    submit = broker.submit

    async def counting(order: Order) -> None:
        sent.append(order.client_order_id)
        await submit(order)

    broker.submit = counting  # type: ignore[method-assign]
    return sent


def test_book_resting_orders_and_idempotency_survive_a_restart(database_url: str) -> None:
    async def trade(engine: Engine) -> tuple[Any, Order]:
        await engine.set_marks({"AAPL": 100.0, "MSFT": 300.0})
        await engine.submit(buy(10, client_order_id="b1"))
        await engine.submit(sell(4, client_order_id="s1"))
        await engine.submit(buy(5, "MSFT", client_order_id="m1"))
        resting, _ = await engine.submit(
            buy(3, type="limit", limit_price=95.0, client_order_id="rest")
        )
        assert resting.status == "new"
        return engine.positions(), resting

    positions, resting = session(database_url, trade)

    async def after_restart(engine: Engine) -> None:
        assert engine.positions() == positions
        assert list(engine.open_orders.values()) == [resting]
        assert engine.gate.exposure("AAPL") == (3.0, 0.0)
        sent = count_submits(engine)
        again, created = await engine.submit(buy(10, client_order_id="b1"))
        assert not created
        assert (again.status, again.filled_qty) == ("filled", 10)
        same, created = await engine.submit(
            buy(3, type="limit", limit_price=95.0, client_order_id="rest")
        )
        assert (same, created) == (resting, False)
        with pytest.raises(Conflict):
            await engine.submit(buy(11, client_order_id="b1"))
        assert sent == []
        # the restored resting order is live at the simulated market
        await engine.set_marks({"AAPL": 94.0})
        filled = await engine.get_order(resting.id)
        assert filled is not None
        assert (filled.status, filled.filled_avg_price) == ("filled", 94.0)
        assert {p.symbol: p.qty for p in engine.positions()} == {"AAPL": 9, "MSFT": 5}
        assert engine.gate.exposure("AAPL") == (0.0, 0.0)

    session(database_url, after_restart)

    async def third(engine: Engine) -> None:
        assert {p.symbol: p.qty for p in engine.positions()} == {"AAPL": 9, "MSFT": 5}
        assert engine.open_orders == {}
        assert len(await engine.store.fills()) == 4

    session(database_url, third)


def test_kill_switch_stays_latched_and_config_survives_a_restart(database_url: str) -> None:
    async def halt(engine: Engine) -> None:
        await engine.set_marks({"AAPL": 100.0})
        await engine.update_risk_config(RiskConfigUpdate(max_position_size=5000.0), "ops")
        await engine.update_throttle_config(ThrottleConfigUpdate(max_orders_per_minute=120), "ops")
        await engine.set_reduce_only(True, "ops")
        await engine.engage_kill_switch("ops", "fat finger drill")

    session(database_url, halt)

    async def still_halted(engine: Engine) -> None:
        state = engine.kill_switch_state()
        assert (state.engaged, state.actor, state.reason) == (True, "ops", "fat finger drill")
        assert engine.gate.state == "halted"
        assert engine.risk_config().max_position_size == 5000.0
        assert engine.throttle_config().max_orders_per_minute == 120
        await engine.set_marks({"AAPL": 100.0})
        with pytest.raises(OrderRejected) as rejected:
            await engine.submit(buy(1))
        assert rejected.value.rule == "kill_switch"
        await engine.reset_kill_switch("admin", "drill over")
        assert engine.gate.state == "reducing"
        await engine.set_reduce_only(False, "admin")
        order, _ = await engine.submit(buy(1))
        assert order.status == "filled"

    session(database_url, still_halted)

    async def released(engine: Engine) -> None:
        state = engine.kill_switch_state()
        assert not state.engaged
        assert (state.last_reset_actor, state.last_reset_reason) == ("admin", "drill over")
        assert engine.gate.state == "active"
        assert engine.risk_config().max_position_size == 5000.0

    session(database_url, released)

    # A limit changed in the environment since the last start wins over the journal...
    async def limits(engine: Engine) -> tuple[float, int]:
        return (
            engine.risk_config().max_position_size,
            engine.throttle_config().max_orders_per_minute,
        )

    assert session(database_url, limits, MAX_POSITION_SIZE="7000") == (7000.0, 120)

    # ...and a live change made after that start wins over the same environment again.
    async def change(engine: Engine) -> None:
        await engine.update_risk_config(RiskConfigUpdate(max_position_size=6000.0), "ops")

    session(database_url, change, MAX_POSITION_SIZE="7000")
    assert session(database_url, limits, MAX_POSITION_SIZE="7000") == (6000.0, 120)


def test_orders_left_in_flight_are_resolved_with_the_broker(database_url: str) -> None:
    never_sent = Order(
        id="o-1",
        client_order_id="never-sent",
        symbol="AAPL",
        side="buy",
        type="limit",
        qty=5,
        limit_price=90.0,
        created_at="2026-01-05T15:00:00Z",
        updated_at="2026-01-05T15:00:00Z",
    )
    canceling = msgspec.structs.replace(
        never_sent, id="o-2", client_order_id="canceling", status="pending_cancel"
    )

    async def crash_left_this(engine: Engine) -> None:
        # What a process killed between journal and broker leaves behind.
        await engine.store.write([OrderRecord(never_sent), OrderRecord(canceling)])

    session(database_url, crash_left_this)

    async def resolved(engine: Engine) -> None:
        assert engine.open_orders == {}
        rejected = await engine.get_order("o-1")
        canceled = await engine.get_order("o-2")
        assert rejected is not None
        assert canceled is not None
        assert rejected.status == "rejected"
        assert rejected.reject_reason == "broker has no record of the order after a restart"
        assert canceled.status == "canceled"
        assert engine.gate.exposure("AAPL") == (0.0, 0.0)
        assert engine.gate.knows("never-sent")

    session(database_url, resolved)


def test_equity_peak_and_stop_loss_risk_survive_a_restart(database_url: str) -> None:
    async def trade(engine: Engine) -> dict[str, float]:
        await engine.set_marks({"AAPL": 100.0})
        await engine.submit(buy(100, stop_loss=95.0))
        await engine.set_marks({"AAPL": 120.0})
        await engine.set_marks({"AAPL": 110.0})
        return engine.gate.account()

    before = session(database_url, trade)
    assert before["peak_equity"] == 102_000.0
    assert before["risk"] == 100 * 5.0

    async def account(engine: Engine) -> dict[str, float]:
        return engine.gate.account()

    after = session(database_url, account)
    for figure in ("equity", "peak_equity", "drawdown", "day_start_equity", "risk"):
        assert after[figure] == pytest.approx(before[figure]), figure


def test_kill_switch_cli_is_honoured_by_a_running_engine_within_a_second(
    database_url: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    env.update(DATABASE_URL=database_url, LOG_FILE=str(tmp_path / "cli.log"))

    async def cli(*args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tradeengine.cli",
            "kill-switch",
            *args,
            env=env,
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await process.communicate()
        assert process.returncode == 0, out.decode()
        return out.decode()

    async def within_a_second(check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 1.0
        while not check():
            assert time.monotonic() < deadline, "the running engine did not follow in 1 s"
            await asyncio.sleep(0.02)

    async def test(engine: Engine) -> None:
        await engine.set_marks({"AAPL": 100.0})
        resting, _ = await engine.submit(buy(1, type="limit", limit_price=95.0))

        out = await cli("engage", "--reason", "API down, halting", "--actor", "oncall")
        assert "ENGAGED by oncall" in out
        await within_a_second(lambda: engine.gate.kill_switch() is not None)
        state = engine.kill_switch_state()
        assert (state.actor, state.reason) == ("oncall", "API down, halting")
        canceled = await engine.get_order(resting.id)
        assert canceled is not None
        assert canceled.status == "canceled"
        with pytest.raises(OrderRejected):
            await engine.submit(buy(1))

        assert "ENGAGED" in await cli("status")
        out = await cli("reset", "--reason", "all clear", "--actor", "admin")
        assert "released" in out
        await within_a_second(lambda: engine.gate.kill_switch() is None)
        assert engine.kill_switch_state().last_reset_actor == "admin"
        order, _ = await engine.submit(buy(1))
        assert order.status == "filled"

    session(database_url, test)
