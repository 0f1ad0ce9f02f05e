//! The common HTTP request/response model every wasmgate middleware works on.
