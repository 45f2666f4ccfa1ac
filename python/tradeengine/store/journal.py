"""Group commit: concurrent writers each wait until their records are durable, while the
records of everyone who arrived meanwhile are written together, at most BATCH_SIZE a
transaction. So durability before the 2xx does not cost a transaction per order.

The first writer to arrive while nothing is being written becomes the leader: it writes its
own records and then whatever piled up while it waited, and hands over when the queue is
empty. No task is spawned per write, and with a store that answers at once no writer yields
to the event loop at all.

Each write's duration is counted into `Journal.timings` (a bisect and a few additions per
transaction, no lock); the metrics plugin exports it at scrape time.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import deque

from tradeengine.schemas import Record
from tradeengine.store.base import Store

LATENCY_BUCKETS = (
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3,
    1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""Upper bounds in seconds, 10 us to 10 s (the order submit latency uses the same)."""


class WriteTimings:
    """How long the store's transactions took, bucketed as they happen (Prometheus histogram
    semantics: `counts[i]` holds the writes that took at most `bounds[i]`, the last slot the
    rest). Failed writes are counted apart and are not in the histogram."""

    __slots__ = ("bounds", "counts", "failures", "last_failed", "total_seconds")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total_seconds = 0.0
        self.failures = 0
        self.last_failed = False

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.total_seconds += seconds
        self.last_failed = False

    def failed(self) -> None:
        self.failures += 1
        self.last_failed = True


class Journal:
    def __init__(self, store: Store, batch_size: int) -> None:
        self.store = store
        self.batch_size = batch_size
        self.timings = WriteTimings()
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
                started = time.perf_counter()
                try:
                    await self.store.write(batch)
                except Exception as exc:  # each writer decides what a failed write means
                    self.timings.failed()
                    for future in waiting:
                        if not future.done():
                            future.set_exception(exc)
                else:
                    self.timings.observe(time.perf_counter() - started)
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
