"""The plugin manager factory. Built-in plugins and installed ones (entry-point group
`tradeengine`) are loaded by the same function, `load_plugins`, and blocked by the same list,
TRADEENGINE_DISABLED_PLUGINS."""

from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import dataclass

import pluggy

from tradeengine import hookspecs
from tradeengine.settings import Settings

PROJECT = "tradeengine"

# name -> "module:attribute" of the built-in plugins. A factory attribute is called with the
# settings (plugins with state, such as the metrics registry); a module is registered as is.
BUILTIN_PLUGINS: dict[str, str] = {
    "sim": "tradeengine.default_plugins.sim",
    "audit": "tradeengine.default_plugins.audit",
    "metrics": "tradeengine.default_plugins.metrics:MetricsObserver",
}


class PluginLoadError(RuntimeError):
    """An installed plugin could not be loaded. tradeengine does not start without it: a risk
    rule that silently went missing would be worse than no start."""


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, remembering which distribution each installed plugin came from."""

    def __init__(self) -> None:
        super().__init__(PROJECT)
        self.distributions: dict[str, tuple[str, str]] = {}


def make_plugin_manager(settings: Settings, *, entry_points: bool = True) -> PluginManager:
    """A new plugin manager with every hook specification and every plugin loaded."""
    pm = PluginManager()
    pm.add_hookspecs(hookspecs)
    for name in settings.disabled_plugins:
        pm.set_blocked(name)
    load_plugins(pm, settings, entry_points=entry_points)
    pm.check_pending()
    return pm


def load_plugins(pm: PluginManager, settings: Settings, *, entry_points: bool) -> None:
    for name, target in BUILTIN_PLUGINS.items():
        if pm.is_blocked(name) or pm.has_plugin(name):
            continue
        module_name, _, attribute = target.partition(":")
        plugin: object = importlib.import_module(module_name)
        if attribute:
            plugin = getattr(plugin, attribute)(settings)
        pm.register(plugin, name=name)
    if not entry_points:
        return
    for entry_point in importlib.metadata.entry_points(group=PROJECT):
        if pm.is_blocked(entry_point.name) or pm.has_plugin(entry_point.name):
            continue
        dist = entry_point.dist
        origin = f"{dist.name} {dist.version}" if dist else entry_point.value
        try:
            plugin = entry_point.load()
        except Exception as exc:
            raise PluginLoadError(
                f"plugin {entry_point.name!r} ({origin}) failed to load: "
                f"{type(exc).__name__}: {exc}. Fix or uninstall it, or start without it with "
                f"TRADEENGINE_DISABLED_PLUGINS={entry_point.name}"
            ) from exc
        pm.register(plugin, name=entry_point.name)
        if dist is not None:
            pm.distributions[entry_point.name] = (dist.name, dist.version)


@dataclass(frozen=True, slots=True)
class PluginInfo:
    name: str
    version: str
    origin: str
    hooks: tuple[str, ...]


def describe_plugins(pm: pluggy.PluginManager) -> list[PluginInfo]:
    """Every loaded plugin with its version, hooks and origin (built-in or distribution)."""
    from tradeengine import __version__

    distributions = pm.distributions if isinstance(pm, PluginManager) else {}
    infos = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        hooks = tuple(sorted(h.name for h in pm.get_hookcallers(plugin) or []))
        dist = distributions.get(name)
        if dist is not None:
            origin, version = f"entry point ({dist[0]})", dist[1]
        else:
            origin, version = "builtin", __version__
        infos.append(PluginInfo(name=name, version=version, origin=origin, hooks=hooks))
    return sorted(infos, key=lambda i: i.name)
