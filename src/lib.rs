//! wasmgate: a reverse proxy that runs WebAssembly plugins as chained HTTP middlewares.
//!
//! The crate is organised by concern: [`config`] reads YAML, [`snapshot`]
//! resolves it into routers, middleware chains and services, [`proxy`] serves
//! entry points and forwards to upstreams, [`reload`] swaps snapshots when the
//! routing file changes, and [`cli`] is the command line.

pub mod config;
pub mod middlewares;
pub mod proxy;
pub mod service;
