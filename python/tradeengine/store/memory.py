"""A store that keeps everything in memory: for tests and benchmarks. Not durable."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from tradeengine.schemas import (
    AuditRecord,
    Fill,
    FillRecord,
    KillSwitchRecord,
    Order,
    OrderRecord,
    Record,
    TokenRecord,
)


class MemoryStore:
    def __init__(self) -> None:
        self.records: list[Record] = []
        self._orders: dict[str, Order] = {}
        self._by_client_id: dict[str, str] = {}
        self._fills: list[Fill] = []
        self._audit: list[AuditRecord] = []
        self._kill: list[KillSwitchRecord] = []
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
                self._fills.append(record.fill)
            elif isinstance(record, AuditRecord):
                self._audit.append(record)
            elif isinstance(record, KillSwitchRecord):
                self._kill.append(record)

    async def get_order(self, order_id: str) -> Order | None:
        return self._orders.get(order_id)

    async def find_order(self, client_order_id: str) -> Order | None:
        order_id = self._by_client_id.get(client_order_id)
        return None if order_id is None else self._orders.get(order_id)

    async def orders(self) -> list[Order]:
        return list(self._orders.values())

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
