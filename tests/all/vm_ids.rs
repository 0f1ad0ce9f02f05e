//! proxy-wasm VM ids (`vmId` on a plugin declaration): plugins declared with one VM id share
//! shared data and queues, over real HTTP on both engines; plugins with different VM ids do
//! not; a routing reload keeps the state; two budgets for one VM id are refused.
//!
//! The guest is the conformance suite's `proxy_wasm_vm` (ABI 0.2.1): each middleware's
//! configuration gives its role (`s VALUE` sets shared data under the request's
//! `x-conformance-key`, `g` answers with it, `r` registers a queue of that name, `e VMID`
//! enqueues into VMID's queue of that name and answers the status).

use crate::common::*;

/// The install file: plugins `(name, extra declaration lines)` running the guest at
/// `wasm` on `engine`, and the routing `http`.
fn install(wasm: &str, engine: &str, plugins: &[(&str, &str)], http: &str) -> String {
    let mut s = String::from(
        "entryPoints:\n  web:\n    address: \"127.0.0.1:0\"\ncache:\n  enabled: false\nplugins:\n",
    );
    for (name, extra) in plugins {
        s += &format!(
            "  {name}:\n    path: \"{wasm}\"\n    engine: {engine}\n    maxInstances: 2\n"
        );
        for line in extra.lines() {
            s += &format!("    {line}\n");
        }
    }
    s + http
}

/// A temp dir holding the guest as `vm.wasm`.
fn guest_dir() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let wasm = wasmgate_conformance::case::guest_wasm("proxy_wasm_vm@0.2.1").unwrap();
    let path = dir.path().join("vm.wasm");
    std::fs::write(&path, wasm).unwrap();
    (dir, path.display().to_string())
}

/// A middleware: (name, plugin, configuration).
type Mw<'a> = (&'a str, &'a str, &'a str);

/// One router per prefix, each with its middlewares in order, to the upstream `up`.
fn routing(routes: &[(&str, &[Mw])], up: std::net::SocketAddr) -> String {
    let mut routers = String::new();
    let mut middlewares = String::new();
    for (i, (prefix, chain)) in routes.iter().enumerate() {
        let names: Vec<&str> = chain.iter().map(|(m, _, _)| *m).collect();
        routers += &format!(
            "    r{i}: {{ rule: \"PathPrefix(`{prefix}`)\", middlewares: [{}], service: up }}\n",
            names.join(", ")
        );
        for (m, plugin, config) in *chain {
            middlewares += &format!("    {m}: {{ plugin: {{ {plugin}: \"{config}\" }} }}\n");
        }
    }
    format!(
        "http:\n  routers:\n{routers}  middlewares:\n{middlewares}  services:\n    up:\n      loadBalancer: {{ servers: [ {{ url: \"http://{up}\" }} ] }}\n"
    )
}

async fn ask(t: &TestServer, path: &str, key: &str) -> Reply {
    send(get(t.url(path)).header("x-conformance-key", key)).await
}

async fn plugins_with_one_vm_id_share_data_and_queues(engine: &str) {
    let (dir, wasm) = guest_dir();
    let up = echo_upstream("up").await;
    let plugins = [
        // One VM id, two declarations (their VM configurations differ, as Envoy would need).
        ("seta", "vmId: shared\nvmConfig: a"),
        ("getb", "vmId: shared\nvmConfig: b"),
        // Different VM ids: setc's own, and getd's name (no vmId).
        ("setc", "vmId: one"),
        ("getd", ""),
        // A queue registered under VM id vm-a, filled from VM id vm-b.
        ("rega", "vmId: vm-a"),
        ("enqb", "vmId: vm-b"),
    ];
    let http = routing(
        &[
            ("/same", &[("ma", "seta", "s hello"), ("mb", "getb", "g")]),
            ("/other", &[("mc", "setc", "s hello"), ("md", "getd", "g")]),
            ("/getd", &[("md2", "getd", "g")]),
            ("/queue", &[("mr", "rega", "r"), ("me", "enqb", "e vm-a")]),
            (
                "/nobody",
                &[("mr2", "rega", "r"), ("me2", "enqb", "e vm-c")],
            ),
        ],
        up,
    );
    std::fs::write(
        dir.path().join("wasmgate.yaml"),
        install(&wasm, engine, &plugins, &http),
    )
    .unwrap();
    let t = start_in(dir).await;

    let r = ask(&t, "/same", "k1").await;
    assert_eq!((r.status, r.body.as_str()), (200, "hello"), "{engine}");
    let r = ask(&t, "/other", "k2").await;
    assert_eq!((r.status, r.body.as_str()), (200, "status:1"), "{engine}");
    // Nor does a plugin of another VM id see the first pair's key.
    let r = ask(&t, "/getd", "k1").await;
    assert_eq!(r.body, "status:1", "{engine}");
    let r = ask(&t, "/queue", "q1").await;
    assert_eq!((r.status, r.body.as_str()), (200, "0"), "{engine}");
    let r = ask(&t, "/nobody", "q2").await;
    assert_eq!(r.body, "status:1", "{engine}");
    // The state belongs to the VM id, so both plugins see the same registry.
    let vm = |name: &str| {
        t.gateway
            .plugin(name)
            .unwrap()
            .proxy_wasm()
            .unwrap()
            .vm()
            .clone()
    };
    assert!(std::sync::Arc::ptr_eq(&vm("seta"), &vm("getb")));
    assert!(!std::sync::Arc::ptr_eq(&vm("setc"), &vm("getd")));
    assert_eq!(vm("getd").vm_id, "getd");

    // A routing reload builds new middlewares, and new VMs, on the same plugins: the data stays.
    let r = ask(&t, "/same", "k3").await;
    assert_eq!(r.body, "hello", "{engine}");
    let gw = t.gateway.clone();
    tokio::task::spawn_blocking(move || gw.reload_routing())
        .await
        .unwrap()
        .unwrap();
    let r = send(get(t.url("/same")).header("x-conformance-key", "k3")).await;
    assert_eq!(r.body, "hello", "{engine}");
}
parity!(async plugins_with_one_vm_id_share_data_and_queues);

/// One VM id, two budgets: the install file is refused, naming both plugins.
#[test]
fn one_vm_id_with_two_max_host_bytes_is_refused() {
    let (dir, wasm) = guest_dir();
    std::fs::write(
        dir.path().join("wasmgate.yaml"),
        install(
            &wasm,
            "wasmtime",
            &[
                (
                    "alpha",
                    "vmId: shared\nmaxBodyBytes: 65536\nmaxHostBytes: 1048576",
                ),
                (
                    "beta",
                    "vmId: shared\nmaxBodyBytes: 65536\nmaxHostBytes: 2097152",
                ),
            ],
            "",
        ),
    )
    .unwrap();
    let err = load(&dir.path().join("wasmgate.yaml"))
        .err()
        .expect("two budgets for one VM id")
        .to_string();
    assert!(
        err.contains("plugins.beta")
            && err.contains("\"beta\" shares VM id \"shared\" with plugin \"alpha\"")
            && err.contains("2097152 and 1048576"),
        "{err}"
    );
}
