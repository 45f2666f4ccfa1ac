"""Start and stop, from the app's lifespan, of what observes the running engine:
`start_observability(app)` once the engine runs, `await stop_observability(app)` before it
stops. That is the event loop monitor (`tradeengine.api.process.LoopMonitor`, exported
through the metrics plugin's registry) and the METRICS_PORT listener
(`tradeengine.api.metrics_listener`)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.registry import CollectorRegistry
from starlette.applications import Starlette

from tradeengine.api.metrics_listener import MetricsListener, start_metrics_listener
from tradeengine.api.process import LoopMonitor


@dataclass
class Observability:
    monitor: LoopMonitor
    listener: MetricsListener | None
    registry: CollectorRegistry | None


def start_observability(app: Starlette) -> None:
    """Starts the loop monitor (exported through the metrics plugin's registry, when it is
    loaded) and the METRICS_PORT listener. Needs `app.state.engine` and `app.state.auth`."""
    monitor = LoopMonitor()
    monitor.start()
    metrics = app.state.engine.pm.get_plugin("metrics")
    registry: CollectorRegistry | None = getattr(metrics, "registry", None)
    if registry is not None:
        registry.register(monitor)
    app.state.observability = Observability(monitor, start_metrics_listener(app), registry)


async def stop_observability(app: Starlette) -> None:
    """Stops what `start_observability` started (nothing if it did not run)."""
    observability: Observability | None = getattr(app.state, "observability", None)
    if observability is None:
        return
    app.state.observability = None
    if observability.listener is not None:
        await observability.listener.stop()
    await observability.monitor.stop()
    if observability.registry is not None:
        observability.registry.unregister(observability.monitor)
