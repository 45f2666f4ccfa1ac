"""The plugin system: built-ins and installed plugins through one loader, a block list,
observers called with what they are promised, and a misbehaving plugin that cannot stop
trading."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from tradeengine.broker import BrokerFactory
from tradeengine.engine import Engine
from tradeengine.errors import EngineError, OrderRejected
from tradeengine.hookspecs import hookimpl
from tradeengine.plugins import BUILTIN_PLUGINS, describe_plugins, make_plugin_manager
from tradeengine.schemas import Fill, KillSwitchState, Order, OrderRequest, RejectionRecord
from tradeengine.settings import Settings, load_settings
from tradeengine.store import MemoryStore


def settings(**env: str) -> Settings:
    return load_settings({"SYNTHETIC_FEED": "false", **env}, dotenv=None)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    @hookimpl
    def on_start(self, engine: Any) -> None:
        self.calls.append(("on_start", engine.gate.state))

    @hookimpl
    def on_stop(self, engine: Any) -> None:
        self.calls.append(("on_stop", None))

    @hookimpl
    def on_submit(self, order: Order, latency_seconds: float) -> None:
        assert latency_seconds >= 0
        self.calls.append(("on_submit", order.status))

    @hookimpl
    def on_fill(self, fill: Fill, order: Order) -> None:
        self.calls.append(("on_fill", (fill.qty, fill.price, order.status)))

    @hookimpl
    def on_risk_block(self, rejection: RejectionRecord) -> None:
        self.calls.append(("on_risk_block", rejection.rule))

    @hookimpl
    def on_kill_switch(self, state: KillSwitchState) -> None:
        self.calls.append(("on_kill_switch", (state.engaged, state.actor)))


def test_builtins_are_loaded_by_the_same_loader_and_can_be_blocked() -> None:
    pm = make_plugin_manager(settings(), entry_points=False)
    assert {name for name, _ in pm.list_name_plugin()} == set(BUILTIN_PLUGINS)
    blocked = make_plugin_manager(
        settings(TRADEENGINE_DISABLED_PLUGINS="audit,metrics"), entry_points=False
    )
    names = {info.name for info in describe_plugins(blocked)}
    assert names == {"sim"}


def test_each_manager_is_its_own() -> None:
    one = make_plugin_manager(settings(), entry_points=False)
    two = make_plugin_manager(settings(), entry_points=False)
    assert one.get_plugin("metrics") is not two.get_plugin("metrics")


def test_observers_hear_every_event() -> None:
    recorder = Recorder()

    async def main() -> None:
        pm = make_plugin_manager(settings(), entry_points=False)
        pm.register(recorder, name="recorder")
        engine = Engine(settings(), pm, MemoryStore())
        await engine.start()
        await engine.set_marks({"AAPL": 100.0})
        await engine.submit(OrderRequest(symbol="AAPL", side="buy", qty=2))
        with pytest.raises(OrderRejected):
            await engine.submit(OrderRequest(symbol="AAPL", side="buy", qty=0))
        await engine.engage_kill_switch("ops", "test")
        await engine.reset_kill_switch("admin", "done")
        await engine.stop()

    asyncio.run(main())
    assert recorder.calls == [
        ("on_start", "active"),
        ("on_fill", (2.0, 100.0, "filled")),
        ("on_submit", "filled"),
        ("on_risk_block", "qty_invalid"),
        ("on_kill_switch", (True, "ops")),
        ("on_kill_switch", (False, None)),
        ("on_stop", None),
    ]


def test_a_raising_observer_cannot_stop_trading_or_the_kill_switch() -> None:
    class Broken:
        @hookimpl
        def on_fill(self, fill: Fill, order: Order) -> None:
            raise RuntimeError("boom")

        @hookimpl
        def on_kill_switch(self, state: KillSwitchState) -> None:
            raise RuntimeError("boom")

    async def main() -> None:
        pm = make_plugin_manager(settings(), entry_points=False)
        pm.register(Broken(), name="broken")
        engine = Engine(settings(), pm, MemoryStore())
        await engine.start()
        await engine.set_marks({"AAPL": 100.0})
        order, _ = await engine.submit(OrderRequest(symbol="AAPL", side="buy", qty=1))
        assert order.status == "filled"
        state = await engine.engage_kill_switch("ops", "test")
        assert state.engaged
        await engine.stop()

    asyncio.run(main())


def test_a_plugin_broker_is_used_in_live_mode_and_names_must_be_unique() -> None:
    class Plugin:
        @hookimpl
        def register_brokers(self, register: Callable[[str, BrokerFactory], None]) -> None:
            from tradeengine.default_plugins.sim import SimBroker

            register("paperbroker", SimBroker)

    async def main() -> None:
        live = settings(EXECUTION_MODE="live", BROKER="paperbroker")
        pm = make_plugin_manager(live, entry_points=False)
        pm.register(Plugin(), name="paperbroker")
        engine = Engine(live, pm, MemoryStore())
        await engine.start()
        assert engine.broker is not None
        assert engine.status()["broker"] == "paperbroker"
        await engine.stop()

        twice = make_plugin_manager(live, entry_points=False)
        twice.register(Plugin(), name="one")
        twice.register(Plugin(), name="two")
        with pytest.raises(EngineError, match="two plugins register a broker"):
            await Engine(live, twice, MemoryStore()).start()

    asyncio.run(main())


def test_a_plugin_that_fails_to_load_stops_the_start_naming_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.metadata

    from tradeengine.plugins import PluginLoadError

    broken = importlib.metadata.EntryPoint(
        name="broken", value="no_such_module_for_tradeengine", group="tradeengine"
    )
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [broken])
    with pytest.raises(PluginLoadError, match="TRADEENGINE_DISABLED_PLUGINS=broken"):
        make_plugin_manager(settings())
    pm = make_plugin_manager(settings(TRADEENGINE_DISABLED_PLUGINS="broken"))
    assert not pm.has_plugin("broken")
