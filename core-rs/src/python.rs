//! Every Python binding of the core, and the one place where core errors become Python
//! exceptions. Arguments are copied into Rust values before any work; batch calls release the
//! GIL while they run.

use crate::book::{Fill, Resting};
use crate::error::EngineError;
use crate::gate::{self, Decision};
use crate::limits::Limits;
use crate::order::{Order, OrderType, Rule, Side, TimeInForce};
use crate::state::KillRecord;
use crate::throttle::Throttle;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};
use std::collections::HashMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// mimalloc for every Rust allocation of the extension: the gate allocates per accepted order
/// and batch calls allocate per order; glibc malloc made those calls several times slower.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

create_exception!(
    _core,
    TradeEngineError,
    PyException,
    "Base of every error raised by the core."
);
create_exception!(
    _core,
    InvalidArgumentError,
    TradeEngineError,
    "An argument that can never be valid."
);
create_exception!(
    _core,
    ConfigError,
    TradeEngineError,
    "A limit or throttle setting out of range; nothing changed."
);
create_exception!(
    _core,
    UnknownOrderError,
    TradeEngineError,
    "The order is not known to the gate."
);
create_exception!(
    _core,
    InvalidStateError,
    TradeEngineError,
    "The operation is not allowed in the current state."
);

impl From<EngineError> for PyErr {
    fn from(err: EngineError) -> PyErr {
        let message = err.to_string();
        match err {
            EngineError::InvalidArgument(_) => InvalidArgumentError::new_err(message),
            EngineError::InvalidConfig(_) => ConfigError::new_err(message),
            EngineError::UnknownOrder(_) => UnknownOrderError::new_err(message),
            EngineError::InvalidState(_) => InvalidStateError::new_err(message),
        }
    }
}

/// A rejection as Python sees it: (rule, reason, retry_after seconds or None).
type PyReject = (&'static str, String, Option<f64>);

/// A fill as a tuple: (client_order_id, symbol, side, qty, price, fee).
type FillTuple = (String, String, String, f64, f64, f64);

fn to_py(decision: Decision) -> Option<PyReject> {
    match decision {
        Decision::Accept => None,
        Decision::Reject(r) => Some((r.rule.as_str(), r.reason, r.retry_after)),
    }
}

fn wall_clock() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Reads an order tuple, borrowing the enumerations instead of copying them.
fn order_from_tuple(item: &Bound<'_, PyAny>) -> PyResult<Order> {
    let t = item.cast::<PyTuple>().map_err(PyErr::from)?;
    if t.len() != 11 {
        return Err(EngineError::InvalidArgument(format!(
            "an order tuple has 11 fields, this one has {}",
            t.len()
        ))
        .into());
    }
    let text = |i: usize| -> PyResult<Bound<'_, PyString>> {
        t.get_item(i)?.cast_into::<PyString>().map_err(PyErr::from)
    };
    Ok(Order {
        client_order_id: t.get_item(0)?.extract()?,
        symbol: t.get_item(1)?.extract()?,
        side: Side::parse(text(2)?.to_str()?)?,
        qty: t.get_item(3)?.extract()?,
        order_type: OrderType::parse(text(4)?.to_str()?)?,
        limit_price: t.get_item(5)?.extract()?,
        stop_price: t.get_item(6)?.extract()?,
        time_in_force: TimeInForce::parse(text(7)?.to_str()?)?,
        reduce_only: t.get_item(8)?.extract()?,
        liquidation: t.get_item(9)?.extract()?,
        stop_loss: t.get_item(10)?.extract()?,
    })
}

fn fill_from_tuple(t: FillTuple) -> PyResult<Fill> {
    let (client_order_id, symbol, side, qty, price, fee) = t;
    Ok(Fill {
        client_order_id,
        symbol,
        side: Side::parse(&side)?,
        qty,
        price,
        fee,
    })
}

/// The order gate: kill switch, trading state, throttle, position book and limits, decided in
/// one call per order.
#[pyclass(module = "tradeengine._core", subclass)]
pub struct Gate {
    inner: gate::Gate,
    origin: Instant,
}

