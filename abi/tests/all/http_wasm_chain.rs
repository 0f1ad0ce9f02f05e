//! http-wasm guests (WAT) run as middlewares in a real chain, on both engines:
//! phases, short-circuit, isError, traps in each phase, pool reuse and pinning.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{Method, StatusCode};
use wasmgate_abi::guest::FAILED_MIDDLEWARE_HEADER;
use wasmgate_abi::http_wasm::{HttpWasmMiddleware, HttpWasmPlugin};
use wasmgate_abi::plugin::{EngineKind, FailurePolicy, PluginOptions};
use wasmgate_abi::{Endpoint, Engines, Middleware, Next, ProxyError, Request, Response};
use wasmgate_engines::ModuleInfo;

/// Upstream stand-in: counts calls, fails with 502 on `x-fail`, may be slow.
struct Upstream {
    calls: AtomicUsize,
    delay: Duration,
}

#[async_trait]
impl Endpoint for Upstream {
    async fn call(&self, req: Request) -> Result<Response, ProxyError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        if req.headers.contains("x-fail") {
            return Err(ProxyError::bad_gateway("upstream refused"));
        }
        let mut r = Response::text(StatusCode::OK, format!("upstream saw {}", req.uri));
        for (n, v) in req.headers.iter() {
            r.headers
                .append(format!("echo-{n}"), bytes::Bytes::copy_from_slice(v));
        }
        Ok(r)
    }
}

fn upstream(delay: Duration) -> Arc<Upstream> {
    Arc::new(Upstream {
        calls: AtomicUsize::new(0),
        delay,
    })
}

fn middleware(
    engine: EngineKind,
    wat: &str,
    config: &[u8],
    opts: PluginOptions,
) -> Arc<HttpWasmMiddleware> {
    let wasm = wat::parse_str(wat).unwrap();
    let info = ModuleInfo::parse(&wasm).unwrap();
    let engines = Engines::new(None);
    let e = engines.get(engine).unwrap();
    let plugin = HttpWasmPlugin::load(
        "test",
        &wasm,
        &info,
        e.as_ref(),
        PluginOptions { engine, ..opts },
    )
    .unwrap();
    Arc::new(plugin.middleware("test-mw", config.to_vec()).unwrap())
}

async fn run(
    mw: &Arc<HttpWasmMiddleware>,
    up: &Upstream,
    headers: &[(&str, &str)],
) -> Result<Response, ProxyError> {
    let mut req = Request::new(
        Method::GET,
        "/path?q=1".parse().unwrap(),
        "127.0.0.1:4000".parse().unwrap(),
    );
    for (n, v) in headers {
        req.headers.append(n.to_string(), v.to_string());
    }
    let chain: Vec<Arc<dyn Middleware>> = vec![mw.clone()];
    Next::new(&chain, up).run(req).await
}

async fn body(resp: Response) -> String {
    String::from_utf8(resp.body.buffer(1 << 20).await.unwrap().data.to_vec()).unwrap()
}

