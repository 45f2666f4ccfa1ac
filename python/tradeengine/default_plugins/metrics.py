"""The metrics observer: Prometheus metrics of the engine, in a registry of its own (one per
plugin manager, so one per app)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from tradeengine import RULES
from tradeengine.errors import OrderRejected
from tradeengine.hookspecs import hookimpl
from tradeengine.schemas import Fill, KillSwitchState, Order, RejectionRecord
from tradeengine.settings import Settings

# 10 us to 10 s.
LATENCY_BUCKETS = (
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3,
    1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

TRADING_STATES = ("active", "reducing", "halted")


class MetricsObserver:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[object, ...], Any] = {}
        r = self.registry
        self.submitted = Counter(
            "orders_submitted", "Orders accepted and sent to the broker.", ["side", "type"],
            registry=r,
        )  # fmt: skip
        self.filled = Counter(
            "orders_filled", "Orders completely filled.", ["side", "type"], registry=r
        )
        self.rejected = Counter(
            "orders_rejected", "Orders refused, by error code.", ["code"], registry=r
        )
        self.risk_blocks = Counter(
            "risk_blocks", "Orders refused by a risk rule, by rule.", ["rule"], registry=r
        )
        self.latency = Histogram(
            "order_submit_latency_seconds",
            "Time from submit to the broker's acknowledgement.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.broker_status = Gauge(
            "broker_connection_status", "1 when the broker is connected.", ["broker"], registry=r
        )
        self.kill_switch = Gauge("kill_switch_engaged", "1 while the kill switch is engaged.",
                                 registry=r)  # fmt: skip
        self.trading_state = Gauge(
            "trading_state", "1 for the current trading state.", ["state"], registry=r
        )
        for rule in RULES:
            self.risk_blocks.labels(rule=rule)
        self.kill_switch.set(0)
        self._set_state("active")

    def _set_state(self, state: str) -> None:
        for s in TRADING_STATES:
            self.trading_state.labels(state=s).set(1 if s == state else 0)

    @hookimpl
    def on_start(self, engine: Any) -> None:
        self.broker_status.labels(broker=engine.settings.broker_name).set(1)
        engaged = engine.gate.kill_switch() is not None
        self.kill_switch.set(1 if engaged else 0)
        self._set_state(engine.gate.state)

    @hookimpl
    def on_stop(self, engine: Any) -> None:
        self.broker_status.labels(broker=engine.settings.broker_name).set(0)

    def _child(self, metric: Counter, *labels: str) -> Any:
        """Label children are cached: `labels()` is a lock and a dict lookup per call."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    @hookimpl
    def on_submit(self, order: Order, latency_seconds: float) -> None:
        self._child(self.submitted, order.side, order.type).inc()
        self.latency.observe(latency_seconds)

    @hookimpl
    def on_fill(self, fill: Fill, order: Order) -> None:
        if order.status == "filled":
            self._child(self.filled, order.side, order.type).inc()

    @hookimpl
    def on_risk_block(self, rejection: RejectionRecord) -> None:
        self._child(self.risk_blocks, rejection.rule).inc()
        self._child(self.rejected, OrderRejected.for_rule(rejection.rule, "").code).inc()

    @hookimpl
    def on_kill_switch(self, state: KillSwitchState) -> None:
        self.kill_switch.set(1 if state.engaged else 0)
        self._set_state("halted" if state.engaged else "active")
