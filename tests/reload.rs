//! Hot reload of the routing file.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

const INSTALL: &str = r#"entryPoints:
  web:
    address: "127.0.0.1:0"
providers:
  file:
    filename: dynamic.yaml
    watch: true
"#;

fn routing(version: &str) -> String {
    format!(
        r#"http:
  routers:
    r:
      rule: "PathPrefix(`/`)"
      middlewares: [tag]
      service: echo@internal
  middlewares:
    tag:
      headers:
        customResponseHeaders:
          X-Version: "{version}"
"#
    )
}

async fn wait_for_version(t: &TestServer, want: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = send(get(t.url("/"))).await;
        if r.header("x-version") == Some(want) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "version {want} never served; last: {:?}",
            r.header("x-version")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_file_swaps_bad_file_keeps_old_and_no_request_is_lost() {
    let t = start(&[("wasmgate.yaml", INSTALL), ("dynamic.yaml", &routing("1"))]).await;
    let _watcher = wasmgate::reload::watch(t.gateway.clone())
        .unwrap()
        .expect("watching");
    assert_eq!(send(get(t.url("/"))).await.header("x-version"), Some("1"));

    // Requests keep flowing during every swap; each must succeed on one snapshot or the other.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, sent, url) = (stop.clone(), sent.clone(), t.url("/"));
        load.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let r = send(get(url.clone())).await;
                sent.fetch_add(1, Ordering::SeqCst);
                if r.status != 200 || r.header("x-version").is_none() {
                    failures.push(format!("{} {:?}", r.status, r.header("x-version")));
                }
            }
            failures
        }));
    }

    let dynamic = t.path("dynamic.yaml");
    for v in 2..=4 {
        replace_file(&dynamic, &routing(&v.to_string()));
        wait_for_version(&t, &v.to_string()).await;
    }
    // A broken file (a router naming a service that does not exist) is rejected...
    replace_file(
        &dynamic,
        &routing("5").replace("service: echo@internal", "service: missing"),
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    // ...and the last good snapshot keeps serving.
    assert_eq!(send(get(t.url("/"))).await.header("x-version"), Some("4"));
    assert_eq!(t.gateway.snapshot().generation, 4);
    // A file that is not even YAML is rejected too.
    replace_file(&dynamic, "http: [ unclosed");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(send(get(t.url("/"))).await.header("x-version"), Some("4"));
    // Fixing the file brings reloads back.
    replace_file(&dynamic, &routing("6"));
    wait_for_version(&t, "6").await;

    stop.store(true, Ordering::SeqCst);
    for task in load {
        let failures = task.await.unwrap();
        assert!(
            failures.is_empty(),
            "requests failed during reload: {failures:?}"
        );
    }
    assert!(sent.load(Ordering::SeqCst) > 20, "load loop barely ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_errors_are_reported_with_location() {
    let t = start(&[("wasmgate.yaml", INSTALL), ("dynamic.yaml", &routing("1"))]).await;
    std::fs::write(
        t.path("dynamic.yaml"),
        routing("2").replace("service: echo@internal", "service: nowhere"),
    )
    .unwrap();
    let errors = t.gateway.reload_routing().unwrap_err();
    let text = errors.to_string();
    assert!(
        text.contains(
            "dynamic.yaml:6:7: http.routers.r.service: service \"nowhere\" does not exist"
        ),
        "{text}"
    );
    assert_eq!(t.gateway.snapshot().generation, 1);
}
