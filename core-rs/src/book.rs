//! The position book: positions per symbol with average entry and realized PnL, marks and
//! unrealized PnL, equity and its peak, the day's PnL, and the exposure reserved by resting
//! orders. Totals are kept incrementally so that a gate check reads them in O(1).

use crate::order::Side;
use std::collections::HashMap as StdHashMap;

/// foldhash: several times faster than SipHash on short keys, and randomly seeded.
pub type HashMap<K, V> = StdHashMap<K, V, foldhash::fast::RandomState>;
pub type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// Quantities closer to zero than this are flat: fills of fractional shares leave dust.
pub const QTY_EPSILON: f64 = 1e-9;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Position {
    /// Signed: long above zero, short below.
    pub qty: f64,
    pub avg_entry: f64,
    pub realized: f64,
    /// The protective stop of the position, from the order that opened it.
    pub stop_loss: Option<f64>,
    pub unrealized: f64,
    /// What the position puts at risk: |qty| x |entry - stop| with a stop, else its notional.
    pub risk: f64,
}

/// An order that has been accepted and may still fill.
#[derive(Debug, Clone, PartialEq)]
pub struct Resting {
    pub symbol: String,
    pub side: Side,
    pub remaining: f64,
    /// The price its notional and risk were reckoned at (the mark for a market order).
    pub price: f64,
    pub stop_loss: Option<f64>,
    /// Heat reserved for the remaining quantity (zero for an order that reduces).
    pub risk: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Exposure {
    pub buy_qty: f64,
    pub sell_qty: f64,
}

impl Exposure {
    pub fn on_side(&self, side: Side) -> f64 {
        match side {
            Side::Buy => self.buy_qty,
            Side::Sell => self.sell_qty,
        }
    }

