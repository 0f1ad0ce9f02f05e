//! Request ids: every request keeps its client's sane `X-Request-Id` or gets one; the upstream
//! sees it, and the plugins' log lines and the access log line carry the same id. Real
//! requests through two middlewares running a logging guest of each ABI, on both engines.
//!
//! Plugin log lines are captured by a subscriber set as the default of this test's own threads
//! only (the test thread and its runtime's workers and blocking threads), not process-wide.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

use crate::common::*;

/// An http-wasm guest that logs at info in both handlers, and writes a line to its WASI
/// stdout for each request.
const HTTP_WASM_LOGGER: &str = r#"(module
  (import "http_handler" "log" (func $log (param i32 i32 i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "request seen")
  (data (i32.const 32) "response seen")
  (data (i32.const 48) "request stdout\n")
  (data (i32.const 64) "\30\00\00\00\0f\00\00\00")
  (func (export "handle_request") (result i64)
    (call $log (i32.const 0) (i32.const 16) (i32.const 12))
    (drop (call $fd_write (i32.const 1) (i32.const 64) (i32.const 1) (i32.const 80)))
    (i64.const 1))
  (func (export "handle_response") (param i32 i32)
    (call $log (i32.const 0) (i32.const 32) (i32.const 13))))"#;

/// A proxy-wasm (0.2.1) filter that logs at info when its VM starts (root context) and for
/// each request's headers, where it also writes a line to its WASI stdout.
const PROXY_WASM_LOGGER: &str = r#"(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "vm started")
  (data (i32.const 32) "request seen")
  (data (i32.const 48) "request stdout\n")
  (data (i32.const 64) "\30\00\00\00\0f\00\00\00")
  (global $heap (mut i32) (i32.const 16384))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (local.get $p) (i32.and (i32.add (local.get $size) (i32.const 7)) (i32.const -8))))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
    (drop (call $log (i32.const 2) (i32.const 16) (i32.const 10)))
    (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (global.set $heap (i32.const 16384))
    (drop (call $log (i32.const 2) (i32.const 32) (i32.const 12)))
    (drop (call $fd_write (i32.const 1) (i32.const 64) (i32.const 1) (i32.const 80)))
    (i32.const 0)))"#;

/// One plugin log line, as captured.
#[derive(Debug, Clone, Default)]
struct Line {
    plugin: String,
    middleware: String,
    request_id: Option<String>,
    message: String,
}

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "plugin" => self.plugin = value.to_string(),
            "middleware" => self.middleware = value.to_string(),
            "request_id" => self.request_id = Some(value.to_string()),
            "message" => self.message = value.to_string(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

/// Keeps every `wasmgate::plugin` event.
struct Capture(Arc<Mutex<Vec<Line>>>);

impl<S: Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() == "wasmgate::plugin" {
            let mut line = Line::default();
            event.record(&mut line);
            self.0.lock().unwrap().push(line);
        }
    }
}

/// Runs `test` on a runtime of its own whose threads (and this one) log to a capture at info
/// and above; returns the plugin lines captured.
fn captured<F: Future<Output = ()>>(test: impl FnOnce() -> F) -> Vec<Line> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let dispatch = Dispatch::new(
        tracing_subscriber::registry()
            .with(LevelFilter::INFO)
            .with(Capture(lines.clone())),
    );
    let on_start = dispatch.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || {
            // For the thread's life: guest calls run on workers and blocking threads.
            std::mem::forget(tracing::dispatcher::set_default(&on_start));
        })
        .build()
        .unwrap();
    tracing::dispatcher::with_default(&dispatch, || rt.block_on(test()));
    drop(rt);
    let lines = lines.lock().unwrap().clone();
    lines
}

/// The `x-request-id` the echo upstream saw.
fn upstream_id(echo: &str) -> String {
    echo.lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .unwrap_or_else(|| panic!("the upstream saw no x-request-id:\n{echo}"))
        .to_string()
}

