"""What the process measures about itself, from the standard library and /proc (no psutil):
`process_stats()` (memory, CPU time, threads, open files) and `LoopMonitor`, a task that
sleeps LOOP_TICK_SECONDS and measures how late it wakes up (the event loop's lag: how long a
ready callback, an order among them, waits for the loop) and samples the CPU time, both over
the last LOOP_WINDOW_SECONDS. The monitor is exported as `event_loop_lag_seconds` and shown
by `/api/health/system`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import threading
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LOOP_TICK_SECONDS = 0.25
LOOP_WINDOW_SECONDS = 10.0


class LoopMonitor(Collector):
    """Event loop lag and CPU use over a sliding window (see the module docstring)."""

    def __init__(self, tick: float = LOOP_TICK_SECONDS, window: float = LOOP_WINDOW_SECONDS):
        self.tick = tick
        self.window = window
        # (monotonic time, lag, process CPU time), one a tick.
        self._samples: deque[tuple[float, float, float]] = deque(
            maxlen=max(2, round(window / tick))
        )
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._samples.append((time.monotonic(), 0.0, time.process_time()))
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            expected = time.monotonic() + self.tick
            await asyncio.sleep(self.tick)
            now = time.monotonic()
            self._samples.append((now, max(0.0, now - expected), time.process_time()))

    def lag(self) -> dict[str, float]:
        """The latest lag and the largest of the window, in seconds."""
        return {
            "last": round(self._samples[-1][1], 6),
            "max": round(max(lag for _, lag, _ in self._samples), 6),
            "window_seconds": self.window,
        }

    def cpu_percent(self) -> float | None:
        """CPU time used over the window as a percentage of one core (None until a tick)."""
        (start, _, cpu_start), (end, _, cpu_end) = self._samples[0], self._samples[-1]
        if end - start <= 0:
            return None
        return round(100.0 * (cpu_end - cpu_start) / (end - start), 1)

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "event_loop_lag_seconds",
            f"Largest lateness of the engine's event loop over the last {self.window:g} s.",
            value=self.lag()["max"],
        )


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _os_threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def _open_files() -> int | None:
    directory = Path("/proc/self/fd") if Path("/proc/self/fd").is_dir() else Path("/dev/fd")
    try:
        return len(os.listdir(directory)) - 1  # less the descriptor listdir itself opened
    except OSError:
        return None


def process_stats() -> dict[str, Any]:
    """Memory, CPU time, threads and open files of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft_limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {
        "memory_rss_bytes": _rss_bytes(),
        "memory_peak_rss_bytes": usage.ru_maxrss * 1024,
        "cpu_user_seconds": usage.ru_utime,
        "cpu_system_seconds": usage.ru_stime,
        "threads": _os_threads(),
        "python_threads": threading.active_count(),
        "open_files": _open_files(),
        "open_files_limit": None if soft_limit == resource.RLIM_INFINITY else soft_limit,
    }
