"""The metrics observer: Prometheus metrics of the engine, in a registry of its own (one per
plugin manager, so one per app).

On the order path a metric costs at most a cached counter child's increment (and the one
submit latency observation). Everything that describes state (kill switch, trading state,
positions, exposure, equity, PnL, drawdown, throttle tokens, journal write latency) is read
from the engine when Prometheus scrapes. HTTP requests are counted by
`tradeengine.api.middleware.HttpMetricsMiddleware` through `observe_http`. docs/api.md lists
every metric."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from tradeengine import RULES
from tradeengine.errors import OrderRejected
from tradeengine.hookspecs import hookimpl
from tradeengine.schemas import Fill, Order, RejectionRecord
from tradeengine.settings import Settings
from tradeengine.store.journal import LATENCY_BUCKETS, WriteTimings

__all__ = ["LATENCY_BUCKETS", "MetricsObserver"]

BROKER_REJECTED = "broker_rejected"
"""The `orders_rejected_total` code of an order the broker refused after the gate passed it."""

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
        self.http_requests = Counter(
            "http_requests", "HTTP requests by route template, method and status class.",
            ["route", "method", "status"], registry=r,
        )  # fmt: skip
        self.http_latency = Histogram(
            "http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by route template.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.engine: Any = None
        r.register(_EngineCollector(self))
        ProcessCollector(registry=r)
        for rule in RULES:
            self.risk_blocks.labels(rule=rule)

    @hookimpl
    def on_start(self, engine: Any) -> None:
        self.engine = engine
        self.broker_status.labels(broker=engine.settings.broker_name).set(1)

    @hookimpl
    def on_stop(self, engine: Any) -> None:
        self.broker_status.labels(broker=engine.settings.broker_name).set(0)
        self.engine = None

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
    def on_order(self, order: Order, previous_status: str | None) -> None:
        if order.status == "rejected" and previous_status != "rejected":
            self._child(self.rejected, BROKER_REJECTED).inc()

    @hookimpl
    def on_fill(self, fill: Fill, order: Order) -> None:
        if order.status == "filled":
            self._child(self.filled, order.side, order.type).inc()

    @hookimpl
    def on_risk_block(self, rejection: RejectionRecord) -> None:
        self._child(self.risk_blocks, rejection.rule).inc()
        self._child(self.rejected, OrderRejected.for_rule(rejection.rule, "").code).inc()

    def count_refusal(self, code: str) -> None:
        """An order refused outside the risk rules (a conflict, or failing closed)."""
        self._child(self.rejected, code).inc()

    def observe_http(self, route: str, method: str, status: str, seconds: float) -> None:
        """One HTTP request answered (labels already bounded by the caller)."""
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.http_requests.labels(route, method, status),
                self.http_latency.labels(route, method),
            )
        count, latency = children
        count.inc()
        latency.observe(seconds)


class _EngineCollector(Collector):
    """Gauges read from the engine at scrape time: always the engine's current state (a
    restored kill switch latch included), and no cost per order."""

    def __init__(self, observer: MetricsObserver) -> None:
        self.observer = observer

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        engine = self.observer.engine
        if engine is None:
            return
        gate = engine.gate
        account = gate.account()
        engaged = gate.kill_switch() is not None
        yield GaugeMetricFamily(
            "kill_switch_engaged", "1 while the kill switch is engaged.", value=int(engaged)
        )
        state = GaugeMetricFamily("trading_state", "1 for the current state.", labels=["state"])
        for name in TRADING_STATES:
            state.add_metric([name], 1 if gate.state == name else 0)
        yield state
        for name, help_text, key in (
            ("equity_usd", "Equity: cash plus realized and unrealized PnL.", "equity"),
            ("peak_equity_usd", "Highest equity seen.", "peak_equity"),
            ("daily_pnl_usd", "PnL since the start of the exchange's trading day.", "daily_pnl"),
            ("realized_pnl_usd", "Realized PnL.", "realized_pnl"),
            ("unrealized_pnl_usd", "Unrealized PnL at the latest marks.", "unrealized_pnl"),
            ("drawdown_ratio", "Fraction below the equity peak.", "drawdown"),
            ("portfolio_heat_ratio", "Risk of positions and resting orders over equity.", "heat"),
        ):
            value = float(account[key])
            yield GaugeMetricFamily(name, help_text, value=value if math.isfinite(value) else 0)
        limits = GaugeMetricFamily("risk_limit", "Configured risk limits.", labels=["limit"])
        for key, value in gate.limits().items():
            if key != "auto_kill" and math.isfinite(float(value)):
                limits.add_metric([key], float(value))
        yield limits
        yield from _journal_metrics(engine.journal.timings)
        qty = GaugeMetricFamily("position_qty", "Signed position.", labels=["symbol"])
        notional = GaugeMetricFamily(
            "position_notional_usd", "Absolute notional at the mark.", labels=["symbol"]
        )
        exposure = GaugeMetricFamily(
            "resting_order_qty", "Quantity of resting orders.", labels=["symbol", "side"]
        )
        gross = net = 0.0
        for symbol, q, avg, _realized, _unrealized, mark in gate.positions():
            price = mark if mark is not None else avg
            qty.add_metric([symbol], q)
            notional.add_metric([symbol], abs(q) * price)
            gross += abs(q) * price
            net += q * price
            buys, sells = gate.exposure(symbol)
            exposure.add_metric([symbol, "buy"], buys)
            exposure.add_metric([symbol, "sell"], sells)
        yield qty
        yield notional
        yield exposure
        yield GaugeMetricFamily(
            "gross_exposure_usd", "Sum of the absolute position notionals at the marks.",
            value=gross,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "net_exposure_usd", "Sum of the signed position notionals at the marks.", value=net
        )
        yield GaugeMetricFamily(
            "throttle_tokens_available",
            "Orders the throttle would let through now.",
            value=gate.tokens_available(),
        )
        yield GaugeMetricFamily(
            "open_orders", "Orders not yet filled, canceled or rejected.",
            value=len(engine.open_orders),
        )  # fmt: skip


def _journal_metrics(timings: WriteTimings) -> Iterable[Metric]:
    cumulative, buckets = 0, []
    for bound, count in zip((*timings.bounds, math.inf), timings.counts, strict=True):
        cumulative += count
        buckets.append(("+Inf" if math.isinf(bound) else repr(bound), cumulative))
    yield HistogramMetricFamily(
        "journal_write_latency_seconds",
        "Time of one journal transaction (a group commit of up to BATCH_SIZE records).",
        buckets=buckets,
        sum_value=timings.total_seconds,
    )
    yield CounterMetricFamily(
        "journal_write_failures", "Journal transactions that failed.", value=timings.failures
    )
