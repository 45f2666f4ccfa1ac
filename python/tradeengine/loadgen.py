"""The load generator behind `tradeengine bench http`.

Open loop: requests are due at fixed intervals (1/rate) whatever the server does, and each
latency is measured from the moment the request was due, not from when a connection became
free, so a stalled server shows up in the percentiles instead of slowing the generator down
(coordinated omission). Closed loop: every connection sends back to back; its throughput is the
maximum the server answers. The generator runs in a process of its own (`python -m
tradeengine.loadgen`), the server in another (`tradeengine serve`).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import msgspec


class Result(msgspec.Struct):
    mode: str
    rate: float
    duration: float
    sent: int
    ok: int
    errors: int
    achieved_per_s: float
    latency_ms: dict[str, float]


def _request(host: str, port: int, n: int) -> bytes:
    side = "buy" if n % 2 else "sell"
    body = (
        f'{{"symbol":"AAPL","side":"{side}","qty":1,"type":"market",'
        f'"time_in_force":"day","client_order_id":"lg-{os.getpid()}-{n}"}}'
    ).encode()
    head = (
        f"POST /api/trading/orders HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes
) -> int:
    writer.write(payload)
    status_line = await reader.readline()
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return int(status_line.split()[1]) if status_line else 0


def _summary(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {"p50": math.nan, "p99": math.nan, "p999": math.nan, "max": math.nan}
    ordered = sorted(latencies)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, math.floor(q * len(ordered)))] * 1000

    return {"p50": at(0.5), "p99": at(0.99), "p999": at(0.999), "max": ordered[-1] * 1000}


async def open_loop(host: str, port: int, rate: float, duration: float, connections: int) -> Result:
    total = int(rate * duration)
    queue: asyncio.Queue[tuple[int, float]] = asyncio.Queue()
    latencies: list[float] = []
    ok = errors = 0
    start = time.perf_counter() + 0.2

    async def worker() -> None:
        nonlocal ok, errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while True:
                n, due = await queue.get()
                if n < 0:
                    return
                try:
                    status = await _exchange(reader, writer, _request(host, port, n))
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                latencies.append(time.perf_counter() - due)
                if 200 <= status < 300:
                    ok += 1
                else:
                    errors += 1
        finally:
            writer.close()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    for n in range(total):
        due = start + n / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((n, due))
    for _ in workers:
        queue.put_nowait((-1, 0.0))
    await asyncio.wait_for(asyncio.gather(*workers), timeout=duration + 30)
    elapsed = time.perf_counter() - start
    return Result("open", rate, duration, total, ok, errors, ok / elapsed, _summary(latencies))


async def closed_loop(host: str, port: int, duration: float, connections: int) -> Result:
    latencies: list[float] = []
    ok = errors = sent = 0
    stop = time.perf_counter() + duration

    async def worker(w: int) -> None:
        nonlocal ok, errors, sent
        reader, writer = await asyncio.open_connection(host, port)
        n = w * 10_000_000
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            status = await _exchange(reader, writer, _request(host, port, n))
            latencies.append(time.perf_counter() - t0)
            sent += 1
            n += 1
            if 200 <= status < 300:
                ok += 1
            else:
                errors += 1
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(connections)))
    elapsed = time.perf_counter() - started
    return Result("closed", 0.0, duration, sent, ok, errors, ok / elapsed, _summary(latencies))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _call(url: str, body: bytes | None = None, method: str = "GET") -> bytes:
    request = urllib.request.Request(url, data=body, method=method)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=5) as response:
        data: bytes = response.read()
        return data


def _start_server(port: int, workers: int, tmp: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp}/bench.db",
        "LOG_FILE": str(tmp / "bench.log"),
        "LOG_LEVEL": "WARNING",
        "THROTTLE_ENABLED": "false",
        "SYNTHETIC_FEED": "false",
        "MAX_POSITION_SIZE": "1e15",
        "PORTFOLIO_HEAT_LIMIT": "1e9",
        "MAX_DAILY_LOSS": "-1e15",
        "MAX_DRAWDOWN": "1",
        "TRADEENGINE_DISABLED_PLUGINS": "example",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "tradeengine.cli", "serve", "--port", str(port),
         "--workers", str(workers)],
        env=env,
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            _call(f"http://127.0.0.1:{port}/api/health")
            break
        except OSError:
            time.sleep(0.1)
    else:
        server.kill()
        raise RuntimeError("tradeengine serve did not answer /api/health within 30 s")
    _call(f"http://127.0.0.1:{port}/api/market/prices", b'{"AAPL": 100.0}', "POST")
    return server


def _generate(port: int, *args: str) -> Result:
    """Runs the generator in a process of its own and reads its result."""
    out = subprocess.run(
        [sys.executable, "-m", "tradeengine.loadgen", "--port", str(port), *args],
        check=True,
        capture_output=True,
        timeout=600,
    ).stdout
    return msgspec.json.decode(out, type=Result)


def bench_http(
    rates: tuple[float, ...] = (500, 1000, 2000),
    duration: float = 5.0,
    connections: int = 32,
    workers: int = 1,
) -> dict[str, Any]:
    """Open-loop runs at each rate and a closed-loop maximum against a real server."""
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = _start_server(port, workers, Path(tmp))
        try:
            runs = [
                _generate(port, "--rate", str(rate), "--duration", str(duration),
                          "--connections", str(connections))
                for rate in rates
            ]  # fmt: skip
            closed = _generate(port, "--closed", "--duration", str(duration),
                               "--connections", str(connections))  # fmt: skip
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
    sustained = [
        r.rate for r in runs
        if r.errors == 0 and r.achieved_per_s >= 0.95 * r.rate and r.latency_ms["p99"] < 100
    ]  # fmt: skip
    return {
        "workers": workers,
        "connections": connections,
        "duration_s": duration,
        "open_loop": [msgspec.structs.asdict(r) for r in runs],
        "closed_loop": msgspec.structs.asdict(closed),
        "highest_sustained_rate": max(sustained, default=0.0),
        "sustained_means": "no errors, >= 95% of the rate answered, p99 < 100 ms",
    }


def print_http(r: dict[str, Any]) -> None:
    print(
        f"http: POST /api/trading/orders on 127.0.0.1, {r['workers']} worker(s), "
        f"{r['connections']} connections, {r['duration_s']} s per rate (open loop, "
        "latency from the intended send time)"
    )
    header = ("rate/s", "answered/s", "errors", "p50 ms", "p99 ms", "p99.9 ms")
    print("  {:>8} {:>11} {:>7} {:>8} {:>8} {:>9}".format(*header))
    for run in [*r["open_loop"], r["closed_loop"]]:
        lat = run["latency_ms"]
        label = f"{run['rate']:.0f}" if run["mode"] == "open" else "closed"
        print(
            f"  {label:>8} {run['achieved_per_s']:>11,.0f} {run['errors']:>7} "
            f"{lat['p50']:>8.2f} {lat['p99']:>8.2f} {lat['p999']:>9.2f}"
        )
    print(
        f"  highest sustained open-loop rate: {r['highest_sustained_rate']:.0f}/s "
        f"({r['sustained_means']})"
    )


def plot_http(r: dict[str, Any], path: str) -> None:
    """A PNG of the open-loop latency percentiles per rate (needs matplotlib: the bench extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = r["open_loop"]
    rates = [run["rate"] for run in runs]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, label in (("p50", "p50"), ("p99", "p99"), ("p999", "p99.9")):
        ax.plot(rates, [run["latency_ms"][key] for run in runs], marker="o", label=label)
    ax.set_xlabel("offered rate (orders/s, open loop)")
    ax.set_ylabel("latency (ms, from intended send time)")
    ax.set_yscale("log")
    ax.set_title(f"POST /api/trading/orders, {r['workers']} worker(s), loopback")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tradeengine.loadgen")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--duration", type=float, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--closed", action="store_true")
    args = parser.parse_args()
    if args.closed:
        result = asyncio.run(closed_loop(args.host, args.port, args.duration, args.connections))
    else:
        result = asyncio.run(
            open_loop(args.host, args.port, args.rate, args.duration, args.connections)
        )
    sys.stdout.write(msgspec.json.encode(result).decode())


if __name__ == "__main__":
    main()
