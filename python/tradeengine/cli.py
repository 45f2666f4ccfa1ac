"""The `tradeengine` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tradeengine.plugins import PluginLoadError
from tradeengine.settings import SettingsError, load_settings

if TYPE_CHECKING:
    from tradeengine.store import Store


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = load_settings()
    options: dict[str, object] = {
        "host": args.host,
        "port": args.port,
        "log_level": settings.log_level.lower(),
        # The app's configure_logging writes uvicorn's lines too, to stderr and LOG_FILE.
        "log_config": None,
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

        app = create_app(settings, exit_process_on_shutdown=True)
        uvicorn.run(app, **options)  # type: ignore[arg-type]
    return 0


def _token(args: argparse.Namespace) -> int:
    import asyncio

    from tradeengine.store import open_store

    return asyncio.run(_token_command(args, open_store(load_settings())))


async def _token_command(args: argparse.Namespace, store: Store) -> int:
    from tradeengine.api.auth import create_token, revoke_token
    from tradeengine.store import MemoryStore

    if isinstance(store, MemoryStore):
        print(
            "warning: DATABASE_URL is not a durable store here: the token lives only as long "
            "as this command",
            file=sys.stderr,
        )
    await store.open()
    try:
        if args.token_command == "create":
            try:
                token = await create_token(store, args.name, args.role)
            except ValueError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            print(f"created {args.role} token {args.name.strip()!r}; it is shown once, keep it:")
            print(token)
        elif args.token_command == "list":
            for record in await store.tokens():
                state = f"revoked {record.revoked_at}" if record.revoked_at else "active"
                print(f"{record.name}\t{record.role}\tcreated {record.created_at}\t{state}")
        elif not await revoke_token(store, args.name):
            print(f"error: no active token named {args.name!r}", file=sys.stderr)
            return 1
        else:
            print(f"revoked token {args.name!r}")
    finally:
        await store.close()
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


def _kill_switch(args: argparse.Namespace) -> int:
    import asyncio
    import getpass

    from tradeengine.settings import redact_url
    from tradeengine.store import StoreError, open_store
    from tradeengine.store.kill_switch import kill_switch_command

    settings = load_settings()

    async def run() -> tuple[int, str]:
        store = open_store(settings)
        await store.open()
        try:
            actor = args.actor or f"cli:{getpass.getuser()}"
            return await kill_switch_command(store, args.action, actor, args.reason)
        finally:
            await store.close()

    print(f"journal: {redact_url(settings.database_url)}")
    try:
        code, text = asyncio.run(run())
    except StoreError as exc:
        code, text = 1, f"error: {exc}"
    print(text, file=sys.stderr if code else sys.stdout)
    return code


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

    token = commands.add_parser("token", help="manage API tokens (stored hashed)")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    create = token_commands.add_parser("create", help="make a token; printed as the last line")
    create.add_argument("--role", required=True, choices=("viewer", "trader", "operator", "admin"))
    create.add_argument("--name", required=True)
    token_commands.add_parser("list", help="every token: name, role, created, revoked")
    revoke = token_commands.add_parser("revoke", help="revoke the active token of a name")
    revoke.add_argument("name")
    token.set_defaults(run=_token)

    kill = commands.add_parser(
        "kill-switch",
        help="show, engage or reset the kill switch in the database (works with the API down; "
        "a running server follows within a second)",
    )
    kill.add_argument("action", choices=("status", "engage", "reset"))
    kill.add_argument("--reason", default="", help="why (required to reset)")
    kill.add_argument("--actor", default="", help="who (default: cli:<login name>)")
    kill.set_defaults(run=_kill_switch)

    plugins = commands.add_parser("plugins", help="list loaded plugins, versions and hooks")
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(run=_plugins)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.run(args)
    except (SettingsError, PluginLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
