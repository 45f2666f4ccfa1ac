"""The SQLite journal (the default): the standard library's sqlite3 on one thread of its own.

One connection, owned by one thread, does every read and write: SQLite has one writer at a
time anyway, the event loop never blocks on disk, sqlite3 releases the GIL while SQLite
works (the engine runs on while a batch is committed), and the writes that pile up during a
commit go together in the next one (group commit, see store/journal.py).

WAL mode with `synchronous=NORMAL` by default: a commit is in the WAL file before the engine
answers, so it survives any crash of the process (SIGKILL included, see
tests/test_crash.py); a power cut or a crash of the OS can lose the commits since the last
checkpoint, never corrupt the file. `?synchronous=full` makes every commit wait for fsync
(power-cut safe, at the price of one fsync per batch: milliseconds on many disks).
PostgreSQL is the production journal.

DATABASE_URL forms: `sqlite:///relative/path.db`, `sqlite:////absolute/path.db`,
`sqlite:///:memory:`; query parameters: `cache=shared` (SQLite's shared cache, passed on
as a URI), `synchronous=normal|full`, `timeout=SECONDS` (wait for another writer, e.g.
`tradeengine kill-switch` while the engine runs; default 5).
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import urllib.parse
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from tradeengine.store.base import StoreError
from tradeengine.store.schema import CREATE_MIGRATIONS_TABLE, Dialect
from tradeengine.store.sql import (
    SELECT_MIGRATIONS,
    Row,
    SqlStore,
    Step,
    log,
    migration_steps,
    pending_migrations,
)

T = TypeVar("T")

POLL_INTERVAL = 0.2
"""How often a running engine looks for kill switch records written by another process."""

_SYNCHRONOUS = {"full": "FULL", "normal": "NORMAL"}


class SqliteStore(SqlStore):
    dialect: ClassVar[Dialect] = "sqlite"

    def __init__(self, url: str) -> None:
        super().__init__()
        scheme, sep, rest = url.partition("://")
        if scheme != "sqlite" or not sep:
            raise StoreError(f"not a SQLite URL: {url!r}")
        location, _, query = rest.partition("?")
        params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        # sqlite:///relative.db -> "relative.db"; sqlite:////abs.db -> "/abs.db"
        path = location[1:] if location.startswith("/") else location
        self.memory = path in ("", ":memory:")
        self.path = ":memory:" if self.memory else path
        synchronous = params.pop("synchronous", "normal").lower()
        if synchronous not in _SYNCHRONOUS:
            raise StoreError(f"DATABASE_URL: synchronous={synchronous!r}: use full or normal")
        self.synchronous = _SYNCHRONOUS[synchronous]
        try:
            self.timeout = float(params.pop("timeout", "5"))
        except ValueError:
            raise StoreError("DATABASE_URL: timeout must be a number of seconds") from None
        self.uri_params = params
        """What is passed on to SQLite as URI parameters (cache=shared, mode...)."""
        self._conn: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._thread is None:
            raise StoreError("the SQLite journal is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, functools.partial(fn, *args))

    # ---- life cycle --------------------------------------------------------------------

    async def open(self) -> None:
        if self._thread is not None:
            return
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-journal")
        try:
            await self._call(self._open)
            await self._after_migrations()
        except BaseException:
            await self.close()
            raise
        log.info("journal: SQLite %s (synchronous=%s)", self.path, self.synchronous)

    def _open(self) -> None:
        if self.uri_params:
            query = urllib.parse.urlencode(self.uri_params)
            target = f"file:{urllib.parse.quote(self.path)}?{query}"
        else:
            target = self.path
        if not self.memory:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(
                target, uri=bool(self.uri_params), timeout=self.timeout, isolation_level=None
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the SQLite journal {self.path!r}: {exc}") from exc
        self._conn = conn
        if not self.memory:
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        self._migrate(conn)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        # BEGIN IMMEDIATE takes the write lock first: two processes opening a new journal at
        # once (the engine and the CLI) apply the migrations once, one after the other.
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(CREATE_MIGRATIONS_TABLE)
            applied = {v for (v,) in conn.execute(SELECT_MIGRATIONS)}
            for migration in pending_migrations(applied):
                log.info("journal: applying migration %d (%s)", migration.version, migration.name)
                for sql, rows in migration_steps(migration, self.dialect):
                    if rows:
                        conn.executemany(sql, rows)
                    else:
                        conn.execute(sql)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(thread, conn.close)
        thread.shutdown(wait=True)

    # ---- primitives --------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("the SQLite journal is not open")
        return self._conn

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return await self._call(self._fetch_now, sql, params)

    def _fetch_now(self, sql: str, params: Sequence[Any]) -> list[Row]:
        return self._connection().execute(sql, params).fetchall()

    async def _transaction(self, steps: Sequence[Step]) -> list[int]:
        return await self._call(self._transaction_now, steps)

    def _transaction_now(self, steps: Sequence[Step]) -> list[int]:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            counts = [conn.executemany(sql, rows).rowcount for sql, rows in steps]
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return counts

    async def _wait_for_kill_switch(self, timeout: float) -> None:
        await asyncio.sleep(min(timeout, POLL_INTERVAL))

    def _is_unique_violation(self, exc: Exception) -> bool:
        return isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc)
