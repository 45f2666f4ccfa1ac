"""`tradeengine bench`: latency and throughput of the core, the engine and the HTTP API, as
medians and percentiles with the conditions they were taken in.

Figures are printed, never asserted. Timings are wall-clock on whatever else the machine is
doing: run on a quiet machine and compare runs taken under the same conditions.
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec

from tradeengine import Gate, __version__, core_version

REPO_TESTS = Path(__file__).resolve().parent.parent.parent / "tests"


def machine() -> dict[str, Any]:
    """The conditions: cores, CPU model, versions."""
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "tradeengine": __version__,
        "core": core_version,
        "platform": platform.platform(),
    }


def percentiles(samples_ns: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples_ns)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, math.floor(q * len(ordered)))]

    return {"p50": at(0.50), "p99": at(0.99), "p999": at(0.999), "mean": statistics.fmean(ordered)}


def _timer_overhead_ns(rounds: int = 20_000) -> float:
    clock = time.perf_counter_ns
    samples = []
    for _ in range(rounds):
        t0 = clock()
        samples.append(clock() - t0)
    return statistics.median(samples)


def open_gate(model: Callable[..., Any] = Gate) -> Any:
    gate = model(
        max_orders_per_minute=10_000_000,
        max_position_size=math.inf,
        portfolio_heat_limit=1e9,
        max_daily_loss=-1e12,
        max_drawdown=1.0,
        now=0.0,
    )
    gate.mark("AAPL", 100.0, at=0.0)
    return gate


def _time_checks(gate: Any, n: int, overhead: float, now: float | None) -> list[float]:
    """Per-call latency of accepted checks; each order is canceled after (untimed) so the book
    stays in a steady state."""
    clock = time.perf_counter_ns
    check, cancel = gate.check, gate.on_cancel
    ids = [f"c{i}" for i in range(n)]
    samples = []
    for i, cid in enumerate(ids):
        side = "buy" if i % 2 else "sell"
        t0 = clock()
        check(cid, "AAPL", side, 1.0, now=now)
        samples.append(clock() - t0 - overhead)
        cancel(cid)
    return samples


def _reference_model() -> ModuleType | None:
    path = REPO_TESTS / "reference_model.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("reference_model", path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules["reference_model"] = module
    spec.loader.exec_module(module)
    return module


_NO_EXTRAS = (None, None, "day", False, False, None)


def bench_core(orders: int) -> dict[str, Any]:
    overhead = _timer_overhead_ns()
    rust = percentiles(_time_checks(open_gate(), orders, overhead, None))
    result: dict[str, Any] = {"orders": orders, "timer_overhead_ns": overhead, "check_ns": rust}
    model = _reference_model()
    if model is not None:
        n = min(orders, 50_000)
        reference = percentiles(_time_checks(open_gate(model.ReferenceGate), n, overhead, 0.0))
        result["reference_check_ns"] = reference
        result["speedup_p50"] = reference["p50"] / max(rust["p50"], 1.0)
    batch = [
        (f"b{i}", "AAPL", "buy" if i % 2 else "sell", 1.0, "market", *_NO_EXTRAS)
        for i in range(orders)
    ]
    gate = open_gate()
    t0 = time.perf_counter()
    gate.check_batch(batch, now=0.0)
    result["batch_check_per_s"] = orders / (time.perf_counter() - t0)
    fills = [
        (f"f{i}", "AAPL" if i % 2 else "MSFT", "buy" if i % 3 else "sell", 1.0, 100.0, 0.0)
        for i in range(orders)
    ]
    gate = open_gate()
    t0 = time.perf_counter()
    gate.replay_fills(fills)
    result["batch_replay_per_s"] = orders / (time.perf_counter() - t0)
    return result


def _engine_settings(database_url: str) -> Any:
    from tradeengine.settings import load_settings

    return load_settings(
        {
            "SYNTHETIC_FEED": "false",
            "THROTTLE_ENABLED": "false",
            "MAX_POSITION_SIZE": "1e15",
            "PORTFOLIO_HEAT_LIMIT": "1e9",
            "MAX_DAILY_LOSS": "-1e15",
            "MAX_DRAWDOWN": "1",
            "LOG_LEVEL": "WARNING",
            "DATABASE_URL": database_url,
            "TRADEENGINE_DISABLED_PLUGINS": "example",
        },
        dotenv=None,
    )


async def _engine_run(orders: int, journal: str, concurrency: int = 1) -> dict[str, Any]:
    """`orders` market orders through a started engine, `concurrency` submitters at a time
    (1: one order after another, each latency alone; more: the journal groups their writes)."""
    from tradeengine.engine import Engine
    from tradeengine.schemas import OrderRequest
    from tradeengine.store import MemoryStore, open_store

    with tempfile.TemporaryDirectory() as tmp:
        settings = _engine_settings(f"sqlite:///{tmp}/bench.db")
        store = MemoryStore() if journal == "none" else open_store(settings)
        engine = Engine(settings, store=store)
        await engine.start()
        await engine.set_marks({"AAPL": 100.0})
        requests = [
            OrderRequest(symbol="AAPL", side="buy" if i % 2 else "sell", qty=1.0)
            for i in range(orders)
        ]
        clock = time.perf_counter_ns
        samples: list[float] = []

        async def submitter(mine: list[OrderRequest]) -> None:
            for request in mine:
                t0 = clock()
                await engine.submit(request)
                samples.append(clock() - t0)

        started = time.perf_counter()
        await asyncio.gather(*(submitter(requests[i::concurrency]) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
        await engine.stop()
    return {
        "journal": journal,
        "store": type(store).__name__,
        "concurrency": concurrency,
        "orders_per_s": orders / elapsed,
        "latency_us": {k: v / 1000 for k, v in percentiles(samples).items()},
    }


def bench_engine(orders: int, concurrency: int = 64) -> dict[str, Any]:
    """In process, end to end: submit -> gate -> simulated fill -> book -> journal."""
    return {
        "orders": orders,
        "flow": "market orders, the sim broker fills each at the mark",
        "runs": [
            asyncio.run(_engine_run(orders, journal, c))
            for journal in ("sqlite", "none")
            for c in (1, concurrency)
        ],
    }


def _print_core(r: dict[str, Any]) -> None:
    c = r["check_ns"]
    print(
        f"core: gate check from Python, N={r['orders']} "
        f"(timer overhead {r['timer_overhead_ns']:.0f} ns subtracted)"
    )
    print(f"  {'':24} {'p50 ns':>10} {'p99 ns':>10} {'p99.9 ns':>10}")
    print(f"  {'rust gate':24} {c['p50']:>10.0f} {c['p99']:>10.0f} {c['p999']:>10.0f}")
    if "reference_check_ns" in r:
        m = r["reference_check_ns"]
        name = "python reference model"
        print(f"  {name:24} {m['p50']:>10.0f} {m['p99']:>10.0f} {m['p999']:>10.0f}")
        print(f"  speed-up at p50: {r['speedup_p50']:.1f}x")
    print(f"  batch check:  {r['batch_check_per_s']:>12,.0f} orders/s")
    print(f"  batch replay: {r['batch_replay_per_s']:>12,.0f} fills/s")


def _print_engine(r: dict[str, Any]) -> None:
    print(f"engine: in process, N={r['orders']}; {r['flow']}")
    print(f"  {'journal':24} {'submitters':>10} {'orders/s':>10} {'p50 us':>9} {'p99 us':>9}")
    for x in r["runs"]:
        lat = x["latency_us"]
        print(
            f"  {x['store']:24} {x['concurrency']:>10} {x['orders_per_s']:>10,.0f} "
            f"{lat['p50']:>9.1f} {lat['p99']:>9.1f}"
        )


def run(kind: str, orders: int, as_json: bool, plot: str | None = None, **http: Any) -> int:
    report: dict[str, Any] = {"machine": machine()}
    if kind in ("core", "all"):
        report["core"] = bench_core(orders)
    if kind in ("engine", "all"):
        report["engine"] = bench_engine(min(orders, 100_000))
    if kind in ("http", "all"):
        from tradeengine.loadgen import bench_http

        report["http"] = bench_http(**http)
    if plot and "http" in report:
        from tradeengine.loadgen import plot_http

        plot_http(report["http"], plot)
    if as_json:
        print(msgspec.json.encode(report).decode())
        return 0
    m = report["machine"]
    print(
        f"machine: {m['cores']} cores, {m['cpu']}; Python {m['python']}; "
        f"tradeengine {m['tradeengine']} (core {m['core']})"
    )
    if "core" in report:
        _print_core(report["core"])
    if "engine" in report:
        _print_engine(report["engine"])
    if "http" in report:
        from tradeengine.loadgen import print_http

        print_http(report["http"])
    return 0
