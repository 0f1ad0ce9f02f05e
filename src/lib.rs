//! wasmgate: a reverse proxy that runs WebAssembly plugins as chained HTTP middlewares.
