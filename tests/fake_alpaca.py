"""A fake Alpaca on a free loopback port: the REST API (`/v2/...`), the trade_updates
websocket (`/stream`) and the market data API's latest trade and quote
(`/v2/stocks/{trades,quotes}/latest`, served on the same port: `data_url`), close enough to
Alpaca that alpaca-py's real clients and models accept every answer (UUID ids, decimal strings,
non-null timestamps, nanosecond data timestamps, Alpaca's error bodies, binary JSON frames, the
rate-limit headers), with fault injection for the tests:

- `fail(method, path, status, times, after=...)`: 500s (or any status), before the request is
  handled or after (the order is placed but the answer is lost);
- `stall(method, path, seconds, times, after=...)`: a server that does not answer in time;
- `set_rate_limit(limit, window, api=...)`: Alpaca's request budget with 429s and
  `X-Ratelimit-*` headers (the trading and the market data API count separately, as at Alpaca);
- `set_price(symbol, price, trade=...)`, `set_quote(symbol, bid, ask)`: the market; a symbol
  with neither trade nor quote is unknown to the data API (left out of its answer);
- `drop_streams()`, `accept_streams = False`: dropped and refused websockets;
- `hold_events()` / `release_events(reverse=..., duplicate=...)`: out-of-order and repeated
  trade updates; `fill(...)` for (partial) fills; `omit_timestamp` for a malformed update.

It runs uvicorn in a thread of its own; the tests change its state through the methods here
(each takes the lock, and anything that must reach a websocket is run on the server's loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

API_KEY = "PKFAKE0123456789ABCD"
SECRET_KEY = "fake-secret-0123456789abcdefghijklmnopqrstuv"

FAST = {
    "ALPACA_HTTP_TIMEOUT": "0.5",
    "ALPACA_BACKOFF_MIN": "0.05",
    "ALPACA_BACKOFF_MAX": "0.2",
    "ALPACA_POLL_INTERVAL": "0.1",
    "ALPACA_RECONCILE_INTERVAL": "60",
    "ORDER_TIMEOUT": "1",
}
"""Settings that keep the tests short: timeouts, backoffs and polls of a fraction of a second
(reconciliation runs at start, after reconnects, and when a test asks)."""

DATA_PATHS = ("/v2/stocks/",)
"""The market data API's paths (a budget of their own)."""
SYMBOLS = re.compile(r"[A-Z][A-Z0-9.]{0,15}")

OPEN_STATUSES = frozenset(
    {"new", "accepted", "pending_new", "partially_filled", "pending_cancel", "held"}
)


async def eventually(condition: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


def nanosecond_iso(at: float | None = None) -> str:
    """A time as the market data API writes it: RFC 3339 with nanoseconds."""
    ns = time.time_ns() if at is None else int(at * 1e9)
    seconds, fraction = divmod(ns, 1_000_000_000)
    stamp = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{fraction:09d}Z"


def decimal(value: float) -> str:
    """A number as Alpaca writes it: a decimal string."""
    return format(value, "f").rstrip("0").rstrip(".") if value % 1 else str(int(value))


def error(status: int, message: str, code: int | None = None) -> JSONResponse:
    """Alpaca's error body. A 401 has no `code` (alpaca-py's APIError.code raises on it)."""
    body: dict[str, Any] = {"message": message}
    if code is not None:
        body["code"] = code
    return JSONResponse(body, status_code=status)


@dataclass
class Fault:
    method: str
    path: str
    status: int = 500
    times: int = 1
    after: bool = False
    """Handle the request, then answer with the fault (the answer is lost)."""
    stall: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)

    def matches(self, method: str, path: str) -> bool:
        return self.times > 0 and self.method == method and path.startswith(self.path)


@dataclass
class Window:
    """A request budget: `limit` requests per `window` seconds."""

    limit: int = 200
    window: float = 60.0
    start: float = field(default_factory=time.monotonic)
    count: int = 0


@dataclass
class Position:
    qty: float = 0.0
    avg_entry_price: float = 0.0
    asset_id: str = field(default_factory=lambda: str(uuid.uuid4()))