/// Traps on `x-trap-req` / `x-trap-resp`, answers itself on `x-stop`, checks that handle_response
/// gets its own request's ctx (pinning), and reports the previous is_error in `x-last-error`.
const PHASES: &str = r#"(module
  (import "http_handler" "get_header_values" (func $ghv (param i32 i32 i32 i32 i32) (result i64)))
  (import "http_handler" "set_header_value" (func $shv (param i32 i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (global $count (mut i32) (i32.const 0))
  (global $last (mut i32) (i32.const 0))
  (global $last_err (mut i32) (i32.const 0))
  (data (i32.const 0) "x-trap-req")
  (data (i32.const 16) "x-trap-resp")
  (data (i32.const 32) "x-stop")
  (data (i32.const 48) "x-last-error")
  (data (i32.const 64) "01")
  (func $has (param $name i32) (param $len i32) (result i32)
    (i64.ne (call $ghv (i32.const 0) (local.get $name) (local.get $len) (i32.const 1024) (i32.const 0)) (i64.const 0)))
  (func (export "handle_request") (result i64)
    (if (call $has (i32.const 0) (i32.const 10)) (then unreachable))
    (call $shv (i32.const 0) (i32.const 48) (i32.const 12) (i32.add (i32.const 64) (global.get $last_err)) (i32.const 1))
    (global.set $count (i32.add (global.get $count) (i32.const 1)))
    (global.set $last (global.get $count))
    (if (call $has (i32.const 32) (i32.const 6)) (then (return (i64.shl (i64.const 7) (i64.const 32)))))
    (i64.or (i64.shl (i64.extend_i32_u (global.get $count)) (i64.const 32)) (i64.const 1)))
  (func (export "handle_response") (param $ctx i32) (param $err i32)
    (if (i32.ne (local.get $ctx) (global.get $last)) (then unreachable))
    (global.set $last_err (local.get $err))
    (if (call $has (i32.const 16) (i32.const 11)) (then unreachable))))"#;

fn opts(pool: usize) -> PluginOptions {
    PluginOptions {
        pool_size: pool,
        ..PluginOptions::default()
    }
}

async fn phases_short_circuit_and_traps_in_each_phase(engine: EngineKind) {
    let mw = middleware(engine, PHASES, b"", opts(2));
    let up = upstream(Duration::ZERO);
    let r = run(&mw, &up, &[]).await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{engine}");
    assert_eq!(
        r.headers.get("echo-x-last-error"),
        Some(&b"0"[..]),
        "{engine}"
    );
    assert_eq!(body(r).await, "upstream saw /path?q=1");
    assert_eq!(up.calls.load(Ordering::SeqCst), 1);

    // next = 0 with ctx bits set: the guest's (empty 200) response is final, upstream skipped.
    let r = run(&mw, &up, &[("x-stop", "1")]).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(body(r).await, "");
    assert_eq!(
        up.calls.load(Ordering::SeqCst),
        1,
        "{engine}: upstream must be skipped"
    );

    // A trap in handle_request (failurePolicy closed, the default): one 503 naming the
    // middleware, the instance is discarded, the next request is fine.
    let r = run(&mw, &up, &[("x-trap-req", "1")]).await.unwrap();
    assert_closed(r, engine).await;
    assert_eq!(mw.pool().discarded(), 1);
    assert_eq!(run(&mw, &up, &[]).await.unwrap().status, StatusCode::OK);

    // A trap in handle_response: the upstream ran, the client still gets one 503.
    let before = up.calls.load(Ordering::SeqCst);
    let r = run(&mw, &up, &[("x-trap-resp", "1")]).await.unwrap();
    assert_closed(r, engine).await;
    assert_eq!(up.calls.load(Ordering::SeqCst), before + 1);
    assert_eq!(mw.pool().discarded(), 2);
    assert_eq!(run(&mw, &up, &[]).await.unwrap().status, StatusCode::OK);
}
parity!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async phases_short_circuit_and_traps_in_each_phase
);

async fn handle_response_sees_is_error_when_next_fails(engine: EngineKind) {
    // One instance, so the next request lands on the instance that saw the error.
    let mw = middleware(engine, PHASES, b"", opts(1));
    let up = upstream(Duration::ZERO);
    let e = run(&mw, &up, &[("x-fail", "1")]).await.unwrap_err();
    assert_eq!(
        e.status,
        StatusCode::BAD_GATEWAY,
        "{engine}: the upstream error passes through"
    );
    let r = run(&mw, &up, &[]).await.unwrap();
    assert_eq!(
        r.headers.get("echo-x-last-error"),
        Some(&b"1"[..]),
        "{engine}"
    );
    let r = run(&mw, &up, &[]).await.unwrap();
    assert_eq!(
        r.headers.get("echo-x-last-error"),
        Some(&b"0"[..]),
        "{engine}"
    );
}
parity!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async handle_response_sees_is_error_when_next_fails
);

async fn instances_are_pinned_reused_and_bounded_under_concurrency(engine: EngineKind) {
    let capped = PluginOptions {
        max_instances: Some(4),
        ..opts(4)
    };
    let mw = middleware(engine, PHASES, b"", capped);
    let up = upstream(Duration::from_millis(20));
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let (mw, up) = (mw.clone(), up.clone());
        tasks.push(tokio::spawn(async move {
            run(&mw, &up, &[]).await.map(|r| r.status)
        }));
    }
    for t in tasks {
        // A handle_response on another instance than its handle_request would trap (ctx check).
        assert_eq!(t.await.unwrap().unwrap(), StatusCode::OK, "{engine}");
    }
    assert!(
        mw.pool().created() <= 4,
        "{engine}: {} instances",
        mw.pool().created()
    );
    assert_eq!(mw.pool().discarded(), 0);
    assert_eq!(mw.pool().in_use(), 0, "{engine}: every instance returned");
}
parity!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async instances_are_pinned_reused_and_bounded_under_concurrency
);

async fn an_exhausted_pool_makes_requests_wait_then_503(engine: EngineKind) {
    let short = PluginOptions {
        pool_size: 1,
        max_instances: Some(1),
        pool_wait: Duration::from_millis(100),
        ..PluginOptions::default()
    };
    let mw = middleware(engine, PHASES, b"", short);
    let up = upstream(Duration::from_millis(600));
    let first = {
        let (mw, up) = (mw.clone(), up.clone());
        tokio::spawn(async move { run(&mw, &up, &[]).await.map(|r| r.status) })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let e = run(&mw, &up, &[]).await.unwrap_err();
    assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE, "{engine}");
    assert_eq!(first.await.unwrap().unwrap(), StatusCode::OK);
    assert_eq!(mw.pool().created(), 1);

    // With a longer wait the second request is served after the first.
    let patient = PluginOptions {
        pool_size: 1,
        max_instances: Some(1),
        pool_wait: Duration::from_secs(5),
        ..PluginOptions::default()
    };
    let mw = middleware(engine, PHASES, b"", patient);
    let a = {
        let (mw, up) = (mw.clone(), up.clone());
        tokio::spawn(async move { run(&mw, &up, &[]).await.map(|r| r.status) })
    };
    let b = run(&mw, &up, &[]).await.unwrap().status;
    assert_eq!(b, StatusCode::OK);
    assert_eq!(a.await.unwrap().unwrap(), StatusCode::OK);
}
parity!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async an_exhausted_pool_makes_requests_wait_then_503
);

