"""The route table: every endpoint with its method, path, least role, wire types and handler.

The table is the single source of the routes Starlette serves, of `/openapi.json`, and of the
test that every route declares a role. Handlers are short: decode, one engine call, encode.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tradeengine import __version__, core_version
from tradeengine.api.auth import Access, Authenticator
from tradeengine.api.control import ServerControl
from tradeengine.api.models import (
    AuditQuery,
    CanceledOrders,
    ClearedCache,
    Component,
    Document,
    Health,
    Liquidation,
    ListOrdersQuery,
    MarketPrices,
    Marks,
    ReasonQuery,
    ReasonRequest,
    ShutdownAccepted,
    ShutdownRequest,
)
from tradeengine.api.process import process_stats
from tradeengine.api.wire import read_json, read_query, reply
from tradeengine.engine import Engine
from tradeengine.errors import EngineError, NotFound, Unavailable
from tradeengine.schemas import (
    AuditRecord,
    KillSwitchState,
    Order,
    OrderRequest,
    Position,
    RiskConfig,
    RiskConfigUpdate,
    ThrottleConfig,
    ThrottleConfigUpdate,
)

if TYPE_CHECKING:
    from tradeengine.api.observability import Observability

log = logging.getLogger("tradeengine.api")

UNLOGGED_REFUSALS = frozenset({"client_order_id_conflict", "shutting_down"})
"""Codes of order refusals that the engine does not log itself (risk blocks are its RISK_BLOCK
lines, journal and broker failures its ERROR lines, each with the order's ids)."""


@dataclass(frozen=True, slots=True)
class Call:
    """What a handler gets besides the request: the engine and who is calling."""

    engine: Engine
    actor: str
    control: ServerControl


Handler = Callable[[Request, Call], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    path: str
    access: Access
    """The least role that may call it, or `public`."""
    handler: Handler
    summary: str
    body: Any = None
    """The msgspec type of the JSON body, if any."""
    body_required: bool = True
    query: Any = None
    """A msgspec Struct whose fields are the query parameters."""
    response: Any = None
    status: int = 200
    errors: tuple[int, ...] = ()
    """Error statuses besides those every endpoint may answer (401, 403, 413, 415, 422)."""
    media_type: str = "application/json"


# ---- health ------------------------------------------------------------------------------


def _broker_health(engine: Engine) -> dict[str, Any]:
    if engine.broker is None:
        return {"connected": False, "broker": engine.settings.broker_name}
    return {"broker": engine.settings.broker_name, **engine.broker.health()}


def _components(engine: Engine, broker_connected: bool) -> dict[str, Component]:
    state = engine.gate.state
    if not engine.accepting:
        engine_part = Component(status="down", state="stopping")
    elif state == "halted":
        engine_part = Component(status="halted", state=state)
    elif state == "reducing":
        engine_part = Component(status="degraded", state=state)
    else:
        engine_part = Component(status="ok", state=state)
    failing = engine.journal.timings.last_failed
    engaged = engine.gate.kill_switch() is not None
    return {
        "engine": engine_part,
        "store": Component(
            status="down" if failing else "ok", state="failing" if failing else "writing"
        ),
        "broker": Component(
            status="ok" if broker_connected else "down",
            state="connected" if broker_connected else "disconnected",
        ),
        "kill_switch": Component(
            status="halted" if engaged else "ok", state="engaged" if engaged else "released"
        ),
    }


async def health(request: Request, call: Call) -> Response:
    engine = call.engine
    connected = bool(_broker_health(engine).get("connected"))
    components = _components(engine, connected)
    statuses = {c.status for c in components.values()}
    status: Literal["ok", "halted", "degraded", "shutting_down"]
    if engine.shutdown_requested.is_set():
        status = "shutting_down"
    elif "halted" in statuses:
        status = "halted"
    elif statuses - {"ok"}:
        status = "degraded"
    else:
        status = "ok"
    return reply(
        Health(
            status=status,
            version=__version__,
            trading_mode=engine.settings.trading_mode,
            execution_mode=engine.settings.execution_mode,
            trading_state=engine.gate.state,
            accepting_orders=engine.accepting,
            kill_switch_engaged=engine.gate.kill_switch() is not None,
            broker_connected=connected,
            uptime_seconds=round(time.time() - engine.started_at, 3),
            components=components,
        )
    )


async def broker_health(request: Request, call: Call) -> Response:
    return reply(_broker_health(call.engine))


def _ratio(used: float, limit: float) -> float | None:
    if not (math.isfinite(used) and math.isfinite(limit)) or limit <= 0:
        return None
    return round(used / limit, 6)


def _position_usage(engine: Engine, limit: float) -> dict[str, dict[str, Any]]:
    """Per symbol: the position and the worst case MAX_POSITION_SIZE counts (the position
    plus every resting order on one side, at the mark)."""
    gate = engine.gate
    symbols = {p[0] for p in gate.positions()} | {r[1] for r in gate.resting_orders()}
    usage = {}
    for symbol in sorted(symbols):
        position = gate.position(symbol)
        qty, avg = (position[0], position[1]) if position else (0.0, None)
        price = gate.get_mark(symbol) or avg
        buys, sells = gate.exposure(symbol)
        worst = max(abs(qty + buys), abs(qty - sells))
        usage[symbol] = {
            "qty": qty,
            "resting_buy_qty": buys,
            "resting_sell_qty": sells,
            "price": price,
            "notional": None if price is None else abs(qty) * price,
            "worst_case_notional": None if price is None else worst * price,
            "limit": limit,
            "used": None if price is None else _ratio(worst * price, limit),
        }
    return usage


def _limit_usage(engine: Engine) -> dict[str, Any]:
    gate = engine.gate
    limits = gate.limits()
    account = gate.account()
    per_minute, throttle_enabled = gate.throttle()
    tokens = gate.tokens_available()
    daily_pnl = float(account["daily_pnl"])
    max_daily_loss = float(limits["max_daily_loss"])
    return {
        "max_position_size": {
            "limit": float(limits["max_position_size"]),
            "positions": _position_usage(engine, float(limits["max_position_size"])),
        },
        "portfolio_heat": {
            "value": float(account["heat"]),
            "limit": float(limits["portfolio_heat_limit"]),
            "used": _ratio(float(account["heat"]), float(limits["portfolio_heat_limit"])),
        },
        "max_daily_loss": {
            "daily_pnl": daily_pnl,
            "limit": max_daily_loss,
            "used": _ratio(max(0.0, -daily_pnl), abs(max_daily_loss)),
        },
        "max_drawdown": {
            "value": float(account["drawdown"]),
            "limit": float(limits["max_drawdown"]),
            "used": _ratio(float(account["drawdown"]), float(limits["max_drawdown"])),
        },
        "throttle": {
            "enabled": throttle_enabled,
            "tokens_available": round(tokens, 3),
            "capacity": per_minute,
            "used": _ratio(max(0.0, per_minute - tokens), per_minute) if throttle_enabled else None,
        },
    }


async def risk_service_health(request: Request, call: Call) -> Response:
    engine = call.engine
    state = engine.gate.state
    return reply(
        {
            "status": "halted" if state == "halted" else "ok",
            "core_version": core_version,
            "trading_state": state,
            "kill_switch": engine.kill_switch_state(),
            "throttle": engine.throttle_config(),
            "limits": engine.risk_config(),
            "usage": _limit_usage(engine),
            "account": engine.gate.account(),
            "risk_plugins": [
                impl.plugin_name for impl in engine.pm.hook.check_order.get_hookimpls()
            ],
        }
    )


async def system_health(request: Request, call: Call) -> Response:
    engine = call.engine
    observability: Observability | None = getattr(request.app.state, "observability", None)
    monitor = observability.monitor if observability else None
    listener = observability.listener if observability else None
    return reply(
        {
            "status": "ok",
            "pid": os.getpid(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            **process_stats(),
            "cpu_percent": monitor.cpu_percent() if monitor else None,
            "event_loop_lag_seconds": monitor.lag() if monitor else None,
            "uptime_seconds": round(time.time() - engine.started_at, 3),
            "open_orders": len(engine.open_orders),
            "cache": {
                "entries": len(engine.finished),
                "size": engine.settings.cache_size,
                "used": _ratio(len(engine.finished), engine.settings.cache_size),
            },
            "cached_finished_orders": len(engine.finished),
            "cache_size": engine.settings.cache_size,
            "journal": {
                "size_bytes": await engine.store.size(),
                "writes": sum(engine.journal.timings.counts),
                "write_failures": engine.journal.timings.failures,
            },
            "metrics_listener": listener.describe() if listener else None,
            "max_workers": engine.settings.max_workers,
        }
    )


async def metrics(request: Request, call: Call) -> Response:
    plugin = call.engine.pm.get_plugin("metrics")
    if plugin is None:
        raise NotFound("the metrics plugin is disabled (TRADEENGINE_DISABLED_PLUGINS)")
    return Response(generate_latest(plugin.registry), media_type=CONTENT_TYPE_LATEST)


async def openapi_document(request: Request, call: Call) -> Response:
    document: bytes = request.app.state.openapi
    return Response(document, media_type="application/json")


# ---- trading -----------------------------------------------------------------------------


async def trading_status(request: Request, call: Call) -> Response:
    return reply(call.engine.status())


async def positions(request: Request, call: Call) -> Response:
    return reply(call.engine.positions())


async def close_position(request: Request, call: Call) -> Response:
    order = await call.engine.close_position(request.path_params["symbol"], call.actor)
    return reply(order)


async def list_orders(request: Request, call: Call) -> Response:
    query = read_query(request, ListOrdersQuery)
    symbols = frozenset(s.strip() for s in query.symbols.split(",") if s.strip())
    return reply(await call.engine.list_orders(query.status, symbols or None, query.limit))


async def submit_order(request: Request, call: Call) -> Response:
    order_request = await read_json(request, OrderRequest)
    try:
        order, created = await call.engine.submit(order_request, call.actor)
    except EngineError as exc:
        if exc.code in UNLOGGED_REFUSALS:
            log.warning(
                "ORDER_REFUSED code=%s client_order_id=%s symbol=%s side=%s qty=%s actor=%s: %s",
                exc.code,
                order_request.client_order_id or "-",
                order_request.symbol,
                order_request.side,
                order_request.qty,
                call.actor,
                exc.message,
            )
        raise
    if not created:
        log.info(
            "ORDER %s client_order_id=%s replayed: an idempotent retry, actor=%s",
            order.id,
            order.client_order_id,
            call.actor,
        )
    location = {"Location": f"/api/trading/orders/status/{order.id}"}
    return reply(order, 201 if created else 200, location)


async def pending_orders(request: Request, call: Call) -> Response:
    return reply(list(call.engine.open_orders.values()))


async def cancel_all_orders(request: Request, call: Call) -> Response:
    canceled = await call.engine.cancel_all(call.actor)
    return reply(CanceledOrders(canceled=canceled, count=len(canceled)))


async def order_status(request: Request, call: Call) -> Response:
    order_id = request.path_params["order_id"]
    order = await call.engine.get_order(order_id)
    if order is None:
        raise NotFound(f"no order with id {order_id!r}")
    return reply(order)


async def cancel_order(request: Request, call: Call) -> Response:
    order_id = request.path_params["order_id"]
    try:
        return reply(await call.engine.cancel(order_id, call.actor))
    except EngineError as exc:
        log.info("CANCEL_REFUSED order %s actor=%s %s: %s", order_id, call.actor, exc.code, exc)
        raise


# ---- emergency ---------------------------------------------------------------------------


async def kill_switch_state(request: Request, call: Call) -> Response:
    return reply(call.engine.kill_switch_state())


async def engage_kill_switch(request: Request, call: Call) -> Response:
    body = await read_json(request, ReasonRequest, default=ReasonRequest())
    reason = body.reason.strip() or "kill switch engaged via API"
    return reply(await call.engine.engage_kill_switch(call.actor, reason))


async def reset_kill_switch(request: Request, call: Call) -> Response:
    body = await read_json(request, ReasonRequest, default=ReasonRequest())
    reason = body.reason or read_query(request, ReasonQuery).reason
    return reply(await call.engine.reset_kill_switch(call.actor, reason))


async def liquidate_all(request: Request, call: Call) -> Response:
    body = await read_json(request, ReasonRequest, default=ReasonRequest())
    orders = await call.engine.liquidate_all(call.actor, body.reason or "liquidate all via API")
    return reply(Liquidation(orders=orders, count=len(orders)))


# ---- configuration -----------------------------------------------------------------------


async def get_risk_config(request: Request, call: Call) -> Response:
    return reply(call.engine.risk_config())


async def put_risk_config(request: Request, call: Call) -> Response:
    update = await read_json(request, RiskConfigUpdate)
    return reply(await call.engine.update_risk_config(update, call.actor))


async def get_throttle_config(request: Request, call: Call) -> Response:
    return reply(call.engine.throttle_config())


async def put_throttle_config(request: Request, call: Call) -> Response:
    update = await read_json(request, ThrottleConfigUpdate)
    return reply(await call.engine.update_throttle_config(update, call.actor))


# ---- broker, market, admin, audit ---------------------------------------------------------


async def test_broker_connection(request: Request, call: Call) -> Response:
    broker = call.engine.broker
    if broker is None:
        raise Unavailable("no broker is connected", code="broker_unavailable")
    try:
        result = await broker.test_connection()
    except Exception as exc:
        raise Unavailable(
            f"the broker did not answer: {type(exc).__name__}: {exc}", code="broker_unavailable"
        ) from exc
    return reply({"broker": call.engine.settings.broker_name, **result})


async def set_market_prices(request: Request, call: Call) -> Response:
    prices = await read_json(request, MarketPrices)
    return reply(Marks(prices=await call.engine.set_marks(prices, call.actor)))


async def shutdown(request: Request, call: Call) -> Response:
    body = await read_json(request, ShutdownRequest, default=ShutdownRequest())
    exit_in = call.control.schedule_exit(body.grace_seconds)
    result = await call.engine.request_shutdown(call.actor, body.reason or "shutdown via API")
    return reply(
        ShutdownAccepted(
            shutting_down=True, open_orders=result["open_orders"], exit_in_seconds=exit_in
        ),
        202,
    )


async def clear_cache(request: Request, call: Call) -> Response:
    return reply(ClearedCache(cleared=call.engine.clear_cache()))


async def audit(request: Request, call: Call) -> Response:
    query = read_query(request, AuditQuery)
    return reply(await call.engine.store.audit(query.limit))


# ---- the table ---------------------------------------------------------------------------

E = Endpoint
ENDPOINTS: tuple[Endpoint, ...] = (
    E("GET", "/api/health", "public", health, "Liveness and a summary", response=Health),
    E("GET", "/api/health/broker", "viewer", broker_health, "Broker connection", response=Document),
    E("GET", "/api/health/risk-service", "viewer", risk_service_health,
      "The risk gate: state, kill switch, throttle, limits", response=Document),
    E("GET", "/api/health/system", "viewer", system_health, "Process memory, CPU, threads",
      response=Document),
    E("GET", "/metrics", "viewer", metrics, "Prometheus metrics (METRICS_ENABLED=true)",
      media_type=CONTENT_TYPE_LATEST, errors=(404,)),
    E("GET", "/openapi.json", "public", openapi_document, "This API's OpenAPI document",
      response=Document),
    E("GET", "/api/trading/status", "viewer", trading_status, "Trading state, account, counters",
      response=Document),
    E("GET", "/api/trading/positions", "viewer", positions, "Open positions",
      response=list[Position]),
    E("DELETE", "/api/trading/positions/{symbol}", "operator", close_position,
      "Close one position with a liquidation market order", response=Order, errors=(404, 409)),
    E("GET", "/api/trading/orders", "viewer", list_orders, "Orders, newest first",
      query=ListOrdersQuery, response=list[Order]),
    E("POST", "/api/trading/orders", "trader", submit_order,
      "Place an order (201; an idempotent retry with the same client_order_id is a 200)",
      body=OrderRequest, response=Order, status=201, errors=(403, 409, 429, 503)),
    E("GET", "/api/trading/orders/pending", "viewer", pending_orders, "Open orders",
      response=list[Order]),
    E("DELETE", "/api/trading/orders/all", "trader", cancel_all_orders,
      "Cancel every open order (never blocked)", response=CanceledOrders),
    E("GET", "/api/trading/orders/status/{order_id}", "viewer", order_status,
      "One order by id", response=Order, errors=(404,)),
    E("DELETE", "/api/trading/orders/{order_id}", "trader", cancel_order, "Cancel one order",
      response=Order, errors=(404, 409)),
    E("GET", "/api/emergency/kill-switch", "viewer", kill_switch_state, "Kill switch state",
      response=KillSwitchState),
    E("POST", "/api/emergency/kill-switch", "trader", engage_kill_switch,
      "Engage the kill switch: block new orders, cancel resting ones",
      body=ReasonRequest, body_required=False, response=KillSwitchState),
    E("DELETE", "/api/emergency/kill-switch", "admin", reset_kill_switch,
      "Reset the kill switch; the reason (body or ?reason=) is required",
      body=ReasonRequest, body_required=False, query=ReasonQuery, response=KillSwitchState),
    E("POST", "/api/emergency/liquidate-all", "operator", liquidate_all,
      "Cancel every order and flatten every position",
      body=ReasonRequest, body_required=False, response=Liquidation, errors=(503,)),
    E("GET", "/api/config/risk", "viewer", get_risk_config, "Risk limits", response=RiskConfig),
    E("PUT", "/api/config/risk", "operator", put_risk_config, "Change risk limits live",
      body=RiskConfigUpdate, response=RiskConfig),
    E("GET", "/api/config/throttle", "viewer", get_throttle_config, "Order throttle",
      response=ThrottleConfig),
    E("PUT", "/api/config/throttle", "operator", put_throttle_config, "Change the throttle live",
      body=ThrottleConfigUpdate, response=ThrottleConfig),
    E("POST", "/api/broker/test-connection", "operator", test_broker_connection,
      "Round trip to the broker", response=Document, errors=(503,)),
    E("POST", "/api/market/prices", "operator", set_market_prices,
      "Set marks of the simulated market (backtest mode only; 409 in live mode)",
      body=MarketPrices, response=Marks, errors=(409,)),
    E("POST", "/api/admin/shutdown", "admin", shutdown,
      "Stop taking orders; the server stops gracefully after grace_seconds",
      body=ShutdownRequest, body_required=False, response=ShutdownAccepted, status=202),
    E("POST", "/api/admin/clear-cache", "operator", clear_cache,
      "Drop the cache of finished orders", response=ClearedCache),
    E("GET", "/api/audit", "viewer", audit, "Operator actions, newest first: who, what, why",
      query=AuditQuery, response=list[AuditRecord]),
)  # fmt: skip


def endpoints(metrics_enabled: bool) -> tuple[Endpoint, ...]:
    """The table as served: `/metrics` only when METRICS_ENABLED=true."""
    return tuple(e for e in ENDPOINTS if metrics_enabled or e.path != "/metrics")


def _dispatcher(by_method: dict[str, Endpoint]) -> Callable[[Request], Awaitable[Response]]:
    async def dispatch(request: Request) -> Response:
        endpoint = by_method["GET" if request.method == "HEAD" else request.method]
        auth: Authenticator = request.app.state.auth
        actor = await auth.authorize(request, endpoint.access)
        call = Call(request.app.state.engine, actor, request.app.state.control)
        return await endpoint.handler(request, call)

    return dispatch


def build_routes(table: tuple[Endpoint, ...]) -> list[Route]:
    """One Starlette route per path (so a 405 lists every allowed method), in table order:
    literal paths such as `/orders/pending` come before `/orders/{order_id}`."""
    by_path: dict[str, dict[str, Endpoint]] = {}
    for endpoint in table:
        by_path.setdefault(endpoint.path, {})[endpoint.method] = endpoint
    return [
        Route(path, _dispatcher(by_method), methods=list(by_method))
        for path, by_method in by_path.items()
    ]
