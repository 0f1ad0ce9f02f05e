//! The internal entry point: `/ping` (and its terminating status while shutting down) and
//! Prometheus `/metrics` under Traefik's names, scraped after known traffic.

use std::time::Duration;

use crate::common::*;

fn install(up: std::net::SocketAddr, extra: &str) -> String {
    format!(
        r#"entryPoints:
  web:
    address: "127.0.0.1:0"
  traefik:
    address: "127.0.0.1:0"
    transport:
      lifeCycle:
        requestAcceptGraceTimeout: 1s
ping: {{}}
metrics:
  prometheus:
    addRoutersLabels: true
    buckets: [0.05, 1]
{extra}http:
  routers:
    api: {{ rule: "PathPrefix(`/api`)", service: up, entryPoints: [web] }}
    any: {{ rule: "PathPrefix(`/any`)", service: echo@internal }}
  services:
    up: {{ loadBalancer: {{ servers: [{{ url: "http://{up}" }}] }} }}
"#
    )
}

/// The value of the sample line starting with `series` (name and labels), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn metrics_count_known_traffic_under_traefiks_names() {
    let up = echo_upstream("up").await;
    let t = start(&[("wasmgate.yaml", &install(up, ""))]).await;
    let internal = t.server.as_ref().unwrap().addrs["traefik"];
    for _ in 0..3 {
        assert_eq!(send(get(t.url("/api/x"))).await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(send(get(t.url("/nowhere"))).await.status, 404);
    }
    let r = send(get(format!("http://{internal}/metrics"))).await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text"),
        "{:?}",
        r.headers
    );
    let m = &r.body;
    let web = r#"{code="200",method="GET",protocol="http",entrypoint="web"}"#;
    assert_eq!(
        sample(m, &format!("traefik_entrypoint_requests_total{web}")),
        Some(3.0),
        "{m}"
    );
    let missed = r#"{code="404",method="GET",protocol="http",entrypoint="web"}"#;
    assert_eq!(
        sample(m, &format!("traefik_entrypoint_requests_total{missed}")),
        Some(2.0),
        "{m}"
    );
    let router = r#"{code="200",method="GET",protocol="http",router="api",service="up"}"#;
    assert_eq!(
        sample(m, &format!("traefik_router_requests_total{router}")),
        Some(3.0),
        "{m}"
    );
    let service = r#"{code="200",method="GET",protocol="http",service="up"}"#;
    assert_eq!(
        sample(m, &format!("traefik_service_requests_total{service}")),
        Some(3.0),
        "{m}"
    );
    // The histogram has the configured buckets and counts every request.
    let bucket = r#"traefik_service_request_duration_seconds_bucket{le="+Inf",code="200",method="GET",protocol="http",service="up"}"#;
    assert_eq!(sample(m, bucket), Some(3.0), "{m}");
    assert!(
        m.contains(r#"_bucket{le="0.05",code="200",method="GET",protocol="http",service="up"}"#),
        "{m}"
    );
    // This scrape's own connection is open.
    let open = r#"traefik_open_connections{entrypoint="traefik",protocol="TCP"}"#;
    assert!(sample(m, open).unwrap() >= 1.0, "{m}");
    assert_eq!(sample(m, "traefik_config_reloads_total"), Some(0.0), "{m}");

    // A reload that applies, and one that is refused.
    t.gateway.reload_routing().unwrap();
    let m = send(get(format!("http://{internal}/metrics"))).await.body;
    assert_eq!(sample(&m, "traefik_config_reloads_total"), Some(1.0), "{m}");
    assert_eq!(
        sample(&m, "traefik_config_reloads_failure_total"),
        Some(0.0),
        "{m}"
    );
    assert!(
        sample(&m, "traefik_config_last_reload_success").unwrap() > 1.7e9,
        "{m}"
    );
    // The scrapes themselves were counted on the internal entry point, under its router.
    let scrapes = r#"{code="200",method="GET",protocol="http",entrypoint="traefik"}"#;
    assert!(sample(&m, &format!("traefik_entrypoint_requests_total{scrapes}")).unwrap() >= 1.0);
}