    fn add(&mut self, side: Side, qty: f64) {
        let slot = match side {
            Side::Buy => &mut self.buy_qty,
            Side::Sell => &mut self.sell_qty,
        };
        *slot = (*slot + qty).max(0.0);
        if *slot <= QTY_EPSILON {
            *slot = 0.0;
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Fill {
    pub client_order_id: String,
    pub symbol: String,
    pub side: Side,
    pub qty: f64,
    pub price: f64,
    pub fee: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Book {
    starting_cash: f64,
    positions: HashMap<String, Position>,
    marks: HashMap<String, f64>,
    resting: HashMap<String, Resting>,
    exposure: HashMap<String, Exposure>,
    realized_total: f64,
    unrealized_total: f64,
    position_risk_total: f64,
    resting_risk_total: f64,
    peak_equity: f64,
    day: i64,
    day_start_equity: f64,
}

impl Book {
    pub fn new(starting_cash: f64) -> Book {
        Book {
            starting_cash,
            positions: HashMap::default(),
            marks: HashMap::default(),
            resting: HashMap::default(),
            exposure: HashMap::default(),
            realized_total: 0.0,
            unrealized_total: 0.0,
            position_risk_total: 0.0,
            resting_risk_total: 0.0,
            peak_equity: starting_cash,
            day: i64::MIN,
            day_start_equity: starting_cash,
        }
    }

    pub fn starting_cash(&self) -> f64 {
        self.starting_cash
    }

    pub fn equity(&self) -> f64 {
        self.starting_cash + self.realized_total + self.unrealized_total
    }

    pub fn realized(&self) -> f64 {
        self.realized_total
    }

    pub fn unrealized(&self) -> f64 {
        self.unrealized_total
    }

    pub fn peak_equity(&self) -> f64 {
        self.peak_equity
    }

    pub fn day(&self) -> i64 {
        self.day
    }

    pub fn day_start_equity(&self) -> f64 {
        self.day_start_equity
    }

    pub fn daily_pnl(&self) -> f64 {
        self.equity() - self.day_start_equity
    }

    /// Fraction below the equity peak, 0 at or above it.
    pub fn drawdown(&self) -> f64 {
        if self.peak_equity > 0.0 {
            ((self.peak_equity - self.equity()) / self.peak_equity).max(0.0)
        } else {
            0.0
        }
    }

    /// Risk of all positions and of resting orders that would add to them.
    pub fn risk(&self) -> f64 {
        self.position_risk_total + self.resting_risk_total
    }

    /// Portfolio heat: [`Book::risk`] as a fraction of equity (infinite with no equity).
    pub fn heat(&self) -> f64 {
        let equity = self.equity();
        if equity > 0.0 {
            self.risk() / equity
        } else if self.risk() > 0.0 {
            f64::INFINITY
        } else {
            0.0
        }
    }

    pub fn mark(&self, symbol: &str) -> Option<f64> {
        self.marks.get(symbol).copied()
    }

    pub fn marks(&self) -> impl Iterator<Item = (&String, &f64)> {
        self.marks.iter()
    }

    pub fn position(&self, symbol: &str) -> Option<&Position> {
        self.positions.get(symbol)
    }

    pub fn position_qty(&self, symbol: &str) -> f64 {
        self.positions.get(symbol).map_or(0.0, |p| p.qty)
    }

    /// Every symbol ever traded, flat ones included (their realized PnL stays).
    pub fn positions(&self) -> impl Iterator<Item = (&String, &Position)> {
        self.positions.iter()
    }

    pub fn exposure(&self, symbol: &str) -> Exposure {
        self.exposure.get(symbol).copied().unwrap_or_default()
    }

    pub fn resting(&self) -> impl Iterator<Item = (&String, &Resting)> {
        self.resting.iter()
    }

    pub fn resting_order(&self, client_order_id: &str) -> Option<&Resting> {
        self.resting.get(client_order_id)
    }

    pub fn set_mark(&mut self, symbol: &str, price: f64) {
        match self.marks.get_mut(symbol) {
            Some(m) => *m = price,
            None => {
                self.marks.insert(symbol.to_owned(), price);
            }
        }
        self.refresh(symbol);
    }

    /// Starts a new trading day: the day's PnL is measured from the equity now.
    pub fn roll_day(&mut self, day: i64) -> bool {
        if day == self.day {
            return false;
        }
        self.day = day;
        self.day_start_equity = self.equity();
        true
    }

    /// Makes equity equal a broker's figure (live mode), keeping the booked PnL: the cash is
    /// whatever the rest is. The day starts at `day_start_equity`, and the drawdown is measured
    /// from the higher of the two from now on: a peak reckoned on simulated cash means nothing
    /// for a broker account.
    pub fn seed_equity(&mut self, equity: f64, day_start_equity: f64) {
        self.starting_cash = equity - self.realized_total - self.unrealized_total;
        self.day_start_equity = day_start_equity;
        self.peak_equity = equity.max(day_start_equity);
    }

    /// Puts back the account figures a journal recorded (recovery).
    pub fn restore_account(&mut self, peak_equity: f64, day: i64, day_start_equity: f64) {
        self.peak_equity = peak_equity.max(self.equity());
        self.day = day;
        self.day_start_equity = day_start_equity;
    }

    /// Makes room for `additional` resting orders at once (batch checks), instead of growing
    /// the table step by step.
    pub fn reserve_capacity(&mut self, additional: usize) {
        self.resting.reserve(additional);
    }

    pub fn reserve(&mut self, client_order_id: String, resting: Resting) {
        if let Some(old) = self.resting.remove(&client_order_id) {
            self.unreserve(&old, old.remaining);
        }
        match self.exposure.get_mut(&resting.symbol) {
            Some(e) => e.add(resting.side, resting.remaining),
            None => {
                let mut e = Exposure::default();
                e.add(resting.side, resting.remaining);
                self.exposure.insert(resting.symbol.clone(), e);
            }
        }
        self.resting_risk_total += resting.risk;
        self.resting.insert(client_order_id, resting);
    }

    fn unreserve(&mut self, resting: &Resting, qty: f64) {
        if let Some(e) = self.exposure.get_mut(&resting.symbol) {
            e.add(resting.side, -qty);
        }
        let share = if resting.remaining > 0.0 {
            (qty / resting.remaining).min(1.0)
        } else {
            1.0
        };
        self.resting_risk_total = (self.resting_risk_total - resting.risk * share).max(0.0);
    }

    /// Releases `qty` of a resting order (it filled); the order leaves the book when done.
    fn release(&mut self, client_order_id: &str, qty: f64) {
        let Some(mut resting) = self.resting.remove(client_order_id) else {
            return;
        };
        let qty = qty.min(resting.remaining);
        self.unreserve(&resting, qty);
        let share = if resting.remaining > 0.0 {
            qty / resting.remaining
        } else {
            1.0
        };
        resting.risk -= resting.risk * share;
        resting.remaining -= qty;
        if resting.remaining > QTY_EPSILON {
            self.resting.insert(client_order_id.to_owned(), resting);
        }
    }

    /// Releases everything a resting order reserved. False when it was not resting.
    pub fn cancel(&mut self, client_order_id: &str) -> bool {
        match self.resting.remove(client_order_id) {
            Some(resting) => {
                self.unreserve(&resting, resting.remaining);
                true
            }
            None => false,
        }
    }

    /// Books a fill: position, average entry, realized PnL (net of the fee), marks, peak equity;
    /// releases what the order had reserved. The stop loss of the order that filled becomes
    /// the position's when the fill opens or adds to it.
    pub fn apply_fill(&mut self, fill: &Fill) {
        let stop_loss = self
            .resting
            .get(&fill.client_order_id)
            .and_then(|r| r.stop_loss);
        self.release(&fill.client_order_id, fill.qty);
        if !self.marks.contains_key(&fill.symbol) {
            self.marks.insert(fill.symbol.clone(), fill.price);
        }
        if !self.positions.contains_key(&fill.symbol) {
            self.positions
                .insert(fill.symbol.clone(), Position::default());
        }
        let Some(pos) = self.positions.get_mut(&fill.symbol) else {
            return;
        };
        let realized = book_fill(pos, fill.side, fill.qty, fill.price, stop_loss) - fill.fee;
        pos.realized += realized;
        self.realized_total += realized;
        self.refresh(&fill.symbol);
    }

    /// Recomputes one symbol's unrealized PnL and risk from its mark, keeping the totals.
    fn refresh(&mut self, symbol: &str) {
        let mark = self.marks.get(symbol).copied();
        if let Some(pos) = self.positions.get_mut(symbol) {
            let price = mark.unwrap_or(pos.avg_entry);
            let unrealized = pos.qty * (price - pos.avg_entry);
            let risk = match pos.stop_loss {
                Some(stop) => pos.qty.abs() * (pos.avg_entry - stop).abs(),
                None => pos.qty.abs() * price,
            };
            self.unrealized_total += unrealized - pos.unrealized;
            self.position_risk_total += risk - pos.risk;
            pos.unrealized = unrealized;
            pos.risk = risk;
        }
        let equity = self.equity();
        if equity > self.peak_equity {
            self.peak_equity = equity;
        }
    }
}

/// The position arithmetic of one fill; returns the realized PnL before fees.
fn book_fill(pos: &mut Position, side: Side, qty: f64, price: f64, stop_loss: Option<f64>) -> f64 {
    let signed = side.sign() * qty;
    let before = pos.qty;
    if before.abs() <= QTY_EPSILON || before.signum() == signed.signum() {
        let after = before + signed;
        pos.avg_entry = (before.abs() * pos.avg_entry + qty * price) / after.abs();
        pos.qty = after;
        if stop_loss.is_some() || before.abs() <= QTY_EPSILON {
            pos.stop_loss = stop_loss;
        }
        return 0.0;
    }
    let closing = qty.min(before.abs());
    let realized = closing * (price - pos.avg_entry) * before.signum();
    let after = before + signed;
    if after.abs() <= QTY_EPSILON {
        pos.qty = 0.0;
        pos.avg_entry = 0.0;
        pos.stop_loss = None;
    } else if after.signum() != before.signum() {
        pos.qty = after;
        pos.avg_entry = price;
        pos.stop_loss = stop_loss;
    } else {
        pos.qty = after;
    }
    realized
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fill(book: &mut Book, side: Side, qty: f64, price: f64) {
        book.apply_fill(&Fill {
            client_order_id: "x".into(),
            symbol: "AAPL".into(),
            side,
            qty,
            price,
            fee: 0.0,
        });
    }

    #[test]
    fn long_then_partial_close_realizes_against_the_average() {
        let mut b = Book::new(100_000.0);
        fill(&mut b, Side::Buy, 10.0, 100.0);
        fill(&mut b, Side::Buy, 10.0, 110.0);
        let p = b.position("AAPL").unwrap();
        assert_eq!((p.qty, p.avg_entry), (20.0, 105.0));
        fill(&mut b, Side::Sell, 5.0, 120.0);
        let p = b.position("AAPL").unwrap();
        assert_eq!((p.qty, p.avg_entry, p.realized), (15.0, 105.0, 75.0));
    }

    #[test]
    fn a_flip_through_zero_reopens_at_the_fill_price() {
        let mut b = Book::new(100_000.0);
        fill(&mut b, Side::Buy, 10.0, 100.0);
        fill(&mut b, Side::Sell, 15.0, 90.0);
        let p = b.position("AAPL").unwrap();
        assert_eq!((p.qty, p.avg_entry, p.realized), (-5.0, 90.0, -100.0));
        b.set_mark("AAPL", 80.0);
        assert_eq!(b.unrealized(), 50.0);
        assert_eq!(b.equity(), 100_000.0 - 100.0 + 50.0);
    }

    #[test]
    fn shorts_gain_when_the_price_falls() {
        let mut b = Book::new(1_000.0);
        fill(&mut b, Side::Sell, 2.0, 50.0);
        b.set_mark("AAPL", 40.0);
        assert_eq!(b.unrealized(), 20.0);
        fill(&mut b, Side::Buy, 2.0, 40.0);
        assert_eq!(
            (b.realized(), b.unrealized(), b.position_qty("AAPL")),
            (20.0, 0.0, 0.0)
        );
    }

    #[test]
    fn equity_peak_drawdown_and_the_day() {
        let mut b = Book::new(10_000.0);
        b.roll_day(1);
        fill(&mut b, Side::Buy, 10.0, 100.0);
        b.set_mark("AAPL", 200.0);
        assert_eq!(b.peak_equity(), 11_000.0);
        b.set_mark("AAPL", 90.0);
        assert_eq!(b.daily_pnl(), -100.0);
        assert!((b.drawdown() - 1_100.0 / 11_000.0).abs() < 1e-12);
        assert!(b.roll_day(2));
        assert!(!b.roll_day(2));
        assert_eq!(b.daily_pnl(), 0.0);
    }

    #[test]
    fn seeding_equity_keeps_the_booked_pnl() {
        let mut b = Book::new(100_000.0);
        fill(&mut b, Side::Buy, 10.0, 100.0);
        b.set_mark("AAPL", 110.0);
        b.seed_equity(50_000.0, 49_000.0);
        assert_eq!(b.equity(), 50_000.0);
        assert_eq!(b.daily_pnl(), 1_000.0);
        assert_eq!(b.unrealized(), 100.0);
        assert_eq!(b.peak_equity(), 50_000.0);
        assert_eq!(b.drawdown(), 0.0);
    }

    #[test]
    fn resting_orders_reserve_and_release_exposure() {
        let mut b = Book::new(10_000.0);
        let r = Resting {
            symbol: "AAPL".into(),
            side: Side::Buy,
            remaining: 10.0,
            price: 100.0,
            stop_loss: Some(95.0),
            risk: 50.0,
        };
        b.reserve("o1".into(), r);
        assert_eq!(b.exposure("AAPL").buy_qty, 10.0);
        assert_eq!(b.risk(), 50.0);
        b.apply_fill(&Fill {
            client_order_id: "o1".into(),
            symbol: "AAPL".into(),
            side: Side::Buy,
            qty: 4.0,
            price: 100.0,
            fee: 1.0,
        });
        assert_eq!(b.exposure("AAPL").buy_qty, 6.0);
        // 6 resting x 5 risk + the 4-share position with its 95 stop.
        assert!((b.risk() - (30.0 + 20.0)).abs() < 1e-9);
        assert_eq!(b.realized(), -1.0);
        assert!(b.cancel("o1"));
        assert!(!b.cancel("o1"));
        assert_eq!(b.exposure("AAPL").buy_qty, 0.0);
        assert!((b.risk() - 20.0).abs() < 1e-9);
    }

    proptest! {
        #[test]
        fn equity_is_cash_plus_realized_plus_marked_positions(
            fills in proptest::collection::vec((any::<bool>(), 1u32..100, 1u32..1000, 0usize..3), 1..60),
            marks in proptest::collection::vec(1u32..1000, 3),
        ) {
            let symbols = ["AAA", "BBB", "CCC"];
            let mut b = Book::new(50_000.0);
            let mut net = [0.0f64; 3];
            for (buy, qty, price, s) in fills {
                let side = if buy { Side::Buy } else { Side::Sell };
                net[s] += side.sign() * f64::from(qty);
                b.apply_fill(&Fill { client_order_id: "x".into(), symbol: symbols[s].into(), side, qty: f64::from(qty), price: f64::from(price), fee: 0.0 });
            }
            for (i, m) in marks.iter().enumerate() {
                b.set_mark(symbols[i], f64::from(*m));
            }
            let mut unrealized = 0.0;
            for (i, s) in symbols.iter().enumerate() {
                let q = b.position_qty(s);
                prop_assert!((q - net[i]).abs() < 1e-6, "position equals the sum of fills");
                if let Some(p) = b.position(s) {
                    unrealized += p.qty * (f64::from(marks[i]) - p.avg_entry);
                }
            }
            prop_assert!((b.unrealized() - unrealized).abs() < 1e-6);
            prop_assert!((b.equity() - (50_000.0 + b.realized() + unrealized)).abs() < 1e-6);
            prop_assert!(b.peak_equity() >= b.equity() - 1e-9);
            prop_assert!(b.drawdown() >= 0.0);
        }

        #[test]
        fn round_trip_at_one_price_realizes_nothing(qty in 1u32..1000, price in 1u32..10_000) {
            let mut b = Book::new(0.0);
            fill(&mut b, Side::Buy, f64::from(qty), f64::from(price));
            fill(&mut b, Side::Sell, f64::from(qty), f64::from(price));
            prop_assert_eq!(b.realized(), 0.0);
            prop_assert_eq!(b.position_qty("AAPL"), 0.0);
        }
    }
}
