"""The Alpaca broker plugin on its own: alpaca-py's real clients against the fake Alpaca
(tests/fake_alpaca.py), with a journal view of the test's own instead of the engine.

What is proven here: our client_order_id reaches Alpaca; a failed or lost submit is retried
only after asking Alpaca by client order id (no duplicate order); 500s, 429s with rate-limit
headers and stalls neither hang nor fail the caller beyond ALPACA_HTTP_TIMEOUT; fills from the
stream are booked once whatever the order, repetition or missing timestamp; missed fills are
caught up by polling with the average price kept exact; no key or secret in any log or answer.
Prices: the latest trade (else the quote midpoint) from the market data API, None on every
failure within ALPACA_HTTP_TIMEOUT; fills and positions fed as marks, never an old price; the
account's equity as floats, revalued at the engine's marks.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
from alpaca.trading.models import TradeUpdate as AlpacaTradeUpdate
from tradeengine_alpaca import AlpacaBroker
from tradeengine_alpaca.ledger import Ledger, Snapshot, TradeUpdate
from tradeengine_alpaca.rest import RateLimiter, data_base_url, rest_base_url, stream_url
from tradeengine_alpaca.stream import AUTH_FAILED

from fake_alpaca import API_KEY, FAST, SECRET_KEY, FakeAlpaca, eventually, nanosecond_iso
from tradeengine.broker import BrokerContext
from tradeengine.errors import EngineError
from tradeengine.schemas import (
    BrokerAck,
    BrokerCanceled,
    BrokerEvent,
    BrokerFill,
    BrokerRejected,
    KillSwitchState,
    Order,
)
from tradeengine.settings import Settings, load_settings

T = TypeVar("T")


def alpaca_settings(fake: FakeAlpaca, **env: str) -> Settings:
    return load_settings(
        {
            "EXECUTION_MODE": "live",
            "BROKER": "alpaca",
            "ALPACA_API_KEY": API_KEY,
            "ALPACA_SECRET_KEY": SECRET_KEY,
            "ALPACA_BASE_URL": fake.base_url + "/",
            "ALPACA_STREAM_URL": fake.stream_url,
            "ALPACA_DATA_URL": fake.data_url + "/v2/",
            **FAST,
            **env,
        },
        dotenv=None,
    )


def order(client_order_id: str, qty: float = 10, **fields: Any) -> Order:
    return Order(
        id=f"id-{client_order_id}",
        client_order_id=client_order_id,
        symbol=fields.pop("symbol", "AAPL"),
        side=fields.pop("side", "buy"),
        type=fields.pop("type", "market"),
        qty=qty,
        **fields,
    )


class View:
    """A journal of the test's own: open orders given by the test, positions from the fills
    the broker reported."""

    def __init__(self) -> None:
        self.orders: dict[str, Order] = {}
        self.positions_by_symbol: dict[str, float] = {}
        self.records: list[tuple[str, str]] = []
        self.halts: list[str] = []
        self.connected: list[bool] = []
        self.marks: list[dict[str, float]] = []

    async def open_orders(self) -> list[Order]:
        return [o for o in self.orders.values() if o.is_open]

    async def find_order(self, client_order_id: str) -> Order | None:
        return self.orders.get(client_order_id)

    async def positions(self) -> dict[str, float]:
        return dict(self.positions_by_symbol)

    async def record(self, action: str, reason: str, detail: dict[str, Any]) -> None:
        self.records.append((action, reason))

    def halted(self) -> bool:
        return bool(self.halts)

    async def halt(self, reason: str) -> None:
        self.halts.append(reason)

    def set_connected(self, connected: bool) -> None:
        self.connected.append(connected)

    async def set_marks(self, prices: Mapping[str, float]) -> None:
        self.marks.append(dict(prices))


class Harness:
    def __init__(self, fake: FakeAlpaca, settings: Settings) -> None:
        self.fake = fake
        self.events: list[BrokerEvent] = []
        self.view = View()
        self.marks: dict[str, float] = {}
        """The engine's marks, as `context.mark` reads them."""
        self.executor = ThreadPoolExecutor(4)
        self.broker = AlpacaBroker(
            BrokerContext(
                settings=settings, emit=self.emit, executor=self.executor, mark=self.marks.get
            )
        )

    async def emit(self, event: BrokerEvent) -> None:
        self.events.append(event)
        if isinstance(event, BrokerFill):
            known = self.view.orders.get(event.client_order_id)
            symbol = known.symbol if known else "AAPL"
            sign = -1 if known and known.side == "sell" else 1
            positions = self.view.positions_by_symbol
            positions[symbol] = positions.get(symbol, 0.0) + sign * event.qty

    def fills(self, client_order_id: str) -> list[BrokerFill]:
        return [
            e
            for e in self.events
            if isinstance(e, BrokerFill) and e.client_order_id == client_order_id
        ]

    async def start(self) -> None:
        await self.broker.start()
        await self.broker.attach(self.view)
        await eventually(lambda: self.broker.connected)

    async def submit(self, o: Order) -> None:
        self.view.orders[o.client_order_id] = o
        await self.broker.submit(o)


