//! Risk limits and the pure checks behind them. A limit set to infinity (negative infinity for
//! the daily loss) is off. Every check takes the numbers it needs and names its rule.

use crate::error::{EngineError, Result};
use crate::order::{Reject, Rule, Side};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// MAX_POSITION_SIZE: largest absolute notional (USD) of one symbol's position, counting
    /// resting orders on the same side worst case.
    pub max_position_size: f64,
    /// Largest notional of one order (USD).
    pub max_order_notional: f64,
    /// PORTFOLIO_HEAT_LIMIT: largest fraction of equity at risk over all positions and resting
    /// orders.
    pub portfolio_heat_limit: f64,
    /// MAX_DAILY_LOSS: negative USD; new risk is refused once today's PnL is at or below it.
    pub max_daily_loss: f64,
    /// MAX_DRAWDOWN: fraction of the equity peak; new risk is refused once reached.
    pub max_drawdown: f64,
    /// Fat-finger collar: largest relative distance of a limit or stop price from the mark.
    pub price_collar: f64,
    /// KILL_SWITCH_ENABLED: a daily loss or drawdown breach engages the kill switch.
    pub auto_kill: bool,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_position_size: 10_000.0,
            max_order_notional: f64::INFINITY,
            portfolio_heat_limit: 0.25,
            max_daily_loss: -1_000.0,
            max_drawdown: 0.10,
            price_collar: 0.10,
            auto_kill: true,
        }
    }
}

impl Limits {
    pub fn validate(&self) -> Result<()> {
        let positive = |name: &str, v: f64| {
            if v.is_nan() || v <= 0.0 {
                Err(EngineError::InvalidConfig(format!(
                    "{name} must be above 0, got {v}"
                )))
            } else {
                Ok(())
            }
        };
        positive("max_position_size", self.max_position_size)?;
        positive("max_order_notional", self.max_order_notional)?;
        positive("portfolio_heat_limit", self.portfolio_heat_limit)?;
        positive("price_collar", self.price_collar)?;
        positive("max_drawdown", self.max_drawdown)?;
        if self.max_drawdown.is_finite() && self.max_drawdown > 1.0 {
            return Err(EngineError::InvalidConfig(format!(
                "max_drawdown is a fraction of the equity peak (0.10 is 10%), at most 1, got {}",
                self.max_drawdown
            )));
        }
        if self.max_daily_loss.is_nan() || self.max_daily_loss >= 0.0 {
            return Err(EngineError::InvalidConfig(format!(
                "max_daily_loss is a loss in USD and must be negative (e.g. -1000.0), got {}",
                self.max_daily_loss
            )));
        }
        Ok(())
    }
}

pub fn check_order_notional(limit: f64, notional: f64) -> std::result::Result<(), Reject> {
    if notional > limit {
        return Err(Reject::new(
            Rule::MaxOrderNotional,
            format!("order notional {notional:.2} is above max_order_notional {limit:.2}"),
        ));
    }
    Ok(())
}

/// Worst-case position after this order: the position plus every resting order on the order's
/// side, plus the order itself.
pub fn check_position_size(
    limit: f64,
    position_qty: f64,
    resting_same_side_qty: f64,
    side: Side,
    qty: f64,
    price: f64,
) -> std::result::Result<(), Reject> {
    let worst = position_qty + side.sign() * (resting_same_side_qty + qty);
    let grows_away_from_flat = worst * side.sign() > 0.0;
    let notional = worst.abs() * price;
    if grows_away_from_flat && notional > limit {
        return Err(Reject::new(
            Rule::MaxPositionSize,
            format!(
                "worst-case position notional {notional:.2} (position {position_qty}, resting {resting_same_side_qty}, order {qty}) is above max_position_size {limit:.2}"
            ),
        ));
    }
    Ok(())
}

pub fn check_heat(
    limit: f64,
    risk_now: f64,
    order_risk: f64,
    equity: f64,
) -> std::result::Result<(), Reject> {
    let total = risk_now + order_risk;
    if equity <= 0.0 || total / equity > limit {
        let heat = if equity > 0.0 {
            total / equity
        } else {
            f64::INFINITY
        };
        return Err(Reject::new(
            Rule::PortfolioHeat,
            format!(
                "portfolio heat would be {heat:.4} of equity {equity:.2}, above the limit {limit}"
            ),
        ));
    }
    Ok(())
}

