"""The store interface the engine journals through."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from tradeengine.schemas import AuditRecord, Fill, KillSwitchRecord, Order, Record, TokenRecord


class Store(Protocol):
    """A durable journal. `write` is one transaction: all records or none."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def write(self, records: Sequence[Record]) -> None: ...

    async def get_order(self, order_id: str) -> Order | None: ...

    async def find_order(self, client_order_id: str) -> Order | None: ...

    async def orders(self) -> list[Order]:
        """The latest snapshot of every order, oldest first."""
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
