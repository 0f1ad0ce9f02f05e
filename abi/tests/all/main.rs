//! The abi crate's integration tests, in one binary (as wasmtime does): each test file links
//! both engines, so one binary instead of one per file saves link time and disk.

/// Generates one test per engine, `NAME::wasmtime` and `NAME::wasmer`, for a case
/// `fn NAME(engine: EngineKind)`, so that each engine passes or fails on its own under the
/// same expectations. An `async fn` case takes the tokio test attribute it runs under,
/// `parity!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async NAME)`, so each
/// case keeps its runtime flavour.
macro_rules! parity {
    ($name:ident) => {
        mod $name {
            #[test]
            fn wasmtime() {
                super::$name(wasmgate_abi::plugin::EngineKind::Wasmtime);
            }
            #[test]
            fn wasmer() {
                super::$name(wasmgate_abi::plugin::EngineKind::Wasmer);
            }
        }
    };
    (#[$test:meta] async $name:ident) => {
        mod $name {
            #[$test]
            async fn wasmtime() {
                super::$name(wasmgate_abi::plugin::EngineKind::Wasmtime).await;
            }
            #[$test]
            async fn wasmer() {
                super::$name(wasmgate_abi::plugin::EngineKind::Wasmer).await;
            }
        }
    };
}

mod http_wasm_chain;
mod proxy_wasm_chain;
