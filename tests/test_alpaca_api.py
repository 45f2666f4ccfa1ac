"""The Alpaca broker end to end through the HTTP API (`with TestClient(create_app(settings))`):
live mode, a bearer token, the plugin found by its entry point, the fake Alpaca behind it.

Submit, fill via the stream, positions, cancel all, kill switch (suspend_trade set at Alpaca),
liquidate all, reset, reconciliation after a forced mismatch, `/api/health/broker`,
`/api/broker/test-connection` and `broker_connection_status` — and no key or secret in any
answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from fake_alpaca import API_KEY, FAST, SECRET_KEY, FakeAlpaca
from tradeengine.api import create_app
from tradeengine.api.auth import create_token
from tradeengine.engine import Engine
from tradeengine.settings import Settings
from tradeengine.store import MemoryStore

LOOPBACK = ("127.0.0.1", 50000)


@pytest.fixture
def fake() -> Iterator[FakeAlpaca]:
    with FakeAlpaca() as server:
        server.set_price("AAPL", 100.0)
        yield server


@pytest.fixture
def api(
    fake: FakeAlpaca, make_settings: Callable[..., Settings]
) -> Iterator[Callable[..., TestClient]]:
    """`api(VAR=value...)`: the app in live mode against the fake, lifespan entered, with an
    admin token; closed at the end of the test."""
    clients: list[TestClient] = []

    def open_client(**variables: str) -> TestClient:
        settings = make_settings(
            EXECUTION_MODE="live",
            BROKER="alpaca",
            TRADING_MODE="paper",
            ALPACA_API_KEY=API_KEY,
            ALPACA_SECRET_KEY=SECRET_KEY,
            ALPACA_BASE_URL=fake.base_url,
            ALPACA_STREAM_URL=fake.stream_url,
            ALPACA_DATA_URL=fake.data_url,
            MAX_ORDERS_PER_MINUTE="600",
            MAX_POSITION_SIZE="1000000",
            PORTFOLIO_HEAT_LIMIT="5",
            **{**FAST, **variables},
        )
        store = MemoryStore()
        token = asyncio.run(create_token(store, "ops", "admin"))
        app = create_app(settings, store_factory=lambda: store)
        client = TestClient(app, client=LOOPBACK, headers={"Authorization": f"Bearer {token}"})
        client.__enter__()
        clients.append(client)
        engine: Engine = app.state.engine
        # Live mode has no market data feed here: the mark a market order is checked against.
        assert client.portal is not None
        client.portal.call(engine.set_marks, {"AAPL": 100.0}, "system")
        wait_for(lambda: client.get("/api/health/broker").json()["connected"])
        wait_for(lambda: client.get("/api/health/broker").json()["ready"])
        return client

    yield open_client
    for client in clients:
        client.__exit__(None, None, None)


def wait_for(condition: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def order_status(client: TestClient, order_id: str) -> str:
    status: str = client.get(f"/api/trading/orders/status/{order_id}").json()["status"]
    return status


def no_secret(response: httpx.Response) -> dict[str, Any]:
    assert SECRET_KEY not in response.text and API_KEY not in response.text
    body: dict[str, Any] = response.json()
    return body


def test_submit_fill_positions_health_and_test_connection(
    fake: FakeAlpaca, api: Callable[..., TestClient]
) -> None:
    client = api()
    response = client.post(
        "/api/trading/orders",
        json={"symbol": "AAPL", "side": "buy", "qty": "10", "client_order_id": "strat-7"},
    )
    assert response.status_code == 201, response.text
    order = response.json()
    assert fake.order("strat-7")["client_order_id"] == "strat-7"
    wait_for(lambda: order_status(client, order["id"]) == "filled")
    [position] = client.get("/api/trading/positions").json()
    assert (position["symbol"], position["qty"]) == ("AAPL", 10)

    health = no_secret(client.get("/api/health/broker"))
    assert health["broker"] == "alpaca" and health["connected"] is True
    assert health["last_message_at"] and health["latency_ms"] is not None
    assert health["reconciliation"]["state"] == "ok"
    tested = no_secret(client.post("/api/broker/test-connection"))
    assert tested["ok"] is True and tested["latency_ms"] > 0
    assert tested["account"]["equity"] > 0 and "is_open" in tested["clock"]
    metrics = client.get("/metrics").text
    assert 'broker_connection_status{broker="alpaca"} 1.0' in metrics


def test_cancel_all_kill_switch_liquidate_and_reset(
    fake: FakeAlpaca, api: Callable[..., TestClient]
) -> None:
    client = api()
    filled = client.post("/api/trading/orders", json={"symbol": "AAPL", "side": "buy", "qty": 5})
    wait_for(lambda: order_status(client, filled.json()["id"]) == "filled")
    for price in (90, 91):
        resting = client.post(
            "/api/trading/orders",
            json={"symbol": "AAPL", "side": "buy", "qty": 1, "type": "limit", "limit_price": price},
        )
        assert resting.status_code == 201
    assert len(fake.open_orders()) == 2
    canceled = client.delete("/api/trading/orders/all").json()
    assert len(canceled["canceled"]) == 2
    wait_for(lambda: not fake.open_orders() and not client.get("/api/trading/orders").json())

    engaged = client.post("/api/emergency/kill-switch", json={"reason": "drill"})
    assert engaged.json()["engaged"] is True
    wait_for(lambda: fake.configuration["suspend_trade"] is True)
    refused = client.post("/api/trading/orders", json={"symbol": "AAPL", "side": "buy", "qty": 1})
    assert refused.status_code == 403

    liquidation = client.post("/api/emergency/liquidate-all", json={"reason": "drill"}).json()
    assert liquidation["count"] == 1
    wait_for(lambda: client.get("/api/trading/positions").json() == [])
    assert fake.position_qty("AAPL") == 0
    assert fake.configuration["suspend_trade"] is True

    reset = client.delete("/api/emergency/kill-switch", params={"reason": "drill over"})
    assert reset.json()["engaged"] is False
    wait_for(lambda: fake.configuration["suspend_trade"] is False)
    again = client.post("/api/trading/orders", json={"symbol": "AAPL", "side": "buy", "qty": 1})
    assert again.status_code == 201


def test_a_mismatch_found_by_the_periodic_reconciliation_halts_trading(
    fake: FakeAlpaca, api: Callable[..., TestClient]
) -> None:
    client = api(ALPACA_RECONCILE_INTERVAL="0.2")
    fake.add_foreign_position("MSFT", 3, 400.0)
    wait_for(lambda: client.get("/api/emergency/kill-switch").json()["engaged"])
    kill = client.get("/api/emergency/kill-switch").json()
    assert kill["actor"] == "alpaca" and "MSFT" in kill["reason"]
    reconciliation = client.get("/api/health/broker").json()["reconciliation"]
    assert reconciliation["state"] == "mismatch"
    assert reconciliation["differences"][0]["symbol"] == "MSFT"
    actions = {a["action"] for a in client.get("/api/audit").json()}
    assert {"reconciliation_mismatch", "kill_switch_engaged"} <= actions
    wait_for(lambda: fake.configuration["suspend_trade"] is True)
    assert client.get("/api/health").json()["status"] == "halted"
