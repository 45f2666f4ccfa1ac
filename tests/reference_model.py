"""A plain-Python reference model of the order gate in `core-rs/src/`.

`ReferenceGate` mirrors `tradeengine._core.Gate` (`core-rs/src/python.rs`) method for method: the
same checks in the same order with the same rule names, and the same floating-point operations
in the same order, so that for the same sequence of calls it reaches bit-identical figures. It
exists to be checked against the Rust core (`tests/test_differential.py`), so it favours being
obviously the same as the Rust code over being idiomatic or fast; each part names the Rust item
it mirrors.

Differences from the Rust binding, all deliberate:

- The model has no clock: every `now`/`at` must be passed (None raises TypeError).
- Errors are `ModelError` subclasses of ValueError, one per `EngineError` variant:
  `InvalidArgument` (InvalidArgumentError), `InvalidConfig` (ConfigError), `InvalidState`
  (InvalidStateError).
- The recovery entry points (`restore_account`, `restore_resting`, `remember`) and the clock
  (`clock`) are not modelled; `knows` and `revoke` are.

Rust's float semantics that Python does not share are spelled out as helpers: `f64::max`/`min`
ignore a NaN operand, `f64::signum` is NaN for NaN, and division by zero yields inf or NaN
instead of raising.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

__all__ = [
    "MAX_CLIENT_ORDER_ID_LEN",
    "MAX_ORDERS_PER_MINUTE_CEILING",
    "MAX_PRICE",
    "MAX_QTY",
    "MAX_SYMBOL_LEN",
    "QTY_EPSILON",
    "RULES",
    "SYSTEM_ACTOR",
    "InvalidArgument",
    "InvalidConfig",
    "InvalidState",
    "ModelError",
    "ReferenceGate",
    "symbol_is_well_formed",
]

# order.rs
MAX_QTY: Final = 1e9
MAX_PRICE: Final = 1e9
MAX_SYMBOL_LEN: Final = 16
MAX_CLIENT_ORDER_ID_LEN: Final = 128
# throttle.rs
MAX_ORDERS_PER_MINUTE_CEILING: Final = 10_000_000
# book.rs
QTY_EPSILON: Final = 1e-9
# gate.rs
SYSTEM_ACTOR: Final = "system"

_I64_MIN: Final = -(2**63)
_I64_MAX: Final = 2**63 - 1
_U32_MAX: Final = 2**32 - 1

# Rule::ALL, in order.
RULES: Final = (
    "symbol_invalid",
    "qty_invalid",
    "price_invalid",
    "price_missing",
    "price_unexpected",
    "stop_loss_invalid",
    "client_order_id_invalid",
    "duplicate_client_order_id",
    "kill_switch",
    "reduce_only",
    "liquidation_not_reducing",
    "throttle",
    "no_mark",
    "price_collar",
    "max_order_notional",
    "max_position_size",
    "portfolio_heat",
    "max_daily_loss",
    "max_drawdown",
)

_SIDES: Final = {"buy": 1.0, "sell": -1.0}
_ORDER_TYPES: Final = ("market", "limit", "stop", "stop_limit")
_TIMES_IN_FORCE: Final = ("day", "gtc", "ioc", "fok")
# char::is_whitespace (Unicode White_Space), what str::trim strips. Python's str.strip also
# strips U+001C..U+001F, which Rust keeps.
_RUST_WHITESPACE: Final = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)

Reject = tuple[str, str, float | None]
"""A refusal as the binding returns it: (rule, reason, retry_after seconds or None)."""

OrderTuple = tuple[
    str, str, str, float, str, float | None, float | None, str, bool, bool, float | None
]
"""An order for `check_batch`, in the order of `Gate.check`'s parameters."""

FillTuple = tuple[str, str, str, float, float, float]
"""A fill for `replay_fills`: (client_order_id, symbol, side, qty, price, fee)."""


class ModelError(ValueError):
    """Base of the model's errors; the Rust binding raises a `TradeEngineError` instead."""


class InvalidArgument(ModelError):
    """`EngineError::InvalidArgument`: an unknown side, type or time in force, a bad mark."""


class InvalidConfig(ModelError):
    """`EngineError::InvalidConfig`: a limit or throttle setting out of range; nothing changed."""


class InvalidState(ModelError):
    """`EngineError::InvalidState`: a kill switch reset without an actor or a reason."""


# --- Rust float semantics ----------------------------------------------------------------------


def _fmax(a: float, b: float) -> float:
    """`f64::max`: the other operand when one is NaN."""
    if a != a:
        return b
    if b != b:
        return a
    return a if a >= b else b


def _fmin(a: float, b: float) -> float:
    """`f64::min`: the other operand when one is NaN."""
    if a != a:
        return b
    if b != b:
        return a
    return a if a <= b else b


def _signum(x: float) -> float:
    """`f64::signum`: 1.0 for +0.0 and above, -1.0 for -0.0 and below, NaN for NaN."""
    if x != x:
        return math.nan
    return math.copysign(1.0, x)


def _div(a: float, b: float) -> float:
    """IEEE 754 division, as Rust does it: dividing by zero gives ±inf or NaN, never raises."""
    if b == 0.0:
        if a == 0.0 or a != a:
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def _rust_fixed(x: float, digits: int) -> str:
    """`format!("{:.N}", x)`: Python's fixed notation rounds the same way; NaN is spelt NaN."""
    if x != x:
        return "NaN"
    return f"{x:.{digits}f}"


