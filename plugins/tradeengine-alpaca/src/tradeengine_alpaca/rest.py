"""alpaca-py's REST clients made safe to call from the engine's event loop.

alpaca-py's `TradingClient` and `StockHistoricalDataClient` are blocking, set no HTTP timeout,
retry 429 and 504 by sleeping 3 s in the calling thread, let connection errors escape as raw
`requests` exceptions and raise KeyError when asked for the `code` of a 401. `SdkCaller` wraps
such a client (`AlpacaRest` the trading API, `AlpacaData` the market data API):

- every call runs in the engine's broker thread pool, never on the event loop;
- its session carries a timeout, so a stalled server costs at most ALPACA_HTTP_TIMEOUT;
- alpaca-py's own retries are off: we retry idempotent calls with backoff, and a 429 pauses
  every call until Alpaca's rate-limit reset;
- every call first takes a token of ALPACA_MAX_REQUESTS_PER_MINUTE (Alpaca allows 200);
- every failure becomes one `AlpacaError`, classified by HTTP status, with the keys scrubbed.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, cast

import requests
from alpaca.common.exceptions import APIError
from alpaca.common.rest import RESTClient
from alpaca.data.historical.stock import StockHistoricalDataClient
from alpaca.data.models import Quote, Trade
from alpaca.data.requests import StockLatestQuoteRequest, StockLatestTradeRequest
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import QueryOrderStatus
from alpaca.trading.models import (
    AccountConfiguration,
    Clock,
    ClosePositionResponse,
    Position,
    TradeAccount,
)
from alpaca.trading.models import Order as AlpacaOrder
from alpaca.trading.requests import CancelOrderResponse, GetOrdersRequest, OrderRequest
from pydantic import ValidationError

log = logging.getLogger("tradeengine_alpaca")

TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})


class AlpacaError(Exception):
    """A failed Alpaca call. `transient` errors may succeed when tried again; `status` is the
    HTTP status (None when no answer came: timeout, refused connection)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: int | None = None,
        transient: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.transient = transient
        self.retry_after = retry_after


def backoff(attempt: int, low: float, high: float) -> float:
    """Exponential backoff with equal jitter: attempt 1 waits about `low`, capped at `high`."""
    capped = min(high, low * 2.0 ** max(attempt - 1, 0))
    return capped / 2 + random.uniform(0, capped / 2)


class RateLimiter:
    """A token bucket of `per_minute` requests, plus a pause that a 429 or an exhausted
    `X-Ratelimit-Remaining` imposes on every caller until Alpaca's reset time."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._tokens = float(per_minute)
        self._refilled = clock()
        self._paused_until = 0.0  # wall clock (Alpaca's reset header is a Unix time)
        self._lock = threading.Lock()
        self.throttled = 0
        """How many calls had to wait."""

    def _take(self) -> float:
        """Takes a token and returns 0, or returns how long to wait for one."""
        with self._lock:
            pause = self._paused_until - time.time()
            if pause > 0:
                return pause
            now = self.clock()
            rate = self.per_minute / 60.0
            self._tokens = min(self.per_minute, self._tokens + (now - self._refilled) * rate)
            self._refilled = now
            if self._tokens >= 1:
                self._tokens -= 1
                return 0.0
            return (1 - self._tokens) / rate

    async def acquire(self) -> None:
        waited = False
        while (wait := self._take()) > 0:
            waited = True
            await asyncio.sleep(wait)
        if waited:
            self.throttled += 1

    def pause_until(self, unix_time: float) -> None:
        with self._lock:
            self._paused_until = max(self._paused_until, unix_time)

    def state(self) -> dict[str, Any]:
        pause = self._paused_until - time.time()
        return {
            "max_requests_per_minute": self.per_minute,
            "tokens_available": round(self._tokens, 2),
            "paused_seconds": round(pause, 3) if pause > 0 else 0.0,
            "throttled_calls": self.throttled,
        }


def _header_float(headers: Any, name: str) -> float | None:
    try:
        value = headers.get(name)
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _reset_time(headers: Any) -> float | None:
    """When Alpaca lets us call again: `Retry-After` (seconds) or `X-Ratelimit-Reset` (a Unix
    time), whichever is given."""
    retry_after = _header_float(headers, "Retry-After")
    if retry_after is not None:
        return time.time() + retry_after
    return _header_float(headers, "X-Ratelimit-Reset")


class _TimeoutSession(requests.Session):
    """A session whose every request has a timeout, and that watches Alpaca's rate-limit
    headers (a response with `X-Ratelimit-Remaining: 0` pauses calls until the reset)."""

    def __init__(self, timeout: float, limiter: RateLimiter) -> None:
        super().__init__()
        self.timeout = timeout
        self.limiter = limiter

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs.setdefault("timeout", self.timeout)
        response = super().request(method, url, *args, **kwargs)
        remaining = _header_float(response.headers, "X-Ratelimit-Remaining")
        if response.status_code == 429 or remaining == 0:
            reset = _reset_time(response.headers)
            self.limiter.pause_until(reset if reset is not None else time.time() + 1.0)
        return response


def rest_base_url(base_url: str) -> str | None:
    """ALPACA_BASE_URL as alpaca-py needs it: no trailing slash and no `/v2` (alpaca-py adds
    `/v2/...` itself). None means Alpaca's own endpoint for the trading mode."""
    url = base_url.strip().rstrip("/")
    url = url.removesuffix("/v2")
    return url or None


