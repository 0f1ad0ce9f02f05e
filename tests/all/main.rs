//! The root crate's integration tests, in one binary (one link of both engines, not one per
//! file; as wasmtime does). Each module was a test file of its own; run one with
//! `cargo test -p wasmgate --test all MODULE::`.
//!
//! Tests share the process: none may set process-wide state (environment, current directory,
//! a `tracing` subscriber of its own). The conformance runs' plugin log capture is
//! process-wide but keeps only its own plugins' lines. Injected host faults are process-wide
//! too, which is why `tests/conformance_broken_host.rs` is a binary of its own.

#[macro_use]
mod common;

mod certs;
mod cli;
mod conformance;
mod conformance_target;
mod edge;
mod faults;
mod fleet;
mod health;
mod http_wasm_plugins;
mod https_upstream;
mod inspect;
mod load;
mod malformed;
mod metrics;
mod plugin_declarations;
mod plugin_fetch;
mod plugin_memory;
mod proxy_wasm_plugins;
mod reload;
mod request_id;
mod routing;
mod timeouts;
mod tls;
mod upgrade;
mod vm_ids;
