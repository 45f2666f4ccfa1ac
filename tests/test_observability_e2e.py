"""Observability against a real `uvicorn` on 127.0.0.1: the METRICS_PORT listener, and a
session that uses every secret tradeengine knows (Alpaca's keys, an API token made by the CLI,
the password of a PostgreSQL DATABASE_URL), makes a request fail with a traceback, and then
greps the log file and the server's stderr for each of them."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import VENV_BIN, ServerFactory
from tradeengine.logs import REDACTED

EnvFactory = Callable[..., dict[str, str]]
UVICORN = [str(VENV_BIN / "uvicorn"), "tradeengine.main:app", "--host", "127.0.0.1"]


def wait_for(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except httpx.TransportError:
            result = None
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def listener_state(base: str) -> dict[str, Any] | None:
    state: dict[str, Any] | None = httpx.get(f"{base}/api/health/system").json()["metrics_listener"]
    return state if state and state["state"] != "waiting" else None


def create_token(env: dict[str, str], cwd: Path, role: str, name: str) -> str:
    result = subprocess.run(
        [str(VENV_BIN / "tradeengine"), "token", "create", "--role", role, "--name", name],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return result.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_metrics_port_serves_the_same_registry_with_the_same_auth(
    start_server: ServerFactory,
    server_env: EnvFactory,
    free_port: Callable[[], int],
    tmp_path: Path,
) -> None:
    metrics_port = free_port()
    env = server_env(tmp_path, SYNTHETIC_FEED="false", METRICS_PORT=str(metrics_port))
    _, base = start_server(env, tmp_path)
    listener = f"http://127.0.0.1:{metrics_port}/metrics"
    assert wait_for(lambda: listener_state(base)) == {
        "port": metrics_port, "host": "127.0.0.1", "state": "listening", "error": None,
    }  # fmt: skip
    httpx.post(f"{base}/api/market/prices", json={"AAPL": 100.0})
    body = {"symbol": "AAPL", "side": "buy", "qty": 1}
    placed = httpx.post(f"{base}/api/trading/orders", json=body)
    assert placed.status_code == 201

    scraped = httpx.get(listener)
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    assert 'orders_submitted_total{side="buy",type="market"} 1.0' in scraped.text
    assert 'http_requests_total{method="POST",route="/api/trading/orders",status="2xx"} 1.0' in (
        scraped.text
    )
    assert httpx.get(f"{base}/metrics").status_code == 200  # the API keeps serving it
    assert httpx.get(f"http://127.0.0.1:{metrics_port}/api/health").status_code == 404

    token = create_token(env, tmp_path, "viewer", "prometheus")
    assert wait_for(lambda: httpx.get(listener).status_code == 401, timeout=5)
    assert httpx.get(listener, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    log = (tmp_path / "logs" / "trading_platform.log").read_text()
    assert f"metrics listener on 127.0.0.1 port {metrics_port}" in log
    assert "unauthorized GET /metrics from 127.0.0.1: 401" in log


@pytest.mark.slow
def test_metrics_port_equal_to_the_api_port_is_the_api(
    start_server: ServerFactory, server_env: EnvFactory, tmp_path: Path
) -> None:
    env = server_env(tmp_path, SYNTHETIC_FEED="false")
    args = ["/usr/bin/env", "METRICS_PORT={port}", *UVICORN, "--port", "{port}"]
    _, base = start_server(env, tmp_path, args=args)
    port = int(base.rsplit(":", 1)[1])
    assert wait_for(lambda: listener_state(base))["state"] == "served_by_api"
    assert httpx.get(f"{base}/metrics").status_code == 200
    log = (tmp_path / "logs" / "trading_platform.log").read_text()
    assert f"METRICS_PORT={port} is the API's port" in log


@pytest.mark.slow
def test_a_metrics_port_in_use_is_an_error_and_trading_goes_on(
    start_server: ServerFactory, server_env: EnvFactory, tmp_path: Path
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        env = server_env(tmp_path, SYNTHETIC_FEED="false", METRICS_PORT=str(port))
        _, base = start_server(env, tmp_path)
        state = wait_for(lambda: listener_state(base))
    assert (state["state"], state["port"]) == ("failed", port)
    assert "Address already in use" in state["error"]
    assert httpx.get(f"{base}/metrics").status_code == 200
    assert httpx.get(f"{base}/api/health").json()["status"] == "ok"
    log = (tmp_path / "logs" / "trading_platform.log").read_text()
    assert f"ERROR tradeengine.api ERROR METRICS_PORT={port}: cannot listen" in log


# An app with one plugin route that fails, quoting every secret it can reach in its log line
# and its exception (so in the traceback uvicorn and the API log).
FAULTY_APP = """
import logging

