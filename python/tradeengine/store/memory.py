"""A store that keeps everything in memory: for tests and benchmarks. Not durable."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

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
    TokenRecord,
)
from tradeengine.store.base import AccountSnapshot, JournalState, KillSwitchChange

POLL_INTERVAL = 0.2


class MemoryStore:
    def __init__(self) -> None:
        self.records: list[Record] = []
        self._orders: dict[str, Order] = {}
        self._by_client_id: dict[str, str] = {}
        self._fills: list[Fill] = []
        self._exec_ids: set[str] = set()
        self._audit: list[AuditRecord] = []
        self._kill: list[KillSwitchRecord] = []
        self._config: list[ConfigRecord] = []
        self._account: AccountSnapshot | None = None
        self._tokens: list[TokenRecord] = []
        self.transactions = 0
        self.fail_writes: Exception | None = None
        """Set to an exception to make every write fail (tests of fail-closed behaviour)."""

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def write(self, records: Sequence[Record]) -> None:
        if self.fail_writes is not None:
            raise self.fail_writes
        self.transactions += 1
        for record in records:
            self.records.append(record)
            if isinstance(record, OrderRecord):
                order = record.order
                self._orders[order.id] = order
                self._by_client_id[order.client_order_id] = order.id
            elif isinstance(record, FillRecord):
                if record.fill.exec_id not in self._exec_ids:
                    self._exec_ids.add(record.fill.exec_id)
                    self._fills.append(record.fill)
            elif isinstance(record, AuditRecord):
                self._audit.append(record)
            elif isinstance(record, KillSwitchRecord):
                self._kill.append(record)
            elif isinstance(record, ConfigRecord):
                self._config.append(record)

    async def recent_orders(
        self, limit: int, closed: bool = False, symbols: frozenset[str] | None = None
    ) -> list[Order]:
        found: list[Order] = []
        for order in reversed(self._orders.values()):
            if len(found) == limit:
                break
            if (closed and order.is_open) or (symbols and order.symbol not in symbols):
                continue
            found.append(order)
        return found

    async def get_order(self, order_id: str) -> Order | None:
        return self._orders.get(order_id)

    async def find_order(self, client_order_id: str) -> Order | None:
        order_id = self._by_client_id.get(client_order_id)
        return None if order_id is None else self._orders.get(order_id)

    async def orders(self) -> list[Order]:
        return list(self._orders.values())

    async def order_history(self, order_id: str) -> list[Order]:
        return [
            r.order for r in self.records if isinstance(r, OrderRecord) and r.order.id == order_id
        ]

    async def fills(self) -> list[Fill]:
        return list(self._fills)

    async def audit(self, limit: int) -> list[AuditRecord]:
        return list(reversed(self._audit[-limit:])) if limit > 0 else []

    async def kill_switch_history(self) -> list[KillSwitchRecord]:
        return list(self._kill)

    async def save_token(self, token: TokenRecord) -> None:
        if any(t.name == token.name and t.revoked_at is None for t in self._tokens):
            raise ValueError(f"a token named {token.name!r} exists already")
        self._tokens.append(token)

    async def tokens(self) -> list[TokenRecord]:
        return list(self._tokens)

    async def revoke_token(self, name: str, at: str) -> bool:
        for i, token in enumerate(self._tokens):
            if token.name == name and token.revoked_at is None:
                self._tokens[i] = msgspec.structs.replace(token, revoked_at=at)
                return True
        return False

    async def load(self) -> JournalState:
        orders = list(self._orders.values())
        return JournalState(
            orders_to_restore=[o for o in orders if o.is_open or o.stop_loss is not None],
            client_order_ids=[o.client_order_id for o in orders],
            fills=[
                (f.client_order_id, f.symbol, f.side, f.qty, f.price, f.fee) for f in self._fills
            ],
            exec_ids=[f.exec_id for f in self._fills],
            kill_switch=list(self._kill),
            config=list(self._config),
            account=self._account,
        )

    async def save_account(self, account: AccountSnapshot) -> None:
        self._account = account

    async def size(self) -> int | None:
        return None

    async def kill_switch_changes(self, after: int, timeout: float) -> list[KillSwitchChange]:
        deadline = time.monotonic() + timeout
        while len(self._kill) <= after and time.monotonic() < deadline:
            await asyncio.sleep(min(POLL_INTERVAL, deadline - time.monotonic()))
        return [(seq, r) for seq, r in enumerate(self._kill, start=1) if seq > after]
