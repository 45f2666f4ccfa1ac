"""The `tradeengine` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tradeengine.settings import SettingsError, load_settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = load_settings()
    options: dict[str, object] = {
        "host": args.host,
        "port": args.port,
        "log_level": settings.log_level.lower(),
    }
    if args.ssl_keyfile or args.ssl_certfile:
        if not (args.ssl_keyfile and args.ssl_certfile):
            print("error: --ssl-keyfile and --ssl-certfile go together", file=sys.stderr)
            return 2
        options.update(ssl_keyfile=args.ssl_keyfile, ssl_certfile=args.ssl_certfile)
    if args.workers > 1 or args.reload:
        options.update(workers=args.workers, reload=args.reload)
        uvicorn.run("tradeengine.main:app", **options)  # type: ignore[arg-type]
    else:
        from tradeengine.api import create_app

        uvicorn.run(create_app(settings), **options)  # type: ignore[arg-type]
    return 0


def _plugins(args: argparse.Namespace) -> int:
    from tradeengine.plugins import describe_plugins, make_plugin_manager

    pm = make_plugin_manager(load_settings())
    infos = describe_plugins(pm)
    if args.json:
        import msgspec

        print(msgspec.json.encode(infos).decode())
        return 0
    for info in infos:
        print(f"{info.name}  {info.version}  {info.origin}")
        print(f"    hooks: {', '.join(info.hooks)}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from tradeengine import bench

    rates = tuple(float(r) for r in args.rates.split(",") if r.strip())
    return bench.run(
        args.kind,
        args.orders,
        args.json,
        plot=args.plot,
        rates=rates,
        duration=args.duration,
        connections=args.connections,
        workers=args.workers,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tradeengine", description="Execution and risk gateway for intraday trading."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="start the HTTP API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8002)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--reload", action="store_true")
    serve.add_argument("--ssl-keyfile")
    serve.add_argument("--ssl-certfile")
    serve.set_defaults(run=_serve)

    bench = commands.add_parser("bench", help="latency and throughput benchmarks")
    bench.add_argument("kind", choices=("core", "engine", "http", "all"))
    bench.add_argument("--orders", type=int, default=100_000, help="N for core and engine")
    bench.add_argument("--json", action="store_true", help="one machine-readable object")
    bench.add_argument("--plot", help="write a PNG of the HTTP latency percentiles per rate")
    bench.add_argument("--rates", default="500,1000,2000", help="open-loop rates, orders/s")
    bench.add_argument("--duration", type=float, default=5.0, help="seconds per rate")
    bench.add_argument("--connections", type=int, default=32)
    bench.add_argument("--workers", type=int, default=1, help="uvicorn workers of the server")
    bench.set_defaults(run=_bench)

    plugins = commands.add_parser("plugins", help="list loaded plugins, versions and hooks")
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(run=_plugins)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.run(args)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
