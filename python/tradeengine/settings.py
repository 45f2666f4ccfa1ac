"""Every setting of tradeengine, parsed once from the environment (and `.env`) into a frozen
object. Nothing else in the package reads `os.environ`.

A bad value stops the start with a message naming the variable. `.env.example` lists every
variable with its meaning and default.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal, TypeVar

import msgspec

T = TypeVar("T")


class SettingsError(ValueError):
    """A setting has a value tradeengine cannot use; the message names the variable."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """The parsed configuration. Field names are the environment variable names, lower case."""

    trading_mode: Literal["paper", "live"] = "paper"
    execution_mode: Literal["backtest", "live"] = "backtest"
    broker: str = ""

    max_daily_loss: float = -1000.0
    max_position_size: float = 10000.0
    max_order_notional: float = math.inf
    portfolio_heat_limit: float = 0.25
    max_drawdown: float = 0.10
    price_collar: float = 0.10
    kill_switch_enabled: bool = True

    throttle_enabled: bool = True
    max_orders_per_minute: int = 60

    metrics_enabled: bool = True
    metrics_port: int | None = None
    """None (unset): /metrics is served by the API only. A port other than the API's: also
    by a listener of its own (tradeengine.api.metrics_listener)."""
    log_level: str = "INFO"
    log_file: str = "logs/trading_platform.log"
    log_format: Literal["text", "json"] = "text"
    log_max_bytes: int = 10 * 1024 * 1024
    log_backups: int = 5

    alpaca_api_key: str = ""
    alpaca_secret_key: str = ""
    alpaca_base_url: str = ""
    alpaca_stream_url: str = ""
    alpaca_data_url: str = "https://data.alpaca.markets"
    alpaca_suspend_on_kill: bool = True
    alpaca_http_timeout: float = 10.0
    alpaca_max_requests_per_minute: int = 200
    alpaca_backoff_min: float = 1.0
    alpaca_backoff_max: float = 30.0
    alpaca_poll_interval: float = 2.0
    alpaca_reconcile_interval: float = 60.0

    max_workers: int = 4
    batch_size: int = 100
    cache_size: int = 1000
    order_timeout: float = 10.0
    database_url: str = "sqlite:///trading_platform.db"

    sim_starting_cash: float = 100_000.0
    sim_slippage_bps: float = 0.0
    sim_partial_fills: bool = False
    sim_latency_ms: float = 0.0
    backtest_data: str = ""
    replay_speed: float = 1.0
    synthetic_feed: bool = True
    synthetic_symbols: tuple[str, ...] = ("AAPL", "MSFT", "SPY", "TSLA", "NVDA")
    synthetic_interval: float = 1.0

    mark_max_age: float = 5.0
    shutdown_cancel_orders: bool = True
    disabled_plugins: tuple[str, ...] = ()
    state_dir: str = ""

    @property
    def backtest(self) -> bool:
        return self.execution_mode == "backtest"

    @property
    def broker_name(self) -> str:
        """The broker plugin orders go to: `sim` in backtest mode, BROKER in live mode."""
        return "sim" if self.backtest else (self.broker or "alpaca")

    def __repr__(self) -> str:
        shown = []
        for field in self.__struct_fields__:
            value = getattr(self, field)
            if field in _SECRET_FIELDS and value:
                value = "***"
            elif field == "database_url":
                value = redact_url(str(value))
            shown.append(f"{field}={value!r}")
        return f"Settings({', '.join(shown)})"


_SECRET_FIELDS = frozenset({"alpaca_api_key", "alpaca_secret_key"})


def redact_url(url: str) -> str:
    """The URL with any password replaced by ***."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user, has_password, _ = credentials.partition(":")
    return f"{scheme}://{user}{':***' if has_password else ''}@{host}"


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true or false")


def _float(value: str) -> float:
    number = float(value)
    if math.isnan(number):
        raise ValueError("NaN is not a value")
    return number


def _int(value: str) -> int:
    return int(value.strip())