def stream_url(stream: str, base_url: str) -> str | None:
    """ALPACA_STREAM_URL (the full websocket URL), else the `/stream` endpoint beside
    ALPACA_BASE_URL, so that a proxy or a test server gets both; None means Alpaca's own."""
    if stream.strip():
        return stream.strip()
    rest = rest_base_url(base_url)
    if rest is None:
        return None
    scheme, sep, rest_of_url = rest.partition("://")
    ws_scheme = {"https": "wss", "http": "ws"}.get(scheme.lower(), scheme)
    return f"{ws_scheme}{sep}{rest_of_url}/stream"


def data_base_url(data_url: str) -> str | None:
    """ALPACA_DATA_URL as alpaca-py needs it (like `rest_base_url`); None means Alpaca's own
    data endpoint."""
    return rest_base_url(data_url)


class SdkCaller:
    """A blocking alpaca-py REST client, called from asyncio (see the module doc). Each has
    its own rate limiter and its own reachability: the market data API failing does not make
    the trading API look down."""

    token_wait: float | None = None
    """The longest wait for a rate-limit token before the call fails (None: no limit)."""

    def __init__(
        self,
        client: RESTClient,
        *,
        api_key: str,
        secret_key: str,
        executor: Executor,
        timeout: float,
        max_requests_per_minute: int,
        backoff_min: float,
        backoff_max: float,
        attempts: int = 3,
    ) -> None:
        self.executor = executor
        self.limiter = RateLimiter(max_requests_per_minute)
        self.client = client
        # alpaca-py sleeps 3 s in our worker thread on 429/504 and sets no timeout.
        client._retry = 0
        client._session = _TimeoutSession(timeout, self.limiter)
        self.timeout = timeout
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.attempts = attempts
        self._secrets = tuple(s for s in (api_key, secret_key) if s)
        self.latency_ms: float | None = None
        self.last_ok_at: float | None = None
        self.last_error: str | None = None
        self.reachable = True
        self.calls = 0

    @property
    def endpoint(self) -> str:
        url = self.client._base_url  # a str, or alpaca-py's BaseURL enum
        return str(getattr(url, "value", url))

    def scrub(self, text: str) -> str:
        """The text without the API key or secret in it (they never belong in a log)."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    async def call(self, what: str, fn: Callable[..., Any], *args: Any, retry: bool = True) -> Any:
        """Runs `fn(*args)` (a method of the client) in the thread pool. Transient failures are
        retried with backoff when `retry` (idempotent calls only); raises AlpacaError."""
        attempts = self.attempts if retry else 1
        loop = asyncio.get_running_loop()
        for attempt in range(1, attempts + 1):
            await self._token(what)
            started = time.perf_counter()
            self.calls += 1
            try:
                result = await loop.run_in_executor(self.executor, functools.partial(fn, *args))
            except Exception as exc:
                error = self.classify(what, exc)
                self.last_error = error.message
                self.reachable = error.status is not None
                if not (error.transient and attempt < attempts):
                    raise error from exc
                wait = backoff(attempt, self.backoff_min, self.backoff_max)
                log.warning("%s; retrying in %.2fs (attempt %d/%d)", error, wait, attempt, attempts)
                await asyncio.sleep(wait)
                continue
            self.latency_ms = (time.perf_counter() - started) * 1000
            self.last_ok_at = time.time()
            self.reachable = True
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    async def _token(self, what: str) -> None:
        if self.token_wait is None:
            await self.limiter.acquire()
            return
        try:
            await asyncio.wait_for(self.limiter.acquire(), self.token_wait)
        except TimeoutError:
            raise AlpacaError(
                f"Alpaca {what} not sent: rate limited for more than {self.token_wait}s "
                "(ALPACA_MAX_REQUESTS_PER_MINUTE, or Alpaca's 429 until its reset)",
                transient=True,
            ) from None

    def classify(self, what: str, exc: Exception) -> AlpacaError:
        """One error type for everything alpaca-py and requests raise, by HTTP status."""
        if isinstance(exc, APIError):
            status = exc.status_code
            body = str(exc)
            message, code = body[:300], None
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                message = str(parsed.get("message", message))
                raw_code = parsed.get("code")
                code = raw_code if isinstance(raw_code, int) else None
            retry_after = None
            if status == 429 and exc.response is not None:
                reset = _reset_time(exc.response.headers)
                retry_after = None if reset is None else max(reset - time.time(), 0.0)
            return AlpacaError(
                self.scrub(f"Alpaca {what} failed: HTTP {status}: {message}"),
                status=status,
                code=code,
                transient=status in TRANSIENT_STATUSES,
                retry_after=retry_after,
            )
        if isinstance(exc, requests.Timeout):
            return AlpacaError(
                f"Alpaca {what} failed: no answer within ALPACA_HTTP_TIMEOUT={self.timeout}s",
                transient=True,
            )
        if isinstance(exc, requests.RequestException):
            return AlpacaError(
                self.scrub(f"Alpaca {what} failed: {type(exc).__name__}: {exc}"), transient=True
            )
        if isinstance(exc, ValidationError):
            return AlpacaError(
                f"Alpaca {what} failed: unexpected answer ({exc.error_count()} invalid fields)",
                status=200,
            )
        return AlpacaError(self.scrub(f"Alpaca {what} failed: {type(exc).__name__}: {exc}"))


class AlpacaRest(SdkCaller):
    """The TradingClient, called from asyncio. One per broker."""

    client: TradingClient

    def __init__(
        self,
        *,
        api_key: str,
        secret_key: str,
        paper: bool,
        base_url: str,
        executor: Executor,
        timeout: float,
        max_requests_per_minute: int,
        backoff_min: float,
        backoff_max: float,
        attempts: int = 3,
    ) -> None:
        client = TradingClient(
            api_key=api_key,
            secret_key=secret_key,
            paper=paper,
            url_override=rest_base_url(base_url),
        )
        super().__init__(
            client,
            api_key=api_key,
            secret_key=secret_key,
            executor=executor,
            timeout=timeout,
            max_requests_per_minute=max_requests_per_minute,
            backoff_min=backoff_min,
            backoff_max=backoff_max,
            attempts=attempts,
        )

    # ---- the calls the broker makes, typed ------------------------------------------------

    async def account(self, *, retry: bool = True) -> TradeAccount:
        return cast(
            TradeAccount, await self.call("get account", self.client.get_account, retry=retry)
        )

    async def clock(self) -> Clock:
        return cast(Clock, await self.call("get clock", self.client.get_clock, retry=False))

    async def submit(self, request: OrderRequest) -> AlpacaOrder:
        """One POST: never retried here (see `AlpacaBroker._place`)."""
        return cast(
            AlpacaOrder,
            await self.call("submit order", self.client.submit_order, request, retry=False),
        )

    async def order_by_client_id(self, client_order_id: str) -> AlpacaOrder | None:
        """Alpaca's order with this client order id; None when Alpaca has none."""
        try:
            found = await self.call(
                "get order by client_order_id", self.client.get_order_by_client_id, client_order_id
            )
        except AlpacaError as exc:
            if exc.status == 404:
                return None
            raise
        return cast(AlpacaOrder, found)

    async def open_orders(self, limit: int) -> list[AlpacaOrder]:
        request = GetOrdersRequest(status=QueryOrderStatus.OPEN, limit=limit)
        return cast(
            list[AlpacaOrder], await self.call("list open orders", self.client.get_orders, request)
        )

    async def cancel(self, broker_order_id: str) -> None:
        await self.call("cancel order", self.client.cancel_order_by_id, broker_order_id)

    async def cancel_all(self) -> list[CancelOrderResponse]:
        return cast(
            list[CancelOrderResponse],
            await self.call("cancel all orders", self.client.cancel_orders),
        )

    async def positions(self) -> list[Position]:
        return cast(
            list[Position], await self.call("list positions", self.client.get_all_positions)
        )

    async def close_all_positions(self) -> list[ClosePositionResponse]:
        return cast(
            list[ClosePositionResponse],
            await self.call("close all positions", self.client.close_all_positions, True),
        )

    async def configuration(self) -> AccountConfiguration:
        return cast(
            AccountConfiguration,
            await self.call("get account configurations", self.client.get_account_configurations),
        )

    async def set_configuration(self, configuration: AccountConfiguration) -> AccountConfiguration:
        return cast(
            AccountConfiguration,
            await self.call(
                "set account configurations", self.client.set_account_configurations, configuration
            ),
        )


