"""METRICS_PORT: `/metrics` on a listener of its own.

The API always serves `/metrics` on its own port (when METRICS_ENABLED=true). When METRICS_PORT
is set to another port, this module also serves it there, from the same registry, with the
same auth (viewer role; without tokens, loopback clients only), on the host the API listens on.
METRICS_PORT equal to the API's port changes nothing.

The app is not told its port by uvicorn, and uvicorn binds its socket only after the lifespan
has started. So the listener waits (in the background, at most LISTENER_WAIT_SECONDS) until
this process listens on a TCP socket: that is the API. If the API's port is METRICS_PORT there
is nothing to do; otherwise it binds METRICS_PORT on the API's host. An app embedded with no
HTTP server of its own (tests) binds on 127.0.0.1 after the wait.

Requests are served on the engine's event loop, like the API's (the engine's state is read on
its own thread only), by a uvicorn server driven through its startup/shutdown methods: its
`serve()` would take over the process's signal handlers from the API's server. A port that
cannot be bound is logged as an ERROR and reported by `/api/health/system`; trading goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any, Literal

import uvicorn
from starlette.applications import Starlette

from tradeengine.api.errors import exception_handlers
from tradeengine.api.routes import ENDPOINTS, build_routes

log = logging.getLogger("tradeengine.api")

LISTENER_WAIT_SECONDS = 10.0
POLL_SECONDS = 0.05

State = Literal["waiting", "listening", "served_by_api", "failed", "stopped"]


def own_tcp_listeners() -> list[tuple[str, int]]:
    """(host, port) of every TCP socket this process listens on (from its open file
    descriptors: /proc/self/fd on Linux, /dev/fd elsewhere)."""
    directory = Path("/proc/self/fd") if Path("/proc/self/fd").is_dir() else Path("/dev/fd")
    found = []
    for name in os.listdir(directory):
        try:
            fd = int(name)
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            with socket.socket(fileno=os.dup(fd)) as sock:
                if sock.family not in (socket.AF_INET, socket.AF_INET6):
                    continue
                if sock.type != socket.SOCK_STREAM:
                    continue
                if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                    continue
                host, port = sock.getsockname()[:2]
                found.append((str(host), int(port)))
        except (OSError, ValueError):
            continue  # closed meanwhile, or not a socket we can look at
    return found


class MetricsListener:
    """The listener of one app; `start_metrics_listener` makes and starts it."""

    def __init__(self, app: Starlette, port: int) -> None:
        self.app = app
        self.port = port
        self.host: str | None = None
        self.state: State = "waiting"
        self.error: str | None = None
        self._server: uvicorn.Server | None = None
        self._socket: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="metrics-listener")

    def describe(self) -> dict[str, Any]:
        """What `/api/health/system` shows."""
        return {"port": self.port, "host": self.host, "state": self.state, "error": self.error}

    async def _run(self) -> None:
        listeners = await self._wait_for_api()
        if any(port == self.port for _, port in listeners):
            self.state = "served_by_api"
            log.info("METRICS_PORT=%d is the API's port: /metrics is served by the API", self.port)
            return
        self.host = listeners[0][0] if listeners else "127.0.0.1"
        try:
            await self._serve(self.host)
        except OSError as exc:
            self.state = "failed"
            self.error = f"{type(exc).__name__}: {exc}"
            log.error(
                "ERROR METRICS_PORT=%d: cannot listen on %s: %s; /metrics is still served on "
                "the API's port",
                self.port,
                self.host,
                exc,
            )
            return
        self.state = "listening"
        log.info("metrics listener on %s port %d (/metrics)", self.host, self.port)

    async def _wait_for_api(self) -> list[tuple[str, int]]:
        deadline = time.monotonic() + LISTENER_WAIT_SECONDS
        while True:
            listeners = own_tcp_listeners()
            if listeners or time.monotonic() >= deadline:
                return listeners
            await asyncio.sleep(POLL_SECONDS)

    async def _serve(self, host: str) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, self.port), family=family)
        config = uvicorn.Config(
            self._metrics_app(), lifespan="off", log_config=None, server_header=False
        )
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        try:
            await server.startup(sockets=[sock])
        except BaseException:
            sock.close()
            raise
        self._server, self._socket = server, sock

    def _metrics_app(self) -> Starlette:
        table = tuple(e for e in ENDPOINTS if e.path == "/metrics")
        metrics_app = Starlette(routes=build_routes(table), exception_handlers=exception_handlers)
        state = self.app.state
        metrics_app.state.settings = state.settings
        metrics_app.state.engine = state.engine
        metrics_app.state.auth = state.auth
        metrics_app.state.control = state.control
        return metrics_app

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        server, self._server = self._server, None
        if server is not None:
            server.force_exit = True  # a scrape in flight is not worth waiting for
            await server.shutdown(sockets=[self._socket] if self._socket else None)
        self.state = "stopped"


def start_metrics_listener(app: Starlette) -> MetricsListener | None:
    """Starts the METRICS_PORT listener of `app` in the background (None when METRICS_PORT is
    unset or metrics are disabled). Call from the lifespan once `app.state.engine` and
    `app.state.auth` are set; `await listener.stop()` before the engine stops."""
    settings = app.state.settings
    if not settings.metrics_enabled or settings.metrics_port is None:
        return None
    listener = MetricsListener(app, settings.metrics_port)
    listener.start()
    return listener