/// Three requests through a logging guest of `abi` on `engine`: no id (one is made), a sane
/// client id (kept), a 200-character one (replaced).
fn ids_reach_the_upstream_the_plugin_log_and_the_access_log(engine: &str, abi: &str) {
    let (wat, per_request) = match abi {
        // The stdout line too: WASI output carries the call's middleware and request.
        "http-wasm" => (
            HTTP_WASM_LOGGER,
            &["request seen", "request stdout", "response seen"][..],
        ),
        _ => (PROXY_WASM_LOGGER, &["request seen", "request stdout"][..]),
    };
    let mut ids = Vec::new();
    let seen = &mut ids;
    let lines = captured(|| async move {
        let up = echo_upstream("up").await;
        let dir = write_files(&[(
            "wasmgate.yaml",
            &format!(
                r#"entryPoints:
  web:
    address: "127.0.0.1:0"
cache:
  enabled: false
accessLog:
  filePath: access.log
  format: json
plugins:
  logger:
    path: logger.wasm
    engine: {engine}
    abi: {abi}
http:
  routers:
    r: {{ rule: "PathPrefix(`/`)", middlewares: [logs, more], service: up }}
  middlewares:
    logs:
      plugin:
        logger: {{}}
    more:
      plugin:
        logger: {{}}
  services:
    up:
      loadBalancer: {{ servers: [ {{ url: "http://{up}" }} ] }}
"#
            ),
        )]);
        std::fs::write(dir.path().join("logger.wasm"), wat::parse_str(wat).unwrap()).unwrap();
        let t = start_in(dir).await;
        let long = "x".repeat(200);
        for client_id in [None, Some("client-chosen-42"), Some(long.as_str())] {
            let mut req = get(t.url("/hello"));
            if let Some(id) = client_id {
                req = req.header("X-Request-Id", id);
            }
            let r = send(req).await;
            assert_eq!(r.status, 200, "{engine} {abi}: {}", r.body);
            seen.push(upstream_id(&r.body));
        }
        let access = access_lines(&t.path("access.log"), 3).await;
        for (line, id) in access.iter().zip(seen.iter()) {
            assert_eq!(line["request_X-Request-Id"], id.as_str(), "{engine} {abi}");
        }
    });
    let what = format!("{engine} {abi}");
    // Made up when missing or insane: 32 hex digits, unique; kept when sane.
    assert_eq!(ids[1], "client-chosen-42", "{what}");
    for id in [&ids[0], &ids[2]] {
        assert!(
            id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{what}: {id}"
        );
    }
    assert_ne!(ids[0], ids[2], "{what}");
    // Each request's plugin lines carry its id, and the plugin's and middleware's names.
    for id in &ids {
        let mine: Vec<_> = lines
            .iter()
            .filter(|l| l.request_id.as_deref() == Some(id.as_str()))
            .collect();
        // Both middlewares' lines: the id goes down the chain with the request.
        let mut seen: Vec<_> = mine
            .iter()
            .map(|l| format!("{} {} {}", l.plugin, l.middleware, l.message))
            .collect();
        seen.sort();
        let mut expected: Vec<_> = ["logs", "more"]
            .iter()
            .flat_map(|m| {
                per_request
                    .iter()
                    .map(move |msg| format!("logger {m} {msg}"))
            })
            .collect();
        expected.sort();
        assert_eq!(seen, expected, "{what}: lines of {id}: {lines:#?}");
    }
    // A root context's call serves no request: its line has no id.
    if abi == "proxy-wasm" {
        let started: Vec<_> = lines.iter().filter(|l| l.message == "vm started").collect();
        assert!(!started.is_empty(), "{what}: {lines:#?}");
        assert!(
            started.iter().all(|l| l.request_id.is_none()),
            "{what}: {started:#?}"
        );
    }
}

fn http_wasm_lines_carry_the_request_id(engine: &str) {
    ids_reach_the_upstream_the_plugin_log_and_the_access_log(engine, "http-wasm");
}
parity!(http_wasm_lines_carry_the_request_id);

fn proxy_wasm_lines_carry_the_request_id(engine: &str) {
    ids_reach_the_upstream_the_plugin_log_and_the_access_log(engine, "proxy-wasm");
}
parity!(proxy_wasm_lines_carry_the_request_id);

/// The common format ends with the id, quoted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_common_access_log_ends_with_the_request_id() {
    let t = start(&[(
        "wasmgate.yaml",
        &inline_config(
            "accessLog:\n  filePath: access.log\nhttp:\n  routers:\n    r: { rule: \"PathPrefix(`/`)\", service: echo@internal }\n",
        ),
    )])
    .await;
    let r = send(get(t.url("/a")).header("X-Request-Id", "abc-1")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    for _ in 0..200 {
        let text = std::fs::read_to_string(t.path("access.log")).unwrap_or_default();
        if let Some(line) = text.lines().next() {
            assert!(line.ends_with("ms \"abc-1\""), "{line}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no access log line");
}
