"""The engine's order lifecycle, in process, through every path an operator relies on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tradeengine.engine import Engine
from tradeengine.errors import Conflict, EngineError, InvalidRequest, OrderRejected, Unavailable
from tradeengine.hookspecs import RiskContext, RiskRejection, hookimpl
from tradeengine.plugins import make_plugin_manager
from tradeengine.schemas import (
    BrokerAck,
    BrokerCanceled,
    BrokerFill,
    Order,
    OrderRequest,
    RiskConfigUpdate,
    ThrottleConfigUpdate,
)
from tradeengine.settings import Settings, load_settings
from tradeengine.store import MemoryStore

T = TypeVar("T")

BASE_ENV = {
    "SYNTHETIC_FEED": "false",
    "MAX_ORDERS_PER_MINUTE": "600",
    "MAX_POSITION_SIZE": "100000",
    "PORTFOLIO_HEAT_LIMIT": "5",
}


def settings(**env: str) -> Settings:
    return load_settings({**BASE_ENV, **env}, dotenv=None)


def run(test: Callable[[Engine], Coroutine[Any, Any, T]], **env: str) -> T:
    """Runs `test` against a started engine with a memory store, then stops it."""

    async def main() -> T:
        engine = Engine(settings(**env), store=MemoryStore())
        await engine.start()
        try:
            return await test(engine)
        finally:
            await engine.stop()

    return asyncio.run(main())


def buy(qty: float = 10, symbol: str = "AAPL", **kw: Any) -> OrderRequest:
    return OrderRequest(symbol=symbol, side="buy", qty=qty, **kw)


def sell(qty: float = 10, symbol: str = "AAPL", **kw: Any) -> OrderRequest:
    return OrderRequest(symbol=symbol, side="sell", qty=qty, **kw)


def test_market_order_fills_at_the_mark_and_books_a_position() -> None:
    async def test(engine: Engine) -> None:
        await engine.set_marks({"AAPL": 200.0})
        order, created = await engine.submit(buy(10))
        assert created
        assert (order.status, order.filled_qty, order.filled_avg_price) == ("filled", 10, 200.0)
        [position] = engine.positions()
        assert (position.symbol, position.qty, position.avg_entry_price) == ("AAPL", 10, 200.0)
        await engine.set_marks({"AAPL": 210.0})
        assert engine.positions()[0].unrealized_pl == 100.0

    run(test)


def test_slippage_moves_the_fill_price_against_the_order() -> None:
    async def test(engine: Engine) -> None:
        await engine.set_marks({"AAPL": 100.0})
        bought, _ = await engine.submit(buy(1))
        sold, _ = await engine.submit(sell(1))
        assert bought.filled_avg_price == pytest.approx(100.1)
        assert sold.filled_avg_price == pytest.approx(99.9)

    run(test, SIM_SLIPPAGE_BPS="10")


def test_market_order_without_a_mark_fails_closed() -> None:
    async def test(engine: Engine) -> None:
        with pytest.raises(OrderRejected) as info:
            await engine.submit(buy(1, symbol="ZZZ"))
        assert info.value.rule == "no_mark"
        assert info.value.status == 422
        assert engine.open_orders == {}

    run(test)


def test_limit_order_rests_until_the_mark_crosses() -> None:
    async def test(engine: Engine) -> None:
        await engine.set_marks({"AAPL": 100.0})
        order, _ = await engine.submit(buy(5, type="limit", limit_price=95.0))
        assert order.status == "new"
        await engine.set_marks({"AAPL": 96.0})
        assert (await engine.get_order(order.id)).status == "new"  # type: ignore[union-attr]
        await engine.set_marks({"AAPL": 94.0})
        filled = await engine.get_order(order.id)
        assert filled is not None
        assert (filled.status, filled.filled_avg_price) == ("filled", 94.0)

    run(test)


def test_stop_and_stop_limit_orders_trigger_at_the_stop() -> None:
    async def test(engine: Engine) -> None:
        await engine.set_marks({"AAPL": 100.0})
        stop, _ = await engine.submit(buy(1, type="stop", stop_price=105.0))
        stop_limit, _ = await engine.submit(
            buy(1, type="stop_limit", stop_price=105.0, limit_price=106.0)
        )
        await engine.set_marks({"AAPL": 104.0})
        assert {o.status for o in await engine.list_orders("open")} == {"new"}
        await engine.set_marks({"AAPL": 105.5})
        done = [await engine.get_order(o.id) for o in (stop, stop_limit)]
        assert [o.status for o in done if o] == ["filled", "filled"]

    run(test)


def test_ioc_limit_that_cannot_fill_is_canceled() -> None:
    async def test(engine: Engine) -> None:
        await engine.set_marks({"AAPL": 100.0})
        order, _ = await engine.submit(buy(1, type="limit", limit_price=99.0, time_in_force="ioc"))
        assert order.status == "canceled"
        assert engine.gate.exposure("AAPL") == (0.0, 0.0)

    run(test)


def test_partial_fills_pass_through_partially_filled() -> None:
    statuses: list[str] = []

    async def test(engine: Engine) -> None:
        class Recorder:
            @hookimpl
            def on_order(self, order: Order, previous_status: str | None) -> None:
                statuses.append(order.status)

        engine.pm.register(Recorder())
        await engine.set_marks({"AAPL": 100.0})
        order, _ = await engine.submit(buy(10))
        assert order.status == "filled"

    run(test, SIM_PARTIAL_FILLS="true")
    assert statuses == ["pending_new", "new", "partially_filled", "filled"]


def test_same_client_order_id_same_body_returns_the_original() -> None:
    async def test(engine: Engine) -> None:
        await engine.set_marks({"AAPL": 100.0})
        first, created = await engine.submit(buy(1, client_order_id="strat-1"))
        again, created_again = await engine.submit(buy(1, client_order_id="strat-1"))
        assert created and not created_again
        assert again.id == first.id
        with pytest.raises(Conflict) as info:
            await engine.submit(buy(2, client_order_id="strat-1"))
        assert info.value.status == 409
        assert engine.counters["submitted"] == 1

    run(test)


def test_a_rejected_client_order_id_can_be_used_again() -> None:
    async def test(engine: Engine) -> None:
        await engine.set_marks({"AAPL": 100.0})
        with pytest.raises(OrderRejected):
            await engine.submit(buy(10_000, client_order_id="retry-me"))
        order, created = await engine.submit(buy(1, client_order_id="retry-me"))
        assert created and order.status == "filled"

    run(test)


def test_throttle_rejects_with_retry_after_and_cancels_pass() -> None:
    async def test(engine: Engine) -> None:
        await engine.set_marks({"AAPL": 100.0})
        resting, _ = await engine.submit(buy(1, type="limit", limit_price=99.0))
        await engine.submit(buy(1, type="limit", limit_price=99.0))
        with pytest.raises(OrderRejected) as info:
            await engine.submit(buy(1))
        assert (info.value.status, info.value.code) == (429, "throttled")
        assert info.value.retry_after is not None and 0 < info.value.retry_after <= 30
        canceled = await engine.cancel(resting.id, "trader")
        assert canceled.status == "canceled"

    run(test, MAX_ORDERS_PER_MINUTE="2")


def test_kill_switch_cancels_resting_orders_blocks_new_ones_and_records_who() -> None:
    async def test(engine: Engine) -> None:
        await engine.set_marks({"AAPL": 100.0})
        resting, _ = await engine.submit(buy(1, type="limit", limit_price=90.0))
        state = await engine.engage_kill_switch("alice", "runaway strategy")
        assert state.engaged and state.actor == "alice" and state.reason == "runaway strategy"
        assert state.canceled_orders == [resting.id]
        assert (await engine.get_order(resting.id)).status == "canceled"  # type: ignore[union-attr]
        with pytest.raises(OrderRejected) as info:
            await engine.submit(buy(1))
        assert (info.value.rule, info.value.status) == ("kill_switch", 403)
        again = await engine.engage_kill_switch("bob", "me too")
        assert again.actor == "alice"
        with pytest.raises(InvalidRequest):
            await engine.reset_kill_switch("admin", "  ")
        reset = await engine.reset_kill_switch("admin", "strategy fixed")
        assert not reset.engaged and reset.last_reset_actor == "admin"
        order, _ = await engine.submit(buy(1))
        assert order.status == "filled"

    run(test)


def test_liquidation_while_halted_flattens_every_position() -> None:
    async def test(engine: Engine) -> None:
        await engine.set_marks({"AAPL": 100.0, "MSFT": 300.0})
        await engine.submit(buy(10))
        await engine.submit(sell(5, symbol="MSFT"))
        await engine.engage_kill_switch("ops", "flatten")
        orders = await engine.liquidate_all("ops", "end of day")
        assert sorted((o.symbol, o.side, o.qty, o.liquidation) for o in orders) == [
            ("AAPL", "sell", 10, True),
            ("MSFT", "buy", 5, True),
        ]
        assert all(o.status == "filled" for o in orders)
        assert engine.positions() == []
        assert engine.gate.state == "halted"

    run(test)


def test_close_one_position() -> None:
    async def test(engine: Engine) -> None:
        await engine.set_marks({"AAPL": 100.0})
        await engine.submit(buy(3))
        order = await engine.close_position("AAPL", "ops")
        assert (order.side, order.qty, order.status) == ("sell", 3, "filled")
        with pytest.raises(EngineError) as info:
            await engine.close_position("AAPL", "ops")
        assert info.value.status == 404

    run(test)


def test_reduce_only_mode() -> None:
    async def test(engine: Engine) -> None:
        await engine.set_marks({"AAPL": 100.0})
        await engine.submit(buy(10))
        assert await engine.set_reduce_only(True, "ops") == "reducing"
        with pytest.raises(OrderRejected) as info:
            await engine.submit(buy(1))
        assert info.value.rule == "reduce_only"
        order, _ = await engine.submit(sell(4))
        assert order.status == "filled"

    run(test)


def test_daily_loss_breach_engages_the_kill_switch_and_cancels_resting_orders() -> None:
    async def test(engine: Engine) -> None:
        await engine.set_marks({"AAPL": 100.0})
        await engine.submit(buy(100))
        resting, _ = await engine.submit(buy(1, type="limit", limit_price=95.0))
        await engine.set_marks({"AAPL": 94.5})  # fills the limit: -550 +(-0) so far
        resting2, _ = await engine.submit(buy(1, type="limit", limit_price=90.0))
        await engine.set_marks({"AAPL": 89.0})  # 101 shares down ~1,105: breach
        state = engine.kill_switch_state()
        assert state.engaged and state.actor == "system"
        assert state.reason is not None and "max_daily_loss" in state.reason
        assert (await engine.get_order(resting2.id)).status in {"filled", "canceled"}  # type: ignore[union-attr]
        assert engine.open_orders == {}
        assert resting.id

    run(test, MAX_DAILY_LOSS="-1000")


def test_risk_and_throttle_config_change_live_all_or_nothing() -> None:
    async def test(engine: Engine) -> None:
        config = await engine.update_risk_config(
            RiskConfigUpdate(max_daily_loss=-500.0, portfolio_heat_limit=0.2), "ops"
        )
        assert (config.max_daily_loss, config.portfolio_heat_limit) == (-500.0, 0.2)
        with pytest.raises(InvalidRequest):
            await engine.update_risk_config(
                RiskConfigUpdate(max_daily_loss=100.0, max_position_size=5.0), "ops"
            )
        assert engine.risk_config().max_position_size == 100000.0
        throttle = await engine.update_throttle_config(
            ThrottleConfigUpdate(max_orders_per_minute=30, enabled=True), "ops"
        )
        assert (throttle.max_orders_per_minute, throttle.enabled) == (30, True)
        with pytest.raises(InvalidRequest):
            await engine.update_throttle_config(ThrottleConfigUpdate(max_orders_per_minute=0), "o")
        audit = await engine.store.audit(10)
        assert [a.action for a in audit][:2] == ["config_throttle", "config_risk"]

    run(test)


def test_market_prices_are_refused_outside_backtest_and_validated() -> None:
    async def test(engine: Engine) -> None:
        with pytest.raises(InvalidRequest):
            await engine.set_marks({"AAPL": -1.0})
        with pytest.raises(InvalidRequest):
            await engine.set_marks({"not a symbol": 1.0})
        with pytest.raises(InvalidRequest):
            await engine.set_marks({})

    run(test)


def test_a_risk_plugin_refusal_names_its_rule_and_costs_nothing() -> None:
    class NoTesla:
        @hookimpl
        def check_order(self, order: Order, context: RiskContext) -> RiskRejection | None:
            if order.symbol == "TSLA":
                return RiskRejection("no_tesla", "TSLA is not traded here")
            return None

    async def main() -> None:
        pm = make_plugin_manager(settings(MAX_ORDERS_PER_MINUTE="1"))
        pm.register(NoTesla(), name="no-tesla")
        engine = Engine(settings(MAX_ORDERS_PER_MINUTE="1"), pm, MemoryStore())
        await engine.start()
        await engine.set_marks({"TSLA": 200.0, "AAPL": 100.0})
        with pytest.raises(OrderRejected) as info:
            await engine.submit(buy(1, symbol="TSLA", client_order_id="t1"))
        assert (info.value.rule, info.value.status) == ("no_tesla", 422)
        # The refused order gave its throttle token back and its id stays usable.
        order, _ = await engine.submit(buy(1, client_order_id="t1"))
        assert order.status == "filled"
        await engine.stop()

    asyncio.run(main())


def test_a_journal_that_cannot_write_refuses_the_order() -> None:
    async def test(engine: Engine) -> None:
        await engine.set_marks({"AAPL": 100.0})
        store = engine.store
        assert isinstance(store, MemoryStore)
        store.fail_writes = OSError("disk full")
        with pytest.raises(Unavailable) as info:
            await engine.submit(buy(1, client_order_id="x1"))
        assert (info.value.status, info.value.code) == (503, "journal_unavailable")
        assert engine.positions() == [] and engine.open_orders == {}
        store.fail_writes = None
        order, _ = await engine.submit(buy(1, client_order_id="x1"))
        assert order.status == "filled"

    run(test)


def test_unacknowledged_orders_are_resolved_after_order_timeout() -> None:
    async def test(engine: Engine) -> None:
        await engine.set_marks({"AAPL": 100.0})
        assert engine.broker is not None
        sent: list[Order] = []

        async def swallow(order: Order) -> None:
            sent.append(order)

        engine.broker.submit = swallow  # type: ignore[method-assign]
        order, _ = await engine.submit(buy(1, type="limit", limit_price=90.0))
        assert order.status == "pending_new"
        await asyncio.sleep(0.5)
        resolved = await engine.get_order(order.id)
        assert resolved is not None
        assert resolved.status == "rejected"
        assert resolved.reject_reason is not None and "ORDER_TIMEOUT" in resolved.reject_reason
        assert engine.gate.exposure("AAPL") == (0.0, 0.0)
        assert len(sent) == 1

    run(test, ORDER_TIMEOUT="0.2")


def test_duplicate_and_late_broker_events_are_applied_once() -> None:
    async def test(engine: Engine) -> None:
        await engine.set_marks({"AAPL": 100.0})
        order, _ = await engine.submit(buy(2))
        await engine.on_broker_event(BrokerAck(order.client_order_id, "x", "new"))
        [fill] = await engine.store.fills()
        await engine.on_broker_event(BrokerFill(order.client_order_id, fill.exec_id, 2, 100.0))
        await engine.on_broker_event(BrokerCanceled(order.client_order_id, "late"))
        assert engine.positions()[0].qty == 2
        store = engine.store
        assert isinstance(store, MemoryStore)
        assert len(await store.fills()) == 1
        assert (await engine.get_order(order.id)).status == "filled"  # type: ignore[union-attr]

    run(test)


def test_shutdown_cancels_resting_orders_and_refuses_new_ones() -> None:
    async def main() -> None:
        engine = Engine(settings(), store=MemoryStore())
        await engine.start()
        await engine.set_marks({"AAPL": 100.0})
        resting, _ = await engine.submit(buy(1, type="limit", limit_price=90.0))
        await engine.request_shutdown("admin", "maintenance")
        with pytest.raises(OrderRejected) as info:
            await engine.submit(buy(1))
        assert info.value.status == 503
        await engine.stop()
        order = await engine.store.get_order(resting.id)
        assert order is not None and order.status == "canceled"

    asyncio.run(main())


def test_shutdown_while_an_order_is_in_flight_loses_nothing() -> None:
    async def main() -> None:
        engine = Engine(settings(SIM_LATENCY_MS="200"), store=MemoryStore())
        await engine.start()
        await engine.set_marks({"AAPL": 100.0})
        in_flight = asyncio.create_task(engine.submit(buy(1)))
        await asyncio.sleep(0.05)
        await engine.request_shutdown("admin", "maintenance")
        order, _ = await in_flight
        assert order.status == "filled"
        await engine.stop()
        journaled = await engine.store.get_order(order.id)
        assert journaled is not None and journaled.status == "filled"

    asyncio.run(main())


def test_clear_cache_keeps_live_state_and_the_journal() -> None:
    async def test(engine: Engine) -> None:
        await engine.set_marks({"AAPL": 100.0})
        orders = [(await engine.submit(buy(1)))[0] for _ in range(5)]
        resting, _ = await engine.submit(buy(1, type="limit", limit_price=90.0))
        assert len(engine.finished) == 3  # CACHE_SIZE
        assert engine.clear_cache() == 3
        assert resting.id in engine.open_orders
        assert (await engine.get_order(orders[0].id)) is not None
        assert engine.positions()[0].qty == 5

    run(test, CACHE_SIZE="3")


def test_csv_replay_drives_the_marks(tmp_path: Path) -> None:
    data = tmp_path / "bars.csv"
    data.write_text(
        "timestamp,symbol,price\n"
        "2026-01-02T14:30:00Z,AAPL,100.0\n"
        "2026-01-02T14:30:01Z,AAPL,101.0\n"
        "1767364202,MSFT,300.0\n"
    )

    async def test(engine: Engine) -> None:
        for _ in range(50):
            if engine.gate.get_mark("MSFT") is not None:
                break
            await asyncio.sleep(0.01)
        assert engine.gate.get_mark("AAPL") == 101.0
        assert engine.gate.get_mark("MSFT") == 300.0

    run(test, BACKTEST_DATA=str(data), REPLAY_SPEED="0")


def test_the_default_synthetic_feed_lets_a_first_market_order_fill() -> None:
    async def test(engine: Engine) -> None:
        order, _ = await engine.submit(buy(10))
        assert order.status == "filled"

    run(test, SYNTHETIC_FEED="true")


def test_an_unknown_broker_stops_the_start_with_a_clear_message() -> None:
    async def main() -> None:
        engine = Engine(
            settings(EXECUTION_MODE="live", BROKER="nosuch", TRADING_MODE="paper"),
            store=MemoryStore(),
        )
        with pytest.raises(EngineError, match="BROKER='nosuch'"):
            await engine.start()

    asyncio.run(main())


class QuotingBroker:
    """A sim broker that also answers the live-mode market data calls."""

    def __init__(self, context: Any) -> None:
        from tradeengine.default_plugins.sim import SimBroker

        self.sim = SimBroker(context)
        self.name = "quoting"
        self.asked: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sim, name)

    async def latest_price(self, symbol: str) -> float | None:
        self.asked.append(symbol)
        return {"AAPL": 150.0}.get(symbol)

    async def account_equity(self) -> tuple[float, float] | None:
        return (25_000.0, 24_000.0)


def test_live_mode_prices_market_orders_from_the_broker_and_seeds_equity() -> None:

    from tradeengine.broker import BrokerFactory

    class Plugin:
        @hookimpl
        def register_brokers(self, register: Callable[[str, BrokerFactory], None]) -> None:
            register("quoting", QuotingBroker)

    async def main() -> None:
        live = settings(EXECUTION_MODE="live", BROKER="quoting", MARK_MAX_AGE="60")
        pm = make_plugin_manager(live, entry_points=False)
        pm.register(Plugin(), name="quoting")
        engine = Engine(live, pm, MemoryStore())
        await engine.start()
        account = engine.gate.account()
        assert (account["equity"], account["daily_pnl"]) == (25_000.0, 1_000.0)
        order, _ = await engine.submit(buy(1))
        assert (order.status, order.filled_avg_price) == ("filled", 150.0)
        await engine.submit(buy(1))
        broker = engine.broker
        assert isinstance(broker, QuotingBroker)
        assert broker.asked == ["AAPL"]  # the second order's mark was fresh
        with pytest.raises(OrderRejected) as info:
            await engine.submit(buy(1, symbol="MSFT"))
        assert info.value.rule == "no_mark"
        await engine.stop()

    asyncio.run(main())


def test_order_ids_are_unique_uuid7_that_sort_by_creation_time() -> None:
    import uuid

    from tradeengine.schemas import time_ordered_id

    ids = [time_ordered_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 7 for i in ids)
    first, later = ids[0], None
    time.sleep(0.002)
    later = time_ordered_id()
    assert later > first
