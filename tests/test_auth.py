"""Who may do what: bearer tokens, roles viewer < trader < operator < admin, the loopback rule
without tokens, and the route table's declared roles."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from tradeengine.api import create_app
from tradeengine.api.auth import RANK, ROLES, create_token, revoke_token
from tradeengine.api.routes import ENDPOINTS, Endpoint
from tradeengine.settings import Settings
from tradeengine.store import MemoryStore

LOOPBACK = ("127.0.0.1", 50000)
REMOTE = ("203.0.113.7", 50000)
# Bodies that decode, so that an allowed request gets past auth and validation.
BODIES: dict[str, Any] = {
    "/api/trading/orders": {"symbol": "AAPL", "side": "buy", "qty": 1},
    "/api/config/risk": {"max_drawdown": 0.2},
    "/api/config/throttle": {"enabled": True},
    "/api/market/prices": {"AAPL": 200.0},
    "/api/emergency/kill-switch": {"reason": "test"},
}


@pytest.fixture
def tokens() -> tuple[MemoryStore, dict[str, str]]:
    """A store with one token per role, named after the role."""
    store = MemoryStore()
    made: dict[str, str] = {role: asyncio.run(create_token(store, role, role)) for role in ROLES}
    return store, made


@pytest.fixture
def secured(
    make_settings: Callable[..., Settings], tokens: tuple[MemoryStore, dict[str, str]]
) -> Iterator[TestClient]:
    store, _ = tokens
    app = create_app(make_settings(), store_factory=lambda: store)
    with TestClient(app, client=LOOPBACK) as client:
        yield client


def call(client: TestClient, endpoint: Endpoint, token: str | None = None) -> int:
    path = endpoint.path.format(symbol="AAPL", order_id="no-such-order")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = BODIES.get(endpoint.path)
    if endpoint.method == "DELETE" and endpoint.path == "/api/emergency/kill-switch":
        path += "?reason=test"
    response = client.request(endpoint.method, path, headers=headers, json=body)
    return response.status_code


TESTED = [e for e in ENDPOINTS if e.path != "/api/admin/shutdown"]


@pytest.mark.parametrize("endpoint", TESTED, ids=lambda e: f"{e.method} {e.path}")
def test_each_route_needs_its_role_and_no_less(
    secured: TestClient, tokens: tuple[MemoryStore, dict[str, str]], endpoint: Endpoint
) -> None:
    _, made = tokens
    if endpoint.access == "public":
        assert call(secured, endpoint) == 200
        return
    assert call(secured, endpoint) == 401
    assert call(secured, endpoint, "te_not-a-token") == 401
    for role in ROLES:
        status = call(secured, endpoint, made[role])
        if RANK[role] < RANK[endpoint.access]:
            assert status == 403, (role, status)
        else:
            assert status not in (401, 403), (role, status)


def test_the_roles_follow_the_issue() -> None:
    access = {(e.method, e.path): e.access for e in ENDPOINTS}
    assert access["GET", "/api/health"] == "public"
    assert access["POST", "/api/trading/orders"] == "trader"
    assert access["DELETE", "/api/trading/orders/{order_id}"] == "trader"
    assert access["POST", "/api/emergency/kill-switch"] == "trader"
    assert access["POST", "/api/emergency/liquidate-all"] == "operator"
    assert access["PUT", "/api/config/risk"] == "operator"
    assert access["POST", "/api/admin/clear-cache"] == "operator"
    assert access["POST", "/api/broker/test-connection"] == "operator"
    assert access["DELETE", "/api/emergency/kill-switch"] == "admin"
    assert access["POST", "/api/admin/shutdown"] == "admin"
    reads = [e for e in ENDPOINTS if e.method == "GET" and e.access != "public"]
    assert {e.access for e in reads} == {"viewer"}


def test_every_served_route_declares_a_role(make_settings: Callable[..., Settings]) -> None:
    """Walks what Starlette serves: a route added outside the table fails here."""
    app = create_app(make_settings())
    declared = {(e.method, e.path): e.access for e in app.state.endpoints}
    served = 0
    for route in app.routes:
        assert isinstance(route, Route | Mount), f"unexpected route {route!r}"
        if isinstance(route, Mount):
            assert route.path == "/api/plugins", "only plugin routes are mounted (guarded)"
            continue
        for method in (route.methods or set()) - {"HEAD"}:
            assert (method, route.path) in declared, f"{method} {route.path} declares no role"
            assert declared[method, route.path] in ("public", *ROLES)
            served += 1
    assert served == len(declared)


def test_the_actor_is_the_token_name(
    secured: TestClient, tokens: tuple[MemoryStore, dict[str, str]]
) -> None:
    _, made = tokens
    response = secured.post(
        "/api/emergency/kill-switch", headers={"Authorization": f"Bearer {made['trader']}"}
    )
    assert (response.json()["actor"], response.json()["reason"]) == (
        "trader",
        "kill switch engaged via API",
    )


def test_a_revoked_token_stops_working(
    secured: TestClient, tokens: tuple[MemoryStore, dict[str, str]]
) -> None:
    store, made = tokens
    headers = {"Authorization": f"Bearer {made['viewer']}"}
    assert secured.get("/api/trading/positions", headers=headers).status_code == 200
    assert asyncio.run(revoke_token(store, "viewer"))
    secured.app.state.auth.cache_seconds = 0  # type: ignore[attr-defined]
    assert secured.get("/api/trading/positions", headers=headers).status_code == 401


def test_tokens_are_stored_hashed(tokens: tuple[MemoryStore, dict[str, str]]) -> None:
    store, made = tokens
    records = asyncio.run(store.tokens())
    for record in records:
        assert record.token_hash == hashlib.sha256(made[record.role].encode()).hexdigest()
        assert made[record.role] not in repr(record)


def test_refusals_are_logged_with_client_and_path_never_the_token(
    secured: TestClient,
    tokens: tuple[MemoryStore, dict[str, str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, made = tokens
    with caplog.at_level(logging.WARNING, logger="tradeengine.auth"):
        secured.get("/api/trading/positions", headers={"Authorization": "Bearer te_wrong"})
        secured.post(
            "/api/emergency/liquidate-all", headers={"Authorization": f"Bearer {made['viewer']}"}
        )
    lines = [r.getMessage() for r in caplog.records if r.name == "tradeengine.auth"]
    assert len(lines) == 2
    assert all("unauthorized" in line and "127.0.0.1" in line for line in lines)
    assert "/api/trading/positions" in lines[0] and "401" in lines[0]
    assert "/api/emergency/liquidate-all" in lines[1] and "403" in lines[1]
    assert "te_wrong" not in caplog.text
    assert made["viewer"] not in caplog.text


def test_without_tokens_paper_mode_serves_loopback_only_as_admin(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="tradeengine.api"):
        app = create_app(make_settings())
        with TestClient(app, client=LOOPBACK) as local:
            assert "no API token configured" in caplog.text
            assert local.post("/api/emergency/kill-switch").json()["actor"] == "local"
            assert local.delete("/api/emergency/kill-switch?reason=x").status_code == 200
            assert local.get("/api/audit").json()[0]["actor"] == "local"
            ipv6 = TestClient(app, client=("::1", 50000))
            assert ipv6.get("/api/trading/positions").status_code == 200
            remote = TestClient(app, client=REMOTE)
            assert remote.get("/api/health").status_code == 200
            refused = remote.get("/api/trading/positions")
            assert refused.status_code == 403
            assert "only loopback clients" in refused.json()["error"]["message"]
    assert "unauthorized GET /api/trading/positions from 203.0.113.7" in caplog.text


def test_with_tokens_loopback_needs_one_too(secured: TestClient) -> None:
    assert secured.get("/api/trading/positions").status_code == 401
    assert secured.get("/api/trading/positions").headers["www-authenticate"].startswith("Bearer")
    assert secured.get("/api/health").status_code == 200


def test_live_mode_starts_with_a_token(
    make_settings: Callable[..., Settings], tokens: tuple[MemoryStore, dict[str, str]]
) -> None:
    store, made = tokens
    app = create_app(make_settings(TRADING_MODE="live"), store_factory=lambda: store)
    with TestClient(app, client=REMOTE) as client:
        headers = {"Authorization": f"Bearer {made['viewer']}"}
        assert client.get("/api/trading/status", headers=headers).json()["trading_mode"] == "live"
        assert client.get("/api/trading/status").status_code == 401
