//! Built-in middlewares. Each is one link of a chain (see [`wasmgate_abi::Middleware`]).

mod headers;
mod strip_prefix;

pub use headers::HeadersMiddleware;
pub use strip_prefix::StripPrefixMiddleware;
