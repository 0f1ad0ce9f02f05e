//! What an http-wasm plugin and a proxy-wasm filter cost per request, on each engine, beside
//! the same chain without them.
//!
//! `cargo bench -p wasmgate-abi --bench http_wasm` (`-- proxy_wasm` for the filters only)

use std::sync::Arc;

use async_trait::async_trait;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{Method, StatusCode};
use wasmgate_abi::http_wasm::HttpWasmPlugin;
use wasmgate_abi::plugin::{EngineKind, PluginOptions};
use wasmgate_abi::proxy_wasm::{NoServices, ProxyWasmPlugin};
use wasmgate_abi::{Endpoint, Engines, Middleware, Next, ProxyError, Request, Response};
use wasmgate_engines::ModuleInfo;

struct Ok200;

#[async_trait]
impl Endpoint for Ok200 {
    async fn call(&self, _req: Request) -> Result<Response, ProxyError> {
        Ok(Response::new(StatusCode::OK))
    }
}

/// Does nothing but say "next": the host's fixed cost per request.
const NOOP: &str = r#"(module (memory (export "memory") 1)
  (func (export "handle_request") (result i64) (i64.const 1))
  (func (export "handle_response") (param i32 i32)))"#;

/// Reads the URI and sets a request header: a typical small plugin.
const HEADER: &str = r#"(module
  (import "http_handler" "get_uri" (func $uri (param i32 i32) (result i32)))
  (import "http_handler" "set_header_value" (func $shv (param i32 i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "x-plugin")
  (func (export "handle_request") (result i64)
    (local $n i32)
    (local.set $n (call $uri (i32.const 1024) (i32.const 2048)))
    (call $shv (i32.const 0) (i32.const 0) (i32.const 8) (i32.const 1024) (local.get $n))
    (i64.const 1))
  (func (export "handle_response") (param i32 i32)))"#;

/// proxy-wasm 0.2.1: header callbacks that continue and do nothing else (as
/// `bench/guests/pw_noop.wat`).
const PW_NOOP: &str = r#"(module
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 65536))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (local.get $p) (local.get $size)))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (i32.const 0)))"#;

fn request() -> Request {
    let mut r = Request::new(
        Method::GET,
        "/api/items?id=42".parse().unwrap(),
        "127.0.0.1:40000".parse().unwrap(),
    );
    r.headers = [("host", "demo.localhost"), ("accept", "*/*")]
        .into_iter()
        .collect();
    r
}

/// One worker, as the proxy runs under the benchmark harness (one core).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let engines = Engines::new(None);
    let endpoint = Ok200;
    let empty: Vec<Arc<dyn Middleware>> = vec![];
    c.bench_function("chain/no_plugin", |b| {
        b.to_async(&rt)
            .iter(|| async { Next::new(&empty, &endpoint).run(request()).await.unwrap() })
    });
    for engine in EngineKind::ALL {
        for (name, wat) in [("noop", NOOP), ("uri_to_header", HEADER)] {
            let wasm = wat::parse_str(wat).unwrap();
            let info = ModuleInfo::parse(&wasm).unwrap();
            let e = engines.get(engine).unwrap();
            let opts = PluginOptions {
                engine,
                ..PluginOptions::default()
            };
            let plugin = HttpWasmPlugin::load("bench", &wasm, &info, e.as_ref(), opts).unwrap();
            let chain: Vec<Arc<dyn Middleware>> =
                vec![Arc::new(plugin.middleware("bench", Vec::new()).unwrap())];
            c.bench_function(&format!("chain/{engine}/{name}"), |b| {
                b.to_async(&rt)
                    .iter(|| async { Next::new(&chain, &endpoint).run(request()).await.unwrap() })
            });
            // Ten in a row: what each link of a longer chain costs.
            let ten: Vec<Arc<dyn Middleware>> = (0..10)
                .map(|_| {
                    Arc::new(plugin.middleware("bench", Vec::new()).unwrap()) as Arc<dyn Middleware>
                })
                .collect();
            c.bench_function(&format!("chain/{engine}/{name}_x10"), |b| {
                b.to_async(&rt)
                    .iter(|| async { Next::new(&ten, &endpoint).run(request()).await.unwrap() })
            });
        }
    }
}

fn bench_proxy_wasm(c: &mut Criterion) {
    let rt = runtime();
    // Filters start their VMs on the runtime they are made in.
    let _in_rt = rt.enter();
    let engines = Engines::new(None);
    let endpoint = Ok200;
    let wasm = wat::parse_str(PW_NOOP).unwrap();
    let info = ModuleInfo::parse(&wasm).unwrap();
    for engine in EngineKind::ALL {
        let e = engines.get(engine).unwrap();
        let opts = PluginOptions {
            engine,
            ..PluginOptions::default()
        };
        let plugin = ProxyWasmPlugin::load("bench", &wasm, &info, e.as_ref(), opts).unwrap();
        let filter = || {
            Arc::new(
                plugin
                    .middleware("bench", Vec::new(), Arc::new(NoServices))
                    .unwrap(),
            ) as Arc<dyn Middleware>
        };
        let one = vec![filter()];
        c.bench_function(&format!("proxy_wasm/{engine}/noop"), |b| {
            b.to_async(&rt)
                .iter(|| async { Next::new(&one, &endpoint).run(request()).await.unwrap() })
        });
        let ten: Vec<Arc<dyn Middleware>> = (0..10).map(|_| filter()).collect();
        c.bench_function(&format!("proxy_wasm/{engine}/noop_x10"), |b| {
            b.to_async(&rt)
                .iter(|| async { Next::new(&ten, &endpoint).run(request()).await.unwrap() })
        });
    }
}

criterion_group!(benches, bench, bench_proxy_wasm);
criterion_main!(benches);