@pytest.fixture
def fake() -> Iterator[FakeAlpaca]:
    with FakeAlpaca() as server:
        server.set_price("AAPL", 100.0)
        yield server


@pytest.fixture
def run(fake: FakeAlpaca) -> Callable[..., Any]:
    """`run(test, **env)`: runs `test(harness)` against a started broker, then stops it."""

    def runner(test: Callable[[Harness], Coroutine[Any, Any, T]], **env: str) -> T:
        async def main() -> T:
            harness = Harness(fake, alpaca_settings(fake, **env))
            try:
                await harness.start()
                return await test(harness)
            finally:
                await harness.broker.stop()
                harness.executor.shutdown(wait=False, cancel_futures=True)

        return asyncio.run(main())

    return runner


@pytest.fixture(autouse=True)
def no_secret_is_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    text = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (SECRET_KEY, API_KEY):
        assert not any(secret[i : i + 8] in text for i in range(len(secret) - 8))


def test_submit_sends_our_client_order_id_and_the_stream_reports_the_fill(
    fake: FakeAlpaca, run: Callable[..., Any]
) -> None:
    async def test(h: Harness) -> None:
        await h.submit(order("c-1", 10))
        await eventually(lambda: h.fills("c-1"))
        [sent] = fake.requested("POST", "/v2/orders")
        assert sent["client_order_id"] == "c-1"
        assert sent["symbol"] == "AAPL" and sent["side"] == "buy" and float(sent["qty"]) == 10
        ack = next(e for e in h.events if isinstance(e, BrokerAck))
        assert ack.broker_order_id == fake.order("c-1")["id"]
        [fill] = h.fills("c-1")
        assert (fill.qty, fill.price) == (10, 100.0)
        assert fill.exec_id == fake.events[-1]["data"]["execution_id"]
        health = h.broker.health()
        assert health["connected"] and health["last_message_at"] and health["latency_ms"] > 0
        assert health["reconciliation"]["state"] == "ok"
        assert h.view.connected[-1] is True

    run(test)


def test_the_fakes_messages_are_valid_alpaca_py_models(
    fake: FakeAlpaca, run: Callable[..., Any]
) -> None:
    async def test(h: Harness) -> None:
        await h.submit(order("c-1", 10))
        await eventually(lambda: h.fills("c-1"))
        for event in fake.events:
            AlpacaTradeUpdate(**event["data"])

    run(test)


def test_a_lost_submit_answer_is_not_sent_twice(fake: FakeAlpaca, run: Callable[..., Any]) -> None:
    async def test(h: Harness) -> None:
        fake.fail("POST", "/v2/orders", 500, after=True)
        await h.submit(order("c-1", 10))
        assert len(fake.requested("POST", "/v2/orders")) == 1
        assert fake.requested("GET", "/v2/orders:by_client_order_id") == [
            {"client_order_id": "c-1"}
        ]
        await eventually(lambda: h.fills("c-1"))
        assert len(fake.by_client_id) == 1

    run(test)


def test_a_failed_submit_is_sent_again_after_asking_alpaca(
    fake: FakeAlpaca, run: Callable[..., Any]
) -> None:
    async def test(h: Harness) -> None:
        fake.fail("POST", "/v2/orders", 503, times=2)
        await h.submit(order("c-1", 10))
        methods = [(m, p) for m, p, _ in fake.requests if "orders" in p and m != "DELETE"]
        submits = [i for i, r in enumerate(methods) if r == ("POST", "/v2/orders")]
        lookups = [i for i, r in enumerate(methods) if r[1] == "/v2/orders:by_client_order_id"]
        assert len(submits) == 3 and len(lookups) == 2
        assert submits[0] < lookups[0] < submits[1] < lookups[1] < submits[2]
        await eventually(lambda: h.fills("c-1"))

    run(test)