impl Gate {
    fn now(&self, now: Option<f64>) -> f64 {
        now.unwrap_or_else(|| self.origin.elapsed().as_secs_f64())
    }
}

#[pymethods]
impl Gate {
    #[new]
    #[pyo3(signature = (
        starting_cash = 100_000.0,
        max_orders_per_minute = 60,
        throttle_enabled = true,
        max_position_size = 10_000.0,
        max_order_notional = f64::INFINITY,
        portfolio_heat_limit = 0.25,
        max_daily_loss = -1_000.0,
        max_drawdown = 0.10,
        price_collar = 0.10,
        auto_kill = true,
        now = 0.0,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        starting_cash: f64,
        max_orders_per_minute: u32,
        throttle_enabled: bool,
        max_position_size: f64,
        max_order_notional: f64,
        portfolio_heat_limit: f64,
        max_daily_loss: f64,
        max_drawdown: f64,
        price_collar: f64,
        auto_kill: bool,
        now: f64,
    ) -> PyResult<Gate> {
        if !starting_cash.is_finite() {
            return Err(EngineError::InvalidConfig(format!(
                "starting_cash must be finite, got {starting_cash}"
            ))
            .into());
        }
        let limits = Limits {
            max_position_size,
            max_order_notional,
            portfolio_heat_limit,
            max_daily_loss,
            max_drawdown,
            price_collar,
            auto_kill,
        };
        let throttle = Throttle::new(max_orders_per_minute, throttle_enabled, now)?;
        let origin = Instant::now()
            .checked_sub(std::time::Duration::from_secs_f64(now.max(0.0)))
            .unwrap_or_else(Instant::now);
        Ok(Gate {
            inner: gate::Gate::new(starting_cash, limits, throttle)?,
            origin,
        })
    }

    /// Seconds on the gate's monotonic clock, the `now` every call defaults to.
    fn clock(&self) -> f64 {
        self.now(None)
    }

    /// Decides one order. None means accepted (its token and exposure are taken); otherwise
    /// (rule, reason, retry_after).
    #[pyo3(signature = (
        client_order_id, symbol, side, qty, order_type = "market", limit_price = None,
        stop_price = None, time_in_force = "day", reduce_only = false, liquidation = false,
        stop_loss = None, now = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn check(
        &mut self,
        client_order_id: &str,
        symbol: &str,
        side: &str,
        qty: f64,
        order_type: &str,
        limit_price: Option<f64>,
        stop_price: Option<f64>,
        time_in_force: &str,
        reduce_only: bool,
        liquidation: bool,
        stop_loss: Option<f64>,
        now: Option<f64>,
    ) -> PyResult<Option<PyReject>> {
        let order = Order {
            client_order_id: client_order_id.to_owned(),
            symbol: symbol.to_owned(),
            side: Side::parse(side)?,
            qty,
            order_type: OrderType::parse(order_type)?,
            limit_price,
            stop_price,
            time_in_force: TimeInForce::parse(time_in_force)?,
            reduce_only,
            liquidation,
            stop_loss,
        };
        let now = self.now(now);
        Ok(to_py(self.inner.check(&order, now)))
    }

    /// Decides many orders in sequence at one `now`, without the GIL. Each order is a tuple
    /// (client_order_id, symbol, side, qty, type, limit_price, stop_price, time_in_force,
    /// reduce_only, liquidation, stop_loss).
    #[pyo3(signature = (orders, now = None))]
    fn check_batch(
        &mut self,
        py: Python<'_>,
        orders: &Bound<'_, PyAny>,
        now: Option<f64>,
    ) -> PyResult<Vec<Option<PyReject>>> {
        let orders = orders
            .try_iter()?
            .map(|item| order_from_tuple(&item?))
            .collect::<PyResult<Vec<_>>>()?;
        let now = self.now(now);
        let inner = &mut self.inner;
        let decisions = py.detach(move || inner.check_batch(orders, now));
        Ok(decisions.into_iter().map(to_py).collect())
    }

    /// Books a fill. Returns the rule whose breach engaged the kill switch, if this fill did.
    #[pyo3(signature = (client_order_id, symbol, side, qty, price, fee = 0.0, at = None))]
    #[allow(clippy::too_many_arguments)]
    fn on_fill(
        &mut self,
        client_order_id: &str,
        symbol: &str,
        side: &str,
        qty: f64,
        price: f64,
        fee: f64,
        at: Option<f64>,
    ) -> PyResult<Option<&'static str>> {
        let fill = Fill {
            client_order_id: client_order_id.to_owned(),
            symbol: symbol.to_owned(),
            side: Side::parse(side)?,
            qty,
            price,
            fee,
        };
        Ok(self
            .inner
            .on_fill(&fill, at.unwrap_or_else(wall_clock))
            .map(Rule::as_str))
    }

    /// Rebuilds the book from journaled fills, without the GIL and without engaging anything.
    fn replay_fills(&mut self, py: Python<'_>, fills: Vec<FillTuple>) -> PyResult<usize> {
        let fills = fills
            .into_iter()
            .map(fill_from_tuple)
            .collect::<PyResult<Vec<_>>>()?;
        let inner = &mut self.inner;
        let n = fills.len();
        py.detach(move || inner.replay_fills(&fills));
        Ok(n)
    }

    /// Releases what a resting order reserved. False when the order was not resting.
    fn on_cancel(&mut self, client_order_id: &str) -> bool {
        self.inner.on_cancel(client_order_id)
    }

    /// Sets a mark. Returns the rule whose breach engaged the kill switch, if this mark did.
    #[pyo3(signature = (symbol, price, at = None))]
    fn mark(
        &mut self,
        symbol: &str,
        price: f64,
        at: Option<f64>,
    ) -> PyResult<Option<&'static str>> {
        if !(price.is_finite() && price > 0.0) {
            return Err(EngineError::InvalidArgument(format!(
                "a mark must be a finite price above 0, got {price}"
            ))
            .into());
        }
        Ok(self
            .inner
            .on_mark(symbol, price, at.unwrap_or_else(wall_clock))
            .map(Rule::as_str))
    }

    fn get_mark(&self, symbol: &str) -> Option<f64> {
        self.inner.book().mark(symbol)
    }

    fn marks(&self) -> HashMap<String, f64> {
        self.inner
            .book()
            .marks()
            .map(|(s, m)| (s.clone(), *m))
            .collect()
    }

    #[getter]
    fn state(&self) -> &'static str {
        self.inner.state().as_str()
    }

    fn set_reducing(&mut self, reducing: bool) {
        self.inner.set_reducing(reducing);
    }

    /// Latches the kill switch. False when it was engaged already (the first record stays).
    #[pyo3(signature = (actor, reason, at = None))]
    fn engage_kill_switch(&mut self, actor: String, reason: String, at: Option<f64>) -> bool {
        self.inner.engage_kill_switch(KillRecord {
            actor,
            reason,
            at: at.unwrap_or_else(wall_clock),
        })
    }

    /// Releases the kill switch; actor and reason are required. False when it was not engaged.
    #[pyo3(signature = (actor, reason, at = None))]
    fn reset_kill_switch(
        &mut self,
        actor: String,
        reason: String,
        at: Option<f64>,
    ) -> PyResult<bool> {
        Ok(self.inner.reset_kill_switch(KillRecord {
            actor,
            reason,
            at: at.unwrap_or_else(wall_clock),
        })?)
    }

    /// (actor, reason, at) of the engaged kill switch, or None.
    fn kill_switch(&self) -> Option<(String, String, f64)> {
        self.inner
            .control()
            .engaged()
            .map(|k| (k.actor.clone(), k.reason.clone(), k.at))
    }

    /// (actor, reason, at) of the last reset, or None.
    fn last_reset(&self) -> Option<(String, String, f64)> {
        self.inner
            .control()
            .last_reset()
            .map(|k| (k.actor.clone(), k.reason.clone(), k.at))
    }

    fn limits<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let l = self.inner.limits();
        let d = PyDict::new(py);
        d.set_item("max_position_size", l.max_position_size)?;
        d.set_item("max_order_notional", l.max_order_notional)?;
        d.set_item("portfolio_heat_limit", l.portfolio_heat_limit)?;
        d.set_item("max_daily_loss", l.max_daily_loss)?;
        d.set_item("max_drawdown", l.max_drawdown)?;
        d.set_item("price_collar", l.price_collar)?;
        d.set_item("auto_kill", l.auto_kill)?;
        Ok(d)
    }

    /// Changes any of the limits live; None leaves one as it is. All or nothing.
    #[pyo3(signature = (
        max_position_size = None, max_order_notional = None, portfolio_heat_limit = None,
        max_daily_loss = None, max_drawdown = None, price_collar = None, auto_kill = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn set_limits(
        &mut self,
        max_position_size: Option<f64>,
        max_order_notional: Option<f64>,
        portfolio_heat_limit: Option<f64>,
        max_daily_loss: Option<f64>,
        max_drawdown: Option<f64>,
        price_collar: Option<f64>,
        auto_kill: Option<bool>,
    ) -> PyResult<()> {
        let l = *self.inner.limits();
        let next = Limits {
            max_position_size: max_position_size.unwrap_or(l.max_position_size),
            max_order_notional: max_order_notional.unwrap_or(l.max_order_notional),
            portfolio_heat_limit: portfolio_heat_limit.unwrap_or(l.portfolio_heat_limit),
            max_daily_loss: max_daily_loss.unwrap_or(l.max_daily_loss),
            max_drawdown: max_drawdown.unwrap_or(l.max_drawdown),
            price_collar: price_collar.unwrap_or(l.price_collar),
            auto_kill: auto_kill.unwrap_or(l.auto_kill),
        };
        Ok(self.inner.set_limits(next)?)
    }

    /// (max_orders_per_minute, enabled).
    fn throttle(&self) -> (u32, bool) {
        let t = self.inner.throttle();
        (t.per_minute(), t.enabled())
    }

    #[pyo3(signature = (max_orders_per_minute, enabled, now = None))]
    fn set_throttle(
        &mut self,
        max_orders_per_minute: u32,
        enabled: bool,
        now: Option<f64>,
    ) -> PyResult<()> {
        let now = self.now(now);
        Ok(self
            .inner
            .set_throttle(max_orders_per_minute, enabled, now)?)
    }

    #[pyo3(signature = (now = None))]
    fn tokens_available(&self, now: Option<f64>) -> f64 {
        self.inner.throttle().available(self.now(now))
    }

    /// (qty, avg_entry, realized, unrealized, mark, stop_loss) of one symbol, or None.
    #[allow(clippy::type_complexity)]
    fn position(&self, symbol: &str) -> Option<(f64, f64, f64, f64, Option<f64>, Option<f64>)> {
        let mark = self.inner.book().mark(symbol);
        self.inner.position(symbol).map(|p| {
            (
                p.qty,
                p.avg_entry,
                p.realized,
                p.unrealized,
                mark,
                p.stop_loss,
            )
        })
    }

    /// [(symbol, qty, avg_entry, realized, unrealized, mark)] for every symbol ever traded.
    #[allow(clippy::type_complexity)]
    fn positions(&self) -> Vec<(String, f64, f64, f64, f64, Option<f64>)> {
        let book = self.inner.book();
        let mut out: Vec<_> = book
            .positions()
            .map(|(s, p)| {
                (
                    s.clone(),
                    p.qty,
                    p.avg_entry,
                    p.realized,
                    p.unrealized,
                    book.mark(s),
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// (buy_qty, sell_qty) resting on one symbol.
    fn exposure(&self, symbol: &str) -> (f64, f64) {
        let e = self.inner.exposure(symbol);
        (e.buy_qty, e.sell_qty)
    }

    /// [(client_order_id, symbol, side, remaining, price)] of every resting order.
    fn resting_orders(&self) -> Vec<(String, String, &'static str, f64, f64)> {
        let mut out: Vec<_> = self
            .inner
            .book()
            .resting()
            .map(|(id, r)| {
                (
                    id.clone(),
                    r.symbol.clone(),
                    r.side.as_str(),
                    r.remaining,
                    r.price,
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn account<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let b = self.inner.book();
        let d = PyDict::new(py);
        d.set_item("starting_cash", b.starting_cash())?;
        d.set_item("equity", b.equity())?;
        d.set_item("realized_pnl", b.realized())?;
        d.set_item("unrealized_pnl", b.unrealized())?;
        d.set_item("daily_pnl", b.daily_pnl())?;
        d.set_item("drawdown", b.drawdown())?;
        d.set_item("peak_equity", b.peak_equity())?;
        d.set_item("risk", b.risk())?;
        d.set_item("heat", b.heat())?;
        d.set_item("day", b.day())?;
        d.set_item("day_start_equity", b.day_start_equity())?;
        Ok(d)
    }

    /// Starts a new trading day (an integer that grows by one a day). False if unchanged.
    fn roll_day(&mut self, day: i64) -> bool {
        self.inner.roll_day(day)
    }

    /// Makes equity equal the broker's (live mode), keeping booked PnL; the day's PnL is
    /// measured from `day_start_equity` (Alpaca's last_equity).
    fn seed_equity(&mut self, equity: f64, day_start_equity: f64) -> PyResult<()> {
        if !(equity.is_finite() && day_start_equity.is_finite()) {
            return Err(EngineError::InvalidArgument(format!(
                "equity figures must be finite, got {equity} and {day_start_equity}"
            ))
            .into());
        }
        self.inner.seed_equity(equity, day_start_equity);
        Ok(())
    }

    fn restore_account(&mut self, peak_equity: f64, day: i64, day_start_equity: f64) {
        self.inner
            .restore_account(peak_equity, day, day_start_equity);
    }

    /// Puts back a resting order after a restart, with no check and no token.
    #[pyo3(signature = (client_order_id, symbol, side, qty, price, stop_loss = None, risk = 0.0))]
    #[allow(clippy::too_many_arguments)]
    fn restore_resting(
        &mut self,
        client_order_id: &str,
        symbol: String,
        side: &str,
        qty: f64,
        price: f64,
        stop_loss: Option<f64>,
        risk: f64,
    ) -> PyResult<()> {
        let resting = Resting {
            symbol,
            side: Side::parse(side)?,
            remaining: qty,
            price,
            stop_loss,
            risk,
        };
        self.inner.restore_resting(client_order_id, resting);
        Ok(())
    }

    /// Whether a client order id was accepted before.
    fn knows(&self, client_order_id: &str) -> bool {
        self.inner.knows(client_order_id)
    }

    /// Undoes an accept that went no further: exposure, id and throttle token are released.
    #[pyo3(signature = (client_order_id, liquidation = false))]
    fn revoke(&mut self, client_order_id: &str, liquidation: bool) -> bool {
        self.inner.revoke(client_order_id, liquidation)
    }

    /// Marks a client order id as used (recovery).
    fn remember(&mut self, client_order_id: &str) {
        self.inner.remember(client_order_id);
    }

    /// The rule a daily loss or drawdown breach would engage the kill switch for now, or None.
    fn breach(&self) -> Option<&'static str> {
        self.inner.breach().map(Rule::as_str)
    }
}

/// Whether a symbol is well formed: 1 to 16 of A-Z 0-9 . / -, starting with a letter.
#[pyfunction]
fn symbol_is_well_formed(symbol: &str) -> bool {
    crate::order::symbol_is_well_formed(symbol)
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Gate>()?;
    m.add_function(wrap_pyfunction!(symbol_is_well_formed, m)?)?;
    m.add("TradeEngineError", py.get_type::<TradeEngineError>())?;
    m.add(
        "InvalidArgumentError",
        py.get_type::<InvalidArgumentError>(),
    )?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("UnknownOrderError", py.get_type::<UnknownOrderError>())?;
    m.add("InvalidStateError", py.get_type::<InvalidStateError>())?;
    m.add(
        "RULES",
        Rule::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
    )?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