async fn waiters_for_a_full_pool_are_all_woken_under_churn(engine: EngineKind) {
    // Two instances, 32 tasks leasing them back to back: every give-back races with requests
    // that are about to wait. A wake-up lost there would leave a request waiting out
    // `pool_wait` into a 503.
    let capped = PluginOptions {
        max_instances: Some(2),
        pool_wait: Duration::from_secs(10),
        ..opts(2)
    };
    let mw = middleware(engine, PHASES, b"", capped);
    let up = upstream(Duration::ZERO);
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (mw, up) = (mw.clone(), up.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                let status = run(&mw, &up, &[]).await.map(|r| r.status);
                assert_eq!(status.unwrap(), StatusCode::OK);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(up.calls.load(Ordering::SeqCst), 32 * 25, "{engine}");
    assert!(
        mw.pool().created() <= 2,
        "{engine}: {}",
        mw.pool().created()
    );
    assert_eq!(mw.pool().in_use(), 0, "{engine}");
}
parity!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async waiters_for_a_full_pool_are_all_woken_under_churn
);

async fn without_a_cap_the_pool_grows_for_a_burst_then_keeps_pool_size_warm(engine: EngineKind) {
    // Two warm instances, no cap: 12 slow requests at once all run, none waits.
    let mw = middleware(engine, PHASES, b"", opts(2));
    let up = upstream(Duration::from_millis(300));
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let (mw, up) = (mw.clone(), up.clone());
        tasks.push(tokio::spawn(async move {
            run(&mw, &up, &[]).await.map(|r| r.status)
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), StatusCode::OK, "{engine}");
    }
    assert_eq!(
        mw.pool().created(),
        12,
        "{engine}: one instance per request in flight"
    );
    assert_eq!(mw.pool().in_use(), 0, "{engine}");
    // The burst is over: only poolSize instances stay warm.
    assert_eq!(mw.pool().idle(), 2, "{engine}");
}
parity!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async without_a_cap_the_pool_grows_for_a_burst_then_keeps_pool_size_warm
);

/// Answers with its configuration as the body, status 201 and a header; enables
/// buffer_response in its start section; `_start` exits with proc_exit(0).
const CONFIG_ANSWER: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (import "http_handler" "enable_features" (func $ef (param i32) (result i32)))
  (import "http_handler" "get_config" (func $cfg (param i32 i32) (result i32)))
  (import "http_handler" "write_body" (func $wb (param i32 i32 i32)))
  (import "http_handler" "set_status_code" (func $status (param i32)))
  (import "http_handler" "set_header_value" (func $shv (param i32 i32 i32 i32 i32)))
  (import "http_handler" "get_status_code" (func $gstatus (result i32)))
  (memory (export "memory") 1)
  (global $features (mut i32) (i32.const 0))
  (data (i32.const 0) "x-guest")
  (data (i32.const 16) "yes")
  (func $init (global.set $features (call $ef (i32.const 2))))
  (start $init)
  (func (export "_start") (call $exit (i32.const 0)))
  (func (export "handle_request") (result i64)
    (local $n i32)
    (if (i32.ne (global.get $features) (i32.const 2)) (then unreachable))
    (if (i32.ne (call $gstatus) (i32.const 200)) (then unreachable))
    (local.set $n (call $cfg (i32.const 1024) (i32.const 4096)))
    (call $wb (i32.const 1) (i32.const 1024) (local.get $n))
    (call $status (i32.const 201))
    (call $shv (i32.const 1) (i32.const 0) (i32.const 7) (i32.const 16) (i32.const 3))
    (i64.const 0)))"#;

async fn config_reaches_the_guest_and_a_guest_built_response_is_sent(engine: EngineKind) {
    let mw = middleware(engine, CONFIG_ANSWER, b"raw config \x00\xff bytes", opts(2));
    let up = upstream(Duration::ZERO);
    let r = run(&mw, &up, &[]).await.unwrap();
    assert_eq!(r.status, StatusCode::CREATED, "{engine}");
    assert_eq!(r.headers.get("x-guest"), Some(&b"yes"[..]));
    let data = r.body.buffer(1024).await.unwrap().data;
    assert_eq!(&data[..], b"raw config \x00\xff bytes");
    assert_eq!(up.calls.load(Ordering::SeqCst), 0);
}
parity!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async config_reaches_the_guest_and_a_guest_built_response_is_sent
);

