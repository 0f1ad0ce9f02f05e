//! The common HTTP request/response model every wasmgate middleware works on,
//! and the plugin ABIs built on it.
//!
//! Built-in middlewares and WebAssembly plugins (whatever their ABI) all see
//! a request as a [`Request`] and answer with a [`Response`]; the chain that
//! runs them is described by [`Middleware`] and [`Next`]. Nothing here knows
//! about hyper's server, so that the ABI glue talks to an HTTP model and never
//! to server types; engines are reached only through `wasmgate-engines`.
//!
//! What both ABIs share (options, errors, the instance pool, traps, guest logs)
//! lives in [`guest`], which knows neither ABI; [`plugin`] loads a module and
//! picks its ABI.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod body;
pub mod error;
#[cfg(feature = "fault-injection")]
pub mod faults;
pub mod guest;
pub mod headers;
pub mod http_wasm;
pub mod middleware;
pub mod model;
pub mod plugin;
pub mod proxy_wasm;
#[cfg(test)]
mod test_util;

/// The engine layer this crate runs plugins on, for callers that inspect host tables.
pub use wasmgate_engines as engines;

pub use body::{Body, BodyError, BufferedBody};
pub use error::{BoxError, ErrorSource, ProxyError};
pub use guest::{AbiChoice, AbiKind, FailurePolicy, PluginError, PluginOptions};
pub use headers::Headers;
pub use middleware::{Endpoint, Middleware, Next};
pub use model::{Request, Response};
pub use plugin::{Engines, Plugin};