def test_a_stalled_submit_costs_the_http_timeout_and_is_found_by_client_order_id(
    fake: FakeAlpaca, run: Callable[..., Any]
) -> None:
    async def test(h: Harness) -> None:
        fake.stall("POST", "/v2/orders", 3.0, after=True)
        started = time.monotonic()
        await h.submit(order("c-1", 10))
        assert time.monotonic() - started < 2.0
        assert len(fake.requested("POST", "/v2/orders")) == 1
        await eventually(lambda: h.fills("c-1"))

    run(test)


def test_a_stalled_server_fails_the_connection_test_quickly(
    fake: FakeAlpaca, run: Callable[..., Any]
) -> None:
    async def test(h: Harness) -> None:
        fake.stall("GET", "/v2/account", 3.0)
        started = time.monotonic()
        result = await h.broker.test_connection()
        assert time.monotonic() - started < 2.0
        assert result["ok"] is False and "ALPACA_HTTP_TIMEOUT" in result["error"]
        ok = await h.broker.test_connection()
        assert ok["ok"] is True and ok["latency_ms"] > 0
        assert ok["account"]["equity"] == 100000.0 and ok["account"]["daily_pnl"] == 0.0
        assert ok["clock"]["is_open"] is True

    run(test)


def test_a_rejected_order_is_reported_not_retried(
    fake: FakeAlpaca, run: Callable[..., Any]
) -> None:
    async def test(h: Harness) -> None:
        fake.configuration["suspend_trade"] = True
        await h.submit(order("c-1", 10))
        await h.submit(order("c-2", 10, type="limit"))  # alpaca-py refuses it unsent
        first, second = [e for e in h.events if isinstance(e, BrokerRejected)]
        assert "HTTP 403" in first.reason and "suspended" in first.reason
        assert "limit_price is required" in second.reason
        assert len(fake.requested("POST", "/v2/orders")) == 1

    run(test)


def test_429_pauses_every_call_until_alpacas_reset(
    fake: FakeAlpaca, run: Callable[..., Any]
) -> None:
    async def test(h: Harness) -> None:
        reset = time.time() + 0.4
        fake.fail("GET", "/v2/account", 429, headers={"X-Ratelimit-Reset": str(reset)})
        result = await h.broker.test_connection()
        assert result["ok"] is False and result["status"] == 429
        started = time.time()
        again = await h.broker.test_connection()
        assert again["ok"] is True
        assert time.time() >= reset - 0.05 > started - 1

    run(test)


def test_the_rate_limit_headers_are_respected_without_a_429(
    fake: FakeAlpaca, run: Callable[..., Any]
) -> None:
    async def test(h: Harness) -> None:
        fake.set_rate_limit(4, 0.5)
        for _ in range(5):
            assert (await h.broker.test_connection())["ok"]
        assert fake.rate_limited == 0
        assert h.broker.health()["rate_limit"]["throttled_calls"] >= 1

    run(test)


def test_the_token_bucket_allows_the_limit_per_minute() -> None:
    now = [0.0]
    limiter = RateLimiter(200, clock=lambda: now[0])
    assert all(limiter._take() == 0 for _ in range(200))
    assert limiter._take() == pytest.approx(0.3)
    now[0] += 0.3
    assert limiter._take() == 0


def test_fills_out_of_order_and_repeated_are_booked_once(
    fake: FakeAlpaca, run: Callable[..., Any]
) -> None:
    async def test(h: Harness) -> None:
        await h.submit(order("c-1", 10, type="limit", limit_price=90.0))
        await eventually(lambda: fake.order("c-1")["status"] == "new")
        fake.hold_events()
        fake.fill("c-1", 4, 90.0)
        fake.fill("c-1", 6, 89.0)
        fake.release_events(reverse=True, duplicate=True)
        await eventually(lambda: sum(f.qty for f in h.fills("c-1")) == 10)
        await asyncio.sleep(0.2)
        fills = h.fills("c-1")
        assert sorted(f.qty for f in fills) == [4, 6]
        assert len({f.exec_id for f in fills}) == 2

    run(test)


