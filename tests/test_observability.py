"""Observability in process (`with TestClient(create_app(...))`): the metrics an operator
scrapes and their labels, the HTTP and journal metrics, the health endpoints, the journal's
size, the log lines the runbook greps for, and the redaction of secrets from log lines."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from starlette.testclient import TestClient

from tradeengine import RULES
from tradeengine.api import create_app
from tradeengine.api.auth import create_token
from tradeengine.api.middleware import UNMATCHED_ROUTE
from tradeengine.api.process import LoopMonitor
from tradeengine.logs import REDACTED, RedactingFilter, configure_logging
from tradeengine.settings import Settings
from tradeengine.store import MemoryStore, store_for_url
from tradeengine.store.journal import LATENCY_BUCKETS

LOOPBACK = ("127.0.0.1", 50000)
Api = Callable[..., TestClient]


@pytest.fixture
def api(make_settings: Callable[..., Settings]) -> Iterator[Api]:
    """`api(store=..., VAR=value...)`: a started app seen from a loopback client."""
    with contextlib.ExitStack() as stack:

        def open_client(store: MemoryStore | None = None, **variables: str) -> TestClient:
            factory = (lambda: store) if store is not None else None
            app = create_app(make_settings(**variables), store_factory=factory)
            return stack.enter_context(TestClient(app, client=LOOPBACK))

        yield open_client


def scrape(client: TestClient) -> dict[str, list[Sample]]:
    """Samples of `/metrics` by metric family name."""
    response = client.get("/metrics")
    assert response.status_code == 200
    return {f.name: f.samples for f in text_string_to_metric_families(response.text)}


def values(samples: list[Sample], name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for s in samples if s.name == name}


def order(client: TestClient, qty: float = 10, **fields: Any) -> dict[str, Any]:
    body = {"symbol": "AAPL", "side": "buy", "qty": qty, **fields}
    response = client.post("/api/trading/orders", json=body)
    result: dict[str, Any] = response.json()
    result["_status"] = response.status_code
    return result


# ---- metrics -----------------------------------------------------------------------------


def test_every_metric_of_the_issue_is_exported_with_bounded_labels(api: Api) -> None:
    client = api()
    client.post("/api/market/prices", json={"AAPL": 200.0})
    assert order(client, 10)["status"] == "filled"
    assert order(client, 1000)["_status"] == 422  # max_position_size
    client.post("/api/emergency/kill-switch", json={"reason": "test"})
    assert order(client, 1)["_status"] == 403  # kill_switch
    metrics = scrape(client)

    expected_labels = {
        "orders_submitted": {"side", "type"},
        "orders_filled": {"side", "type"},
        "orders_rejected": {"code"},
        "risk_blocks": {"rule"},
        "order_submit_latency_seconds": {"le"},
        "broker_connection_status": {"broker"},
        "kill_switch_engaged": set(),
        "trading_state": {"state"},
        "equity_usd": set(),
        "daily_pnl_usd": set(),
        "drawdown_ratio": set(),
        "portfolio_heat_ratio": set(),
        "position_qty": {"symbol"},
        "position_notional_usd": {"symbol"},
        "resting_order_qty": {"symbol", "side"},
        "gross_exposure_usd": set(),
        "net_exposure_usd": set(),
        "throttle_tokens_available": set(),
        "journal_write_latency_seconds": {"le"},
        "journal_write_failures": set(),
        "http_requests": {"route", "method", "status"},
        "http_request_duration_seconds": {"route", "method", "le"},
        "event_loop_lag_seconds": set(),
    }
    for name, labels in expected_labels.items():
        assert name in metrics, f"{name} is not exported"
        for sample in metrics[name]:
            assert set(sample.labels) <= labels, (name, sample.labels)

    submitted = values(metrics["orders_submitted"], "orders_submitted_total")
    assert submitted == {(("side", "buy"), ("type", "market")): 1.0}
    assert values(metrics["orders_filled"], "orders_filled_total") == submitted
    blocks = values(metrics["risk_blocks"], "risk_blocks_total")
    assert {dict(k)["rule"] for k in blocks} == set(RULES)  # every rule, from the start
    assert blocks[(("rule", "max_position_size"),)] == 1.0
    assert blocks[(("rule", "kill_switch"),)] == 1.0
    rejected = values(metrics["orders_rejected"], "orders_rejected_total")
    assert rejected == {(("code", "risk_limit"),): 1.0, (("code", "kill_switch_engaged"),): 1.0}
    buckets = [
        float(s.labels["le"])
        for s in metrics["order_submit_latency_seconds"]
        if s.name.endswith("_bucket")
    ]
    assert buckets[0] == 1e-5
    assert buckets[-2:] == [10.0, float("inf")]
    assert values(metrics["broker_connection_status"], "broker_connection_status") == {
        (("broker", "sim"),): 1.0
    }
    assert values(metrics["kill_switch_engaged"], "kill_switch_engaged") == {(): 1.0}
    state = values(metrics["trading_state"], "trading_state")
    assert state[(("state", "halted"),)] == 1.0
    assert sum(state.values()) == 1.0
    assert values(metrics["gross_exposure_usd"], "gross_exposure_usd") == {(): 2000.0}


def test_a_broker_rejection_counts_in_orders_rejected(api: Api) -> None:
    client = api()
    client.post("/api/market/prices", json={"AAPL": 200.0})
    engine = client.app.state.engine  # type: ignore[attr-defined]
    sim = engine.broker
    original = sim.submit

    async def refuse(order: Any) -> None:
        from tradeengine.schemas import BrokerRejected

        await sim.context.emit(BrokerRejected(order.client_order_id, "no buying power"))

    sim.submit = refuse
    try:
        assert order(client, 1)["status"] == "rejected"
    finally:
        sim.submit = original
    rejected = values(scrape(client)["orders_rejected"], "orders_rejected_total")
    assert rejected == {(("code", "broker_rejected"),): 1.0}


def test_order_refusals_outside_the_risk_rules_count_by_code(api: Api) -> None:
    client = api()
    client.post("/api/market/prices", json={"AAPL": 200.0})
    assert order(client, 1, client_order_id="same")["_status"] == 201
    assert order(client, 2, client_order_id="same")["_status"] == 409
    assert order(client, 0)["_status"] == 422
    rejected = values(scrape(client)["orders_rejected"], "orders_rejected_total")
    assert rejected[(("code", "client_order_id_conflict"),)] == 1.0
    assert rejected[(("code", "invalid_order"),)] == 1.0


def test_http_requests_are_labelled_by_route_template_method_and_status_class(
    api: Api,
) -> None:
    client = api()
    for order_id in ("a1", "b2", "c3"):
        assert client.get(f"/api/trading/orders/status/{order_id}").status_code == 404
    for path in ("/wp-admin", "/etc/passwd", "/api/nope/1"):
        assert client.get(path).status_code == 404
    assert client.request("BREW", "/api/health").status_code == 405
    assert client.get("/api/health").status_code == 200
    samples = scrape(client)["http_requests"]
    counts = {
        (s.labels["route"], s.labels["method"], s.labels["status"]): s.value
        for s in samples
        if s.name == "http_requests_total"
    }
    assert counts[("/api/trading/orders/status/{order_id}", "GET", "4xx")] == 3.0
    assert counts[(UNMATCHED_ROUTE, "GET", "4xx")] == 3.0
    assert counts[("/api/health", "OTHER", "4xx")] == 1.0
    assert counts[("/api/health", "GET", "2xx")] == 1.0
    assert not any("a1" in route or "passwd" in route for route, _, _ in counts)
    durations = scrape(client)["http_request_duration_seconds"]
    health_count = [
        s.value
        for s in durations
        if s.name.endswith("_count") and s.labels == {"route": "/api/health", "method": "GET"}
    ]
    assert health_count == [1.0]


def test_journal_write_latency_counts_every_transaction_and_failures(api: Api) -> None:
    store = MemoryStore()
    client = api(store=store)
    client.post("/api/market/prices", json={"AAPL": 200.0})
    order(client, 1)
    metrics = scrape(client)
    histogram = {s.name: s.value for s in metrics["journal_write_latency_seconds"]}
    assert histogram["journal_write_latency_seconds_count"] == store.transactions > 0
    assert histogram["journal_write_latency_seconds_bucket"] > 0  # the first bucket's name
    assert len(LATENCY_BUCKETS) + 1 == sum(
        1 for s in metrics["journal_write_latency_seconds"] if s.name.endswith("_bucket")
    )

    store.fail_writes = OSError("disk full")
    assert order(client, 1)["_status"] == 503
    failures = values(scrape(client)["journal_write_failures"], "journal_write_failures_total")
    assert failures == {(): 1.0}
    health = client.get("/api/health").json()
    assert health["components"]["store"] == {"status": "down", "state": "failing"}
    assert health["status"] == "degraded"
    store.fail_writes = None
    assert order(client, 1)["status"] == "filled"
    assert client.get("/api/health").json()["components"]["store"]["status"] == "ok"


def test_metrics_disabled_removes_the_endpoint_and_the_listener(api: Api) -> None:
    client = api(METRICS_ENABLED="false", METRICS_PORT="9")
    assert client.get("/metrics").status_code == 404
    assert client.get("/api/health/system").json()["metrics_listener"] is None


# ---- health ------------------------------------------------------------------------------


def test_health_reports_each_component_and_the_worst_status(api: Api) -> None:
    client = api()
    body = client.get("/api/health").json()
    assert body["status"] == "ok"
    assert body["components"] == {
        "engine": {"status": "ok", "state": "active"},
        "store": {"status": "ok", "state": "writing"},
        "broker": {"status": "ok", "state": "connected"},
        "kill_switch": {"status": "ok", "state": "released"},
    }
    engine = client.app.state.engine  # type: ignore[attr-defined]
    engine.broker.connected = False
    body = client.get("/api/health").json()
    assert (body["status"], body["components"]["broker"]["state"]) == ("degraded", "disconnected")
    engine.broker.connected = True

    client.post("/api/emergency/kill-switch", json={"reason": "drill"})
    body = client.get("/api/health").json()
    assert body["status"] == "halted"
    assert body["components"]["kill_switch"] == {"status": "halted", "state": "engaged"}
    assert body["components"]["engine"] == {"status": "halted", "state": "halted"}
    assert "drill" not in json.dumps(body)  # public: no reasons


def test_system_health_reports_the_process(api: Api, tmp_path: Path) -> None:
    client = api(CACHE_SIZE="4")
    client.post("/api/market/prices", json={"AAPL": 200.0})
    for _ in range(2):
        order(client, 1)
    time.sleep(0.6)  # a couple of loop monitor ticks
    body = client.get("/api/health/system").json()
    assert body["memory_rss_bytes"] > 10_000_000
    assert body["threads"] >= body["python_threads"] >= 1
    assert 0 < body["open_files"] <= (body["open_files_limit"] or 1 << 30)
    assert body["cpu_user_seconds"] > 0
    assert body["cpu_percent"] is not None
    assert body["cpu_percent"] >= 0
    lag = body["event_loop_lag_seconds"]
    assert 0 <= lag["last"] <= lag["max"] < 5
    assert body["uptime_seconds"] > 0
    assert body["cache"] == {"entries": 2, "size": 4, "used": 0.5}
    database = tmp_path / "trading_platform.db"
    on_disk = database.stat().st_size + Path(f"{database}-wal").stat().st_size
    assert body["journal"]["size_bytes"] == on_disk
    assert body["journal"]["writes"] > 0
    assert body["metrics_listener"] is None  # METRICS_PORT unset


def test_risk_service_shows_each_limit_and_how_much_is_used(api: Api) -> None:
    client = api(MAX_POSITION_SIZE="10000", MAX_ORDERS_PER_MINUTE="10", PRICE_COLLAR="0.5")
    client.post("/api/market/prices", json={"AAPL": 100.0})
    order(client, 20)  # filled: 2000 USD
    resting = order(client, 30, type="limit", limit_price=90.0, time_in_force="gtc")
    assert resting["status"] == "new"
    client.post("/api/market/prices", json={"AAPL": 95.0})  # 100 USD lost on the position
    body = client.get("/api/health/risk-service").json()
    assert body["trading_state"] == "active"
    assert body["limits"]["max_position_size"] == 10000.0
    usage = body["usage"]
    aapl = usage["max_position_size"]["positions"]["AAPL"]
    assert (aapl["qty"], aapl["resting_buy_qty"], aapl["price"]) == (20.0, 30.0, 95.0)
    assert aapl["notional"] == 1900.0
    assert aapl["worst_case_notional"] == 50 * 95.0
    assert aapl["used"] == pytest.approx(50 * 95.0 / 10000)
    daily = usage["max_daily_loss"]
    assert daily["daily_pnl"] == pytest.approx(-100.0)
    assert daily["used"] == pytest.approx(100 / 1000)
    assert usage["max_drawdown"]["value"] > 0
    assert usage["max_drawdown"]["used"] == pytest.approx(
        usage["max_drawdown"]["value"] / 0.1, abs=1e-6
    )
    heat = usage["portfolio_heat"]
    assert heat["used"] == pytest.approx(heat["value"] / 0.25, abs=1e-6)
    throttle = usage["throttle"]
    assert (throttle["enabled"], throttle["capacity"]) == (True, 10)
    assert throttle["tokens_available"] < 9
    assert throttle["used"] == pytest.approx((10 - throttle["tokens_available"]) / 10, abs=0.01)


def test_the_loop_monitor_sees_a_blocked_loop() -> None:
    async def run() -> dict[str, float]:
        monitor = LoopMonitor(tick=0.01, window=1.0)
        monitor.start()
        await asyncio.sleep(0.05)
        time.sleep(0.2)  # a handler that blocks the loop
        await asyncio.sleep(0.05)
        await monitor.stop()
        return monitor.lag()

    lag = asyncio.run(run())
    assert lag["max"] >= 0.15


@pytest.mark.parametrize("where", ["memory", "sqlite-memory", "sqlite", "postgresql"])
def test_the_journal_knows_its_size(where: str, tmp_path: Path, request: Any) -> None:
    database = tmp_path / "journal.db"

    async def sizes() -> tuple[int | None, int | None, int]:
        if where == "memory":
            store: Any = MemoryStore()
        elif where == "sqlite-memory":
            store = store_for_url("sqlite:///:memory:")
        elif where == "sqlite":
            store = store_for_url(f"sqlite:///{database}")
        else:
            store = store_for_url(request.getfixturevalue("postgres_url"))
        await store.open()
        try:
            before = await store.size()
            for number in range(50):
                await create_token(store, f"bulk-{number}-{'x' * 4000}", "viewer")
            files = [database, Path(f"{database}-wal")]
            return before, await store.size(), sum(f.stat().st_size for f in files if f.exists())
        finally:
            await store.close()

    before, after, on_disk = asyncio.run(sizes())
    if where == "memory":
        assert before is after is None
        return
    assert before is not None
    assert after is not None
    assert 0 < before < after
    if where == "sqlite":
        assert after == on_disk  # the file and its WAL


# ---- logs --------------------------------------------------------------------------------


def log_lines(tmp_path: Path) -> list[str]:
    return (tmp_path / "logs" / "trading_platform.log").read_text().splitlines()


@pytest.mark.usefixtures("restore_logging")
def test_log_lines_about_orders_carry_their_ids(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    store = MemoryStore()
    viewer = asyncio.run(create_token(store, "watcher", "viewer"))
    trader = asyncio.run(create_token(store, "desk", "trader"))
    app = create_app(make_settings(), store_factory=lambda: store)
    headers = {"Authorization": f"Bearer {trader}"}
    with TestClient(app, client=LOOPBACK, headers=headers) as client:
        client.app.state.engine.gate.mark("AAPL", 200.0)  # type: ignore[attr-defined]
        placed = order(client, 1, client_order_id="ord-filled-1")
        assert placed["status"] == "filled"
        assert order(client, 1000, client_order_id="ord-too-big-2")["_status"] == 422
        assert order(client, 2, client_order_id="ord-filled-1")["_status"] == 409
        assert order(client, 1, client_order_id="ord-filled-1")["_status"] == 200
        assert client.delete(f"/api/trading/orders/{placed['id']}").status_code == 409
        bad = {"Authorization": "Bearer te_not-a-real-token-at-all-000000"}
        assert client.get("/api/trading/status", headers=bad).status_code == 401
        low = {"Authorization": f"Bearer {viewer}"}
        assert client.post("/api/emergency/kill-switch", headers=low).status_code == 403
    lines = log_lines(tmp_path)

    def about(word: str) -> list[str]:
        return [line for line in lines if word in line]

    assert about("ORDER " + placed["id"])  # the audit plugin's lines
    audit_lines = [line for line in about(placed["id"]) if " tradeengine.audit " in line]
    assert all("client_order_id=ord-filled-1" in line for line in audit_lines)
    [block] = about("RISK_BLOCK")
    assert " WARNING " in block
    assert "rule=max_position_size client_order_id=ord-too-big-2" in block
    [conflict] = about("ORDER_REFUSED")
    assert "code=client_order_id_conflict client_order_id=ord-filled-1" in conflict
    [replayed] = about("replayed: an idempotent retry")
    assert f"ORDER {placed['id']} client_order_id=ord-filled-1" in replayed
    [cancel] = about("CANCEL_REFUSED")
    assert placed["id"] in cancel
    unauthorized = about("unauthorized")
    assert [" 401 " in u for u in unauthorized] == [True, False]
    assert " 403 " in unauthorized[1]
    assert not any(trader in line or viewer in line for line in lines)


@pytest.mark.usefixtures("restore_logging")
def test_the_redaction_filter_is_on_every_handler(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    uvicorn_logger = logging.getLogger("uvicorn")
    uvicorn_handler = logging.NullHandler()  # stands for uvicorn's own stderr handler
    uvicorn_logger.addHandler(uvicorn_handler)
    try:
        configure_logging(make_settings(ALPACA_API_KEY="PKTESTKEY0001"))
        handlers = [*logging.getLogger().handlers, uvicorn_handler]
        assert all(
            any(isinstance(f, RedactingFilter) for f in handler.filters)
            for handler in handlers
            if handler in uvicorn_logger.handlers or getattr(handler, "_tradeengine_handler", False)
        )
        assert any(isinstance(f, RedactingFilter) for f in uvicorn_handler.filters)
        configure_logging(make_settings())  # configured again: one filter, not two
        assert sum(isinstance(f, RedactingFilter) for f in uvicorn_handler.filters) == 1
    finally:
        uvicorn_logger.removeHandler(uvicorn_handler)
        uvicorn_handler.close()


def test_redaction_of_messages_arguments_and_tracebacks() -> None:
    secrets = ["PKFAKEKEY0123", "fake-secret-value", "p@ss:word"]
    redaction = RedactingFilter(secrets)
    token = "te_" + "A" * 43

    def formatted(msg: str, *args: Any, exc: BaseException | None = None) -> str:
        info = (type(exc), exc, exc.__traceback__) if exc else None
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, msg, args, info)
        assert redaction.filter(record)
        return logging.Formatter("%(message)s").format(record)

    assert formatted("key %s", "PKFAKEKEY0123") == f"key {REDACTED}"
    assert formatted("headers %r", {"authorization": f"Bearer {token}"}) == (
        f"headers {{'authorization': 'Bearer {REDACTED}'}}"
    )
    assert formatted("scope %s", [(b"authorization", b"Bearer abc.def")]) == (
        f"scope [(b'authorization', b'Bearer {REDACTED}')]"
    )
    assert formatted("url postgresql://te:p@ss:word@db:5432/x") == (
        f"url postgresql://te:{REDACTED}@db:5432/x"
    )
    assert formatted("ALPACA_SECRET_KEY=other api_key: x1") == (
        f"ALPACA_SECRET_KEY={REDACTED} api_key: {REDACTED}"
    )
    assert formatted("%s - %s %d", "127.0.0.1:1", f"/x?token={token}", 200) == (
        f"127.0.0.1:1 - /x?token={REDACTED} 200"
    )
    assert formatted("send `Authorization: Bearer <token>`") == (
        "send `Authorization: Bearer <token>`"
    )
    plain = "RISK_BLOCK rule=kill_switch client_order_id=order_12345 symbol=AAPL"
    assert formatted(plain) == plain
    try:
        raise RuntimeError("connect failed with fake-secret-value")
    except RuntimeError as exc:
        line = formatted("ERROR failed", exc=exc)
    assert "Traceback" in line
    assert "fake-secret-value" not in line
    assert f"connect failed with {REDACTED}" in line
