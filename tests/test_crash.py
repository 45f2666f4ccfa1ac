"""Nothing lost on a crash: a real server (`tradeengine serve`) under concurrent order load is
killed with SIGKILL at random moments, several rounds, and started again on the same journal.

After every restart and at the end: every order that got a 2xx exists with a consistent final
state, positions equal the journaled fills, no fill is booked twice, no client order id
reaches the broker as two orders, a latched kill switch is still latched, and a retried
request returns the original order.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tradeengine.schemas import Fill, Order
from tradeengine.store import store_for_url

TRADEENGINE = str(Path(sys.executable).parent / "tradeengine")
ROUNDS = 4
WORKERS = 12
SYMBOLS = ("AAPL", "MSFT")
SEED = random.randrange(1 << 32)

Server = tuple["subprocess.Popen[bytes]", str]


@dataclass
class Ledger:
    """What the clients were told."""

    acknowledged: dict[str, dict[str, Any]] = field(default_factory=dict)
    """client_order_id -> the order a 2xx returned (the latest answer)."""
    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)
    unknown: set[str] = field(default_factory=set)
    """Requests cut off by the crash: no answer, outcome unknown to the client."""
    ids: dict[str, str] = field(default_factory=dict)
    """client_order_id -> the order id first answered for it."""


def order_body(rng: random.Random, client_order_id: str) -> dict[str, Any]:
    symbol = rng.choice(SYMBOLS)
    side = rng.choice(("buy", "sell"))
    body: dict[str, Any] = {
        "symbol": symbol,
        "side": side,
        "qty": float(rng.randint(1, 5)),
        "client_order_id": client_order_id,
    }
    if rng.random() < 0.4:  # resting until the marks swing across it
        body.update(type="limit", limit_price=97.0 if side == "buy" else 99.0)
    return body


def record_answer(ledger: Ledger, client_order_id: str, response: httpx.Response) -> None:
    if response.status_code in (200, 201):
        order = response.json()
        first = ledger.ids.setdefault(client_order_id, order["id"])
        assert order["id"] == first, f"{client_order_id} answered as two orders"
        ledger.acknowledged[client_order_id] = order
        ledger.unknown.discard(client_order_id)
    elif response.status_code == 403:
        assert response.json()["error"]["rule"] == "kill_switch"
        ledger.unknown.discard(client_order_id)
    else:
        raise AssertionError(f"{client_order_id}: {response.status_code} {response.text}")


async def load(base: str, ledger: Ledger, rng: random.Random, round_no: int) -> None:
    """Orders from WORKERS concurrent clients, marks swinging, until the server dies."""
    limits = httpx.Limits(max_connections=WORKERS + 2)
    async with httpx.AsyncClient(base_url=base, timeout=10, limits=limits) as client:

        async def trader(worker: int) -> None:
            for n in range(400):  # bounded: the server is killed long before
                cid = f"r{round_no}-w{worker}-{n}"
                ledger.bodies[cid] = body = order_body(rng, cid)
                ledger.unknown.add(cid)
                try:
                    response = await client.post("/api/trading/orders", json=body)
                except httpx.TransportError:
                    return
                record_answer(ledger, cid, response)

        async def market() -> None:
            for n in range(400):
                prices = {s: 96.0 if n % 2 else 100.0 for s in SYMBOLS}
                try:
                    await client.post("/api/market/prices", json=prices)
                except httpx.TransportError:
                    return
                await asyncio.sleep(0.03)

        await client.post("/api/market/prices", json=dict.fromkeys(SYMBOLS, 98.0))
        await asyncio.gather(market(), *(trader(w) for w in range(WORKERS)))


async def retry(base: str, ledger: Ledger, client_order_ids: list[str]) -> None:
    """The same requests again after a restart: the original order, never a second one."""
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        for cid in client_order_ids:
            record_answer(
                ledger, cid, await client.post("/api/trading/orders", json=ledger.bodies[cid])
            )


def journal(url: str) -> tuple[list[Order], list[Fill], bool]:
    async def read() -> tuple[list[Order], list[Fill], bool]:
        store = store_for_url(url)
        await store.open()
        try:
            history = await store.kill_switch_history()
            latched = bool(history) and history[-1].engaged
            return await store.orders(), await store.fills(), latched
        finally:
            await store.close()

    return asyncio.run(read())


def check_consistency(url: str, base: str, ledger: Ledger) -> None:
    """The journal, the recovered server and the clients' answers agree."""
    orders, fills, _ = journal(url)
    by_client_id = {o.client_order_id: o for o in orders}
    assert len(by_client_id) == len(orders), "a client order id journaled as two orders"
    filled: dict[str, float] = defaultdict(float)
    position: dict[str, float] = defaultdict(float)
    for f in fills:
        filled[f.order_id] += f.qty
        position[f.symbol] += f.qty if f.side == "buy" else -f.qty
    assert len({f.exec_id for f in fills}) == len(fills)
    with httpx.Client(base_url=base, timeout=10) as client:
        for cid, answered in ledger.acknowledged.items():
            assert cid in by_client_id, f"{cid} got a 2xx and is not in the journal"
            now = client.get(f"/api/trading/orders/status/{answered['id']}").json()
            assert (now["id"], now["client_order_id"]) == (answered["id"], cid)
        for order in orders:
            got = filled.get(order.id, 0.0)
            assert got <= order.qty + 1e-9, f"{order.client_order_id} filled beyond its qty"
            assert order.filled_qty == pytest.approx(got), order.client_order_id
            assert (order.status == "filled") == (got >= order.qty - 1e-9), order
            assert order.status not in ("pending_new", "pending_cancel"), order
        served = {p["symbol"]: p["qty"] for p in client.get("/api/trading/positions").json()}
    expected = {s: q for s, q in position.items() if abs(q) > 1e-9}
    assert served == pytest.approx(expected)


