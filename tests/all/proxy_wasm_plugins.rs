//! A proxy-wasm filter built with the Rust `proxy-wasm` SDK, for wasm32-wasip1 (allocator
//! `proxy_on_memory_allocate`) and wasm32-unknown-unknown (allocator `malloc`), run in the
//! proxy over real HTTP on both engines, alone and chained with an http-wasm plugin and a
//! built-in middleware.

use crate::common::*;

const WASI: &str = "wasm32-wasip1";
const BARE: &str = "wasm32-unknown-unknown";

fn install(plugins: &[(&str, String, &str)], http: &str) -> String {
    let mut s = String::from(
        "entryPoints:\n  web:\n    address: \"127.0.0.1:0\"\ncache:\n  enabled: false\nplugins:\n",
    );
    for (name, path, engine) in plugins {
        s += &format!("  {name}:\n    path: \"{path}\"\n    engine: {engine}\n");
    }
    s + http
}

fn filter(target: &'static str) -> String {
    proxy_wasm_example("header-filter", target)
        .display()
        .to_string()
}

async fn sdk_filter_rewrites_headers_and_answers_locally_on_both_targets(engine: &str) {
    for target in [WASI, BARE] {
        let up = echo_upstream("up").await;
        let http = format!(
            r#"http:
  routers:
    r: {{ rule: "PathPrefix(`/`)", middlewares: [pw], service: up }}
  middlewares:
    pw:
      plugin:
        sdk: "header=x-sdk\nvalue={engine}-{target}\ndeny=/deny"
  services:
    up:
      loadBalancer: {{ servers: [ {{ url: "http://{up}" }} ] }}
"#
        );
        let t = start(&[(
            "wasmgate.yaml",
            &install(&[("sdk", filter(target), engine)], &http),
        )])
        .await;
        for _ in 0..3 {
            let r = send(get(t.url("/hello?x=1"))).await;
            assert_eq!(r.status, 200, "{engine} {target}: {}", r.body);
            assert!(
                r.body.contains(&format!("\nx-sdk: {engine}-{target}\n")),
                "{engine} {target}: {}",
                r.body
            );
            assert!(r.body.contains("GET /hello?x=1 HTTP/1.1"), "{}", r.body);
            assert_eq!(r.header("x-proxy-wasm-response"), Some("rust-sdk"));
        }
        let r = send(get(t.url("/deny/me"))).await;
        assert_eq!(r.status, 403, "{engine} {target}");
        assert_eq!(r.body, "denied by proxy-wasm\n");
        assert_eq!(r.header("x-denied-by"), Some("header-filter"));
    }
}
parity!(async sdk_filter_rewrites_headers_and_answers_locally_on_both_targets);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_filter_chained_with_http_wasm_and_a_builtin_on_different_engines() {
    let up = echo_upstream("up").await;
    let http = format!(
        r#"http:
  routers:
    r: {{ rule: "PathPrefix(`/`)", middlewares: [pw, builtin, hw], service: up }}
  middlewares:
    pw: {{ plugin: {{ sdk: "header=x-from-proxy-wasm\nvalue=yes" }} }}
    builtin: {{ headers: {{ customRequestHeaders: {{ X-Builtin: "yes" }} }} }}
    hw: {{ plugin: {{ example: {{ headers: {{ X-Http-Wasm: "yes" }} }} }} }}
  services:
    up:
      loadBalancer: {{ servers: [ {{ url: "http://{up}" }} ] }}
"#
    );
    let hw = example_plugin("add-headers").display().to_string();
    let t = start(&[(
        "wasmgate.yaml",
        &install(
            &[("sdk", filter(BARE), "wasmer"), ("example", hw, "wasmtime")],
            &http,
        ),
    )])
    .await;
    let r = send(get(t.url("/chain"))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    for h in [
        "x-from-proxy-wasm: yes",
        "x-builtin: yes",
        "x-http-wasm: yes",
    ] {
        assert!(r.body.to_ascii_lowercase().contains(h), "{h}: {}", r.body);
    }
    assert_eq!(r.header("x-proxy-wasm-response"), Some("rust-sdk"));
}

async fn sdk_filter_http_call_resumes_or_rejects_and_rewrites_bodies(engine: &str) {
    for target in [WASI, BARE] {
        let up = echo_upstream("up").await;
        let auth = echo_upstream("auth").await;
        let http = format!(
            r#"http:
  routers:
    ok: {{ rule: "PathPrefix(`/auth/`)", middlewares: [pw], service: up }}
    down: {{ rule: "PathPrefix(`/authdown`)", middlewares: [pwdown], service: up }}
    body: {{ rule: "PathPrefix(`/body`)", middlewares: [rewrite], service: up }}
  middlewares:
    pw: {{ plugin: {{ sdk: "auth_service=authsvc" }} }}
    pwdown: {{ plugin: {{ sdk: "auth_service=nowhere" }} }}
    rewrite: {{ plugin: {{ sdk: "rewrite_from=hello\nrewrite_to=goodbye" }} }}
  services:
    up:
      loadBalancer: {{ servers: [ {{ url: "http://{up}" }} ] }}
    authsvc:
      loadBalancer: {{ servers: [ {{ url: "http://{auth}" }} ] }}
"#
        );
        let t = start(&[(
            "wasmgate.yaml",
            &install(&[("sdk", filter(target), engine)], &http),
        )])
        .await;
        let r = send(get(t.url("/auth/x"))).await;
        assert_eq!(r.status, 200, "{engine} {target}: {}", r.body);
        assert!(r.body.contains("\nx-auth: ok\n"), "{}", r.body);
        // An unknown service: the SDK filter's dispatch fails and it answers 500 itself.
        let r = send(get(t.url("/authdown"))).await;
        assert_eq!(r.status, 500, "{engine}: {}", r.body);
        assert_eq!(r.body, "dispatch failed\n");
        let r = send(Req {
            method: "POST",
            url: t.url("/body"),
            headers: vec![],
            body: "hello world",
        })
        .await;
        assert_eq!(r.status, 200, "{engine} {target}: {}", r.body);
        assert!(r.body.ends_with("goodbye world"), "{}", r.body);
        assert!(!r.body.contains("hello"), "{}", r.body);
    }
}
parity!(async sdk_filter_http_call_resumes_or_rejects_and_rewrites_bodies);

async fn sdk_filter_ticks_update_shared_data_with_cas(engine: &str) {
    for target in [WASI, BARE] {
        let up = echo_upstream("up").await;
        let http = format!(
            r#"http:
  routers:
    r: {{ rule: "PathPrefix(`/`)", middlewares: [pw], service: up }}
  middlewares:
    pw: {{ plugin: {{ sdk: "tick_ms=20" }} }}
  services:
    up:
      loadBalancer: {{ servers: [ {{ url: "http://{up}" }} ] }}
"#
        );
        let t = start(&[(
            "wasmgate.yaml",
            &install(&[("sdk", filter(target), engine)], &http),
        )])
        .await;
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        let r = send(get(t.url("/ticks"))).await;
        assert_eq!(r.status, 200, "{engine} {target}: {}", r.body);
        let ticks: u64 = r
            .body
            .lines()
            .find_map(|l| l.strip_prefix("x-sdk-ticks: "))
            .expect("x-sdk-ticks header")
            .parse()
            .unwrap();
        assert!(ticks >= 3, "{engine} {target}: {ticks} ticks");
    }
}
parity!(async sdk_filter_ticks_update_shared_data_with_cas);

struct Ok200;

#[async_trait::async_trait]
impl wasmgate_abi::Endpoint for Ok200 {
    async fn call(
        &self,
        _req: wasmgate_abi::Request,
    ) -> Result<wasmgate_abi::Response, wasmgate_abi::ProxyError> {
        Ok(wasmgate_abi::Response::text(http::StatusCode::OK, "ok"))
    }
}

/// The SDK filter's metrics land in its VM's registry; a bad configuration fails the middleware.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_filter_metrics_and_rejected_configuration() {
    use wasmgate_abi::plugin::EngineKind;
    use wasmgate_abi::{Engines, Middleware, Next, Plugin, PluginOptions, Request};
    let engines = Engines::new(None);
    for (target, engine) in [(WASI, EngineKind::Wasmer), (BARE, EngineKind::Wasmtime)] {
        let wasm = std::fs::read(proxy_wasm_example("header-filter", target)).unwrap();
        let opts = PluginOptions {
            engine,
            ..PluginOptions::default()
        };
        let plugin = Plugin::load("sdk", &wasm, opts, &engines).unwrap();
        let err = plugin
            .middleware("bad", b"bogus=1".to_vec())
            .err()
            .expect("on_configure returned false")
            .to_string();
        assert!(err.contains("rejected its configuration"), "{err}");
        let mw = plugin.middleware("good", b"value=x".to_vec()).unwrap();
        let chain: Vec<std::sync::Arc<dyn Middleware>> = vec![mw];
        for _ in 0..3 {
            let req = Request::new(
                http::Method::GET,
                "/m".parse().unwrap(),
                "127.0.0.1:1".parse().unwrap(),
            );
            let r = Next::new(&chain, &Ok200).run(req).await.unwrap();
            assert_eq!(r.status, 200);
        }
        let vm = plugin.proxy_wasm().unwrap().vm();
        assert_eq!(
            vm.metric("sdk_requests").unwrap().value,
            3,
            "{engine} {target}"
        );
    }
}

