//! The proxy: entry points and the per-request path through router and chain.

pub mod edge;
pub mod framing;
pub mod handler;
pub mod internal;
pub mod server;
pub mod timeouts;
pub mod upgrade;

pub use server::{start, RunningServer, StartError};