fn load_errors_name_what_is_wrong(engine: EngineKind) {
    let engines = Engines::new(None);
    let e = engines.get(engine).unwrap();
    let load = |wat: &str| {
        let wasm = wat::parse_str(wat).unwrap();
        let info = ModuleInfo::parse(&wasm).unwrap();
        HttpWasmPlugin::load("t", &wasm, &info, e.as_ref(), PluginOptions::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    assert!(load(r#"(module (memory (export "memory") 1))"#).contains("neither"));
    assert!(load(
        r#"(module (memory (export "memory") 1) (func (export "handle_request") (result i32) (i32.const 1)))"#
    )
    .contains("export `handle_request` has type"));
    assert!(
        load(r#"(module (func (export "handle_request") (result i64) (i64.const 1)))"#)
            .contains("memory")
    );
}
parity!(load_errors_name_what_is_wrong);

/// Sets response headers before next and has no handle_response.
const HEADERS_BEFORE_NEXT: &str = r#"(module
  (import "http_handler" "set_header_value" (func $shv (param i32 i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "x-from-guest")
  (data (i32.const 16) "set-before-next")
  (data (i32.const 32) "content-type")
  (data (i32.const 48) "text/guest")
  (func (export "handle_request") (result i64)
    (call $shv (i32.const 1) (i32.const 0) (i32.const 12) (i32.const 16) (i32.const 15))
    (call $shv (i32.const 1) (i32.const 32) (i32.const 12) (i32.const 48) (i32.const 10))
    (i64.const 1)))"#;

async fn response_headers_set_before_next_are_merged_into_the_response(engine: EngineKind) {
    let mw = middleware(engine, HEADERS_BEFORE_NEXT, b"", opts(1));
    let up = upstream(Duration::ZERO);
    let r = run(&mw, &up, &[]).await.unwrap();
    assert_eq!(up.calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        r.headers.get("x-from-guest"),
        Some(&b"set-before-next"[..]),
        "{engine}"
    );
    // The guest's value replaces next's for the same name.
    let types: Vec<_> = r.headers.get_all("content-type").collect();
    assert_eq!(types, vec![&b"text/guest"[..]], "{engine}");
    // The body streams through untouched without buffer_response.
    assert_eq!(body(r).await, "upstream saw /path?q=1");
}
parity!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async response_headers_set_before_next_are_merged_into_the_response
);

async fn a_request_dropped_before_handle_response_discards_its_instance(engine: EngineKind) {
    let mw = middleware(engine, PHASES, b"", opts(1));
    // The upstream is slow: the request is dropped (a client gone) while next runs,
    // between handle_request and handle_response.
    let slow = upstream(Duration::from_secs(5));
    let dropped = tokio::time::timeout(Duration::from_millis(100), run(&mw, &slow, &[])).await;
    assert!(
        dropped.is_err(),
        "{engine}: the request should still be in flight"
    );
    assert_eq!(mw.pool().in_use(), 0, "{engine}");
    assert_eq!(
        mw.pool().discarded(),
        1,
        "{engine}: an instance that never got handle_response must not serve again"
    );
    // The next request gets a fresh instance and works.
    let up = upstream(Duration::ZERO);
    assert_eq!(run(&mw, &up, &[]).await.unwrap().status, StatusCode::OK);
    assert_eq!(mw.pool().created(), 2, "{engine}");
}
parity!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async a_request_dropped_before_handle_response_discards_its_instance
);

/// Reads the request body during handle_request, never waiting for it: with `x-read-some`
/// one read of at most 4 bytes, with `x-read-all` reads of at most 7 bytes until eof. Tells
/// how many bytes it read in the request header `x-guest-read`, then calls next.
const READER: &str = r#"(module
  (import "http_handler" "get_header_values" (func $ghv (param i32 i32 i32 i32 i32) (result i64)))
  (import "http_handler" "read_body" (func $rb (param i32 i32 i32) (result i64)))
  (import "http_handler" "set_header_value" (func $shv (param i32 i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "x-read-all")
  (data (i32.const 16) "x-read-some")
  (data (i32.const 32) "x-guest-read")
  (func $has (param $name i32) (param $len i32) (result i32)
    (i64.ne (call $ghv (i32.const 0) (local.get $name) (local.get $len) (i32.const 1024) (i32.const 0)) (i64.const 0)))
  ;; Writes $n in decimal ending at 2064; returns where it starts.
  (func $itoa (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (i32.const 2064))
    (loop $digit
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p) (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (br_if $digit (i32.ne (local.get $n) (i32.const 0))))
    (local.get $p))
  (func (export "handle_request") (result i64)
    (local $r i64) (local $total i32) (local $p i32)
    (if (call $has (i32.const 16) (i32.const 11))
      (then
        (local.set $r (call $rb (i32.const 0) (i32.const 4096) (i32.const 4)))
        (local.set $total (i32.wrap_i64 (local.get $r)))))
    (if (call $has (i32.const 0) (i32.const 10))
      (then
        (loop $more
          (local.set $r (call $rb (i32.const 0) (i32.const 4096) (i32.const 7)))
          (local.set $total (i32.add (local.get $total) (i32.wrap_i64 (local.get $r))))
          (br_if $more (i64.eqz (i64.shr_u (local.get $r) (i64.const 32)))))))
    (local.set $p (call $itoa (local.get $total)))
    (call $shv (i32.const 0) (i32.const 32) (i32.const 12) (local.get $p) (i32.sub (i32.const 2064) (local.get $p)))
    (i64.const 1)))"#;

/// A request body fed chunk by chunk from a channel: it ends when the sender is dropped.
struct ChanBody(tokio::sync::mpsc::Receiver<bytes::Bytes>);

impl http_body::Body for ChanBody {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(http_body::Frame::data(c))))
    }
}

/// Answers with the body it received, and the guest's `x-guest-read` header as `echo-read`.
struct BodyEcho;

#[async_trait]
impl Endpoint for BodyEcho {
    async fn call(&self, req: Request) -> Result<Response, ProxyError> {
        let read = req.headers.get("x-guest-read").map(<[u8]>::to_vec);
        let data = req.body.buffer(1 << 20).await.unwrap().data;
        let mut r = Response::text(StatusCode::OK, data);
        if let Some(v) = read {
            r.headers.append("echo-read", v);
        }
        Ok(r)
    }
}

async fn run_body(
    mw: &Arc<HttpWasmMiddleware>,
    header: Option<&str>,
    body: wasmgate_abi::Body,
) -> Result<Response, ProxyError> {
    let mut req = Request::new(
        Method::POST,
        "/upload".parse().unwrap(),
        "127.0.0.1:4000".parse().unwrap(),
    );
    if let Some(h) = header {
        req.headers.append(h.to_string(), "1".to_string());
    }
    req.body = body;
    let chain: Vec<Arc<dyn Middleware>> = vec![mw.clone()];
    Next::new(&chain, &BodyEcho).run(req).await
}

/// A body of `data` arriving in 10-byte frames.
fn framed(data: &[u8]) -> wasmgate_abi::Body {
    let (tx, rx) = tokio::sync::mpsc::channel(data.len() / 10 + 1);
    for c in data.chunks(10) {
        tx.try_send(bytes::Bytes::copy_from_slice(c)).unwrap();
    }
    wasmgate_abi::Body::from_stream(ChanBody(rx))
}

// One runtime thread and one instance: a guest that reads the body of a request whose body
// is still arriving holds neither the thread nor the instance while it waits.
async fn a_slow_request_body_holds_no_worker_and_no_instance(engine: EngineKind) {
    let one = PluginOptions {
        pool_size: 1,
        max_instances: Some(1),
        pool_wait: Duration::from_secs(5),
        ..PluginOptions::default()
    };
    let mw = middleware(engine, READER, b"", one);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(bytes::Bytes::from_static(b"abc")).await.unwrap();
    let slow = {
        let mw = mw.clone();
        tokio::spawn(async move {
            run_body(
                &mw,
                Some("x-read-all"),
                wasmgate_abi::Body::from_stream(ChanBody(rx)),
            )
            .await
        })
    };
    // Let the slow request start and wait for the rest of its body.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!slow.is_finished(), "{engine}");
    // Another request is served meanwhile, on the same thread and the only instance.
    let quick = tokio::time::timeout(
        Duration::from_secs(2),
        run_body(&mw, None, wasmgate_abi::Body::empty()),
    )
    .await
    .expect("served while the other body is still arriving")
    .unwrap();
    assert_eq!(quick.status, StatusCode::OK, "{engine}");
    assert!(!slow.is_finished(), "{engine}");
    // The rest of the body arrives: the guest reads all of it, nothing is left for next.
    tx.send(bytes::Bytes::from_static(b"defg")).await.unwrap();
    drop(tx);
    let r = slow.await.unwrap().unwrap();
    assert_eq!(r.status, StatusCode::OK, "{engine}");
    assert_eq!(r.headers.get("echo-read"), Some(&b"7"[..]), "{engine}");
    assert_eq!(body(r).await, "", "{engine}");
}
parity!(
    #[tokio::test(flavor = "current_thread")]
    async a_slow_request_body_holds_no_worker_and_no_instance
);

async fn a_body_past_max_body_bytes_passes_through_unless_the_guest_reads_past_the_limit(
    engine: EngineKind,
) {
    let data: Vec<u8> = (0..100u8).map(|i| b'a' + i % 26).collect();
    let text = String::from_utf8(data.clone()).unwrap();
    let small = PluginOptions {
        max_body_bytes: 64,
        ..opts(1)
    };
    let mw = middleware(engine, READER, b"", small);
    // Not read: next gets all 100 bytes, untouched.
    let r = run_body(&mw, None, framed(&data)).await.unwrap();
    assert_eq!(r.headers.get("echo-read"), Some(&b"0"[..]), "{engine}");
    assert_eq!(body(r).await, text, "{engine}");
    // Read within the limit: what the guest read is gone, the rest (past the limit
    // included) flows on.
    let r = run_body(&mw, Some("x-read-some"), framed(&data))
        .await
        .unwrap();
    assert_eq!(r.headers.get("echo-read"), Some(&b"4"[..]), "{engine}");
    assert_eq!(body(r).await, text[4..], "{engine}");
    // Read past the limit: 413, and the interrupted instance is not reused.
    let discarded = mw.pool().discarded();
    let e = run_body(&mw, Some("x-read-all"), framed(&data))
        .await
        .unwrap_err();
    assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE, "{engine}: {e}");
    assert!(e.message.contains("maxBodyBytes"), "{engine}: {e}");
    assert_eq!(mw.pool().discarded(), discarded + 1, "{engine}");
    // A body of exactly the limit is read whole.
    let r = run_body(&mw, Some("x-read-all"), framed(&data[..64]))
        .await
        .unwrap();
    assert_eq!(r.headers.get("echo-read"), Some(&b"64"[..]), "{engine}");
    assert_eq!(body(r).await, "", "{engine}");
}
parity!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async a_body_past_max_body_bytes_passes_through_unless_the_guest_reads_past_the_limit
);

