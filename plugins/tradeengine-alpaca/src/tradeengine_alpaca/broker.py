"""The Alpaca broker: orders over alpaca-py's REST client, fills from its trade_updates stream,
reconciliation against the journal, and the kill switch mirrored at Alpaca.

Life cycle. `start()` (called by the engine) checks the keys with one account call and fails
the engine's start if Alpaca does not answer: nothing trades blind. `attach(view)` (called from
the `on_start` hook, once the engine can be read) then loads the journal's open orders, opens
the stream, reconciles, and only then lets orders through. While the stream is down, and for
orders unacknowledged past ORDER_TIMEOUT, open orders are polled by id; every reconnect and
every ALPACA_RECONCILE_INTERVAL seconds the open orders and positions at Alpaca are compared
with the journal again. A difference that polling cannot explain engages the kill switch.

Prices. The engine asks `latest_price(symbol)` before a market order when its mark is missing
or older than MARK_MAX_AGE (Alpaca's market data API: the latest trade, else the latest quote's
midpoint), and `account_equity()` once at start to seed its book with the account's equity.
What Alpaca sends anyway is fed to the engine as marks: the price of every fill on the stream
and the `current_price` of every position read by reconciliation.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import time
from collections.abc import Coroutine, Mapping
from typing import Any

from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.models import Order as AlpacaOrder
from alpaca.trading.models import TradeAccount
from alpaca.trading.requests import (
    LimitOrderRequest,
    MarketOrderRequest,
    StopLimitOrderRequest,
    StopOrderRequest,
)
from alpaca.trading.requests import OrderRequest as AlpacaOrderRequest

from tradeengine.broker import BrokerContext
from tradeengine.errors import EngineError
from tradeengine.hookspecs import hookimpl
from tradeengine.schemas import (
    BrokerCanceled,
    BrokerEvent,
    BrokerFill,
    BrokerRejected,
    KillSwitchState,
    Order,
    utc_now,
)
from tradeengine_alpaca.journal_view import JournalView
from tradeengine_alpaca.ledger import Ledger, Snapshot, TradeUpdate
from tradeengine_alpaca.rest import AlpacaData, AlpacaError, AlpacaRest, backoff, stream_url
from tradeengine_alpaca.stream import TradeUpdateStream

log = logging.getLogger("tradeengine_alpaca")

MAX_OPEN_ORDERS_LISTED = 500  # Alpaca's largest page of GET /v2/orders
POSITION_EPSILON = 1e-6


def _iso(at: float | None) -> str | None:
    if at is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1e6):06d}Z"


def _decimal(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


def _price(value: float | None) -> float | None:
    """A usable price: finite and above 0."""
    return value if value is not None and math.isfinite(value) and value > 0 else None


def _unix(timestamp: str | dt.datetime | None) -> float | None:
    """Alpaca's RFC 3339 time (nanoseconds are cut to microseconds) as a Unix time."""
    if not timestamp:
        return None
    try:
        if isinstance(timestamp, str):
            timestamp = dt.datetime.fromisoformat(timestamp)
        if timestamp.tzinfo is None:
            timestamp = timestamp.replace(tzinfo=dt.UTC)
        return timestamp.timestamp()
    except (TypeError, ValueError, OverflowError):
        return None


def account_summary(account: TradeAccount) -> dict[str, Any]:
    """The account as an operator reads it; `last_equity` (yesterday's close) is the baseline
    of the day's PnL. No ids, no account number."""
    equity = _decimal(account.equity)
    last_equity = _decimal(account.last_equity)
    daily_pnl = None if equity is None or last_equity is None else equity - last_equity
    return {
        "status": str(getattr(account.status, "value", account.status)),
        "currency": account.currency,
        "equity": equity,
        "last_equity": last_equity,
        "daily_pnl": daily_pnl,
        "cash": _decimal(account.cash),
        "buying_power": _decimal(account.buying_power),
        "trading_blocked": account.trading_blocked,
        "account_blocked": account.account_blocked,
        "trade_suspended_by_user": account.trade_suspended_by_user,
    }


def order_request(order: Order) -> AlpacaOrderRequest:
    """Our order as alpaca-py's request, with our client_order_id (the idempotency key)."""
    common: dict[str, Any] = {
        "symbol": order.symbol,
        "qty": order.qty,
        "side": OrderSide(order.side),
        "time_in_force": TimeInForce(order.time_in_force),
        "client_order_id": order.client_order_id,
    }
    if order.type == "market":
        return MarketOrderRequest(**common)
    if order.type == "limit":
        return LimitOrderRequest(limit_price=order.limit_price, **common)
    if order.type == "stop":
        return StopOrderRequest(stop_price=order.stop_price, **common)
    return StopLimitOrderRequest(
        limit_price=order.limit_price, stop_price=order.stop_price, **common
    )


