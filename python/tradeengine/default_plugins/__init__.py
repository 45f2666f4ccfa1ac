"""Built-in plugins, registered by the same function as installed ones
(`tradeengine.plugins.load_plugins`)."""
