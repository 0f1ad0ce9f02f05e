//! proxy-wasm filters (WAT) run as middlewares in a real chain, on both engines:
//! Pause/resume, body buffering and its limits, local responses in each phase,
//! http calls (success, timeout, unknown service), ticks, shared data CAS,
//! queues, metrics, traps in each callback, and the load-time checks; and the VM model:
//! many streams per VM (64 held at once on no more VMs than workers), one root context
//! seeing every stream of its VM, a trap poisoning only its VM; and the failure policies
//! (closed, open, reload) applied to traps and broken pauses in every phase.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, StatusCode};
use wasmgate_abi::plugin::{EngineKind, FailurePolicy, PluginOptions};
use wasmgate_abi::proxy_wasm::serial::serialize;
use wasmgate_abi::proxy_wasm::{ProxyWasmMiddleware, ProxyWasmPlugin, ServiceDirectory};
use wasmgate_abi::{
    Body, Endpoint, Engines, Middleware, Next, Plugin, ProxyError, Request, Response,
};

/// Upstream stand-in: echoes request headers as `echo-*`, the body as `body:<...>`.
struct Upstream {
    calls: AtomicUsize,
    seen_body: Mutex<Vec<u8>>,
    seen_trailers: Mutex<Option<wasmgate_abi::Headers>>,
    reply: Mutex<Option<Vec<u8>>>,
    delay: Duration,
}

#[async_trait]
impl Endpoint for Upstream {
    async fn call(&self, req: Request) -> Result<Response, ProxyError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        let buffered = req.body.buffer(1 << 20).await.unwrap();
        *self.seen_body.lock().unwrap() = buffered.data.to_vec();
        *self.seen_trailers.lock().unwrap() = buffered.trailers;
        let text = match &*self.reply.lock().unwrap() {
            Some(r) => r.clone(),
            None => format!("upstream saw {}", req.uri).into_bytes(),
        };
        let mut r = Response::text(StatusCode::OK, text);
        for (n, v) in req.headers.iter() {
            r.headers
                .append(format!("echo-{n}"), Bytes::copy_from_slice(v));
        }
        Ok(r)
    }
}

fn upstream(delay: Duration) -> Arc<Upstream> {
    Arc::new(Upstream {
        calls: AtomicUsize::new(0),
        seen_body: Mutex::new(Vec::new()),
        seen_trailers: Mutex::new(None),
        reply: Mutex::new(None),
        delay,
    })
}

fn services() -> Arc<dyn ServiceDirectory> {
    let mut m: HashMap<String, Arc<dyn Endpoint>> = HashMap::new();
    m.insert("auth".into(), upstream(Duration::ZERO));
    m.insert("slow".into(), upstream(Duration::from_millis(800)));
    Arc::new(m)
}

fn esc(b: &[u8]) -> String {
    b.iter().map(|x| format!("\\{x:02x}")).collect()
}

