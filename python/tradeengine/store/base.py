"""The store interface the engine journals through, and what recovery reads back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec

from tradeengine.schemas import (
    AuditRecord,
    ConfigRecord,
    Fill,
    KillSwitchRecord,
    Order,
    Record,
    TokenRecord,
)

ReplayFill = tuple[str, str, str, float, float, float]
"""(client_order_id, symbol, side, qty, price, fee): what `Gate.replay_fills` takes."""


class StoreError(Exception):
    """The journal cannot be opened or used (bad URL, unreachable server, newer schema)."""


class AccountSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """What the book cannot rebuild from fills alone: the marks, the equity peak and the
    trading day's starting equity. Saved about once a second by the running engine."""

    peak_equity: float
    day: int
    day_start_equity: float
    marks: dict[str, float] = msgspec.field(default_factory=dict)
    at: str = ""


class JournalState(msgspec.Struct, frozen=True, kw_only=True):
    """Everything recovery needs, read in one go at start."""

    orders_to_restore: list[Order]
    """Open orders, and orders with a stop loss (a fill of such an order gives its position
    that stop), oldest first."""
    client_order_ids: list[str]
    """Every client order id an order was ever accepted with."""
    fills: list[ReplayFill]
    """Every fill, in the order it was journaled."""
    exec_ids: list[str]
    kill_switch: list[KillSwitchRecord]
    """The kill switch history, oldest first."""
    config: list[ConfigRecord]
    """Risk, throttle and reduce-only changes, oldest first."""
    account: AccountSnapshot | None = None


KillSwitchChange = tuple[int, KillSwitchRecord]
"""A kill switch record with its sequence number in the journal."""


class Store(Protocol):
    """A durable journal. `write` is one transaction: all records or none."""

    async def open(self) -> None:
        """Connects and brings the schema up to date (migrations are applied here)."""
        ...

    async def close(self) -> None: ...

    async def write(self, records: Sequence[Record]) -> None: ...

    async def get_order(self, order_id: str) -> Order | None: ...

    async def find_order(self, client_order_id: str) -> Order | None: ...

    async def orders(self) -> list[Order]:
        """The latest snapshot of every order, oldest first."""
        ...

    async def recent_orders(
        self, limit: int, closed: bool = False, symbols: frozenset[str] | None = None
    ) -> list[Order]:
        """The newest `limit` orders, newest first: closed ones only when `closed`, and only of
        `symbols` when given. Reads no more of the journal than it needs."""
        ...

    async def order_history(self, order_id: str) -> list[Order]:
        """Every journaled state of an order, oldest first (a scan: for operators, not for
        the order path)."""
        ...

    async def fills(self) -> list[Fill]: ...

    async def audit(self, limit: int) -> list[AuditRecord]:
        """The newest `limit` operator actions, newest first."""
        ...

    async def kill_switch_history(self) -> list[KillSwitchRecord]: ...

    async def save_token(self, token: TokenRecord) -> None:
        """Stores a new token; raises ValueError when an active token has the same name."""
        ...

    async def tokens(self) -> list[TokenRecord]:
        """Every token, revoked ones included."""
        ...

    async def revoke_token(self, name: str, at: str) -> bool:
        """Revokes the active token of that name; False when there is none."""
        ...

    async def load(self) -> JournalState:
        """What recovery rebuilds the engine from."""
        ...

    async def save_account(self, account: AccountSnapshot) -> None: ...

    async def size(self) -> int | None:
        """Bytes the journal takes (SQLite: the file and its WAL; PostgreSQL: the database);
        None where nothing is stored on disk."""
        ...

    async def kill_switch_changes(self, after: int, timeout: float) -> list[KillSwitchChange]:
        """Kill switch records journaled after sequence number `after` (by anyone: this
        process or `tradeengine kill-switch`), oldest first. Waits up to `timeout` seconds
        for one to appear (woken by NOTIFY on PostgreSQL, polling every 0.2 s elsewhere)."""
        ...
