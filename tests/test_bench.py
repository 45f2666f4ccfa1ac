"""`tradeengine bench` runs and reports figures with their conditions (never asserts timings)."""

from __future__ import annotations

import json
import subprocess
import sys


def bench(*args: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "tradeengine.cli", "bench", *args, "--json"],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    report: dict[str, object] = json.loads(out)
    return report


def test_core_bench_reports_percentiles_throughput_and_the_conditions() -> None:
    report = bench("core", "--orders", "3000")
    machine = report["machine"]
    assert isinstance(machine, dict)
    assert {"cores", "cpu", "python", "tradeengine"} <= machine.keys()
    core = report["core"]
    assert isinstance(core, dict)
    assert {"p50", "p99", "p999"} <= core["check_ns"].keys()
    assert core["batch_check_per_s"] > 0
    assert core["batch_replay_per_s"] > 0
    assert core["speedup_p50"] > 0


def test_engine_bench_reports_with_and_without_the_journal() -> None:
    report = bench("engine", "--orders", "500")
    engine = report["engine"]
    assert isinstance(engine, dict)
    runs = engine["runs"]
    assert {(r["journal"], r["concurrency"]) for r in runs} == {
        ("sqlite", 1),
        ("sqlite", 64),
        ("none", 1),
        ("none", 64),
    }
    assert all(r["orders_per_s"] > 0 for r in runs)


def test_text_output_names_the_machine() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tradeengine.cli", "bench", "core", "--orders", "1000"],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    assert "machine:" in out
    assert "cores" in out
    assert "p50 ns" in out
