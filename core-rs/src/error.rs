//! The one error type of the core. Expected outcomes (a rejected order) are values, see
//! [`crate::gate::Decision`]; these are misuse and bad configuration.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum EngineError {
    /// An argument that can never be valid: an unknown side, type or time in force string.
    InvalidArgument(String),
    /// A limit or throttle setting that is out of range; nothing was changed.
    InvalidConfig(String),
    /// An operation named an order the gate does not know.
    UnknownOrder(String),
    /// An operation that the current state forbids (a kill switch reset without a reason).
    InvalidState(String),
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            EngineError::InvalidConfig(m) => write!(f, "invalid configuration: {m}"),
            EngineError::UnknownOrder(m) => write!(f, "unknown order: {m}"),
            EngineError::InvalidState(m) => write!(f, "invalid state: {m}"),
        }
    }
}

impl std::error::Error for EngineError {}

pub type Result<T> = std::result::Result<T, EngineError>;