#[tokio::test]
async fn ping_answers_on_the_internal_entry_point_and_terminates_at_shutdown() {
    let up = echo_upstream("up").await;
    let mut t = start(&[("wasmgate.yaml", &install(up, ""))]).await;
    let internal = t.server.as_ref().unwrap().addrs["traefik"];
    let r = send(get(format!("http://{internal}/ping"))).await;
    assert_eq!((r.status, r.body.as_str()), (200, "OK"));
    // Not on the other entry points: there the routers have it (none matches: 404).
    assert_eq!(send(get(t.url("/ping"))).await.status, 404);
    // A router without entryPoints serves every entry point but the internal one, as Traefik.
    assert_eq!(send(get(t.url("/any"))).await.status, 200);
    let r = send(get(format!("http://{internal}/any"))).await;
    assert_eq!(r.status, 404);
    // Shutting down: for requestAcceptGraceTimeout (1s) the entry point still accepts, and
    // /ping answers 503 so that a load balancer stops sending.
    let server = t.server.take().unwrap();
    let stopping = tokio::spawn(server.shutdown());
    let r = send(get(format!("http://{internal}/ping"))).await;
    assert_eq!((r.status, r.body.as_str()), (503, "Terminating"));
    tokio::time::timeout(Duration::from_secs(15), stopping)
        .await
        .expect("shutdown ends after the grace periods")
        .unwrap();
}

#[test]
fn the_internal_entry_point_defaults_to_8080_and_named_ones_must_exist() {
    let dir = write_files(&[(
        "wasmgate.yaml",
        "entryPoints:\n  web:\n    address: \"127.0.0.1:0\"\nping: {}\n",
    )]);
    let loaded = wasmgate::config::load(&dir.path().join("wasmgate.yaml")).unwrap();
    assert_eq!(loaded.config.entry_points["traefik"].address, ":8080");
    let dir = write_files(&[(
        "wasmgate.yaml",
        "entryPoints:\n  web:\n    address: \"127.0.0.1:0\"\nmetrics:\n  prometheus:\n    entryPoint: admin\n",
    )]);
    let e = wasmgate::config::load(&dir.path().join("wasmgate.yaml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("metrics.prometheus.entryPoint"), "{e}");
    assert!(e.contains("web"), "{e}: names the entry points that exist");
}

/// An http-wasm guest that traps on `x-trap`.
const HTTP_TRAPS: &str = r#"(module
  (import "http_handler" "get_header_values" (func $ghv (param i32 i32 i32 i32 i32) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "x-trap")
  (func (export "handle_request") (result i64)
    (if (i64.ne (call $ghv (i32.const 0) (i32.const 0) (i32.const 6) (i32.const 1024) (i32.const 0)) (i64.const 0))
      (then unreachable))
    (i64.const 1)))"#;

/// A proxy-wasm filter that counts requests in its own counter `seen.requests`.
const FILTER_COUNTS: &str = r#"(module
  (import "env" "proxy_define_metric" (func $define (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_increment_metric" (func $incr (param i32 i64) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (global $seen (mut i32) (i32.const 0))
  (data (i32.const 16) "seen.requests")
  (export "proxy_abi_version_0_2_1" (func $marker))
  (func $marker)
  (func (export "malloc") (param i32) (result i32) (local i32)
    global.get $heap local.set 1
    global.get $heap local.get 0 i32.add global.set $heap
    local.get 1)
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $define (i32.const 0) (i32.const 16) (i32.const 13) (i32.const 48)))
    (global.set $seen (i32.load (i32.const 48)))
    (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $incr (global.get $seen) (i64.const 1)))
    (i32.const 0)))"#;

