"""The trade_updates websocket: alpaca-py's TradingStream, run on the engine's event loop.

TradingStream keeps the connection (connect, authenticate, listen, reconnect with jittered
exponential backoff). It tells nobody when it connects or drops, reconnects forever and quietly
when authentication fails, and its own model drops a message without `timestamp`. This
subclass takes raw messages (parsed by `ledger.TradeUpdate`), reports every connect and drop to
the broker (which reconciles after a reconnect and polls while down), remembers why the last
attempt failed, and times every message. It overrides TradingStream's private steps
(`_start_ws`, `_auth`, `_dispatch`, `close`) as they are in alpaca-py 0.44, hence the pin.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from alpaca.trading.stream import TradingStream

log = logging.getLogger("tradeengine_alpaca")


class _NoFrames(logging.Filter):
    """websockets logs every frame at DEBUG, the authentication frame (with the secret's last
    characters) included: those records are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


websocket_log = logging.getLogger("tradeengine_alpaca.websocket")
websocket_log.addFilter(_NoFrames())

AUTH_FAILED = "stream authentication failed: check ALPACA_API_KEY and ALPACA_SECRET_KEY"


class TradeUpdateStream(TradingStream):
    """trade_updates for one account. `handler` gets each raw message (a dict); `on_change`
    is called with True after every successful connect and False after every drop."""

    def __init__(
        self,
        *,
        api_key: str,
        secret_key: str,
        paper: bool,
        url: str | None,
        handler: Callable[[dict[str, Any]], Awaitable[None]],
        on_change: Callable[[bool], None],
        backoff_min: float,
        backoff_max: float,
        open_timeout: float,
        ping_interval: float = 10.0,
        ping_timeout: float = 20.0,
    ) -> None:
        super().__init__(
            api_key,
            secret_key,
            paper=paper,
            raw_data=True,
            url_override=url,  # type: ignore[arg-type]  # alpaca-py annotates it as str
            websocket_params={
                "ping_interval": ping_interval,
                "ping_timeout": ping_timeout,
                "open_timeout": open_timeout,
                "close_timeout": open_timeout,
                "max_queue": 1024,
                "logger": websocket_log,
            },
        )
        self._reconnect_min_backoff = backoff_min
        self._reconnect_max_backoff = backoff_max
        self._on_change = on_change
        self.subscribe_trade_updates(handler)
        self.connected = False
        self.connects = 0
        self.drops = 0
        self.last_message_at: float | None = None
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return str(self._endpoint)

    def start(self) -> None:
        """Runs TradingStream's connection loop as a task of the running event loop."""
        self._task = asyncio.get_running_loop().create_task(
            self._run_forever(),  # type: ignore[no-untyped-call]
            name="alpaca-trade-updates",
        )

    async def stop(self) -> None:  # type: ignore[override]  # TradingStream.stop is blocking
        await self.stop_ws()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.close()

    async def _start_ws(self) -> None:
        try:
            await super()._start_ws()  # type: ignore[no-untyped-call]
        except Exception as exc:
            if self.last_error != AUTH_FAILED:
                self.last_error = f"{type(exc).__name__}: {exc}"
            raise
        self.last_error = None
        self.connected = True
        self.connects += 1
        self._on_change(True)

    async def _auth(self) -> None:
        self.last_error = None
        try:
            await super()._auth()  # type: ignore[no-untyped-call]
        except (ValueError, AttributeError):
            self.last_error = AUTH_FAILED
            log.error("ERROR Alpaca %s", AUTH_FAILED)
            raise ValueError(AUTH_FAILED) from None

    async def _dispatch(self, msg: dict[str, Any]) -> None:
        self.last_message_at = time.time()
        await super()._dispatch(msg)

    async def close(self) -> None:
        was_connected = self.connected
        self.connected = False
        try:
            await super().close()
        finally:
            if was_connected:
                self.drops += 1
                self._on_change(False)
