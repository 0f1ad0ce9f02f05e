//! http-wasm plugins built with the http-wasm-guest SDK, run in the proxy over real HTTP, on both engines.

use std::time::Duration;

use crate::common::*;

fn install(plugins: &[(&str, &str, &str)], http: &str) -> String {
    let mut s = String::from(
        "entryPoints:\n  web:\n    address: \"127.0.0.1:0\"\ncache:\n  enabled: false\nplugins:\n",
    );
    for (name, file, engine) in plugins {
        let path = example_plugin(file);
        s += &format!(
            "  {name}:\n    path: \"{}\"\n    engine: {engine}\n",
            path.display()
        );
    }
    s + http
}

async fn add_headers_plugin_adds_its_headers(engine: &str) {
    let up = echo_upstream("up").await;
    let http = format!(
        r#"http:
  routers:
    r: {{ rule: "PathPrefix(`/`)", middlewares: [demo], service: up }}
  middlewares:
    demo:
      plugin:
        example: {{ headers: {{ Foo: Bar, X-Engine: "{engine}" }} }}
  services:
    up:
      loadBalancer: {{ servers: [ {{ url: "http://{up}" }} ] }}
"#
    );
    let t = start(&[(
        "wasmgate.yaml",
        &install(&[("example", "add-headers", engine)], &http),
    )])
    .await;
    for _ in 0..3 {
        let r = send(get(t.url("/hello?x=1"))).await;
        assert_eq!(r.status, 200, "{engine}: {}", r.body);
        assert!(r.body.contains("\nfoo: Bar\n"), "{engine}: {}", r.body);
        assert!(
            r.body.contains(&format!("\nx-engine: {engine}\n")),
            "{engine}: {}",
            r.body
        );
        assert!(
            r.body.contains("GET /hello?x=1 HTTP/1.1"),
            "{engine}: {}",
            r.body
        );
    }
}
parity!(async add_headers_plugin_adds_its_headers);

async fn deny_path_plugin_answers_itself_and_the_upstream_never_sees_it(engine: &str) {
    let (up, count) = counting_upstream(Duration::ZERO).await;
    let http = format!(
        r#"http:
  routers:
    r: {{ rule: "PathPrefix(`/`)", middlewares: [guard], service: up }}
  middlewares:
    guard:
      plugin:
        deny: {{ paths: [/admin], status: 403, body: "no entry\n" }}
  services:
    up:
      loadBalancer: {{ servers: [ {{ url: "http://{up}" }} ] }}
"#
    );
    let t = start(&[(
        "wasmgate.yaml",
        &install(&[("deny", "deny-path", engine)], &http),
    )])
    .await;
    let r = send(get(t.url("/admin/users"))).await;
    assert_eq!(r.status, 403, "{engine}");
    assert_eq!(r.body, "no entry\n", "{engine}");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(count.get(), 0);
    let r = send(get(t.url("/public"))).await;
    assert_eq!(r.status, 200, "{engine}");
    assert_eq!(r.body, "counted");
    assert_eq!(count.get(), 1);
}
parity!(async deny_path_plugin_answers_itself_and_the_upstream_never_sees_it);

