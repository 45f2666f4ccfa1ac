"""Micro benchmarks of the Rust core, called from Python (pytest-benchmark).

Run with `make bench`; CI runs them once with --benchmark-disable so they never rot. They print
figures and assert none.
"""

from __future__ import annotations

import itertools

from pytest_benchmark.fixture import BenchmarkFixture

from tradeengine.bench import open_gate

NO_EXTRAS: tuple[None, None, str, bool, bool, None] = (None, None, "day", False, False, None)


def test_gate_check_accept_then_cancel(benchmark: BenchmarkFixture) -> None:
    """One accepted check plus the cancel that keeps the book in a steady state."""
    gate = open_gate()
    ids = (f"c{i}" for i in itertools.count())
    check, cancel = gate.check, gate.on_cancel

    def one() -> None:
        cid = next(ids)
        check(cid, "AAPL", "buy", 1.0)
        cancel(cid)

    benchmark(one)


def test_gate_check_reject(benchmark: BenchmarkFixture) -> None:
    """The cheapest refusal: a duplicate client order id."""
    gate = open_gate()
    gate.check("dup", "AAPL", "buy", 1.0)
    benchmark(gate.check, "dup", "AAPL", "buy", 1.0)


def test_check_batch_100k(benchmark: BenchmarkFixture) -> None:
    orders = [
        (f"b{i}", "AAPL", "buy" if i % 2 else "sell", 1.0, "market", *NO_EXTRAS)
        for i in range(100_000)
    ]

    def run() -> None:
        open_gate().check_batch(orders, now=0.0)

    benchmark.pedantic(run, rounds=5, iterations=1)


def test_replay_1m_fills(benchmark: BenchmarkFixture) -> None:
    fills = [
        (f"f{i}", "AAPL" if i % 2 else "MSFT", "buy" if i % 3 else "sell", 1.0, 100.0, 0.0)
        for i in range(1_000_000)
    ]

    def run() -> None:
        open_gate().replay_fills(fills)

    benchmark.pedantic(run, rounds=3, iterations=1)


def test_reference_model_check_accept_then_cancel(benchmark: BenchmarkFixture) -> None:
    """`test_gate_check_accept_then_cancel` on the pure-Python reference model of the gate
    (tests/reference_model.py), so that the Rust:Python ratio shows next to it. The model has
    no clock: it is checked at a fixed now=0.0, which the 10M/minute bucket never runs dry at
    within a benchmark."""
    from reference_model import ReferenceGate

    gate = open_gate(ReferenceGate)
    ids = (f"c{i}" for i in itertools.count())
    check, cancel = gate.check, gate.on_cancel

    def one() -> None:
        cid = next(ids)
        check(cid, "AAPL", "buy", 1.0, now=0.0)
        cancel(cid)

    benchmark(one)
