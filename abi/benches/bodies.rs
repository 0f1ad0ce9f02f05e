//! Bodies that arrive in many small chunks, through plugins that read or buffer them: the host
//! must collect them in linear time (2 MiB in 64-byte chunks once took 15 s of CPU).
//!
//! `cargo bench -p wasmgate-abi --bench bodies`

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{Method, StatusCode};
use http_body::Frame;
use wasmgate_abi::http_wasm::HttpWasmPlugin;
use wasmgate_abi::plugin::{EngineKind, PluginOptions};
use wasmgate_abi::proxy_wasm::{NoServices, ProxyWasmPlugin};
use wasmgate_abi::{Body, Endpoint, Engines, Middleware, Next, ProxyError, Request, Response};
use wasmgate_engines::ModuleInfo;

const TOTAL: usize = 2 << 20;
const CHUNK: usize = 64;

/// `TOTAL` bytes in `CHUNK`-byte frames, each ready at once (a fast client sending small pieces).
struct Chunks {
    left: usize,
    chunk: Bytes,
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        self.left -= 1;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.clone()))))
    }
}

/// Reads the whole request body, as an upstream would.
struct Drain;

#[async_trait]
impl Endpoint for Drain {
    async fn call(&self, req: Request) -> Result<Response, ProxyError> {
        let b = req.body.buffer(usize::MAX).await.unwrap();
        assert_eq!(b.data.len(), TOTAL);
        Ok(Response::new(StatusCode::OK))
    }
}

fn request() -> Request {
    let mut r = Request::new(
        Method::POST,
        "/upload".parse().unwrap(),
        "127.0.0.1:40000".parse().unwrap(),
    );
    r.body = Body::from_stream(Chunks {
        left: TOTAL / CHUNK,
        chunk: Bytes::from(vec![b'x'; CHUNK]),
    });
    r
}

/// http-wasm: `buffer_request` at start-up; reads the whole body in `handle_request`.
const HTTP_BUFFERING: &str = r#"(module
  (import "http_handler" "enable_features" (func $features (param i32) (result i32)))
  (import "http_handler" "read_body" (func $read (param i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (func (export "_start") (drop (call $features (i32.const 1))))
  (func (export "handle_request") (result i64)
    (block $done (loop $l
      (br_if $done (i64.ne (i64.shr_u (call $read (i32.const 0) (i32.const 0) (i32.const 4096))
                                       (i64.const 32)) (i64.const 0)))
      (br $l)))
    (i64.const 1))
  (func (export "handle_response") (param i32 i32)))"#;

/// http-wasm: turns `buffer_request` on for this request only, then passes the request on:
/// the host buffers the rest of the body for next and for a replay.
const HTTP_BUFFERING_PER_REQUEST: &str = r#"(module
  (import "http_handler" "enable_features" (func $features (param i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "handle_request") (result i64)
    (drop (call $features (i32.const 1)))
    (i64.const 1))
  (func (export "handle_response") (param i32 i32)))"#;

/// http-wasm: streams the body through 4 KiB reads, without `buffer_request`.
const HTTP_STREAMING: &str = r#"(module
  (import "http_handler" "read_body" (func $read (param i32 i32 i32) (result i64)))
  (import "http_handler" "write_body" (func $write (param i32 i32 i32)))
  (memory (export "memory") 1)
  (func (export "handle_request") (result i64)
    (local $r i64)
    (block $done (loop $l
      (local.set $r (call $read (i32.const 0) (i32.const 0) (i32.const 4096)))
      (call $write (i32.const 0) (i32.const 0) (i32.wrap_i64 (local.get $r)))
      (br_if $done (i64.ne (i64.shr_u (local.get $r) (i64.const 32)) (i64.const 0)))
      (br $l)))
    (i64.const 1))
  (func (export "handle_response") (param i32 i32)))"#;

/// proxy-wasm: pauses on every chunk until the end (buffering), reading the first 16 bytes of
/// the growing buffer each time.
const PW_BUFFERING: &str = r#"(module
  (import "env" "proxy_get_buffer_bytes" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 65536))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
    (global.get $heap))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_body") (param i32 i32) (param $eos i32) (result i32)
    (drop (call $get (i32.const 0) (i32.const 0) (i32.const 16) (i32.const 16) (i32.const 20)))
    (i32.eqz (local.get $eos))))"#;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let engines = Engines::new(None);
    let endpoint = Drain;
    let mut g = c.benchmark_group("bodies_2MiB_in_64B_chunks");
    g.sample_size(10);
    let empty: Vec<Arc<dyn Middleware>> = vec![];
    g.bench_function("no_plugin", |b| {
        b.to_async(&rt)
            .iter(|| async { Next::new(&empty, &endpoint).run(request()).await.unwrap() })
    });
    let engine = EngineKind::Wasmtime;
    let opts = PluginOptions {
        engine,
        ..PluginOptions::default()
    };
    let e = engines.get(engine).unwrap();
    for (name, wat) in [
        ("http_wasm_buffer_request", HTTP_BUFFERING),
        (
            "http_wasm_buffer_request_per_request",
            HTTP_BUFFERING_PER_REQUEST,
        ),
        ("http_wasm_read_and_write", HTTP_STREAMING),
        ("proxy_wasm_pause_each_chunk", PW_BUFFERING),
    ] {
        let wasm = wat::parse_str(wat).unwrap();
        let info = ModuleInfo::parse(&wasm).unwrap();
        let mw: Arc<dyn Middleware> = if name.starts_with("proxy") {
            let p = ProxyWasmPlugin::load("bench", &wasm, &info, e.as_ref(), opts.clone()).unwrap();
            let _guard = rt.enter();
            Arc::new(
                p.middleware("bench", Vec::new(), Arc::new(NoServices))
                    .unwrap(),
            )
        } else {
            let p = HttpWasmPlugin::load("bench", &wasm, &info, e.as_ref(), opts.clone()).unwrap();
            Arc::new(p.middleware("bench", Vec::new()).unwrap())
        };
        let chain = vec![mw];
        g.bench_function(name, |b| {
            b.to_async(&rt)
                .iter(|| async { Next::new(&chain, &endpoint).run(request()).await.unwrap() })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
