"""The HTTP API in process (`with TestClient(create_app(settings))`, so the lifespan runs): every
endpoint an operator uses, and the one error shape for everything that goes wrong."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route
from starlette.testclient import TestClient

import tradeengine
from tradeengine.api import create_app
from tradeengine.api.auth import create_token
from tradeengine.api.routes import ENDPOINTS
from tradeengine.broker import BrokerContext, BrokerFactory
from tradeengine.hookspecs import hookimpl
from tradeengine.plugins import make_plugin_manager
from tradeengine.schemas import BrokerAck, BrokerEvent, Order
from tradeengine.settings import Settings
from tradeengine.store import MemoryStore

LOOPBACK = ("127.0.0.1", 50000)
ClientFactory = Callable[..., TestClient]


@pytest.fixture
def api(make_settings: Callable[..., Settings]) -> Iterator[ClientFactory]:
    """`api(VAR=value...)`: a started app (lifespan entered) seen from a loopback client."""
    with contextlib.ExitStack() as stack:

        def open_client(**variables: str) -> TestClient:
            app = create_app(make_settings(**variables))
            return stack.enter_context(TestClient(app, client=LOOPBACK))

        yield open_client


@pytest.fixture
def client(api: ClientFactory) -> TestClient:
    client = api()
    assert client.post("/api/market/prices", json={"AAPL": 200.0, "MSFT": 400.0}).is_success
    return client


def error(response: httpx.Response) -> dict[str, Any]:
    """The error of a response, checking the one shape every error has."""
    body = response.json()
    assert set(body) == {"error"}, body
    detail: dict[str, Any] = body["error"]
    assert {"code", "message"} <= set(detail) <= {"code", "message", "rule"}, detail
    assert response.headers["content-type"] == "application/json"
    return detail


def buy(client: TestClient, qty: float = 10, symbol: str = "AAPL", **kw: Any) -> httpx.Response:
    return client.post(
        "/api/trading/orders", json={"symbol": symbol, "side": "buy", "qty": qty, **kw}
    )


def test_health_summarises_the_engine(client: TestClient) -> None:
    body = client.get("/api/health").json()
    assert body["status"] == "ok"
    assert body["trading_state"] == "active"
    assert body["broker_connected"] is True
    assert body["version"] == tradeengine.__version__
    assert (body["trading_mode"], body["execution_mode"]) == ("paper", "backtest")


def test_a_market_order_fills_at_the_mark_and_becomes_a_position(client: TestClient) -> None:
    response = buy(client, 10, client_order_id="runbook-1")
    assert response.status_code == 201
    order = response.json()
    assert order["status"] == "filled"
    assert order["filled_avg_price"] == 200.0
    assert order["actor"] == "local"
    assert response.headers["location"] == f"/api/trading/orders/status/{order['id']}"
    assert client.get(response.headers["location"]).json()["status"] == "filled"

    [position] = client.get("/api/trading/positions").json()
    assert (position["symbol"], position["qty"], position["avg_entry_price"]) == ("AAPL", 10, 200)
    assert position["market_value"] == 2000.0


def test_the_same_client_order_id_is_idempotent_and_another_body_conflicts(
    client: TestClient,
) -> None:
    first = buy(client, 5, client_order_id="strategy-42")
    again = buy(client, 5, client_order_id="strategy-42")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert len(client.get("/api/trading/positions").json()) == 1

    other = buy(client, 6, client_order_id="strategy-42")
    assert other.status_code == 409
    assert error(other)["code"] == "client_order_id_conflict"


def test_numbers_may_be_decimal_strings(client: TestClient) -> None:
    response = buy(client, "3", type="limit", limit_price="199.5")  # type: ignore[arg-type]
    assert response.status_code == 201
    assert (response.json()["qty"], response.json()["limit_price"]) == (3.0, 199.5)


def test_a_resting_limit_order_is_pending_until_canceled(client: TestClient) -> None:
    order = buy(client, 10, type="limit", limit_price=190.0, time_in_force="gtc").json()
    assert order["status"] == "new"
    pending = client.get("/api/trading/orders/pending").json()
    assert [o["id"] for o in pending] == [order["id"]]

    canceled = client.delete(f"/api/trading/orders/{order['id']}")
    assert canceled.status_code == 200
    assert canceled.json()["status"] == "canceled"
    assert client.get("/api/trading/orders/pending").json() == []

    again = client.delete(f"/api/trading/orders/{order['id']}")
    assert (again.status_code, error(again)["code"]) == (409, "order_not_open")
    unknown = client.delete("/api/trading/orders/no-such-order")
    assert (unknown.status_code, error(unknown)["code"]) == (404, "not_found")
    missing = client.get("/api/trading/orders/status/no-such-order")
    assert (missing.status_code, error(missing)["code"]) == (404, "not_found")


def test_the_limit_crossing_fills_the_resting_order(client: TestClient) -> None:
    order = buy(client, 10, type="limit", limit_price=195.0).json()
    client.post("/api/market/prices", json={"AAPL": 194.0})
    filled = client.get(f"/api/trading/orders/status/{order['id']}").json()
    assert (filled["status"], filled["filled_avg_price"]) == ("filled", 194.0)


def test_cancel_all_cancels_every_open_order(client: TestClient) -> None:
    ids = {buy(client, 1, symbol=s, type="limit", limit_price=p).json()["id"]
           for s, p in (("AAPL", 190.0), ("MSFT", 390.0))}  # fmt: skip
    response = client.delete("/api/trading/orders/all")
    assert response.status_code == 200
    assert set(response.json()["canceled"]) == ids
    assert response.json()["count"] == 2
    assert client.get("/api/trading/orders/pending").json() == []


def test_list_orders_filters_like_alpaca(client: TestClient) -> None:
    filled = buy(client, 1).json()
    resting = buy(client, 1, symbol="MSFT", type="limit", limit_price=390.0).json()

    def ids(query: str) -> list[str]:
        response = client.get(f"/api/trading/orders{query}")
        assert response.status_code == 200, response.text
        return [o["id"] for o in response.json()]

    assert ids("") == [resting["id"]]
    assert ids("?status=closed") == [filled["id"]]
    assert ids("?status=all") == [resting["id"], filled["id"]]
    assert ids("?status=all&symbols=AAPL,TSLA") == [filled["id"]]
    assert ids("?status=all&limit=1") == [resting["id"]]
    for bad in ("?status=pending", "?limit=0", "?limit=lots"):
        response = client.get(f"/api/trading/orders{bad}")
        assert (response.status_code, error(response)["code"]) == (422, "validation_error")


def test_a_risk_block_names_its_rule_in_the_answer_the_log_and_the_metrics(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="tradeengine.engine"):
        response = buy(client, 100)  # 20,000 USD > MAX_POSITION_SIZE 10,000
    assert response.status_code == 422
    assert error(response) == {
        "code": "risk_limit",
        "rule": "max_position_size",
        "message": error(response)["message"],
    }
    assert "RISK_BLOCK rule=max_position_size" in caplog.text
    metrics = client.get("/metrics").text
    assert 'risk_blocks_total{rule="max_position_size"} 1.0' in metrics

    no_price = buy(client, 1, symbol="TSLA")
    assert error(no_price)["rule"] == "no_mark"
    malformed = buy(client, -1)
    assert (malformed.status_code, error(malformed)["code"]) == (422, "invalid_order")


def test_the_throttle_answers_429_with_whole_seconds_to_wait(api: ClientFactory) -> None:
    client = api(MAX_ORDERS_PER_MINUTE="2")
    client.post("/api/market/prices", json={"AAPL": 200.0})
    assert [buy(client, 1).status_code for _ in range(2)] == [201, 201]
    throttled = buy(client, 1)
    assert throttled.status_code == 429
    assert error(throttled)["rule"] == "throttle"
    assert error(throttled)["code"] == "throttled"
    assert re.fullmatch(r"[1-9]\d*", throttled.headers["retry-after"])
    assert int(throttled.headers["retry-after"]) <= 30
    # Cancels are never throttled.
    assert client.delete("/api/trading/orders/all").status_code == 200


def test_the_kill_switch_blocks_orders_until_an_admin_resets_it_with_a_reason(
    client: TestClient,
) -> None:
    resting = buy(client, 1, type="limit", limit_price=190.0).json()
    engaged = client.post("/api/emergency/kill-switch")
    assert engaged.status_code == 200
    state = engaged.json()
    assert state["engaged"] is True
    assert (state["actor"], state["reason"]) == ("local", "kill switch engaged via API")
    assert state["canceled_orders"] == [resting["id"]]
    assert client.get("/api/health").json()["status"] == "halted"

    blocked = buy(client, 1)
    assert (blocked.status_code, error(blocked)["rule"]) == (403, "kill_switch")
    assert client.get("/api/emergency/kill-switch").json()["engaged"] is True

    no_reason = client.delete("/api/emergency/kill-switch")
    assert (no_reason.status_code, error(no_reason)["code"]) == (422, "reason_required")
    reset = client.request("DELETE", "/api/emergency/kill-switch", json={"reason": "drill over"})
    assert reset.status_code == 200
    assert reset.json()["engaged"] is False
    assert reset.json()["last_reset_reason"] == "drill over"
    assert buy(client, 1).status_code == 201

    client.post("/api/emergency/kill-switch", json={"reason": "second drill"})
    assert client.delete("/api/emergency/kill-switch?reason=done").json()["engaged"] is False
    actions = [(a["action"], a["reason"]) for a in client.get("/api/audit").json()]
    assert actions[:4] == [
        ("kill_switch_reset", "done"),
        ("kill_switch_engaged", "second drill"),
        ("kill_switch_reset", "drill over"),
        ("kill_switch_engaged", "kill switch engaged via API"),
    ]


def test_liquidate_all_flattens_every_position(client: TestClient) -> None:
    buy(client, 10)
    client.post("/api/trading/orders", json={"symbol": "MSFT", "side": "sell", "qty": 5})
    response = client.post("/api/emergency/liquidate-all")
    assert response.status_code == 200
    assert response.json()["count"] == 2
    assert all(o["liquidation"] for o in response.json()["orders"])
    assert client.get("/api/trading/positions").json() == []


def test_close_one_position(client: TestClient) -> None:
    buy(client, 10)
    order = client.delete("/api/trading/positions/AAPL")
    assert order.status_code == 200
    assert (order.json()["side"], order.json()["qty"]) == ("sell", 10)
    assert client.get("/api/trading/positions").json() == []
    flat = client.delete("/api/trading/positions/AAPL")
    assert (flat.status_code, error(flat)["code"]) == (404, "not_found")


def test_risk_and_throttle_config_change_live_and_all_or_nothing(client: TestClient) -> None:
    risk = client.put(
        "/api/config/risk", json={"max_daily_loss": -500.0, "portfolio_heat_limit": 0.20}
    )
    assert risk.status_code == 200
    assert (risk.json()["max_daily_loss"], risk.json()["portfolio_heat_limit"]) == (-500, 0.2)
    assert client.get("/api/config/risk").json() == risk.json()

    bad = client.put("/api/config/risk", json={"max_daily_loss": 500.0, "max_drawdown": 0.05})
    assert (bad.status_code, error(bad)["code"]) == (422, "invalid_config")
    assert client.get("/api/config/risk").json()["max_drawdown"] == 0.10
    unknown = client.put("/api/config/risk", json={"max_daily_los": -5.0})
    assert (unknown.status_code, error(unknown)["code"]) == (422, "validation_error")
    assert "max_daily_los" in error(unknown)["message"]

    throttle = client.put(
        "/api/config/throttle", json={"max_orders_per_minute": 30, "enabled": True}
    )
    assert throttle.status_code == 200
    assert client.get("/api/config/throttle").json()["max_orders_per_minute"] == 30
    assert error(client.put("/api/config/throttle", json={}))["code"] == "invalid_request"


def test_every_error_has_the_one_shape(client: TestClient) -> None:
    unknown = client.get("/api/nothing/here")
    assert (unknown.status_code, error(unknown)["code"]) == (404, "not_found")

    wrong_method = client.patch("/api/config/risk")
    assert (wrong_method.status_code, error(wrong_method)["code"]) == (405, "method_not_allowed")
    assert {"GET", "PUT"} <= {m.strip() for m in wrong_method.headers["allow"].split(",")}

    orders = "/api/trading/orders"
    text = client.post(orders, content=b"symbol=AAPL", headers={"content-type": "text/plain"})
    assert (text.status_code, error(text)["code"]) == (415, "unsupported_media_type")
    form = client.post(orders, data={"symbol": "AAPL"})
    assert form.status_code == 415

    broken = client.post(orders, content=b"{", headers={"content-type": "application/json"})
    assert (broken.status_code, error(broken)["code"]) == (422, "invalid_json")
    typed = client.post(orders, json={"symbol": "AAPL", "side": "hold", "qty": 1})
    assert (typed.status_code, error(typed)["code"]) == (422, "validation_error")
    assert "$.side" in error(typed)["message"]
    empty = client.post(orders)
    assert (empty.status_code, error(empty)["code"]) == (422, "body_required")


def test_an_oversized_body_is_413_before_it_is_read(client: TestClient) -> None:
    big = b'{"symbol": "' + b"A" * 70_000 + b'"}'
    declared = client.post(
        "/api/trading/orders", content=big, headers={"content-type": "application/json"}
    )
    assert (declared.status_code, error(declared)["code"]) == (413, "payload_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit counts the stream
        for start in range(0, len(big), 8192):
            yield big[start : start + 8192]

    streamed = client.post(
        "/api/trading/orders", content=chunks(), headers={"content-type": "application/json"}
    )
    assert (streamed.status_code, error(streamed)["code"]) == (413, "payload_too_large")


def test_health_details_metrics_and_maintenance(client: TestClient) -> None:
    assert client.get("/api/health/broker").json()["connected"] is True
    risk = client.get("/api/health/risk-service").json()
    assert risk["limits"]["max_position_size"] == 10000.0
    assert risk["kill_switch"]["engaged"] is False
    system = client.get("/api/health/system").json()
    assert system["memory_rss_bytes"] > 0
    assert system["cache_size"] == 1000
    status = client.get("/api/trading/status").json()
    assert status["trading_state"] == "active"
    connection = client.post("/api/broker/test-connection").json()
    assert (connection["broker"], connection["ok"]) == ("sim", True)

    buy(client, 1)
    assert client.post("/api/admin/clear-cache").json() == {"cleared": 1}
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    for name in ("orders_submitted_total", "orders_filled_total", "risk_blocks_total",
                 "order_submit_latency_seconds", "broker_connection_status"):  # fmt: skip
        assert name in metrics.text


def test_metrics_are_absent_when_disabled(api: ClientFactory) -> None:
    response = api(METRICS_ENABLED="false").get("/metrics")
    assert (response.status_code, error(response)["code"]) == (404, "not_found")


def test_shutdown_stops_new_orders_and_keeps_reads(client: TestClient) -> None:
    response = client.post("/api/admin/shutdown", json={"reason": "maintenance"})
    assert response.status_code == 202
    # An embedded app does not own its process: it never exits by itself.
    assert response.json() == {"shutting_down": True, "open_orders": 0, "exit_in_seconds": None}
    refused = buy(client, 1)
    assert (refused.status_code, error(refused)["rule"]) == (503, "shutting_down")
    assert client.get("/api/health").json()["status"] == "shutting_down"
    assert client.get("/api/trading/positions").status_code == 200
    assert client.get("/api/audit?limit=1").json()[0]["action"] == "shutdown"


def test_the_audit_says_who_did_what_when_and_why(client: TestClient) -> None:
    client.put("/api/config/throttle", json={"max_orders_per_minute": 10})
    client.post("/api/emergency/liquidate-all", json={"reason": "end of day"})
    [liquidation, config] = client.get("/api/audit?limit=2").json()
    assert (liquidation["action"], liquidation["actor"]) == ("liquidate_all", "local")
    assert liquidation["reason"] == "end of day"
    assert liquidation["at"]
    assert (config["action"], config["detail"]) == (
        "config_throttle",
        {"max_orders_per_minute": 10},
    )
    assert client.get("/api/audit?limit=0").status_code == 422


# ---- live mode, plugins, the unexpected -----------------------------------------------------


class QuietBroker:
    """A stand-in for a live broker: acknowledges orders, never fills them."""

    name = "quiet"

    def __init__(self, context: BrokerContext) -> None:
        self.context = context

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def submit(self, order: Order) -> None:
        await self.context.emit(BrokerAck(order.client_order_id, f"q-{order.id}"))

    async def cancel(self, order: Order) -> None:
        return None

    async def query(self, order: Order) -> list[BrokerEvent]:
        return []

    async def on_marks(self, prices: Mapping[str, float]) -> None:
        return None

    def health(self) -> dict[str, Any]:
        return {"connected": True}

    async def test_connection(self) -> dict[str, Any]:
        raise ConnectionError("no route to the broker")


class LivePlugin:
    @hookimpl
    def register_brokers(self, register: Callable[[str, BrokerFactory], None]) -> None:
        register("quiet", QuietBroker)


async def _explode(request: Request) -> JSONResponse:
    raise RuntimeError("a bug in a plugin route")


async def _hello(request: Request) -> JSONResponse:
    return JSONResponse({"hello": "plugin"})


class RoutesPlugin:
    @hookimpl
    def register_routes(self, register: Callable[[BaseRoute], None]) -> None:
        register(Route("/hello", _hello, methods=["GET", "POST"]))
        register(Route("/explode", _explode))


def _store_with_token(role: str = "admin") -> tuple[MemoryStore, str]:
    store = MemoryStore()
    token = asyncio.run(create_token(store, "ops", role))  # type: ignore[arg-type]
    return store, token


def test_live_mode_refuses_to_start_without_tokens(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(TRADING_MODE="live"), store_factory=MemoryStore)
    with pytest.raises(RuntimeError, match="live trading needs API tokens"), TestClient(app):
        pass


def test_prices_cannot_be_set_in_live_mode(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(EXECUTION_MODE="live", BROKER="quiet")
    plugins = make_plugin_manager(settings)
    plugins.register(LivePlugin(), name="quiet")
    store, token = _store_with_token()
    app = create_app(settings, store_factory=lambda: store, plugin_manager=plugins)
    with TestClient(app, client=LOOPBACK, headers={"Authorization": f"Bearer {token}"}) as client:
        response = client.post("/api/market/prices", json={"AAPL": 200.0})
        assert (response.status_code, error(response)["code"]) == (409, "not_backtest")
        down = client.post("/api/broker/test-connection")
        assert (down.status_code, error(down)["code"]) == (503, "broker_unavailable")
        assert "no route to the broker" in error(down)["message"]


def test_plugin_routes_are_served_under_api_plugins_with_a_role(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings()
    plugins = make_plugin_manager(settings)
    plugins.register(RoutesPlugin(), name="routes")
    store, viewer = _store_with_token("viewer")
    app = create_app(settings, store_factory=lambda: store, plugin_manager=plugins)
    with TestClient(app, client=LOOPBACK, raise_server_exceptions=False) as client:
        as_viewer = {"Authorization": f"Bearer {viewer}"}
        assert client.get("/api/plugins/hello", headers=as_viewer).json() == {"hello": "plugin"}
        assert client.get("/api/plugins/hello").status_code == 401
        assert client.post("/api/plugins/hello", headers=as_viewer).status_code == 403

        with caplog.at_level(logging.ERROR, logger="tradeengine.api"):
            crash = client.get("/api/plugins/explode", headers=as_viewer)
        assert crash.status_code == 500
        assert error(crash)["code"] == "internal_error"
        assert "a bug in a plugin route" not in crash.text
        assert "ERROR unexpected RuntimeError on GET /api/plugins/explode" in caplog.text


def test_openapi_documents_every_route_with_its_role(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    for endpoint in ENDPOINTS:
        operation = document["paths"][endpoint.path][endpoint.method.lower()]
        assert operation["x-required-role"] == endpoint.access
        assert str(endpoint.status) in operation["responses"]
        assert ("security" in operation) == (endpoint.access != "public")
    components = document["components"]["schemas"]
    assert {"OrderRequest", "Order", "ErrorBody", "RiskConfigUpdate"} <= set(components)
    refs = set(re.findall(r'"#/components/schemas/(\w+)"', client.get("/openapi.json").text))
    assert refs <= set(components)


def test_docs_api_md_lists_every_endpoint() -> None:
    docs = (Path(__file__).resolve().parent.parent / "docs" / "api.md").read_text()
    for endpoint in ENDPOINTS:
        assert f"`{endpoint.method} {endpoint.path}`" in docs, (endpoint.method, endpoint.path)