class AlpacaBroker:
    """Broker `alpaca`. Registered by the plugin's `register_brokers`; see the module doc."""

    name = "alpaca"

    def __init__(self, context: BrokerContext) -> None:
        settings = context.settings
        if not (settings.alpaca_api_key and settings.alpaca_secret_key):
            raise EngineError(
                "BROKER=alpaca needs ALPACA_API_KEY and ALPACA_SECRET_KEY",
                code="broker_misconfigured",
            )
        self.context = context
        self.settings = settings
        self.paper = settings.trading_mode == "paper"
        self.rest = AlpacaRest(
            api_key=settings.alpaca_api_key,
            secret_key=settings.alpaca_secret_key,
            paper=self.paper,
            base_url=settings.alpaca_base_url,
            executor=context.executor,
            timeout=settings.alpaca_http_timeout,
            max_requests_per_minute=settings.alpaca_max_requests_per_minute,
            backoff_min=settings.alpaca_backoff_min,
            backoff_max=settings.alpaca_backoff_max,
        )
        self.data = AlpacaData(
            api_key=settings.alpaca_api_key,
            secret_key=settings.alpaca_secret_key,
            data_url=settings.alpaca_data_url,
            executor=context.executor,
            timeout=settings.alpaca_http_timeout,
            max_requests_per_minute=settings.alpaca_max_requests_per_minute,
            backoff_min=settings.alpaca_backoff_min,
            backoff_max=settings.alpaca_backoff_max,
        )
        self.stream = TradeUpdateStream(
            api_key=settings.alpaca_api_key,
            secret_key=settings.alpaca_secret_key,
            paper=self.paper,
            url=stream_url(settings.alpaca_stream_url, settings.alpaca_base_url),
            handler=self._on_message,
            on_change=self._on_stream_change,
            backoff_min=settings.alpaca_backoff_min,
            backoff_max=settings.alpaca_backoff_max,
            open_timeout=settings.alpaca_http_timeout,
        )
        self.ledger = Ledger(keep=max(settings.cache_size, 1000))
        self.view: JournalView | None = None
        self.ready = asyncio.Event()
        self.account: dict[str, Any] = {}
        self.reconciliation: dict[str, Any] = {"state": "pending", "runs": 0, "differences": []}
        self.suspend_trade: dict[str, Any] = {"wanted": None, "set": None, "error": None}
        self._suspend_lock = asyncio.Lock()
        self._reconcile_lock = asyncio.Lock()
        self._loops: list[asyncio.Task[None]] = []
        self._pending: set[asyncio.Task[Any]] = set()
        self._cancel_after_submit: set[str] = set()
        self._published: bool | None = None
        self._last_mismatch = ""
        self._stopped = False
        self._priced_at: dict[str, float] = {}
        """Per symbol, the (Unix) time of the newest price given to the engine: an older one
        never replaces it."""
        self.market_data: dict[str, Any] = {"prices": 0, "no_price": 0, "marks_fed": 0}

    # ---- life cycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Checks the keys and the endpoint with one account call (fails the start if not)."""
        try:
            account = await self.rest.account()
        except AlpacaError as exc:
            raise EngineError(
                f"cannot use Alpaca at {self.rest.endpoint}: {exc.message}",
                code="broker_unavailable",
                status=503,
            ) from None
        self.account = account_summary(account)
        if account.trading_blocked or account.account_blocked:
            log.error("ERROR Alpaca account is blocked: %s", self.account)
        log.info(
            "Alpaca %s account at %s: status=%s equity=%s",
            "paper" if self.paper else "LIVE",
            self.rest.endpoint,
            self.account["status"],
            self.account["equity"],
        )

    def attach(self, view: JournalView) -> asyncio.Task[None]:
        """Binds the broker to the engine's journal, then (in a task) loads the open orders,
        opens the stream, reconciles and lets orders through."""
        self.view = view
        view.set_connected(False)
        self._published = False
        task = asyncio.get_running_loop().create_task(self._begin(), name="alpaca-begin")
        self._loops.append(task)
        return task

    async def _begin(self) -> None:
        assert self.view is not None
        for order in await self.view.open_orders():
            self.ledger.track(order)
        self.stream.start()
        attempt = 0
        while not await self.reconcile("start"):
            attempt += 1
            await asyncio.sleep(
                backoff(attempt, self.settings.alpaca_backoff_min, self.settings.alpaca_backoff_max)
            )
        self.ready.set()
        if self.settings.alpaca_suspend_on_kill and self.view.halted():
            await self._apply_kill_switch(True)
        self._loops.append(asyncio.create_task(self._poll_loop(), name="alpaca-poll"))
        self._loops.append(asyncio.create_task(self._reconcile_loop(), name="alpaca-reconcile"))

    async def stop(self) -> None:
        self._stopped = True
        if self._pending:
            # A suspend_trade change in flight is finished, not abandoned.
            await asyncio.wait(self._pending, timeout=self.settings.alpaca_http_timeout * 2)
        for task in [*self._loops, *self._pending]:
            task.cancel()
        for task in [*self._loops, *self._pending]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._loops.clear()
        self._pending.clear()
        await self.stream.stop()
        self._publish()

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    async def settle(self) -> None:
        """Waits for the background work started so far (kill switch, reconnect): tests."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    # ---- orders -----------------------------------------------------------------------

    async def _emit(self, events: list[BrokerEvent]) -> None:
        for event in events:
            await self.context.emit(event)

    async def _wait_ready(self) -> None:
        if self.ready.is_set():
            return
        try:
            await asyncio.wait_for(self.ready.wait(), self.settings.order_timeout)
        except TimeoutError:
            raise AlpacaError(
                "Alpaca broker not ready: the reconciliation at start has not succeeded "
                f"({self.reconciliation.get('error') or 'still running'})"
            ) from None

    async def submit(self, order: Order) -> None:
        await self._wait_ready()
        tracked = self.ledger.track(order)
        tracked.liquidation = order.liquidation
        tracked.in_flight = True
        try:
            if order.liquidation and (self.suspend_trade["set"] or self.suspend_trade["wanted"]):
                placed = await self._place_while_suspended(order)
            else:
                placed = await self._place(order)
        finally:
            tracked.in_flight = False
        if placed is None:
            return
        await self._emit(self.ledger.on_snapshot(Snapshot.from_model(placed)))
        if order.client_order_id in self._cancel_after_submit:
            self._cancel_after_submit.discard(order.client_order_id)
            await self._cancel_at_alpaca(order.client_order_id, str(placed.id))

    async def _place(self, order: Order) -> AlpacaOrder | None:
        """Sends the order; retries a failed send only after asking Alpaca, by client order
        id, whether it has the order already. None when Alpaca refused it (reported)."""
        try:
            request = order_request(order)
        except ValueError as exc:  # alpaca-py checks the request before sending it
            await self.context.emit(BrokerRejected(order.client_order_id, str(exc)))
            return None
        attempts = self.rest.attempts
        for attempt in range(1, attempts + 1):
            try:
                return await self.rest.submit(request)
            except AlpacaError as exc:
                duplicate = exc.status == 422 and "client_order_id" in exc.message
                if not (exc.transient or duplicate):
                    log.warning(
                        "Alpaca refused order client_order_id=%s: %s", order.client_order_id, exc
                    )
                    await self.context.emit(BrokerRejected(order.client_order_id, exc.message))
                    return None
                existing = await self.lookup(order.client_order_id)
                if existing is not None:
                    log.info(
                        "Alpaca had order client_order_id=%s already (%s): not sent again",
                        order.client_order_id,
                        exc.message,
                    )
                    return existing
                if attempt == attempts:
                    raise
                wait = exc.retry_after
                if wait is None:
                    wait = backoff(
                        attempt, self.settings.alpaca_backoff_min, self.settings.alpaca_backoff_max
                    )
                log.warning(
                    "Alpaca does not have order client_order_id=%s after %s; sending again in "
                    "%.2fs",
                    order.client_order_id,
                    exc.message,
                    wait,
                )
                await asyncio.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _place_while_suspended(self, order: Order) -> AlpacaOrder | None:
        """A liquidation while the kill switch holds suspend_trade: Alpaca would refuse it, and
        liquidation is never blocked. Trading is resumed for this one order only."""
        async with self._suspend_lock:
            log.warning(
                "lifting Alpaca suspend_trade for liquidation order client_order_id=%s",
                order.client_order_id,
            )
            await self._set_suspend_trade(False)
            try:
                return await self._place(order)
            finally:
                if self.view is None or self.view.halted():
                    await self._set_suspend_trade(True)

    async def lookup(self, client_order_id: str) -> AlpacaOrder | None:
        """Alpaca's order with this client order id; None when Alpaca has none."""
        return await self.rest.order_by_client_id(client_order_id)

    async def cancel(self, order: Order) -> None:
        tracked = self.ledger.track(order)
        broker_order_id = order.broker_order_id or tracked.broker_order_id
        if broker_order_id is None:
            if tracked.in_flight:
                self._cancel_after_submit.add(order.client_order_id)
                return
            existing = await self.lookup(order.client_order_id)
            if existing is None:
                if tracked.in_flight:
                    self._cancel_after_submit.add(order.client_order_id)
                    return
                tracked.final_status = "canceled"
                await self.context.emit(
                    BrokerCanceled(order.client_order_id, "canceled before it reached Alpaca")
                )
                return
            snapshot = Snapshot.from_model(existing)
            await self._emit(self.ledger.on_snapshot(snapshot))
            if not snapshot.is_open:
                return
            broker_order_id = snapshot.broker_order_id
        await self._cancel_at_alpaca(order.client_order_id, broker_order_id)

    async def _cancel_at_alpaca(self, client_order_id: str, broker_order_id: str) -> None:
        """Asks Alpaca to cancel; the outcome comes on the stream (or by polling). An order
        Alpaca cannot cancel any more is read back, so its fills or end are reported."""
        try:
            await self.rest.cancel(broker_order_id)
        except AlpacaError as exc:
            if exc.status not in (404, 422):
                raise
            existing = await self.lookup(client_order_id)
            if existing is not None:
                await self._emit(self.ledger.on_snapshot(Snapshot.from_model(existing)))

    async def query(self, order: Order) -> list[BrokerEvent]:
        tracked = self.ledger.track(order)
        if tracked.in_flight:
            raise AlpacaError(f"order {order.client_order_id} is still being sent to Alpaca")
        existing = await self.lookup(order.client_order_id)
        if existing is None:
            return []
        return self.ledger.on_snapshot(Snapshot.from_model(existing))

    async def on_marks(self, prices: Mapping[str, float]) -> None:
        return None

    async def cancel_all(self) -> list[str]:
        """`DELETE /v2/orders`: asks Alpaca to cancel every open order of the account (ours
        and anyone else's). Returns the ids of the orders it accepted to cancel."""
        responses = await self.rest.cancel_all()
        return [str(r.id) for r in responses if r.status < 300]

    async def close_all_positions(self) -> list[str]:
        """`DELETE /v2/positions?cancel_orders=true`: Alpaca cancels every open order and sends
        a market order closing each position. Those orders are Alpaca's, not the journal's:
        the engine's `liquidate_all` (one journaled order per position) is the normal path;
        this is the last resort when the engine's books cannot be trusted. Returns the symbols
        Alpaca accepted to close."""
        responses = await self.rest.close_all_positions()
        return [str(r.symbol) for r in responses if r.status is not None and r.status < 300]

    # ---- prices and the account's equity ----------------------------------------------

    async def latest_price(self, symbol: str) -> float | None:
        """The latest trade of `symbol` from Alpaca's market data API, else its latest quote's
        midpoint; None (the engine then refuses the market order: no_mark) when Alpaca has
        neither or cannot be asked. One call each, never retried, within ALPACA_HTTP_TIMEOUT."""
        try:
            trade = await self.data.latest_trade(symbol)
            if trade is not None and _price(trade.price) is not None:
                return self._priced(symbol, trade.price, "trade", _unix(trade.timestamp))
            quote = await self.data.latest_quote(symbol)
        except AlpacaError as exc:
            self.market_data["no_price"] += 1
            log.warning("no price for %s from Alpaca's market data API: %s", symbol, exc)
            return None
        if quote is not None:
            bid, ask = _price(quote.bid_price), _price(quote.ask_price)
            if bid is not None and ask is not None and ask >= bid:
                return self._priced(symbol, (bid + ask) / 2, "quote", _unix(quote.timestamp))
        self.market_data["no_price"] += 1
        log.warning("no price for %s: Alpaca's market data API has no trade or quote", symbol)
        return None

    def _priced(self, symbol: str, price: float, source: str, at: float | None) -> float:
        self.market_data["prices"] += 1
        self.market_data["last"] = {"symbol": symbol, "price": price, "source": source}
        if at is not None:
            self._priced_at[symbol] = max(self._priced_at.get(symbol, at), at)
        return price

    async def account_equity(self) -> tuple[float, float] | None:
        """(equity, last_equity) of the Alpaca account, for the engine to seed its book with
        at start: the day's PnL is measured from `last_equity` (yesterday's close).

        Alpaca values the positions at its prices, the engine's book at its marks (after a
        restart, the marks it saved before). The equity handed over is Alpaca's with every
        position the engine has a mark for valued at that mark: the book's cash is then
        Alpaca's, and once the marks move to Alpaca's prices (reconciliation feeds them) the
        book's equity is exactly Alpaca's, not counting the price move twice."""
        try:
            account = await self.rest.account()
        except AlpacaError as exc:
            # start() read the account moments ago: its figures are still Alpaca's.
            log.warning(
                "Alpaca account for the book's equity: %s; using the one read at start", exc
            )
        else:
            self.account = account_summary(account)
        equity, last_equity = self.account.get("equity"), self.account.get("last_equity")
        if equity is None or last_equity is None:
            return None
        try:
            positions = await self.rest.positions()
        except AlpacaError as exc:
            log.warning("Alpaca positions for the book's equity: %s; equity taken as is", exc)
            return equity, last_equity
        revalued = equity
        for position in positions:
            mark = self.context.mark(position.symbol)
            price = _decimal(position.current_price)
            if mark is not None and price is not None:
                revalued -= self._signed_qty(position) * (price - mark)
        if revalued != equity:
            log.info(
                "Alpaca equity %s is %s with the positions at the engine's marks",
                equity,
                revalued,
            )
        return revalued, last_equity

    @staticmethod
    def _signed_qty(position: Any) -> float:
        qty = _decimal(position.qty) or 0.0
        side = str(getattr(position.side, "value", position.side))
        return -abs(qty) if side == "short" else qty

    async def _feed_marks(self, prices: Mapping[str, tuple[float | None, float | None]]) -> None:
        """Gives the engine prices Alpaca sent anyway, {symbol: (price, unix time)}: a price
        older than MARK_MAX_AGE, or older than one the engine already has from here, is left
        out. Never raises."""
        if self.view is None or self._stopped:
            return
        now = time.time()
        marks: dict[str, float] = {}
        for symbol, (value, at) in prices.items():
            price = _price(value)
            if price is None or at is None or now - at > self.settings.mark_max_age:
                continue
            if at <= self._priced_at.get(symbol, -math.inf):
                continue
            self._priced_at[symbol] = at
            marks[symbol] = price
        if not marks:
            return
        try:
            await self.view.set_marks(marks)
        except Exception as exc:
            log.warning("marks from Alpaca not applied (%s): %s", ", ".join(sorted(marks)), exc)
            return
        self.market_data["marks_fed"] += len(marks)

    # ---- the stream -------------------------------------------------------------------

    async def _on_message(self, message: dict[str, Any]) -> None:
        """A trade_updates message. Never raises: TradingStream would drop the connection."""
        try:
            update = TradeUpdate.from_message(message)
            if update is None:
                return
            if self.ledger.get(update.order.client_order_id) is not None:
                await self._emit(self.ledger.on_trade_update(update))
                await self._feed_fill_mark(update)
            elif (
                update.event in ("fill", "partial_fill")
                and update.execution_id
                and update.qty is not None
                and update.price is not None
            ):
                # Not an order of this run (finished before a restart, or not ours): the engine
                # books it if the journal knows the order, once per execution id.
                await self.context.emit(
                    BrokerFill(
                        update.order.client_order_id,
                        exec_id=update.execution_id,
                        qty=update.qty,
                        price=update.price,
                        at=update.timestamp or utc_now(),
                    )
                )
                await self._feed_fill_mark(update)
        except Exception:
            log.exception("ERROR Alpaca trade update could not be applied: %s", message)

    async def _feed_fill_mark(self, update: TradeUpdate) -> None:
        """The price of an execution is a trade of the symbol: a mark (when it is recent)."""
        if update.event in ("fill", "partial_fill") and update.order.symbol:
            at = _unix(update.timestamp)
            await self._feed_marks({update.order.symbol: (update.price, at)})

    def _on_stream_change(self, connected: bool) -> None:
        if connected:
            log.info("Alpaca trade_updates stream connected (%s)", self.stream.url)
            if self.ready.is_set() and not self._stopped:
                self._spawn(self.reconcile("reconnect"))
        else:
            log.warning(
                "Alpaca trade_updates stream lost; polling open orders every %ss until it is back",
                self.settings.alpaca_poll_interval,
            )
        self._publish()

    @property
    def connected(self) -> bool:
        return self.stream.connected and self.rest.reachable

    def _publish(self) -> None:
        connected = self.connected and not self._stopped
        if self.view is not None and connected != self._published:
            self._published = connected
            self.view.set_connected(connected)

    # ---- polling and reconciliation ---------------------------------------------------

    async def _poll_loop(self) -> None:
        interval = self.settings.alpaca_poll_interval
        while True:
            await asyncio.sleep(interval)
            try:
                if not self.rest.reachable:
                    await self.rest.clock()  # is Alpaca back?
                await self.poll()
                wanted = self.suspend_trade["wanted"]
                if wanted is not None and wanted != self.suspend_trade["set"]:
                    await self._apply_kill_switch(wanted)
            except AlpacaError as exc:
                log.warning("Alpaca poll failed: %s", exc)
            except Exception:
                log.exception("ERROR Alpaca poll failed")
            self._publish()

    def _due(self) -> list[str]:
        """Client order ids to ask Alpaca about now: every unsettled order while the stream is
        down; else those unacknowledged past ORDER_TIMEOUT and those that ended with fills the
        stream has not delivered yet."""
        now = time.monotonic()
        due = []
        for tracked in self.ledger.unsettled():
            if tracked.in_flight:
                continue
            age = now - tracked.since
            if (
                not self.stream.connected
                or (not tracked.acked and age >= self.settings.order_timeout)
                or (tracked.final_status is not None and age >= self.settings.alpaca_poll_interval)
            ):
                due.append(tracked.client_order_id)
        return due

    async def poll(self) -> int:
        """Asks Alpaca about the orders that are due (by id) and applies the answers. Returns
        how many orders were asked about."""
        due = self._due()
        for client_order_id in due:
            existing = await self.lookup(client_order_id)
            tracked = self.ledger.get(client_order_id)
            if existing is not None:
                await self._emit(self.ledger.on_snapshot(Snapshot.from_model(existing)))
            elif (
                tracked is not None
                and not tracked.in_flight
                and not tracked.acked
                and time.monotonic() - tracked.since >= self.settings.order_timeout
            ):
                tracked.final_status = "rejected"
                await self.context.emit(
                    BrokerRejected(
                        client_order_id,
                        "Alpaca has no record of the order after ORDER_TIMEOUT="
                        f"{self.settings.order_timeout}s",
                    )
                )
        return len(due)

    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.alpaca_reconcile_interval)
            await self.reconcile("periodic")

    async def reconcile(self, reason: str) -> bool:
        """Compares Alpaca's open orders and positions with the journal. Differences that
        Alpaca's own answers explain (fills and ends the stream missed) are applied and
        journaled as resolved; any other engages the kill switch. False when Alpaca could not
        be asked (the state says why)."""
        assert self.view is not None
        async with self._reconcile_lock:
            state = self.reconciliation
            state.update(state="running", reason=reason)
            try:
                resolved, unresolved = await self._reconcile_orders()
                unresolved += await self._reconcile_positions()
            except AlpacaError as exc:
                state.update(state="error", error=exc.message, at=utc_now())
                log.warning("Alpaca reconciliation (%s) could not run: %s", reason, exc)
                return False
            state["runs"] += 1
            state.update(
                state="mismatch" if unresolved else "ok",
                at=utc_now(),
                error=None,
                differences=unresolved,
                halted=bool(unresolved),
                resolved=len(resolved) + state.get("resolved", 0),
                last_resolved=resolved or state.get("last_resolved", []),
            )
            for difference in resolved:
                log.warning("RECONCILE resolved (%s): %s", reason, difference["detail"])
                await self.view.record("reconciliation_resolved", difference["detail"], difference)
            detail = "; ".join(d["detail"] for d in unresolved)
            if unresolved and detail != self._last_mismatch:
                # Journaled once per distinct finding, not on every periodic run.
                log.critical("RECONCILE mismatch (%s), halting trading: %s", reason, detail)
                for difference in unresolved:
                    await self.view.record(
                        "reconciliation_mismatch", difference["detail"], difference
                    )
            self._last_mismatch = detail
            if unresolved and not self.view.halted():
                await self.view.halt(f"reconciliation with Alpaca failed: {detail}")
            return True

    async def _reconcile_orders(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        assert self.view is not None
        listed = await self.rest.open_orders(MAX_OPEN_ORDERS_LISTED)
        at_alpaca = {o.client_order_id: Snapshot.from_model(o) for o in listed}
        resolved: list[dict[str, Any]] = []
        unresolved: list[dict[str, Any]] = []
        for order in await self.view.open_orders():
            tracked = self.ledger.track(order)
            if tracked.in_flight:
                at_alpaca.pop(order.client_order_id, None)
                continue
            snapshot = at_alpaca.pop(order.client_order_id, None)
            if snapshot is None:
                found = await self.lookup(order.client_order_id)
                snapshot = None if found is None else Snapshot.from_model(found)
            if snapshot is None:
                if time.monotonic() - tracked.since < self.settings.order_timeout:
                    continue  # just sent: the engine's ORDER_TIMEOUT decides
                events: list[BrokerEvent] = [
                    BrokerRejected(order.client_order_id, "Alpaca has no record of the order")
                ]
                tracked.final_status = "rejected"
            else:
                events = self.ledger.on_snapshot(snapshot)
            await self._emit(events)
            if events:
                resolved.append(
                    {
                        "kind": "order",
                        "client_order_id": order.client_order_id,
                        "detail": f"order {order.client_order_id} ({order.symbol}) was "
                        f"{order.status} with {order.filled_qty:g} filled in the journal; Alpaca "
                        f"says {snapshot.status if snapshot else 'nothing'} with "
                        f"{snapshot.filled_qty if snapshot else 0:g} filled: applied",
                    }
                )
        for client_order_id, snapshot in at_alpaca.items():
            known = await self.view.find_order(client_order_id)
            if known is not None:
                # Ours, and over in the journal, yet working at Alpaca: it must not trade.
                await self._cancel_at_alpaca(client_order_id, snapshot.broker_order_id)
                resolved.append(
                    {
                        "kind": "order",
                        "client_order_id": client_order_id,
                        "detail": f"order {client_order_id} is {known.status} in the journal but "
                        f"{snapshot.status} at Alpaca: canceled at Alpaca",
                    }
                )
            else:
                unresolved.append(
                    {
                        "kind": "unknown_order",
                        "client_order_id": client_order_id,
                        "symbol": snapshot.symbol,
                        "detail": f"order {client_order_id} ({snapshot.side} {snapshot.qty:g} "
                        f"{snapshot.symbol}, {snapshot.status}) is open at Alpaca but not in "
                        "the journal",
                    }
                )
        return resolved, unresolved

    async def _reconcile_positions(self) -> list[dict[str, Any]]:
        """Positions at Alpaca against the journal's fills. A difference is read twice, a
        poll apart, so that a fill on its way is not taken for a mismatch."""
        differences = await self._position_differences()
        if differences:
            await asyncio.sleep(min(self.settings.alpaca_poll_interval, 1.0))
            await self.poll()
            differences = await self._position_differences()
        return differences

    async def _position_differences(self) -> list[dict[str, Any]]:
        assert self.view is not None
        asked_at = time.time()
        positions = await self.rest.positions()
        at_alpaca: dict[str, float] = {}
        for position in positions:
            at_alpaca[position.symbol] = self._signed_qty(position)
        # Alpaca's current price of each position: a mark, stamped with the time it was asked.
        await self._feed_marks({p.symbol: (_decimal(p.current_price), asked_at) for p in positions})
        journal = await self.view.positions()
        differences = []
        for symbol in sorted(set(at_alpaca) | set(journal)):
            ours, theirs = journal.get(symbol, 0.0), at_alpaca.get(symbol, 0.0)
            if not math.isclose(ours, theirs, rel_tol=1e-9, abs_tol=POSITION_EPSILON):
                differences.append(
                    {
                        "kind": "position",
                        "symbol": symbol,
                        "journal_qty": ours,
                        "alpaca_qty": theirs,
                        "detail": f"position {symbol}: {ours:g} in the journal, {theirs:g} at "
                        "Alpaca",
                    }
                )
        return differences

    # ---- the kill switch at Alpaca -----------------------------------------------------

    @hookimpl
    def on_kill_switch(self, state: KillSwitchState) -> None:
        """Mirrors the kill switch at Alpaca (ALPACA_SUSPEND_ON_KILL): `suspend_trade` is set on
        engage (and every open order at Alpaca is canceled) and cleared on reset."""
        if self.settings.alpaca_suspend_on_kill and not self._stopped:
            self.suspend_trade["wanted"] = state.engaged
            self._spawn(self._apply_kill_switch(state.engaged))

    async def _apply_kill_switch(self, engaged: bool) -> None:
        self.suspend_trade["wanted"] = engaged
        async with self._suspend_lock:
            try:
                await self._set_suspend_trade(engaged)
            except AlpacaError as exc:
                self.suspend_trade["error"] = exc.message
                log.error(
                    "ERROR could not %s Alpaca suspend_trade (retrying while polling): %s",
                    "set" if engaged else "clear",
                    exc,
                )
                return
            if engaged:
                await self._cancel_everything_but_liquidation()

    async def _set_suspend_trade(self, suspended: bool) -> None:
        config = await self.rest.configuration()
        if config.suspend_trade != suspended:
            config = await self.rest.set_configuration(
                config.model_copy(update={"suspend_trade": suspended})
            )
        self.suspend_trade.update(set=config.suspend_trade, error=None, at=utc_now())
        log.warning("Alpaca suspend_trade is now %s", config.suspend_trade)

    async def _cancel_everything_but_liquidation(self) -> None:
        """Cancels every open order at Alpaca — ours and any other process's — except our
        liquidation orders, which the kill switch never stops."""
        liquidating = {t.broker_order_id for t in self.ledger.unsettled() if t.liquidation}
        try:
            if not liquidating:
                await self.cancel_all()
                return
            listed = await self.rest.open_orders(MAX_OPEN_ORDERS_LISTED)
            for order in listed:
                if str(order.id) not in liquidating:
                    await self._cancel_at_alpaca(order.client_order_id, str(order.id))
        except AlpacaError as exc:
            log.error("ERROR canceling open orders at Alpaca for the kill switch: %s", exc)

    # ---- health -------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        stream = self.stream
        last = stream.last_message_at
        return {
            "connected": self.connected,
            "broker": "alpaca",
            "trading_mode": "paper" if self.paper else "live",
            "endpoint": self.rest.endpoint,
            "stream": {
                "url": stream.url,
                "connected": stream.connected,
                "connects": stream.connects,
                "drops": stream.drops,
                "last_error": stream.last_error,
            },
            "last_message_at": _iso(last),
            "last_message_age_seconds": None if last is None else round(time.time() - last, 3),
            "latency_ms": None if self.rest.latency_ms is None else round(self.rest.latency_ms, 3),
            "rest": {
                "reachable": self.rest.reachable,
                "last_ok_at": _iso(self.rest.last_ok_at),
                "last_error": self.rest.last_error,
                "calls": self.rest.calls,
            },
            "rate_limit": self.rest.limiter.state(),
            "market_data": {
                "endpoint": self.data.endpoint,
                "reachable": self.data.reachable,
                "last_ok_at": _iso(self.data.last_ok_at),
                "last_error": self.data.last_error,
                "latency_ms": None
                if self.data.latency_ms is None
                else round(self.data.latency_ms, 3),
                "calls": self.data.calls,
                "rate_limit": self.data.limiter.state(),
                **self.market_data,
            },
            "polling": not stream.connected,
            "orders_tracked": len(self.ledger.unsettled()),
            "ready": self.ready.is_set(),
            "reconciliation": dict(self.reconciliation),
            "suspend_trade": dict(self.suspend_trade),
            "account": dict(self.account),
        }

    async def test_connection(self) -> dict[str, Any]:
        """An account and a clock round trip, with their latencies."""
        started = time.perf_counter()
        result: dict[str, Any] = {"broker": "alpaca", "endpoint": self.rest.endpoint}
        try:
            account = await self.rest.account(retry=False)
            account_done = time.perf_counter()
            clock = await self.rest.clock()
        except AlpacaError as exc:
            elapsed = (time.perf_counter() - started) * 1000
            return {
                **result,
                "ok": False,
                "error": exc.message,
                "status": exc.status,
                "latency_ms": round(elapsed, 3),
            }
        done = time.perf_counter()
        self.account = account_summary(account)
        return {
            **result,
            "ok": True,
            "latency_ms": round((done - started) * 1000, 3),
            "account_latency_ms": round((account_done - started) * 1000, 3),
            "clock_latency_ms": round((done - account_done) * 1000, 3),
            "account": self.account,
            "clock": {
                "timestamp": clock.timestamp.isoformat(),
                "is_open": clock.is_open,
                "next_open": clock.next_open.isoformat(),
                "next_close": clock.next_close.isoformat(),
            },
        }
