//! The order as the gate sees it, and its static validation: everything that can be said about
//! an order without looking at the state of the service.

use crate::error::{EngineError, Result};
use std::fmt;

/// Largest quantity and price the gate accepts at all; configured limits are tighter.
pub const MAX_QTY: f64 = 1e9;
pub const MAX_PRICE: f64 = 1e9;
pub const MAX_SYMBOL_LEN: usize = 16;
/// Alpaca's limit for `client_order_id`.
pub const MAX_CLIENT_ORDER_ID_LEN: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    pub fn parse(s: &str) -> Result<Side> {
        match s {
            "buy" => Ok(Side::Buy),
            "sell" => Ok(Side::Sell),
            _ => Err(EngineError::InvalidArgument(format!(
                "side must be buy or sell, not {s:?}"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "buy",
            Side::Sell => "sell",
        }
    }

    /// +1 for a buy, -1 for a sell: the sign a fill of this side adds to a position.
    pub fn sign(self) -> f64 {
        match self {
            Side::Buy => 1.0,
            Side::Sell => -1.0,
        }
    }

    pub fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderType {
    Market,
    Limit,
    Stop,
    StopLimit,
}

impl OrderType {
    pub fn parse(s: &str) -> Result<OrderType> {
        match s {
            "market" => Ok(OrderType::Market),
            "limit" => Ok(OrderType::Limit),
            "stop" => Ok(OrderType::Stop),
            "stop_limit" => Ok(OrderType::StopLimit),
            _ => Err(EngineError::InvalidArgument(format!(
                "type must be market, limit, stop or stop_limit, not {s:?}"
            ))),
        }
    }

    pub fn needs_limit_price(self) -> bool {
        matches!(self, OrderType::Limit | OrderType::StopLimit)
    }

    pub fn needs_stop_price(self) -> bool {
        matches!(self, OrderType::Stop | OrderType::StopLimit)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeInForce {
    Day,
    Gtc,
    Ioc,
    Fok,
}

impl TimeInForce {
    pub fn parse(s: &str) -> Result<TimeInForce> {
        match s {
            "day" => Ok(TimeInForce::Day),
            "gtc" => Ok(TimeInForce::Gtc),
            "ioc" => Ok(TimeInForce::Ioc),
            "fok" => Ok(TimeInForce::Fok),
            _ => Err(EngineError::InvalidArgument(format!(
                "time_in_force must be day, gtc, ioc or fok, not {s:?}"
            ))),
        }
    }
}

/// Why an order was refused. The names are the `rule` of the API's error body, the label of
/// `risk_blocks_total{rule}` and the word after `RISK_BLOCK` in the log: they never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    SymbolInvalid,
    QtyInvalid,
    PriceInvalid,
    PriceMissing,
    PriceUnexpected,
    StopLossInvalid,
    ClientOrderIdInvalid,
    DuplicateClientOrderId,
    KillSwitch,
    ReduceOnly,
    LiquidationNotReducing,
    Throttle,
    NoMark,
    PriceCollar,
    MaxOrderNotional,
    MaxPositionSize,
    PortfolioHeat,
    MaxDailyLoss,
    MaxDrawdown,
}

impl Rule {
    pub const ALL: [Rule; 19] = [
        Rule::SymbolInvalid,
        Rule::QtyInvalid,
        Rule::PriceInvalid,
        Rule::PriceMissing,
        Rule::PriceUnexpected,
        Rule::StopLossInvalid,
        Rule::ClientOrderIdInvalid,
        Rule::DuplicateClientOrderId,
        Rule::KillSwitch,
        Rule::ReduceOnly,
        Rule::LiquidationNotReducing,
        Rule::Throttle,
        Rule::NoMark,
        Rule::PriceCollar,
        Rule::MaxOrderNotional,
        Rule::MaxPositionSize,
        Rule::PortfolioHeat,
        Rule::MaxDailyLoss,
        Rule::MaxDrawdown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::SymbolInvalid => "symbol_invalid",
            Rule::QtyInvalid => "qty_invalid",
            Rule::PriceInvalid => "price_invalid",
            Rule::PriceMissing => "price_missing",
            Rule::PriceUnexpected => "price_unexpected",
            Rule::StopLossInvalid => "stop_loss_invalid",
            Rule::ClientOrderIdInvalid => "client_order_id_invalid",
            Rule::DuplicateClientOrderId => "duplicate_client_order_id",
            Rule::KillSwitch => "kill_switch",
            Rule::ReduceOnly => "reduce_only",
            Rule::LiquidationNotReducing => "liquidation_not_reducing",
            Rule::Throttle => "throttle",
            Rule::NoMark => "no_mark",
            Rule::PriceCollar => "price_collar",
            Rule::MaxOrderNotional => "max_order_notional",
            Rule::MaxPositionSize => "max_position_size",
            Rule::PortfolioHeat => "portfolio_heat",
            Rule::MaxDailyLoss => "max_daily_loss",
            Rule::MaxDrawdown => "max_drawdown",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: the rule that refused and a sentence for the operator. For a throttled order,
/// `retry_after` is the number of seconds until the next token.
#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    pub rule: Rule,
    pub reason: String,
    pub retry_after: Option<f64>,
}

impl Reject {
    pub fn new(rule: Rule, reason: impl Into<String>) -> Reject {
        Reject {
            rule,
            reason: reason.into(),
            retry_after: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub client_order_id: String,
    pub symbol: String,
    pub side: Side,
    pub qty: f64,
    pub order_type: OrderType,
    pub limit_price: Option<f64>,
    pub stop_price: Option<f64>,
    pub time_in_force: TimeInForce,
    /// May only shrink the position of its symbol.
    pub reduce_only: bool,
    /// Sent by liquidate-all or a position close: never blocked by the kill switch, throttle or
    /// limits, but must reduce.
    pub liquidation: bool,
    /// The protective stop of the position this order opens; its risk for portfolio heat is
    /// |qty| x |entry - stop_loss| instead of the whole notional.
    pub stop_loss: Option<f64>,
}

impl Order {
    /// A plain market order; the other fields take their defaults.
    pub fn market(client_order_id: &str, symbol: &str, side: Side, qty: f64) -> Order {
        Order {
            client_order_id: client_order_id.to_owned(),
            symbol: symbol.to_owned(),
            side,
            qty,
            order_type: OrderType::Market,
            limit_price: None,
            stop_price: None,
            time_in_force: TimeInForce::Day,
            reduce_only: false,
            liquidation: false,
            stop_loss: None,
        }
    }

    pub fn limit(client_order_id: &str, symbol: &str, side: Side, qty: f64, price: f64) -> Order {
        Order {
            order_type: OrderType::Limit,
            limit_price: Some(price),
            ..Order::market(client_order_id, symbol, side, qty)
        }
    }
}

pub fn symbol_is_well_formed(symbol: &str) -> bool {
    let bytes = symbol.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_SYMBOL_LEN
        && bytes[0].is_ascii_uppercase()
        && bytes.iter().all(|b| {
            b.is_ascii_uppercase() || b.is_ascii_digit() || matches!(b, b'.' | b'/' | b'-')
        })
}

fn client_order_id_is_well_formed(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CLIENT_ORDER_ID_LEN
        && id.bytes().all(|b| b.is_ascii_graphic())
}

fn price_ok(p: f64) -> bool {
    p.is_finite() && p > 0.0 && p <= MAX_PRICE
}

/// Static validation: the order is well formed whatever the state of the service.
pub fn validate(order: &Order) -> std::result::Result<(), Reject> {
    if !client_order_id_is_well_formed(&order.client_order_id) {
        return Err(Reject::new(
            Rule::ClientOrderIdInvalid,
            format!(
                "client_order_id must be 1 to {MAX_CLIENT_ORDER_ID_LEN} printable ASCII characters without spaces"
            ),
        ));
    }
    if !symbol_is_well_formed(&order.symbol) {
        return Err(Reject::new(
            Rule::SymbolInvalid,
            format!(
                "symbol {:?} is not well formed: 1 to {MAX_SYMBOL_LEN} of A-Z 0-9 . / -, starting with a letter",
                order.symbol
            ),
        ));
    }
    if !(order.qty.is_finite() && order.qty > 0.0 && order.qty <= MAX_QTY) {
        return Err(Reject::new(
            Rule::QtyInvalid,
            format!(
                "qty must be a finite number above 0 and at most {MAX_QTY}, got {}",
                order.qty
            ),
        ));
    }
    check_price(
        "limit_price",
        order.limit_price,
        order.order_type.needs_limit_price(),
    )?;
    check_price(
        "stop_price",
        order.stop_price,
        order.order_type.needs_stop_price(),
    )?;
    if let Some(stop_loss) = order.stop_loss {
        if !price_ok(stop_loss) {
            return Err(Reject::new(
                Rule::StopLossInvalid,
                format!("stop_loss must be a finite price above 0, got {stop_loss}"),
            ));
        }
    }
    Ok(())
}

fn check_price(name: &str, value: Option<f64>, needed: bool) -> std::result::Result<(), Reject> {
    match (value, needed) {
        (None, true) => Err(Reject::new(
            Rule::PriceMissing,
            format!("{name} is required for this order type"),
        )),
        (Some(_), false) => Err(Reject::new(
            Rule::PriceUnexpected,
            format!("{name} is not allowed for this order type"),
        )),
        (Some(p), true) if !price_ok(p) => Err(Reject::new(
            Rule::PriceInvalid,
            format!("{name} must be a finite number above 0 and at most {MAX_PRICE}, got {p}"),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rule_of(order: &Order) -> Option<Rule> {
        validate(order).err().map(|r| r.rule)
    }

    #[test]
    fn a_plain_market_order_is_valid() {
        assert_eq!(rule_of(&Order::market("c1", "AAPL", Side::Buy, 10.0)), None);
        assert_eq!(
            rule_of(&Order::limit("c1", "BRK.B", Side::Sell, 0.5, 400.0)),
            None
        );
        assert_eq!(
            rule_of(&Order::market("c1", "BTC/USD", Side::Buy, 0.001)),
            None
        );
    }

    #[test]
    fn quantities_must_be_finite_and_positive() {
        for qty in [0.0, -1.0, f64::NAN, f64::INFINITY, 2e9] {
            assert_eq!(
                rule_of(&Order::market("c1", "AAPL", Side::Buy, qty)),
                Some(Rule::QtyInvalid)
            );
        }
    }

    #[test]
    fn symbols_must_be_well_formed() {
        for symbol in ["", "aapl", "1ABC", "AAPL ", "A;DROP", "ABCDEFGHIJKLMNOPQ"] {
            assert_eq!(
                rule_of(&Order::market("c1", symbol, Side::Buy, 1.0)),
                Some(Rule::SymbolInvalid),
                "{symbol:?}"
            );
        }
    }

    #[test]
    fn prices_follow_the_order_type() {
        let mut o = Order::market("c1", "AAPL", Side::Buy, 1.0);
        o.order_type = OrderType::Limit;
        assert_eq!(rule_of(&o), Some(Rule::PriceMissing));
        o.limit_price = Some(f64::NAN);
        assert_eq!(rule_of(&o), Some(Rule::PriceInvalid));
        o.limit_price = Some(100.0);
        assert_eq!(rule_of(&o), None);
        o.stop_price = Some(99.0);
        assert_eq!(rule_of(&o), Some(Rule::PriceUnexpected));
        o.order_type = OrderType::StopLimit;
        assert_eq!(rule_of(&o), None);
        o.order_type = OrderType::Stop;
        assert_eq!(rule_of(&o), Some(Rule::PriceUnexpected));
        o.limit_price = None;
        assert_eq!(rule_of(&o), None);
        o.stop_loss = Some(-1.0);
        assert_eq!(rule_of(&o), Some(Rule::StopLossInvalid));
    }

    #[test]
    fn client_order_ids_are_bounded_printable_ascii() {
        for id in ["", "has space", "é", &"x".repeat(129)] {
            assert_eq!(
                rule_of(&Order::market(id, "AAPL", Side::Buy, 1.0)),
                Some(Rule::ClientOrderIdInvalid)
            );
        }
    }

    #[test]
    fn parsing_names_the_allowed_values() {
        assert_eq!(Side::parse("sell"), Ok(Side::Sell));
        assert!(matches!(
            Side::parse("SELL"),
            Err(EngineError::InvalidArgument(_))
        ));
        assert_eq!(OrderType::parse("stop_limit"), Ok(OrderType::StopLimit));
        assert!(OrderType::parse("iceberg").is_err());
        assert_eq!(TimeInForce::parse("fok"), Ok(TimeInForce::Fok));
        assert!(TimeInForce::parse("opg").is_err());
    }

    #[test]
    fn rule_names_are_unique_snake_case() {
        let names: std::collections::HashSet<_> = Rule::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), Rule::ALL.len());
        assert!(names
            .iter()
            .all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
    }

    proptest! {
        #[test]
        fn any_valid_order_has_positive_finite_numbers(
            qty in proptest::num::f64::ANY,
            price in proptest::num::f64::ANY,
        ) {
            let o = Order::limit("c1", "AAPL", Side::Buy, qty, price);
            if validate(&o).is_ok() {
                prop_assert!(qty.is_finite() && qty > 0.0);
                prop_assert!(price.is_finite() && price > 0.0);
            }
        }

        #[test]
        fn validation_never_panics(symbol in ".{0,20}", id in ".{0,130}", qty in proptest::num::f64::ANY) {
            let _ = validate(&Order::market(&id, &symbol, Side::Sell, qty));
        }
    }
}
