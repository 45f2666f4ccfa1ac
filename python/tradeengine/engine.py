"""The engine: the single writer of tradeengine.

Every order, fill, cancel, kill and config change passes through one `Engine` on one asyncio
loop. Public methods take and return msgspec Structs, so the same calls can be carried over a
socket. The path of a new order is: idempotency (client_order_id) -> Rust gate -> plugin risk
rules (only when any are installed) -> journal (durable) -> broker. Broker events come back
through `on_broker_event` into the Rust book, the journal and the observers.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import logging
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec
import pluggy

from tradeengine.broker import Broker, BrokerContext, BrokerFactory
from tradeengine.core import Gate, symbol_is_well_formed
from tradeengine.errors import (
    Conflict,
    EngineError,
    InvalidRequest,
    NotFound,
    OrderRejected,
    Unavailable,
)
from tradeengine.hookspecs import RiskContext
from tradeengine.market import SyntheticFeed, run_replay, run_synthetic
from tradeengine.plugins import make_plugin_manager
from tradeengine.recovery import follow_journal, recover
from tradeengine.schemas import (
    AuditRecord,
    BrokerAck,
    BrokerCanceled,
    BrokerEvent,
    BrokerExpired,
    BrokerFill,
    BrokerRejected,
    ConfigRecord,
    Fill,
    FillRecord,
    KillSwitchRecord,
    KillSwitchState,
    Order,
    OrderRecord,
    OrderRequest,
    Position,
    RejectionRecord,
    RiskConfig,
    RiskConfigUpdate,
    ThrottleConfig,
    ThrottleConfigUpdate,
    time_ordered_id,
    utc_now,
)
from tradeengine.settings import Settings
from tradeengine.store import Journal, MemoryStore, Store

log = logging.getLogger("tradeengine.engine")

QTY_EPSILON = 1e-9
SYSTEM = "system"


def _iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat().replace("+00:00", "Z")


class Engine:
    """The one owner of trading state. Build with `Engine(settings)`, then `await start()`."""

    def __init__(
        self,
        settings: Settings,
        plugin_manager: pluggy.PluginManager | None = None,
        store: Store | None = None,
    ) -> None:
        self.settings = settings
        self.pm = plugin_manager or make_plugin_manager(settings)
        self.store: Store = store if store is not None else MemoryStore()
        self.journal = Journal(self.store, settings.batch_size)
        self.gate = Gate(
            starting_cash=settings.sim_starting_cash,
            max_orders_per_minute=settings.max_orders_per_minute,
            throttle_enabled=settings.throttle_enabled,
            max_position_size=settings.max_position_size,
            max_order_notional=settings.max_order_notional,
            portfolio_heat_limit=settings.portfolio_heat_limit,
            max_daily_loss=settings.max_daily_loss,
            max_drawdown=settings.max_drawdown,
            price_collar=settings.price_collar,
            auto_kill=settings.kill_switch_enabled,
        )
        self.executor = ThreadPoolExecutor(settings.max_workers, thread_name_prefix="broker")
        self.broker: Broker | None = None
        self.open_orders: dict[str, Order] = {}
        self._open_by_client_id: dict[str, str] = {}
        self.finished: OrderedDict[str, Order] = OrderedDict()
        self._finished_by_client_id: dict[str, str] = {}
        self._exec_ids: set[str] = set()
        self._pending_since: dict[str, float] = {}
        self._marked_at: dict[str, float] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._risk_rules = False
        self.accepting = False
        self.started_at = time.time()
        self.shutdown_requested = asyncio.Event()
        self.counters = {"submitted": 0, "rejected": 0, "filled": 0, "canceled": 0}
        self._liquidation_ids = itertools.count(1)

    # ---- life cycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Connects the broker, recovers, starts the background tasks, then accepts orders."""
        brokers: dict[str, BrokerFactory] = {}

        def register(name: str, factory: BrokerFactory) -> None:
            if name in brokers:
                raise EngineError(f"two plugins register a broker named {name!r}")
            brokers[name] = factory

        self.pm.hook.register_brokers(register=register)
        name = self.settings.broker_name
        if name not in brokers:
            known = ", ".join(sorted(brokers)) or "none"
            raise EngineError(f"BROKER={name!r}: no installed plugin registers it (known: {known})")
        context = BrokerContext(
            settings=self.settings,
            emit=self.on_broker_event,
            executor=self.executor,
            mark=self.gate.get_mark,
        )
        self.broker = brokers[name](context)
        self._risk_rules = bool(self.pm.hook.check_order.get_hookimpls())
        await self.store.open()
        await self.broker.start()
        await recover(self)
        self.gate.roll_to(time.time())
        await self._seed_from_broker()
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="housekeeping"))
        self._tasks.append(asyncio.create_task(follow_journal(self), name="journal-follower"))
        await self._start_feed()
        self.accepting = True
        self._notify("on_start", engine=self)
        log.info(
            "engine started: trading_mode=%s execution_mode=%s broker=%s",
            self.settings.trading_mode,
            self.settings.execution_mode,
            name,
        )

    async def _seed_from_broker(self) -> None:
        """In live mode the account's equity is the broker's, not SIM_STARTING_CASH."""
        account_equity = getattr(self.broker, "account_equity", None)
        if self.settings.backtest or account_equity is None:
            return
        figures = await account_equity()
        if figures is not None:
            equity, last_equity = figures
            self.gate.seed_equity(equity, last_equity)
            log.info("book seeded from the broker: equity=%s last_equity=%s", equity, last_equity)

    async def _fresh_mark(self, symbol: str) -> None:
        """Live mode: before a market order is checked, a missing or stale mark is refreshed
        from the broker. If the broker has no price the gate refuses the order (no_mark)."""
        latest_price = getattr(self.broker, "latest_price", None)
        if latest_price is None:
            return
        marked = self._marked_at.get(symbol)
        if marked is not None and time.monotonic() - marked <= self.settings.mark_max_age:
            return
        try:
            price = await asyncio.wait_for(latest_price(symbol), self.settings.order_timeout)
        except Exception as exc:
            log.warning("no price for %s from the broker: %s", symbol, exc)
            return
        if price is not None and math.isfinite(price) and price > 0:
            self._set_mark(symbol, float(price))

    def _set_mark(self, symbol: str, price: float) -> str | None:
        self._marked_at[symbol] = time.monotonic()
        return self.gate.mark(symbol, price)

    async def _start_feed(self) -> None:
        settings = self.settings
        if not settings.backtest:
            return

        async def set_marks(prices: Mapping[str, float]) -> None:
            try:
                await self.set_marks(prices, actor=SYSTEM)
            except EngineError as exc:
                log.error("ERROR market feed sent a bad price: %s", exc)

        if settings.backtest_data:
            path = Path(settings.backtest_data)
            if not path.is_file():
                raise EngineError(f"BACKTEST_DATA={settings.backtest_data!r}: no such file")
            feed = run_replay(path, set_marks, settings.replay_speed)
        elif settings.synthetic_feed and settings.synthetic_symbols:
            synthetic = SyntheticFeed(settings.synthetic_symbols)
            await set_marks(synthetic.next())
            feed = run_synthetic(synthetic, set_marks, settings.synthetic_interval)
        else:
            return
        self._tasks.append(asyncio.create_task(feed, name="market-feed"))

    async def stop(self) -> None:
        """Graceful stop: no new orders, resting orders cancelled (unless
        SHUTDOWN_CANCEL_ORDERS=false), journal flushed, broker disconnected."""
        if not self.accepting and self.broker is None:
            return
        self.accepting = False
        if self.settings.shutdown_cancel_orders and self.broker is not None:
            with contextlib.suppress(Exception):
                await self._cancel_open(SYSTEM, "shutdown", include_liquidation=True)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        await self.journal.drain()
        if self.broker is not None:
            with contextlib.suppress(Exception):
                await self.broker.stop()
            self._notify("on_stop", engine=self)
            self.broker = None
        await self.store.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        log.info("engine stopped")

    async def request_shutdown(self, actor: str, reason: str) -> dict[str, Any]:
        """Stops accepting orders at once and asks the server to exit (graceful shutdown)."""
        self.accepting = False
        await self._audit(actor, "shutdown", reason)
        self.shutdown_requested.set()
        return {"shutting_down": True, "open_orders": len(self.open_orders)}

    def _notify(self, hook: str, **kwargs: Any) -> None:
        """Calls an observer hook on every plugin that implements it. Each plugin is called on
        its own, so one that raises is logged and cannot keep the others (or trading) from
        going on. Observer results are ignored, so pluggy's result collection is skipped."""
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            try:
                impl.function(*[kwargs[name] for name in impl.argnames])
            except Exception:
                log.exception(
                    "ERROR plugin %s raised in %s; trading goes on", impl.plugin_name, hook
                )

    async def _housekeeping(self) -> None:
        """Rolls the trading day and resolves orders left unacknowledged past ORDER_TIMEOUT."""
        interval = min(1.0, self.settings.order_timeout / 2)
        while True:
            await asyncio.sleep(interval)
            try:
                self.gate.roll_to(time.time())
                await self._resolve_stale_orders()
            except Exception:
                log.exception("ERROR housekeeping failed; retrying")

    async def _resolve_stale_orders(self) -> None:
        if self.broker is None:
            return
        deadline = time.monotonic() - self.settings.order_timeout
        stale = [oid for oid, since in self._pending_since.items() if since <= deadline]
        for order_id in stale:
            order = self.open_orders.get(order_id)
            if order is None or order.status != "pending_new":
                self._pending_since.pop(order_id, None)
                continue
            log.warning(
                "order %s client_order_id=%s unacknowledged after ORDER_TIMEOUT=%ss; asking broker",
                order.id,
                order.client_order_id,
                self.settings.order_timeout,
            )
            events = await self.broker.query(order)
            if not events:
                events = [
                    BrokerRejected(
                        order.client_order_id,
                        f"broker has no record of the order after ORDER_TIMEOUT="
                        f"{self.settings.order_timeout}s",
                    )
                ]
            for event in events:
                await self.on_broker_event(event)
            self._pending_since.pop(order_id, None)

    # ---- orders -----------------------------------------------------------------------

    async def submit(
        self, request: OrderRequest, actor: str = "api", *, liquidation: bool = False
    ) -> tuple[Order, bool]:
        """Places an order. Returns (order, created): `created` is False when the same
        client_order_id with the same body was placed before (the original is returned).
        Raises OrderRejected (with its rule), Conflict, or Unavailable (fail closed)."""
        started = time.perf_counter()
        if not self.accepting or self.broker is None:
            raise OrderRejected.for_rule(
                "shutting_down", "the engine is not accepting orders (shutting down or starting)"
            )
        client_order_id = request.client_order_id or time_ordered_id()
        if request.type == "market" and not self.settings.backtest:
            await self._fresh_mark(request.symbol)
        existing = await self._existing(client_order_id)
        if existing is not None:
            if existing.same_request(request):
                return existing, False
            raise Conflict(
                f"client_order_id {client_order_id!r} was used for a different order "
                f"({existing.id})",
                code="client_order_id_conflict",
            )
        reject = self.gate.check(
            client_order_id,
            request.symbol,
            request.side,
            request.qty,
            request.type,
            request.limit_price,
            request.stop_price,
            request.time_in_force,
            request.reduce_only,
            liquidation,
            request.stop_loss,
        )
        if reject is not None:
            rule, reason, retry_after = reject
            await self._reject(request, client_order_id, actor, rule, reason)
            raise OrderRejected.for_rule(rule, reason, retry_after)
        now = utc_now()
        order = Order(
            id=time_ordered_id(),
            client_order_id=client_order_id,
            symbol=request.symbol,
            side=request.side,
            type=request.type,
            qty=request.qty,
            time_in_force=request.time_in_force,
            limit_price=request.limit_price,
            stop_price=request.stop_price,
            stop_loss=request.stop_loss,
            reduce_only=request.reduce_only,
            liquidation=liquidation,
            created_at=now,
            updated_at=now,
            actor=actor,
        )
        if self._risk_rules and not liquidation:
            rejection = self._check_plugins(order)
            if rejection is not None:
                self.gate.revoke(client_order_id, liquidation)
                await self._reject(request, client_order_id, actor, *rejection)
                raise OrderRejected.for_rule(*rejection)
        self._track(order)
        try:
            await self.journal.append(OrderRecord(order))
        except Exception as exc:
            self._untrack(order)
            self.gate.revoke(client_order_id, liquidation)
            log.error(
                "ERROR journal write failed; order client_order_id=%s not accepted: %s",
                client_order_id,
                exc,
            )
            raise Unavailable(
                "the journal cannot write: the order was not accepted", code="journal_unavailable"
            ) from exc
        self.counters["submitted"] += 1
        self._pending_since[order.id] = time.monotonic()
        self._notify("on_order", order=order, previous_status=None)
        try:
            await self.broker.submit(order)
        except Exception as exc:
            log.error(
                "ERROR broker submit failed for order %s client_order_id=%s: %s; "
                "it stays pending_new and is resolved with the broker after ORDER_TIMEOUT",
                order.id,
                client_order_id,
                exc,
            )
            raise Unavailable(
                f"the broker did not take order {order.id}: it is journaled as pending_new and "
                "will be resolved with the broker; retry with the same client_order_id is safe",
                code="broker_unavailable",
            ) from exc
        current = self.open_orders.get(order.id) or self.finished.get(order.id) or order
        if current.is_open and not liquidation and self.gate.state == "halted":
            # The kill switch was engaged while this order was on its way to the broker.
            await self._request_cancel(current, SYSTEM)
            current = self.open_orders.get(order.id) or self.finished.get(order.id) or current
        self._notify("on_submit", order=current, latency_seconds=time.perf_counter() - started)
        return current, True

    def _check_plugins(self, order: Order) -> tuple[str, str] | None:
        position = self.gate.position(order.symbol)
        account = self.gate.account()
        context = RiskContext(
            position_qty=position[0] if position else 0.0,
            mark=self.gate.get_mark(order.symbol),
            equity=account["equity"],
            daily_pnl=account["daily_pnl"],
            trading_state=self.gate.state,
        )
        try:
            rejection = self.pm.hook.check_order(order=order, context=context)
        except Exception as exc:
            log.exception("ERROR risk plugin raised on client_order_id=%s", order.client_order_id)
            return ("risk_plugin_error", f"a risk plugin failed, order refused: {exc}")
        if rejection is None:
            return None
        return (str(rejection.rule), str(rejection.reason))

    async def _existing(self, client_order_id: str) -> Order | None:
        order_id = self._open_by_client_id.get(client_order_id)
        if order_id is not None:
            return self.open_orders[order_id]
        order_id = self._finished_by_client_id.get(client_order_id)
        if order_id is not None and order_id in self.finished:
            return self.finished[order_id]
        if self.gate.knows(client_order_id):
            return await self.store.find_order(client_order_id)
        return None

    async def _reject(
        self, request: OrderRequest, client_order_id: str, actor: str, rule: str, reason: str
    ) -> None:
        self.counters["rejected"] += 1
        record = RejectionRecord(
            client_order_id=client_order_id,
            symbol=request.symbol,
            side=request.side,
            qty=request.qty,
            rule=rule,
            reason=reason,
            actor=actor,
            at=utc_now(),
        )
        log.warning(
            "RISK_BLOCK rule=%s client_order_id=%s symbol=%s side=%s qty=%s actor=%s: %s",
            rule,
            client_order_id,
            request.symbol,
            request.side,
            request.qty,
            actor,
            reason,
        )
        try:
            await self.journal.append(record)
        except Exception as exc:
            log.error("ERROR journal write failed for a rejection of %s: %s", client_order_id, exc)
        self._notify("on_risk_block", rejection=record)

    def _track(self, order: Order) -> None:
        self.open_orders[order.id] = order
        self._open_by_client_id[order.client_order_id] = order.id

    def _untrack(self, order: Order) -> None:
        self.open_orders.pop(order.id, None)
        self._open_by_client_id.pop(order.client_order_id, None)
        self._pending_since.pop(order.id, None)

    def _finish(self, order: Order) -> None:
        self._untrack(order)
        self.finished[order.id] = order
        self._finished_by_client_id[order.client_order_id] = order.id
        while len(self.finished) > self.settings.cache_size:
            _, evicted = self.finished.popitem(last=False)
            self._finished_by_client_id.pop(evicted.client_order_id, None)

    def _keep(self, previous: Order, updated: Order) -> None:
        """Puts an order's new state where it belongs: with the open orders, or, once it is
        done, in the cache of finished ones (a late fill of a finished order stays there)."""
        if updated.is_open:
            self.open_orders[updated.id] = updated
        elif previous.is_open:
            self._finish(updated)
        else:
            self.finished[updated.id] = updated

    async def _update(self, order: Order, **changes: Any) -> Order:
        """Journals a new state of an order, then publishes it."""
        updated = msgspec.structs.replace(order, updated_at=utc_now(), **changes)
        self._keep(order, updated)
        try:
            await self.journal.append(OrderRecord(updated))
        except Exception as exc:
            await self._journal_failed(exc, updated)
        self._notify("on_order", order=updated, previous_status=order.status)
        return updated

    async def _journal_failed(self, exc: Exception, order: Order) -> None:
        log.error(
            "ERROR journal write failed for order %s client_order_id=%s: %s; halting trading",
            order.id,
            order.client_order_id,
            exc,
        )
        if self.gate.engage_kill_switch(SYSTEM, f"journal write failed: {exc}"):
            self._notify("on_kill_switch", state=self.kill_switch_state())

    async def cancel(self, order_id: str, actor: str) -> Order:
        """Asks the broker to cancel an open order; returns it (pending_cancel or canceled)."""
        order = self.open_orders.get(order_id)
        if order is None:
            known = await self.get_order(order_id)
            if known is None:
                raise NotFound(f"no order with id {order_id!r}")
            raise Conflict(
                f"order {order_id} is {known.status}: only open orders can be canceled",
                code="order_not_open",
            )
        await self._request_cancel(order, actor)
        return self.open_orders.get(order_id) or self.finished.get(order_id) or order

    async def _request_cancel(self, order: Order, actor: str) -> None:
        assert self.broker is not None
        # Callers may hold a snapshot from before an await (cancel all, kill switch): a fill
        # booked meanwhile must not be overwritten by that older state.
        current = self.open_orders.get(order.id)
        if current is None:
            return
        order = current
        if order.status != "pending_cancel":
            order = await self._update(order, status="pending_cancel")
        log.info(
            "cancel order %s client_order_id=%s actor=%s", order.id, order.client_order_id, actor
        )
        await self.broker.cancel(order)

    async def _cancel_open(
        self, actor: str, reason: str, *, include_liquidation: bool
    ) -> list[str]:
        canceled = []
        for order in list(self.open_orders.values()):
            if order.liquidation and not include_liquidation:
                continue
            try:
                await self._request_cancel(order, actor)
                canceled.append(order.id)
            except Exception as exc:
                log.error(
                    "ERROR cancel of order %s client_order_id=%s failed (%s): %s",
                    order.id,
                    order.client_order_id,
                    reason,
                    exc,
                )
        return canceled

    async def cancel_all(self, actor: str) -> list[str]:
        """Cancels every open order; returns their ids. Never blocked, never throttled."""
        canceled = await self._cancel_open(actor, "cancel all", include_liquidation=True)
        await self._audit(actor, "cancel_all", "", {"orders": len(canceled)})
        return canceled

    # ---- broker events ----------------------------------------------------------------

    async def on_broker_event(self, event: BrokerEvent) -> None:
        """Applies what a broker reports. Safe against duplicates and events for orders that
        are already finished (a fill after a cancel is still booked)."""
        order = self._order_by_client_id(event.client_order_id)
        if order is None:
            order = await self.store.find_order(event.client_order_id)
            if order is None:
                log.warning(
                    "broker event %s for unknown client_order_id=%s ignored",
                    type(event).__name__,
                    event.client_order_id,
                )
                return
        if isinstance(event, BrokerFill):
            await self._on_fill(order, event)
            return
        if not order.is_open:
            return
        self._pending_since.pop(order.id, None)
        if isinstance(event, BrokerAck):
            if order.status == "pending_new":
                await self._update(
                    order, status=event.status, broker_order_id=event.broker_order_id
                )
        elif isinstance(event, BrokerCanceled | BrokerExpired | BrokerRejected):
            status = {BrokerCanceled: "canceled", BrokerExpired: "expired"}.get(
                type(event), "rejected"
            )
            self.gate.on_cancel(order.client_order_id)
            if status == "canceled":
                self.counters["canceled"] += 1
            await self._update(
                order,
                status=status,
                canceled_at=utc_now() if status == "canceled" else None,
                reject_reason=event.reason or None,
            )

    def _order_by_client_id(self, client_order_id: str) -> Order | None:
        order_id = self._open_by_client_id.get(client_order_id)
        if order_id is not None:
            return self.open_orders[order_id]
        order_id = self._finished_by_client_id.get(client_order_id)
        return self.finished.get(order_id) if order_id else None

    async def _on_fill(self, order: Order, event: BrokerFill) -> None:
        if event.exec_id in self._exec_ids:
            return
        if not (math.isfinite(event.qty) and event.qty > 0 and math.isfinite(event.price)):
            log.error(
                "ERROR broker sent an impossible fill for %s: %r", order.client_order_id, event
            )
            return
        self._exec_ids.add(event.exec_id)
        self._pending_since.pop(order.id, None)
        breach = self.gate.on_fill(
            order.client_order_id, order.symbol, order.side, event.qty, event.price, event.fee
        )
        filled = order.filled_qty + event.qty
        average = (
            (order.filled_avg_price or 0.0) * order.filled_qty + event.price * event.qty
        ) / filled
        done = filled >= order.qty - QTY_EPSILON
        fill = Fill(
            exec_id=event.exec_id,
            order_id=order.id,
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            qty=event.qty,
            price=event.price,
            fee=event.fee,
            at=event.at or utc_now(),
            liquidation=order.liquidation,
        )
        updated = msgspec.structs.replace(
            order,
            filled_qty=filled,
            filled_avg_price=average,
            status="filled" if done else ("partially_filled" if order.is_open else order.status),
            filled_at=fill.at if done else order.filled_at,
            updated_at=fill.at,
        )
        self._keep(order, updated)
        self.counters["filled"] += 1 if done else 0
        try:
            await self.journal.append(FillRecord(fill), OrderRecord(updated))
        except Exception as exc:
            await self._journal_failed(exc, updated)
        self._notify("on_fill", fill=fill, order=updated)
        self._notify("on_order", order=updated, previous_status=order.status)
        if breach is not None:
            await self._after_auto_kill(breach)

    # ---- market -----------------------------------------------------------------------

    async def set_marks(self, prices: Mapping[str, float], actor: str = "api") -> dict[str, float]:
        """Sets marks (backtest mode only: in live mode prices come from the broker)."""
        if not self.settings.backtest and actor != SYSTEM:
            raise Conflict(
                "market prices can only be set in backtest mode (EXECUTION_MODE=backtest)",
                code="not_backtest",
            )
        if not prices:
            raise InvalidRequest('give at least one price, e.g. {"AAPL": 200.0}')
        for symbol, price in prices.items():
            if not symbol_is_well_formed(symbol):
                raise InvalidRequest(f"symbol {symbol!r} is not well formed", code="symbol_invalid")
            if not (isinstance(price, int | float) and math.isfinite(price) and price > 0):
                raise InvalidRequest(f"price of {symbol} must be a finite number above 0")
        breach = None
        for symbol, price in prices.items():
            breach = self._set_mark(symbol, float(price)) or breach
        if self.broker is not None:
            await self.broker.on_marks(prices)
        if breach is not None:
            await self._after_auto_kill(breach)
        return {s: float(p) for s, p in prices.items()}

    # ---- emergency controls ----------------------------------------------------------

    def kill_switch_state(self, canceled: list[str] | None = None) -> KillSwitchState:
        engaged = self.gate.kill_switch()
        reset = self.gate.last_reset()
        return KillSwitchState(
            engaged=engaged is not None,
            actor=engaged[0] if engaged else None,
            reason=engaged[1] if engaged else None,
            at=_iso(engaged[2]) if engaged else None,
            last_reset_actor=reset[0] if reset else None,
            last_reset_reason=reset[1] if reset else None,
            last_reset_at=_iso(reset[2]) if reset else None,
            canceled_orders=canceled or [],
        )

    async def engage_kill_switch(self, actor: str, reason: str) -> KillSwitchState:
        """Blocks every new order and cancels every resting one (liquidation orders excepted).
        Latched, across restarts, until an admin resets it with a reason."""
        reason = reason.strip() or "no reason given"
        if self.gate.engage_kill_switch(actor, reason):
            await self._record_kill(True, actor, reason)
            # Observers first: a broker plugin suspends trading at the broker before the
            # engine's cancels go out one by one.
            self._notify("on_kill_switch", state=self.kill_switch_state())
        canceled = await self._cancel_open(actor, "kill switch", include_liquidation=False)
        return self.kill_switch_state(canceled)

    async def _after_auto_kill(self, rule: str) -> None:
        engaged = self.gate.kill_switch()
        reason = engaged[1] if engaged else f"{rule} breached"
        await self._record_kill(True, SYSTEM, reason)
        self._notify("on_kill_switch", state=self.kill_switch_state())
        await self._cancel_open(SYSTEM, "kill switch", include_liquidation=False)

    async def _record_kill(self, engaged: bool, actor: str, reason: str) -> None:
        word = "engaged" if engaged else "reset"
        level = logging.CRITICAL if engaged else logging.WARNING
        log.log(level, "KILL_SWITCH %s actor=%s reason=%s", word, actor, reason)
        record = KillSwitchRecord(engaged=engaged, actor=actor, reason=reason, at=utc_now())
        audit = AuditRecord(actor=actor, action=f"kill_switch_{word}", reason=reason, at=record.at)
        try:
            await self.journal.append(record, audit)
        except Exception as exc:
            log.error("ERROR journal write failed for the kill switch record: %s", exc)

    async def reset_kill_switch(self, actor: str, reason: str) -> KillSwitchState:
        """Releases the kill switch. The reason is required."""
        if not reason or not reason.strip():
            raise InvalidRequest("a kill switch reset needs a reason", code="reason_required")
        if self.gate.reset_kill_switch(actor, reason.strip()):
            await self._record_kill(False, actor, reason.strip())
            state = self.kill_switch_state()
            self._notify("on_kill_switch", state=state)
            return state
        return self.kill_switch_state()

    async def set_reduce_only(self, enabled: bool, actor: str) -> str:
        self.gate.set_reducing(enabled)
        await self._config("reduce_only", {"enabled": enabled}, actor)
        return self.gate.state

    async def liquidate_all(self, actor: str, reason: str = "") -> list[Order]:
        """Cancels every open order, then flattens every position with market orders tagged
        as liquidation (the kill switch, throttle and limits do not block them)."""
        await self._audit(actor, "liquidate_all", reason)
        await self._cancel_open(actor, "liquidate all", include_liquidation=False)
        orders = []
        for symbol, qty, *_ in self.gate.positions():
            if abs(qty) > QTY_EPSILON:
                orders.append(await self._liquidate(symbol, qty, actor))
        return orders

    async def close_position(self, symbol: str, actor: str) -> Order:
        position = self.gate.position(symbol)
        if position is None or abs(position[0]) <= QTY_EPSILON:
            raise NotFound(f"no open position in {symbol}")
        for order in list(self.open_orders.values()):
            if order.symbol == symbol and not order.liquidation:
                await self._request_cancel(order, actor)
        await self._audit(actor, "close_position", "", {"symbol": symbol})
        return await self._liquidate(symbol, position[0], actor)

    async def _liquidate(self, symbol: str, qty: float, actor: str) -> Order:
        request = OrderRequest(
            symbol=symbol,
            side="sell" if qty > 0 else "buy",
            qty=abs(qty),
            client_order_id=f"liq-{uuid.uuid4().hex[:12]}-{next(self._liquidation_ids)}",
        )
        order, _ = await self.submit(request, actor, liquidation=True)
        return order

    # ---- configuration ----------------------------------------------------------------

    def risk_config(self) -> RiskConfig:
        limits = self.gate.limits()
        notional = float(limits["max_order_notional"])
        return RiskConfig(
            max_daily_loss=float(limits["max_daily_loss"]),
            max_position_size=float(limits["max_position_size"]),
            max_order_notional=None if math.isinf(notional) else notional,
            portfolio_heat_limit=float(limits["portfolio_heat_limit"]),
            max_drawdown=float(limits["max_drawdown"]),
            price_collar=float(limits["price_collar"]),
            kill_switch_enabled=bool(limits["auto_kill"]),
        )

    async def update_risk_config(self, update: RiskConfigUpdate, actor: str) -> RiskConfig:
        """Changes limits live, all or nothing; a bad value is a 422 and changes nothing."""
        from tradeengine import ConfigError

        values = {k: v for k, v in msgspec.structs.asdict(update).items() if v is not None}
        if not values:
            raise InvalidRequest("give at least one limit to change")
        try:
            self.gate.set_limits(
                max_position_size=update.max_position_size,
                max_order_notional=update.max_order_notional,
                portfolio_heat_limit=update.portfolio_heat_limit,
                max_daily_loss=update.max_daily_loss,
                max_drawdown=update.max_drawdown,
                price_collar=update.price_collar,
                auto_kill=update.kill_switch_enabled,
            )
        except ConfigError as exc:
            raise InvalidRequest(str(exc), code="invalid_config") from None
        await self._config("risk", values, actor)
        return self.risk_config()

    def throttle_config(self) -> ThrottleConfig:
        per_minute, enabled = self.gate.throttle()
        return ThrottleConfig(
            max_orders_per_minute=per_minute,
            enabled=enabled,
            tokens_available=round(self.gate.tokens_available(), 3),
        )

    async def update_throttle_config(
        self, update: ThrottleConfigUpdate, actor: str
    ) -> ThrottleConfig:
        from tradeengine import ConfigError

        per_minute, enabled = self.gate.throttle()
        values = {k: v for k, v in msgspec.structs.asdict(update).items() if v is not None}
        if not values:
            raise InvalidRequest("give max_orders_per_minute and/or enabled")
        try:
            self.gate.set_throttle(
                per_minute
                if update.max_orders_per_minute is None
                else update.max_orders_per_minute,
                enabled if update.enabled is None else update.enabled,
            )
        except (ConfigError, OverflowError) as exc:
            raise InvalidRequest(str(exc), code="invalid_config") from None
        await self._config("throttle", values, actor)
        return self.throttle_config()

    async def _config(self, kind: Any, values: dict[str, Any], actor: str) -> None:
        at = utc_now()
        log.warning("CONFIG %s changed by actor=%s: %s", kind, actor, values)
        records = (
            ConfigRecord(kind=kind, values=values, actor=actor, at=at),
            AuditRecord(actor=actor, action=f"config_{kind}", detail=values, at=at),
        )
        try:
            await self.journal.append(*records)
        except Exception as exc:
            log.error("ERROR journal write failed for a config change: %s", exc)

    async def _audit(
        self, actor: str, action: str, reason: str = "", detail: dict[str, Any] | None = None
    ) -> None:
        log.warning("AUDIT action=%s actor=%s reason=%s", action, actor, reason)
        record = AuditRecord(
            actor=actor, action=action, reason=reason, detail=detail or {}, at=utc_now()
        )
        try:
            await self.journal.append(record)
        except Exception as exc:
            log.error("ERROR journal write failed for an audit record: %s", exc)

    def clear_cache(self) -> int:
        """Drops the cache of finished orders; live state and the journal are untouched."""
        cleared = len(self.finished)
        self.finished.clear()
        self._finished_by_client_id.clear()
        return cleared

    # ---- reads ------------------------------------------------------------------------

    async def get_order(self, order_id: str) -> Order | None:
        order = self.open_orders.get(order_id) or self.finished.get(order_id)
        if order is None:
            order = await self.store.get_order(order_id)
        return order

    async def list_orders(
        self, status: str = "open", symbols: frozenset[str] | None = None, limit: int = 50
    ) -> list[Order]:
        """Newest first, like Alpaca's list orders."""
        if status == "open":
            orders = list(self.open_orders.values())
            if symbols:
                orders = [o for o in orders if o.symbol in symbols]
        else:
            closed = status == "closed"
            # The in-memory state of an order is never older than its journaled one.
            orders = [
                self.open_orders.get(o.id) or self.finished.get(o.id) or o
                for o in await self.store.recent_orders(limit, closed, symbols)
            ]
            if closed:
                orders = [o for o in orders if not o.is_open]
        orders.sort(key=lambda o: o.created_at, reverse=True)
        return orders[:limit]

    def positions(self) -> list[Position]:
        out = []
        for symbol, qty, avg, realized, unrealized, mark in self.gate.positions():
            if abs(qty) <= QTY_EPSILON:
                continue
            price = mark if mark is not None else avg
            out.append(
                Position(
                    symbol=symbol,
                    qty=qty,
                    side="long" if qty > 0 else "short",
                    avg_entry_price=avg,
                    current_price=mark,
                    market_value=qty * price,
                    cost_basis=qty * avg,
                    unrealized_pl=unrealized,
                    realized_pl=realized,
                )
            )
        return out

    def status(self) -> dict[str, Any]:
        account = self.gate.account()
        return {
            "trading_state": self.gate.state,
            "accepting_orders": self.accepting,
            "trading_mode": self.settings.trading_mode,
            "execution_mode": self.settings.execution_mode,
            "broker": self.settings.broker_name,
            "kill_switch": msgspec.structs.asdict(self.kill_switch_state()),
            "open_orders": len(self.open_orders),
            "positions": len(self.positions()),
            "account": account,
            "counters": dict(self.counters),
            "uptime_seconds": round(time.time() - self.started_at, 3),
        }
