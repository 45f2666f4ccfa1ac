"""The SQLite journal (the default), on the standard library's sqlite3.

Writes are committed on the event loop's own thread, in line: in WAL mode with
`synchronous=NORMAL` a commit is a few page writes into the WAL file (tens of microseconds,
no fsync), cheaper than any hand-over to another thread, and a thread that has to take the
GIL back after each row is at the mercy of a busy event loop (5 ms switch interval). Before
committing, a write yields to the loop once, so that the writers who are ready join the
next batch (group commit, see store/journal.py).

What does wait on the disk runs on a background thread with a connection of its own: the
WAL checkpoints (SQLite's automatic checkpoint, which would fsync inside a commit, is off)
and the bulk reads (recovery, order listings), which WAL lets run beside the writer.

Durability: a commit is in the WAL file before the engine answers, so it survives any crash
of the process (SIGKILL included, see tests/test_crash.py); a power cut or a crash of the OS
can lose the commits since the last checkpoint, never corrupt the file. `?synchronous=full`
makes every commit wait for fsync (power-cut safe, at the price of one fsync per batch,
milliseconds on many disks, with the loop waiting). PostgreSQL is the production journal.

DATABASE_URL forms: `sqlite:///relative/path.db`, `sqlite:////absolute/path.db`,
`sqlite:///:memory:`; query parameters: `cache=shared` (SQLite's shared cache, passed on
as a URI to the writing connection), `synchronous=normal|full`, `timeout=SECONDS` (wait
for another writer, e.g. `tradeengine kill-switch` while the engine runs; default 5).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

from tradeengine.schemas import Record
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

POLL_INTERVAL = 0.2
"""How often a running engine looks for kill switch records written by another process."""
CHECKPOINT_EVERY = 5_000
"""Records written between two WAL checkpoints (a few MB of WAL)."""

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
            raise StoreError(f"DATABASE_URL: synchronous={synchronous!r}: use normal or full")
        self.synchronous = _SYNCHRONOUS[synchronous]
        try:
            self.timeout = float(params.pop("timeout", "5"))
        except ValueError:
            raise StoreError("DATABASE_URL: timeout must be a number of seconds") from None
        self.uri_params = params
        """What is passed on to SQLite as URI parameters (cache=shared, mode...)."""
        self._conn: sqlite3.Connection | None = None
        self._background: ThreadPoolExecutor | None = None
        self._reader: sqlite3.Connection | None = None
        """The background thread's connection (owned by that thread)."""
        self._unchecked = 0
        self._checkpoint: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"

    # ---- life cycle --------------------------------------------------------------------

    async def open(self) -> None:
        if self._conn is not None:
            return
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
        try:
            if not self.memory:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA wal_autocheckpoint=0")
                self._background = ThreadPoolExecutor(1, thread_name_prefix="sqlite-journal")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            self._migrate(conn)
            await self._after_migrations()
        except BaseException:
            await self.close()
            raise
        log.info("journal: SQLite %s (synchronous=%s)", self.path, self.synchronous)

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
        if self._checkpoint is not None:
            with contextlib.suppress(Exception):
                await self._checkpoint
            self._checkpoint = None
        background, self._background = self._background, None
        if background is not None:
            await asyncio.get_running_loop().run_in_executor(background, self._close_reader)
            background.shutdown(wait=True)
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()  # the last connection out checkpoints the WAL into the file

    def _close_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    # ---- primitives --------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("the SQLite journal is not open")
        return self._conn

    async def write(self, records: Sequence[Record]) -> None:
        await asyncio.sleep(0)  # who is ready now joins the next batch, not a batch of one
        await super().write(records)
        self._unchecked += len(records)
        if self._unchecked >= CHECKPOINT_EVERY and self._checkpoint is None:
            self._start_checkpoint()

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._connection().execute(sql, params).fetchall()

    async def _fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        if self._background is None:
            return await self._fetch(sql, params)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._background, self._read, sql, params)

    def _reading(self) -> sqlite3.Connection:
        """The background thread's connection, opened there on first use. It never takes
        part in SQLite's shared cache, where readers and the writer would lock each other."""
        if self._reader is None:
            self._reader = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        return self._reader

    def _read(self, sql: str, params: Sequence[Any]) -> list[Row]:
        return self._reading().execute(sql, params).fetchall()

    def _start_checkpoint(self) -> None:
        if self._background is None:
            return
        self._unchecked = 0
        loop = asyncio.get_running_loop()
        self._checkpoint = loop.run_in_executor(self._background, self._checkpoint_now)
        self._checkpoint.add_done_callback(self._checkpoint_done)

    def _checkpoint_now(self) -> None:
        # PASSIVE: copies what no reader still needs, never blocks the writer.
        self._reading().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _checkpoint_done(self, future: asyncio.Future[None]) -> None:
        self._checkpoint = None
        if not future.cancelled() and future.exception() is not None:
            log.warning("journal: WAL checkpoint failed (retried later): %s", future.exception())

    async def _transaction(self, steps: Sequence[Step]) -> list[int]:
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

    async def size(self) -> int | None:
        if self.memory:
            [(pages,)] = await self._fetch("PRAGMA page_count")
            [(page_size,)] = await self._fetch("PRAGMA page_size")
            return int(pages) * int(page_size)
        total = 0
        for path in (self.path, f"{self.path}-wal"):
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(path).st_size
        return total

    async def _wait_for_kill_switch(self, timeout: float) -> None:
        await asyncio.sleep(min(timeout, POLL_INTERVAL))

    def _is_unique_violation(self, exc: Exception) -> bool:
        return isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc)
