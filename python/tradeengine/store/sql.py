"""The journal in SQL: everything SQLite and PostgreSQL share.

`SqlStore` implements the whole Store protocol on top of three primitives that each backend
provides: `_fetch` (one query), `_transaction` (statements run with executemany, all in one
transaction) and `_wait_for_kill_switch` (a poll interval for SQLite, LISTEN/NOTIFY for
PostgreSQL). SQL is written once with `?` placeholders; the PostgreSQL backend rewrites them.

A write is one transaction of at most a few executemany calls whatever the number of
records, so the per-record cost is building one tuple (and one msgspec encode per order).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, ClassVar, cast

import msgspec

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
    utc_now,
)
from tradeengine.store.base import (
    AccountSnapshot,
    JournalState,
    KillSwitchChange,
    ReplayFill,
    StoreError,
)
from tradeengine.store.schema import MIGRATIONS, Dialect, Migration

log = logging.getLogger("tradeengine.store")

Row = tuple[Any, ...]
Step = tuple[str, Sequence[Sequence[Any]]]
"""A statement and the parameter rows it is executed with (executemany)."""

_encode = msgspec.json.Encoder().encode
_decode_order = msgspec.json.Decoder(Order).decode
_decode_account = msgspec.json.Decoder(AccountSnapshot).decode
_decode_object = msgspec.json.Decoder(dict[str, Any]).decode

INSERT_TRANSITION = (
    "INSERT INTO order_transitions (seq, order_id, status, at, body) VALUES (?, ?, ?, ?, ?)"
)
UPSERT_ORDER = (
    "INSERT INTO orders (id, client_order_id, status, is_open, filled_qty, stop_loss,"
    " first_seq, last_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (id) DO UPDATE SET status = excluded.status, is_open = excluded.is_open,"
    " filled_qty = excluded.filled_qty, stop_loss = excluded.stop_loss,"
    " last_seq = excluded.last_seq"
)
INSERT_FILL = (
    "INSERT INTO fills (exec_id, order_id, client_order_id, symbol, side, qty, price, fee, at,"
    " liquidation) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (exec_id) DO NOTHING"
)
INSERT_REJECTION = (
    "INSERT INTO rejections (client_order_id, symbol, side, qty, rule, reason, actor, at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_KILL_SWITCH = "INSERT INTO kill_switch (engaged, actor, reason, at) VALUES (?, ?, ?, ?)"
INSERT_CONFIG = "INSERT INTO config (kind, changes, actor, at) VALUES (?, ?, ?, ?)"
INSERT_AUDIT = "INSERT INTO audit (actor, action, reason, detail, at) VALUES (?, ?, ?, ?, ?)"
INSERT_TOKEN = (
    "INSERT INTO tokens (name, role, token_hash, created_at, revoked_at) VALUES (?, ?, ?, ?, ?)"
)
REVOKE_TOKEN = "UPDATE tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL"
UPSERT_ACCOUNT = (
    "INSERT INTO account (id, body) VALUES (1, ?)"
    " ON CONFLICT (id) DO UPDATE SET body = excluded.body"
)
INSERT_MIGRATION = "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)"

LATEST = "SELECT t.body FROM orders o JOIN order_transitions t ON t.seq = o.last_seq"
SELECT_ORDER = LATEST + " WHERE o.id = ?"
SELECT_ORDER_BY_CLIENT_ID = LATEST + " WHERE o.client_order_id = ?"
SELECT_ORDERS = LATEST + " ORDER BY o.first_seq"
SELECT_RECENT_ORDERS = LATEST + " ORDER BY o.first_seq DESC LIMIT ? OFFSET ?"
SELECT_RECENT_CLOSED_ORDERS = (
    LATEST + " WHERE o.is_open = 0 ORDER BY o.first_seq DESC LIMIT ? OFFSET ?"
)
SELECT_ORDERS_TO_RESTORE = (
    LATEST + " WHERE o.is_open = 1 OR o.stop_loss IS NOT NULL ORDER BY o.first_seq"
)
SELECT_ORDER_HISTORY = "SELECT body FROM order_transitions WHERE order_id = ? ORDER BY seq"
SELECT_CLIENT_ORDER_IDS = "SELECT client_order_id FROM orders"
SELECT_FILLS = (
    "SELECT exec_id, order_id, client_order_id, symbol, side, qty, price, fee, at, liquidation"
    " FROM fills ORDER BY seq"
)
SELECT_REPLAY_FILLS = (
    "SELECT client_order_id, symbol, side, qty, price, fee FROM fills ORDER BY seq"
)
SELECT_EXEC_IDS = "SELECT exec_id FROM fills"
SELECT_KILL_SWITCH = (
    "SELECT seq, engaged, actor, reason, at FROM kill_switch WHERE seq > ? ORDER BY seq"
)
SELECT_CONFIG = "SELECT kind, changes, actor, at FROM config ORDER BY seq"
SELECT_AUDIT = "SELECT actor, action, reason, detail, at FROM audit ORDER BY seq DESC LIMIT ?"
SELECT_TOKENS = "SELECT name, role, token_hash, created_at, revoked_at FROM tokens ORDER BY seq"
SELECT_ACCOUNT = "SELECT body FROM account WHERE id = 1"
SELECT_LAST_TRANSITION = "SELECT COALESCE(MAX(seq), 0) FROM order_transitions"
SELECT_MIGRATIONS = "SELECT version FROM schema_migrations"


def pending_migrations(applied: set[int]) -> list[Migration]:
    """The migrations still to apply, in order. A database migrated by a newer tradeengine
    is refused: this code would not know what its tables mean."""
    known = MIGRATIONS[-1].version
    newer = sorted(v for v in applied if v > known)
    if newer:
        raise StoreError(
            f"the journal's schema is at version {newer[-1]}, newer than this tradeengine "
            f"knows (up to {known}): upgrade tradeengine"
        )
    return [m for m in MIGRATIONS if m.version not in applied]


def migration_steps(migration: Migration, dialect: Dialect) -> list[Step]:
    steps: list[Step] = [(s, ()) for s in migration.for_dialect(dialect)]
    steps.append((INSERT_MIGRATION, [(migration.version, migration.name, utc_now())]))
    return steps


def write_steps(records: Sequence[Record], last_seq: int) -> tuple[list[Step], int]:
    """The statements that journal `records`, and the last transition seq they use.

    An order's snapshots are all kept in `order_transitions`; `orders` gets one upsert per
    order per write, with its latest snapshot."""
    transitions: list[Row] = []
    latest: dict[str, Row] = {}
    fills: list[Row] = []
    rejections: list[Row] = []
    kills: list[Row] = []
    configs: list[Row] = []
    audits: list[Row] = []
    seq = last_seq
    for record in records:
        kind = type(record)
        if kind is OrderRecord:
            order = cast(OrderRecord, record).order
            seq += 1
            transitions.append(
                (seq, order.id, order.status, order.updated_at, _encode(order).decode())
            )
            previous = latest.get(order.id)
            latest[order.id] = (
                order.id,
                order.client_order_id,
                order.status,
                1 if order.is_open else 0,
                order.filled_qty,
                order.stop_loss,
                seq if previous is None else previous[6],
                seq,
            )
        elif kind is FillRecord:
            fill = cast(FillRecord, record).fill
            fills.append(
                (
                    fill.exec_id,
                    fill.order_id,
                    fill.client_order_id,
                    fill.symbol,
                    fill.side,
                    fill.qty,
                    fill.price,
                    fill.fee,
                    fill.at,
                    1 if fill.liquidation else 0,
                )
            )
        elif kind is RejectionRecord:
            r = cast(RejectionRecord, record)
            rejections.append(
                (r.client_order_id, r.symbol, r.side, r.qty, r.rule, r.reason, r.actor, r.at)
            )
        elif kind is KillSwitchRecord:
            k = cast(KillSwitchRecord, record)
            kills.append((1 if k.engaged else 0, k.actor, k.reason, k.at))
        elif kind is ConfigRecord:
            c = cast(ConfigRecord, record)
            configs.append((c.kind, _encode(c.values).decode(), c.actor, c.at))
        elif kind is AuditRecord:
            a = cast(AuditRecord, record)
            audits.append((a.actor, a.action, a.reason, _encode(a.detail).decode(), a.at))
        else:
            raise TypeError(f"not a journal record: {record!r}")
    steps: list[Step] = []
    for sql, rows in (
        (INSERT_TRANSITION, transitions),
        (UPSERT_ORDER, list(latest.values())),
        (INSERT_FILL, fills),
        (INSERT_REJECTION, rejections),
        (INSERT_KILL_SWITCH, kills),
        (INSERT_CONFIG, configs),
        (INSERT_AUDIT, audits),
    ):
        if rows:
            steps.append((sql, rows))
    return steps, seq


def kill_switch_change(row: Row) -> KillSwitchChange:
    seq, engaged, actor, reason, at = row
    return int(seq), KillSwitchRecord(engaged=bool(engaged), actor=actor, reason=reason, at=at)


class SqlStore:
    """The Store protocol over SQL. Subclasses connect and provide the primitives."""

    dialect: ClassVar[Dialect]

    def __init__(self) -> None:
        self._last_seq = 0

    # ---- primitives (per backend) ------------------------------------------------------

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        raise NotImplementedError

    async def _fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """A query that may return many rows (recovery, listings): a backend may run it
        beside the writer."""
        return await self._fetch(sql, params)

    async def _transaction(self, steps: Sequence[Step]) -> list[int]:
        """Runs every step in one transaction; returns each step's row count."""
        raise NotImplementedError

    async def _wait_for_kill_switch(self, timeout: float) -> None:
        raise NotImplementedError

    def _is_unique_violation(self, exc: Exception) -> bool:
        raise NotImplementedError

    # ---- the protocol ------------------------------------------------------------------

    async def _after_migrations(self) -> None:
        """Continues the transition numbering where the journal left it."""
        [(last,)] = await self._fetch(SELECT_LAST_TRANSITION)
        self._last_seq = int(last)

    async def write(self, records: Sequence[Record]) -> None:
        steps, last_seq = write_steps(records, self._last_seq)
        # Numbers are taken before the write: a failed write leaves a gap, never a reuse.
        self._last_seq = last_seq
        if steps:
            await self._transaction(steps)

    async def get_order(self, order_id: str) -> Order | None:
        return self._one_order(await self._fetch(SELECT_ORDER, (order_id,)))

    async def find_order(self, client_order_id: str) -> Order | None:
        return self._one_order(await self._fetch(SELECT_ORDER_BY_CLIENT_ID, (client_order_id,)))

    @staticmethod
    def _one_order(rows: list[Row]) -> Order | None:
        return _decode_order(rows[0][0]) if rows else None

    async def orders(self) -> list[Order]:
        return [_decode_order(body) for (body,) in await self._fetch_all(SELECT_ORDERS)]

    async def recent_orders(
        self, limit: int, closed: bool = False, symbols: frozenset[str] | None = None
    ) -> list[Order]:
        """The newest `limit` orders (closed ones only if asked, of `symbols` if given), read a
        page at a time so that a long journal is never read whole."""
        sql = SELECT_RECENT_CLOSED_ORDERS if closed else SELECT_RECENT_ORDERS
        page = max(limit, 200)
        found: list[Order] = []
        offset = 0
        while len(found) < limit:
            rows = await self._fetch_all(sql, (page, offset))
            for (body,) in rows:
                order = _decode_order(body)
                if not symbols or order.symbol in symbols:
                    found.append(order)
                    if len(found) == limit:
                        break
            if len(rows) < page:
                break
            offset += page
        return found

    async def order_history(self, order_id: str) -> list[Order]:
        rows = await self._fetch_all(SELECT_ORDER_HISTORY, (order_id,))
        return [_decode_order(body) for (body,) in rows]

    async def fills(self) -> list[Fill]:
        return [
            Fill(
                exec_id=exec_id,
                order_id=order_id,
                client_order_id=client_order_id,
                symbol=symbol,
                side=side,
                qty=qty,
                price=price,
                fee=fee,
                at=at,
                liquidation=bool(liquidation),
            )
            for (
                exec_id,
                order_id,
                client_order_id,
                symbol,
                side,
                qty,
                price,
                fee,
                at,
                liquidation,
            ) in await self._fetch_all(SELECT_FILLS)
        ]

    async def audit(self, limit: int) -> list[AuditRecord]:
        if limit <= 0:
            return []
        return [
            AuditRecord(
                actor=actor, action=action, reason=reason, detail=_decode_object(detail), at=at
            )
            for actor, action, reason, detail, at in await self._fetch_all(SELECT_AUDIT, (limit,))
        ]

    async def kill_switch_history(self) -> list[KillSwitchRecord]:
        return [record for _, record in await self._kill_switch_since(0)]

    async def _kill_switch_since(self, after: int) -> list[KillSwitchChange]:
        return [kill_switch_change(row) for row in await self._fetch(SELECT_KILL_SWITCH, (after,))]

    async def kill_switch_changes(self, after: int, timeout: float) -> list[KillSwitchChange]:
        deadline = time.monotonic() + timeout
        while True:
            changes = await self._kill_switch_since(after)
            remaining = deadline - time.monotonic()
            if changes or remaining <= 0:
                return changes
            await self._wait_for_kill_switch(remaining)

    async def save_token(self, token: TokenRecord) -> None:
        row = (token.name, token.role, token.token_hash, token.created_at, token.revoked_at)
        try:
            await self._transaction([(INSERT_TOKEN, [row])])
        except Exception as exc:
            if self._is_unique_violation(exc):
                raise ValueError(f"a token named {token.name!r} exists already") from None
            raise

    async def tokens(self) -> list[TokenRecord]:
        return [
            TokenRecord(
                name=name, role=role, token_hash=token_hash, created_at=created, revoked_at=revoked
            )
            for name, role, token_hash, created, revoked in await self._fetch(SELECT_TOKENS)
        ]

    async def revoke_token(self, name: str, at: str) -> bool:
        [count] = await self._transaction([(REVOKE_TOKEN, [(at, name)])])
        return count > 0

    async def save_account(self, account: AccountSnapshot) -> None:
        await self._transaction([(UPSERT_ACCOUNT, [(_encode(account).decode(),)])])

    async def load(self) -> JournalState:
        orders = [
            _decode_order(body) for (body,) in await self._fetch_all(SELECT_ORDERS_TO_RESTORE)
        ]
        client_order_ids = [cid for (cid,) in await self._fetch_all(SELECT_CLIENT_ORDER_IDS)]
        fills = cast(list[ReplayFill], await self._fetch_all(SELECT_REPLAY_FILLS))
        exec_ids = [exec_id for (exec_id,) in await self._fetch_all(SELECT_EXEC_IDS)]
        config = [
            ConfigRecord(kind=kind, values=_decode_object(changes), actor=actor, at=at)
            for kind, changes, actor, at in await self._fetch_all(SELECT_CONFIG)
        ]
        account_rows = await self._fetch(SELECT_ACCOUNT)
        return JournalState(
            orders_to_restore=orders,
            client_order_ids=client_order_ids,
            fills=fills,
            exec_ids=exec_ids,
            kill_switch=await self.kill_switch_history(),
            config=config,
            account=_decode_account(account_rows[0][0]) if account_rows else None,
        )
