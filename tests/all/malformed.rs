//! Malformed and slow clients: answered 4xx or cut off by the proxy, never passed on.

use std::time::{Duration, Instant};

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(reply: &str) -> u16 {
    reply
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {reply:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_4xx_and_never_reach_upstream() {
    let (up, count) = counting_upstream(Duration::ZERO).await;
    let http = format!(
        r#"    http:
      maxHeaderBytes: 16384
http:
  routers:
    r: {{ rule: "PathPrefix(`/`)", service: up }}
  services:
    up:
      loadBalancer: {{ servers: [ {{ url: "http://{up}" }} ] }}
"#
    );
    let t = start(&[("wasmgate.yaml", &inline_config(&http))]).await;

    // Sanity: a well-formed request does reach the upstream.
    let ok = raw(
        t.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&ok), 200, "{ok}");
    assert_eq!(count.get(), 1);

    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "conflicting Content-Length",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde"
                .to_vec(),
            400,
        ),
        (
            "bad header bytes",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Bad\x01Name: v\r\n\r\n".to_vec(),
            400,
        ),
        (
            "header value with a bare CR",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n".to_vec(),
            400,
        ),
        ("oversized headers", big.into_bytes(), 431),
        ("not HTTP at all", b"HELLO THERE\r\n\r\n".to_vec(), 400),
    ];
    for (what, bytes, want) in cases {
        let reply = raw(t.addr, &bytes).await;
        assert_eq!(status_of(&reply), want, "{what}: {reply:?}");
    }
    assert_eq!(count.get(), 1, "a malformed request reached the upstream");
    // The proxy is still fine.
    assert_eq!(send(get(t.url("/"))).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_is_cut_off_by_the_header_timeout() {
    let http = r#"    transport:
      respondingTimeouts:
        readTimeout: 500ms
http:
  routers:
    r: { rule: "PathPrefix(`/`)", service: echo@internal }
"#;
    let t = start(&[("wasmgate.yaml", &inline_config(http))]).await;
    let mut s = TcpStream::connect(t.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    // The server must close the connection by itself, well before this generous bound.
    let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "connection was never closed");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(400),
        "closed too early: {elapsed:?}"
    );
    // Other clients are served meanwhile and after.
    assert_eq!(send(get(t.url("/"))).await.status, 200);
}
