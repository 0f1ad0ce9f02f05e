//! Hot reload of the routing file.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;

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

/// How long a reload may take to be noticed: generous, it is the failure, not a pause.
const RELOAD_WAIT: Duration = Duration::from_secs(20);

/// Waits, reload by reload, until `want` is served.
async fn wait_for_version(t: &TestServer, want: &str) {
    // Subscribed before the first look: a reload between the look and the wait still wakes it.
    let mut reloads = t.gateway.reloads();
    let served = tokio::time::timeout(RELOAD_WAIT, async {
        loop {
            if send(get(t.url("/"))).await.header("x-version") == Some(want) {
                return;
            }
            reloads.changed().await.expect("the gateway is alive");
        }
    })
    .await;
    let last = send(get(t.url("/"))).await;
    assert!(
        served.is_ok(),
        "version {want} never served; last: {:?}",
        last.header("x-version")
    );
}

/// Replaces the routing file with `text` and waits until the watcher has rejected it.
async fn replace_with_rejected(t: &TestServer, text: &str) {
    let mut reloads = t.gateway.reloads();
    let rejected = reloads.borrow_and_update().rejected;
    replace_file(&t.path("dynamic.yaml"), text);
    tokio::time::timeout(RELOAD_WAIT, reloads.wait_for(|r| r.rejected > rejected))
        .await
        .expect("the reload was never rejected")
        .expect("the gateway is alive");
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
    replace_with_rejected(
        &t,
        &routing("5").replace("service: echo@internal", "service: missing"),
    )
    .await;
    // ...and the last good snapshot keeps serving.
    assert_eq!(send(get(t.url("/"))).await.header("x-version"), Some("4"));
    assert_eq!(t.gateway.snapshot().generation, 4);
    assert_eq!(t.gateway.generation(), 4);
    // A file that is not even YAML is rejected too.
    replace_with_rejected(&t, "http: [ unclosed").await;
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
    let before = *t.gateway.reloads().borrow();
    let errors = t.gateway.reload_routing().unwrap_err();
    let text = errors.to_string();
    assert!(
        text.contains(
            "dynamic.yaml:6:7: http.routers.r.service: service \"nowhere\" does not exist"
        ),
        "{text}"
    );
    assert_eq!(t.gateway.snapshot().generation, 1);
    let after = *t.gateway.reloads().borrow();
    assert_eq!(
        (after.generation, after.rejected),
        (before.generation, before.rejected + 1)
    );
    // A good file is taken: the generation counts it.
    std::fs::write(t.path("dynamic.yaml"), routing("3")).unwrap();
    assert_eq!(t.gateway.reload_routing().unwrap(), 2);
    assert_eq!(t.gateway.generation(), 2);
    assert_eq!(send(get(t.url("/"))).await.header("x-version"), Some("3"));
}

/// A proxy-wasm filter that does nothing: its middlewares need a runtime when they are created.
const IDLE_FILTER: &str = r#"(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "malloc") (param i32) (result i32) (local i32)
    global.get $heap local.set 1
    global.get $heap local.get 0 i32.add global.set $heap
    local.get 1)
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
)"#;

/// A reload asked from a thread outside the runtime (as `spawn_blocking` or any caller may)
/// still builds proxy-wasm middlewares, in the runtime the gateway was loaded for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_from_a_plain_thread_builds_proxy_wasm_middlewares_in_the_runtime() {
    let install = INSTALL.to_string() + "plugins:\n  idle:\n    path: idle.wasm\n";
    let with_filter = routing("2").replace("middlewares: [tag]", "middlewares: [tag, pw]")
        + "    pw:\n      plugin:\n        idle: {}\n";
    let dir = write_files(&[("wasmgate.yaml", &install), ("dynamic.yaml", &routing("1"))]);
    std::fs::write(
        dir.path().join("idle.wasm"),
        wat::parse_str(IDLE_FILTER).unwrap(),
    )
    .unwrap();
    let t = start_in(dir).await;
    std::fs::write(t.path("dynamic.yaml"), with_filter).unwrap();
    let gateway = t.gateway.clone();
    let reloaded = std::thread::spawn(move || gateway.reload_routing())
        .join()
        .unwrap();
    assert_eq!(reloaded.map_err(|e| e.to_string()), Ok(2));
    let r = send(get(t.url("/"))).await;
    assert_eq!((r.status, r.header("x-version")), (200, Some("2")));
}

// One write is one reload: the reload's own read of the file (an access event to the watcher)
// does not trigger another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_write_is_one_reload() {
    let t = start(&[("wasmgate.yaml", INSTALL), ("dynamic.yaml", &routing("1"))]).await;
    let _watcher = wasmgate::reload::watch(t.gateway.clone()).unwrap();
    replace_file(&t.path("dynamic.yaml"), &routing("2"));
    wait_for_version(&t, "2").await;
    let after = t.gateway.generation();
    // Several debounce periods: an echo of the reload would have reloaded again by now.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(t.gateway.generation(), after, "reloads without writes");
}