/// Its `_start` sleeps 300 ms (WASI `poll_oneoff` on the monotonic clock): a slow start-up.
const SLOW_START: &str = r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    ;; One subscription at 0: tag 0 (clock), clock id 1 (monotonic), relative 300 ms.
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 300000000))
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128))))
  (func (export "handle_request") (result i64) (i64.const 1)))"#;

// One runtime thread: while a request waits for a new instance (the only warm one is busy),
// the instance's slow start-up runs off that thread, and other tasks keep running.
async fn a_new_instance_starts_off_the_runtime_thread(engine: EngineKind) {
    let mw = middleware(engine, SLOW_START, b"", opts(1));
    assert_eq!(mw.pool().created(), 1, "{engine}: one warm instance");
    // The warm instance is held by a request whose upstream is slow.
    let held = {
        let mw = mw.clone();
        tokio::spawn(async move {
            let up = upstream(Duration::from_millis(800));
            run(&mw, &up, &[]).await.map(|r| r.status)
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let ticks = Arc::new(AtomicUsize::new(0));
    let ticker = {
        let ticks = ticks.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                ticks.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let started = std::time::Instant::now();
    let r = run(&mw, &upstream(Duration::ZERO), &[]).await.unwrap();
    let took = started.elapsed();
    let ticked = ticks.load(Ordering::SeqCst);
    ticker.abort();
    assert_eq!(r.status, StatusCode::OK, "{engine}");
    assert_eq!(
        mw.pool().created(),
        2,
        "{engine}: a second instance was started"
    );
    assert!(took >= Duration::from_millis(300), "{engine}: {took:?}");
    // Started on the runtime thread, the 300 ms sleep would have stopped the ticker.
    assert!(
        ticked >= 10,
        "{engine}: the ticker ran {ticked} times in {took:?}"
    );
    assert_eq!(held.await.unwrap().unwrap(), StatusCode::OK, "{engine}");
}
parity!(
    #[tokio::test(flavor = "current_thread")]
    async a_new_instance_starts_off_the_runtime_thread
);

/// Sets `x-seen` on the request; it imports header functions and `enable_features` but not
/// `read_body`, and turns no feature on at start-up.
const HEADERS_ONLY: &str = r#"(module
  (import "http_handler" "enable_features" (func $ef (param i32) (result i32)))
  (import "http_handler" "set_header_value" (func $shv (param i32 i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "x-seen")
  (data (i32.const 16) "1")
  (func (export "handle_request") (result i64)
    (call $shv (i32.const 0) (i32.const 0) (i32.const 6) (i32.const 16) (i32.const 1))
    (i64.const 1))
  (func (export "handle_response") (param i32 i32)))"#;

/// Signals when the request reaches it, then answers with the body it received.
struct Arrival(tokio::sync::Notify);

#[async_trait]
impl Endpoint for Arrival {
    async fn call(&self, req: Request) -> Result<Response, ProxyError> {
        self.0.notify_one();
        let seen = req.headers.get("x-seen").map(<[u8]>::to_vec);
        let data = req.body.buffer(1 << 20).await.unwrap().data;
        let mut r = Response::text(StatusCode::OK, data);
        if let Some(v) = seen {
            r.headers.append("echo-seen", v);
        }
        Ok(r)
    }
}

// A guest that cannot read the body gets none read ahead: the request goes on to next while its
// body is still arriving (an upload streams through a header-only plugin).
async fn a_guest_that_cannot_read_the_body_lets_it_stream(engine: EngineKind) {
    let mw = middleware(engine, HEADERS_ONLY, b"", opts(1));
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(bytes::Bytes::from_static(b"first ")).await.unwrap();
    let arrival = Arc::new(Arrival(tokio::sync::Notify::new()));
    let task = {
        let (mw, arrival) = (mw.clone(), arrival.clone());
        tokio::spawn(async move {
            let mut req = Request::new(
                Method::POST,
                "/upload".parse().unwrap(),
                "127.0.0.1:4000".parse().unwrap(),
            );
            req.body = wasmgate_abi::Body::from_stream(ChanBody(rx));
            let chain: Vec<Arc<dyn Middleware>> = vec![mw];
            Next::new(&chain, arrival.as_ref()).run(req).await
        })
    };
    // The upstream is reached while the body is still open (read ahead, it would not be).
    tokio::time::timeout(Duration::from_secs(10), arrival.0.notified())
        .await
        .unwrap_or_else(|_| panic!("{engine}: the request waited for its body"));
    tx.send(bytes::Bytes::from_static(b"second")).await.unwrap();
    drop(tx);
    let r = task.await.unwrap().unwrap();
    assert_eq!(r.status, StatusCode::OK, "{engine}");
    assert_eq!(r.headers.get("echo-seen"), Some(&b"1"[..]), "{engine}");
    assert_eq!(body(r).await, "first second", "{engine}");
}
parity!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async a_guest_that_cannot_read_the_body_lets_it_stream
);

/// The fail-closed answer: 503, naming the middleware, and nothing of the trap.
async fn assert_closed(r: Response, engine: EngineKind) {
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{engine}");
    assert_eq!(
        r.headers.get(FAILED_MIDDLEWARE_HEADER),
        Some(&b"test-mw"[..]),
        "{engine}"
    );
    assert_eq!(
        body(r).await,
        "",
        "{engine}: the trap text stays in the log"
    );
}

fn with_policy(policy: FailurePolicy, pool: usize) -> PluginOptions {
    PluginOptions {
        failure_policy: policy,
        ..opts(pool)
    }
}

/// Changes what it sees, then traps: the request (a header, and it reads the body) on
/// `x-trap-req`, the (buffered) response (a header) on `x-trap-resp`.
const CHANGES_THEN_TRAPS: &str = r#"(module
  (import "http_handler" "get_header_values" (func $ghv (param i32 i32 i32 i32 i32) (result i64)))
  (import "http_handler" "set_header_value" (func $shv (param i32 i32 i32 i32 i32)))
  (import "http_handler" "read_body" (func $rb (param i32 i32 i32) (result i64)))
  (import "http_handler" "enable_features" (func $ef (param i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "x-trap-req")
  (data (i32.const 16) "x-trap-resp")
  (data (i32.const 32) "x-touched")
  (func $has (param $name i32) (param $len i32) (result i32)
    (i64.ne (call $ghv (i32.const 0) (local.get $name) (local.get $len) (i32.const 1024) (i32.const 0)) (i64.const 0)))
  (func (export "handle_request") (result i64)
    ;; buffer_response: the guest may change the response in handle_response.
    (drop (call $ef (i32.const 2)))
    (call $shv (i32.const 0) (i32.const 32) (i32.const 9) (i32.const 0) (i32.const 1))
    (if (call $has (i32.const 0) (i32.const 10))
      (then
        (drop (call $rb (i32.const 0) (i32.const 4096) (i32.const 4096)))
        unreachable))
    (i64.const 1))
  (func (export "handle_response") (param $ctx i32) (param $err i32)
    (call $shv (i32.const 1) (i32.const 32) (i32.const 9) (i32.const 0) (i32.const 1))
    (if (call $has (i32.const 16) (i32.const 11)) (then unreachable))))"#;

// failurePolicy open: a request whose guest failed goes on as it arrived (the guest's header
// change and its body read undone), and a response as it came from next.
async fn fail_open_passes_the_request_and_the_response_on_as_they_came(engine: EngineKind) {
    let small = PluginOptions {
        max_body_bytes: 16,
        ..with_policy(FailurePolicy::Open, 1)
    };
    let mw = middleware(engine, CHANGES_THEN_TRAPS, b"", small);
    // A body past maxBodyBytes: 16 bytes were read ahead (and read by the guest), the rest
    // was still in the stream.
    let data: Vec<u8> = (0..100u8).map(|i| b'a' + i % 26).collect();
    let r = run_body(&mw, Some("x-trap-req"), framed(&data))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK, "{engine}");
    assert!(r.headers.get(FAILED_MIDDLEWARE_HEADER).is_none());
    assert_eq!(
        body(r).await.as_bytes(),
        &data[..],
        "{engine}: the whole body"
    );
    assert_eq!(
        mw.pool().discarded(),
        1,
        "{engine}: the instance still goes"
    );

    let mw = middleware(
        engine,
        CHANGES_THEN_TRAPS,
        b"",
        with_policy(FailurePolicy::Open, 1),
    );
    let up = upstream(Duration::ZERO);
    let r = run(&mw, &up, &[("x-trap-req", "1"), ("x-kept", "1")])
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK, "{engine}");
    assert!(r.headers.get("echo-x-kept").is_some());
    assert!(
        r.headers.get("echo-x-touched").is_none(),
        "{engine}: the guest's change is not passed on"
    );

    // In handle_response: next's response as it came, without the guest's header.
    let r = run(&mw, &up, &[("x-trap-resp", "1")]).await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{engine}");
    assert!(r.headers.get("x-touched").is_none(), "{engine}");
    assert!(r.headers.get("echo-x-touched").is_some(), "{engine}");
    assert_eq!(body(r).await, "upstream saw /path?q=1");
    // And without a failure the guest's changes count.
    let r = run(&mw, &up, &[]).await.unwrap();
    assert!(r.headers.get("x-touched").is_some(), "{engine}");
    assert_eq!(up.calls.load(Ordering::SeqCst), 3);
}
parity!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fail_open_passes_the_request_and_the_response_on_as_they_came
);

// failurePolicy reload: the first failure starts fresh instances; when they fail too, the
// middleware refuses requests for a backoff step without entering the guest; after it, a
// request goes in again, and one that goes through ends the backoff.
async fn fail_reload_recycles_then_backs_off(engine: EngineKind) {
    let mw = middleware(
        engine,
        CHANGES_THEN_TRAPS,
        b"",
        with_policy(FailurePolicy::Reload, 2),
    );
    let up = upstream(Duration::ZERO);
    assert_eq!(run(&mw, &up, &[]).await.unwrap().status, StatusCode::OK);
    let warm = mw.pool().idle();
    assert!(warm >= 1, "{engine}");
    assert_closed(run(&mw, &up, &[("x-trap-req", "1")]).await.unwrap(), engine).await;
    // Every instance was replaced, not only the one that trapped (one of the warm ones).
    assert_eq!(mw.pool().idle(), 0, "{engine}");
    assert_eq!(mw.pool().discarded() as usize, warm, "{engine}");
    // The fresh instance fails too: a backoff step starts.
    assert_closed(run(&mw, &up, &[("x-trap-req", "1")]).await.unwrap(), engine).await;
    let created = mw.pool().created();
    let calls = up.calls.load(Ordering::SeqCst);
    // A healthy request is refused without entering the guest (no instance is made).
    assert_closed(run(&mw, &up, &[]).await.unwrap(), engine).await;
    assert_eq!(mw.pool().created(), created, "{engine}");
    assert_eq!(up.calls.load(Ordering::SeqCst), calls);
    // After the first step (1 s) requests go in again.
    tokio::time::sleep(wasmgate_abi::guest::BACKOFF_START + Duration::from_millis(100)).await;
    assert_eq!(run(&mw, &up, &[]).await.unwrap().status, StatusCode::OK);
    assert_eq!(up.calls.load(Ordering::SeqCst), calls + 1);
    // That success ended the streak: the next failure recycles without refusing.
    assert_closed(run(&mw, &up, &[("x-trap-req", "1")]).await.unwrap(), engine).await;
    assert_eq!(run(&mw, &up, &[]).await.unwrap().status, StatusCode::OK);
}
parity!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fail_reload_recycles_then_backs_off
);

// `callTimeout` measures guest time: a body that takes twice the deadline to arrive, read whole
// by the guest, is not a deadline trap (the wait happens before the call, not in it). The
// deadline is 300 ms, not less: a loaded 2-core machine can delay a tiny call by 100 ms.
async fn call_timeout_does_not_count_the_wait_for_the_body(engine: EngineKind) {
    let short = PluginOptions {
        limits: wasmgate_abi::plugin::Limits {
            call_deadline: Duration::from_millis(300),
            ..Default::default()
        },
        ..opts(1)
    };
    let mw = middleware(engine, READER, b"", short);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    // Before the feeder is spawned: on another worker it may start its first sleep at once.
    let started = std::time::Instant::now();
    let feeder = tokio::spawn(async move {
        for chunk in [&b"ab"[..], b"cd", b"ef", b"gh"] {
            tokio::time::sleep(Duration::from_millis(150)).await;
            tx.send(bytes::Bytes::from_static(chunk)).await.unwrap();
        }
    });
    let r = run_body(
        &mw,
        Some("x-read-all"),
        wasmgate_abi::Body::from_stream(ChanBody(rx)),
    )
    .await
    .unwrap();
    feeder.await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(600));
    assert_eq!(r.status, StatusCode::OK, "{engine}");
    assert_eq!(r.headers.get("echo-read"), Some(&b"8"[..]), "{engine}");
    assert_eq!(mw.pool().discarded(), 0, "{engine}");
}
parity!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async call_timeout_does_not_count_the_wait_for_the_body
);