/// The test filter (ABI 0.2.1). The first byte of its plugin configuration picks a behaviour:
/// `h<service>` http call then resume; `l`/`L` local response in request/response headers;
/// `k`/`K` local response in request/response body; `b`/`B` wrap the request/response body in
/// `<...>` after buffering it (Pause); `s` shared-data CAS; `q` queue; `T` tick; `X` the
/// plugin's first tick traps; `m` metrics;
/// `x<n>` trap in callback n when the request has `x-trap`; `r` rejects the configuration;
/// whatever the mode, the metric `entered` counts the calls of `on_request_headers`;
/// `p` pauses the request headers with nothing pending; `R<service>` pauses the response
/// headers on an http_call to `<service>` and resumes them from the call's response.
fn filter_wat() -> String {
    let call_headers = serialize([
        (&b":method"[..], &b"GET"[..]),
        (&b":path"[..], &b"/check"[..]),
        (&b":authority"[..], &b"auth"[..]),
    ]);
    let local_headers = serialize([(&b"x-by"[..], &b"wat"[..])]);
    format!(
        r#"(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_buffer_bytes" (func $set_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get_value (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add_value (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $local (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_http_call" (func $http_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_effective_context" (func $effective (param i32) (result i32)))
  (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
  (import "env" "proxy_set_tick_period_milliseconds" (func $tick (param i32) (result i32)))
  (import "env" "proxy_define_metric" (func $define (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_increment_metric" (func $incr (param i32 i64) (result i32)))
  (import "env" "proxy_record_metric" (func $record (param i32 i64) (result i32)))
  (import "env" "proxy_get_shared_data" (func $get_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_shared_data" (func $set_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_register_shared_queue" (func $register (param i32 i32 i32) (result i32)))
  (import "env" "proxy_enqueue_shared_queue" (func $enqueue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_dequeue_shared_queue" (func $dequeue (param i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 4096))
  (global $mode (mut i32) (i32.const 0))
  (global $trapat (mut i32) (i32.const 0))
  (global $cfg_ptr (mut i32) (i32.const 0))
  (global $cfg_len (mut i32) (i32.const 0))
  (global $qid (mut i32) (i32.const 0))
  (global $m_ticks (mut i32) (i32.const 0))
  (global $m_requests (mut i32) (i32.const 0))
  (global $m_deq (mut i32) (i32.const 0))
  (global $m_hist (mut i32) (i32.const 0))
  (global $m_gauge (mut i32) (i32.const 0))
  (global $m_entered (mut i32) (i32.const 0))
  (data (i32.const 200) "{call_headers}")
  (data (i32.const 400) ":status")
  (data (i32.const 420) "x-call-status")
  (data (i32.const 440) "x-trap")
  (data (i32.const 460) "denied")
  (data (i32.const 480) "{local_headers}")
  (data (i32.const 520) "<")
  (data (i32.const 522) ">")
  (data (i32.const 530) "k")
  (data (i32.const 540) "x-cas")
  (data (i32.const 560) "q")
  (data (i32.const 570) "item")
  (data (i32.const 600) "ticks")
  (data (i32.const 620) "requests")
  (data (i32.const 640) "dequeued")
  (data (i32.const 660) "body_size")
  (data (i32.const 680) "gauge")
  (data (i32.const 700) "timeout")
  (data (i32.const 720) "call failed")
  (data (i32.const 740) "x-trap-call")
  (data (i32.const 760) "x-added")
  (data (i32.const 770) "yes")
  (data (i32.const 780) "entered")
  (export "proxy_abi_version_0_2_1" (func $marker))
  (func $marker)
  (func (export "malloc") (param i32) (result i32) (local i32)
    global.get $heap local.set 1
    global.get $heap local.get 0 i32.add global.set $heap
    local.get 1)
  (func $is (param $c i32) (result i32) (i32.eq (global.get $mode) (local.get $c)))
  (func $maybe_trap (param $n i32)
    (if (i32.and (call $is (i32.const 120)) (i32.eq (global.get $trapat) (local.get $n)))
      (then (if (i32.eqz (call $get_value (i32.const 0) (i32.const 440) (i32.const 6) (i32.const 800) (i32.const 804)))
        (then unreachable)))))
  ;; Streams share the VM: the context waiting for a call is kept by its token (at 1024).
  (func $slot (param $token i32) (result i32)
    (i32.add (i32.const 1024) (i32.shl (i32.and (local.get $token) (i32.const 511)) (i32.const 2))))
  (func $remember (param $ctx i32) (i32.store (call $slot (i32.load (i32.const 808))) (local.get $ctx)))
  (func $metric (param $kind i32) (param $name i32) (param $len i32) (result i32)
    (drop (call $define (local.get $kind) (local.get $name) (local.get $len) (i32.const 808)))
    (i32.load (i32.const 808)))
  (func $reply (param $code i32) (param $body i32) (param $len i32)
    (drop (call $local (local.get $code) (i32.const 0) (i32.const 0) (local.get $body) (local.get $len)
      (i32.const 480) (i32.const {local_len}) (i32.const -1))))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
    (drop (call $get_buffer (i32.const 7) (i32.const 0) (i32.const 256) (i32.const 800) (i32.const 804)))
    (global.set $cfg_ptr (i32.load (i32.const 800)))
    (global.set $cfg_len (i32.load (i32.const 804)))
    (if (i32.ne (global.get $cfg_len) (local.get $size)) (then unreachable))
    (if (global.get $cfg_len) (then (global.set $mode (i32.load8_u (global.get $cfg_ptr)))))
    (if (i32.ge_u (global.get $cfg_len) (i32.const 2))
      (then (global.set $trapat (i32.sub (i32.load8_u offset=1 (global.get $cfg_ptr)) (i32.const 48)))))
    (if (call $is (i32.const 114)) (then (return (i32.const 0))))
    (global.set $m_ticks (call $metric (i32.const 0) (i32.const 600) (i32.const 5)))
    (global.set $m_requests (call $metric (i32.const 0) (i32.const 620) (i32.const 8)))
    (global.set $m_deq (call $metric (i32.const 0) (i32.const 640) (i32.const 8)))
    (global.set $m_hist (call $metric (i32.const 2) (i32.const 660) (i32.const 9)))
    (global.set $m_gauge (call $metric (i32.const 1) (i32.const 680) (i32.const 5)))
    (global.set $m_entered (call $metric (i32.const 0) (i32.const 780) (i32.const 7)))
    (if (i32.or (call $is (i32.const 84)) (call $is (i32.const 88))) (then (drop (call $tick (i32.const 20)))))
    (if (call $is (i32.const 113)) (then
      (drop (call $register (i32.const 560) (i32.const 1) (i32.const 808)))
      (global.set $qid (i32.load (i32.const 808)))))
    (i32.const 1))
  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (local $r i32)
    (drop (call $incr (global.get $m_entered) (i64.const 1)))
    (call $maybe_trap (i32.const 1))
    (drop (call $incr (global.get $m_requests) (i64.const 1)))
    (if (call $is (i32.const 104)) (then
      (local.set $r (call $http_call
        (i32.add (global.get $cfg_ptr) (i32.const 1)) (i32.sub (global.get $cfg_len) (i32.const 1))
        (i32.const 200) (i32.const {call_len}) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
        (i32.const 300) (i32.const 808)))
      (if (local.get $r) (then (call $reply (i32.const 502) (i32.const 720) (i32.const 11))))
      (call $remember (local.get $ctx))
      (return (i32.const 1))))
    (if (call $is (i32.const 112)) (then (return (i32.const 1))))
    (if (call $is (i32.const 108)) (then
      (call $reply (i32.const 403) (i32.const 460) (i32.const 6))
      (return (i32.const 1))))
    (if (call $is (i32.const 115)) (then
      (drop (call $set_shared (i32.const 530) (i32.const 1) (i32.const 520) (i32.const 1) (i32.const 0)))
      (drop (call $get_shared (i32.const 530) (i32.const 1) (i32.const 800) (i32.const 804) (i32.const 808)))
      (drop (call $set_shared (i32.const 530) (i32.const 1) (i32.const 522) (i32.const 1) (i32.load (i32.const 808))))
      (local.set $r (call $set_shared (i32.const 530) (i32.const 1) (i32.const 520) (i32.const 1) (i32.load (i32.const 808))))
      (i32.store8 (i32.const 812) (i32.add (i32.const 48) (local.get $r)))
      (drop (call $add_value (i32.const 0) (i32.const 540) (i32.const 5) (i32.const 812) (i32.const 1)))))
    (if (call $is (i32.const 113)) (then
      (drop (call $enqueue (global.get $qid) (i32.const 570) (i32.const 4)))))
    (if (call $is (i32.const 109)) (then
      (drop (call $incr (global.get $m_gauge) (i64.const -2)))))
    (i32.const 0))
  (func $body (param $buffer i32) (param $size i32) (param $eos i32) (result i32)
    (if (i32.eqz (local.get $eos)) (then (return (i32.const 1))))
    (drop (call $record (global.get $m_hist) (i64.extend_i32_u (local.get $size))))
    (drop (call $set_buffer (local.get $buffer) (i32.const 0) (i32.const 0) (i32.const 520) (i32.const 1)))
    (drop (call $set_buffer (local.get $buffer) (i32.const -1) (i32.const 0) (i32.const 522) (i32.const 1)))
    (i32.const 0))
  (func (export "proxy_on_request_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    (call $maybe_trap (i32.const 2))
    (if (call $is (i32.const 98)) (then (return (call $body (i32.const 0) (local.get $size) (local.get $eos)))))
    (if (i32.and (call $is (i32.const 107)) (local.get $eos)) (then
      (call $reply (i32.const 451) (i32.const 460) (i32.const 6))
      (return (i32.const 1))))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (local $r i32)
    (call $maybe_trap (i32.const 3))
    (if (call $is (i32.const 82)) (then
      (local.set $r (call $http_call
        (i32.add (global.get $cfg_ptr) (i32.const 1)) (i32.sub (global.get $cfg_len) (i32.const 1))
        (i32.const 200) (i32.const {call_len}) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
        (i32.const 300) (i32.const 808)))
      (if (local.get $r) (then (call $reply (i32.const 502) (i32.const 720) (i32.const 11))))
      (call $remember (local.get $ctx))
      (return (i32.const 1))))
    (if (call $is (i32.const 76)) (then
      (call $reply (i32.const 418) (i32.const 460) (i32.const 6))
      (return (i32.const 1))))
    (i32.const 0))
  (func (export "proxy_on_response_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    (call $maybe_trap (i32.const 4))
    (if (call $is (i32.const 66)) (then (return (call $body (i32.const 1) (local.get $size) (local.get $eos)))))
    (if (i32.and (call $is (i32.const 75)) (local.get $eos)) (then
      (call $reply (i32.const 406) (i32.const 460) (i32.const 6))
      (return (i32.const 1))))
    (i32.const 0))
  (func (export "proxy_on_request_trailers") (param $ctx i32) (param $n i32) (result i32)
    (if (call $is (i32.const 122)) (then
      (drop (call $record (global.get $m_hist) (i64.extend_i32_u (local.get $n))))
      (drop (call $add_value (i32.const 1) (i32.const 760) (i32.const 7) (i32.const 770) (i32.const 3)))))
    (i32.const 0))
  (func (export "proxy_on_done") (param $ctx i32) (result i32)
    (call $maybe_trap (i32.const 5))
    (i32.const 1))
  (func (export "proxy_on_log") (param $ctx i32)
    (call $maybe_trap (i32.const 6)))
  (func (export "proxy_on_delete") (param $ctx i32)
    (call $maybe_trap (i32.const 7)))
  (func (export "proxy_on_tick") (param $root i32)
    ;; `X`: the first tick of the plugin traps (it leaves a mark in shared data first).
    (if (call $is (i32.const 88)) (then
      (if (call $get_shared (i32.const 600) (i32.const 5) (i32.const 800) (i32.const 804) (i32.const 808))
        (then
          (drop (call $set_shared (i32.const 600) (i32.const 5) (i32.const 520) (i32.const 1) (i32.const 0)))
          unreachable))))
    (drop (call $incr (global.get $m_ticks) (i64.const 1))))
  (func (export "proxy_on_queue_ready") (param $root i32) (param $q i32)
    (if (i32.eqz (call $dequeue (local.get $q) (i32.const 800) (i32.const 804)))
      (then (drop (call $incr (global.get $m_deq) (i64.const 1))))))
  (func (export "proxy_on_http_call_response") (param $root i32) (param $token i32) (param $nh i32) (param $bs i32) (param $nt i32)
    (drop (call $effective (i32.load (call $slot (local.get $token)))))
    (if (i32.eqz (call $get_value (i32.const 0) (i32.const 740) (i32.const 11) (i32.const 800) (i32.const 804)))
      (then unreachable))
    (if (i32.eqz (local.get $nh)) (then
      (call $reply (i32.const 504) (i32.const 700) (i32.const 7))
      (return)))
    (drop (call $get_value (i32.const 6) (i32.const 400) (i32.const 7) (i32.const 800) (i32.const 804)))
    ;; `R` paused the response headers: the call's status goes on the response, which resumes.
    (if (call $is (i32.const 82)) (then
      (drop (call $add_value (i32.const 2) (i32.const 420) (i32.const 13) (i32.load (i32.const 800)) (i32.load (i32.const 804))))
      (drop (call $continue (i32.const 1)))
      (return)))
    (drop (call $add_value (i32.const 0) (i32.const 420) (i32.const 13) (i32.load (i32.const 800)) (i32.load (i32.const 804))))
    (drop (call $continue (i32.const 0))))
)"#,
        call_headers = esc(&call_headers),
        call_len = call_headers.len(),
        local_headers = esc(&local_headers),
        local_len = local_headers.len(),
    )
}

fn plugin(engine: EngineKind, wat: &str, opts: PluginOptions) -> Result<Plugin, String> {
    let wasm = wat::parse_str(wat).unwrap();
    let engines = Engines::new(None);
    Plugin::load("pw", &wasm, PluginOptions { engine, ..opts }, &engines).map_err(|e| e.to_string())
}

fn opts() -> PluginOptions {
    PluginOptions {
        pool_size: 2,
        ..PluginOptions::default()
    }
}

struct Setup {
    plugin: Plugin,
    mw: Arc<dyn Middleware>,
}

fn setup(engine: EngineKind, config: &str, opts: PluginOptions) -> Setup {
    let plugin = plugin(engine, &filter_wat(), opts).unwrap();
    let mw = plugin
        .middleware_with_services("pw-mw", config.as_bytes().to_vec(), services())
        .unwrap();
    Setup { plugin, mw }
}

async fn run(
    mw: &Arc<dyn Middleware>,
    up: &Upstream,
    headers: &[(&str, &str)],
    body: Option<&'static [u8]>,
) -> Result<Response, ProxyError> {
    run_on(mw, up, headers, body).await
}

/// [`run`] with any upstream.
async fn run_on(
    mw: &Arc<dyn Middleware>,
    up: &dyn Endpoint,
    headers: &[(&str, &str)],
    body: Option<&'static [u8]>,
) -> Result<Response, ProxyError> {
    let mut req = Request::new(
        if body.is_some() {
            Method::POST
        } else {
            Method::GET
        },
        "/path?q=1".parse().unwrap(),
        "127.0.0.1:4000".parse().unwrap(),
    );
    req.headers.append("host", "example.com");
    for (n, v) in headers {
        req.headers.append(n.to_string(), v.to_string());
    }
    if let Some(b) = body {
        req.headers.append("content-length", b.len().to_string());
        // Two chunks, so the filter sees the body arrive in parts.
        let (a, c) = b.split_at(b.len() / 2);
        req.body = Body::from_stream(Chunks(
            vec![Bytes::from_static(a), Bytes::from_static(c)].into(),
        ));
    }
    let chain: Vec<Arc<dyn Middleware>> = vec![mw.clone()];
    Next::new(&chain, up).run(req).await
}

/// Data frames, then trailers.
struct WithTrailers(std::collections::VecDeque<http_body::Frame<Bytes>>);

impl http_body::Body for WithTrailers {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(Ok))
    }
}

/// A body of several data frames.
struct Chunks(std::collections::VecDeque<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(http_body::Frame::data(b))))
    }
}

async fn text(resp: Response) -> String {
    String::from_utf8(resp.body.buffer(1 << 20).await.unwrap().data.to_vec()).unwrap()
}

fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers.get_str(name).map(str::to_string)
}