pub fn check_daily_loss(limit: f64, daily_pnl: f64) -> std::result::Result<(), Reject> {
    if daily_pnl <= limit {
        return Err(Reject::new(
            Rule::MaxDailyLoss,
            format!("daily PnL {daily_pnl:.2} has reached max_daily_loss {limit:.2}"),
        ));
    }
    Ok(())
}

pub fn check_drawdown(limit: f64, drawdown: f64) -> std::result::Result<(), Reject> {
    if drawdown >= limit {
        return Err(Reject::new(
            Rule::MaxDrawdown,
            format!("drawdown {drawdown:.4} from the equity peak has reached max_drawdown {limit}"),
        ));
    }
    Ok(())
}

pub fn check_collar(
    limit: f64,
    name: &str,
    price: f64,
    mark: f64,
) -> std::result::Result<(), Reject> {
    let distance = (price - mark).abs() / mark;
    if distance > limit {
        return Err(Reject::new(
            Rule::PriceCollar,
            format!(
                "{name} {price} is {:.1}% from the mark {mark}, above the collar of {:.1}%",
                distance * 100.0,
                limit * 100.0
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert!(Limits::default().validate().is_ok());
        let bad = [
            Limits {
                max_daily_loss: 500.0,
                ..Limits::default()
            },
            Limits {
                max_drawdown: 10.0,
                ..Limits::default()
            },
            Limits {
                max_position_size: 0.0,
                ..Limits::default()
            },
            Limits {
                portfolio_heat_limit: f64::NAN,
                ..Limits::default()
            },
            Limits {
                price_collar: -0.1,
                ..Limits::default()
            },
        ];
        for l in bad {
            assert!(
                matches!(l.validate(), Err(EngineError::InvalidConfig(_))),
                "{l:?}"
            );
        }
        let off = Limits {
            max_position_size: f64::INFINITY,
            max_daily_loss: f64::NEG_INFINITY,
            max_drawdown: f64::INFINITY,
            ..Limits::default()
        };
        assert!(off.validate().is_ok());
    }

    #[test]
    fn position_size_counts_resting_orders_on_the_same_side() {
        assert!(check_position_size(10_000.0, 0.0, 0.0, Side::Buy, 50.0, 200.0).is_ok());
        assert!(check_position_size(10_000.0, 0.0, 1.0, Side::Buy, 50.0, 200.0).is_err());
        assert!(check_position_size(10_000.0, 40.0, 10.0, Side::Buy, 1.0, 200.0).is_err());
        // Selling out of a long that is over the limit is always allowed.
        assert!(check_position_size(10_000.0, 100.0, 0.0, Side::Sell, 60.0, 200.0).is_ok());
        // A sell that flips into a short too big is not.
        assert!(check_position_size(10_000.0, 10.0, 0.0, Side::Sell, 70.0, 200.0).is_err());
    }

    #[test]
    fn daily_loss_and_drawdown_trip_at_the_limit() {
        assert!(check_daily_loss(-1000.0, -999.99).is_ok());
        assert_eq!(
            check_daily_loss(-1000.0, -1000.0).unwrap_err().rule,
            Rule::MaxDailyLoss
        );
        assert!(check_drawdown(0.1, 0.0999).is_ok());
        assert_eq!(
            check_drawdown(0.1, 0.1).unwrap_err().rule,
            Rule::MaxDrawdown
        );
    }

    #[test]
    fn heat_refuses_new_risk_with_no_equity() {
        assert!(check_heat(0.25, 0.0, 100.0, 0.0).is_err());
        assert!(check_heat(0.25, 10_000.0, 15_000.0, 100_000.0).is_ok());
        assert!(check_heat(0.25, 10_000.0, 15_001.0, 100_000.0).is_err());
    }

    #[test]
    fn collar_is_relative_to_the_mark() {
        assert!(check_collar(0.1, "limit_price", 109.0, 100.0).is_ok());
        assert_eq!(
            check_collar(0.1, "limit_price", 1000.0, 100.0)
                .unwrap_err()
                .rule,
            Rule::PriceCollar
        );
    }

    proptest! {
        #[test]
        fn a_reducing_order_never_breaks_position_size(
            pos in 1.0f64..1e6, frac in 0.0f64..1.0, price in 0.01f64..1e4,
        ) {
            // Selling at most the position can only bring it towards flat.
            prop_assert!(check_position_size(1.0, pos, 0.0, Side::Sell, pos * frac, price).is_ok());
            prop_assert!(check_position_size(1.0, -pos, 0.0, Side::Buy, pos * frac, price).is_ok());
        }
    }
}
