//! `loadBalancer.healthCheck`: a server failing its checks leaves the rotation and comes back
//! when they pass; with every server out, the service answers 503.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::common::*;

/// An upstream named `name` whose `/health` answers 200 while `healthy` holds, else 503; it
/// counts the checks it gets.
async fn checked_upstream(name: &'static str) -> (SocketAddr, Arc<AtomicBool>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let healthy = Arc::new(AtomicBool::new(true));
    let checks = Arc::new(AtomicUsize::new(0));
    let (h, c) = (healthy.clone(), checks.clone());
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (h, c) = (h.clone(), c.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let (h, c) = (h.clone(), c.clone());
                    async move {
                        let mut resp = hyper::Response::new(Full::new(Bytes::from(name)));
                        if req.uri().path() == "/health" {
                            c.fetch_add(1, Ordering::SeqCst);
                            assert_eq!(req.headers()["x-check"], "1");
                            assert_eq!(req.headers()["host"], "checks.local");
                            if !h.load(Ordering::SeqCst) {
                                *resp.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
                            }
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, healthy, checks)
}

/// Which servers answer 10 requests in a row.
async fn answering(t: &TestServer) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..10 {
        let r = send(get(t.url("/"))).await;
        seen.push(format!("{} {}", r.status, r.body));
    }
    seen.sort();
    seen.dedup();
    seen
}

/// Waits (5 s at most) until `cond` holds of the servers answering.
async fn until(t: &TestServer, cond: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let seen = answering(t).await;
        if cond(&seen) || tokio::time::Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_server_leaves_the_rotation_and_comes_back() {
    let (a, a_ok, a_checks) = checked_upstream("a").await;
    let (b, b_ok, _) = checked_upstream("b").await;
    let http = format!(
        r#"http:
  routers:
    r: {{ rule: "PathPrefix(`/`)", service: s }}
  services:
    s:
      loadBalancer:
        servers: [{{ url: "http://{a}" }}, {{ url: "http://{b}" }}]
        healthCheck:
          path: /health
          interval: 50ms
          timeout: 500ms
          hostname: checks.local
          headers: {{ X-Check: "1" }}
"#
    );
    let t = start(&[("wasmgate.yaml", &inline_config(&http))]).await;
    assert_eq!(until(&t, |s| s.len() == 2).await, ["200 a", "200 b"]);
    a_ok.store(false, Ordering::SeqCst);
    assert_eq!(until(&t, |s| s == ["200 b"]).await, ["200 b"]);
    a_ok.store(true, Ordering::SeqCst);
    assert_eq!(until(&t, |s| s.len() == 2).await, ["200 a", "200 b"]);
    // Every server out: 503.
    a_ok.store(false, Ordering::SeqCst);
    b_ok.store(false, Ordering::SeqCst);
    let seen = until(&t, |s| s.iter().all(|r| r.starts_with("503"))).await;
    assert!(seen.iter().all(|r| r.starts_with("503")), "{seen:?}");
    assert!(a_checks.load(Ordering::SeqCst) >= 4);
    // A reload replaces the service; the old one's checks stop with it.
    t.gateway.reload_routing().unwrap();
    let before = a_checks.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = a_checks.load(Ordering::SeqCst) - before;
    // One service checks every 50 ms: about 6 in 300 ms; two would make about 12.
    assert!(
        during <= 9,
        "{during} checks in 300 ms: the old service still checks"
    );
}

#[test]
fn health_check_mistakes_name_the_field() {
    let http = r#"http:
  routers:
    r: { rule: "PathPrefix(`/`)", service: s }
  services:
    s:
      loadBalancer:
        servers: [{ url: "http://127.0.0.1:1" }]
        healthCheck: { path: health, interval: 1s }
"#;
    let dir = write_files(&[("wasmgate.yaml", &inline_config(http))]);
    let e = load(&dir.path().join("wasmgate.yaml"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("http.services.s.loadBalancer.healthCheck.path") && e.contains("start with /"),
        "{e}"
    );
}
