//! Routing, chains, services and errors over real loopback HTTP.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;

/// Routers for every matcher, each tagging its responses with X-Router.
fn matcher_routes() -> String {
    let routers = [
        ("host", "Host(`a.localhost`)"),
        (
            "hostregexp",
            "HostRegexp(`^[a-z]+\\\\.regexp\\\\.localhost$`)",
        ),
        ("path", "Path(`/exact`)"),
        ("pathprefix", "PathPrefix(`/prefix`)"),
        ("pathregexp", "PathRegexp(`^/v[0-9]+/items$`)"),
        ("method", "Method(`DELETE`)"),
        ("header", "Header(`X-Route`, `yes`)"),
        (
            "headerregexp",
            "HeaderRegexp(`X-Version`, `^2\\\\.[0-9]+$`)",
        ),
        ("query", "Query(`mode`, `fast`)"),
        ("clientip", "ClientIP(`127.0.0.0/8`) && Path(`/by-ip`)"),
    ];
    let mut s = String::from("http:\n  routers:\n");
    let mut mws = String::from("  middlewares:\n");
    for (name, rule) in routers {
        s += &format!(
            "    {name}:\n      rule: \"{rule}\"\n      middlewares: [tag-{name}]\n      service: echo@internal\n"
        );
        mws += &format!(
            "    tag-{name}:\n      headers:\n        customResponseHeaders:\n          X-Router: {name}\n"
        );
    }
    s + &mws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_each_matcher() {
    let t = start(&[("wasmgate.yaml", &inline_config(&matcher_routes()))]).await;
    let cases: Vec<(Req, Option<&str>)> = vec![
        (get(t.url("/")).header("host", "a.localhost"), Some("host")),
        (
            get(t.url("/")).header("host", "A.LOCALHOST:80"),
            Some("host"),
        ),
        (
            get(t.url("/")).header("host", "x.regexp.localhost"),
            Some("hostregexp"),
        ),
        (get(t.url("/exact")), Some("path")),
        (get(t.url("/prefix/more")), Some("pathprefix")),
        (get(t.url("/v2/items")), Some("pathregexp")),
        (
            Req {
                method: "DELETE",
                url: t.url("/"),
                headers: vec![],
                body: "",
            },
            Some("method"),
        ),
        (get(t.url("/")).header("x-route", "yes"), Some("header")),
        (
            get(t.url("/")).header("x-version", "2.17"),
            Some("headerregexp"),
        ),
        (get(t.url("/?a=1&mode=fast")), Some("query")),
        (get(t.url("/by-ip")), Some("clientip")),
        (get(t.url("/exact/not")), None),
        (get(t.url("/")).header("x-version", "3.0"), None),
        (get(t.url("/?mode=slow")), None),
    ];
    for (req, want) in cases {
        let what = format!("{} {} {:?}", req.method, req.url, req.headers);
        let r = send(req).await;
        match want {
            Some(router) => {
                assert_eq!(r.status, 200, "{what}");
                assert_eq!(r.header("x-router"), Some(router), "{what}");
            }
            None => assert_eq!(r.status, 404, "{what}: {r:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_defaults_to_rule_length_and_can_be_set() {
    let http = r#"http:
  routers:
    short:
      rule: "PathPrefix(`/a`)"
      middlewares: [tag-short]
      service: echo@internal
    long:
      rule: "PathPrefix(`/a/b`)"
      middlewares: [tag-long]
      service: echo@internal
    boosted:
      rule: "PathPrefix(`/z`) || PathPrefix(`/a/b/c`)"
      priority: 1
      middlewares: [tag-boosted]
      service: echo@internal
    top:
      rule: "PathPrefix(`/a/b/c/d`)"
      priority: 1000
      middlewares: [tag-top]
      service: echo@internal
  middlewares:
    tag-short: { headers: { customResponseHeaders: { X-Router: short } } }
    tag-long: { headers: { customResponseHeaders: { X-Router: long } } }
    tag-boosted: { headers: { customResponseHeaders: { X-Router: boosted } } }
    tag-top: { headers: { customResponseHeaders: { X-Router: top } } }
"#;
    let t = start(&[("wasmgate.yaml", &inline_config(http))]).await;
    for (path, want) in [
        ("/a/x", "short"),
        ("/a/b/x", "long"),
        // `boosted` has the longer rule but an explicit low priority: `long` wins.
        ("/a/b/c", "long"),
        ("/z", "boosted"),
        ("/a/b/c/d", "top"),
    ] {
        let r = send(get(t.url(path))).await;
        assert_eq!(r.header("x-router"), Some(want), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_runs_forward_on_requests_and_in_reverse_on_responses() {
    let up = echo_upstream("up").await;
    let http = format!(
        r#"http:
  routers:
    r:
      rule: "PathPrefix(`/`)"
      middlewares: [first, rest]
      service: up
  middlewares:
    first:
      headers:
        customRequestHeaders: {{ X-Order: first, X-Removed: "" }}
        customResponseHeaders: {{ X-Order: first }}
    rest:
      chain:
        middlewares: [second, strip]
    second:
      headers:
        customRequestHeaders: {{ X-Order: second }}
        customResponseHeaders: {{ X-Order: second, X-Echo-Name: "" }}
    strip:
      stripPrefix: {{ prefixes: [/api] }}
  services:
    up:
      loadBalancer: {{ servers: [ {{ url: "http://{up}" }} ] }}
"#
    );
    let t = start(&[("wasmgate.yaml", &inline_config(&http))]).await;
    let r = send(get(t.url("/api/x%20y?q=1")).header("x-removed", "gone?")).await;
    assert_eq!(r.status, 200);
    // Request phase: first, then second — the last writer wins upstream.
    assert!(r.body.contains("\nx-order: second\n"), "{}", r.body);
    assert!(
        !r.body.to_ascii_lowercase().contains("x-removed"),
        "{}",
        r.body
    );
    // The prefix was stripped and the encoding kept.
    assert!(r.body.contains("GET /x%20y?q=1 HTTP/1.1"), "{}", r.body);
    // Response phase in reverse: second, then first — first wins.
    assert_eq!(r.header("x-order"), Some("first"));
    // A response header removed by an empty value.
    assert_eq!(r.header("x-echo-name"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_load_balancing_spreads_requests() {
    let a = echo_upstream("a").await;
    let b = echo_upstream("b").await;
    let http = format!(
        r#"http:
  routers:
    r: {{ rule: "PathPrefix(`/`)", service: lb }}
  services:
    lb:
      loadBalancer:
        servers:
          - url: "http://{a}"
          - url: "http://{b}"
            weight: 3
"#
    );
    let t = start(&[("wasmgate.yaml", &inline_config(&http))]).await;
    let (mut na, mut nb) = (0, 0);
    for _ in 0..40 {
        let r = send(get(t.url("/"))).await;
        match r.header("x-echo-name") {
            Some("a") => na += 1,
            Some("b") => nb += 1,
            other => panic!("unexpected upstream {other:?}"),
        }
    }
    assert_eq!((na, nb), (10, 30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_host_header_on_and_off() {
    let up = echo_upstream("up").await;
    let http = format!(
        r#"http:
  routers:
    pass: {{ rule: "Path(`/pass`)", service: pass }}
    nopass: {{ rule: "Path(`/nopass`)", service: nopass }}
  services:
    pass:
      loadBalancer: {{ servers: [ {{ url: "http://{up}" }} ] }}
    nopass:
      loadBalancer: {{ passHostHeader: false, servers: [ {{ url: "http://{up}" }} ] }}
"#
    );
    let t = start(&[("wasmgate.yaml", &inline_config(&http))]).await;
    let r = send(get(t.url("/pass")).header("host", "client.example")).await;
    assert!(r.body.contains("\nhost: client.example\n"), "{}", r.body);
    let r = send(get(t.url("/nopass")).header("host", "client.example")).await;
    assert!(r.body.contains(&format!("\nhost: {up}\n")), "{}", r.body);
    // Over h2c the client sends :authority; the HTTP/1 upstream still gets a Host header.
    let r = send_with(get(t.url("/pass")), true).await;
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains(&format!("\nhost: {}\n", t.addr)),
        "{}",
        r.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_502_and_slow_upstream_is_504() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    // Accepts connections, never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (s, _) = silent.accept().await.unwrap();
            held.push(s);
        }
    });
    let http = format!(
        r#"http:
  routers:
    down: {{ rule: "Path(`/down`)", service: down }}
    slow: {{ rule: "Path(`/slow`)", service: slow }}
  services:
    down:
      loadBalancer: {{ servers: [ {{ url: "http://{closed}" }} ] }}
    slow:
      loadBalancer:
        serversTransport: quick
        servers: [ {{ url: "http://{silent_addr}" }} ]
  serversTransports:
    quick:
      forwardingTimeouts: {{ responseHeaderTimeout: 300ms }}
"#
    );
    let t = start(&[("wasmgate.yaml", &inline_config(&http))]).await;
    let r = send(get(t.url("/down"))).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.body, "Bad Gateway\n");
    let started = std::time::Instant::now();
    let r = send(get(t.url("/slow"))).await;
    assert_eq!(r.status, 504);
    assert!(started.elapsed() >= Duration::from_millis(300));
    // The proxy still serves after both.
    assert_eq!(send(get(t.url("/down"))).await.status, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_clients_are_served() {
    let http = "http:\n  routers:\n    r: { rule: \"PathPrefix(`/`)\", service: echo@internal }\n";
    let t = start(&[("wasmgate.yaml", &inline_config(http))]).await;
    let r = send_with(get(t.url("/h2?x=%41")), true).await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("/h2?x=%41 HTTP/2.0"), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_requests_get_404() {
    let http =
        "http:\n  routers:\n    r: { rule: \"Host(`only.localhost`)\", service: echo@internal }\n";
    let t = start(&[("wasmgate.yaml", &inline_config(http))]).await;
    let r = send(get(t.url("/"))).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body, "404 page not found\n");
}

/// An upstream that counts the connections it accepts and answers every request 200.
async fn connection_counting_upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    // A short think time keeps all 16 requests in flight together.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_kept_alive_by_default() {
    // 16 clients at once, 10 requests each: with Traefik's default of 200 idle connections per
    // host the upstream sees about 16 connections; with 2 it saw one for almost every request.
    let (up, accepted) = connection_counting_upstream().await;
    let http = format!(
        "http:\n  routers:\n    r: {{ rule: \"PathPrefix(`/`)\", service: s }}\n  services:\n    s: {{ loadBalancer: {{ servers: [{{ url: \"http://{up}\" }}] }} }}\n"
    );
    let srv =
        crate::common::start(&[("wasmgate.yaml", &crate::common::inline_config(&http))]).await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let url = srv.url("/");
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                assert_eq!(
                    crate::common::send(crate::common::get(url.clone()))
                        .await
                        .status,
                    200
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let n = accepted.load(Ordering::SeqCst);
    assert!(
        n <= 32,
        "the upstream accepted {n} connections for 160 requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_follow_traefiks_format_and_filters() {
    let http = "accessLog:\n  filePath: access.log\n  filters:\n    statusCodes: [\"404\", \"500-599\"]\nhttp:\n  routers:\n    r: { rule: \"Path(`/`)\", service: echo@internal }\n";
    let srv = crate::common::start(&[("wasmgate.yaml", &crate::common::inline_config(http))]).await;
    assert_eq!(
        crate::common::send(crate::common::get(srv.url("/")))
            .await
            .status,
        200
    );
    let missing = crate::common::get(srv.url("/nope")).header("user-agent", "probe/1");
    assert_eq!(crate::common::send(missing).await.status, 404);
    // Writes out what the writer thread still holds.
    srv.gateway.access_log.as_ref().unwrap().close();
    let log = std::fs::read_to_string(srv.path("access.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 1, "only the 404 passes the filter:\n{log}");
    let re = regex::Regex::new(
        r#"^127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET /nope HTTP/1\.1" 404 (\d+|-) "-" "probe/1" 1 "-" "-" \d+ms "[0-9a-f]{32}"$"#,
    )
    .unwrap();
    assert!(re.is_match(lines[0]), "{}", lines[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_access_log_unless_configured() {
    let http = "http:\n  routers:\n    r: { rule: \"Path(`/`)\", service: echo@internal }\n";
    let srv = crate::common::start(&[("wasmgate.yaml", &crate::common::inline_config(http))]).await;
    assert_eq!(
        crate::common::send(crate::common::get(srv.url("/")))
            .await
            .status,
        200
    );
    assert!(srv.gateway.access_log.is_none());
}
