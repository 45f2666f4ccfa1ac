"""`create_app(settings)`: the Starlette app. Its lifespan owns the engine.

The app is a route table (`tradeengine.api.routes`), an exception handler per kind of error
(`tradeengine.api.errors`), pure ASGI middleware (the body size limit) and a lifespan that
checks the tokens, starts the engine, and stops it when the server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable

import msgspec
import pluggy
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.routing import BaseRoute, Mount, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from tradeengine.api.auth import Access, Authenticator, live
from tradeengine.api.control import ServerControl
from tradeengine.api.errors import exception_handlers
from tradeengine.api.middleware import MAX_BODY_BYTES, BodyLimitMiddleware, HttpMetricsMiddleware
from tradeengine.api.observability import start_observability, stop_observability
from tradeengine.api.openapi import build_openapi
from tradeengine.api.routes import build_routes, endpoints
from tradeengine.cluster import Cluster, ForwardingMiddleware
from tradeengine.engine import Engine
from tradeengine.logs import configure_logging
from tradeengine.plugins import make_plugin_manager
from tradeengine.schemas import TokenRecord
from tradeengine.settings import Settings, load_settings
from tradeengine.store import Store, open_store

log = logging.getLogger("tradeengine.api")

PLUGIN_PREFIX = "/api/plugins"


class StartRefused(RuntimeError):
    """The configuration is not safe to serve (live trading without API tokens)."""


class PluginRoutesGuard:
    """Plugin routes cannot declare a role through `register_routes`: reads (GET, HEAD) need
    viewer, anything else operator."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope, receive)
            access: Access = "viewer" if request.method in ("GET", "HEAD") else "operator"
            auth: Authenticator = request.app.state.auth
            await auth.authorize(request, access)
        await self.app(scope, receive, send)


async def _active_tokens(make_store: Callable[[], Store]) -> list[TokenRecord]:
    # Read before the engine starts, so that a refused start never touches the broker.
    store = make_store()
    await store.open()
    try:
        return [t for t in await store.tokens() if t.revoked_at is None]
    finally:
        await store.close()


def create_app(
    settings: Settings | None = None,
    *,
    store_factory: Callable[[], Store] | None = None,
    plugin_manager: pluggy.PluginManager | None = None,
    exit_process_on_shutdown: bool = False,
) -> Starlette:
    """The API app. `store_factory` makes the journal (default: `open_store(settings)`);
    `plugin_manager` defaults to `make_plugin_manager(settings)`; `exit_process_on_shutdown`
    lets `POST /api/admin/shutdown` stop the server process (set by `tradeengine.main` and
    `tradeengine serve`, not by tests that embed the app)."""
    settings = settings or load_settings()
    configure_logging(settings)
    make_store = store_factory or functools.partial(open_store, settings)
    plugin_manager = plugin_manager or make_plugin_manager(settings)
    table = endpoints(settings.metrics_enabled)
    control = ServerControl(exit_process_on_shutdown)

    routes: list[BaseRoute] = [*build_routes(table)]
    plugin_routes: list[BaseRoute] = []
    plugin_manager.hook.register_routes(register=plugin_routes.append)
    if plugin_routes:
        routes.append(Mount(PLUGIN_PREFIX, app=PluginRoutesGuard(Router(plugin_routes))))

    cluster = Cluster(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tokens = await _active_tokens(make_store)
        if not tokens and live(settings):
            message = (
                "live trading needs API tokens and none is configured: create one with "
                "`tradeengine token create --role admin --name NAME`, then start again"
            )
            log.critical("refusing to start: %s", message)
            raise StartRefused(message)
        if not tokens:
            log.warning(
                "no API token configured: paper mode serves loopback clients only "
                "(127.0.0.1, ::1), with admin rights; create tokens with "
                "`tradeengine token create --role ROLE --name NAME`"
            )
        watchers: list[asyncio.Task[None]] = []

        async def run_engine() -> None:
            # Only the process holding the engine lock gets here (see tradeengine.cluster).
            engine = Engine(settings, plugin_manager=plugin_manager, store=make_store())
            app.state.engine = engine
            app.state.auth = Authenticator(engine.store)
            await engine.start()
            start_observability(app)
            watchers.append(
                asyncio.create_task(control.exit_when_requested(engine), name="shutdown")
            )

        await cluster.start(app, run_engine)
        try:
            yield
        finally:
            await cluster.stop()
            for watcher in watchers:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await stop_observability(app)
            engine = getattr(app.state, "engine", None)
            if engine is not None:
                await engine.stop()

    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(ForwardingMiddleware, cluster=cluster),
            Middleware(HttpMetricsMiddleware, metrics=plugin_manager.get_plugin("metrics")),
            Middleware(BodyLimitMiddleware, max_bytes=MAX_BODY_BYTES),
        ],
        exception_handlers=exception_handlers,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.cluster = cluster
    app.state.control = control
    app.state.endpoints = table
    app.state.openapi = msgspec.json.encode(build_openapi(table))
    return app
