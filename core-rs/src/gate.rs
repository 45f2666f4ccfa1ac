//! The gate: one call decides an order against everything the service knows — validation,
//! duplicates, the kill switch and trading state, the throttle, and the limits — and on
//! accept commits its effects (a throttle token, the reserved exposure, the client order id)
//! together. Fills, cancels and marks flow back in through the same object, so the state every
//! check reads is the state the last event left.

use crate::book::{Book, Exposure, Fill, HashSet, Position, Resting, QTY_EPSILON};
use crate::error::Result;
use crate::limits::{self, Limits};
use crate::order::{self, Order, OrderType, Reject, Rule};
use crate::state::{Control, KillRecord, TradingState};
use crate::throttle::Throttle;

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Accept,
    Reject(Reject),
}

impl Decision {
    pub fn is_accept(&self) -> bool {
        matches!(self, Decision::Accept)
    }
}

/// The actor recorded when a limit breach engages the kill switch by itself.
pub const SYSTEM_ACTOR: &str = "system";

#[derive(Debug, Clone)]
pub struct Gate {
    book: Book,
    throttle: Throttle,
    control: Control,
    limits: Limits,
    seen: HashSet<String>,
}

impl Gate {
    pub fn new(starting_cash: f64, limits: Limits, throttle: Throttle) -> Result<Gate> {
        limits.validate()?;
        Ok(Gate {
            book: Book::new(starting_cash),
            throttle,
            control: Control::default(),
            limits,
            seen: HashSet::default(),
        })
    }