async fn rewrite_body_plugin_uses_buffer_response(engine: &str) {
    let up = echo_upstream("up").await;
    let http = format!(
        r#"http:
  routers:
    r: {{ rule: "PathPrefix(`/`)", middlewares: [rewrite], service: up }}
  middlewares:
    rewrite:
      plugin:
        rewrite: {{ from: "hello", to: "goodbye" }}
  services:
    up:
      loadBalancer: {{ servers: [ {{ url: "http://{up}" }} ] }}
"#
    );
    let t = start(&[(
        "wasmgate.yaml",
        &install(&[("rewrite", "rewrite-body", engine)], &http),
    )])
    .await;
    let r = send(Req {
        method: "POST",
        url: t.url("/say"),
        headers: vec![],
        body: "hello world, hello again",
    })
    .await;
    assert_eq!(r.status, 200, "{engine}");
    assert!(
        r.body.ends_with("\n\ngoodbye world, goodbye again"),
        "{engine}: {}",
        r.body
    );
    assert_eq!(r.header("x-rewritten"), Some("1"));
    assert_eq!(
        r.header("content-length")
            .map(|l| l.parse::<usize>().unwrap()),
        Some(r.body.len())
    );
}
parity!(async rewrite_body_plugin_uses_buffer_response);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_chain_on_two_engines_with_a_builtin_between() {
    let up = echo_upstream("up").await;
    let http = format!(
        r#"http:
  routers:
    r: {{ rule: "PathPrefix(`/`)", middlewares: [guard, builtin, demo], service: up }}
  middlewares:
    guard: {{ plugin: {{ deny: {{ paths: [/secret] }} }} }}
    builtin: {{ headers: {{ customRequestHeaders: {{ X-Builtin: "yes" }} }} }}
    demo: {{ plugin: {{ example: {{ headers: {{ X-Plugin: "yes" }} }} }} }}
  services:
    up:
      loadBalancer: {{ servers: [ {{ url: "http://{up}" }} ] }}
"#
    );
    let t = start(&[(
        "wasmgate.yaml",
        &install(
            &[
                ("deny", "deny-path", "wasmtime"),
                ("example", "add-headers", "wasmer"),
            ],
            &http,
        ),
    )])
    .await;
    let r = send(get(t.url("/open"))).await;
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains("\nX-Builtin: yes\n") || r.body.contains("\nx-builtin: yes\n"),
        "{}",
        r.body
    );
    assert!(r.body.contains("\nx-plugin: yes\n"), "{}", r.body);
    assert_eq!(send(get(t.url("/secret"))).await.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_local_plugin_layout_runs_the_same_plugin() {
    let wasm = std::fs::read(example_plugin("add-headers")).unwrap();
    let dir = write_files(&[
        (
            "wasmgate.yaml",
            "entryPoints:\n  web:\n    address: \"127.0.0.1:0\"\ncache:\n  enabled: false\nexperimental:\n  localPlugins:\n    demo:\n      moduleName: github.com/acme/demo\nhttp:\n  routers:\n    r: { rule: \"PathPrefix(`/`)\", middlewares: [demo], service: echo@internal }\n  middlewares:\n    demo:\n      plugin:\n        demo:\n          headers:\n            X-From-Traefik-Layout: \"1\"\n",
        ),
        (
            "plugins-local/src/github.com/acme/demo/.traefik.yml",
            "displayName: Demo\ntype: middleware\nruntime: wasm\ntestData:\n  headers: { Foo: Bar }\n",
        ),
    ]);
    std::fs::write(
        dir.path()
            .join("plugins-local/src/github.com/acme/demo/plugin.wasm"),
        wasm,
    )
    .unwrap();
    let gateway = load(&dir.path().join("wasmgate.yaml")).unwrap();
    let server = wasmgate::proxy::start(gateway).await.unwrap();
    let r = send(get(format!("http://{}/", server.addrs["web"]))).await;
    assert!(
        r.body.contains("\nx-from-traefik-layout: 1\n"),
        "{}",
        r.body
    );
}

#[test]
fn plugin_errors_are_config_errors_naming_the_problem() {
    // A guest whose configuration it cannot parse fails at start-up: a config error, not a 500 later.
    let bad_config = install(
        &[("example", "add-headers", "wasmtime")],
        "http:\n  middlewares:\n    demo:\n      plugin:\n        example: \"this is not JSON\"\n",
    );
    let dir = write_files(&[("wasmgate.yaml", &bad_config)]);
    let e = load(&dir.path().join("wasmgate.yaml"))
        .err()
        .expect("must fail")
        .to_string();
    assert!(e.contains("http.middlewares.demo.plugin.example"), "{e}");
    assert!(e.contains("start-up"), "{e}");

    // A module importing a function the host lacks: named by module and function.
    let wat = r#"(module
        (import "http_handler" "get_uri" (func (param i32 i32) (result i32)))
        (import "http_handler" "no_such_function" (func (param i32)))
        (memory (export "memory") 1)
        (func (export "handle_request") (result i64) (i64.const 1)))"#;
    let dir = write_files(&[
        ("wasmgate.yaml", "plugins:\n  odd:\n    path: odd.wasm\n"),
        ("odd.wasm", ""),
    ]);
    std::fs::write(dir.path().join("odd.wasm"), wat::parse_str(wat).unwrap()).unwrap();
    let e = load(&dir.path().join("wasmgate.yaml"))
        .err()
        .expect("must fail")
        .to_string();
    assert!(e.contains("wasmgate.yaml:2:3: plugins.odd:"), "{e}");
    assert!(e.contains("http_handler.no_such_function"), "{e}");
}