class FakeAlpaca:
    """Start with `with FakeAlpaca() as fake:`; `fake.base_url` and `fake.stream_url` are the
    values of ALPACA_BASE_URL and ALPACA_STREAM_URL."""

    def __init__(self, api_key: str = API_KEY, secret_key: str = SECRET_KEY) -> None:
        self.api_key = api_key
        self.secret_key = secret_key
        self.stream_secret_key: str | None = None
        """When set, the stream accepts this secret instead (a key rotated under it)."""
        self.lock = threading.RLock()
        self.account_id = str(uuid.uuid4())
        self.cash = 100_000.0
        self.last_equity = 100_000.0
        self.orders: dict[str, dict[str, Any]] = {}
        self.by_client_id: dict[str, str] = {}
        self.positions: dict[str, Position] = {}
        self.prices: dict[str, float] = {}
        self.trades: dict[str, dict[str, Any]] = {}
        """The latest trade per symbol, as the market data API writes it."""
        self.quotes: dict[str, dict[str, Any]] = {}
        self.configuration: dict[str, Any] = {
            "dtbp_check": "entry",
            "fractional_trading": True,
            "max_margin_multiplier": "4",
            "no_shorting": False,
            "pdt_check": "entry",
            "suspend_trade": False,
            "trade_confirm_email": "all",
            "ptp_no_exception_entry": False,
            "max_options_trading_level": None,
        }
        self.auto_fill = True
        """Market orders fill in full at the symbol's price as soon as they are accepted."""
        self.requests: list[tuple[str, str, dict[str, Any]]] = []
        self.faults: list[Fault] = []
        self.windows = {"trading": Window(), "data": Window()}
        self.rate_limited = 0
        self.accept_streams = True
        self.stream_connections = 0
        self.stream_auth_failures = 0
        self.omit_timestamp = False
        self.events: list[dict[str, Any]] = []
        self._held: list[dict[str, Any]] | None = None
        self._clients: set[WebSocket] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # ---- running ----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stream_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/stream"

    @property
    def data_url(self) -> str:
        """ALPACA_DATA_URL: the market data API is served on the same port."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeAlpaca:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app(),
            log_level="warning",
            lifespan="off",
            ws="websockets-sansio",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        server = self._server

        async def serve() -> None:
            self.loop = asyncio.get_running_loop()
            await server.serve(sockets=[sock])

        self._thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake Alpaca did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        with contextlib.suppress(Exception):
            self.drop_streams()
        self._server.should_exit = True
        self._thread.join(5)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(5)

    def __enter__(self) -> FakeAlpaca:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def on_loop(self, coroutine: Awaitable[Any]) -> Any:
        """Runs a coroutine on the server's loop from the test's thread."""
        assert self.loop is not None

        async def run() -> Any:
            return await coroutine

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    # ---- fault injection and test helpers ---------------------------------------------

    def fail(
        self,
        method: str,
        path: str,
        status: int = 500,
        *,
        times: int = 1,
        after: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        with self.lock:
            self.faults.append(Fault(method, path, status, times, after, 0.0, headers or {}))

    def set_rate_limit(self, limit: int, window: float, api: str = "trading") -> None:
        """Alpaca's budget of `limit` requests per `window` seconds, starting now, for the
        trading API or (`api="data"`) the market data API."""
        with self.lock:
            self.windows[api] = Window(limit, window)

    def stall(
        self, method: str, path: str, seconds: float, *, times: int = 1, after: bool = False
    ) -> None:
        with self.lock:
            self.faults.append(Fault(method, path, 0, times, after, seconds))

    def requested(self, method: str, path: str) -> list[dict[str, Any]]:
        """The parameters (query or JSON body) of every such request, in order."""
        with self.lock:
            return [params for m, p, params in self.requests if m == method and p == path]

    def set_price(
        self, symbol: str, price: float, *, trade: bool = True, at: float | None = None
    ) -> None:
        """The symbol's price (fills, positions, equity) and, with `trade`, its latest trade
        on the data API (at Unix time `at`, default now)."""
        with self.lock:
            self.prices[symbol] = price
            if trade:
                self.trades[symbol] = {
                    "c": ["@"],
                    "i": int(time.time_ns() % 10**14),
                    "p": price,
                    "s": 100,
                    "t": nanosecond_iso(at),
                    "x": "V",
                    "z": "C",
                }

    def set_quote(self, symbol: str, bid: float, ask: float, at: float | None = None) -> None:
        """The symbol's latest quote on the data API (0 for a missing side)."""
        with self.lock:
            self.quotes[symbol] = {
                "ap": ask,
                "as": 2 if ask else 0,
                "ax": "V" if ask else "",
                "bp": bid,
                "bs": 3 if bid else 0,
                "bx": "V" if bid else "",
                "c": ["R"],
                "t": nanosecond_iso(at),
                "z": "C",
            }

    def account_figures(self) -> tuple[float, float]:
        """(equity, last_equity) as `GET /v2/account` answers them now."""
        with self.lock:
            equity = self.cash + sum(
                p.qty * self.prices.get(s, p.avg_entry_price) for s, p in self.positions.items()
            )
            return round(equity, 2), self.last_equity

    def order(self, client_order_id: str) -> dict[str, Any]:
        with self.lock:
            return dict(self.orders[self.by_client_id[client_order_id]])

    def open_orders(self) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(o) for o in self.orders.values() if o["status"] in OPEN_STATUSES]

    def position_qty(self, symbol: str) -> float:
        with self.lock:
            position = self.positions.get(symbol)
            return 0.0 if position is None else position.qty

    def fill(
        self, client_order_id: str, qty: float | None = None, price: float | None = None
    ) -> dict[str, Any]:
        """Executes (part of) an order and sends its trade update; returns the update."""

        async def run() -> dict[str, Any]:
            with self.lock:
                order = self.orders[self.by_client_id[client_order_id]]
                remaining = float(order["qty"]) - float(order["filled_qty"])
                fill_price = price if price is not None else self._price_for(order)
                assert fill_price is not None, "no price to fill at"
                update = self._execute(order, remaining if qty is None else qty, fill_price)
            await self._publish(update)
            return update

        result: dict[str, Any] = self.on_loop(run())
        return result

    def add_foreign_position(self, symbol: str, qty: float, price: float) -> None:
        """A position nobody told tradeengine about (another process, a manual trade)."""
        with self.lock:
            self.positions[symbol] = Position(qty=qty, avg_entry_price=price)
            self.prices.setdefault(symbol, price)

    def add_foreign_order(self, symbol: str, qty: float, limit_price: float) -> dict[str, Any]:
        with self.lock:
            return self._create(
                {
                    "symbol": symbol,
                    "qty": qty,
                    "side": "buy",
                    "type": "limit",
                    "time_in_force": "day",
                    "limit_price": limit_price,
                    "client_order_id": f"web-{uuid.uuid4()}",
                },
                status="new",
            )

    def send(self, update: dict[str, Any]) -> None:
        """Sends a trade update as is (again, or late)."""
        self.on_loop(self._publish(update))

    def hold_events(self) -> None:
        """Keeps trade updates back until `release_events`."""
        with self.lock:
            self._held = []

    def release_events(self, *, reverse: bool = False, duplicate: bool = False) -> None:
        with self.lock:
            held, self._held = self._held or [], None
        if reverse:
            held.reverse()
        for update in held:
            self.send(update)
            if duplicate:
                self.send(update)

    def drop_streams(self) -> None:
        """Closes every trade_updates connection (the clients reconnect if they may)."""

        async def drop() -> None:
            for client in list(self._clients):
                with contextlib.suppress(Exception):
                    await client.close(code=1011)
            self._clients.clear()

        self.on_loop(drop())

    @property
    def stream_clients(self) -> int:
        return len(self._clients)

    # ---- the market ---------------------------------------------------------------------

    def _price_for(self, order: dict[str, Any]) -> float | None:
        mark = self.prices.get(order["symbol"])
        if order["type"] == "limit":
            limit = float(order["limit_price"])
            if mark is None:
                return None
            marketable = mark <= limit if order["side"] == "buy" else mark >= limit
            return mark if marketable else None
        return mark if order["type"] == "market" else None

    def _execute(self, order: dict[str, Any], qty: float, price: float) -> dict[str, Any]:
        filled = float(order["filled_qty"])
        average = float(order["filled_avg_price"] or 0.0)
        total = filled + qty
        order["filled_avg_price"] = decimal(round((average * filled + price * qty) / total, 6))
        order["filled_qty"] = decimal(total)
        done = total >= float(order["qty"]) - 1e-9
        order["status"] = "filled" if done else "partially_filled"
        order["updated_at"] = now_iso()
        if done:
            order["filled_at"] = order["updated_at"]
        signed = qty if order["side"] == "buy" else -qty
        self.cash -= signed * price
        position = self.positions.setdefault(order["symbol"], Position())
        new_qty = position.qty + signed
        if abs(new_qty) < 1e-9:
            del self.positions[order["symbol"]]
        else:
            if position.qty == 0 or (position.qty > 0) == (signed > 0):
                position.avg_entry_price = (
                    position.avg_entry_price * abs(position.qty) + price * abs(signed)
                ) / abs(new_qty)
            elif (position.qty > 0) != (new_qty > 0):
                position.avg_entry_price = price
            position.qty = new_qty
        return self._update(
            "fill" if done else "partial_fill",
            order,
            execution_id=str(uuid.uuid4()),
            price=decimal(price),
            qty=decimal(qty),
            position_qty=decimal(self.positions.get(order["symbol"], Position()).qty),
        )

    def _update(self, event: str, order: dict[str, Any], **extra: Any) -> dict[str, Any]:
        data: dict[str, Any] = {"event": event, "order": dict(order), **extra}
        if not self.omit_timestamp:
            data["timestamp"] = now_iso()
        return {"stream": "trade_updates", "data": data}

    async def _publish(self, update: dict[str, Any]) -> None:
        with self.lock:
            self.events.append(update)
            if self._held is not None:
                self._held.append(update)
                return
            clients = list(self._clients)
        frame = json.dumps(update).encode()
        for client in clients:
            try:
                await client.send_bytes(frame)
            except Exception:
                self._clients.discard(client)

    def _create(self, body: dict[str, Any], status: str = "accepted") -> dict[str, Any]:
        at = now_iso()
        order_type = body.get("type", "market")
        order = {
            "id": str(uuid.uuid4()),
            "client_order_id": body.get("client_order_id") or str(uuid.uuid4()),
            "created_at": at,
            "updated_at": at,
            "submitted_at": at,
            "filled_at": None,
            "expired_at": None,
            "expires_at": None,
            "canceled_at": None,
            "failed_at": None,
            "replaced_at": None,
            "replaced_by": None,
            "replaces": None,
            "asset_id": self.positions.get(body["symbol"], Position()).asset_id,
            "symbol": body["symbol"],
            "asset_class": "us_equity",
            "notional": None,
            "qty": decimal(float(body["qty"])),
            "filled_qty": "0",
            "filled_avg_price": None,
            "order_class": "simple",
            "order_type": order_type,
            "type": order_type,
            "side": body["side"],
            "position_intent": "buy_to_open" if body["side"] == "buy" else "sell_to_close",
            "time_in_force": body.get("time_in_force", "day"),
            "limit_price": None
            if body.get("limit_price") is None
            else decimal(float(body["limit_price"])),
            "stop_price": None
            if body.get("stop_price") is None
            else decimal(float(body["stop_price"])),
            "status": status,
            "extended_hours": False,
            "legs": None,
            "trail_percent": None,
            "trail_price": None,
            "hwm": None,
        }
        self.orders[order["id"]] = order
        self.by_client_id[order["client_order_id"]] = order["id"]
        return order

    async def _work(self, order_id: str) -> None:
        """What the exchange does with a new order: `new`, then a fill if it is marketable."""
        await asyncio.sleep(0)
        with self.lock:
            order = self.orders[order_id]
            if order["status"] != "accepted":
                return
            order["status"] = "new"
            order["updated_at"] = now_iso()
            updates = [self._update("new", order)]
            price = self._price_for(order) if self.auto_fill else None
            if price is not None:
                updates.append(self._execute(order, float(order["qty"]), price))
        for update in updates:
            await self._publish(update)

    async def _cancel(self, order: dict[str, Any]) -> None:
        with self.lock:
            order["status"] = "canceled"
            order["canceled_at"] = order["updated_at"] = now_iso()
            update = self._update("canceled", order)
        await self._publish(update)

    # ---- the REST API -------------------------------------------------------------------

    def app(self) -> Starlette:
        handlers: list[tuple[str, str, Callable[[Request], Awaitable[Response]]]] = [
            ("/v2/account", "GET", self.get_account),
            ("/v2/clock", "GET", self.get_clock),
            ("/v2/account/configurations", "GET", self.get_configuration),
            ("/v2/account/configurations", "PATCH", self.patch_configuration),
            ("/v2/orders", "POST", self.post_order),
            ("/v2/orders", "GET", self.list_orders),
            ("/v2/orders", "DELETE", self.cancel_all),
            ("/v2/orders:by_client_order_id", "GET", self.get_by_client_id),
            ("/v2/orders/{order_id}", "GET", self.get_order),
            ("/v2/orders/{order_id}", "DELETE", self.cancel_order),
            ("/v2/positions", "GET", self.list_positions),
            ("/v2/positions", "DELETE", self.close_all),
            ("/v2/stocks/trades/latest", "GET", self.latest_trades),
            ("/v2/stocks/quotes/latest", "GET", self.latest_quotes),
        ]
        routes: list[Any] = [
            Route(path, self._guarded(handler), methods=[method])
            for path, method, handler in handlers
        ]
        routes.append(WebSocketRoute("/stream", self.stream))
        return Starlette(routes=routes)

    def _guarded(
        self, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            method, path = request.method, request.url.path
            params: dict[str, Any] = dict(request.query_params)
            if method in ("POST", "PATCH"):
                params = await request.json()
            with self.lock:
                self.requests.append((method, path, params))
                fault = next((f for f in self.faults if f.matches(method, path)), None)
                if fault is not None:
                    fault.times -= 1
            headers = request.headers
            if (
                headers.get("APCA-API-KEY-ID") != self.api_key
                or headers.get("APCA-API-SECRET-KEY") != self.secret_key
            ):
                return error(401, "unauthorized.")
            api = "data" if path.startswith(DATA_PATHS) else "trading"
            limited = self._count_request(api)
            if limited is not None:
                return limited
            if fault is not None and not fault.after:
                return await self._fault(fault)
            response = await handler(request)
            if fault is not None:
                return await self._fault(fault)
            response.headers.update(self._rate_headers(api))
            return response

        return endpoint

    async def _fault(self, fault: Fault) -> Response:
        if fault.stall:
            await asyncio.sleep(fault.stall)
        if fault.status == 429:
            response = error(429, "rate limit exceeded", 42910000)
        else:
            response = error(fault.status or 500, "internal server error occurred", 50010000)
        response.headers.update(fault.headers)
        return response

    def _count_request(self, api: str) -> Response | None:
        with self.lock:
            window = self.windows[api]
            now = time.monotonic()
            if now - window.start >= window.window:
                window.start, window.count = now, 0
            window.count += 1
            if window.count <= window.limit:
                return None
            self.rate_limited += 1
        response = error(429, "rate limit exceeded", 42910000)
        response.headers.update(self._rate_headers(api))
        return response

    def _rate_headers(self, api: str) -> dict[str, str]:
        with self.lock:
            window = self.windows[api]
            reset = time.time() + window.window - (time.monotonic() - window.start)
            return {
                "X-Ratelimit-Limit": str(window.limit),
                "X-Ratelimit-Remaining": str(max(window.limit - window.count, 0)),
                "X-Ratelimit-Reset": f"{reset:.3f}",
            }

    # ---- the market data API ----------------------------------------------------------------

    def _latest(self, request: Request, key: str, book: dict[str, dict[str, Any]]) -> Response:
        """`{"trades": {"AAPL": {...}}}`: the symbols asked for that have data; one the data API
        does not know is left out (not an error), a malformed one is a 400."""
        symbols = [s for s in request.query_params.get("symbols", "").split(",") if s]
        if not symbols:
            return error(400, "missing symbols", 40010001)
        bad = [s for s in symbols if not SYMBOLS.fullmatch(s)]
        if bad:
            return error(400, f"invalid symbol: {bad[0]}", 40010001)
        with self.lock:
            found = {s: dict(book[s]) for s in symbols if s in book}
        return JSONResponse({key: found})

    async def latest_trades(self, request: Request) -> Response:
        return self._latest(request, "trades", self.trades)

    async def latest_quotes(self, request: Request) -> Response:
        return self._latest(request, "quotes", self.quotes)

    # ---- the trading API ------------------------------------------------------------------

    async def get_account(self, request: Request) -> Response:
        with self.lock:
            market_value = sum(
                p.qty * self.prices.get(s, p.avg_entry_price) for s, p in self.positions.items()
            )
            equity = self.cash + market_value
            longs = sum(
                p.qty * self.prices.get(s, p.avg_entry_price)
                for s, p in self.positions.items()
                if p.qty > 0
            )
            return JSONResponse(
                {
                    "id": self.account_id,
                    "account_number": "PA3FAKE00001",
                    "status": "ACTIVE",
                    "crypto_status": "ACTIVE",
                    "currency": "USD",
                    "buying_power": decimal(round(equity * 2, 2)),
                    "regt_buying_power": decimal(round(equity * 2, 2)),
                    "daytrading_buying_power": decimal(round(equity * 4, 2)),
                    "non_marginable_buying_power": decimal(round(self.cash, 2)),
                    "cash": decimal(round(self.cash, 2)),
                    "accrued_fees": "0",
                    "pending_transfer_in": "0",
                    "portfolio_value": decimal(round(equity, 2)),
                    "pattern_day_trader": False,
                    "trading_blocked": False,
                    "transfers_blocked": False,
                    "account_blocked": False,
                    "created_at": "2024-01-02T15:04:05.123456Z",
                    "trade_suspended_by_user": self.configuration["suspend_trade"],
                    "multiplier": "2",
                    "shorting_enabled": True,
                    "equity": decimal(round(equity, 2)),
                    "last_equity": decimal(self.last_equity),
                    "long_market_value": decimal(round(longs, 2)),
                    "short_market_value": decimal(round(market_value - longs, 2)),
                    "initial_margin": "0",
                    "maintenance_margin": "0",
                    "last_maintenance_margin": "0",
                    "sma": "0",
                    "daytrade_count": 0,
                }
            )

    async def get_clock(self, request: Request) -> Response:
        now = dt.datetime.now(dt.UTC)
        return JSONResponse(
            {
                "timestamp": now.isoformat(),
                "is_open": True,
                "next_open": (now + dt.timedelta(hours=18)).isoformat(),
                "next_close": (now + dt.timedelta(hours=2)).isoformat(),
            }
        )

    async def get_configuration(self, request: Request) -> Response:
        with self.lock:
            return JSONResponse(dict(self.configuration))

    async def patch_configuration(self, request: Request) -> Response:
        body = await request.json()
        with self.lock:
            for key, value in body.items():
                if key in self.configuration:
                    self.configuration[key] = value
            return JSONResponse(dict(self.configuration))

    async def post_order(self, request: Request) -> Response:
        body = await request.json()
        with self.lock:
            if self.configuration["suspend_trade"]:
                return error(403, "trading is suspended for this account", 40310000)
            client_order_id = body.get("client_order_id")
            if client_order_id and client_order_id in self.by_client_id:
                return error(422, "client_order_id must be unique", 40010001)
            if body.get("type") in ("limit", "stop_limit") and body.get("limit_price") is None:
                return error(422, "limit_price is required", 40010001)
            order = self._create(body)
            snapshot = dict(order)
        asyncio.get_running_loop().create_task(self._work(order["id"]))
        return JSONResponse(snapshot)

    async def list_orders(self, request: Request) -> Response:
        status = request.query_params.get("status", "open")
        limit = int(request.query_params.get("limit", "50"))
        with self.lock:
            orders = list(self.orders.values())
            if status == "open":
                orders = [o for o in orders if o["status"] in OPEN_STATUSES]
            elif status == "closed":
                orders = [o for o in orders if o["status"] not in OPEN_STATUSES]
            orders.sort(key=lambda o: str(o["created_at"]), reverse=True)
            return JSONResponse([dict(o) for o in orders[:limit]])

    async def get_by_client_id(self, request: Request) -> Response:
        with self.lock:
            order_id = self.by_client_id.get(request.query_params.get("client_order_id", ""))
            if order_id is None:
                return error(404, "order not found", 40410000)
            return JSONResponse(dict(self.orders[order_id]))

    async def get_order(self, request: Request) -> Response:
        with self.lock:
            order = self.orders.get(request.path_params["order_id"])
            if order is None:
                return error(404, "order not found", 40410000)
            return JSONResponse(dict(order))

    async def cancel_order(self, request: Request) -> Response:
        with self.lock:
            order = self.orders.get(request.path_params["order_id"])
            if order is None:
                return error(404, "order not found", 40410000)
            if order["status"] not in OPEN_STATUSES:
                return error(422, f'order is already in "{order["status"]}" state', 42210000)
            order["status"] = "pending_cancel"
        asyncio.get_running_loop().create_task(self._cancel(order))
        return Response(status_code=204)

    async def cancel_all(self, request: Request) -> Response:
        with self.lock:
            orders = [o for o in self.orders.values() if o["status"] in OPEN_STATUSES]
            for order in orders:
                order["status"] = "pending_cancel"
        for order in orders:
            await self._cancel(order)
        return JSONResponse(
            [{"id": o["id"], "status": 200, "body": None} for o in orders], status_code=207
        )

    def _position(self, symbol: str, position: Position) -> dict[str, Any]:
        price = self.prices.get(symbol, position.avg_entry_price)
        qty = position.qty
        cost = qty * position.avg_entry_price
        value = qty * price
        return {
            "asset_id": position.asset_id,
            "symbol": symbol,
            "exchange": "NASDAQ",
            "asset_class": "us_equity",
            "asset_marginable": True,
            "avg_entry_price": decimal(round(position.avg_entry_price, 6)),
            "qty": decimal(qty),
            "qty_available": decimal(qty),
            "side": "long" if qty > 0 else "short",
            "market_value": decimal(round(value, 2)),
            "cost_basis": decimal(round(cost, 2)),
            "unrealized_pl": decimal(round(value - cost, 2)),
            "unrealized_plpc": decimal(round((value - cost) / abs(cost), 6)) if cost else "0",
            "unrealized_intraday_pl": decimal(round(value - cost, 2)),
            "unrealized_intraday_plpc": "0",
            "current_price": decimal(price),
            "lastday_price": decimal(price),
            "change_today": "0",
        }

    async def list_positions(self, request: Request) -> Response:
        with self.lock:
            return JSONResponse([self._position(s, p) for s, p in sorted(self.positions.items())])

    async def close_all(self, request: Request) -> Response:
        if request.query_params.get("cancel_orders", "").lower() == "true":
            await self.cancel_all(request)
        results = []
        created = []
        with self.lock:
            for symbol, position in sorted(self.positions.items()):
                if self.configuration["suspend_trade"]:
                    failure = {"code": 40310000, "message": "trading is suspended"}
                    results.append({"symbol": symbol, "status": 403, "body": failure})
                    continue
                order = self._create(
                    {
                        "symbol": symbol,
                        "qty": abs(position.qty),
                        "side": "sell" if position.qty > 0 else "buy",
                        "type": "market",
                        "time_in_force": "day",
                    }
                )
                created.append(order["id"])
                results.append(
                    {"symbol": symbol, "status": 200, "order_id": order["id"], "body": dict(order)}
                )
        for order_id in created:
            await self._work(order_id)
        return JSONResponse(results, status_code=207)

    # ---- the trade_updates websocket ----------------------------------------------------

    async def stream(self, websocket: WebSocket) -> None:
        await websocket.accept()
        with self.lock:
            self.stream_connections += 1
            accept = self.accept_streams
        if not accept:
            await websocket.close(code=1011)
            return
        try:
            auth = json.loads(await websocket.receive_text())
            data = auth.get("data", {})
            if (
                auth.get("action") != "authenticate"
                or data.get("key_id") != self.api_key
                or data.get("secret_key") != (self.stream_secret_key or self.secret_key)
            ):
                with self.lock:
                    self.stream_auth_failures += 1
                await self._send(websocket, "authorization", status="unauthorized")
                await websocket.close(code=1008)
                return
            await self._send(websocket, "authorization", status="authorized")
            while True:
                message = json.loads(await websocket.receive_text())
                if message.get("action") == "listen":
                    streams = message.get("data", {}).get("streams", [])
                    await self._send(websocket, "listening", streams=streams)
                    if "trade_updates" in streams:
                        self._clients.add(websocket)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            self._clients.discard(websocket)

    async def _send(self, websocket: WebSocket, stream: str, **data: Any) -> None:
        if stream == "authorization":
            data["action"] = "authenticate"
        await websocket.send_bytes(json.dumps({"stream": stream, "data": data}).encode())
