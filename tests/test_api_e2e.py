"""End to end on real servers on free loopback ports: `tradeengine serve` over HTTP and HTTPS
(a self-signed certificate made here), orders, and the graceful shutdown an operator asks for."""

from __future__ import annotations

import shutil
import signal
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

VENV_BIN = Path(sys.executable).parent
ServerFactory = Callable[..., tuple[subprocess.Popen[bytes], str]]
Env = Callable[..., dict[str, str]]


def serve_command(*extra: str) -> list[str]:
    return [
        str(VENV_BIN / "tradeengine"),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        *extra,
    ]


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return key, cert


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl binary")
def test_serve_speaks_https_with_the_given_certificate(
    start_server: ServerFactory, server_env: Env, tmp_path: Path
) -> None:
    key, cert = self_signed_certificate(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    args = serve_command("--ssl-keyfile", str(key), "--ssl-certfile", str(cert))
    _, base = start_server(server_env(tmp_path), tmp_path, args=args, scheme="https", verify=trust)
    assert base.startswith("https://127.0.0.1:")

    health = httpx.get(f"{base}/api/health", verify=trust)
    assert (health.status_code, health.json()["status"]) == (200, "ok")
    assert health.extensions["http_version"] == b"HTTP/1.1"
    with pytest.raises(httpx.ConnectError):  # not trusted without the certificate
        httpx.get(f"{base}/api/health")
    curl = subprocess.run(
        ["curl", "-s", "--cacert", str(cert), f"{base}/api/trading/status"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert '"trading_state":"active"' in curl.stdout


def test_ssl_options_go_together(server_env: Env, tmp_path: Path) -> None:
    result = subprocess.run(
        [str(VENV_BIN / "tradeengine"), "serve", "--ssl-keyfile", "key.pem"],
        env=server_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "--ssl-keyfile and --ssl-certfile go together" in result.stderr


def test_orders_over_http_then_a_graceful_shutdown_keeps_the_journal(
    start_server: ServerFactory, server_env: Env, tmp_path: Path
) -> None:
    env = server_env(tmp_path, SYNTHETIC_FEED="false")
    process, base = start_server(env, tmp_path, args=serve_command())
    with httpx.Client(base_url=base) as client:
        assert client.post("/api/market/prices", json={"AAPL": 200.0}).status_code == 200
        placed = client.post(
            "/api/trading/orders",
            json={"symbol": "AAPL", "side": "buy", "qty": "10", "client_order_id": "e2e-1"},
        )
        assert (placed.status_code, placed.json()["status"]) == (201, "filled")
        resting = client.post(
            "/api/trading/orders",
            json={"symbol": "AAPL", "side": "buy", "qty": 1, "type": "limit", "limit_price": 195},
        ).json()
        assert resting["status"] == "new"

        stop = client.post("/api/admin/shutdown", json={"reason": "e2e", "grace_seconds": 0.5})
        assert stop.status_code == 202
        assert stop.json() == {"shutting_down": True, "open_orders": 1, "exit_in_seconds": 0.5}
        refused = client.post(
            "/api/trading/orders", json={"symbol": "AAPL", "side": "buy", "qty": 1}
        )
        assert refused.status_code == 503
    assert process.wait(15) in (0, -signal.SIGTERM)
    log = (tmp_path / "logs" / "trading_platform.log").read_text()
    assert "AUDIT action=shutdown actor=local reason=e2e" in log
    assert f"ORDER {resting['id']}" in log and "status=canceled" in log
    assert "engine stopped" in log

    _, base = start_server(env, tmp_path, args=serve_command())
    with httpx.Client(base_url=base) as client:
        order = client.get(f"/api/trading/orders/status/{placed.json()['id']}").json()
        assert (order["client_order_id"], order["status"]) == ("e2e-1", "filled")
        assert client.get(f"/api/trading/orders/status/{resting['id']}").json()["status"] == (
            "canceled"
        )
        [position] = client.get("/api/trading/positions").json()
        assert (position["symbol"], position["qty"]) == ("AAPL", 10.0)


def test_shutdown_stops_every_worker(
    start_server: ServerFactory, server_env: Env, tmp_path: Path
) -> None:
    """Under `--workers`, a worker that exited alone would be restarted by uvicorn's
    supervisor: the shutdown stops the supervisor, and with it every worker."""
    env = server_env(tmp_path, SYNTHETIC_FEED="false")
    process, base = start_server(env, tmp_path, args=serve_command("--workers", "2"))
    stop = httpx.post(f"{base}/api/admin/shutdown", json={"grace_seconds": 0.2})
    assert stop.status_code == 202
    assert process.wait(30) in (0, -signal.SIGTERM)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base}/api/health")
