"""The Alpaca broker through the engine: EXECUTION_MODE=live, BROKER=alpaca, the plugin found
by its entry point, alpaca-py's real clients against the fake Alpaca (tests/fake_alpaca.py).

Submit, fills from the stream, positions, cancel all, the kill switch mirrored as
`suspend_trade`, liquidation while halted, reset, reconciliation after a forced mismatch, a
dropped stream, and a restart of tradeengine while orders are open at Alpaca. Prices: a
market order with no mark is priced by Alpaca's market data API (else refused, no_mark); the
book's equity and daily PnL are the Alpaca account's, across a restart too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from tradeengine_alpaca import AlpacaBroker

from fake_alpaca import API_KEY, FAST, SECRET_KEY, FakeAlpaca, eventually
from tradeengine.engine import Engine
from tradeengine.errors import OrderRejected, Unavailable
from tradeengine.schemas import AuditRecord, Order, OrderRequest
from tradeengine.settings import Settings, load_settings
from tradeengine.store import MemoryStore, Store, open_store

T = TypeVar("T")


def live_settings(fake: FakeAlpaca, **env: str) -> Settings:
    return load_settings(
        {
            "EXECUTION_MODE": "live",
            "BROKER": "alpaca",
            "TRADING_MODE": "paper",
            "ALPACA_API_KEY": API_KEY,
            "ALPACA_SECRET_KEY": SECRET_KEY,
            "ALPACA_BASE_URL": fake.base_url,
            "ALPACA_STREAM_URL": fake.stream_url,
            "ALPACA_DATA_URL": fake.data_url,
            "SYNTHETIC_FEED": "false",
            "MAX_ORDERS_PER_MINUTE": "600",
            "MAX_POSITION_SIZE": "1000000",
            "PORTFOLIO_HEAT_LIMIT": "5",
            **FAST,
            **env,
        },
        dotenv=None,
    )


@pytest.fixture
def fake() -> Iterator[FakeAlpaca]:
    with FakeAlpaca() as server:
        server.set_price("AAPL", 100.0)
        server.set_price("MSFT", 400.0)
        yield server


def broker_of(engine: Engine) -> AlpacaBroker:
    assert isinstance(engine.broker, AlpacaBroker)
    return engine.broker


async def started(settings: Settings, store: Store, *, marks: bool = True) -> Engine:
    engine = Engine(settings, store=store)
    await engine.start()
    if marks:
        await engine.set_marks({"AAPL": 100.0, "MSFT": 400.0}, actor="system")
    broker = broker_of(engine)
    await eventually(lambda: broker.ready.is_set() and broker.connected)
    return engine


@pytest.fixture
def run(fake: FakeAlpaca) -> Callable[..., Any]:
    """`run(test, marks=True, **env)`: `marks=False` starts with no mark set by the test."""

    def runner(
        test: Callable[[Engine], Coroutine[Any, Any, T]], *, marks: bool = True, **env: str
    ) -> T:
        async def main() -> T:
            engine = await started(live_settings(fake, **env), MemoryStore(), marks=marks)
            try:
                return await test(engine)
            finally:
                await engine.stop()

        return asyncio.run(main())

    return runner


def buy(qty: float = 10, symbol: str = "AAPL", **kw: Any) -> OrderRequest:
    return OrderRequest(symbol=symbol, side="buy", qty=qty, **kw)


def status_of(engine: Engine, order: Order) -> str:
    current = engine.open_orders.get(order.id) or engine.finished.get(order.id)
    assert current is not None
    return current.status


def connection_gauge(engine: Engine) -> float | None:
    metrics = engine.pm.get_plugin("metrics")
    assert metrics is not None
    value: float | None = metrics.registry.get_sample_value(
        "broker_connection_status", {"broker": "alpaca"}
    )
    return value


def test_an_order_is_filled_from_the_stream_and_booked(
    fake: FakeAlpaca, run: Callable[..., Any]
) -> None:
    async def test(engine: Engine) -> None:
        order, created = await engine.submit(buy(10, client_order_id="strategy-1"))
        assert created and fake.order("strategy-1")["qty"] == "10"
        await eventually(lambda: status_of(engine, order) == "filled")
        filled = engine.finished[order.id]
        assert filled.broker_order_id == fake.order("strategy-1")["id"]
        assert (filled.filled_qty, filled.filled_avg_price) == (10, 100.0)
        [position] = engine.positions()
        assert (position.symbol, position.qty) == ("AAPL", 10)
        assert fake.position_qty("AAPL") == 10
        health = broker_of(engine).health()
        assert health["connected"] and health["reconciliation"]["state"] == "ok"
        assert connection_gauge(engine) == 1
        assert (await engine.broker.test_connection())["ok"]  # type: ignore[union-attr]

    run(test)


def test_partial_fills_then_cancel_keep_what_was_filled(
    fake: FakeAlpaca, run: Callable[..., Any]
) -> None:
    async def test(engine: Engine) -> None:
        order, _ = await engine.submit(buy(10, type="limit", limit_price=99.0))
        await eventually(lambda: status_of(engine, order) == "new")
        fake.fill(order.client_order_id, 4, 99.0)
        fake.send(fake.events[-1])  # the same execution again
        await eventually(lambda: status_of(engine, order) == "partially_filled")
        await engine.cancel(order.id, "trader")
        await eventually(lambda: status_of(engine, order) == "canceled")
        assert engine.finished[order.id].filled_qty == 4
        assert engine.positions()[0].qty == 4 == fake.position_qty("AAPL")

    run(test)


def test_cancel_all_cancels_at_alpaca(fake: FakeAlpaca, run: Callable[..., Any]) -> None:
    async def test(engine: Engine) -> None:
        one, _ = await engine.submit(buy(5, type="limit", limit_price=90.0))
        two, _ = await engine.submit(buy(5, "MSFT", type="limit", limit_price=390.0))
        assert len(fake.open_orders()) == 2
        canceled = await engine.cancel_all("ops")
        assert sorted(canceled) == sorted([one.id, two.id])
        await eventually(lambda: not engine.open_orders)
        assert fake.open_orders() == []
        assert status_of(engine, one) == status_of(engine, two) == "canceled"

    run(test)


def test_kill_switch_suspends_trading_at_alpaca_liquidation_still_works_reset_clears(
    fake: FakeAlpaca, run: Callable[..., Any]
) -> None:
    async def test(engine: Engine) -> None:
        broker = broker_of(engine)
        filled, _ = await engine.submit(buy(10))
        await eventually(lambda: engine.positions())
        resting, _ = await engine.submit(buy(5, "MSFT", type="limit", limit_price=390.0))
        foreign = fake.add_foreign_order("TSLA", 1, 100.0)

        await engine.engage_kill_switch("ops", "runaway strategy")
        await broker.settle()
        assert fake.configuration["suspend_trade"] is True
        await eventually(lambda: status_of(engine, resting) == "canceled")
        assert fake.order(foreign["client_order_id"])["status"] == "canceled"
        with pytest.raises(OrderRejected) as refused:
            await engine.submit(buy(1))
        assert refused.value.code == "kill_switch_engaged"

        [liquidation] = await engine.liquidate_all("ops", "flatten")
        await eventually(lambda: status_of(engine, liquidation) == "filled")
        assert fake.position_qty("AAPL") == 0 and engine.positions() == []
        assert fake.configuration["suspend_trade"] is True  # back on after the liquidation

        await engine.reset_kill_switch("admin", "strategy fixed")
        await broker.settle()
        assert fake.configuration["suspend_trade"] is False
        again, _ = await engine.submit(buy(1))
        await eventually(lambda: status_of(engine, again) == "filled")
        assert filled.client_order_id != again.client_order_id

    run(test)


def test_a_forced_mismatch_is_journaled_shown_and_halts_trading(
    fake: FakeAlpaca, run: Callable[..., Any]
) -> None:
    async def test(engine: Engine) -> None:
        broker = broker_of(engine)
        fake.add_foreign_position("NVDA", 7, 120.0)
        await broker.reconcile("test")
        state = broker.health()["reconciliation"]
        assert state["state"] == "mismatch" and state["halted"]
        assert state["differences"][0]["symbol"] == "NVDA"
        kill = engine.kill_switch_state()
        assert kill.engaged and kill.actor == "alpaca" and "NVDA" in (kill.reason or "")
        await broker.settle()
        assert fake.configuration["suspend_trade"] is True
        audits = [r for r in engine.store.records if isinstance(r, AuditRecord)]  # type: ignore[attr-defined]
        assert any(a.action == "reconciliation_mismatch" and a.actor == "alpaca" for a in audits)

    run(test)


def test_a_dropped_stream_is_polled_then_reconnected_and_reconciled(
    fake: FakeAlpaca, run: Callable[..., Any]
) -> None:
    async def test(engine: Engine) -> None:
        broker = broker_of(engine)
        order, _ = await engine.submit(buy(10, type="limit", limit_price=99.0))
        await eventually(lambda: status_of(engine, order) == "new")
        fake.accept_streams = False
        fake.drop_streams()
        await eventually(lambda: connection_gauge(engine) == 0)
        fake.fill(order.client_order_id, 10, 98.0)  # while nobody listens
        await eventually(lambda: status_of(engine, order) == "filled")
        assert engine.finished[order.id].filled_avg_price == 98.0
        fake.accept_streams = True
        await eventually(lambda: connection_gauge(engine) == 1)
        await broker.settle()
        assert broker.health()["reconciliation"]["reason"] == "reconnect"
        assert broker.health()["reconciliation"]["state"] == "ok"
        assert not engine.kill_switch_state().engaged

    run(test)


def test_an_order_whose_submit_and_lookup_failed_is_resolved_by_id_after_order_timeout(
    fake: FakeAlpaca, run: Callable[..., Any]
) -> None:
    async def test(engine: Engine) -> None:
        fake.hold_events()  # the stream says nothing about it either
        fake.fail("POST", "/v2/orders", 500, after=True)
        fake.fail("GET", "/v2/orders:by_client_order_id", 500, times=3)
        with pytest.raises(Unavailable):
            await engine.submit(buy(10, client_order_id="lost-1"))
        [order] = engine.open_orders.values()
        assert order.status == "pending_new" and fake.order("lost-1")["status"] == "filled"
        await eventually(lambda: status_of(engine, order) == "filled", timeout=5)
        assert engine.finished[order.id].filled_qty == 10
        assert len(fake.requested("POST", "/v2/orders")) == 1

    run(test)


@pytest.mark.parametrize("journal", ["memory", "sqlite"])
def test_a_restart_while_orders_are_open_books_what_happened_meanwhile(
    fake: FakeAlpaca, journal: str, tmp_path: Path
) -> None:
    async def main() -> None:
        settings = live_settings(
            fake,
            SHUTDOWN_CANCEL_ORDERS="false",
            DATABASE_URL=f"sqlite:///{tmp_path / 'journal.db'}",
        )
        memory = MemoryStore()

        def store() -> Store:
            return memory if journal == "memory" else open_store(settings)

        first = await started(settings, store())
        order, _ = await first.submit(buy(10, type="limit", limit_price=99.0))
        await eventually(lambda: status_of(first, order) == "new")
        fake.fill(order.client_order_id, 4, 99.0)
        await eventually(lambda: status_of(first, order) == "partially_filled")
        await first.stop()
        assert fake.open_orders()  # still working at Alpaca

        fake.fill(order.client_order_id, 6, 97.0)  # while tradeengine is down
        second = await started(settings, store())
        try:
            await eventually(lambda: order.id in second.finished)
            done = second.finished[order.id]
            assert (done.status, done.filled_qty) == ("filled", 10)
            assert done.filled_avg_price == pytest.approx(97.8)
            fills = [f for f in await second.store.fills() if f.order_id == order.id]
            assert sum(f.qty for f in fills) == 10 and len(fills) == 2
            assert broker_of(second).health()["reconciliation"]["state"] == "ok"
            assert [p.qty for p in second.positions()] == [10]
        finally:
            await second.stop()

    asyncio.run(main())


def test_an_alpaca_that_cannot_be_reached_stops_the_start(fake: FakeAlpaca) -> None:
    async def main() -> None:
        settings = live_settings(fake, ALPACA_BASE_URL="http://127.0.0.1:9")
        engine = Engine(settings, store=MemoryStore())
        with pytest.raises(Exception, match="cannot use Alpaca"):
            await engine.start()
        await engine.stop()

    asyncio.run(main())


# ---- prices and the account's equity ------------------------------------------------------


def test_a_market_order_without_a_mark_is_priced_by_alpacas_data_api_and_fills(
    fake: FakeAlpaca, run: Callable[..., Any]
) -> None:
    async def test(engine: Engine) -> None:
        assert engine.gate.get_mark("AAPL") is None
        fake.set_price("AAPL", 123.5)
        order, _ = await engine.submit(buy(10))
        await eventually(lambda: status_of(engine, order) == "filled")
        assert engine.finished[order.id].filled_avg_price == 123.5
        assert fake.requested("GET", "/v2/stocks/trades/latest") == [{"symbols": "AAPL"}]
        # Within MARK_MAX_AGE the mark is fresh: the next order is checked without asking.
        fake.auto_fill = False
        again, _ = await engine.submit(buy(1))
        assert len(fake.requested("GET", "/v2/stocks/trades/latest")) == 1
        # Its fill, at a price the data API never showed, is the mark now (from the stream).
        fake.fill(again.client_order_id, 1, 124.0)
        await eventually(lambda: engine.gate.get_mark("AAPL") == 124.0)
        assert status_of(engine, again) == "filled"
        fake.auto_fill = True

        fake.set_price("IBM", 50.0, trade=False)  # quoted, never traded yet
        fake.set_quote("IBM", 49.5, 50.5)
        quoted, _ = await engine.submit(buy(2, "IBM"))
        await eventually(lambda: status_of(engine, quoted) == "filled")
        assert fake.requested("GET", "/v2/stocks/quotes/latest") == [{"symbols": "IBM"}]
        assert broker_of(engine).health()["market_data"]["prices"] == 2

    run(test, marks=False, MARK_MAX_AGE="60")


def test_a_market_order_the_data_api_cannot_price_is_refused_no_mark(
    fake: FakeAlpaca, run: Callable[..., Any]
) -> None:
    async def test(engine: Engine) -> None:
        with pytest.raises(OrderRejected) as unknown:
            await engine.submit(buy(1, "ZZZZ"))  # no trade, no quote
        assert unknown.value.rule == "no_mark"
        fake.set_price("MSFT", 400.0)
        fake.fail("GET", "/v2/stocks/trades/latest", 500)
        with pytest.raises(OrderRejected) as failed:
            await engine.submit(buy(1, "MSFT"))
        assert failed.value.rule == "no_mark"
        fake.stall("GET", "/v2/stocks/trades/latest", 3.0)
        with pytest.raises(OrderRejected) as stalled:
            await engine.submit(buy(1, "MSFT"))
        assert stalled.value.rule == "no_mark"
        assert fake.requested("POST", "/v2/orders") == []  # nothing reached Alpaca
        # The data API being down is not the broker being down.
        assert broker_of(engine).connected and connection_gauge(engine) == 1
        ok, _ = await engine.submit(buy(1, "MSFT"))
        await eventually(lambda: status_of(engine, ok) == "filled")

    run(test, marks=False)


def test_the_books_equity_and_daily_pnl_are_the_alpaca_accounts_across_a_restart(
    fake: FakeAlpaca,
) -> None:
    def figures(engine: Engine) -> tuple[float, float]:
        account = engine.gate.account()
        return round(account["equity"], 6), round(account["daily_pnl"], 6)

    async def main() -> None:
        fake.last_equity = 99_000.0  # yesterday's close: the day is 1,000 up
        settings = live_settings(fake, MARK_MAX_AGE="60")
        store = MemoryStore()
        first = await started(settings, store, marks=False)
        try:
            assert figures(first) == (100_000.0, 1_000.0) != (first.settings.sim_starting_cash, 0)
            order, _ = await first.submit(buy(10))  # priced by the data API at 100
            await eventually(lambda: status_of(first, order) == "filled")
            assert fake.account_figures() == (100_000.0, 99_000.0)
            assert figures(first) == (100_000.0, 1_000.0)
        finally:
            await first.stop()

        fake.set_price("AAPL", 110.0, trade=False)  # while tradeengine is down: +100
        assert fake.account_figures() == (100_100.0, 99_000.0)
        second = await started(settings, store, marks=False)
        try:
            # Seeded at the saved mark (100), then reconciliation marks AAPL at Alpaca's 110:
            # the move is counted once.
            await eventually(lambda: second.gate.get_mark("AAPL") == 110.0)
            assert figures(second) == (100_100.0, 1_100.0)
            account = second.gate.account()
            assert account["peak_equity"] == 100_100.0 and account["drawdown"] == 0
            assert [p.qty for p in second.positions()] == [10]
        finally:
            await second.stop()

    asyncio.run(main())
