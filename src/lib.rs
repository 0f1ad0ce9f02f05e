//! wasmgate: a reverse proxy that runs WebAssembly plugins as chained HTTP middlewares.
//!
//! The crate is organised by concern: [`config`] reads YAML, [`snapshot`]
//! resolves it into routers, middleware chains and services, [`gateway`] holds
//! the current snapshot, [`proxy`] serves entry points, [`reload`] swaps
//! snapshots when the routing file changes, [`provider`] reads routing from etcd and Redis
//! (Traefik's KV providers), [`logging`] sets up `tracing`, and [`cli`] is the command line.

#![forbid(unsafe_code)]

pub mod access_log;
pub mod cli;
pub mod config;
pub mod conformance;
pub mod gateway;
pub mod http_convert;
pub mod inspect;
pub mod logging;
pub mod metrics;
pub mod middlewares;
pub mod pem;
pub mod plugins;
pub mod provider;
pub mod proxy;
pub mod rawdata;
pub mod reload;
pub mod router;
pub mod service;
pub mod snapshot;
pub mod support_table;
pub mod tls;
