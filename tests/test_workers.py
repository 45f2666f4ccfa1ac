"""Many workers, one engine: a real `tradeengine serve --workers 4` on loopback keeps every
safety control global, and survives the death of the process that owns the engine."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tradeengine.cluster import state_dir
from tradeengine.settings import load_settings

WORKERS = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    def __init__(self, tmp: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database = tmp / "journal.db"
        self.log = tmp / "trading_platform.log"
        self.env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{self.database}",
            "LOG_FILE": str(self.log),
            "SYNTHETIC_FEED": "false",
            "TRADEENGINE_DISABLED_PLUGINS": "example",
            **env,
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tradeengine.cli", "serve", "--port", str(self.port),
             "--workers", str(WORKERS)],
            env=self.env,
            cwd=tmp,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        seen: set[str] = set()
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"{self.url}/api/trading/status", timeout=2)
                if r.status_code == 200:
                    seen.add(r.headers["x-tradeengine-worker"])
                    if len(seen) >= 2:
                        return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("the workers did not come up")

    def owner_pid(self) -> int:
        settings = load_settings({"DATABASE_URL": self.env["DATABASE_URL"]}, dotenv=None)
        return int((state_dir(settings) / "engine.lock").read_text())

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Server]:
    marker = request.node.get_closest_marker("server_env")
    s = Server(tmp_path, **(marker.kwargs if marker else {}))
    try:
        httpx.post(f"{s.url}/api/market/prices", json={"AAPL": 100.0, "MSFT": 300.0})
        yield s
    finally:
        s.stop()


def order(cid: str, **extra: Any) -> dict[str, Any]:
    return {"symbol": "AAPL", "side": "buy", "qty": 1, "client_order_id": cid, **extra}


async def burst(url: str, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    """All at once, each on a connection of its own so that they spread over the workers."""

    async def one(body: dict[str, Any]) -> httpx.Response:
        async with httpx.AsyncClient(timeout=30) as client:
            return await client.post(f"{url}/api/trading/orders", json=body)

    return await asyncio.gather(*(one(b) for b in bodies))


def get(server: Server, path: str) -> httpx.Response:
    """A GET as a client should make it: a 503 during an owner change is retried."""
    for _ in range(50):
        answer = httpx.get(f"{server.url}{path}", timeout=10)
        if answer.status_code != 503:
            return answer
        time.sleep(float(answer.headers.get("retry-after", "1")) / 10)
    return answer


def journal(server: Server, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(server.database) as db:
        return db.execute(sql).fetchall()


@pytest.mark.server_env(MAX_ORDERS_PER_MINUTE="60", THROTTLE_ENABLED="true")
def test_one_throttle_for_all_workers(server: Server) -> None:
    started = time.monotonic()
    answers = asyncio.run(burst(server.url, [order(f"t{i}") for i in range(300)]))
    elapsed = time.monotonic() - started
    statuses = collections.Counter(r.status_code for r in answers)
    assert set(statuses) <= {201, 429}, statuses
    # The bucket holds 60 and refills one a second: 60 pass, plus one per second the burst took.
    assert 60 <= statuses[201] <= 60 + int(elapsed), (statuses, elapsed)
    assert statuses[429] == 300 - statuses[201]
    assert len({r.headers["x-tradeengine-worker"] for r in answers}) >= 2
    assert all(r.headers["retry-after"] for r in answers if r.status_code == 429)


def test_one_kill_switch_for_all_workers(server: Server) -> None:
    resting = [
        httpx.post(
            f"{server.url}/api/trading/orders",
            json=order(f"rest{i}", type="limit", limit_price=90.0),
        ).json()["id"]
        for i in range(5)
    ]
    kill = httpx.post(f"{server.url}/api/emergency/kill-switch")
    assert kill.status_code == 200, kill.text
    assert sorted(kill.json()["canceled_orders"]) == sorted(resting)
    answers = asyncio.run(burst(server.url, [order(f"after{i}") for i in range(40)]))
    assert {r.status_code for r in answers} == {403}
    assert {r.json()["error"]["rule"] for r in answers} == {"kill_switch"}
    assert len({r.headers["x-tradeengine-worker"] for r in answers}) >= 2
    for order_id in resting:
        canceled = journal(
            server,
            f"SELECT count(*) FROM order_transitions WHERE order_id = '{order_id}' "
            "AND status = 'canceled'",
        )
        assert canceled == [(1,)], order_id


def test_positions_and_metrics_are_the_one_engines(server: Server) -> None:
    for i in range(6):
        assert (
            httpx.post(f"{server.url}/api/trading/orders", json=order(f"p{i}")).status_code == 201
        )
    positions, metrics, workers = set(), set(), set()
    for _ in range(100):
        with httpx.Client() as client:  # a new connection each time
            p = client.get(f"{server.url}/api/trading/positions")
            m = client.get(f"{server.url}/metrics")
        workers.add(p.headers["x-tradeengine-worker"])
        workers.add(m.headers["x-tradeengine-worker"])
        positions.add(p.text)
        submitted = [
            line for line in m.text.splitlines() if line.startswith("orders_submitted_total{")
        ]
        metrics.add(tuple(submitted))
    assert len(positions) == 1
    assert '"qty":6.0' in positions.pop()
    assert len(metrics) == 1
    assert len(workers) >= 2


@pytest.mark.server_env(MAX_ORDERS_PER_MINUTE="100000", MAX_POSITION_SIZE="1e9")
def test_killing_the_engine_owner_loses_nothing(server: Server) -> None:
    acknowledged: dict[str, str] = {}
    resumed_after: list[float] = []

    async def load() -> None:
        killed_at: float | None = None
        async with httpx.AsyncClient(timeout=30) as client:
            for i in range(150):
                cid = f"k{i}"
                while True:
                    try:
                        r = await client.post(f"{server.url}/api/trading/orders", json=order(cid))
                    except httpx.HTTPError:
                        r = None
                    if r is not None and r.status_code in (200, 201):
                        acknowledged[cid] = r.json()["id"]
                        if killed_at is not None and not resumed_after:
                            resumed_after.append(time.monotonic() - killed_at)
                        break
                    assert r is None or r.status_code == 503, r.text
                    await asyncio.sleep(0.05)
                if i == 50:
                    os.kill(server.owner_pid(), signal.SIGKILL)
                    killed_at = time.monotonic()

    asyncio.run(load())
    assert len(acknowledged) == 150
    print(f"service resumed {resumed_after[0]:.2f} s after the owner was killed")
    answer = get(server, "/api/trading/orders?status=all&limit=500")
    assert answer.status_code == 200, answer.text
    listed = answer.json()
    by_client = collections.Counter(o["client_order_id"] for o in listed)
    assert all(by_client[cid] == 1 for cid in acknowledged)
    assert {o["id"] for o in listed} >= set(acknowledged.values())
    # Each order reached the broker once: one pending_new transition per order in the journal.
    sent = journal(
        server,
        "SELECT order_id, count(*) FROM order_transitions WHERE status = 'pending_new' "
        "GROUP BY order_id HAVING count(*) > 1",
    )
    assert sent == []
    positions = get(server, "/api/trading/positions").json()
    fills = journal(server, "SELECT coalesce(sum(qty), 0) FROM fills WHERE symbol = 'AAPL'")
    assert positions[0]["qty"] == fills[0][0] == 150