async fn plugin_metrics_count_calls_failures_instances_and_filter_metrics(engine: &str) {
    let install = format!(
        r#"entryPoints:
  web:
    address: "127.0.0.1:0"
  traefik:
    address: "127.0.0.1:0"
metrics:
  prometheus: {{}}
cache:
  enabled: false
plugins:
  hw: {{ path: hw.wasm, engine: {engine} }}
  pw: {{ path: pw.wasm, engine: {engine}, maxInstances: 1 }}
http:
  routers:
    r: {{ rule: "PathPrefix(`/`)", middlewares: [traps, counts], service: echo@internal, entryPoints: [web] }}
  middlewares:
    traps: {{ plugin: {{ hw: {{}} }} }}
    counts: {{ plugin: {{ pw: {{}} }} }}
"#
    );
    let dir = write_files(&[("wasmgate.yaml", &install)]);
    std::fs::write(
        dir.path().join("hw.wasm"),
        wat::parse_str(HTTP_TRAPS).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("pw.wasm"),
        wat::parse_str(FILTER_COUNTS).unwrap(),
    )
    .unwrap();
    let t = start_in(dir).await;
    let internal = t.server.as_ref().unwrap().addrs["traefik"];
    for _ in 0..4 {
        assert_eq!(send(get(t.url("/"))).await.status, 200, "{engine}");
    }
    let r = send(get(t.url("/")).header("x-trap", "1")).await;
    assert_eq!(r.status, 503, "{engine}");
    let m = send(get(format!("http://{internal}/metrics"))).await.body;
    let hw = r#"{middleware="traps",plugin="hw",phase="handle_request"}"#;
    assert_eq!(
        sample(&m, &format!("wasmgate_plugin_calls_total{hw}")),
        Some(5.0),
        "{m}"
    );
    // Timed, since metrics are on.
    assert!(sample(&m, &format!("wasmgate_plugin_call_seconds_total{hw}")).unwrap() > 0.0);
    let traps = r#"{middleware="traps",plugin="hw"}"#;
    assert_eq!(
        sample(&m, &format!("wasmgate_plugin_failures_total{traps}")),
        Some(1.0),
        "{m}"
    );
    let mem = sample(&m, &format!("wasmgate_plugin_memory_bytes{traps}"));
    assert!(mem.unwrap() >= 65536.0, "{mem:?} {m}");
    let idle = r#"{middleware="traps",plugin="hw",state="idle"}"#;
    assert!(
        sample(&m, &format!("wasmgate_plugin_instances{idle}")).unwrap() >= 1.0,
        "{m}"
    );
    let pw = r#"{middleware="counts",plugin="pw",phase="request_headers"}"#;
    assert_eq!(
        sample(&m, &format!("wasmgate_plugin_calls_total{pw}")),
        Some(4.0),
        "{m}"
    );
    let vms = r#"{middleware="counts",plugin="pw",state="idle"}"#;
    assert_eq!(
        sample(&m, &format!("wasmgate_plugin_instances{vms}")),
        Some(1.0),
        "{m}"
    );
    // The filter's own counter, under its plugin's name (the trapped request never reached it).
    assert_eq!(sample(&m, "pw_seen_requests_total"), Some(4.0), "{m}");
}
parity!(async plugin_metrics_count_calls_failures_instances_and_filter_metrics);

#[tokio::test]
async fn api_rawdata_shows_the_routing_served_with_plugin_configs_redacted() {
    let install = r#"entryPoints:
  web:
    address: "127.0.0.1:0"
  traefik:
    address: "127.0.0.1:0"
api:
  insecure: true
cache:
  enabled: false
plugins:
  noop: { path: noop.wasm }
http:
  routers:
    r: { rule: "PathPrefix(`/`)", middlewares: [guard], service: echo@internal }
  middlewares:
    guard: { plugin: { noop: { token: s3cret } } }
"#;
    let dir = write_files(&[("wasmgate.yaml", install)]);
    let wat = r#"(module (memory (export "memory") 1)
        (func (export "handle_request") (result i64) (i64.const 1)))"#;
    std::fs::write(dir.path().join("noop.wasm"), wat::parse_str(wat).unwrap()).unwrap();
    let t = start_in(dir).await;
    let internal = t.server.as_ref().unwrap().addrs["traefik"];
    let r = send(get(format!("http://{internal}/api/rawdata"))).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let raw: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(raw["routers"]["r@file"]["rule"], "PathPrefix(`/`)");
    assert_eq!(raw["routers"]["r@file"]["status"], "enabled");
    assert_eq!(
        raw["middlewares"]["guard@file"]["plugin"]["noop"],
        "<redacted>"
    );
    assert!(!r.body.contains("s3cret"), "{}", r.body);
    assert_eq!(raw["generation"], 1);
    // Not on the other entry points: there the router has it (the echo service answers).
    let r = send(get(t.url("/api/rawdata"))).await;
    assert_eq!(r.status, 200);
    assert!(r.body.starts_with("Name: echo@internal"), "{}", r.body);
}