def test_a_trade_update_without_timestamp_is_not_dropped(
    fake: FakeAlpaca, run: Callable[..., Any]
) -> None:
    async def test(h: Harness) -> None:
        fake.auto_fill = False
        await h.submit(order("c-1", 10))
        fake.omit_timestamp = True
        fake.fill("c-1", 10, 100.0)
        await eventually(lambda: h.fills("c-1"))
        assert h.fills("c-1")[0].at

    run(test)


def test_fills_missed_while_the_stream_was_down_are_polled_by_id(
    fake: FakeAlpaca, run: Callable[..., Any]
) -> None:
    async def test(h: Harness) -> None:
        fake.auto_fill = False
        await h.submit(order("c-1", 10, type="limit", limit_price=95.0))
        fake.fill("c-1", 4, 95.0)
        await eventually(lambda: h.fills("c-1"))
        fake.accept_streams = False
        fake.drop_streams()
        await eventually(lambda: not h.broker.connected)
        assert h.view.connected[-1] is False and h.broker.health()["polling"]
        fake.fill("c-1", 6, 93.0)  # nobody listens
        await eventually(lambda: sum(f.qty for f in h.fills("c-1")) == 10)
        first, catch_up = h.fills("c-1")
        assert catch_up.exec_id.endswith(":filled:10.0")
        average = (first.qty * first.price + catch_up.qty * catch_up.price) / 10
        assert average == pytest.approx(float(fake.order("c-1")["filled_avg_price"]))
        fake.accept_streams = True
        await eventually(lambda: h.broker.connected, timeout=5)
        await h.broker.settle()
        assert h.broker.stream.connects == 2
        assert h.broker.reconciliation["reason"] == "reconnect"
        assert h.broker.reconciliation["state"] == "ok"

    run(test)


def test_a_late_stream_fill_after_a_catch_up_is_not_booked_twice() -> None:
    ledger = Ledger()
    ledger.track(order("c-1", 10))
    alpaca = {
        "id": "b-1",
        "client_order_id": "c-1",
        "status": "partially_filled",
        "symbol": "AAPL",
        "side": "buy",
        "qty": "10",
        "filled_qty": "6",
        "filled_avg_price": "99.5",
        "updated_at": "2026-01-02T15:00:00Z",
    }
    [ack, catch_up] = ledger.on_snapshot(Snapshot.from_dict(alpaca))
    assert isinstance(ack, BrokerAck) and isinstance(catch_up, BrokerFill)
    assert (catch_up.qty, catch_up.price) == (6, 99.5)
    late = TradeUpdate.from_message(
        {
            "stream": "trade_updates",
            "data": {
                "event": "partial_fill",
                "execution_id": "x-1",
                "price": "99",
                "qty": "2",
                "timestamp": "2026-01-02T14:59:59Z",
                "order": {**alpaca, "filled_qty": "2", "filled_avg_price": "99"},
            },
        }
    )
    assert late is not None and ledger.on_trade_update(late) == []
    fresh = TradeUpdate.from_message(
        {
            "data": {
                "event": "fill",
                "execution_id": "x-3",
                "price": "101",
                "qty": "4",
                "timestamp": "2026-01-02T15:01:00Z",
                "order": {**alpaca, "status": "filled", "filled_qty": "10"},
            }
        }
    )
    assert fresh is not None
    [fill] = ledger.on_trade_update(fresh)
    assert isinstance(fill, BrokerFill) and fill.qty == 4
    assert ledger.on_snapshot(Snapshot.from_dict({**alpaca, "filled_qty": "10"})) == []
    tracked = ledger.get("c-1")
    assert tracked is not None and tracked.settled


def test_cancel_reaches_alpaca_and_its_outcome_comes_back(
    fake: FakeAlpaca, run: Callable[..., Any]
) -> None:
    async def test(h: Harness) -> None:
        o = order("c-1", 10, type="limit", limit_price=50.0)
        await h.submit(o)
        await h.broker.cancel(o)
        await eventually(lambda: any(isinstance(e, BrokerCanceled) for e in h.events))
        assert fake.order("c-1")["status"] == "canceled"
        # An order that never reached Alpaca is canceled at once.
        await h.broker.cancel(order("never-sent", 1))
        assert isinstance(h.events[-1], BrokerCanceled)

    run(test)


