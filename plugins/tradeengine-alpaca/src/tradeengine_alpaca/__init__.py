"""tradeengine's Alpaca broker (alpaca-py): EXECUTION_MODE=live with BROKER=alpaca.

The plugin registers the broker `alpaca`. When the engine starts with it, `on_start` binds the
broker to the engine (journal, kill switch, metrics) and registers the broker object itself
with the engine's plugin manager, so that the engine's `on_kill_switch` reaches it: the kill
switch is mirrored at Alpaca as the account's `suspend_trade`. See README.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tradeengine.broker import BrokerFactory
from tradeengine.hookspecs import hookimpl
from tradeengine_alpaca.broker import AlpacaBroker
from tradeengine_alpaca.journal_view import EngineView

__version__ = "0.1.0"
__all__ = ["AlpacaBroker", "EngineView"]

BROKER_PLUGIN_NAME = "alpaca-broker"
"""The name the running broker is registered under in the engine's plugin manager."""


@hookimpl
def register_brokers(register: Callable[[str, BrokerFactory], None]) -> None:
    register("alpaca", AlpacaBroker)


@hookimpl
def on_start(engine: Any) -> None:
    broker = engine.broker
    if not isinstance(broker, AlpacaBroker):
        return
    if engine.pm.get_plugin(BROKER_PLUGIN_NAME) is None:
        engine.pm.register(broker, name=BROKER_PLUGIN_NAME)
    broker.attach(EngineView(engine))


@hookimpl
def on_stop(engine: Any) -> None:
    plugin = engine.pm.get_plugin(BROKER_PLUGIN_NAME)
    if plugin is not None:
        engine.pm.unregister(plugin, name=BROKER_PLUGIN_NAME)
