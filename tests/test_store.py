"""The journal on SQLite and on a real PostgreSQL server: every test runs against both."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest

from tradeengine.schemas import (
    AuditRecord,
    ConfigRecord,
    Fill,
    FillRecord,
    KillSwitchRecord,
    Order,
    OrderRecord,
    Record,
    RejectionRecord,
    TokenRecord,
)
from tradeengine.store import (
    AccountSnapshot,
    Journal,
    MemoryStore,
    Store,
    StoreError,
    store_for_url,
)
from tradeengine.store.postgres import PostgresStore
from tradeengine.store.schema import MIGRATIONS
from tradeengine.store.sqlite import SqliteStore

T = TypeVar("T")


def run(url: str, test: Callable[[Store], Awaitable[T]]) -> T:
    """Runs `test` against an opened store for `url`, then closes it."""

    async def main() -> T:
        store = store_for_url(url)
        await store.open()
        try:
            return await test(store)
        finally:
            await store.close()

    return asyncio.run(main())


def order(n: int = 1, **changes: Any) -> Order:
    base = Order(
        id=f"order-{n}",
        client_order_id=f"client-{n}",
        symbol="AAPL",
        side="buy",
        type="limit",
        qty=10,
        limit_price=100.0,
        created_at=f"2026-01-05T15:00:{n % 60:02d}.000001Z",
        updated_at=f"2026-01-05T15:00:{n % 60:02d}.000001Z",
    )
    return msgspec.structs.replace(base, **changes)


def fill(exec_id: str, o: Order, qty: float = 5, price: float = 99.5) -> Fill:
    return Fill(
        exec_id=exec_id,
        order_id=o.id,
        client_order_id=o.client_order_id,
        symbol=o.symbol,
        side=o.side,
        qty=qty,
        price=price,
        fee=0.25,
        at="2026-01-05T15:01:00.000001Z",
    )


def test_orders_keep_every_transition_and_the_latest_snapshot(database_url: str) -> None:
    async def test(store: Store) -> None:
        placed = order(1, status="pending_new")
        acked = msgspec.structs.replace(
            placed, status="new", broker_order_id="b-1", updated_at="2026-01-05T15:00:02Z"
        )
        await store.write([OrderRecord(placed), OrderRecord(acked)])
        part = fill("e-1", placed)
        partly = msgspec.structs.replace(
            acked,
            status="partially_filled",
            filled_qty=5,
            filled_avg_price=99.5,
            updated_at=part.at,
        )
        other = order(2, side="sell", stop_loss=120.0)
        await store.write([FillRecord(part), OrderRecord(partly), OrderRecord(other)])

        assert await store.get_order(placed.id) == partly
        assert await store.find_order("client-1") == partly
        assert await store.get_order("nope") is None
        assert await store.find_order("nope") is None
        assert await store.orders() == [partly, other]
        assert await store.fills() == [part]
        history = await store.order_history(placed.id)
        assert [(o.status, o.updated_at) for o in history] == [
            ("pending_new", placed.updated_at),
            ("new", "2026-01-05T15:00:02Z"),
            ("partially_filled", part.at),
        ]

    run(database_url, test)


def test_a_fill_is_journaled_once_per_exec_id(database_url: str) -> None:
    async def test(store: Store) -> None:
        o = order(1)
        first = fill("exec-1", o)
        await store.write([OrderRecord(o), FillRecord(first), FillRecord(first)])
        await store.write([FillRecord(msgspec.structs.replace(first, qty=99.0))])
        await store.write([FillRecord(fill("exec-2", o, qty=1))])
        assert [(f.exec_id, f.qty) for f in await store.fills()] == [("exec-1", 5), ("exec-2", 1)]
        state = await store.load()
        assert state.exec_ids == ["exec-1", "exec-2"]
        assert state.fills == [
            ("client-1", "AAPL", "buy", 5.0, 99.5, 0.25),
            ("client-1", "AAPL", "buy", 1.0, 99.5, 0.25),
        ]

    run(database_url, test)


def test_a_write_is_all_or_nothing(database_url: str) -> None:
    async def test(store: Store) -> None:
        await store.write([OrderRecord(order(1))])
        clash = order(2, client_order_id="client-1")  # the database refuses a reused id
        with pytest.raises(Exception, match=r"(?i)unique"):
            await store.write([FillRecord(fill("exec-9", order(1))), OrderRecord(clash)])
        assert await store.fills() == []
        assert await store.get_order("order-2") is None
        await store.write([OrderRecord(order(3))])
        assert [o.id for o in await store.orders()] == ["order-1", "order-3"]

    run(database_url, test)


def test_every_record_kind_round_trips_and_recovery_reads_it_back(database_url: str) -> None:
    async def test(store: Store) -> None:
        resting = order(1, status="new")
        done = order(2, status="filled", filled_qty=10, stop_loss=90.0)
        canceled = order(3, status="canceled")
        kill = KillSwitchRecord(engaged=True, actor="ops", reason="drill", at="2026-01-05T15:02Z")
        reset = KillSwitchRecord(engaged=False, actor="admin", reason="ok", at="2026-01-05T15:03Z")
        risk = ConfigRecord(kind="risk", values={"max_drawdown": 0.2}, actor="ops", at="t1")
        reduce = ConfigRecord(kind="reduce_only", values={"enabled": True}, actor="ops", at="t2")
        audits = [
            AuditRecord(actor="ops", action=f"action-{i}", reason="r", detail={"i": i}, at="t")
            for i in range(3)
        ]
        rejection = RejectionRecord(
            client_order_id="client-9",
            symbol="AAPL",
            side="buy",
            qty=1,
            rule="throttle",
            reason="too many",
            actor="api",
            at="t",
        )
        records: list[Record] = [
            OrderRecord(resting),
            OrderRecord(done),
            OrderRecord(canceled),
            FillRecord(fill("exec-1", done, qty=10)),
            kill,
            reset,
            risk,
            reduce,
            rejection,
            *audits,
        ]
        await store.write(records)
        account = AccountSnapshot(
            peak_equity=101_000.0, day=20458, day_start_equity=100_500.0, marks={"AAPL": 101.5}
        )
        await store.save_account(account)
        await store.save_account(msgspec.structs.replace(account, peak_equity=102_000.0))

        assert await store.kill_switch_history() == [kill, reset]
        assert [a.action for a in await store.audit(2)] == ["action-2", "action-1"]
        assert (await store.audit(10))[-1] == audits[0]
        assert await store.audit(0) == []
        state = await store.load()
        # open orders, and finished ones whose stop loss the replayed book must see
        assert state.orders_to_restore == [resting, done]
        assert sorted(state.client_order_ids) == ["client-1", "client-2", "client-3"]
        assert state.kill_switch == [kill, reset]
        assert state.config == [risk, reduce]
        assert state.account == msgspec.structs.replace(account, peak_equity=102_000.0)

    run(database_url, test)


def test_tokens_are_unique_by_name_among_active_ones(database_url: str) -> None:
    async def test(store: Store) -> None:
        first = TokenRecord(name="ci", role="trader", token_hash="h1", created_at="t1")
        await store.save_token(first)
        with pytest.raises(ValueError, match="'ci' exists already"):
            await store.save_token(
                TokenRecord(name="ci", role="admin", token_hash="h2", created_at="t2")
            )
        assert await store.revoke_token("ci", "t3")
        assert not await store.revoke_token("ci", "t4")
        assert not await store.revoke_token("nobody", "t4")
        second = TokenRecord(name="ci", role="admin", token_hash="h2", created_at="t5")
        await store.save_token(second)
        assert await store.tokens() == [msgspec.structs.replace(first, revoked_at="t3"), second]

    run(database_url, test)


def test_migrations_are_applied_once_and_a_newer_schema_is_refused(database_url: str) -> None:
    async def versions(store: Store) -> list[int]:
        assert isinstance(store, SqliteStore | PostgresStore)
        return [v for (v,) in await store._fetch("SELECT version FROM schema_migrations")]

    async def write_one(store: Store) -> None:
        await store.write([OrderRecord(order(1))])

    run(database_url, write_one)
    assert run(database_url, versions) == [m.version for m in MIGRATIONS]
    assert run(database_url, versions) == [m.version for m in MIGRATIONS]

    async def orders(store: Store) -> list[Order]:
        return await store.orders()

    assert run(database_url, orders) == [order(1)]

    async def from_the_future(store: Store) -> None:
        assert isinstance(store, SqliteStore | PostgresStore)
        await store._transaction(
            [("INSERT INTO schema_migrations VALUES (?, ?, ?)", [(999, "future", "t")])]
        )

    run(database_url, from_the_future)
    with pytest.raises(StoreError, match="version 999, newer than this tradeengine"):
        run(database_url, orders)


def test_the_journal_groups_concurrent_writes_up_to_batch_size(database_url: str) -> None:
    batches: list[int] = []

    class Counting:
        def __init__(self, store: Store) -> None:
            self.store = store

        async def write(self, records: Sequence[Record]) -> None:
            batches.append(len(records))
            await self.store.write(records)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.store, name)

    async def test(store: Store) -> None:
        journal = Journal(Counting(store), batch_size=40)
        orders = [order(n) for n in range(250)]
        await asyncio.gather(*(journal.append(OrderRecord(o)) for o in orders))
        assert sum(batches) == 250
        assert max(batches) <= 40
        assert len(batches) < 250 / 10  # grouped, not one transaction per order
        assert await store.orders() == orders

    run(database_url, test)


def test_kill_switch_changes_written_by_another_process_are_seen(database_url: str) -> None:
    async def test(engine_store: Store) -> None:
        assert await engine_store.kill_switch_changes(0, 0.05) == []
        cli_store = store_for_url(database_url)
        await cli_store.open()
        record = KillSwitchRecord(engaged=True, actor="ops", reason="cli", at="t")
        waiting = asyncio.create_task(engine_store.kill_switch_changes(0, 30.0))
        await asyncio.sleep(0.3)
        started = time.monotonic()
        await cli_store.write([record])
        await cli_store.close()
        changes = await waiting
        # Woken by NOTIFY (PostgreSQL) or the next poll (SQLite), not by the 30 s timeout.
        assert time.monotonic() - started < 5
        assert changes == [(changes[0][0], record)]
        assert await engine_store.kill_switch_changes(changes[0][0], 0.05) == []

    run(database_url, test)


def test_the_password_in_the_url_is_never_logged(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    password = postgres_url.split(":")[2].split("@")[0]
    caplog.set_level(logging.DEBUG)

    async def opened(store: Store) -> str:
        return repr(store)

    assert password not in run(postgres_url + "?pool_size=3", opened)
    wrong = postgres_url.replace(password, "not-the-password")
    with pytest.raises(StoreError) as raised:
        run(wrong, opened)
    assert "password authentication failed" in str(raised.value)
    assert "not-the-password" not in str(raised.value)
    assert password not in caplog.text
    assert "not-the-password" not in caplog.text


def test_postgres_url_parameters() -> None:
    store = store_for_url(
        "postgresql://u:pw@db.internal:5433/trading_db?pool_size=20&sslmode=disable"
    )
    assert isinstance(store, PostgresStore)
    assert store.pool_size == 20
    assert store.conninfo == "postgresql://u:pw@db.internal:5433/trading_db?sslmode=disable"
    assert (
        repr(store)
        == "PostgresStore('postgresql://u:***@db.internal:5433/trading_db?sslmode=disable')"
    )
    with pytest.raises(StoreError, match="pool_size must be a whole number"):
        store_for_url("postgresql://u@h/db?pool_size=many")
    with pytest.raises(StoreError, match="use sqlite:/// or postgresql://"):
        store_for_url("mysql://u:secret@h/db")


def test_sqlite_url_forms_and_shared_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    async def write_one(store: Store) -> None:
        await store.write([OrderRecord(order(1))])

    run("sqlite:///trading_platform.db?cache=shared", write_one)
    run(f"sqlite:///{tmp_path}/deeper/journal.db", write_one)
    for path in (tmp_path / "trading_platform.db", tmp_path / "deeper" / "journal.db"):
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert conn.execute("SELECT count(*) FROM orders").fetchone() == (1,)
    store = store_for_url("sqlite:///trading_platform.db?cache=shared&synchronous=full")
    assert isinstance(store, SqliteStore)
    assert (store.path, store.uri_params, store.synchronous) == (
        "trading_platform.db",
        {"cache": "shared"},
        "FULL",
    )
    with pytest.raises(StoreError, match="synchronous"):
        store_for_url("sqlite:///x.db?synchronous=sometimes")


def test_recent_orders_reads_newest_first_and_only_what_it_needs(database_url: str) -> None:
    async def test(store: Store) -> None:
        records: list[Any] = []
        for n in range(1, 501):
            symbol = "MSFT" if n % 10 == 0 else "AAPL"
            status = "new" if n % 3 == 0 else "filled"
            records.append(OrderRecord(order(n, symbol=symbol, status=status)))
        await store.write(records)
        newest = await store.recent_orders(5)
        assert [o.id for o in newest] == [f"order-{n}" for n in (500, 499, 498, 497, 496)]
        closed = await store.recent_orders(4, closed=True)
        assert [o.id for o in closed] == [f"order-{n}" for n in (500, 499, 497, 496)]
        msft = await store.recent_orders(30, symbols=frozenset({"MSFT"}))
        assert [o.id for o in msft] == [f"order-{n}" for n in range(500, 200, -10)]
        assert len(await store.recent_orders(1000)) == 500

    run(database_url, test)


def test_memory_store_recent_orders_agree() -> None:
    async def main() -> None:
        store = MemoryStore()
        await store.write([OrderRecord(order(n, status="filled")) for n in range(1, 4)])
        assert [o.id for o in await store.recent_orders(2)] == ["order-3", "order-2"]

    asyncio.run(main())
