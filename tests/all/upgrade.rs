//! HTTP/1.1 upgrades (WebSocket): the upgrade request and the 101 pass through a plugin, then
//! bytes flow both ways between the client and the upstream.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;

/// An upstream that switches to protocol `echo` and then sends back what it gets; its 101
/// names the `x-seen` request header it got (the plugin's mark).
async fn echo_upgrade_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let head = read_head(&mut s).await;
                let seen = head
                    .lines()
                    .find_map(|l| l.strip_prefix("x-seen: "))
                    .unwrap_or("none")
                    .trim()
                    .to_string();
                let upgrade =
                    head.contains("upgrade: echo") && head.contains("connection: upgrade");
                if !upgrade {
                    let _ = s
                        .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return;
                }
                let reply = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\nX-Upstream-Saw: {seen}\r\n\r\n"
                );
                s.write_all(reply.as_bytes()).await.unwrap();
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Reads an HTTP head, lowercased.
async fn read_head(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte))
            .await
            .expect("a head")
            .unwrap();
        if n == 0 {
            break;
        }
        got.push(byte[0]);
    }
    String::from_utf8_lossy(&got).to_lowercase()
}

/// Marks the request (`x-seen: 1`) and, seeing the response (buffered), marks it too.
const MARKS_BOTH: &str = r#"(module
  (import "http_handler" "set_header_value" (func $shv (param i32 i32 i32 i32 i32)))
  (import "http_handler" "enable_features" (func $ef (param i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "x-seen")
  (data (i32.const 16) "x-plugin-saw")
  (data (i32.const 32) "1")
  (func (export "handle_request") (result i64)
    (drop (call $ef (i32.const 2)))
    (call $shv (i32.const 0) (i32.const 0) (i32.const 6) (i32.const 32) (i32.const 1))
    (i64.const 1))
  (func (export "handle_response") (param i32 i32)
    (call $shv (i32.const 1) (i32.const 16) (i32.const 12) (i32.const 32) (i32.const 1))))"#;

async fn a_websocket_upgrade_passes_through_a_plugin_both_ways(engine: &str) {
    let up = echo_upgrade_upstream().await;
    let install = format!(
        "entryPoints:\n  web:\n    address: \"127.0.0.1:0\"\n    transport:\n      respondingTimeouts:\n        readTimeout: 1s\n        idleTimeout: 1s\ncache:\n  enabled: false\nplugins:\n  marks:\n    path: marks.wasm\n    engine: {engine}\nhttp:\n  routers:\n    r: {{ rule: \"PathPrefix(`/`)\", middlewares: [marks], service: up }}\n  middlewares:\n    marks: {{ plugin: {{ marks: {{}} }} }}\n  services:\n    up: {{ loadBalancer: {{ servers: [{{ url: \"http://{up}\" }}] }} }}\n"
    );
    let dir = write_files(&[("wasmgate.yaml", &install)]);
    std::fs::write(
        dir.path().join("marks.wasm"),
        wat::parse_str(MARKS_BOTH).unwrap(),
    )
    .unwrap();
    let t = start_in(dir).await;
    let mut s = TcpStream::connect(t.addr).await.unwrap();
    s.write_all(b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("http/1.1 101"), "{engine}: {head}");
    assert!(head.contains("upgrade: echo"), "{engine}: {head}");
    assert!(head.contains("connection: upgrade"), "{engine}: {head}");
    // The plugin saw the request (the upstream got its mark) and the 101.
    assert!(head.contains("x-upstream-saw: 1"), "{engine}: {head}");
    assert!(head.contains("x-plugin-saw: 1"), "{engine}: {head}");
    // Now the connection is the upstream's protocol, both ways, past readTimeout and
    // idleTimeout (1 s): those are HTTP's, not the upgraded protocol's.
    for msg in [&b"hello"[..], b"over the upgraded connection"] {
        s.write_all(msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
            .await
            .expect("echoed")
            .unwrap();
        assert_eq!(back, msg, "{engine}");
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }
}
parity!(async a_websocket_upgrade_passes_through_a_plugin_both_ways);

#[tokio::test]
async fn an_upgrade_to_an_upstream_that_refuses_is_its_answer() {
    let (up, _count) = counting_upstream(Duration::ZERO).await;
    let http = format!(
        "http:\n  routers:\n    r: {{ rule: \"PathPrefix(`/`)\", service: up }}\n  services:\n    up: {{ loadBalancer: {{ servers: [{{ url: \"http://{up}\" }}] }} }}\n"
    );
    let t = start(&[("wasmgate.yaml", &inline_config(&http))]).await;
    let mut s = TcpStream::connect(t.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .unwrap();
    // The upstream answers 200 (no switch): the client gets that, the connection stays HTTP.
    let head = read_head(&mut s).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("upgrade: echo"), "{head}");
}