    pub fn book(&self) -> &Book {
        &self.book
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    pub fn control(&self) -> &Control {
        &self.control
    }

    pub fn state(&self) -> TradingState {
        self.control.state()
    }

    /// Replaces the limits after validating them; on error nothing changes.
    pub fn set_limits(&mut self, limits: Limits) -> Result<()> {
        limits.validate()?;
        self.limits = limits;
        Ok(())
    }

    pub fn set_throttle(&mut self, per_minute: u32, enabled: bool, now: f64) -> Result<()> {
        self.throttle.reconfigure(per_minute, enabled, now)
    }

    pub fn set_reducing(&mut self, reducing: bool) {
        self.control.set_reducing(reducing);
    }

    pub fn engage_kill_switch(&mut self, record: KillRecord) -> bool {
        self.control.engage(record)
    }

    pub fn reset_kill_switch(&mut self, record: KillRecord) -> Result<bool> {
        self.control.reset(record)
    }

    /// Whether an order would only shrink its symbol's position, counting resting orders on
    /// the same side as if they had filled.
    pub fn reduces(&self, order: &Order) -> bool {
        let position = self.book.position_qty(&order.symbol);
        if position.abs() <= QTY_EPSILON || position.signum() == order.side.sign() {
            return false;
        }
        let pending = self.book.exposure(&order.symbol).on_side(order.side);
        order.qty + pending <= position.abs() + QTY_EPSILON
    }

    /// Decides an order at `now` (seconds, monotonic) and, on accept, commits its effects.
    pub fn check(&mut self, order: &Order, now: f64) -> Decision {
        match self.decide(order, now) {
            Ok((price, risk)) => {
                self.commit(
                    order.client_order_id.clone(),
                    order.symbol.clone(),
                    order,
                    price,
                    risk,
                );
                Decision::Accept
            }
            Err(reject) => Decision::Reject(reject),
        }
    }

    /// `check` for an order the caller gives away: its strings move into the book instead of
    /// being copied (batch checks allocate per order otherwise).
    pub fn check_owned(&mut self, mut order: Order, now: f64) -> Decision {
        match self.decide(&order, now) {
            Ok((price, risk)) => {
                let id = std::mem::take(&mut order.client_order_id);
                let symbol = std::mem::take(&mut order.symbol);
                self.commit(id, symbol, &order, price, risk);
                Decision::Accept
            }
            Err(reject) => Decision::Reject(reject),
        }
    }

    /// An accept's effects, all together: a throttle token, the id, the reserved exposure.
    fn commit(&mut self, id: String, symbol: String, order: &Order, price: f64, risk: f64) {
        if !order.liquidation {
            self.throttle.take();
        }
        self.seen.insert(id.clone());
        let resting = Resting {
            symbol,
            side: order.side,
            remaining: order.qty,
            price,
            stop_loss: order.stop_loss,
            risk,
        };
        self.book.reserve(id, resting);
    }

    /// The checks, in the order their rule is reported; on accept, the price the order's
    /// exposure is reckoned at and the heat it reserves.
    fn decide(&mut self, order: &Order, now: f64) -> std::result::Result<(f64, f64), Reject> {
        order::validate(order)?;
        if self.seen.contains(&order.client_order_id) {
            return Err(Reject::new(
                Rule::DuplicateClientOrderId,
                format!(
                    "client_order_id {:?} was used already",
                    order.client_order_id
                ),
            ));
        }
        let reduces = self.reduces(order);
        let mark = self.book.mark(&order.symbol);
        if order.liquidation {
            if !reduces {
                return Err(Reject::new(
                    Rule::LiquidationNotReducing,
                    "a liquidation order must only reduce its symbol's position",
                ));
            }
            let price = order
                .limit_price
                .or(order.stop_price)
                .or(mark)
                .unwrap_or(0.0);
            return Ok((price, 0.0));
        }
        match self.control.state() {
            TradingState::Halted => {
                let why = self.control.engaged().map_or("", |k| k.reason.as_str());
                return Err(Reject::new(
                    Rule::KillSwitch,
                    format!("kill switch engaged: {why}"),
                ));
            }
            TradingState::Reducing if !reduces => {
                return Err(Reject::new(
                    Rule::ReduceOnly,
                    "trading is in reduce-only mode: only orders that shrink a position pass",
                ));
            }
            _ => {}
        }
        if order.reduce_only && !reduces {
            return Err(Reject::new(
                Rule::ReduceOnly,
                "a reduce-only order must only shrink its symbol's position",
            ));
        }
        if let Err(wait) = self.throttle.check(now) {
            return Err(Reject {
                rule: Rule::Throttle,
                reason: format!(
                    "more than {} orders a minute; next order possible in {wait:.3} s",
                    self.throttle.per_minute()
                ),
                retry_after: Some(wait),
            });
        }
        let price = match order.order_type {
            OrderType::Market => mark.ok_or_else(|| {
                Reject::new(
                    Rule::NoMark,
                    format!(
                        "no market price for {}: a market order cannot be checked blind",
                        order.symbol
                    ),
                )
            })?,
            OrderType::Limit | OrderType::StopLimit => order.limit_price.unwrap_or_default(),
            OrderType::Stop => order.stop_price.unwrap_or_default(),
        };
        if let Some(mark) = mark {
            if let Some(p) = order.limit_price {
                limits::check_collar(self.limits.price_collar, "limit_price", p, mark)?;
            }
            if let Some(p) = order.stop_price {
                limits::check_collar(self.limits.price_collar, "stop_price", p, mark)?;
            }
        }
        let notional = order.qty * price;
        limits::check_order_notional(self.limits.max_order_notional, notional)?;
        if reduces {
            return Ok((price, 0.0));
        }
        limits::check_daily_loss(self.limits.max_daily_loss, self.book.daily_pnl())?;
        limits::check_drawdown(self.limits.max_drawdown, self.book.drawdown())?;
        limits::check_position_size(
            self.limits.max_position_size,
            self.book.position_qty(&order.symbol),
            self.book.exposure(&order.symbol).on_side(order.side),
            order.side,
            order.qty,
            price,
        )?;
        let risk = match order.stop_loss {
            Some(stop) => order.qty * (price - stop).abs(),
            None => notional,
        };
        limits::check_heat(
            self.limits.portfolio_heat_limit,
            self.book.risk(),
            risk,
            self.book.equity(),
        )?;
        Ok((price, risk))
    }

    /// Checks many orders at one `now`, in order, each seeing the effects of those before it.
    pub fn check_batch(&mut self, orders: Vec<Order>, now: f64) -> Vec<Decision> {
        self.seen.reserve(orders.len());
        self.book.reserve_capacity(orders.len());
        orders
            .into_iter()
            .map(|o| self.check_owned(o, now))
            .collect()
    }

    /// Books a fill. Returns the rule whose breach engaged the kill switch, if this fill did.
    pub fn on_fill(&mut self, fill: &Fill, at: f64) -> Option<Rule> {
        self.book.apply_fill(fill);
        self.auto_kill(at)
    }

    /// Rebuilds the book from journaled fills without engaging anything: the kill switch latch
    /// is restored from its own record.
    pub fn replay_fills(&mut self, fills: &[Fill]) {
        for fill in fills {
            self.book.apply_fill(fill);
        }
    }

    pub fn on_cancel(&mut self, client_order_id: &str) -> bool {
        self.book.cancel(client_order_id)
    }

    pub fn on_mark(&mut self, symbol: &str, price: f64, at: f64) -> Option<Rule> {
        self.book.set_mark(symbol, price);
        self.auto_kill(at)
    }

    pub fn roll_day(&mut self, day: i64) -> bool {
        self.book.roll_day(day)
    }

    pub fn seed_equity(&mut self, equity: f64, day_start_equity: f64) {
        self.book.seed_equity(equity, day_start_equity);
    }

    pub fn restore_account(&mut self, peak_equity: f64, day: i64, day_start_equity: f64) {
        self.book
            .restore_account(peak_equity, day, day_start_equity);
    }

    /// Puts back a resting order (recovery): reserves its exposure and remembers its id,
    /// without a throttle token or any check.
    pub fn restore_resting(&mut self, client_order_id: &str, resting: Resting) {
        self.seen.insert(client_order_id.to_owned());
        self.book.reserve(client_order_id.to_owned(), resting);
    }

    /// Whether a client order id was accepted before (it can never be used again).
    pub fn knows(&self, client_order_id: &str) -> bool {
        self.seen.contains(client_order_id)
    }

    /// Undoes the accept of an order that never went further (a risk plugin refused it, or
    /// the journal could not write it): releases its exposure, forgets its id and gives its
    /// throttle token back. False when the order was not resting.
    pub fn revoke(&mut self, client_order_id: &str, liquidation: bool) -> bool {
        if !self.book.cancel(client_order_id) {
            return false;
        }
        self.seen.remove(client_order_id);
        if !liquidation {
            self.throttle.give_back();
        }
        true
    }

    /// Remembers a client order id (recovery) so that it can never be used again.
    pub fn remember(&mut self, client_order_id: &str) {
        self.seen.insert(client_order_id.to_owned());
    }

    pub fn position(&self, symbol: &str) -> Option<&Position> {
        self.book.position(symbol)
    }

    pub fn exposure(&self, symbol: &str) -> Exposure {
        self.book.exposure(symbol)
    }

    /// The limit a breach of which would engage the kill switch now, if any.
    pub fn breach(&self) -> Option<Rule> {
        if self.book.daily_pnl() <= self.limits.max_daily_loss {
            Some(Rule::MaxDailyLoss)
        } else if self.book.drawdown() >= self.limits.max_drawdown {
            Some(Rule::MaxDrawdown)
        } else {
            None
        }
    }

    fn auto_kill(&mut self, at: f64) -> Option<Rule> {
        if !self.limits.auto_kill || self.control.state() == TradingState::Halted {
            return None;
        }
        let rule = self.breach()?;
        let reason = match rule {
            Rule::MaxDailyLoss => format!(
                "max_daily_loss breached: daily PnL {:.2} <= {:.2}",
                self.book.daily_pnl(),
                self.limits.max_daily_loss
            ),
            _ => format!(
                "max_drawdown breached: drawdown {:.4} >= {}",
                self.book.drawdown(),
                self.limits.max_drawdown
            ),
        };
        self.control.engage(KillRecord {
            actor: SYSTEM_ACTOR.to_owned(),
            reason,
            at,
        });
        Some(rule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order::Side;
    use proptest::prelude::*;

    fn gate() -> Gate {
        let limits = Limits {
            max_position_size: 10_000.0,
            ..Limits::default()
        };
        Gate::new(100_000.0, limits, Throttle::new(600, true, 0.0).unwrap()).unwrap()
    }

    fn rule(d: Decision) -> Option<Rule> {
        match d {
            Decision::Accept => None,
            Decision::Reject(r) => Some(r.rule),
        }
    }

    fn fill(g: &mut Gate, id: &str, side: Side, qty: f64, price: f64) -> Option<Rule> {
        g.on_fill(
            &Fill {
                client_order_id: id.into(),
                symbol: "AAPL".into(),
                side,
                qty,
                price,
                fee: 0.0,
            },
            0.0,
        )
    }

    #[test]
    fn market_orders_need_a_mark() {
        let mut g = gate();
        assert_eq!(
            rule(g.check(&Order::market("a", "AAPL", Side::Buy, 1.0), 0.0)),
            Some(Rule::NoMark)
        );
        g.on_mark("AAPL", 100.0, 0.0);
        assert_eq!(
            rule(g.check(&Order::market("b", "AAPL", Side::Buy, 1.0), 0.0)),
            None
        );
    }

    #[test]
    fn client_order_ids_are_used_once_even_after_a_reject() {
        let mut g = gate();
        g.on_mark("AAPL", 100.0, 0.0);
        assert_eq!(
            rule(g.check(&Order::market("a", "AAPL", Side::Buy, 1.0), 0.0)),
            None
        );
        assert_eq!(
            rule(g.check(&Order::market("a", "AAPL", Side::Buy, 1.0), 0.0)),
            Some(Rule::DuplicateClientOrderId)
        );
        // A rejected id is not burnt: the client may fix the order and send it again.
        assert_eq!(
            rule(g.check(&Order::market("b", "AAPL", Side::Buy, 1e6), 0.0)),
            Some(Rule::MaxPositionSize)
        );
        assert_eq!(
            rule(g.check(&Order::market("b", "AAPL", Side::Buy, 1.0), 0.0)),
            None
        );
    }

    #[test]
    fn a_revoked_order_leaves_no_trace() {
        let mut g =
            Gate::new(1e6, Limits::default(), Throttle::new(1, true, 0.0).unwrap()).unwrap();
        g.on_mark("AAPL", 100.0, 0.0);
        assert!(g
            .check(&Order::market("a", "AAPL", Side::Buy, 1.0), 0.0)
            .is_accept());
        assert!(g.knows("a"));
        assert!(g.revoke("a", false));
        assert!(!g.knows("a"));
        assert_eq!(g.exposure("AAPL").buy_qty, 0.0);
        assert!(g
            .check(&Order::market("a", "AAPL", Side::Buy, 1.0), 0.0)
            .is_accept());
        assert!(!g.revoke("zzz", false));
    }

    #[test]
    fn kill_switch_blocks_new_orders_but_never_liquidation() {
        let mut g = gate();
        g.on_mark("AAPL", 100.0, 0.0);
        assert!(g
            .check(&Order::market("a", "AAPL", Side::Buy, 10.0), 0.0)
            .is_accept());
        fill(&mut g, "a", Side::Buy, 10.0, 100.0);
        assert!(g.engage_kill_switch(KillRecord {
            actor: "ops".into(),
            reason: "test".into(),
            at: 0.0
        }));
        assert_eq!(
            rule(g.check(&Order::market("b", "AAPL", Side::Buy, 1.0), 0.0)),
            Some(Rule::KillSwitch)
        );
        assert_eq!(
            rule(g.check(&Order::market("c", "AAPL", Side::Sell, 1.0), 0.0)),
            Some(Rule::KillSwitch)
        );
        let mut liq = Order::market("d", "AAPL", Side::Sell, 10.0);
        liq.liquidation = true;
        assert!(g.check(&liq, 0.0).is_accept());
        let mut too_much = Order::market("e", "AAPL", Side::Sell, 1.0);
        too_much.liquidation = true;
        assert_eq!(
            rule(g.check(&too_much, 0.0)),
            Some(Rule::LiquidationNotReducing)
        );
    }

    #[test]
    fn reduce_only_mode_lets_reducing_orders_through() {
        let mut g = gate();
        g.on_mark("AAPL", 100.0, 0.0);
        g.check(&Order::market("a", "AAPL", Side::Buy, 10.0), 0.0);
        fill(&mut g, "a", Side::Buy, 10.0, 100.0);
        g.set_reducing(true);
        assert_eq!(
            rule(g.check(&Order::market("b", "AAPL", Side::Buy, 1.0), 0.0)),
            Some(Rule::ReduceOnly)
        );
        assert_eq!(
            rule(g.check(&Order::market("c", "AAPL", Side::Sell, 6.0), 0.0)),
            None
        );
        // 6 are resting already: 5 more would flip the position.
        assert_eq!(
            rule(g.check(&Order::market("d", "AAPL", Side::Sell, 5.0), 0.0)),
            Some(Rule::ReduceOnly)
        );
    }

    #[test]
    fn throttle_rejects_with_retry_after_and_rejections_cost_no_token() {
        let limits = Limits::default();
        let mut g = Gate::new(1e9, limits, Throttle::new(2, true, 0.0).unwrap()).unwrap();
        g.on_mark("AAPL", 1.0, 0.0);
        assert_eq!(
            rule(g.check(&Order::market("x", "AAPL", Side::Buy, 1e9), 0.0)),
            Some(Rule::MaxPositionSize)
        );
        assert!(g
            .check(&Order::market("a", "AAPL", Side::Buy, 1.0), 0.0)
            .is_accept());
        assert!(g
            .check(&Order::market("b", "AAPL", Side::Buy, 1.0), 0.0)
            .is_accept());
        match g.check(&Order::market("c", "AAPL", Side::Buy, 1.0), 0.0) {
            Decision::Reject(r) => {
                assert_eq!(r.rule, Rule::Throttle);
                assert!((r.retry_after.unwrap() - 30.0).abs() < 1e-9);
            }
            Decision::Accept => panic!("third order in a 2/minute bucket passed"),
        }
    }

    #[test]
    fn collar_and_order_notional() {
        let mut g = gate();
        g.on_mark("AAPL", 100.0, 0.0);
        assert_eq!(
            rule(g.check(&Order::limit("a", "AAPL", Side::Buy, 1.0, 1000.0), 0.0)),
            Some(Rule::PriceCollar)
        );
        g.set_limits(Limits {
            max_order_notional: 500.0,
            ..*g.limits()
        })
        .unwrap();
        assert_eq!(
            rule(g.check(&Order::limit("b", "AAPL", Side::Buy, 6.0, 100.0), 0.0)),
            Some(Rule::MaxOrderNotional)
        );
    }

    #[test]
    fn a_daily_loss_breach_engages_the_kill_switch_when_enabled() {
        let mut g = gate();
        g.roll_day(1);
        g.on_mark("AAPL", 100.0, 0.0);
        g.check(&Order::market("a", "AAPL", Side::Buy, 50.0), 0.0);
        assert_eq!(fill(&mut g, "a", Side::Buy, 50.0, 100.0), None);
        assert_eq!(g.on_mark("AAPL", 79.0, 5.0), Some(Rule::MaxDailyLoss));
        assert_eq!(g.state(), TradingState::Halted);
        let k = g.control().engaged().unwrap();
        assert_eq!((k.actor.as_str(), k.at), (SYSTEM_ACTOR, 5.0));
        assert!(k.reason.contains("max_daily_loss"));
    }

    #[test]
    fn without_auto_kill_a_breach_only_blocks_new_risk() {
        let mut g = gate();
        g.set_limits(Limits {
            auto_kill: false,
            ..*g.limits()
        })
        .unwrap();
        g.roll_day(1);
        g.on_mark("AAPL", 100.0, 0.0);
        g.check(&Order::market("a", "AAPL", Side::Buy, 50.0), 0.0);
        fill(&mut g, "a", Side::Buy, 50.0, 100.0);
        assert_eq!(g.on_mark("AAPL", 79.0, 0.0), None);
        assert_eq!(g.state(), TradingState::Active);
        assert_eq!(
            rule(g.check(&Order::market("b", "AAPL", Side::Buy, 1.0), 0.0)),
            Some(Rule::MaxDailyLoss)
        );
        assert_eq!(
            rule(g.check(&Order::market("c", "AAPL", Side::Sell, 50.0), 0.0)),
            None
        );
    }

    #[test]
    fn heat_counts_stops_and_resting_orders() {
        let mut g = gate();
        g.set_limits(Limits {
            max_position_size: f64::INFINITY,
            portfolio_heat_limit: 0.01,
            ..*g.limits()
        })
        .unwrap();
        g.on_mark("AAPL", 100.0, 0.0);
        // 1% of 100k is 1,000 at risk: 100 shares with a 10-dollar stop is exactly that.
        let mut o = Order::market("a", "AAPL", Side::Buy, 100.0);
        o.stop_loss = Some(90.0);
        assert!(g.check(&o, 0.0).is_accept());
        let mut o2 = Order::market("b", "AAPL", Side::Buy, 1.0);
        o2.stop_loss = Some(99.0);
        assert_eq!(rule(g.check(&o2, 0.0)), Some(Rule::PortfolioHeat));
        assert!(g.on_cancel("a"));
        assert!(g.check(&o2, 0.0).is_accept());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Submit(bool, u8, u8),
        Fill(usize, u8),
        Mark(u8),
        Cancel(usize),
        Kill,
        Reset,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (any::<bool>(), 1u8..50, 0u8..3).prop_map(|(b, q, t)| Op::Submit(b, q, t)),
            (0usize..64, 1u8..50).prop_map(|(i, q)| Op::Fill(i, q)),
            (50u8..200).prop_map(Op::Mark),
            (0usize..64).prop_map(Op::Cancel),
            Just(Op::Kill),
            Just(Op::Reset),
        ]
    }

    proptest! {
        #[test]
        fn invariants_hold_under_any_sequence(ops in proptest::collection::vec(op(), 1..120)) {
            let mut g = gate();
            g.on_mark("AAPL", 100.0, 0.0);
            let mut accepted: Vec<(String, Side, f64)> = Vec::new();
            for (n, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Submit(buy, qty, kind) => {
                        let side = if buy { Side::Buy } else { Side::Sell };
                        let id = format!("o{n}");
                        let mut o = Order::market(&id, "AAPL", side, f64::from(qty));
                        if kind == 1 { o.reduce_only = true; }
                        if kind == 2 { o.liquidation = true; }
                        let halted = g.state() == TradingState::Halted;
                        let d = g.check(&o, n as f64);
                        if halted && !o.liquidation {
                            prop_assert_eq!(rule(d.clone()), Some(Rule::KillSwitch));
                        }
                        if d.is_accept() { accepted.push((id, side, f64::from(qty))); }
                    }
                    Op::Fill(i, qty) => {
                        if let Some((id, side, _)) = accepted.get(i % accepted.len().max(1)).cloned() {
                            if let Some(r) = g.book().resting_order(&id) {
                                let q = f64::from(qty).min(r.remaining);
                                let mark = g.book().mark("AAPL").unwrap();
                                g.on_fill(&Fill { client_order_id: id, symbol: "AAPL".into(), side, qty: q, price: mark, fee: 0.0 }, 0.0);
                            }
                        }
                    }
                    Op::Mark(p) => { g.on_mark("AAPL", f64::from(p), 0.0); }
                    Op::Cancel(i) => {
                        if let Some((id, _, _)) = accepted.get(i % accepted.len().max(1)) { g.on_cancel(id); }
                    }
                    Op::Kill => { g.engage_kill_switch(KillRecord { actor: "t".into(), reason: "t".into(), at: 0.0 }); }
                    Op::Reset => { g.reset_kill_switch(KillRecord { actor: "t".into(), reason: "t".into(), at: 0.0 }).unwrap(); }
                }
                let resting: f64 = g.book().resting().map(|(_, r)| r.remaining).sum();
                let e = g.exposure("AAPL");
                prop_assert!((e.buy_qty + e.sell_qty - resting).abs() < 1e-6, "exposure equals resting orders");
                prop_assert!(g.book().risk() >= -1e-9);
            }
        }
    }
}