async fn a_trapping_guest_gets_what_its_failure_policy_says(engine: &str) {
    let wat = r#"(module (memory (export "memory") 1)
        (func (export "handle_request") (result i64) unreachable))"#;
    let install = format!(
            "entryPoints:\n  web:\n    address: \"127.0.0.1:0\"\ncache:\n  enabled: false\nplugins:\n  boom:\n    path: boom.wasm\n    engine: {engine}\nhttp:\n  routers:\n    r: {{ rule: \"PathPrefix(`/`)\", middlewares: [boom], service: echo@internal }}\n    o: {{ rule: \"PathPrefix(`/open`)\", middlewares: [boom-open], service: echo@internal }}\n  middlewares:\n    boom: {{ plugin: {{ boom: {{}} }} }}\n    boom-open: {{ plugin: {{ boom: {{}} }}, failurePolicy: open }}\n"
        );
    let dir = write_files(&[("wasmgate.yaml", &install)]);
    std::fs::write(dir.path().join("boom.wasm"), wat::parse_str(wat).unwrap()).unwrap();
    let gateway = load(&dir.path().join("wasmgate.yaml")).unwrap();
    let server = wasmgate::proxy::start(gateway).await.unwrap();
    for _ in 0..3 {
        // closed, the default: one 503 naming the middleware, never the trap text.
        let r = send(get(format!("http://{}/", server.addrs["web"]))).await;
        assert_eq!(r.status, 503, "{engine}");
        assert_eq!(r.header("x-wasmgate-failed-middleware"), Some("boom"));
        assert_eq!(r.body, "", "{engine}: the trap text stays in the log");
        // open: the request skips the middleware and reaches the service.
        let r = send(get(format!("http://{}/open", server.addrs["web"]))).await;
        assert_eq!(r.status, 200, "{engine}");
        assert!(r.header("x-wasmgate-failed-middleware").is_none());
    }
}
parity!(async a_trapping_guest_gets_what_its_failure_policy_says);

/// 20 slow clients each hold an instance of the plugin route while 20 more requests come.
/// With the default (no cap) those are served; with `maxInstances: 16` the holders take every
/// instance and the others get 503 after poolWait, which shows the holders really hold instances.
async fn slow_body_senders(engine: &str, cap: &str) {
    use tokio::io::AsyncWriteExt;
    let up = echo_upstream("up").await;
    let http = format!(
        r#"http:
  routers:
    r: {{ rule: "PathPrefix(`/`)", middlewares: [demo], service: up }}
  middlewares:
    demo:
      plugin:
        example: {{ headers: {{ Foo: Bar }} }}
  services:
    up:
      loadBalancer: {{ servers: [ {{ url: "http://{up}" }} ] }}
"#
    );
    let t = start(&[(
        "wasmgate.yaml",
        &install(&[("example", "add-headers", engine)], &http).replace(
            &format!("    engine: {engine}\n"),
            &format!("    engine: {engine}\n{cap}"),
        ),
    )])
    .await;
    // 20 clients (more than the 16 warm instances) send a POST head and 10 bytes of a
    // 100 kB body, then wait: each request holds an instance while it is in flight.
    let mut holders = Vec::new();
    for _ in 0..20 {
        let mut s = tokio::net::TcpStream::connect(t.addr).await.unwrap();
        s.write_all(
            b"POST /upload HTTP/1.1\r\nhost: demo\r\ncontent-length: 100000\r\n\r\n0123456789",
        )
        .await
        .unwrap();
        holders.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Requests through the same plugin route are still served, at once (poolWait is 5s).
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let url = t.url("/");
        tasks.push(tokio::spawn(async move {
            let started = std::time::Instant::now();
            (send(get(url)).await.status, started.elapsed())
        }));
    }
    for task in tasks {
        let (status, took) = task.await.unwrap();
        if cap.is_empty() {
            assert_eq!(status, 200, "{engine}");
            assert!(took < Duration::from_secs(4), "{engine}: waited {took:?}");
        } else {
            assert_eq!(status, 503, "{engine} with a cap");
        }
    }
    drop(holders);
}

async fn slow_body_senders_do_not_starve_a_plugin_route(engine: &str) {
    slow_body_senders(engine, "").await;
}
parity!(async slow_body_senders_do_not_starve_a_plugin_route);

async fn slow_body_senders_hold_every_capped_instance(engine: &str) {
    slow_body_senders(engine, "    maxInstances: 16\n    poolWait: 200ms\n").await;
}
parity!(async slow_body_senders_hold_every_capped_instance);

