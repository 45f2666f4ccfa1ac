"""Group commit: concurrent writers each wait until their records are durable, while the
records of everyone who arrived meanwhile are written together, at most BATCH_SIZE a
transaction. So durability before the 2xx does not cost a transaction per order."""

from __future__ import annotations

import asyncio

from tradeengine.schemas import Record
from tradeengine.store.base import Store


class Journal:
    def __init__(self, store: Store, batch_size: int) -> None:
        self.store = store
        self.batch_size = batch_size
        self._pending: list[tuple[tuple[Record, ...], asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def append(self, *records: Record) -> None:
        """Returns once every record is durable; raises what the store raised otherwise."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((records, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        await future

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch: list[Record] = []
                waiting: list[asyncio.Future[None]] = []
                while self._pending and (
                    not batch or len(batch) + len(self._pending[0][0]) <= self.batch_size
                ):
                    records, future = self._pending.pop(0)
                    batch.extend(records)
                    waiting.append(future)
                try:
                    await self.store.write(batch)
                except Exception as exc:  # the writers decide what a failed write means
                    for future in waiting:
                        if not future.done():
                            future.set_exception(exc)
                else:
                    for future in waiting:
                        if not future.done():
                            future.set_result(None)
        finally:
            self._flusher = None

    async def drain(self) -> None:
        """Waits until everything appended so far is written."""
        while self._flusher is not None:
            await asyncio.shield(self._flusher)
