//! The abi crate's integration tests, in one binary (as wasmtime does): each test file links
//! both engines, so one binary instead of one per file saves link time and disk.

mod http_wasm_chain;
mod proxy_wasm_chain;