/// `resp` is the fail-closed answer of middleware `mw`: 503, naming it, nothing else said.
async fn assert_failed_closed(resp: Response, mw: &str, what: &str) {
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE, "{what}");
    assert_eq!(
        header(&resp, wasmgate_abi::guest::FAILED_MIDDLEWARE_HEADER).as_deref(),
        Some(mw),
        "{what}"
    );
    assert_eq!(text(resp).await, "", "{what}: no trap text for the client");
}

async fn http_call_pauses_and_resumes_the_request(e: EngineKind) {
    let s = setup(e, "hauth", opts());
    let up = upstream(Duration::ZERO);
    let r = run(&s.mw, &up, &[], None).await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{e}");
    // The call's :status went into the resumed request.
    assert_eq!(
        header(&r, "echo-x-call-status").as_deref(),
        Some("200"),
        "{e}"
    );
    assert_eq!(up.calls.load(Ordering::SeqCst), 1);
}
parity!(#[tokio::test] async http_call_pauses_and_resumes_the_request);

async fn http_call_pauses_and_resumes_the_response(e: EngineKind) {
    let s = setup(e, "Rauth", opts());
    let up = upstream(Duration::ZERO);
    let r = run(&s.mw, &up, &[], None).await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{e}");
    // The response waited in on_response_headers for the call; its :status went on the response.
    assert_eq!(header(&r, "x-call-status").as_deref(), Some("200"), "{e}");
    assert_eq!(up.calls.load(Ordering::SeqCst), 1);
}
parity!(#[tokio::test] async http_call_pauses_and_resumes_the_response);

async fn http_call_timeout_and_unknown_service(e: EngineKind) {
    let up = upstream(Duration::ZERO);
    // The slow service misses the filter's 300 ms timeout: on_http_call_response gets 0 headers.
    let s = setup(e, "hslow", opts());
    let started = std::time::Instant::now();
    let r = run(&s.mw, &up, &[], None).await.unwrap();
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{e}");
    assert!(started.elapsed() < Duration::from_millis(700), "{e}");
    assert_eq!(text(r).await, "timeout");
    // An unknown service: proxy_http_call answers BAD_ARGUMENT, the filter replies 502.
    let s = setup(e, "hnowhere", opts());
    let r = run(&s.mw, &up, &[], None).await.unwrap();
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{e}");
    assert_eq!(text(r).await, "call failed");
    assert_eq!(up.calls.load(Ordering::SeqCst), 0);
}
parity!(#[tokio::test] async http_call_timeout_and_unknown_service);

/// A pause nothing can resume is a failure of the guest: under the default policy (closed),
/// the fail-closed 503, and the upstream is not called.
async fn pause_with_nothing_pending_is_a_failure(e: EngineKind) {
    let s = setup(e, "p", opts());
    let up = upstream(Duration::ZERO);
    let r = run(&s.mw, &up, &[], None).await.unwrap();
    assert_failed_closed(r, "pw-mw", &format!("{e}")).await;
    assert_eq!(up.calls.load(Ordering::SeqCst), 0);
}
parity!(#[tokio::test] async pause_with_nothing_pending_is_a_failure);

async fn local_responses_in_every_phase(e: EngineKind) {
    for (cfg, code, upstream_called) in [("l", 403, 0), ("k", 451, 0), ("L", 418, 1), ("K", 406, 1)]
    {
        let s = setup(e, cfg, opts());
        let up = upstream(Duration::ZERO);
        let r = run(&s.mw, &up, &[], Some(b"some body")).await.unwrap();
        assert_eq!(r.status.as_u16(), code, "{e} {cfg}");
        assert_eq!(header(&r, "x-by").as_deref(), Some("wat"), "{e} {cfg}");
        assert_eq!(text(r).await, "denied");
        assert_eq!(
            up.calls.load(Ordering::SeqCst),
            upstream_called,
            "{e} {cfg}"
        );
    }
}
parity!(#[tokio::test] async local_responses_in_every_phase);

async fn bodies_are_buffered_while_paused_and_rewritten(e: EngineKind) {
    let s = setup(e, "b", opts());
    let up = upstream(Duration::ZERO);
    let r = run(&s.mw, &up, &[], Some(b"hello body")).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&*up.seen_body.lock().unwrap(), b"<hello body>", "{e}");
    // body_size at end of stream was everything buffered.
    let vm = s.plugin.proxy_wasm().unwrap().vm();
    assert_eq!(vm.metric("body_size").unwrap().samples, vec![10], "{e}");

    let s = setup(e, "B", opts());
    let up = upstream(Duration::ZERO);
    *up.reply.lock().unwrap() = Some(b"from upstream".to_vec());
    let r = run(&s.mw, &up, &[], None).await.unwrap();
    assert_eq!(text(r).await, "<from upstream>", "{e}");
}
parity!(#[tokio::test] async bodies_are_buffered_while_paused_and_rewritten);

async fn buffer_limits_give_413_and_500(e: EngineKind) {
    let small = PluginOptions {
        max_body_bytes: 8,
        ..opts()
    };
    let s = setup(e, "b", small.clone());
    let up = upstream(Duration::ZERO);
    let err = run(&s.mw, &up, &[], Some(b"this body is too long"))
        .await
        .unwrap_err();
    assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE, "{e}");
    assert_eq!(up.calls.load(Ordering::SeqCst), 0);
    // The same middleware still serves a small body (and a small response).
    *up.reply.lock().unwrap() = Some(b"ok".to_vec());
    let r = run(&s.mw, &up, &[], Some(b"tiny")).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);

    let s = setup(e, "B", small);
    let up = upstream(Duration::ZERO);
    *up.reply.lock().unwrap() = Some(vec![b'x'; 100]);
    let err = run(&s.mw, &up, &[], None).await.unwrap_err();
    assert_eq!(err.status, StatusCode::INTERNAL_SERVER_ERROR, "{e}");
}
parity!(#[tokio::test] async buffer_limits_give_413_and_500);

async fn shared_data_cas_conflict(e: EngineKind) {
    let s = setup(e, "s", opts());
    let up = upstream(Duration::ZERO);
    let r = run(&s.mw, &up, &[], None).await.unwrap();
    // The second set with the now stale cas got CAS_MISMATCH (8).
    assert_eq!(header(&r, "echo-x-cas").as_deref(), Some("8"), "{e}");
}
parity!(#[tokio::test] async shared_data_cas_conflict);

async fn metrics_ticks_and_queues(e: EngineKind) {
    let s = setup(e, "m", opts());
    let up = upstream(Duration::ZERO);
    for _ in 0..3 {
        run(&s.mw, &up, &[], None).await.unwrap();
    }
    let vm = s.plugin.proxy_wasm().unwrap().vm();
    assert_eq!(vm.metric("requests").unwrap().value, 3, "{e}");
    assert_eq!(vm.metric("gauge").unwrap().value, -6, "{e}");

    // Ticks arrive without requests.
    let s = setup(e, "T", opts());
    let vm = s.plugin.proxy_wasm().unwrap().vm().clone();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        vm.metric("ticks").unwrap().value >= 2,
        "{e}: {:?}",
        vm.metric("ticks")
    );

    // A queued item wakes the registering root context, which dequeues it.
    let s = setup(e, "q", opts());
    let vm = s.plugin.proxy_wasm().unwrap().vm().clone();
    run(&s.mw, &up, &[], None).await.unwrap();
    let mut n = 0;
    for _ in 0..100 {
        n = vm.metric("dequeued").unwrap().value;
        if n == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(n, 1, "{e}");
}
parity!(#[tokio::test] async metrics_ticks_and_queues);

/// A trap in any stream callback gets that request the fail-closed 503 (default policy), never
/// the trap text; the requests after it are served.
async fn a_trap_in_any_callback_fails_one_request_only(e: EngineKind) {
    for n in 1..=7 {
        let s = setup(e, &format!("x{n}"), opts());
        let mw = s.mw.clone();
        let up = upstream(Duration::ZERO);
        let r = run(&mw, &up, &[("x-trap", "1")], Some(b"body"))
            .await
            .unwrap();
        assert_failed_closed(r, "pw-mw", &format!("{e} callback {n}")).await;
        for _ in 0..3 {
            let r = run(&mw, &up, &[], Some(b"body")).await.unwrap();
            assert_eq!(r.status, StatusCode::OK, "{e} callback {n}");
        }
    }
}
parity!(#[tokio::test] async a_trap_in_any_callback_fails_one_request_only);

async fn load_and_configuration_errors(e: EngineKind) {
    // on_configure false: the middleware is not created.
    let p = plugin(e, &filter_wat(), opts()).unwrap();
    let err = p
        .middleware("pw-mw", b"r".to_vec())
        .err()
        .expect("rejected configuration")
        .to_string();
    assert!(err.contains("rejected its configuration"), "{err}");
    // No marker.
    let no_marker = filter_wat().replace("(export \"proxy_abi_version_0_2_1\" (func $marker))", "");
    let err = plugin(
        e,
        &no_marker,
        PluginOptions {
            abi: wasmgate_abi::AbiChoice::ProxyWasm,
            ..opts()
        },
    )
    .err()
    .unwrap();
    assert!(err.contains("no proxy_abi_version_"), "{err}");
    // Unknown version marker.
    let future = filter_wat().replace("proxy_abi_version_0_2_1", "proxy_abi_version_0_3_0");
    let err = plugin(e, &future, opts()).err().unwrap();
    assert!(err.contains("unsupported proxy-wasm ABI version"), "{err}");
    // Each version links only its own import set.
    for (marker, import) in [
        (
            "proxy_abi_version_0_2_0",
            "(import \"env\" \"proxy_get_log_level\" (func (param i32) (result i32)))",
        ),
        (
            "proxy_abi_version_0_1_0",
            "(import \"env\" \"proxy_continue_stream\" (func (param i32) (result i32)))",
        ),
        (
            "proxy_abi_version_0_2_1",
            "(import \"env\" \"proxy_continue_request\" (func (result i32)))",
        ),
    ] {
        let wat = format!(
            "(module {import} (memory (export \"memory\") 1) (func (export \"{marker}\")) \
             (func (export \"malloc\") (param i32) (result i32) (i32.const 0)))"
        );
        let err = plugin(e, &wat, opts()).err().expect(marker);
        assert!(err.contains("missing imports"), "{marker}: {err}");
    }
    // ... and the version that has the import links it.
    for (marker, import) in [
        (
            "proxy_abi_version_0_2_1",
            "(import \"env\" \"proxy_get_log_level\" (func (param i32) (result i32)))",
        ),
        (
            "proxy_abi_version_0_2_0",
            "(import \"env\" \"proxy_continue_stream\" (func (param i32) (result i32)))",
        ),
        (
            "proxy_abi_version_0_1_0",
            "(import \"env\" \"proxy_continue_request\" (func (result i32)))",
        ),
    ] {
        let wat = format!(
            "(module {import} (memory (export \"memory\") 1) (func (export \"{marker}\")) \
             (func (export \"malloc\") (param i32) (result i32) (i32.const 0)))"
        );
        plugin(e, &wat, opts()).expect(marker);
    }
    // A 0.1.0 marker on 3-parameter header callbacks (2020 SDK filters) passes the shape
    // check: this filter fails only on its 0.2.x import.
    let v010_marker = filter_wat().replace("proxy_abi_version_0_2_1", "proxy_abi_version_0_1_0");
    let err = plugin(e, &v010_marker, opts()).err().unwrap();
    assert!(
        err.contains("missing imports: env.proxy_continue_stream"),
        "{err}"
    );
    assert!(!err.contains("proxy_on_request_headers"), "{err}");
    // A header or trailer callback of neither shape is refused, naming both shapes.
    for (cb, params, extra) in [
        (
            "proxy_on_request_headers",
            "(param $ctx i32) (param $n i32) (param $eos i32)",
            "(param i32)",
        ),
        (
            "proxy_on_request_trailers",
            "(param $ctx i32) (param $n i32)",
            "(param i32 i32)",
        ),
    ] {
        let export = format!("(func (export \"{cb}\") {params} (result i32)");
        let four = format!("(func (export \"{cb}\") {params} {extra} (result i32)");
        assert!(filter_wat().contains(&export), "{cb}");
        let wat = filter_wat().replace(&export, &four);
        let err = plugin(e, &wat, opts()).err().expect(cb);
        assert!(
            err.contains(&format!(
                "export `{cb}` has type (i32, i32, i32, i32) -> (i32), proxy-wasm 0.2.1 \
                 needs (i32, i32) -> (i32) or (i32, i32, i32) -> (i32)"
            )),
            "{err}"
        );
    }
}
parity!(#[tokio::test] async load_and_configuration_errors);

/// An ABI 0.1.0 filter: 2-argument header callbacks, proxy_get_configuration,
/// OK + empty value for a missing header.
const V010: &str = r#"(module
  (import "env" "proxy_get_configuration" (func $cfg (param i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_continue_request" (func $cont (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (global $cfg_ptr (mut i32) (i32.const 0))
  (global $cfg_len (mut i32) (i32.const 0))
  (data (i32.const 100) "x-v010")
  (data (i32.const 120) "x-missing")
  (data (i32.const 140) "x-missing-status")
  (export "proxy_abi_version_0_1_0" (func $marker))
  (func $marker)
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (local i32)
    global.get $heap local.set 1
    global.get $heap local.get 0 i32.add global.set $heap
    local.get 1)
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $cfg (i32.const 0) (i32.const 4)))
    (global.set $cfg_ptr (i32.load (i32.const 0)))
    (global.set $cfg_len (i32.load (i32.const 4)))
    (i32.const 1))
  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (result i32)
    (i32.store8 (i32.const 200) (i32.add (i32.const 48)
      (call $get (i32.const 0) (i32.const 120) (i32.const 9) (i32.const 8) (i32.const 12))))
    (drop (call $add (i32.const 0) (i32.const 140) (i32.const 16) (i32.const 200) (i32.const 1)))
    (drop (call $add (i32.const 0) (i32.const 100) (i32.const 6) (global.get $cfg_ptr) (global.get $cfg_len)))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param $ctx i32) (param $n i32) (result i32)
    (drop (call $add (i32.const 2) (i32.const 100) (i32.const 6) (global.get $cfg_ptr) (global.get $cfg_len)))
    (i32.const 0))
)"#;

async fn abi_0_1_0_shapes(e: EngineKind) {
    let p = plugin(e, V010, opts()).unwrap();
    let mw = p.middleware("old", b"cfg-010".to_vec()).unwrap();
    let up = upstream(Duration::ZERO);
    let r = run(&mw, &up, &[], None).await.unwrap();
    assert_eq!(header(&r, "echo-x-v010").as_deref(), Some("cfg-010"), "{e}");
    assert_eq!(
        header(&r, "echo-x-missing-status").as_deref(),
        Some("0"),
        "{e}"
    );
    assert_eq!(header(&r, "x-v010").as_deref(), Some("cfg-010"), "{e}");
}
parity!(#[tokio::test] async abi_0_1_0_shapes);

async fn a_trap_in_the_call_response_fails_one_request_only(e: EngineKind) {
    let s = setup(e, "hauth", opts());
    let up = upstream(Duration::ZERO);
    let r = run(&s.mw, &up, &[("x-trap-call", "1")], None)
        .await
        .unwrap();
    assert_failed_closed(r, "pw-mw", &format!("{e}")).await;
    let r = run(&s.mw, &up, &[], None).await.unwrap();
    assert_eq!(
        header(&r, "echo-x-call-status").as_deref(),
        Some("200"),
        "{e}"
    );
    assert_eq!(up.calls.load(Ordering::SeqCst), 1);
}
parity!(#[tokio::test] async a_trap_in_the_call_response_fails_one_request_only);

async fn concurrent_paused_requests_share_the_vms(e: EngineKind) {
    let s = setup(e, "hauth", opts());
    let up = upstream(Duration::from_millis(20));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (mw, up) = (s.mw.clone(), up.clone());
        tasks.push(tokio::spawn(async move {
            let r = run(&mw, &up, &[], None).await.unwrap();
            (r.status, header(&r, "echo-x-call-status"))
        }));
    }
    for t in tasks {
        let (status, call) = t.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{e}");
        assert_eq!(call.as_deref(), Some("200"), "{e}");
    }
    assert_eq!(up.calls.load(Ordering::SeqCst), 8);
}
parity!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async concurrent_paused_requests_share_the_vms
);

/// Start-up: `_initialize` then `main` (reactor) must both run before the root context;
/// a command module whose `_start` ends in `proc_exit(0)` starts fine.
async fn start_up_functions_run_before_the_root_context(e: EngineKind) {
    let reactor = r#"(module
  (memory (export "memory") 1)
  (global $init (mut i32) (i32.const 0))
  (global $main (mut i32) (i32.const 0))
  (export "proxy_abi_version_0_2_0" (func $marker))
  (func $marker)
  (func (export "malloc") (param i32) (result i32) (i32.const 1024))
  (func (export "_initialize") (global.set $init (i32.const 1)))
  (func (export "main") (param i32 i32) (result i32) (global.set $main (global.get $init)) (i32.const 0))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (global.get $main)))"#;
    let command = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (global $started (mut i32) (i32.const 0))
  (export "proxy_abi_version_0_2_1" (func $marker))
  (func $marker)
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
  (func (export "_start") (global.set $started (i32.const 1)) (call $exit (i32.const 0)))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (global.get $started)))"#;
    for wat in [reactor, command] {
        let p = plugin(e, wat, opts()).unwrap();
        let mw = p.middleware("m", Vec::new()).unwrap();
        let up = upstream(Duration::ZERO);
        let r = run(&mw, &up, &[], None).await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{e}");
    }
    // No allocator at all is a load error.
    let none = reactor.replace("(export \"malloc\")", "");
    let err = plugin(e, &none, opts()).err().unwrap();
    assert!(err.contains("allocator"), "{err}");
}
parity!(#[tokio::test] async start_up_functions_run_before_the_root_context);

/// A request dropped while its stream is paused (client gone) has its context ended
/// (`on_done`, `on_log`, `on_delete`) off the request; the VM goes on with other streams.
async fn an_abandoned_paused_stream_ends_its_context(e: EngineKind) {
    use wasmgate_abi::proxy_wasm::ProxyWasmPlugin;
    let wasm = wat::parse_str(filter_wat()).unwrap();
    let info = wasmgate_engines::ModuleInfo::parse(&wasm).unwrap();
    let engines = Engines::new(None);
    let engine = engines.get(e).unwrap();
    let p = ProxyWasmPlugin::load("pw", &wasm, &info, engine.as_ref(), opts()).unwrap();
    let mw = Arc::new(p.middleware("m", b"hslow".to_vec(), services()).unwrap());
    let as_dyn: Arc<dyn Middleware> = mw.clone();
    let up = upstream(Duration::ZERO);
    let dropped =
        tokio::time::timeout(Duration::from_millis(120), run(&as_dyn, &up, &[], None)).await;
    assert!(dropped.is_err(), "{e}: the request was still paused");
    assert_eq!(mw.live_streams(), 0, "{e}");
    // The context is ended on a task of its own; the VM is not thrown away.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(mw.vms_created(), mw.vm_count() as u64, "{e}");
    let r = run(&as_dyn, &up, &[], None).await.unwrap();
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{e}");
}
parity!(#[tokio::test] async an_abandoned_paused_stream_ends_its_context);

async fn request_trailers_reach_the_filter_and_the_upstream(e: EngineKind) {
    let s = setup(e, "z", opts());
    let up = upstream(Duration::ZERO);
    let mut req = Request::new(
        Method::POST,
        "/t".parse().unwrap(),
        "127.0.0.1:4000".parse().unwrap(),
    );
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-checksum", "abc".parse().unwrap());
    trailers.insert("x-other", "1".parse().unwrap());
    req.body = Body::from_stream(WithTrailers(
        vec![
            http_body::Frame::data(Bytes::from_static(b"payload")),
            http_body::Frame::trailers(trailers),
        ]
        .into(),
    ));
    let chain: Vec<Arc<dyn Middleware>> = vec![s.mw.clone()];
    let r = Next::new(&chain, &*up).run(req).await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{e}");
    assert_eq!(&*up.seen_body.lock().unwrap(), b"payload");
    let seen = up
        .seen_trailers
        .lock()
        .unwrap()
        .clone()
        .expect("trailers forwarded");
    assert_eq!(seen.get_str("x-checksum"), Some("abc"), "{e}");
    assert_eq!(seen.get_str("x-added"), Some("yes"), "{e}");
    // on_request_trailers got the number of trailers.
    let vm = s.plugin.proxy_wasm().unwrap().vm();
    assert_eq!(vm.metric("body_size").unwrap().samples, vec![2], "{e}");
}
parity!(#[tokio::test] async request_trailers_reach_the_filter_and_the_upstream);

/// A trap in a root callback outside any request (a tick) poisons that VM; requests keep
/// being served by fresh VMs.
async fn a_trap_in_a_tick_poisons_that_vm_only(e: EngineKind) {
    use wasmgate_abi::proxy_wasm::ProxyWasmPlugin;
    let wasm = wat::parse_str(filter_wat()).unwrap();
    let info = wasmgate_engines::ModuleInfo::parse(&wasm).unwrap();
    let engines = Engines::new(None);
    let engine = engines.get(e).unwrap();
    let p = ProxyWasmPlugin::load("pw", &wasm, &info, engine.as_ref(), opts()).unwrap();
    let mw = Arc::new(p.middleware("m", b"X".to_vec(), services()).unwrap());
    tokio::time::sleep(Duration::from_millis(150)).await;
    // The first tick trapped: a fresh VM replaced the poisoned one.
    assert!(
        mw.vms_created() > mw.vm_count() as u64,
        "{e}: {}",
        mw.vms_created()
    );
    let as_dyn: Arc<dyn Middleware> = mw.clone();
    let up = upstream(Duration::ZERO);
    for _ in 0..3 {
        let r = run(&as_dyn, &up, &[], None).await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{e}");
    }
}
parity!(#[tokio::test] async a_trap_in_a_tick_poisons_that_vm_only);

/// A middleware as its concrete type (VM accessors), on engine `e`.
fn concrete(
    e: EngineKind,
    wat: &str,
    config: &[u8],
    opts: PluginOptions,
) -> Arc<wasmgate_abi::proxy_wasm::ProxyWasmMiddleware> {
    use wasmgate_abi::proxy_wasm::ProxyWasmPlugin;
    let wasm = wat::parse_str(wat).unwrap();
    let info = wasmgate_engines::ModuleInfo::parse(&wasm).unwrap();
    let engine = Engines::new(None).get(e).unwrap();
    let p = ProxyWasmPlugin::load("pw", &wasm, &info, engine.as_ref(), opts).unwrap();
    Arc::new(p.middleware("m", config.to_vec(), services()).unwrap())
}

/// An upstream that holds every request until `expect` requests have arrived (or, with
/// `gate`, until the test lets them go), then answers 200.
struct Held {
    arrived: AtomicUsize,
    all_in: tokio::sync::Notify,
    expect: usize,
    gate: tokio::sync::Semaphore,
}

impl Held {
    fn new(expect: usize) -> Arc<Held> {
        Arc::new(Held {
            arrived: AtomicUsize::new(0),
            all_in: tokio::sync::Notify::new(),
            expect,
            gate: tokio::sync::Semaphore::new(0),
        })
    }

    /// Waits until `n` requests are held.
    async fn until_arrived(&self, n: usize) {
        while self.arrived.load(Ordering::SeqCst) < n {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

#[async_trait]
impl Endpoint for Held {
    async fn call(&self, _req: Request) -> Result<Response, ProxyError> {
        let n = self.arrived.fetch_add(1, Ordering::SeqCst) + 1;
        if self.expect > 0 {
            if n >= self.expect {
                self.all_in.notify_waiters();
            } else {
                let all_in = self.all_in.notified();
                // The last one may have come in between.
                if self.arrived.load(Ordering::SeqCst) < self.expect {
                    all_in.await;
                }
            }
        } else {
            self.gate.acquire().await.unwrap().forget();
        }
        Ok(Response::text(StatusCode::OK, "held"))
    }
}

/// 64 streams through one middleware, all waiting on the upstream at once: a VM is free while
/// its streams wait, so they all complete with no more VMs than runtime workers.
async fn sixty_four_concurrent_streams_share_the_workers_vms(e: EngineKind) {
    const STREAMS: usize = 64;
    let mw = concrete(e, &filter_wat(), b"m", opts());
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    let as_dyn: Arc<dyn Middleware> = mw.clone();
    let up = Held::new(STREAMS);
    let mut tasks = Vec::new();
    for _ in 0..STREAMS {
        let (mw, up) = (as_dyn.clone(), up.clone());
        tasks.push(tokio::spawn(async move {
            let mut req = Request::new(
                Method::GET,
                "/".parse().unwrap(),
                "127.0.0.1:4000".parse().unwrap(),
            );
            req.headers.append("host", "example.com");
            let chain: Vec<Arc<dyn Middleware>> = vec![mw];
            Next::new(&chain, &*up).run(req).await.map(|r| r.status)
        }));
    }
    let all = async {
        let mut statuses = Vec::new();
        for t in tasks {
            statuses.push(t.await.unwrap().unwrap());
        }
        statuses
    };
    // Generous: the upstream answers only once all 64 are in, so a stream that holds
    // its VM across the upstream wait would hang here.
    let statuses = tokio::time::timeout(Duration::from_secs(30), all)
        .await
        .unwrap_or_else(|_| panic!("{e}: the 64 streams did not all complete"));
    assert_eq!(statuses, vec![StatusCode::OK; STREAMS], "{e}");
    assert_eq!(up.arrived.load(Ordering::SeqCst), STREAMS, "{e}");
    assert!(mw.vm_count() <= workers, "{e}: {} VMs", mw.vm_count());
    assert_eq!(mw.vms_created(), mw.vm_count() as u64, "{e}");
    assert_eq!(mw.live_streams(), 0, "{e}");
}
parity!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async sixty_four_concurrent_streams_share_the_workers_vms
);

/// A filter whose root context counts the HTTP contexts created on its VM; each stream puts
/// the count it was created with in `x-seen`.
const COUNTER: &str = r#"(module
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $count (mut i32) (i32.const 0))
  (data (i32.const 100) "x-seen")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "malloc") (param i32) (result i32) (i32.const 8192))
  ;; Context ids are below 1024 here; each one's count is kept at 1024 + 4 * id.
  (func (export "proxy_on_context_create") (param $ctx i32) (param $parent i32)
    (if (local.get $parent) (then
      (global.set $count (i32.add (global.get $count) (i32.const 1)))
      (i32.store (i32.add (i32.const 1024) (i32.shl (local.get $ctx) (i32.const 2))) (global.get $count)))))
  (func (export "proxy_on_response_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (local $v i32) (local $at i32)
    (local.set $v (i32.load (i32.add (i32.const 1024) (i32.shl (local.get $ctx) (i32.const 2)))))
    ;; Decimal digits, written backwards from 300.
    (local.set $at (i32.const 300))
    (loop $digits
      (local.set $at (i32.sub (local.get $at) (i32.const 1)))
      (i32.store8 (local.get $at) (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10))))
      (local.set $v (i32.div_u (local.get $v) (i32.const 10)))
      (br_if $digits (local.get $v)))
    (drop (call $add (i32.const 2) (i32.const 100) (i32.const 6) (local.get $at) (i32.sub (i32.const 300) (local.get $at))))
    (i32.const 0)))"#;

/// With one VM, its root context sees every stream: N concurrent streams get counts 1..=N.
async fn the_root_context_sees_every_stream(e: EngineKind) {
    const STREAMS: usize = 24;
    let one_vm = PluginOptions {
        max_instances: Some(1),
        ..opts()
    };
    let mw = concrete(e, COUNTER, b"", one_vm);
    assert_eq!(mw.vm_count(), 1, "{e}");
    let as_dyn: Arc<dyn Middleware> = mw.clone();
    let up = Held::new(STREAMS);
    let mut tasks = Vec::new();
    for _ in 0..STREAMS {
        let (mw, up) = (as_dyn.clone(), up.clone());
        tasks.push(tokio::spawn(async move {
            let r = run_on(&mw, &*up, &[], None).await.unwrap();
            header(&r, "x-seen").unwrap().parse::<usize>().unwrap()
        }));
    }
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(
            tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    seen.sort();
    assert_eq!(seen, (1..=STREAMS).collect::<Vec<_>>(), "{e}");
}
parity!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async the_root_context_sees_every_stream
);

/// A trap in one stream poisons only its VM: that VM's other streams in flight fail (the
/// fail-closed 503, as the trapping one), the other VM's complete, and new streams are served
/// (by a fresh VM).
async fn a_trap_poisons_only_its_vm(e: EngineKind) {
    let two_vms = PluginOptions {
        max_instances: Some(2),
        ..opts()
    };
    let mw = concrete(e, &filter_wat(), b"x1", two_vms);
    assert_eq!(mw.vm_count(), 2, "{e}");
    let as_dyn: Arc<dyn Middleware> = mw.clone();
    let up = Held::new(0);
    // Four streams waiting on the upstream; each goes to the VM with the fewest streams,
    // so they alternate: 0 and 2 on the first VM, 1 and 3 on the second.
    let mut held = Vec::new();
    for i in 0..4 {
        let (mw, to) = (as_dyn.clone(), up.clone());
        held.push(tokio::spawn(
            async move { run_on(&mw, &*to, &[], None).await },
        ));
        up_wait(&up, i + 1).await;
    }
    // The fifth goes to the first VM (2 streams each) and traps in on_request_headers.
    let r = run(&as_dyn, &upstream(Duration::ZERO), &[("x-trap", "1")], None)
        .await
        .unwrap();
    assert_failed_closed(r, "m", &format!("{e}")).await;
    up.gate.add_permits(4);
    let mut results = Vec::new();
    for t in held {
        results.push(t.await.unwrap());
    }
    for (i, r) in results.into_iter().enumerate() {
        let r = r.unwrap_or_else(|err| panic!("{e} {i}: {err}"));
        match i % 2 {
            0 => assert_failed_closed(r, "m", &format!("{e} {i}")).await,
            _ => assert_eq!(r.status, StatusCode::OK, "{e} {i}"),
        }
    }
    // A fresh VM replaces the poisoned one, and new streams are served.
    for _ in 0..200 {
        if mw.vms_created() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(mw.vms_created(), 3, "{e}");
    for _ in 0..4 {
        let r = run(&as_dyn, &upstream(Duration::ZERO), &[], None)
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::OK, "{e}");
    }
    assert_eq!(mw.live_streams(), 0, "{e}");
}
parity!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async a_trap_poisons_only_its_vm
);