@pytest.mark.slow
def test_sigkill_under_load_loses_nothing_and_books_nothing_twice(
    database_url: str,
    tmp_path: Path,
    start_server: Callable[..., Server],
    server_env: Callable[..., dict[str, str]],
) -> None:
    rng = random.Random(SEED)
    print(f"crash test seed {SEED}")
    env = server_env(
        tmp_path,
        DATABASE_URL=database_url,
        SYNTHETIC_FEED="false",
        MAX_ORDERS_PER_MINUTE="1000000",
        MAX_POSITION_SIZE="1e12",
        PORTFOLIO_HEAT_LIMIT="1e6",
        MAX_DAILY_LOSS="-1e12",
        MAX_DRAWDOWN="1",
        PRICE_COLLAR="1",
        LOG_LEVEL="WARNING",
    )
    serve = [TRADEENGINE, "serve", "--host", "127.0.0.1", "--port", "{port}"]
    ledger = Ledger()
    latched_in_round = 1

    for round_no in range(ROUNDS):
        process, base = start_server(env, tmp_path, args=serve)
        check_consistency(url=database_url, base=base, ledger=ledger)
        # Retried after a crash: what got an answer, and what the crash cut off.
        answered = rng.sample(sorted(ledger.acknowledged), min(10, len(ledger.acknowledged)))
        if round_no == latched_in_round + 1:
            state = httpx.get(f"{base}/api/emergency/kill-switch").json()
            assert (state["engaged"], state["reason"]) == (True, "crash drill"), state
            reset = httpx.request(
                "DELETE", f"{base}/api/emergency/kill-switch", json={"reason": "drill over"}
            )
            assert reset.status_code == 200, reset.text
        asyncio.run(retry(base, ledger, answered + sorted(ledger.unknown)))

        async def round_of_load(
            round_no: int = round_no, base: str = base, process: subprocess.Popen[bytes] = process
        ) -> None:
            running = asyncio.create_task(load(base, ledger, rng, round_no))
            await asyncio.sleep(rng.uniform(0.3, 1.2))
            if round_no == latched_in_round:
                async with httpx.AsyncClient(base_url=base, timeout=10) as client:
                    engaged = await client.post(
                        "/api/emergency/kill-switch", json={"reason": "crash drill"}
                    )
                    assert engaged.status_code == 200, engaged.text
                await asyncio.sleep(rng.uniform(0.05, 0.3))
            process.send_signal(signal.SIGKILL)
            await running

        asyncio.run(round_of_load())
        process.wait(10)

    process, base = start_server(env, tmp_path, args=serve)
    check_consistency(url=database_url, base=base, ledger=ledger)
    asyncio.run(retry(base, ledger, sorted(ledger.unknown)))
    check_consistency(url=database_url, base=base, ledger=ledger)
    process.terminate()
    process.wait(15)
    fills = journal(database_url)[1]
    assert len(ledger.acknowledged) > 100, "the load did not get going"
    assert len(fills) > 50
