//! Plugin memory defaults fit real plugins: a guest that needs more than 64 MiB starts and
//! serves with default settings, on both engines, in the proxy over real HTTP.

use crate::common::*;

/// An http-wasm guest whose start-up grows its memory to 100 MiB and writes the last byte (as
/// a large plugin's allocator does); `handle_request` answers with that byte and the memory size
/// in MiB.
const BIG_GUEST: &str = r#"(module
  (import "http_handler" "write_body" (func $write_body (param i32 i32 i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (if (i32.eq (memory.grow (i32.const 1599)) (i32.const -1)) (then unreachable))
    (i32.store8 (i32.const 104857599) (i32.const 55)))
  (func (export "handle_request") (result i64)
    ;; "<byte> <MiB>" at 0: the byte written at start-up, then 100.
    (i32.store8 (i32.const 0) (i32.load8_u (i32.const 104857599)))
    (i32.store8 (i32.const 1) (i32.const 32))
    (i32.store8 (i32.const 2) (i32.add (i32.const 48) (i32.div_u (memory.size) (i32.const 1600))))
    (i32.store8 (i32.const 3) (i32.const 48))
    (i32.store8 (i32.const 4) (i32.const 48))
    (call $write_body (i32.const 1) (i32.const 0) (i32.const 5))
    (i64.const 0)))"#;

fn install(engine: &str, extra: &str) -> String {
    format!(
        "entryPoints:\n  web:\n    address: \"127.0.0.1:0\"\ncache:\n  enabled: false\nplugins:\n  big:\n    path: big.wasm\n    engine: {engine}\n{extra}http:\n  routers:\n    r: {{ rule: \"PathPrefix(`/`)\", middlewares: [big], service: echo@internal }}\n  middlewares:\n    big: {{ plugin: {{ big: {{}} }} }}\n"
    )
}

async fn a_guest_needing_100_mib_runs_with_default_settings(engine: &str) {
    let dir = write_files(&[("wasmgate.yaml", &install(engine, ""))]);
    std::fs::write(
        dir.path().join("big.wasm"),
        wat::parse_str(BIG_GUEST).unwrap(),
    )
    .unwrap();
    let gateway = load(&dir.path().join("wasmgate.yaml"))
        .unwrap_or_else(|e| panic!("{engine}: config did not load:\n{e}"));
    let server = wasmgate::proxy::start(gateway).await.unwrap();
    for _ in 0..3 {
        let r = send(get(format!("http://{}/", server.addrs["web"]))).await;
        assert_eq!((r.status, r.body.as_str()), (200, "7 100"), "{engine}");
    }
}
parity!(async a_guest_needing_100_mib_runs_with_default_settings);

fn max_memory_bytes_up_to_4_gib_is_accepted_and_more_is_a_config_error(engine: &str) {
    let ok = install(engine, "    maxMemoryBytes: 4294967296\n");
    let dir = write_files(&[("wasmgate.yaml", &ok)]);
    std::fs::write(
        dir.path().join("big.wasm"),
        wat::parse_str(BIG_GUEST).unwrap(),
    )
    .unwrap();
    load(&dir.path().join("wasmgate.yaml"))
        .unwrap_or_else(|e| panic!("{engine}: 4 GiB refused:\n{e}"));
    // Too small for the guest: its start-up fails, named as such.
    let small = install(engine, "    maxMemoryBytes: 67108864\n");
    std::fs::write(dir.path().join("wasmgate.yaml"), small).unwrap();
    let e = load(&dir.path().join("wasmgate.yaml"))
        .err()
        .expect("64 MiB is too little for this guest")
        .to_string();
    assert!(e.contains("start-up"), "{engine}: {e}");
    let over = install(engine, "    maxMemoryBytes: 4294967297\n");
    std::fs::write(dir.path().join("wasmgate.yaml"), over).unwrap();
    let e = load(&dir.path().join("wasmgate.yaml"))
        .err()
        .expect("above 4 GiB must fail")
        .to_string();
    assert!(e.contains("plugins.big.maxMemoryBytes"), "{engine}: {e}");
    assert!(e.contains("4 GiB"), "{engine}: {e}");
}
parity!(max_memory_bytes_up_to_4_gib_is_accepted_and_more_is_a_config_error);
