//! tradeengine's hot path: every order is checked here, in one call, against the state that
//! every safety control of the service depends on. Pure Rust; the Python bindings live in
//! `python.rs` behind the `python` feature.

pub mod book;
pub mod error;
pub mod gate;
pub mod limits;
pub mod order;
pub mod state;
pub mod throttle;

#[cfg(feature = "python")]
mod python;