def _rust_display(x: float) -> str:
    """`format!("{}", x)`: the shortest round-trip digits, never in exponent notation, and no
    `.0` on whole numbers."""
    if x != x:
        return "NaN"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    text = format(Decimal(repr(x)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _rust_debug_str(s: str) -> str:
    """`format!("{:?}", s)` for the strings the gate quotes (escapes the usual suspects)."""
    out = []
    for c in s:
        if c in '"\\':
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\r":
            out.append("\\r")
        elif c == "\t":
            out.append("\\t")
        elif c == "\0":
            out.append("\\0")
        elif not c.isprintable():
            out.append(f"\\u{{{ord(c):x}}}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def _need_time(value: float | None, name: str) -> float:
    """The model has no clock: a time must be given."""
    if value is None:
        raise TypeError(f"the reference model has no clock: pass {name}= explicitly")
    return float(value)


def _u32(value: int, name: str) -> int:
    """What PyO3 does with a Python int for a `u32` parameter."""
    if not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not 0 <= value <= _U32_MAX:
        raise OverflowError(f"{name} {value} does not fit a u32")
    return value


def _i64(value: int, name: str) -> int:
    """What PyO3 does with a Python int for an `i64` parameter."""
    if not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not _I64_MIN <= value <= _I64_MAX:
        raise OverflowError(f"{name} {value} does not fit an i64")
    return value


def _opt(value: float | None) -> float | None:
    """An optional f64 argument."""
    return None if value is None else float(value)


# --- order.rs ----------------------------------------------------------------------------------


def _parse_side(s: str) -> float:
    """`Side::parse`, as the side's sign (+1 buy, -1 sell)."""
    sign = _SIDES.get(s)
    if sign is None:
        raise InvalidArgument(f"side must be buy or sell, not {_rust_debug_str(s)}")
    return sign


def _side_str(sign: float) -> str:
    """`Side::as_str` of a side sign."""
    return "buy" if sign > 0 else "sell"


def _parse_order_type(s: str) -> str:
    """`OrderType::parse`."""
    if s not in _ORDER_TYPES:
        raise InvalidArgument(
            f"type must be market, limit, stop or stop_limit, not {_rust_debug_str(s)}"
        )
    return s


def _parse_time_in_force(s: str) -> str:
    """`TimeInForce::parse`."""
    if s not in _TIMES_IN_FORCE:
        raise InvalidArgument(
            f"time_in_force must be day, gtc, ioc or fok, not {_rust_debug_str(s)}"
        )
    return s


class _Rejected(Exception):
    """A refusal travelling up from a check, like Rust's `?` on `Err(Reject)`."""

    def __init__(self, rule: str, reason: str, retry_after: float | None = None) -> None:
        super().__init__(rule)
        self.reject: Reject = (rule, reason, retry_after)


@dataclass(slots=True)
class _Order:
    """`order::Order`; `side` is the side's sign."""

    client_order_id: str
    symbol: str
    side: float
    qty: float
    order_type: str
    limit_price: float | None
    stop_price: float | None
    time_in_force: str
    reduce_only: bool
    liquidation: bool
    stop_loss: float | None


def symbol_is_well_formed(symbol: str) -> bool:
    """`order::symbol_is_well_formed` (also `tradeengine._core.symbol_is_well_formed`): 1 to 16
    bytes of A-Z 0-9 . / -, starting with a letter."""
    data = symbol.encode("utf-8", "surrogatepass")
    if not data or len(data) > MAX_SYMBOL_LEN or not 0x41 <= data[0] <= 0x5A:
        return False
    return all(0x41 <= b <= 0x5A or 0x30 <= b <= 0x39 or b in b"./-" for b in data)


def _client_order_id_is_well_formed(client_order_id: str) -> bool:
    """`order::client_order_id_is_well_formed`: 1 to 128 bytes of printable ASCII, no space."""
    data = client_order_id.encode("utf-8", "surrogatepass")
    return 0 < len(data) <= MAX_CLIENT_ORDER_ID_LEN and all(0x21 <= b <= 0x7E for b in data)


def _price_ok(p: float) -> bool:
    """`order::price_ok`."""
    return math.isfinite(p) and p > 0.0 and p <= MAX_PRICE


def _check_price(name: str, value: float | None, needed: bool) -> None:
    """`order::check_price`."""
    if value is None:
        if needed:
            raise _Rejected("price_missing", f"{name} is required for this order type")
        return
    if not needed:
        raise _Rejected("price_unexpected", f"{name} is not allowed for this order type")
    if not _price_ok(value):
        raise _Rejected(
            "price_invalid",
            f"{name} must be a finite number above 0 and at most {_rust_display(MAX_PRICE)}, "
            f"got {_rust_display(value)}",
        )


def _validate(order: _Order) -> None:
    """`order::validate`: static validation, in Rust's order."""
    if not _client_order_id_is_well_formed(order.client_order_id):
        raise _Rejected(
            "client_order_id_invalid",
            f"client_order_id must be 1 to {MAX_CLIENT_ORDER_ID_LEN} printable ASCII "
            "characters without spaces",
        )
    if not symbol_is_well_formed(order.symbol):
        raise _Rejected(
            "symbol_invalid",
            f"symbol {_rust_debug_str(order.symbol)} is not well formed: 1 to {MAX_SYMBOL_LEN} "
            "of A-Z 0-9 . / -, starting with a letter",
        )
    qty = order.qty
    if not (math.isfinite(qty) and qty > 0.0 and qty <= MAX_QTY):
        raise _Rejected(
            "qty_invalid",
            f"qty must be a finite number above 0 and at most {_rust_display(MAX_QTY)}, "
            f"got {_rust_display(qty)}",
        )
    order_type = order.order_type
    _check_price("limit_price", order.limit_price, order_type in ("limit", "stop_limit"))
    _check_price("stop_price", order.stop_price, order_type in ("stop", "stop_limit"))
    if order.stop_loss is not None and not _price_ok(order.stop_loss):
        raise _Rejected(
            "stop_loss_invalid",
            f"stop_loss must be a finite price above 0, got {_rust_display(order.stop_loss)}",
        )


# --- throttle.rs -------------------------------------------------------------------------------


def _check_rate(per_minute: int) -> None:
    """`throttle::check_rate`."""
    if per_minute == 0 or per_minute > MAX_ORDERS_PER_MINUTE_CEILING:
        raise InvalidConfig(
            f"max_orders_per_minute must be 1 to {MAX_ORDERS_PER_MINUTE_CEILING} (to stop "
            f"trading, engage the kill switch), got {per_minute}"
        )


class _Throttle:
    """`throttle::Throttle`: one token bucket, refilled continuously at per_minute/60 a second."""

    __slots__ = ("enabled", "last", "per_minute", "tokens")

    def __init__(self, per_minute: int, enabled: bool, now: float) -> None:
        _check_rate(per_minute)
        self.per_minute = per_minute
        self.enabled = enabled
        self.tokens = float(per_minute)
        self.last = now

    def _rate(self) -> float:
        return float(self.per_minute) / 60.0

    def _refilled(self, now: float) -> float:
        if now > self.last:
            return _fmin(self.tokens + (now - self.last) * self._rate(), float(self.per_minute))
        return self.tokens

    def _refill(self, now: float) -> None:
        self.tokens = self._refilled(now)
        if now > self.last:
            self.last = now

    def available(self, now: float) -> float:
        """Tokens in the bucket at `now`, without taking any."""
        return self._refilled(now)

    def check(self, now: float) -> float | None:
        """None when an order may pass at `now`, else the seconds until the next token."""
        self._refill(now)
        if not self.enabled or self.tokens >= 1.0:
            return None
        return (1.0 - self.tokens) / self._rate()

    def take(self) -> None:
        """Takes one token for an accepted order."""
        if self.enabled:
            self.tokens -= 1.0

    def give_back(self) -> None:
        """Gives back a token taken for an order that was then undone (never above capacity)."""
        if self.enabled:
            self.tokens = _fmin(self.tokens + 1.0, float(self.per_minute))

    def reconfigure(self, per_minute: int, enabled: bool, now: float) -> None:
        """Changes the rate live, keeping earned tokens up to the new capacity."""
        _check_rate(per_minute)
        self._refill(now)
        self.per_minute = per_minute
        self.enabled = enabled
        self.tokens = _fmin(self.tokens, float(self.per_minute))


# --- state.rs ----------------------------------------------------------------------------------

_KillRecord = tuple[str, str, float]


class _Control:
    """`state::Control`: the reduce-only flag and the kill switch latch."""

    __slots__ = ("engaged", "last_reset", "reducing")

    def __init__(self) -> None:
        self.reducing = False
        self.engaged: _KillRecord | None = None
        self.last_reset: _KillRecord | None = None

    def state(self) -> str:
        """`TradingState::as_str` of the current state; halted wins over reducing."""
        if self.engaged is not None:
            return "halted"
        if self.reducing:
            return "reducing"
        return "active"

    def engage(self, record: _KillRecord) -> bool:
        """Latches; False (and the first record kept) when engaged already."""
        if self.engaged is not None:
            return False
        self.engaged = record
        return True

    def reset(self, record: _KillRecord) -> bool:
        """Releases the latch; needs an actor and a reason. False when it was not engaged."""
        actor, reason, _ = record
        if not reason.strip(_RUST_WHITESPACE) or not actor.strip(_RUST_WHITESPACE):
            raise InvalidState("a kill switch reset needs an actor and a reason")
        if self.engaged is None:
            return False
        self.engaged = None
        self.last_reset = record
        return True


# --- limits.rs ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Limits:
    """`limits::Limits`."""

    max_position_size: float = 10_000.0
    max_order_notional: float = math.inf
    portfolio_heat_limit: float = 0.25
    max_daily_loss: float = -1_000.0
    max_drawdown: float = 0.10
    price_collar: float = 0.10
    auto_kill: bool = True

    def validate(self) -> None:
        """`Limits::validate`, in Rust's order."""
        for name in (
            "max_position_size",
            "max_order_notional",
            "portfolio_heat_limit",
            "price_collar",
            "max_drawdown",
        ):
            v: float = getattr(self, name)
            if math.isnan(v) or v <= 0.0:
                raise InvalidConfig(f"{name} must be above 0, got {_rust_display(v)}")
        if math.isfinite(self.max_drawdown) and self.max_drawdown > 1.0:
            raise InvalidConfig(
                "max_drawdown is a fraction of the equity peak (0.10 is 10%), at most 1, got "
                + _rust_display(self.max_drawdown)
            )
        if math.isnan(self.max_daily_loss) or self.max_daily_loss >= 0.0:
            raise InvalidConfig(
                "max_daily_loss is a loss in USD and must be negative (e.g. -1000.0), got "
                + _rust_display(self.max_daily_loss)
            )


def _check_order_notional(limit: float, notional: float) -> None:
    """`limits::check_order_notional`."""
    if notional > limit:
        raise _Rejected(
            "max_order_notional",
            f"order notional {_rust_fixed(notional, 2)} is above max_order_notional "
            f"{_rust_fixed(limit, 2)}",
        )


def _check_position_size(
    limit: float,
    position_qty: float,
    resting_same_side_qty: float,
    side: float,
    qty: float,
    price: float,
) -> None:
    """`limits::check_position_size`: the worst case counts same-side resting orders."""
    worst = position_qty + side * (resting_same_side_qty + qty)
    grows_away_from_flat = worst * side > 0.0
    notional = abs(worst) * price
    if grows_away_from_flat and notional > limit:
        raise _Rejected(
            "max_position_size",
            f"worst-case position notional {_rust_fixed(notional, 2)} (position "
            f"{_rust_display(position_qty)}, resting {_rust_display(resting_same_side_qty)}, "
            f"order {_rust_display(qty)}) is above max_position_size {_rust_fixed(limit, 2)}",
        )


def _check_heat(limit: float, risk_now: float, order_risk: float, equity: float) -> None:
    """`limits::check_heat`: no new risk without equity."""
    total = risk_now + order_risk
    if equity <= 0.0 or total / equity > limit:
        heat = total / equity if equity > 0.0 else math.inf
        raise _Rejected(
            "portfolio_heat",
            f"portfolio heat would be {_rust_fixed(heat, 4)} of equity {_rust_fixed(equity, 2)}"
            f", above the limit {_rust_display(limit)}",
        )


def _check_daily_loss(limit: float, daily_pnl: float) -> None:
    """`limits::check_daily_loss`."""
    if daily_pnl <= limit:
        raise _Rejected(
            "max_daily_loss",
            f"daily PnL {_rust_fixed(daily_pnl, 2)} has reached max_daily_loss "
            f"{_rust_fixed(limit, 2)}",
        )


def _check_drawdown(limit: float, drawdown: float) -> None:
    """`limits::check_drawdown`."""
    if drawdown >= limit:
        raise _Rejected(
            "max_drawdown",
            f"drawdown {_rust_fixed(drawdown, 4)} from the equity peak has reached max_drawdown "
            + _rust_display(limit),
        )


def _check_collar(limit: float, name: str, price: float, mark: float) -> None:
    """`limits::check_collar`: the distance is relative to the mark."""
    distance = _div(abs(price - mark), mark)
    if distance > limit:
        raise _Rejected(
            "price_collar",
            f"{name} {_rust_display(price)} is {_rust_fixed(distance * 100.0, 1)}% from the "
            f"mark {_rust_display(mark)}, above the collar of {_rust_fixed(limit * 100.0, 1)}%",
        )


# --- book.rs -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Position:
    """`book::Position`."""

    qty: float = 0.0
    avg_entry: float = 0.0
    realized: float = 0.0
    stop_loss: float | None = None
    unrealized: float = 0.0
    risk: float = 0.0


@dataclass(slots=True)
class _Resting:
    """`book::Resting`; `side` is the side's sign."""

    symbol: str
    side: float
    remaining: float
    price: float
    stop_loss: float | None
    risk: float


@dataclass(slots=True)
class _Exposure:
    """`book::Exposure`."""

    buy_qty: float = 0.0
    sell_qty: float = 0.0

    def on_side(self, side: float) -> float:
        return self.buy_qty if side > 0 else self.sell_qty

    def add(self, side: float, qty: float) -> None:
        slot = _fmax((self.buy_qty if side > 0 else self.sell_qty) + qty, 0.0)
        if slot <= QTY_EPSILON:
            slot = 0.0
        if side > 0:
            self.buy_qty = slot
        else:
            self.sell_qty = slot


@dataclass(slots=True)
class _Fill:
    """`book::Fill`; `side` is the side's sign."""

    client_order_id: str
    symbol: str
    side: float
    qty: float
    price: float
    fee: float


def _book_fill(
    pos: _Position, side: float, qty: float, price: float, stop_loss: float | None
) -> float:
    """`book::book_fill`: the position arithmetic of one fill; the realized PnL before fees."""
    signed = side * qty
    before = pos.qty
    if abs(before) <= QTY_EPSILON or _signum(before) == _signum(signed):
        after = before + signed
        pos.avg_entry = _div(abs(before) * pos.avg_entry + qty * price, abs(after))
        pos.qty = after
        if stop_loss is not None or abs(before) <= QTY_EPSILON:
            pos.stop_loss = stop_loss
        return 0.0
    closing = _fmin(qty, abs(before))
    realized = closing * (price - pos.avg_entry) * _signum(before)
    after = before + signed
    if abs(after) <= QTY_EPSILON:
        pos.qty = 0.0
        pos.avg_entry = 0.0
        pos.stop_loss = None
    elif _signum(after) != _signum(before):
        pos.qty = after
        pos.avg_entry = price
        pos.stop_loss = stop_loss
    else:
        pos.qty = after
    return realized


class _Book:
    """`book::Book`: positions, marks, resting orders and their exposure, and the running
    totals, kept incrementally exactly as Rust keeps them."""

    __slots__ = (
        "day",
        "day_start_equity",
        "exposure",
        "marks",
        "peak_equity",
        "position_risk_total",
        "positions",
        "realized_total",
        "resting",
        "resting_risk_total",
        "starting_cash",
        "unrealized_total",
    )

    def __init__(self, starting_cash: float) -> None:
        self.starting_cash = starting_cash
        self.positions: dict[str, _Position] = {}
        self.marks: dict[str, float] = {}
        self.resting: dict[str, _Resting] = {}
        self.exposure: dict[str, _Exposure] = {}
        self.realized_total = 0.0
        self.unrealized_total = 0.0
        self.position_risk_total = 0.0
        self.resting_risk_total = 0.0
        self.peak_equity = starting_cash
        self.day = _I64_MIN
        self.day_start_equity = starting_cash

    def equity(self) -> float:
        return self.starting_cash + self.realized_total + self.unrealized_total

    def daily_pnl(self) -> float:
        return self.equity() - self.day_start_equity

    def drawdown(self) -> float:
        if self.peak_equity > 0.0:
            return _fmax((self.peak_equity - self.equity()) / self.peak_equity, 0.0)
        return 0.0

    def risk(self) -> float:
        return self.position_risk_total + self.resting_risk_total

    def heat(self) -> float:
        equity = self.equity()
        if equity > 0.0:
            return self.risk() / equity
        if self.risk() > 0.0:
            return math.inf
        return 0.0

    def position_qty(self, symbol: str) -> float:
        pos = self.positions.get(symbol)
        return 0.0 if pos is None else pos.qty

    def exposure_of(self, symbol: str) -> _Exposure:
        """A copy, like Rust's `Exposure: Copy` (zero when the symbol has none)."""
        e = self.exposure.get(symbol)
        return _Exposure() if e is None else _Exposure(e.buy_qty, e.sell_qty)

    def set_mark(self, symbol: str, price: float) -> None:
        self.marks[symbol] = price
        self._refresh(symbol)

    def roll_day(self, day: int) -> bool:
        if day == self.day:
            return False
        self.day = day
        self.day_start_equity = self.equity()
        return True

    def reserve(self, client_order_id: str, resting: _Resting) -> None:
        old = self.resting.pop(client_order_id, None)
        if old is not None:
            self._unreserve(old, old.remaining)
        e = self.exposure.get(resting.symbol)
        if e is None:
            e = _Exposure()
            e.add(resting.side, resting.remaining)
            self.exposure[resting.symbol] = e
        else:
            e.add(resting.side, resting.remaining)
        self.resting_risk_total += resting.risk
        self.resting[client_order_id] = resting

    def _unreserve(self, resting: _Resting, qty: float) -> None:
        e = self.exposure.get(resting.symbol)
        if e is not None:
            e.add(resting.side, -qty)
        share = _fmin(qty / resting.remaining, 1.0) if resting.remaining > 0.0 else 1.0
        self.resting_risk_total = _fmax(self.resting_risk_total - resting.risk * share, 0.0)

    def _release(self, client_order_id: str, qty: float) -> None:
        resting = self.resting.pop(client_order_id, None)
        if resting is None:
            return
        qty = _fmin(qty, resting.remaining)
        self._unreserve(resting, qty)
        share = qty / resting.remaining if resting.remaining > 0.0 else 1.0
        resting.risk -= resting.risk * share
        resting.remaining -= qty
        if resting.remaining > QTY_EPSILON:
            self.resting[client_order_id] = resting

    def cancel(self, client_order_id: str) -> bool:
        resting = self.resting.pop(client_order_id, None)
        if resting is None:
            return False
        self._unreserve(resting, resting.remaining)
        return True

    def apply_fill(self, fill: _Fill) -> None:
        resting = self.resting.get(fill.client_order_id)
        stop_loss = None if resting is None else resting.stop_loss
        self._release(fill.client_order_id, fill.qty)
        if fill.symbol not in self.marks:
            self.marks[fill.symbol] = fill.price
        pos = self.positions.get(fill.symbol)
        if pos is None:
            pos = self.positions[fill.symbol] = _Position()
        realized = _book_fill(pos, fill.side, fill.qty, fill.price, stop_loss) - fill.fee
        pos.realized += realized
        self.realized_total += realized
        self._refresh(fill.symbol)

    def _refresh(self, symbol: str) -> None:
        mark = self.marks.get(symbol)
        pos = self.positions.get(symbol)
        if pos is not None:
            price = pos.avg_entry if mark is None else mark
            unrealized = pos.qty * (price - pos.avg_entry)
            if pos.stop_loss is not None:
                risk = abs(pos.qty) * abs(pos.avg_entry - pos.stop_loss)
            else:
                risk = abs(pos.qty) * price
            self.unrealized_total += unrealized - pos.unrealized
            self.position_risk_total += risk - pos.risk
            pos.unrealized = unrealized
            pos.risk = risk
        equity = self.equity()
        if equity > self.peak_equity:
            self.peak_equity = equity


# --- gate.rs and python.rs ---------------------------------------------------------------------


class ReferenceGate:
    """The model of `tradeengine._core.Gate`: same constructor, methods and return values.

    Every `now`/`at` must be passed; rejections are `(rule, reason, retry_after)` tuples and
    errors are `ModelError`s (ValueError).
    """

    def __init__(
        self,
        starting_cash: float = 100000.0,
        max_orders_per_minute: int = 60,
        throttle_enabled: bool = True,
        max_position_size: float = 10000.0,
        max_order_notional: float = math.inf,
        portfolio_heat_limit: float = 0.25,
        max_daily_loss: float = -1000.0,
        max_drawdown: float = 0.1,
        price_collar: float = 0.1,
        auto_kill: bool = True,
        now: float = 0.0,
    ) -> None:
        """Same checks in the same order as `Gate::new` in python.rs."""
        starting_cash = float(starting_cash)
        if not math.isfinite(starting_cash):
            raise InvalidConfig(f"starting_cash must be finite, got {_rust_display(starting_cash)}")
        limits = _Limits(
            float(max_position_size),
            float(max_order_notional),
            float(portfolio_heat_limit),
            float(max_daily_loss),
            float(max_drawdown),
            float(price_collar),
            bool(auto_kill),
        )
        throttle = _Throttle(
            _u32(max_orders_per_minute, "max_orders_per_minute"),
            bool(throttle_enabled),
            float(now),
        )
        limits.validate()
        self._book = _Book(starting_cash)
        self._throttle = throttle
        self._control = _Control()
        self._limits = limits
        self._seen: set[str] = set()

    # -- orders --

    def check(
        self,
        client_order_id: str,
        symbol: str,
        side: str,
        qty: float,
        order_type: str = "market",
        limit_price: float | None = None,
        stop_price: float | None = None,
        time_in_force: str = "day",
        reduce_only: bool = False,
        liquidation: bool = False,
        stop_loss: float | None = None,
        now: float | None = None,
    ) -> Reject | None:
        """Decides one order at `now`. None means accepted (its token and exposure are taken);
        otherwise (rule, reason, retry_after)."""
        order = _Order(
            client_order_id,
            symbol,
            _parse_side(side),
            float(qty),
            _parse_order_type(order_type),
            _opt(limit_price),
            _opt(stop_price),
            _parse_time_in_force(time_in_force),
            bool(reduce_only),
            bool(liquidation),
            _opt(stop_loss),
        )
        return self._check(order, _need_time(now, "now"))

    def check_batch(
        self, orders: Sequence[OrderTuple], now: float | None = None
    ) -> list[Reject | None]:
        """Decides many orders in sequence at one `now`; all are parsed before any is checked."""
        parsed = [
            _Order(
                cid,
                symbol,
                _parse_side(side),
                float(qty),
                _parse_order_type(order_type),
                _opt(limit_price),
                _opt(stop_price),
                _parse_time_in_force(tif),
                bool(reduce_only),
                bool(liquidation),
                _opt(stop_loss),
            )
            for (
                cid,
                symbol,
                side,
                qty,
                order_type,
                limit_price,
                stop_price,
                tif,
                reduce_only,
                liquidation,
                stop_loss,
            ) in orders
        ]
        at = _need_time(now, "now")
        return [self._check(order, at) for order in parsed]

    def _check(self, order: _Order, now: float) -> Reject | None:
        """`Gate::check`: decide, and on accept commit the token, the id and the reservation."""
        try:
            accepted = self._decide(order, now)
        except _Rejected as rejected:
            return rejected.reject
        if not order.liquidation:
            self._throttle.take()
        self._seen.add(order.client_order_id)
        self._book.reserve(order.client_order_id, accepted)
        return None

    def _reduces(self, order: _Order) -> bool:
        """`Gate::reduces`: only shrinks the position, counting same-side resting orders."""
        position = self._book.position_qty(order.symbol)
        if abs(position) <= QTY_EPSILON or _signum(position) == order.side:
            return False
        pending = self._book.exposure_of(order.symbol).on_side(order.side)
        return order.qty + pending <= abs(position) + QTY_EPSILON

    def _decide(self, order: _Order, now: float) -> _Resting:
        """`Gate::decide`: the checks in the order their rule is reported."""
        _validate(order)
        if order.client_order_id in self._seen:
            raise _Rejected(
                "duplicate_client_order_id",
                f"client_order_id {_rust_debug_str(order.client_order_id)} was used already",
            )
        book = self._book
        limits = self._limits
        reduces = self._reduces(order)
        mark = book.marks.get(order.symbol)
        if order.liquidation:
            if not reduces:
                raise _Rejected(
                    "liquidation_not_reducing",
                    "a liquidation order must only reduce its symbol's position",
                )
            if order.limit_price is not None:
                price = order.limit_price
            elif order.stop_price is not None:
                price = order.stop_price
            elif mark is not None:
                price = mark
            else:
                price = 0.0
            return self._resting(order, price, 0.0)
        state = self._control.state()
        if state == "halted":
            engaged = self._control.engaged
            why = "" if engaged is None else engaged[1]
            raise _Rejected("kill_switch", f"kill switch engaged: {why}")
        if state == "reducing" and not reduces:
            raise _Rejected(
                "reduce_only",
                "trading is in reduce-only mode: only orders that shrink a position pass",
            )
        if order.reduce_only and not reduces:
            raise _Rejected(
                "reduce_only", "a reduce-only order must only shrink its symbol's position"
            )
        wait = self._throttle.check(now)
        if wait is not None:
            raise _Rejected(
                "throttle",
                f"more than {self._throttle.per_minute} orders a minute; next order possible in "
                f"{_rust_fixed(wait, 3)} s",
                wait,
            )
        if order.order_type == "market":
            if mark is None:
                raise _Rejected(
                    "no_mark",
                    f"no market price for {order.symbol}: a market order cannot be checked blind",
                )
            price = mark
        elif order.order_type == "stop":
            price = 0.0 if order.stop_price is None else order.stop_price
        else:
            price = 0.0 if order.limit_price is None else order.limit_price
        if mark is not None:
            if order.limit_price is not None:
                _check_collar(limits.price_collar, "limit_price", order.limit_price, mark)
            if order.stop_price is not None:
                _check_collar(limits.price_collar, "stop_price", order.stop_price, mark)
        notional = order.qty * price
        _check_order_notional(limits.max_order_notional, notional)
        if reduces:
            return self._resting(order, price, 0.0)
        _check_daily_loss(limits.max_daily_loss, book.daily_pnl())
        _check_drawdown(limits.max_drawdown, book.drawdown())
        _check_position_size(
            limits.max_position_size,
            book.position_qty(order.symbol),
            book.exposure_of(order.symbol).on_side(order.side),
            order.side,
            order.qty,
            price,
        )
        risk = notional if order.stop_loss is None else order.qty * abs(price - order.stop_loss)
        _check_heat(limits.portfolio_heat_limit, book.risk(), risk, book.equity())
        return self._resting(order, price, risk)

    @staticmethod
    def _resting(order: _Order, price: float, risk: float) -> _Resting:
        return _Resting(order.symbol, order.side, order.qty, price, order.stop_loss, risk)

    # -- events --

    def on_fill(
        self,
        client_order_id: str,
        symbol: str,
        side: str,
        qty: float,
        price: float,
        fee: float = 0.0,
        at: float | None = None,
    ) -> str | None:
        """Books a fill. Returns the rule whose breach engaged the kill switch, if this fill did."""
        fill = _Fill(
            client_order_id, symbol, _parse_side(side), float(qty), float(price), float(fee)
        )
        when = _need_time(at, "at")
        self._book.apply_fill(fill)
        return self._auto_kill(when)

    def replay_fills(self, fills: Sequence[FillTuple]) -> int:
        """Rebuilds the book from journaled fills without engaging anything."""
        parsed = [
            _Fill(cid, symbol, _parse_side(side), float(qty), float(price), float(fee))
            for cid, symbol, side, qty, price, fee in fills
        ]
        for fill in parsed:
            self._book.apply_fill(fill)
        return len(parsed)

    def on_cancel(self, client_order_id: str) -> bool:
        """Releases what a resting order reserved. False when the order was not resting."""
        return self._book.cancel(client_order_id)

    def knows(self, client_order_id: str) -> bool:
        """Whether a client order id was accepted before."""
        return client_order_id in self._seen

    def revoke(self, client_order_id: str, liquidation: bool = False) -> bool:
        """`Gate::revoke`: undoes an accept that went no further (releases its exposure,
        forgets its id, gives its throttle token back). False when the order was not resting."""
        if not self._book.cancel(client_order_id):
            return False
        self._seen.discard(client_order_id)
        if not liquidation:
            self._throttle.give_back()
        return True

    def mark(self, symbol: str, price: float, at: float | None = None) -> str | None:
        """Sets a mark. Returns the rule whose breach engaged the kill switch, if this mark did."""
        price = float(price)
        if not (math.isfinite(price) and price > 0.0):
            raise InvalidArgument(
                f"a mark must be a finite price above 0, got {_rust_display(price)}"
            )
        when = _need_time(at, "at")
        self._book.set_mark(symbol, price)
        return self._auto_kill(when)

    def get_mark(self, symbol: str) -> float | None:
        """The mark of one symbol, or None."""
        return self._book.marks.get(symbol)

    def marks(self) -> dict[str, float]:
        """Every mark."""
        return dict(self._book.marks)

    def roll_day(self, day: int) -> bool:
        """Starts a new trading day. False if unchanged."""
        return self._book.roll_day(_i64(day, "day"))

    # -- trading state and kill switch --

    @property
    def state(self) -> str:
        """active, reducing or halted."""
        return self._control.state()

    def set_reducing(self, reducing: bool) -> None:
        """Turns reduce-only mode on or off."""
        self._control.reducing = bool(reducing)

    def engage_kill_switch(self, actor: str, reason: str, at: float | None = None) -> bool:
        """Latches the kill switch. False when it was engaged already (the first record stays)."""
        return self._control.engage((actor, reason, _need_time(at, "at")))

    def reset_kill_switch(self, actor: str, reason: str, at: float | None = None) -> bool:
        """Releases the kill switch; actor and reason are required. False when not engaged."""
        return self._control.reset((actor, reason, _need_time(at, "at")))

    def kill_switch(self) -> tuple[str, str, float] | None:
        """(actor, reason, at) of the engaged kill switch, or None."""
        return self._control.engaged

    def last_reset(self) -> tuple[str, str, float] | None:
        """(actor, reason, at) of the last reset, or None."""
        return self._control.last_reset

    def breach(self) -> str | None:
        """`Gate::breach`: the rule a breach would engage the kill switch for now, or None."""
        book = self._book
        if book.daily_pnl() <= self._limits.max_daily_loss:
            return "max_daily_loss"
        if book.drawdown() >= self._limits.max_drawdown:
            return "max_drawdown"
        return None

    def _auto_kill(self, at: float) -> str | None:
        """`Gate::auto_kill`: a breach engages the kill switch when auto_kill is on."""
        if not self._limits.auto_kill or self._control.state() == "halted":
            return None
        rule = self.breach()
        if rule is None:
            return None
        book = self._book
        if rule == "max_daily_loss":
            reason = (
                f"max_daily_loss breached: daily PnL {_rust_fixed(book.daily_pnl(), 2)} <= "
                f"{_rust_fixed(self._limits.max_daily_loss, 2)}"
            )
        else:
            reason = (
                f"max_drawdown breached: drawdown {_rust_fixed(book.drawdown(), 4)} >= "
                f"{_rust_display(self._limits.max_drawdown)}"
            )
        self._control.engage((SYSTEM_ACTOR, reason, at))
        return rule

    # -- configuration --

    def limits(self) -> dict[str, float | bool]:
        """The limits, keyed by name."""
        lim = self._limits
        return {
            "max_position_size": lim.max_position_size,
            "max_order_notional": lim.max_order_notional,
            "portfolio_heat_limit": lim.portfolio_heat_limit,
            "max_daily_loss": lim.max_daily_loss,
            "max_drawdown": lim.max_drawdown,
            "price_collar": lim.price_collar,
            "auto_kill": lim.auto_kill,
        }

    def set_limits(
        self,
        max_position_size: float | None = None,
        max_order_notional: float | None = None,
        portfolio_heat_limit: float | None = None,
        max_daily_loss: float | None = None,
        max_drawdown: float | None = None,
        price_collar: float | None = None,
        auto_kill: bool | None = None,
    ) -> None:
        """Changes any of the limits; None leaves one as it is. All or nothing."""
        cur = self._limits

        def pick(value: float | None, current: float) -> float:
            return current if value is None else float(value)

        nxt = _Limits(
            pick(max_position_size, cur.max_position_size),
            pick(max_order_notional, cur.max_order_notional),
            pick(portfolio_heat_limit, cur.portfolio_heat_limit),
            pick(max_daily_loss, cur.max_daily_loss),
            pick(max_drawdown, cur.max_drawdown),
            pick(price_collar, cur.price_collar),
            cur.auto_kill if auto_kill is None else bool(auto_kill),
        )
        nxt.validate()
        self._limits = nxt

    def throttle(self) -> tuple[int, bool]:
        """(max_orders_per_minute, enabled)."""
        return (self._throttle.per_minute, self._throttle.enabled)

    def set_throttle(
        self, max_orders_per_minute: int, enabled: bool, now: float | None = None
    ) -> None:
        """Changes the throttle live; tokens earned are kept up to the new capacity."""
        per_minute = _u32(max_orders_per_minute, "max_orders_per_minute")
        self._throttle.reconfigure(per_minute, bool(enabled), _need_time(now, "now"))

    def tokens_available(self, now: float | None = None) -> float:
        """Tokens in the bucket at `now`."""
        return self._throttle.available(_need_time(now, "now"))

    # -- the book --

    def position(
        self, symbol: str
    ) -> tuple[float, float, float, float, float | None, float | None] | None:
        """(qty, avg_entry, realized, unrealized, mark, stop_loss) of one symbol, or None."""
        pos = self._book.positions.get(symbol)
        if pos is None:
            return None
        mark = self._book.marks.get(symbol)
        return (pos.qty, pos.avg_entry, pos.realized, pos.unrealized, mark, pos.stop_loss)

    def positions(self) -> list[tuple[str, float, float, float, float, float | None]]:
        """[(symbol, qty, avg_entry, realized, unrealized, mark)] of every symbol ever traded."""
        marks = self._book.marks
        return sorted(
            (s, p.qty, p.avg_entry, p.realized, p.unrealized, marks.get(s))
            for s, p in self._book.positions.items()
        )

    def exposure(self, symbol: str) -> tuple[float, float]:
        """(buy_qty, sell_qty) resting on one symbol."""
        e = self._book.exposure_of(symbol)
        return (e.buy_qty, e.sell_qty)

    def resting_orders(self) -> list[tuple[str, str, str, float, float]]:
        """[(client_order_id, symbol, side, remaining, price)] of every resting order."""
        return sorted(
            (cid, r.symbol, _side_str(r.side), r.remaining, r.price)
            for cid, r in self._book.resting.items()
        )

    def account(self) -> dict[str, float]:
        """The account figures, keyed as the Rust binding keys them (`day` is an int)."""
        b = self._book
        return {
            "starting_cash": b.starting_cash,
            "equity": b.equity(),
            "realized_pnl": b.realized_total,
            "unrealized_pnl": b.unrealized_total,
            "daily_pnl": b.daily_pnl(),
            "drawdown": b.drawdown(),
            "peak_equity": b.peak_equity,
            "risk": b.risk(),
            "heat": b.heat(),
            "day": b.day,
            "day_start_equity": b.day_start_equity,
        }