def test_cancel_all_and_close_all_positions(fake: FakeAlpaca, run: Callable[..., Any]) -> None:
    async def test(h: Harness) -> None:
        await h.submit(order("c-1", 10))
        await h.submit(order("c-2", 5, type="limit", limit_price=50.0))
        await eventually(lambda: fake.position_qty("AAPL") == 10)
        canceled = await h.broker.cancel_all()
        assert canceled == [fake.order("c-2")["id"]]
        assert await h.broker.close_all_positions() == ["AAPL"]
        await eventually(lambda: fake.position_qty("AAPL") == 0)
        assert fake.requested("DELETE", "/v2/positions") == [{"cancel_orders": "True"}]

    run(test)


def test_the_kill_switch_sets_and_clears_suspend_trade(
    fake: FakeAlpaca, run: Callable[..., Any]
) -> None:
    async def test(h: Harness) -> None:
        foreign = fake.add_foreign_order("MSFT", 1, 10.0)
        h.broker.on_kill_switch(KillSwitchState(engaged=True, actor="ops", reason="test"))
        await h.broker.settle()
        assert fake.configuration["suspend_trade"] is True
        assert fake.order(foreign["client_order_id"])["status"] == "canceled"
        assert h.broker.health()["suspend_trade"]["set"] is True
        h.broker.on_kill_switch(KillSwitchState(engaged=False, actor="admin", reason="ok"))
        await h.broker.settle()
        assert fake.configuration["suspend_trade"] is False

    run(test)


def test_the_kill_switch_leaves_alpaca_alone_when_told_to(
    fake: FakeAlpaca, run: Callable[..., Any]
) -> None:
    async def test(h: Harness) -> None:
        h.broker.on_kill_switch(KillSwitchState(engaged=True, actor="ops", reason="test"))
        await h.broker.settle()
        assert fake.configuration["suspend_trade"] is False
        assert not fake.requested("PATCH", "/v2/account/configurations")

    run(test, ALPACA_SUSPEND_ON_KILL="false")


def test_an_unknown_position_at_alpaca_halts_trading(
    fake: FakeAlpaca, run: Callable[..., Any]
) -> None:
    async def test(h: Harness) -> None:
        fake.add_foreign_position("TSLA", 3, 250.0)
        assert await h.broker.reconcile("test")
        state = h.broker.health()["reconciliation"]
        assert state["state"] == "mismatch"
        [difference] = state["differences"]
        assert (difference["symbol"], difference["alpaca_qty"], difference["journal_qty"]) == (
            "TSLA",
            3.0,
            0.0,
        )
        assert h.view.halts and "TSLA" in h.view.halts[0]
        assert h.view.records[0][0] == "reconciliation_mismatch"

    run(test)


def test_bad_keys_fail_the_start_without_showing_them(fake: FakeAlpaca) -> None:
    async def main() -> None:
        settings = alpaca_settings(fake, ALPACA_SECRET_KEY="wrong-secret-value-123")
        harness = Harness(fake, settings)
        try:
            with pytest.raises(EngineError) as raised:
                await harness.broker.start()
            assert "HTTP 401" in str(raised.value) and "wrong-secret" not in str(raised.value)
        finally:
            await harness.broker.stop()
            harness.executor.shutdown()

    asyncio.run(main())


def test_a_failed_stream_authentication_is_reported(fake: FakeAlpaca) -> None:
    async def main() -> None:
        harness = Harness(fake, alpaca_settings(fake))
        await harness.broker.start()
        fake.stream_secret_key = "rotated-secret"
        try:
            harness.broker.attach(harness.view)
            await eventually(lambda: harness.broker.stream.last_error == AUTH_FAILED)
            health = harness.broker.health()
            assert health["connected"] is False
            assert health["stream"]["last_error"] == AUTH_FAILED
            assert SECRET_KEY not in str(health)
        finally:
            await harness.broker.stop()
            harness.executor.shutdown()

    asyncio.run(main())


def test_missing_keys_stop_the_engine_start() -> None:
    settings = load_settings({"EXECUTION_MODE": "live"}, dotenv=None)
    with ThreadPoolExecutor(1) as executor, pytest.raises(EngineError, match="ALPACA_API_KEY"):
        AlpacaBroker(BrokerContext(settings, _no_emit, executor, lambda s: None))


async def _no_emit(event: BrokerEvent) -> None:
    return None