from starlette.routing import Route

from tradeengine.api import create_app
from tradeengine.hookspecs import hookimpl
from tradeengine.plugins import make_plugin_manager
from tradeengine.settings import load_settings

settings = load_settings()


class Faulty:
    @hookimpl
    def register_routes(self, register):
        async def fail(request):
            secrets = {
                "database_url": settings.database_url,
                "alpaca_api_key": settings.alpaca_api_key,
                "alpaca_secret_key": settings.alpaca_secret_key,
            }
            logging.getLogger("faulty").warning(
                "about to fail: %s headers=%s", secrets, dict(request.headers)
            )
            raise RuntimeError(
                f"failed with {request.headers['authorization']} {settings.database_url} "
                f"{settings.alpaca_api_key} {settings.alpaca_secret_key}"
            )

        register(Route("/fail", fail))


plugins = make_plugin_manager(settings)
plugins.register(Faulty(), name="faulty")
app = create_app(settings, plugin_manager=plugins)
"""


@pytest.mark.slow
def test_no_secret_reaches_a_log_line(
    start_server: ServerFactory,
    server_env: EnvFactory,
    postgres_url: str,
    tmp_path: Path,
) -> None:
    password = "throwaway-test-password"
    assert f":{password}@" in postgres_url
    api_key, secret_key = "PKFAKEAPIKEY7Q2W9E4R", "fake-alpaca-secret-Zx81Lm42Qp"
    env = server_env(
        tmp_path,
        SYNTHETIC_FEED="false",
        DATABASE_URL=postgres_url,
        ALPACA_API_KEY=api_key,
        ALPACA_SECRET_KEY=secret_key,
        LOG_LEVEL="DEBUG",
    )
    token = create_token(env, tmp_path, "admin", "ops-alice")
    wrong = "te_" + "W" * 43
    (tmp_path / "faulty_app.py").write_text(FAULTY_APP)
    args = [UVICORN[0], "faulty_app:app", "--app-dir", str(tmp_path), *UVICORN[2:]]
    process, base = start_server(env, tmp_path, args=[*args, "--port", "{port}"])

    auth = {"Authorization": f"Bearer {token}"}
    client = httpx.Client(base_url=base, headers=auth)
    assert client.post("/api/market/prices", json={"AAPL": 100.0}).status_code == 200
    order = {"symbol": "AAPL", "side": "buy", "qty": 1, "client_order_id": "redaction-1"}
    assert client.post("/api/trading/orders", json=order).status_code == 201
    assert client.get("/api/trading/status", params={"token": token}).status_code == 200
    wrong_auth = {"Authorization": f"Bearer {wrong}"}
    assert client.get("/api/config/risk", headers=wrong_auth).status_code == 401
    assert client.get("/api/plugins/fail").status_code == 500
    client.close()
    process.terminate()
    process.wait(30)

    log = (tmp_path / "logs" / "trading_platform.log").read_text()
    stderr = next(tmp_path.glob("server-*.out")).read_text()
    for text in (log, stderr):
        # The session happened and was logged: the failure with its traceback, the 401.
        assert "ERROR tradeengine.api ERROR unexpected RuntimeError" in text
        assert "Traceback (most recent call last)" in text
        assert "unauthorized GET /api/config/risk" in text
        assert "client_order_id=redaction-1" in text
        assert f"failed with Bearer {REDACTED}" in text
        # ... and no secret is in any line.
        for secret in (token, wrong, api_key, secret_key, password):
            assert secret not in text, f"{secret!r} reached a log line"