async fn a_buffering_plugin_reads_the_body_before_taking_an_instance(engine: &str) {
    use tokio::io::AsyncWriteExt;
    // `buffer_request` from start-up: the body must be whole before the guest runs.
    const BUFFERING: &str = r#"(module
      (import "http_handler" "enable_features" (func $ef (param i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "_start") (drop (call $ef (i32.const 1))))
      (func (export "handle_request") (result i64) (i64.const 1))
      (func (export "handle_response") (param i32 i32)))"#;
    let up = echo_upstream("up").await;
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("buffering.wasm");
    std::fs::write(&wasm, wat::parse_str(BUFFERING).unwrap()).unwrap();
    // One instance at most: a slow client holding it would make the next request wait.
    let config = format!(
            "entryPoints:\n  web:\n    address: \"127.0.0.1:0\"\ncache:\n  enabled: false\nplugins:\n  buf:\n    path: \"{}\"\n    engine: {engine}\n    poolSize: 1\n    maxInstances: 1\n    poolWait: 200ms\nhttp:\n  routers:\n    r: {{ rule: \"PathPrefix(`/`)\", middlewares: [b], service: up }}\n  middlewares:\n    b: {{ plugin: {{ buf: {{}} }} }}\n  services:\n    up: {{ loadBalancer: {{ servers: [ {{ url: \"http://{up}\" }} ] }} }}\n",
            wasm.display()
        );
    let t = start(&[("wasmgate.yaml", &config)]).await;
    let mut slow = tokio::net::TcpStream::connect(t.addr).await.unwrap();
    slow.write_all(b"POST / HTTP/1.1\r\nhost: demo\r\ncontent-length: 100000\r\n\r\n0123456789")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(send(get(t.url("/"))).await.status, 200, "{engine}");
    drop(slow);
}
parity!(async a_buffering_plugin_reads_the_body_before_taking_an_instance);

/// Sends a POST of `len` bytes on a raw connection (the body written alongside, as the server
/// may stop reading it), then, if the connection stays open, a GET for `/echo` on it; the
/// response heads, lowercased (the second empty when the connection was closed).
async fn raw_post_then_get(addr: std::net::SocketAddr, path: &str, len: usize) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let head = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n");
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await.unwrap();
        let _ = wr.write_all(&vec![b'a'; len]).await;
        wr
    });
    async fn read_head(rd: &mut tokio::net::tcp::OwnedReadHalf) -> String {
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while !got.ends_with(b"\r\n\r\n") {
            let n = tokio::time::timeout(std::time::Duration::from_secs(10), rd.read(&mut byte))
                .await
                .expect("an answer")
                .unwrap_or(0);
            if n == 0 {
                break;
            }
            got.push(byte[0]);
        }
        String::from_utf8_lossy(&got).to_lowercase()
    }
    let first = read_head(&mut rd).await;
    if first.contains("connection: close") {
        return (first, String::new());
    }
    // Skip the first body (its length is in the head), then ask again on the connection.
    let n: usize = first
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; n];
    rd.read_exact(&mut body).await.unwrap();
    let mut wr = writer.await.unwrap();
    wr.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    (first, read_head(&mut rd).await)
}

// A guest that fails without reading the request body: as Go's server, what is left of a small
// body is read so the connection carries the next request; a large one closes the connection,
// and the answer says so, so a keep-alive client does not send its next request into it.
async fn a_body_left_unread_is_drained_when_small_else_the_connection_closes_and_says_so(
    engine: &str,
) {
    let wat = r#"(module (memory (export "memory") 1)
        (func (export "handle_request") (result i64) unreachable))"#;
    let install = format!(
            "entryPoints:\n  web:\n    address: \"127.0.0.1:0\"\ncache:\n  enabled: false\nplugins:\n  boom:\n    path: boom.wasm\n    engine: {engine}\nhttp:\n  routers:\n    r: {{ rule: \"PathPrefix(`/boom`)\", middlewares: [boom], service: echo@internal }}\n    e: {{ rule: \"PathPrefix(`/echo`)\", service: echo@internal }}\n  middlewares:\n    boom: {{ plugin: {{ boom: {{}} }} }}\n"
        );
    let dir = write_files(&[("wasmgate.yaml", &install)]);
    std::fs::write(dir.path().join("boom.wasm"), wat::parse_str(wat).unwrap()).unwrap();
    let t = start_in(dir).await;
    let (first, second) = raw_post_then_get(t.addr, "/boom", 60_000).await;
    assert!(first.starts_with("http/1.1 503"), "{engine}: {first}");
    assert!(!first.contains("connection: close"), "{engine}: {first}");
    assert!(second.starts_with("http/1.1 200"), "{engine}: {second}");
    let (first, second) = raw_post_then_get(t.addr, "/boom", 1 << 20).await;
    assert!(first.starts_with("http/1.1 503"), "{engine}: {first}");
    assert!(first.contains("connection: close"), "{engine}: {first}");
    assert_eq!(second, "");
}
parity!(async a_body_left_unread_is_drained_when_small_else_the_connection_closes_and_says_so);