def _names(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        lowered = value.strip().lower()
        if lowered not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return lowered

    return parse


def _text(value: str) -> str:
    return value.strip()


# Environment variable -> (field, parser, check). The check returns an error text or None.
_Check = Callable[[object], str | None]


def _positive(v: object) -> str | None:
    return None if isinstance(v, int | float) and v > 0 else "must be above 0"


def _non_negative(v: object) -> str | None:
    return None if isinstance(v, int | float) and v >= 0 else "must be 0 or more"


def _negative(v: object) -> str | None:
    return (
        None
        if isinstance(v, int | float) and v < 0
        else "is a loss in USD and must be negative, e.g. -1000.0"
    )


def _fraction(v: object) -> str | None:
    ok = isinstance(v, int | float) and 0 < v <= 1
    return None if ok else "is a fraction and must be above 0 and at most 1 (0.10 is 10%)"


def _port(v: object) -> str | None:
    return None if isinstance(v, int) and 0 < v < 65536 else "must be a TCP port, 1 to 65535"


def _log_level(v: object) -> str | None:
    levels = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
    return None if v in levels else f"must be one of {', '.join(sorted(levels))}"


def _database_url(v: object) -> str | None:
    ok = isinstance(v, str) and v.startswith(("sqlite://", "postgresql://", "postgres://"))
    return None if ok else "must start with sqlite:// or postgresql://"


def _none(_: object) -> str | None:
    return None


_VARIABLES: dict[str, tuple[str, Callable[[str], object], _Check]] = {
    "TRADING_MODE": ("trading_mode", _choice("paper", "live"), _none),
    "EXECUTION_MODE": ("execution_mode", _choice("backtest", "live"), _none),
    "BROKER": ("broker", _text, _none),
    "MAX_DAILY_LOSS": ("max_daily_loss", _float, _negative),
    "MAX_POSITION_SIZE": ("max_position_size", _float, _positive),
    "MAX_ORDER_NOTIONAL": ("max_order_notional", _float, _positive),
    "PORTFOLIO_HEAT_LIMIT": ("portfolio_heat_limit", _float, _positive),
    "MAX_DRAWDOWN": ("max_drawdown", _float, _fraction),
    "PRICE_COLLAR": ("price_collar", _float, _positive),
    "KILL_SWITCH_ENABLED": ("kill_switch_enabled", _bool, _none),
    "THROTTLE_ENABLED": ("throttle_enabled", _bool, _none),
    "MAX_ORDERS_PER_MINUTE": ("max_orders_per_minute", _int, _positive),
    "METRICS_ENABLED": ("metrics_enabled", _bool, _none),
    "METRICS_PORT": ("metrics_port", _int, _port),
    "LOG_LEVEL": ("log_level", lambda v: v.strip().upper(), _log_level),
    "LOG_FILE": ("log_file", _text, _none),
    "LOG_FORMAT": ("log_format", _choice("text", "json"), _none),
    "LOG_MAX_BYTES": ("log_max_bytes", _int, _positive),
    "LOG_BACKUPS": ("log_backups", _int, _non_negative),
    "ALPACA_API_KEY": ("alpaca_api_key", _text, _none),
    "ALPACA_SECRET_KEY": ("alpaca_secret_key", _text, _none),
    "ALPACA_BASE_URL": ("alpaca_base_url", _text, _none),
    "ALPACA_STREAM_URL": ("alpaca_stream_url", _text, _none),
    "ALPACA_DATA_URL": ("alpaca_data_url", _text, _none),
    "ALPACA_SUSPEND_ON_KILL": ("alpaca_suspend_on_kill", _bool, _none),
    "ALPACA_HTTP_TIMEOUT": ("alpaca_http_timeout", _float, _positive),
    "ALPACA_MAX_REQUESTS_PER_MINUTE": ("alpaca_max_requests_per_minute", _int, _positive),
    "ALPACA_BACKOFF_MIN": ("alpaca_backoff_min", _float, _positive),
    "ALPACA_BACKOFF_MAX": ("alpaca_backoff_max", _float, _positive),
    "ALPACA_POLL_INTERVAL": ("alpaca_poll_interval", _float, _positive),
    "ALPACA_RECONCILE_INTERVAL": ("alpaca_reconcile_interval", _float, _positive),
    "MAX_WORKERS": ("max_workers", _int, _positive),
    "BATCH_SIZE": ("batch_size", _int, _positive),
    "CACHE_SIZE": ("cache_size", _int, _positive),
    "ORDER_TIMEOUT": ("order_timeout", _float, _positive),
    "DATABASE_URL": ("database_url", _text, _database_url),
    "SIM_STARTING_CASH": ("sim_starting_cash", _float, _positive),
    "SIM_SLIPPAGE_BPS": ("sim_slippage_bps", _float, _non_negative),
    "SIM_PARTIAL_FILLS": ("sim_partial_fills", _bool, _none),
    "SIM_LATENCY_MS": ("sim_latency_ms", _float, _non_negative),
    "BACKTEST_DATA": ("backtest_data", _text, _none),
    "REPLAY_SPEED": ("replay_speed", _float, _non_negative),
    "SYNTHETIC_FEED": ("synthetic_feed", _bool, _none),
    "SYNTHETIC_SYMBOLS": ("synthetic_symbols", _names, _none),
    "SYNTHETIC_INTERVAL": ("synthetic_interval", _float, _positive),
    "MARK_MAX_AGE": ("mark_max_age", _float, _positive),
    "SHUTDOWN_CANCEL_ORDERS": ("shutdown_cancel_orders", _bool, _none),
    "TRADEENGINE_DISABLED_PLUGINS": ("disabled_plugins", _names, _none),
    "TRADEENGINE_STATE_DIR": ("state_dir", _text, _none),
}

VARIABLES: tuple[str, ...] = tuple(_VARIABLES)


def read_dotenv(path: Path) -> dict[str, str]:
    """Reads KEY=VALUE lines (comments, blank lines, `export` and quotes allowed)."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise SettingsError(f"{path}:{number}: expected KEY=VALUE, got {raw!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].strip()
        values[key.strip()] = value
    return values


def load_settings(
    environ: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env")
) -> Settings:
    """Parses the settings. The process environment wins over `.env`."""
    source: dict[str, str] = {}
    if dotenv is not None:
        source.update(read_dotenv(dotenv))
    source.update(os.environ if environ is None else environ)
    values: dict[str, object] = {}
    for variable, (field, parse, check) in _VARIABLES.items():
        raw = source.get(variable)
        if raw is None or raw.strip() == "":
            continue
        try:
            value = parse(raw)
        except ValueError as exc:
            raise SettingsError(f"{variable}={raw!r} is not valid: {exc}") from None
        problem = check(value)
        if problem:
            raise SettingsError(f"{variable}={raw!r} {problem}")
        values[field] = value
    settings = Settings(**values)  # type: ignore[arg-type]
    if settings.execution_mode == "live" and settings.broker == "sim":
        raise SettingsError("BROKER=sim is the simulated market: use EXECUTION_MODE=backtest")
    return settings
