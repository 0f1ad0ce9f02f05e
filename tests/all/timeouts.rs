//! A strict edge (issue 11, timeouts and limits): a client, or an upstream, that sends slowly
//! or not at all cannot hold wasmgate's connections forever. Each test plays one against a real
//! proxy on loopback sockets; timeouts are short, the bounds checked generous (a shared,
//! noisy machine).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An install file: entry point `web` with `entry` (indented YAML under it), routing to
/// `upstream` through servers transport `t` with `forwarding` (a YAML flow map).
fn config(entry: &str, upstream: SocketAddr, forwarding: &str) -> String {
    format!(
        r#"entryPoints:
  web:
    address: "127.0.0.1:0"
{entry}
http:
  routers:
    all: {{ rule: "PathPrefix(`/`)", service: up }}
  services:
    up:
      loadBalancer:
        servers: [ {{ url: "http://{upstream}" }} ]
        serversTransport: t
  serversTransports:
    t:
      forwardingTimeouts: {forwarding}
"#
    )
}

/// Reads until the peer closes (`Some(bytes)`) or `within` passes (`None`).
async fn read_until_closed(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match tokio::time::timeout(within, s.read_to_end(&mut out)).await {
        Ok(_) => Some(out),
        Err(_) => None,
    }
}

/// Reads one response with a `Content-Length` body; returns its status.
async fn read_response(s: &mut TcpStream) -> u16 {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("response hung")
            .unwrap();
        assert!(n > 0, "closed before a whole response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        let Some(head_end) = text.find("\r\n\r\n") else {
            continue;
        };
        let length: usize = text[..head_end]
            .lines()
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .expect("content-length");
        if buf.len() >= head_end + 4 + length {
            return text[9..12].parse().unwrap();
        }
    }
}

/// An upstream that answers every request with a head announcing `length` bytes, then sends
/// `sent` of them and keeps the connection open without a word more.
async fn upstream_sending(length: usize, sent: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read(&mut b).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let reply = format!("HTTP/1.1 200 OK\r\ncontent-length: {length}\r\n\r\n");
                if s.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'x'; 1 << 20];
                let mut left = sent;
                while left > 0 {
                    let n = left.min(chunk.len());
                    if s.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    left -= n;
                }
                // Stalls, holding the connection.
                tokio::time::sleep(Duration::from_secs(3600)).await;
            });
        }
    });
    addr
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: t.localhost\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let up = echo_upstream("up").await;
    let entry = "    transport:\n      respondingTimeouts: { idleTimeout: 300ms }";
    let t = start(&[("wasmgate.yaml", &config(entry, up, "{}"))]).await;
    let mut s = TcpStream::connect(t.addr).await.unwrap();
    s.write_all(GET).await.unwrap();
    assert_eq!(read_response(&mut s).await, 200);
    // Kept alive for a second request...
    s.write_all(GET).await.unwrap();
    assert_eq!(read_response(&mut s).await, 200);
    // ...then closed once idle for idleTimeout (the old code kept it 60s).
    let closed = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert_eq!(closed, Some(vec![]), "idle connection not closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_sent_too_slowly_is_cut_by_read_timeout() {
    let up = echo_upstream("up").await;
    let entry = "    transport:\n      respondingTimeouts: { readTimeout: 500ms }";
    let t = start(&[("wasmgate.yaml", &config(entry, up, "{}"))]).await;
    let mut s = TcpStream::connect(t.addr).await.unwrap();
    let started = Instant::now();
    s.write_all(
        b"POST / HTTP/1.1\r\nHost: t.localhost\r\nContent-Length: 100000\r\n\r\n0123456789",
    )
    .await
    .unwrap();
    let reply = read_until_closed(&mut s, Duration::from_secs(5))
        .await
        .expect("a client that stopped sending its body still holds the connection");
    let reply = String::from_utf8_lossy(&reply);
    assert!(!reply.contains(" 200 "), "the request succeeded: {reply}");
    assert!(started.elapsed() >= Duration::from_millis(400));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_whose_body_stalls_is_cut_after_idle_conn_timeout() {
    let up = upstream_sending(100_000, 10).await;
    let t = start(&[(
        "wasmgate.yaml",
        &config("", up, "{ idleConnTimeout: 500ms }"),
    )])
    .await;
    let mut s = TcpStream::connect(t.addr).await.unwrap();
    s.write_all(GET).await.unwrap();
    let reply = read_until_closed(&mut s, Duration::from_secs(5))
        .await
        .expect("the client's response hangs on a stalled upstream");
    let reply = String::from_utf8_lossy(&reply);
    // The head went out; the body ends short, with the connection.
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.len() < 1000, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_holds_the_next_client_until_one_closes() {
    let up = echo_upstream("up").await;
    let entry = "    transport:\n      maxConnections: 1";
    let t = start(&[("wasmgate.yaml", &config(entry, up, "{}"))]).await;
    let mut first = TcpStream::connect(t.addr).await.unwrap();
    first.write_all(GET).await.unwrap();
    assert_eq!(read_response(&mut first).await, 200);

    // The kernel completes the handshake (listen backlog); wasmgate does not accept yet.
    let mut second = TcpStream::connect(t.addr).await.unwrap();
    second.write_all(GET).await.unwrap();
    let mut b = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_secs(1), second.read(&mut b)).await;
    assert!(
        early.is_err(),
        "the second connection was served or refused: {early:?}"
    );

    drop(first);
    // Served, not refused, once the first is gone.
    assert_eq!(read_response(&mut second).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_response_is_cut_by_write_timeout() {
    const SIZE: usize = 64 << 20;
    let up = upstream_sending(SIZE, SIZE).await;
    let entry = "    transport:\n      respondingTimeouts: { writeTimeout: 500ms }";
    let t = start(&[("wasmgate.yaml", &config(entry, up, "{}"))]).await;
    let mut s = TcpStream::connect(t.addr).await.unwrap();
    s.write_all(GET).await.unwrap();
    // Reads nothing while the socket buffers fill and the deadline passes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = read_until_closed(&mut s, Duration::from_secs(20))
        .await
        .expect("the connection was not closed");
    assert!(
        got.len() < SIZE,
        "the whole {SIZE}-byte response was written ({} bytes)",
        got.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_header_timeout_does_not_count_a_slow_upload() {
    let up = echo_upstream("up").await;
    let t = start(&[(
        "wasmgate.yaml",
        &config("", up, "{ responseHeaderTimeout: 500ms }"),
    )])
    .await;
    let mut s = TcpStream::connect(t.addr).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: t.localhost\r\nContent-Length: 20\r\n\r\n")
        .await
        .unwrap();
    // 2 bytes every 150 ms: the upload takes some 1.5 s, three times the timeout.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        s.write_all(b"ab").await.unwrap();
    }
    // The echo upstream answers as soon as it has the whole body.
    assert_eq!(read_response(&mut s).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_after_idle_timeout() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let up = echo_upstream("up").await;
    let entry = "    transport:\n      respondingTimeouts: { idleTimeout: 300ms }";
    let t = start(&[("wasmgate.yaml", &config(entry, up, "{}"))]).await;
    let stream = TcpStream::connect(t.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let req = hyper::Request::get(format!("http://{}/", t.addr))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
    // No stream open: the server ends the connection (the old code never did).
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("idle HTTP/2 connection not closed")
        .unwrap()
        .ok();
}
