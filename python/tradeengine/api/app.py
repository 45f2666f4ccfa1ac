"""`create_app(settings)`: the Starlette app. Its lifespan owns the engine."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tradeengine.engine import Engine
from tradeengine.settings import Settings, load_settings
from tradeengine.store import open_store


async def health(request: Request) -> JSONResponse:
    engine: Engine = request.app.state.engine
    return JSONResponse({"status": "ok", "trading_state": engine.gate.state})


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or load_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        engine = Engine(settings, store=open_store(settings))
        app.state.engine = engine
        await engine.start()
        try:
            yield
        finally:
            await engine.stop()

    routes = [Route("/api/health", health, methods=["GET"])]
    return Starlette(routes=routes, lifespan=lifespan)
