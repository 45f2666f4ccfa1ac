//! The trading state and the kill switch latch. HALTED is entered by engaging the kill switch
//! and left only by an explicit reset with a reason; REDUCING lets through only orders that
//! shrink a position. Cancels and liquidation orders are never blocked by either.

use crate::error::{EngineError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TradingState {
    Active,
    Reducing,
    Halted,
}

impl TradingState {
    pub fn as_str(self) -> &'static str {
        match self {
            TradingState::Active => "active",
            TradingState::Reducing => "reducing",
            TradingState::Halted => "halted",
        }
    }
}

/// Who changed the kill switch, why and when (seconds since the Unix epoch).
#[derive(Debug, Clone, PartialEq)]
pub struct KillRecord {
    pub actor: String,
    pub reason: String,
    pub at: f64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Control {
    reducing: bool,
    engaged: Option<KillRecord>,
    last_reset: Option<KillRecord>,
}

impl Control {
    pub fn state(&self) -> TradingState {
        if self.engaged.is_some() {
            TradingState::Halted
        } else if self.reducing {
            TradingState::Reducing
        } else {
            TradingState::Active
        }
    }

    pub fn engaged(&self) -> Option<&KillRecord> {
        self.engaged.as_ref()
    }

    pub fn last_reset(&self) -> Option<&KillRecord> {
        self.last_reset.as_ref()
    }

    pub fn reducing(&self) -> bool {
        self.reducing
    }

    pub fn set_reducing(&mut self, reducing: bool) {
        self.reducing = reducing;
    }

    /// Latches the kill switch. Returns false when it was engaged already: the first record
    /// (who stopped trading and why) is the one kept.
    pub fn engage(&mut self, record: KillRecord) -> bool {
        if self.engaged.is_some() {
            return false;
        }
        self.engaged = Some(record);
        true
    }

    /// Releases the latch. A reset must say who and why; resetting a released switch is a no-op
    /// that returns false.
    pub fn reset(&mut self, record: KillRecord) -> Result<bool> {
        if record.reason.trim().is_empty() || record.actor.trim().is_empty() {
            return Err(EngineError::InvalidState(
                "a kill switch reset needs an actor and a reason".to_owned(),
            ));
        }
        if self.engaged.take().is_none() {
            return Ok(false);
        }
        self.last_reset = Some(record);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rec(actor: &str, reason: &str) -> KillRecord {
        KillRecord {
            actor: actor.into(),
            reason: reason.into(),
            at: 1.0,
        }
    }

    #[test]
    fn kill_switch_latches_and_keeps_the_first_record() {
        let mut c = Control::default();
        assert_eq!(c.state(), TradingState::Active);
        assert!(c.engage(rec("alice", "runaway strategy")));
        assert!(!c.engage(rec("bob", "me too")));
        assert_eq!(c.engaged().unwrap().actor, "alice");
        assert_eq!(c.state(), TradingState::Halted);
    }

    #[test]
    fn reset_needs_a_reason_and_an_actor() {
        let mut c = Control::default();
        c.engage(rec("alice", "x"));
        assert!(c.reset(rec("admin", "  ")).is_err());
        assert!(c.reset(rec("", "fixed")).is_err());
        assert_eq!(c.state(), TradingState::Halted);
        assert_eq!(c.reset(rec("admin", "fixed")), Ok(true));
        assert_eq!(c.state(), TradingState::Active);
        assert_eq!(c.last_reset().unwrap().reason, "fixed");
        assert_eq!(c.reset(rec("admin", "again")), Ok(false));
    }

    #[test]
    fn halted_wins_over_reducing() {
        let mut c = Control::default();
        c.set_reducing(true);
        assert_eq!(c.state(), TradingState::Reducing);
        c.engage(rec("a", "b"));
        assert_eq!(c.state(), TradingState::Halted);
        c.reset(rec("a", "b")).unwrap();
        assert_eq!(c.state(), TradingState::Reducing);
    }

    proptest! {
        #[test]
        fn only_a_valid_reset_leaves_halted(ops in proptest::collection::vec(0u8..4, 0..50)) {
            let mut c = Control::default();
            for op in ops {
                let before = c.state();
                match op {
                    0 => { c.engage(rec("a", "r")); prop_assert_eq!(c.state(), TradingState::Halted); }
                    1 => { let _ = c.reset(rec("a", "")); prop_assert_eq!(c.state(), before); }
                    2 => { c.set_reducing(!c.reducing()); if before == TradingState::Halted { prop_assert_eq!(c.state(), TradingState::Halted); } }
                    _ => { c.reset(rec("a", "ok")).unwrap(); prop_assert!(c.state() != TradingState::Halted); }
                }
            }
        }
    }
}
