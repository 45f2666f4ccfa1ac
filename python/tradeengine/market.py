"""Where marks come from in backtest mode.

- `POST /api/market/prices` (the engine's `set_marks`), always.
- BACKTEST_DATA: a CSV replay, rows `timestamp,symbol,price` or OHLCV bars
  `timestamp,symbol,open,high,low,close,volume` (the close is the mark), played at
  REPLAY_SPEED (1.0 is real time, 10 ten times faster, 0 as fast as possible).
- Otherwise, unless SYNTHETIC_FEED=false: a deterministic synthetic feed, so that the first
  `buy 10 AAPL` after `make run` fills. Its prices are made up: a seeded random walk per symbol.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import logging
import random
import zlib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path

log = logging.getLogger("tradeengine.market")

SetMarks = Callable[[Mapping[str, float]], Awaitable[object]]

BASE_PRICES = {"AAPL": 190.0, "MSFT": 420.0, "SPY": 520.0, "TSLA": 250.0, "NVDA": 120.0}


class SyntheticFeed:
    """A reproducible random walk: the same symbols give the same prices on every run."""

    def __init__(self, symbols: tuple[str, ...], step: float = 0.0005) -> None:
        self.prices = {s: BASE_PRICES.get(s, 100.0) for s in symbols}
        self.random = {s: random.Random(zlib.crc32(s.encode())) for s in symbols}
        self.step = step

    def next(self) -> dict[str, float]:
        for symbol, rng in self.random.items():
            move = 1 + rng.uniform(-self.step, self.step)
            self.prices[symbol] = round(self.prices[symbol] * move, 4)
        return dict(self.prices)


def _timestamp(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        return parsed.timestamp()


def read_replay(path: Path) -> Iterator[tuple[float, str, float]]:
    """(timestamp, symbol, price) rows of a replay file; a header row is skipped."""
    with path.open(newline="") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row or row[0].startswith("#"):
                continue
            try:
                at = _timestamp(row[0])
            except ValueError:
                if number == 1:
                    continue  # header
                raise ValueError(f"{path}:{number}: bad timestamp {row[0]!r}") from None
            if len(row) == 3:
                price = float(row[2])
            elif len(row) >= 6:
                price = float(row[5])
            else:
                raise ValueError(f"{path}:{number}: expected 3 or 7 columns, got {len(row)}")
            yield at, row[1].strip(), price


async def run_synthetic(feed: SyntheticFeed, set_marks: SetMarks, interval: float) -> None:
    while True:
        await set_marks(feed.next())
        await asyncio.sleep(interval)


async def run_replay(path: Path, set_marks: SetMarks, speed: float) -> None:
    previous: float | None = None
    count = 0
    for at, symbol, price in read_replay(path):
        if previous is not None and speed > 0 and at > previous:
            await asyncio.sleep((at - previous) / speed)
        previous = at
        await set_marks({symbol: price})
        count += 1
    log.info("replay of %s finished: %d marks", path, count)
