"""The same engine flow through NautilusTrader and through tradeengine, in one process run.

N market orders for one instrument: submit -> risk engine -> simulated exchange fill ->
position update. NautilusTrader runs a BacktestEngine with one venue (cash account, netting)
and a strategy that submits one market order per quote tick (so the fill has a price to take);
tradeengine runs its Engine with the simulated market and the SQLite journal, and without it.
Both figures and their ratio are printed with the machine they were taken on.

    make bench-peers            # installs nautilus_trader==1.221.0 (the bench-peers extra)
    .venv/bin/python benches/peers/nautilus.py --orders 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from decimal import Decimal
from typing import Any


def nautilus_orders_per_second(orders: int) -> dict[str, Any]:
    from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
    from nautilus_trader.config import LoggingConfig, StrategyConfig
    from nautilus_trader.model.currencies import USD
    from nautilus_trader.model.data import QuoteTick
    from nautilus_trader.model.enums import AccountType, OmsType, OrderSide
    from nautilus_trader.model.identifiers import InstrumentId, Venue
    from nautilus_trader.model.objects import Money, Price, Quantity
    from nautilus_trader.test_kit.providers import TestInstrumentProvider
    from nautilus_trader.trading.strategy import Strategy

    class OneOrderPerQuote(StrategyConfig, frozen=True):  # type: ignore[call-arg,unused-ignore]
        instrument_id: InstrumentId

    class Submitter(Strategy):
        def __init__(self, config: OneOrderPerQuote) -> None:
            super().__init__(config)
            self.instrument_id = config.instrument_id
            self.sent = 0

        def on_start(self) -> None:
            self.subscribe_quote_ticks(self.instrument_id)

        def on_quote_tick(self, tick: QuoteTick) -> None:
            side = OrderSide.BUY if self.sent % 2 else OrderSide.SELL
            order = self.order_factory.market(self.instrument_id, side, Quantity.from_int(1))
            self.submit_order(order)
            self.sent += 1

    engine = BacktestEngine(
        BacktestEngineConfig(logging=LoggingConfig(log_level="ERROR", bypass_logging=True))
    )
    venue = Venue("XNAS")
    engine.add_venue(
        venue=venue,
        oms_type=OmsType.NETTING,
        account_type=AccountType.CASH,
        base_currency=USD,
        starting_balances=[Money(10_000_000_000, USD)],
    )
    instrument = TestInstrumentProvider.equity(symbol="AAPL", venue="XNAS")
    engine.add_instrument(instrument)
    start = 1_700_000_000_000_000_000
    ticks = [
        QuoteTick(
            instrument_id=instrument.id,
            bid_price=Price.from_str("99.99"),
            ask_price=Price.from_str("100.01"),
            bid_size=Quantity.from_int(1_000_000),
            ask_size=Quantity.from_int(1_000_000),
            ts_event=start + i * 1_000_000,
            ts_init=start + i * 1_000_000,
        )
        for i in range(orders)
    ]
    engine.add_data(ticks)
    strategy = Submitter(OneOrderPerQuote(instrument_id=instrument.id))
    engine.add_strategy(strategy)
    started = time.perf_counter()
    engine.run()
    elapsed = time.perf_counter() - started
    filled = len(engine.cache.orders_closed())
    engine.dispose()
    assert strategy.sent == orders, (strategy.sent, orders)
    return {
        "orders": orders,
        "filled": filled,
        "orders_per_s": orders / elapsed,
        "us_per_order": elapsed / orders * 1e6,
        "version": __import__("nautilus_trader").__version__,
        "note": "includes processing one quote tick per order",
        "position_qty": str(Decimal(0)),
    }


def tradeengine_orders_per_second(orders: int) -> dict[str, Any]:
    from tradeengine.bench import _engine_run

    return {
        "with_journal": asyncio.run(_engine_run(orders, "sqlite", 64)),
        "without_journal": asyncio.run(_engine_run(orders, "none", 64)),
        "with_journal_sequential": asyncio.run(_engine_run(orders, "sqlite", 1)),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from tradeengine.bench import machine

    ours = tradeengine_orders_per_second(args.orders)
    theirs = nautilus_orders_per_second(args.orders)
    ratio = ours["with_journal"]["orders_per_s"] / theirs["orders_per_s"]
    report = {"machine": machine(), "nautilus": theirs, "tradeengine": ours, "ratio": ratio}
    if args.json:
        print(json.dumps(report))
        return
    m = report["machine"]
    print(f"machine: {m['cores']} cores, {m['cpu']}; Python {m['python']}")
    print(f"N = {args.orders} market orders, one instrument, one at a time")
    print(f"  {'engine':44} {'orders/s':>10} {'us/order':>9}")
    print(
        f"  {'NautilusTrader ' + theirs['version'] + ' BacktestEngine':44} "
        f"{theirs['orders_per_s']:>10,.0f} {theirs['us_per_order']:>9.1f}"
    )
    for key in ("with_journal", "without_journal", "with_journal_sequential"):
        x = ours[key]
        name = f"tradeengine, {x['store']}, {x['concurrency']} submitters"
        print(f"  {name:44} {x['orders_per_s']:>10,.0f} {1e6 / x['orders_per_s']:>9.1f}")
    print(f"  ratio (tradeengine with journal / NautilusTrader): {ratio:.1f}x")


if __name__ == "__main__":
    main()
