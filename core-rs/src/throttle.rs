//! The order throttle: one token bucket for the whole service. Capacity is
//! MAX_ORDERS_PER_MINUTE and it refills continuously at capacity/60 tokens a second, so a full
//! bucket allows a burst of one minute's orders and then the steady rate. Time is passed in
//! (seconds on a monotonic clock) so that the bucket is deterministic under test.

use crate::error::{EngineError, Result};

pub const MAX_ORDERS_PER_MINUTE_CEILING: u32 = 10_000_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Throttle {
    per_minute: u32,
    enabled: bool,
    tokens: f64,
    last: f64,
}

impl Throttle {
    pub fn new(per_minute: u32, enabled: bool, now: f64) -> Result<Throttle> {
        check_rate(per_minute)?;
        Ok(Throttle {
            per_minute,
            enabled,
            tokens: f64::from(per_minute),
            last: now,
        })
    }

    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn capacity(&self) -> f64 {
        f64::from(self.per_minute)
    }

    fn rate(&self) -> f64 {
        f64::from(self.per_minute) / 60.0
    }

    fn refilled(&self, now: f64) -> f64 {
        if now > self.last {
            (self.tokens + (now - self.last) * self.rate()).min(self.capacity())
        } else {
            self.tokens
        }
    }

    fn refill(&mut self, now: f64) {
        self.tokens = self.refilled(now);
        if now > self.last {
            self.last = now;
        }
    }

    /// Tokens in the bucket at `now`, without taking any.
    pub fn available(&self, now: f64) -> f64 {
        self.refilled(now)
    }

    /// `Ok` when an order may pass at `now`, else `Err(seconds until the next token)`.
    /// Takes nothing: [`Throttle::take`] commits once the whole gate has accepted.
    pub fn check(&mut self, now: f64) -> std::result::Result<(), f64> {
        self.refill(now);
        if !self.enabled || self.tokens >= 1.0 {
            Ok(())
        } else {
            Err((1.0 - self.tokens) / self.rate())
        }
    }

    /// Takes one token for an accepted order; call only after `check` said `Ok` at the same `now`.
    pub fn take(&mut self) {
        if self.enabled {
            self.tokens -= 1.0;
        }
    }

    /// Gives back a token taken for an order that was then undone (never above capacity).
    pub fn give_back(&mut self) {
        if self.enabled {
            self.tokens = (self.tokens + 1.0).min(self.capacity());
        }
    }

    /// Changes the rate live. Tokens already earned are kept, up to the new capacity.
    pub fn reconfigure(&mut self, per_minute: u32, enabled: bool, now: f64) -> Result<()> {
        check_rate(per_minute)?;
        self.refill(now);
        self.per_minute = per_minute;
        self.enabled = enabled;
        self.tokens = self.tokens.min(self.capacity());
        Ok(())
    }
}

fn check_rate(per_minute: u32) -> Result<()> {
    if per_minute == 0 || per_minute > MAX_ORDERS_PER_MINUTE_CEILING {
        return Err(EngineError::InvalidConfig(format!(
            "max_orders_per_minute must be 1 to {MAX_ORDERS_PER_MINUTE_CEILING} (to stop trading, engage the kill switch), got {per_minute}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn drain(t: &mut Throttle, now: f64) -> usize {
        let mut n = 0;
        while t.check(now).is_ok() {
            t.take();
            n += 1;
            if n > 1_000_000 {
                break;
            }
        }
        n
    }

    #[test]
    fn a_full_bucket_allows_one_minute_of_orders_then_waits() {
        let mut t = Throttle::new(60, true, 0.0).unwrap();
        assert_eq!(drain(&mut t, 0.0), 60);
        let wait = t.check(0.0).unwrap_err();
        assert!((wait - 1.0).abs() < 1e-9, "{wait}");
        assert_eq!(drain(&mut t, 0.5), 0);
        assert_eq!(drain(&mut t, 1.0), 1);
        assert_eq!(drain(&mut t, 11.0), 10);
    }

    #[test]
    fn a_token_given_back_is_usable_again_but_never_over_capacity() {
        let mut t = Throttle::new(1, true, 0.0).unwrap();
        t.give_back();
        assert_eq!(t.available(0.0), 1.0);
        assert_eq!(drain(&mut t, 0.0), 1);
        t.give_back();
        assert_eq!(drain(&mut t, 0.0), 1);
    }

    #[test]
    fn refill_never_exceeds_capacity() {
        let mut t = Throttle::new(30, true, 0.0).unwrap();
        assert_eq!(drain(&mut t, 1e6), 30);
    }

    #[test]
    fn disabled_throttle_passes_everything_and_keeps_no_debt() {
        let mut t = Throttle::new(2, false, 0.0).unwrap();
        assert_eq!(drain(&mut t, 0.0), 1_000_001);
        t.reconfigure(2, true, 0.0).unwrap();
        assert_eq!(drain(&mut t, 0.0), 2);
    }

    #[test]
    fn reconfiguring_keeps_earned_tokens_up_to_the_new_capacity() {
        let mut t = Throttle::new(60, true, 0.0).unwrap();
        for _ in 0..50 {
            t.check(0.0).unwrap();
            t.take();
        }
        t.reconfigure(30, true, 0.0).unwrap();
        assert_eq!(t.available(0.0), 10.0);
        t.reconfigure(5, true, 0.0).unwrap();
        assert_eq!(t.available(0.0), 5.0);
        assert_eq!(t.per_minute(), 5);
    }

    #[test]
    fn zero_or_absurd_rates_are_refused_and_change_nothing() {
        assert!(Throttle::new(0, true, 0.0).is_err());
        let mut t = Throttle::new(10, true, 0.0).unwrap();
        assert!(t.reconfigure(0, true, 1.0).is_err());
        assert!(t
            .reconfigure(MAX_ORDERS_PER_MINUTE_CEILING + 1, true, 1.0)
            .is_err());
        assert_eq!(t.per_minute(), 10);
    }

    #[test]
    fn time_going_backwards_is_ignored() {
        let mut t = Throttle::new(60, true, 10.0).unwrap();
        drain(&mut t, 10.0);
        assert!(t.check(5.0).is_err());
        assert_eq!(drain(&mut t, 11.0), 1);
    }

    proptest! {
        #[test]
        fn never_more_than_capacity_plus_rate_times_elapsed(
            per_minute in 1u32..600,
            steps in proptest::collection::vec(0.0f64..5.0, 1..200),
        ) {
            let mut t = Throttle::new(per_minute, true, 0.0).unwrap();
            let mut now = 0.0;
            let mut passed = 0usize;
            for dt in steps {
                now += dt;
                if t.check(now).is_ok() { t.take(); passed += 1; }
                prop_assert!(t.available(now) >= 0.0);
            }
            let bound = f64::from(per_minute) + now * f64::from(per_minute) / 60.0;
            prop_assert!(passed as f64 <= bound + 1e-9);
        }
    }
}
