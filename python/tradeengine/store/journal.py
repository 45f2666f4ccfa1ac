"""Group commit: concurrent writers each wait until their records are durable, while the
records of everyone who arrived meanwhile are written together, at most BATCH_SIZE a
transaction. So durability before the 2xx does not cost a transaction per order.

The first writer to arrive while nothing is being written becomes the leader: it writes its
own records and then whatever piled up while it waited, and hands over when the queue is
empty. No task is spawned per write, and with a store that answers at once no writer yields
to the event loop at all.
"""

from __future__ import annotations

import asyncio
from collections import deque

from tradeengine.schemas import Record
from tradeengine.store.base import Store


class Journal:
    def __init__(self, store: Store, batch_size: int) -> None:
        self.store = store
        self.batch_size = batch_size
        self._pending: deque[tuple[tuple[Record, ...], asyncio.Future[None]]] = deque()
        self._writing = False
        self._idle = asyncio.Event()
        self._idle.set()

    async def append(self, *records: Record) -> None:
        """Returns once every record is durable; raises what the store raised otherwise."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((records, future))
        if not self._writing:
            await self._lead()
        await future

    async def _lead(self) -> None:
        self._writing = True
        self._idle.clear()
        try:
            while self._pending:
                batch: list[Record] = []
                waiting: list[asyncio.Future[None]] = []
                while self._pending and (
                    not batch or len(batch) + len(self._pending[0][0]) <= self.batch_size
                ):
                    records, future = self._pending.popleft()
                    batch.extend(records)
                    waiting.append(future)
                try:
                    await self.store.write(batch)
                except Exception as exc:  # each writer decides what a failed write means
                    for future in waiting:
                        if not future.done():
                            future.set_exception(exc)
                else:
                    for future in waiting:
                        if not future.done():
                            future.set_result(None)
        finally:
            self._writing = False
            if self._pending:
                # The leader was cancelled mid-write: someone must still write the rest.
                asyncio.get_running_loop().create_task(self._lead())
            else:
                self._idle.set()

    async def drain(self) -> None:
        """Waits until everything appended so far is written."""
        await self._idle.wait()