class AlpacaData(SdkCaller):
    """The StockHistoricalDataClient (Alpaca's market data API), called from asyncio: the
    latest trade or quote of a symbol. It is asked on the way of a market order, which is
    refused (no_mark) rather than kept waiting: never retried, and a rate-limit pause longer
    than ALPACA_HTTP_TIMEOUT fails the call instead of holding the order."""

    client: StockHistoricalDataClient

    def __init__(
        self,
        *,
        api_key: str,
        secret_key: str,
        data_url: str,
        executor: Executor,
        timeout: float,
        max_requests_per_minute: int,
        backoff_min: float,
        backoff_max: float,
    ) -> None:
        client = StockHistoricalDataClient(
            api_key=api_key, secret_key=secret_key, url_override=data_base_url(data_url)
        )
        super().__init__(
            client,
            api_key=api_key,
            secret_key=secret_key,
            executor=executor,
            timeout=timeout,
            max_requests_per_minute=max_requests_per_minute,
            backoff_min=backoff_min,
            backoff_max=backoff_max,
            attempts=1,
        )
        self.token_wait = timeout

    async def latest_trade(self, symbol: str) -> Trade | None:
        """`GET /v2/stocks/trades/latest?symbols=SYMBOL`; None when Alpaca has no trade (a
        symbol it does not know is left out of its answer)."""
        request = StockLatestTradeRequest(symbol_or_symbols=symbol)
        trades = await self.call(
            "get latest trade", self.client.get_stock_latest_trade, request, retry=False
        )
        return cast(dict[str, Trade], trades).get(symbol)

    async def latest_quote(self, symbol: str) -> Quote | None:
        """`GET /v2/stocks/quotes/latest?symbols=SYMBOL`; None when Alpaca has no quote."""
        request = StockLatestQuoteRequest(symbol_or_symbols=symbol)
        quotes = await self.call(
            "get latest quote", self.client.get_stock_latest_quote, request, retry=False
        )
        return cast(dict[str, Quote], quotes).get(symbol)
