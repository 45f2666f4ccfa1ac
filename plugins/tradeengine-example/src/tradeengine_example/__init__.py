"""An example tradeengine plugin: one risk rule and one observer."""

from __future__ import annotations

import logging
import os
from collections import Counter

from tradeengine.hookspecs import RiskContext, RiskRejection, hookimpl
from tradeengine.schemas import Fill, Order

__version__ = "0.1.0"

log = logging.getLogger("tradeengine_example")

BLOCKED = frozenset(
    s.strip().upper() for s in os.environ.get("EXAMPLE_BLOCKED_SYMBOLS", "").split(",") if s.strip()
)

fills_seen: Counter[str] = Counter()


@hookimpl
def check_order(order: Order, context: RiskContext) -> RiskRejection | None:
    """Refuses orders for blocked symbols. Returning None lets the order pass."""
    if order.symbol in BLOCKED:
        return RiskRejection(
            rule="example_blocked_symbol",
            reason=f"{order.symbol} is in EXAMPLE_BLOCKED_SYMBOLS",
        )
    return None


@hookimpl
def on_fill(fill: Fill, order: Order) -> None:
    """Counts fills per symbol. Observers must be fast and must not raise."""
    fills_seen[fill.symbol] += 1
    log.info("example plugin saw fill %s of order %s", fill.exec_id, order.id)