def test_urls_are_normalised_for_alpaca_py() -> None:
    assert rest_base_url("https://paper-api.alpaca.markets/v2/") == (
        "https://paper-api.alpaca.markets"
    )
    assert rest_base_url("") is None
    assert stream_url("", "https://proxy.local/") == "wss://proxy.local/stream"
    assert stream_url("ws://127.0.0.1:9/x", "http://a") == "ws://127.0.0.1:9/x"
    assert stream_url("", "") is None
    assert data_base_url("https://data.alpaca.markets/v2") == "https://data.alpaca.markets"


# ---- prices and the account's equity ------------------------------------------------------


def test_latest_price_is_the_latest_trade_else_the_quote_midpoint(
    fake: FakeAlpaca, run: Callable[..., Any]
) -> None:
    async def test(h: Harness) -> None:
        fake.set_price("AAPL", 101.25)
        fake.set_quote("AAPL", 101.0, 101.5)
        assert await h.broker.latest_price("AAPL") == 101.25
        assert fake.requested("GET", "/v2/stocks/trades/latest") == [{"symbols": "AAPL"}]
        assert fake.requested("GET", "/v2/stocks/quotes/latest") == []  # a trade is enough

        fake.set_price("IBM", 50.0, trade=False)  # quoted, no trade yet
        fake.set_quote("IBM", 49.5, 50.75)
        assert await h.broker.latest_price("IBM") == 50.125
        fake.set_quote("ONE", 0.0, 12.0)  # one-sided: no midpoint
        assert await h.broker.latest_price("ONE") is None
        assert await h.broker.latest_price("ZZZZ") is None  # unknown to the data API
        assert fake.requested("GET", "/v2/stocks/quotes/latest")[-1] == {"symbols": "ZZZZ"}

        market = h.broker.health()["market_data"]
        assert market["endpoint"] == fake.data_url  # the `/v2/` of ALPACA_DATA_URL removed
        assert (market["prices"], market["no_price"]) == (2, 2)
        assert market["last"] == {"symbol": "IBM", "price": 50.125, "source": "quote"}
        assert market["reachable"] and market["latency_ms"] > 0

    run(test)


