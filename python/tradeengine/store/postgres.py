"""The PostgreSQL journal: psycopg 3 (async, pipelined executemany) with psycopg_pool.

DATABASE_URL: `postgresql://user:password@host:5432/dbname` (or `postgres://`), any libpq
URI parameter (sslmode=...), plus `pool_size=N`: at most N connections (default 5). The
URL is only ever logged with its password replaced by ***.

A running engine hears about kill switch records written by others (`tradeengine
kill-switch`) through LISTEN/NOTIFY: a trigger on the kill_switch table notifies
`tradeengine_kill_switch` on every insert.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from collections.abc import Sequence
from typing import Any, ClassVar

import psycopg
import psycopg.errors
from psycopg_pool import AsyncConnectionPool

from tradeengine.settings import redact_url
from tradeengine.store.base import StoreError
from tradeengine.store.schema import CREATE_MIGRATIONS_TABLE, KILL_SWITCH_CHANNEL, Dialect
from tradeengine.store.sql import (
    SELECT_MIGRATIONS,
    Row,
    SqlStore,
    Step,
    log,
    migration_steps,
    pending_migrations,
)

DEFAULT_POOL_SIZE = 5
CONNECT_TIMEOUT = 10.0
MIGRATION_LOCK = 0x7472_6164_6565  # any constant: serialises migrations across processes


def _placeholders(sql: str) -> str:
    return sql.replace("?", "%s")


class PostgresStore(SqlStore):
    dialect: ClassVar[Dialect] = "postgresql"

    def __init__(self, url: str) -> None:
        super().__init__()
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres"):
            raise StoreError(f"not a PostgreSQL URL: {redact_url(url)}")
        params = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        pool_size = [v for k, v in params if k == "pool_size"]
        try:
            self.pool_size = int(pool_size[-1]) if pool_size else DEFAULT_POOL_SIZE
        except ValueError:
            raise StoreError("DATABASE_URL: pool_size must be a whole number") from None
        if self.pool_size < 1:
            raise StoreError("DATABASE_URL: pool_size must be at least 1")
        query = urllib.parse.urlencode([(k, v) for k, v in params if k != "pool_size"])
        self.conninfo = urllib.parse.urlunsplit(parts._replace(query=query))
        self.redacted = redact_url(self.conninfo)
        self._secrets = [
            p for p in {parts.password, urllib.parse.unquote(parts.password or "")} if p
        ]
        self._pool: AsyncConnectionPool | None = None
        self._listener: psycopg.AsyncConnection[Row] | None = None
        self._sql: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"PostgresStore({self.redacted!r})"

    def _safe(self, exc: Exception) -> str:
        """The error's text without the password, should the driver have quoted the URL."""
        text = str(exc)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _q(self, sql: str) -> str:
        converted = self._sql.get(sql)
        if converted is None:
            converted = self._sql[sql] = _placeholders(sql)
        return converted

    # ---- life cycle --------------------------------------------------------------------

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            # One plain connection first: a wrong URL fails at once with the server's reason,
            # where the pool would retry in the background until its timeout.
            probe = await psycopg.AsyncConnection.connect(
                self.conninfo, connect_timeout=int(CONNECT_TIMEOUT)
            )
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot connect to the PostgreSQL journal {self.redacted}: {self._safe(exc)}"
            ) from None
        await probe.close()
        pool = AsyncConnectionPool(
            self.conninfo,
            min_size=min(2, self.pool_size),
            max_size=self.pool_size,
            open=False,
            timeout=CONNECT_TIMEOUT,
            name="tradeengine-journal",
        )
        try:
            await pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        except Exception as exc:
            await pool.close()
            raise StoreError(
                f"cannot connect to the PostgreSQL journal {self.redacted}: {self._safe(exc)}"
            ) from None
        self._pool = pool
        try:
            await self._migrate()
            await self._after_migrations()
        except BaseException:
            await self.close()
            raise
        log.info("journal: PostgreSQL %s (pool_size=%d)", self.redacted, self.pool_size)

    async def _migrate(self) -> None:
        async with self._connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await conn.execute(CREATE_MIGRATIONS_TABLE)
            cursor = await conn.execute(SELECT_MIGRATIONS)
            applied = {v for (v,) in await cursor.fetchall()}
            for migration in pending_migrations(applied):
                log.info("journal: applying migration %d (%s)", migration.version, migration.name)
                for sql, rows in migration_steps(migration, self.dialect):
                    if rows:
                        async with conn.cursor() as cur:
                            await cur.executemany(self._q(sql), rows)
                    else:
                        await conn.execute(sql)

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def _connection(self) -> contextlib.AbstractAsyncContextManager[psycopg.AsyncConnection[Row]]:
        if self._pool is None:
            raise StoreError("the PostgreSQL journal is not open")
        return self._pool.connection()

    # ---- primitives --------------------------------------------------------------------

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        async with self._connection() as conn:
            cursor = await conn.execute(self._q(sql), params)
            return await cursor.fetchall()

    async def _transaction(self, steps: Sequence[Step]) -> list[int]:
        counts = []
        async with self._connection() as conn, conn.transaction(), conn.cursor() as cur:
            for sql, rows in steps:
                await cur.executemany(self._q(sql), rows)
                counts.append(cur.rowcount)
        return counts

    async def size(self) -> int | None:
        [(size,)] = await self._fetch("SELECT pg_database_size(current_database())")
        return int(size)

    async def _wait_for_kill_switch(self, timeout: float) -> None:
        """Returns on a NOTIFY from the kill_switch trigger, or after `timeout` seconds.
        Without a listening connection (the server went away) it waits and retries."""
        try:
            if self._listener is None:
                self._listener = await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True
                )
                await self._listener.execute(f"LISTEN {KILL_SWITCH_CHANNEL}")
            async for _ in self._listener.notifies(timeout=timeout, stop_after=1):
                pass
        except psycopg.Error as exc:
            log.warning("journal: kill switch listener lost (%s); retrying", self._safe(exc))
            lost, self._listener = self._listener, None
            if lost is not None:
                with contextlib.suppress(psycopg.Error):
                    await lost.close()
            await asyncio.sleep(timeout)

    def _is_unique_violation(self, exc: Exception) -> bool:
        return isinstance(exc, psycopg.errors.UniqueViolation)
