"""Recovery speed: the time from a new `Engine` to ready (start() returned: journal opened,
book rebuilt, ids remembered, latch and config restored, resting orders back) on a SQLite
journal of 1,000,000 fills. Goal: <= 5 s.

The journal is written through the store's own batch path before the clock starts: one
market order per fill (two snapshots each, pending_new and filled) over 50 symbols, 1,000
resting limit orders, a kill switch engaged then reset, and a few config changes.

`make bench` measures N = 1,000,000 (about a minute to build the journal). With
--benchmark-disable (CI) N is 2,000: the path is exercised, not timed. Prints the figure and
its conditions; asserts only that the state came back.
"""

from __future__ import annotations

import asyncio
import os
import platform
from pathlib import Path

import msgspec
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from tradeengine.engine import Engine
from tradeengine.schemas import (
    ConfigRecord,
    Fill,
    FillRecord,
    KillSwitchRecord,
    Order,
    OrderRecord,
    Record,
    Side,
)
from tradeengine.settings import Settings, load_settings
from tradeengine.store import open_store

FILLS = 1_000_000
FILLS_WHEN_DISABLED = 2_000
RESTING = 1_000
SYMBOLS = [f"SYM{i}" for i in range(50)]
CHUNK = 20_000
AT = "2026-01-05T15:00:00.000001Z"


def journal_records(fills: int) -> list[list[Record]]:
    """The journal, in write batches of CHUNK orders."""
    batches: list[list[Record]] = []
    batch: list[Record] = []
    for n in range(fills + RESTING):
        symbol = SYMBOLS[n % len(SYMBOLS)]
        side: Side = "buy" if (n // len(SYMBOLS)) % 2 == 0 else "sell"
        resting = n >= fills
        order = Order(
            id=f"order-{n}",
            client_order_id=f"client-{n}",
            symbol=symbol,
            side=side,
            type="limit" if resting else "market",
            qty=1.0,
            limit_price=1.0 if resting else None,
            created_at=AT,
            updated_at=AT,
        )
        if resting:
            batch.append(OrderRecord(msgspec.structs.replace(order, status="new")))
        else:
            price = 100.0 + n % 7
            batch.append(OrderRecord(order))
            batch.append(
                FillRecord(
                    Fill(
                        exec_id=f"exec-{n}",
                        order_id=order.id,
                        client_order_id=order.client_order_id,
                        symbol=symbol,
                        side=side,
                        qty=1.0,
                        price=price,
                        at=AT,
                    )
                )
            )
            batch.append(
                OrderRecord(
                    msgspec.structs.replace(
                        order, status="filled", filled_qty=1.0, filled_avg_price=price
                    )
                )
            )
        if len(batch) >= CHUNK * 3:
            batches.append(batch)
            batch = []
    batch += [
        KillSwitchRecord(engaged=True, actor="ops", reason="drill", at=AT),
        KillSwitchRecord(engaged=False, actor="admin", reason="drill over", at=AT),
        ConfigRecord(kind="risk", values={"max_position_size": 1e15}, actor="ops", at=AT),
        ConfigRecord(kind="throttle", values={"max_orders_per_minute": 6000}, actor="ops", at=AT),
    ]
    batches.append(batch)
    return batches


def settings(path: Path) -> Settings:
    return load_settings(
        {
            "DATABASE_URL": f"sqlite:///{path}",
            "SYNTHETIC_FEED": "false",
            "SHUTDOWN_CANCEL_ORDERS": "false",
            "MAX_POSITION_SIZE": "1e15",
            "PORTFOLIO_HEAT_LIMIT": "1e9",
            "MAX_DAILY_LOSS": "-1e15",
            "MAX_DRAWDOWN": "1",
            "MAX_ORDERS_PER_MINUTE": "6000",
            "LOG_LEVEL": "WARNING",
        },
        dotenv=None,
    )


async def build(config: Settings, fills: int) -> None:
    store = open_store(config)
    await store.open()
    try:
        for batch in journal_records(fills):
            await store.write(batch)
    finally:
        await store.close()


def test_time_to_ready_after_a_million_fills(
    benchmark: BenchmarkFixture, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fills = FILLS if benchmark.enabled else FILLS_WHEN_DISABLED
    path = tmp_path / "journal.db"
    config = settings(path)
    asyncio.run(build(config, fills))
    loop = asyncio.new_event_loop()
    engines: list[Engine] = []

    def ready() -> None:
        engine = Engine(config, store=open_store(config))
        engines.append(engine)
        loop.run_until_complete(engine.start())

    def stop() -> None:
        loop.run_until_complete(engines[-1].stop())

    try:
        benchmark.pedantic(ready, teardown=stop, rounds=3, iterations=1)
        engine = engines[-1]
        # Every order filled once, alternating buy and sell per symbol: the book is as journaled.
        assert len(engine._exec_ids) == fills
        assert len(engine.open_orders) == RESTING
        assert not engine.kill_switch_state().engaged
        assert engine.throttle_config().max_orders_per_minute == 6000
    finally:
        if engines and engines[-1].accepting:
            stop()
        loop.close()
    size = sum(f.stat().st_size for f in tmp_path.iterdir()) / 1e6
    stats = benchmark.stats
    median = f"{stats.stats.median:.3f} s" if stats is not None else "not timed (disabled)"
    benchmark.extra_info.update(fills=fills, journal_mb=round(size, 1))
    with capsys.disabled():
        print(
            f"\nrecovery: {fills:,} fills + {RESTING:,} resting orders, SQLite journal "
            f"{size:.0f} MB, time to ready median {median} ({os.cpu_count()} cores, "
            f"{platform.processor() or platform.machine()}, Python {platform.python_version()})"
        )
