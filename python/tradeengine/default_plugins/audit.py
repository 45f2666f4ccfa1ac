"""The audit/log observer: one greppable log line per order event and fill. Every line about an
order carries its id and client_order_id (risk blocks and kill switch lines are written by the
engine itself, so that no plugin setting can silence them)."""

from __future__ import annotations

import logging

from tradeengine.hookspecs import hookimpl
from tradeengine.schemas import Fill, Order

log = logging.getLogger("tradeengine.audit")


@hookimpl
def on_order(order: Order, previous_status: str | None) -> None:
    log.info(
        "ORDER %s client_order_id=%s symbol=%s side=%s qty=%s type=%s status=%s%s%s",
        order.id,
        order.client_order_id,
        order.symbol,
        order.side,
        order.qty,
        order.type,
        order.status,
        f" previous={previous_status}" if previous_status else "",
        f" reason={order.reject_reason}" if order.reject_reason else "",
    )


@hookimpl
def on_fill(fill: Fill, order: Order) -> None:
    log.info(
        "FILL %s client_order_id=%s symbol=%s side=%s qty=%s price=%s exec_id=%s%s",
        order.id,
        order.client_order_id,
        fill.symbol,
        fill.side,
        fill.qty,
        fill.price,
        fill.exec_id,
        " liquidation" if fill.liquidation else "",
    )