/// A filter built with the AssemblyScript SDK (ABI 0.2.0, `wasi_unstable`, root id matched
/// through `plugin_root_id`) on `engine`, chained with the Rust SDK filter on the other engine.
async fn assemblyscript_filter_with_its_root_id(engine: &str) {
    let wasm = assemblyscript_example().display().to_string();
    let other = if engine == "wasmtime" {
        "wasmer"
    } else {
        "wasmtime"
    };
    let up = echo_upstream("up").await;
    let http = format!(
        r#"http:
  routers:
    r: {{ rule: "PathPrefix(`/`)", middlewares: [as, rs], service: up }}
  middlewares:
    as: {{ plugin: {{ asfilter: "from-config-{engine}" }} }}
    rs: {{ plugin: {{ sdk: "header=x-rust\nvalue=yes" }} }}
  services:
    up:
      loadBalancer: {{ servers: [ {{ url: "http://{up}" }} ] }}
"#
    );
    let install = format!(
            "entryPoints:\n  web:\n    address: \"127.0.0.1:0\"\ncache:\n  enabled: false\nplugins:\n  asfilter:\n    path: \"{wasm}\"\n    engine: {engine}\n    rootId: add_header\n  sdk:\n    path: \"{}\"\n    engine: {other}\n{http}",
            filter(WASI)
        );
    let t = start(&[("wasmgate.yaml", &install)]).await;
    for _ in 0..2 {
        let r = send(get(t.url("/hello"))).await;
        assert_eq!(r.status, 200, "{engine}: {}", r.body);
        assert!(
            r.body
                .contains(&format!("\nx-assemblyscript: from-config-{engine}\n")),
            "{engine}: {}",
            r.body
        );
        assert!(r.body.contains("\nx-rust: yes\n"), "{}", r.body);
        assert_eq!(r.header("x-as-root"), Some("add_header"));
    }
    let r = send(get(t.url("/as-deny"))).await;
    assert_eq!(r.status, 403, "{engine}: {}", r.body);
    assert_eq!(r.body, "denied by assemblyscript");
}
parity!(async assemblyscript_filter_with_its_root_id);
