//! The proxy: entry points, the per-request path through router and chain, and the conversions at its edges.

pub mod convert;
pub mod edge;
pub mod framing;
pub mod handler;
pub mod server;
pub mod timeouts;

pub use server::{start, RunningServer, StartError};