async fn up_wait(up: &Held, n: usize) {
    tokio::time::timeout(Duration::from_secs(10), up.until_arrived(n))
        .await
        .expect("the stream reached the upstream");
}

/// A root context that sends one http call to `auth` on every tick (1 ms) and counts the
/// answers in the metric `answers`: far more calls over its life than the cap on calls out.
fn root_caller_wat() -> String {
    let call_headers = serialize([
        (&b":method"[..], &b"GET"[..]),
        (&b":path"[..], &b"/tick"[..]),
        (&b":authority"[..], &b"auth"[..]),
    ]);
    format!(
        r#"(module
  (import "env" "proxy_http_call" (func $http_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_tick_period_milliseconds" (func $tick (param i32) (result i32)))
  (import "env" "proxy_define_metric" (func $define (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_increment_metric" (func $incr (param i32 i64) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (global $answers (mut i32) (i32.const 0))
  (global $refused (mut i32) (i32.const 0))
  (data (i32.const 0) "auth")
  (data (i32.const 16) "answers")
  (data (i32.const 32) "refused")
  (data (i32.const 64) "{call_headers}")
  (export "proxy_abi_version_0_2_1" (func $marker))
  (func $marker)
  (func (export "malloc") (param i32) (result i32) (local i32)
    global.get $heap local.set 1
    global.get $heap local.get 0 i32.add global.set $heap
    local.get 1)
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $define (i32.const 0) (i32.const 16) (i32.const 7) (i32.const 48)))
    (global.set $answers (i32.load (i32.const 48)))
    (drop (call $define (i32.const 0) (i32.const 32) (i32.const 7) (i32.const 48)))
    (global.set $refused (i32.load (i32.const 48)))
    (drop (call $tick (i32.const 1)))
    (i32.const 1))
  (func (export "proxy_on_tick") (param i32)
    (if (call $http_call (i32.const 0) (i32.const 4) (i32.const 64) (i32.const {call_len})
          (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 5000) (i32.const 52))
      (then (drop (call $incr (global.get $refused) (i64.const 1))))))
  (func (export "proxy_on_http_call_response") (param i32 i32 i32 i32 i32)
    (drop (call $incr (global.get $answers) (i64.const 1)))))"#,
        call_headers = esc(&call_headers),
        call_len = call_headers.len(),
    )
}

// The cap counts calls out, not calls made: every answer gives its slot back, so a root context
// that calls on every tick goes on well past MAX_CALLS_OUT calls and is never refused.
async fn a_root_context_calls_on_past_the_cap_on_calls_out(e: EngineKind) {
    let plugin = plugin(e, &root_caller_wat(), opts()).unwrap();
    let _mw = plugin
        .middleware_with_services("pw-mw", Vec::new(), services())
        .unwrap();
    let vm = plugin.proxy_wasm().unwrap().vm().clone();
    let want = 3 * wasmgate_abi::proxy_wasm::MAX_CALLS_OUT as i64;
    let answered = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let n = vm.metric("answers").map_or(0, |m| m.value);
            if n >= want {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{e}: the root's calls stopped being answered"));
    assert!(answered >= want, "{e}");
    assert_eq!(vm.metric("refused").map_or(0, |m| m.value), 0, "{e}");
}
parity!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async a_root_context_calls_on_past_the_cap_on_calls_out);

/// The test filter with configuration `config` as middleware `m` under failure policy
/// `policy`, on `vms` VMs; its plugin holds the metrics (`entered`).
fn under_policy(
    e: EngineKind,
    config: &str,
    policy: FailurePolicy,
    vms: usize,
) -> (ProxyWasmPlugin, Arc<ProxyWasmMiddleware>) {
    let wasm = wat::parse_str(filter_wat()).unwrap();
    let info = wasmgate_engines::ModuleInfo::parse(&wasm).unwrap();
    let engine = Engines::new(None).get(e).unwrap();
    let o = PluginOptions {
        max_instances: Some(vms),
        failure_policy: policy,
        ..opts()
    };
    let p = ProxyWasmPlugin::load("pw", &wasm, &info, engine.as_ref(), o).unwrap();
    let mw = Arc::new(
        p.middleware("m", config.as_bytes().to_vec(), services())
            .unwrap(),
    );
    (p, mw)
}

/// How many times the filter's `on_request_headers` was entered, on any of its VMs.
fn entered(p: &ProxyWasmPlugin) -> i64 {
    p.vm().metric("entered").map_or(0, |m| m.value)
}

/// Waits (up to 5 s) until `mw` has created `n` VMs, then a little more, and gives the count:
/// exactly `n` unless more were created than expected.
async fn vms_created_settle(mw: &ProxyWasmMiddleware, n: u64) -> u64 {
    for _ in 0..500 {
        if mw.vms_created() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    mw.vms_created()
}

/// `closed` (the default): the trapping request gets one 503 naming the middleware, without
/// the trap text or the upstream; the next request runs on a fresh VM.
async fn closed_a_trap_gets_one_503_and_the_next_request_a_fresh_vm(e: EngineKind) {
    let (p, mw) = under_policy(e, "x1", FailurePolicy::Closed, 1);
    let as_dyn: Arc<dyn Middleware> = mw.clone();
    let up = upstream(Duration::ZERO);
    let r = run(&as_dyn, &up, &[("x-trap", "1")], Some(b"payload"))
        .await
        .unwrap();
    assert_failed_closed(r, "m", &format!("{e}")).await;
    assert_eq!(up.calls.load(Ordering::SeqCst), 0, "{e}");
    let r = run(&as_dyn, &up, &[], Some(b"payload")).await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{e}");
    assert_eq!(text(r).await, "upstream saw /path?q=1", "{e}");
    assert_eq!(&*up.seen_body.lock().unwrap(), b"payload", "{e}");
    // The trapping VM was replaced; closed replaces only that one.
    assert_eq!(mw.vms_created(), 2, "{e}");
    assert_eq!(entered(&p), 2, "{e}");
}
parity!(#[tokio::test] async closed_a_trap_gets_one_503_and_the_next_request_a_fresh_vm);

/// `open`, request phase: the request reaches the upstream as it arrived (headers, and the
/// whole body even when the filter failed after its first chunk), as if the middleware were
/// not in the chain.
async fn open_a_request_phase_failure_sends_the_request_on_as_it_came(e: EngineKind) {
    // A trap in on_request_headers, on a trap in on_request_body at the first of two chunks,
    // and a pause nothing can resume (the VM stays: it did nothing wrong to its other streams).
    for (cfg, vms) in [("x1", 2), ("x2", 2), ("p", 1)] {
        let (_p, mw) = under_policy(e, cfg, FailurePolicy::Open, 1);
        let as_dyn: Arc<dyn Middleware> = mw.clone();
        let up = upstream(Duration::ZERO);
        let headers = [("x-trap", "1"), ("x-mine", "as sent")];
        let r = run(&as_dyn, &up, &headers, Some(b"first half, second half"))
            .await
            .unwrap();
        let what = format!("{e} {cfg}");
        assert_eq!(r.status, StatusCode::OK, "{what}");
        assert_eq!(
            header(&r, wasmgate_abi::guest::FAILED_MIDDLEWARE_HEADER),
            None,
            "{what}"
        );
        assert_eq!(
            header(&r, "echo-x-mine").as_deref(),
            Some("as sent"),
            "{what}"
        );
        assert_eq!(header(&r, "echo-x-trap").as_deref(), Some("1"), "{what}");
        assert_eq!(
            header(&r, "echo-content-length").as_deref(),
            Some("23"),
            "{what}"
        );
        assert_eq!(text(r).await, "upstream saw /path?q=1", "{what}");
        assert_eq!(
            &*up.seen_body.lock().unwrap(),
            b"first half, second half",
            "{what}"
        );
        assert_eq!(up.calls.load(Ordering::SeqCst), 1, "{what}");
        assert_eq!(vms_created_settle(&mw, vms).await, vms, "{what}");
        assert_eq!(mw.live_streams(), 0, "{what}");
    }
}
parity!(#[tokio::test] async open_a_request_phase_failure_sends_the_request_on_as_it_came);

/// `open`, response phase: a trap in on_response_headers, on_response_body, or at the end of
/// the context (on_done, on_log, on_delete) gives the client the upstream's response as it
/// came.
async fn open_a_response_phase_failure_gives_the_response_as_it_came(e: EngineKind) {
    for n in 3..=7 {
        let (_p, mw) = under_policy(e, &format!("x{n}"), FailurePolicy::Open, 1);
        let as_dyn: Arc<dyn Middleware> = mw.clone();
        let up = upstream(Duration::ZERO);
        *up.reply.lock().unwrap() = Some(b"from upstream".to_vec());
        let r = run(&as_dyn, &up, &[("x-trap", "1")], None).await.unwrap();
        let what = format!("{e} callback {n}");
        assert_eq!(r.status, StatusCode::OK, "{what}");
        assert_eq!(
            header(&r, wasmgate_abi::guest::FAILED_MIDDLEWARE_HEADER),
            None,
            "{what}"
        );
        // Exactly the upstream's header fields; the request went on as it came (the filter
        // wrote nothing to its map), so its headers in their order.
        let fields: Vec<String> = r
            .headers
            .iter()
            .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v)))
            .collect();
        assert_eq!(
            fields,
            [
                "content-type: text/plain; charset=utf-8",
                "echo-host: example.com",
                "echo-x-trap: 1"
            ],
            "{what}"
        );
        assert_eq!(text(r).await, "from upstream", "{what}");
        assert_eq!(up.calls.load(Ordering::SeqCst), 1, "{what}");
        // The VM that trapped was replaced all the same.
        assert_eq!(vms_created_settle(&mw, 2).await, 2, "{what}");
    }
}
parity!(#[tokio::test] async open_a_response_phase_failure_gives_the_response_as_it_came);

/// `reload`: the first trap replaces every VM of the middleware; when the fresh ones fail
/// too, requests get the 503 without entering the guest for the first backoff step; after it
/// a request goes in again, and one that goes through ends the backoff.
async fn reload_replaces_every_vm_then_backs_off_while_it_keeps_failing(e: EngineKind) {
    let (p, mw) = under_policy(e, "x1", FailurePolicy::Reload, 2);
    let as_dyn: Arc<dyn Middleware> = mw.clone();
    let up = upstream(Duration::ZERO);
    let trap = [("x-trap", "1")];
    let r = run(&as_dyn, &up, &trap, None).await.unwrap();
    assert_failed_closed(r, "m", &format!("{e} first")).await;
    // Both VMs replaced, not only the one that trapped.
    assert_eq!(vms_created_settle(&mw, 4).await, 4, "{e}");
    assert_eq!(entered(&p), 1, "{e}");
    // The fresh ones fail too: a 503, and the backoff starts.
    let r = run(&as_dyn, &up, &trap, None).await.unwrap();
    assert_failed_closed(r, "m", &format!("{e} second")).await;
    assert_eq!(entered(&p), 2, "{e}");
    let started = std::time::Instant::now();
    for headers in [&trap[..], &[], &trap[..]] {
        let r = run(&as_dyn, &up, headers, None).await.unwrap();
        assert_failed_closed(r, "m", &format!("{e} refused")).await;
    }
    assert!(
        started.elapsed() < wasmgate_abi::guest::BACKOFF_START,
        "{e}: too slow"
    );
    // Refused without entering the guest (or reaching the upstream).
    assert_eq!(entered(&p), 2, "{e}");
    assert_eq!(up.calls.load(Ordering::SeqCst), 0, "{e}");
    tokio::time::sleep(wasmgate_abi::guest::BACKOFF_START + Duration::from_millis(100)).await;
    let r = run(&as_dyn, &up, &[], None).await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{e}");
    assert_eq!(entered(&p), 3, "{e}");
    // It went through: the streak is over, the next failure starts afresh (no refusal).
    let r = run(&as_dyn, &up, &trap, None).await.unwrap();
    assert_failed_closed(r, "m", &format!("{e} new streak")).await;
    let r = run(&as_dyn, &up, &[], None).await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{e}");
    assert_eq!(entered(&p), 5, "{e}");
}
parity!(#[tokio::test] async reload_replaces_every_vm_then_backs_off_while_it_keeps_failing);

/// One trap is one failure, however many streams it fails: under `reload`, the two streams
/// held on the VM that trapped get the 503 too, but are not counted again (which would have
/// started the backoff): the next request goes through.
async fn one_trap_is_one_failure_however_many_streams_it_fails(e: EngineKind) {
    let (_p, mw) = under_policy(e, "x1", FailurePolicy::Reload, 1);
    let as_dyn: Arc<dyn Middleware> = mw.clone();
    let up = Held::new(0);
    let mut held = Vec::new();
    for i in 0..2 {
        let (mw, to) = (as_dyn.clone(), up.clone());
        held.push(tokio::spawn(
            async move { run_on(&mw, &*to, &[], None).await },
        ));
        up_wait(&up, i + 1).await;
    }
    let r = run(&as_dyn, &upstream(Duration::ZERO), &[("x-trap", "1")], None)
        .await
        .unwrap();
    assert_failed_closed(r, "m", &format!("{e} trapped")).await;
    up.gate.add_permits(2);
    for (i, t) in held.into_iter().enumerate() {
        let r = t.await.unwrap().unwrap();
        assert_failed_closed(r, "m", &format!("{e} held {i}")).await;
    }
    let r = run(&as_dyn, &upstream(Duration::ZERO), &[], None)
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK, "{e}");
}
parity!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async one_trap_is_one_failure_however_many_streams_it_fails
);

/// A trap outside any request (the plugin's first tick traps, once) is a failure of the
/// middleware too: `closed` replaces the VM that trapped, `reload` every VM.
async fn a_trap_in_a_tick_recycles_every_vm_under_reload(e: EngineKind) {
    for (policy, want) in [(FailurePolicy::Closed, 3), (FailurePolicy::Reload, 4)] {
        let (_p, mw) = under_policy(e, "X", policy, 2);
        assert_eq!(vms_created_settle(&mw, want).await, want, "{e} {policy}");
        let as_dyn: Arc<dyn Middleware> = mw.clone();
        let up = upstream(Duration::ZERO);
        for _ in 0..3 {
            let r = run(&as_dyn, &up, &[], None).await.unwrap();
            assert_eq!(r.status, StatusCode::OK, "{e} {policy}");
        }
    }
}
parity!(#[tokio::test] async a_trap_in_a_tick_recycles_every_vm_under_reload);

/// A filter whose first VM starts and whose later ones do not (each finds the first one's
/// mark in shared data and rejects its configuration); every request traps.
const NO_SECOND_START: &str = r#"(module
  (import "env" "proxy_get_shared_data" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_shared_data" (func $set (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "started")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "malloc") (param i32) (result i32) (i32.const 4096))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    ;; OK (0): the mark is there, this is not the first VM.
    (if (i32.eqz (call $get (i32.const 0) (i32.const 7) (i32.const 16) (i32.const 20) (i32.const 24)))
      (then (return (i32.const 0))))
    (drop (call $set (i32.const 0) (i32.const 7) (i32.const 0) (i32.const 1) (i32.const 0)))
    (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) unreachable))"#;

/// No VM to run on (the trapping one's replacement cannot start) is a failure of the
/// middleware too: `closed` answers the 503 naming it, `open` sends the request on.
async fn no_vm_that_can_start_is_a_failure(e: EngineKind) {
    for policy in [FailurePolicy::Closed, FailurePolicy::Open] {
        let wasm = wat::parse_str(NO_SECOND_START).unwrap();
        let info = wasmgate_engines::ModuleInfo::parse(&wasm).unwrap();
        let engine = Engines::new(None).get(e).unwrap();
        let o = PluginOptions {
            max_instances: Some(1),
            pool_wait: Duration::from_millis(200),
            failure_policy: policy,
            ..opts()
        };
        let p = ProxyWasmPlugin::load("pw", &wasm, &info, engine.as_ref(), o).unwrap();
        let mw: Arc<dyn Middleware> = Arc::new(p.middleware("m", Vec::new(), services()).unwrap());
        let up = upstream(Duration::ZERO);
        // The trap, then no VM: both are failures.
        for what in ["trap", "no VM"] {
            let r = run(&mw, &up, &[], None).await.unwrap();
            let what = format!("{e} {policy} {what}");
            match policy {
                FailurePolicy::Open => {
                    assert_eq!(r.status, StatusCode::OK, "{what}");
                    assert_eq!(text(r).await, "upstream saw /path?q=1", "{what}");
                }
                _ => assert_failed_closed(r, "m", &what).await,
            }
        }
        let calls = if policy == FailurePolicy::Open { 2 } else { 0 };
        assert_eq!(up.calls.load(Ordering::SeqCst), calls, "{e} {policy}");
    }
}
parity!(#[tokio::test] async no_vm_that_can_start_is_a_failure);

/// A filter without body callbacks that traps when its context ends.
const TRAPS_AT_DONE: &str = r#"(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (export "proxy_abi_version_0_2_1" (func $marker))
  (func $marker)
  (func (export "malloc") (param i32) (result i32) (local i32)
    global.get $heap local.set 1
    global.get $heap local.get 0 i32.add global.set $heap
    local.get 1)
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_done") (param i32) (result i32) unreachable))"#;

// `open`, and the end of the context fails after an untouched body was handed on: the client
// still gets the upstream's body (it used to get the headers and an empty body).
async fn open_a_failure_at_the_end_keeps_an_untouched_body(e: EngineKind) {
    let wasm = wat::parse_str(TRAPS_AT_DONE).unwrap();
    let info = wasmgate_engines::ModuleInfo::parse(&wasm).unwrap();
    let engine = Engines::new(None).get(e).unwrap();
    let o = PluginOptions {
        max_instances: Some(1),
        failure_policy: FailurePolicy::Open,
        ..opts()
    };
    let p = ProxyWasmPlugin::load("pw", &wasm, &info, engine.as_ref(), o).unwrap();
    let mw: Arc<dyn Middleware> = Arc::new(p.middleware("m", Vec::new(), services()).unwrap());
    let up = upstream(Duration::ZERO);
    *up.reply.lock().unwrap() = Some(b"from upstream".to_vec());
    for _ in 0..2 {
        let r = run(&mw, &up, &[], None).await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{e}");
        assert_eq!(text(r).await, "from upstream", "{e}");
    }
}
parity!(#[tokio::test] async open_a_failure_at_the_end_keeps_an_untouched_body);

/// A filter whose request headers callback, on `x-spin`, runs a while and then traps.
const SPINS_THEN_TRAPS: &str = r#"(module
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 0) "x-spin")
  (export "proxy_abi_version_0_2_1" (func $marker))
  (func $marker)
  (func (export "malloc") (param i32) (result i32) (local i32)
    global.get $heap local.set 1
    global.get $heap local.get 0 i32.add global.set $heap
    local.get 1)
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (local $i i32)
    (if (i32.eqz (call $get (i32.const 0) (i32.const 0) (i32.const 6) (i32.const 16) (i32.const 20)))
      (then
        (loop $spin
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $spin (i32.lt_u (local.get $i) (i32.const 150000000))))
        unreachable))
    (i32.const 0)))"#;

