"""How the API stops its own server after `POST /api/admin/shutdown`."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal

from tradeengine.engine import Engine

log = logging.getLogger("tradeengine.api")


class ServerControl:
    """After the engine's shutdown is requested, waits the grace period (reads are still
    served, new orders are refused) and then sends SIGTERM to the server, which uvicorn answers
    with a graceful stop: open requests finish, then the lifespan stops the engine (resting
    orders canceled, journal flushed, broker disconnected). Under `--workers` or `--reload`
    the signal goes to uvicorn's supervisor, which stops every worker (a worker that exits
    alone would be restarted by it).

    `exit_process` is False for an app that does not own its process (tests, embedding): then
    only the engine stops taking orders."""

    def __init__(self, exit_process: bool) -> None:
        self.exit_process = exit_process
        self.grace_seconds = 0.0
        self._scheduled = False

    def schedule_exit(self, grace_seconds: float) -> float | None:
        """Records the grace period of the first shutdown request; returns when the process
        will exit (None when it does not exit by itself)."""
        if not self._scheduled:
            self.grace_seconds = grace_seconds
            self._scheduled = True
        return self.grace_seconds if self.exit_process else None

    async def exit_when_requested(self, engine: Engine) -> None:
        await engine.shutdown_requested.wait()
        if not self.exit_process:
            return
        await asyncio.sleep(self.grace_seconds)
        supervisor = multiprocessing.parent_process()
        pid = supervisor.pid if supervisor is not None and supervisor.pid else os.getpid()
        log.warning("shutdown requested: stopping the server (SIGTERM to pid %s)", pid)
        os.kill(pid, signal.SIGTERM)
