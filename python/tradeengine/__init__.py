"""tradeengine: the execution and risk gateway between strategies and the broker."""

from tradeengine._core import (
    RULES,
    ConfigError,
    InvalidArgumentError,
    InvalidStateError,
    TradeEngineError,
    UnknownOrderError,
)
from tradeengine._core import __version__ as core_version
from tradeengine.core import Gate

__version__ = "0.1.0"

__all__ = [
    "RULES",
    "ConfigError",
    "Gate",
    "InvalidArgumentError",
    "InvalidStateError",
    "TradeEngineError",
    "UnknownOrderError",
    "__version__",
    "core_version",
]
