//! The wasmgate ABI conformance suite: guest modules (WAT), cases (YAML data), an upstream,
//! the install file that wires them into a proxy, a client and the comparison of results.
//!
//! This crate does not depend on the proxy: the caller starts wasmgate on the install file
//! [`runner::Prepared::config_path`] names and hands the bound address to
//! [`runner::Prepared::run`]. [`export`] writes the guests and configurations for other
//! hosts, and [`runner::Prepared::run_target`] runs the cases against one.

#![forbid(unsafe_code)]

pub mod case;
pub mod chunks;
pub mod client;
pub mod export;
pub mod observe;
pub mod report;
pub mod runner;
pub mod sdk;
pub mod upstream;

pub use case::{Abi, Case};
pub use report::{CaseResult, Report};
pub use runner::{LogSource, MetricSource, Observers, Prepared, Slots, Target, ENGINES};