def test_latest_price_failures_are_none_within_the_http_timeout_and_spare_trading(
    fake: FakeAlpaca, run: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    async def test(h: Harness) -> None:
        fake.set_price("AAPL", 100.0)
        fake.fail("GET", "/v2/stocks/trades/latest", 500)
        assert await h.broker.latest_price("AAPL") is None
        assert "no price for AAPL" in caplog.text and "HTTP 500" in caplog.text
        assert fake.requested("GET", "/v2/stocks/quotes/latest") == []  # not on an error

        fake.stall("GET", "/v2/stocks/trades/latest", 3.0)
        started = time.monotonic()
        assert await h.broker.latest_price("AAPL") is None
        assert time.monotonic() - started < 1.5  # ALPACA_HTTP_TIMEOUT=0.5, no retry
        assert "ALPACA_HTTP_TIMEOUT" in caplog.text

        # A 429 pauses the data API until Alpaca's reset; a market order is not held for it.
        reset = time.time() + 3.0
        fake.fail("GET", "/v2/stocks/trades", 429, headers={"X-Ratelimit-Reset": str(reset)})
        assert await h.broker.latest_price("AAPL") is None
        started = time.monotonic()
        assert await h.broker.latest_price("AAPL") is None
        assert time.monotonic() - started < 1.5
        assert "rate limited" in caplog.text
        # The trading API has a budget of its own and stayed reachable.
        assert (await h.broker.test_connection())["ok"] and h.broker.connected
        assert h.broker.health()["market_data"]["rate_limit"]["paused_seconds"] > 0
        assert h.broker.health()["rate_limit"]["paused_seconds"] == 0

    run(test)


def test_the_data_apis_budget_is_its_own_and_respected_without_a_429(
    fake: FakeAlpaca, run: Callable[..., Any]
) -> None:
    async def test(h: Harness) -> None:
        fake.set_price("AAPL", 100.0)
        fake.set_rate_limit(2, 30.0, api="data")
        assert await h.broker.latest_price("AAPL") == 100.0
        assert await h.broker.latest_price("AAPL") == 100.0  # X-Ratelimit-Remaining: 0
        started = time.monotonic()
        assert await h.broker.latest_price("AAPL") is None  # not sent: paused until reset
        assert time.monotonic() - started < 1.5
        assert (
            fake.rate_limited == 0 and len(fake.requested("GET", "/v2/stocks/trades/latest")) == 2
        )
        for _ in range(3):
            assert (await h.broker.test_connection())["ok"]

    run(test)


def test_latest_price_with_keys_the_data_api_refuses_is_none(fake: FakeAlpaca) -> None:
    async def main() -> None:
        harness = Harness(fake, alpaca_settings(fake))
        harness.broker.data.client._secret_key = "rotated-data-secret"
        fake.set_price("AAPL", 100.0)
        try:
            assert await harness.broker.latest_price("AAPL") is None
            assert "HTTP 401" in (harness.broker.data.last_error or "")
        finally:
            await harness.broker.stop()
            harness.executor.shutdown()

    asyncio.run(main())


def test_account_equity_is_alpacas_with_positions_at_the_engines_marks(
    fake: FakeAlpaca, run: Callable[..., Any]
) -> None:
    async def test(h: Harness) -> None:
        fake.last_equity = 99_000.5
        assert await h.broker.account_equity() == (100_000.0, 99_000.5)
        await h.submit(order("c-1", 10))
        await eventually(lambda: fake.position_qty("AAPL") == 10)
        fake.set_price("AAPL", 110.0)  # Alpaca values the position at 110
        assert fake.account_figures() == (100_100.0, 99_000.5)
        assert await h.broker.account_equity() == (100_100.0, 99_000.5)  # no mark: as is
        h.marks["AAPL"] = 100.0  # the engine's book values it at 100 until its mark moves
        assert await h.broker.account_equity() == (100_000.0, 99_000.5)
        h.marks["AAPL"] = 110.0
        assert await h.broker.account_equity() == (100_100.0, 99_000.5)
        # The account call failing: the figures read at start, never SIM_STARTING_CASH.
        fake.fail("GET", "/v2/account", 500, times=3)
        assert await h.broker.account_equity() == (100_100.0, 99_000.5)

    run(test)


def test_fills_and_positions_feed_marks_never_an_old_price(
    fake: FakeAlpaca, run: Callable[..., Any]
) -> None:
    async def test(h: Harness) -> None:
        await h.submit(order("c-1", 10))
        await eventually(lambda: h.view.marks)
        assert h.view.marks == [{"AAPL": 100.0}]  # the fill's price, from the stream
        fake.set_price("AAPL", 101.0, trade=False)  # no fill: Alpaca revalues the position
        assert await h.broker.reconcile("test")
        assert h.view.marks[-1] == {"AAPL": 101.0}  # the position's current_price

        await h.submit(order("c-2", 5, type="limit", limit_price=100.0))
        update = fake.fill("c-2", 5, 99.0)
        await eventually(lambda: h.fills("c-2"))
        assert h.view.marks[-1] == {"AAPL": 99.0}  # newer than the position's price

        # A fill older than MARK_MAX_AGE (5 s), or older than the price the engine has from
        # here, is booked but is not a mark.
        await h.submit(order("c-3", 2, type="limit", limit_price=100.0))
        await eventually(lambda: fake.order("c-3")["status"] == "new")
        fake.hold_events()  # the held updates are the dicts returned here: edited before sent
        before = fake.fill("c-3", 1, 98.0)
        stale = fake.fill("c-3", 1, 97.0)
        fed = dt.datetime.fromisoformat(update["data"]["timestamp"]).timestamp()
        before["data"]["timestamp"] = nanosecond_iso(fed - 0.5)
        stale["data"]["timestamp"] = "2020-01-02T15:00:00Z"
        fake.release_events()
        await eventually(lambda: len(h.fills("c-3")) == 2)
        await asyncio.sleep(0.1)
        assert len(h.view.marks) == 3
        assert h.broker.health()["market_data"]["marks_fed"] == 3

    run(test)


def test_marks_the_engine_refuses_are_logged_not_raised(
    fake: FakeAlpaca, run: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    async def test(h: Harness) -> None:
        async def refuse(prices: Mapping[str, float]) -> None:
            raise EngineError("symbol 'AAPL' is not well formed")

        h.view.set_marks = refuse  # type: ignore[method-assign]
        await h.submit(order("c-1", 10))
        await eventually(lambda: h.fills("c-1"))
        await eventually(lambda: "marks from Alpaca not applied (AAPL)" in caplog.text)
        assert h.broker.connected and h.broker.health()["market_data"]["marks_fed"] == 0

    run(test)