// A stream waiting to start on a VM that another stream's trap poisons moves to the fresh VM
// instead of failing with it: only the streams that had started there fail.
async fn a_stream_waiting_for_a_vm_that_dies_moves_to_a_fresh_one(e: EngineKind) {
    let wasm = wat::parse_str(SPINS_THEN_TRAPS).unwrap();
    let info = wasmgate_engines::ModuleInfo::parse(&wasm).unwrap();
    let engine = Engines::new(None).get(e).unwrap();
    let o = PluginOptions {
        max_instances: Some(1),
        ..opts()
    };
    let p = ProxyWasmPlugin::load("pw", &wasm, &info, engine.as_ref(), o).unwrap();
    let mw: Arc<dyn Middleware> = Arc::new(p.middleware("m", Vec::new(), services()).unwrap());
    let up = upstream(Duration::ZERO);
    let hostile = {
        let (mw, up) = (mw.clone(), up.clone());
        tokio::spawn(async move { run(&mw, &up, &[("x-spin", "1")], None).await })
    };
    // The hostile stream is inside its callback (holding the only VM) by now.
    tokio::time::sleep(Duration::from_millis(30)).await;
    let waiting: Vec<_> = (0..3)
        .map(|_| {
            let (mw, up) = (mw.clone(), up.clone());
            tokio::spawn(async move { run(&mw, &up, &[], None).await })
        })
        .collect();
    let r = hostile.await.unwrap().unwrap();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{e}");
    for w in waiting {
        let r = w.await.unwrap().unwrap();
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{e}: a waiting stream failed with the VM"
        );
    }
    assert_eq!(up.calls.load(Ordering::SeqCst), 3, "{e}");
}
parity!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async a_stream_waiting_for_a_vm_that_dies_moves_to_a_fresh_one);
