//! Plugin declarations: wasmgate's `plugins` and Traefik's `experimental.localPlugins` layout.

use crate::common::write_files;
use wasmgate::config;
use wasmgate::plugins::PluginCatalog;

/// The smallest http-wasm guest.
fn tiny_guest() -> Vec<u8> {
    wat::parse_str(
        r#"(module (memory (export "memory") 1) (func (export "handle_request") (result i64) (i64.const 1)))"#,
    )
    .unwrap()
}

#[test]
fn traefik_local_plugin_layout_is_found() {
    let dir = write_files(&[
        (
            "wasmgate.yaml",
            "experimental:\n  localPlugins:\n    demo:\n      moduleName: github.com/acme/demo\n    plain:\n      moduleName: plain\n",
        ),
        (
            "plugins-local/src/github.com/acme/demo/.traefik.yml",
            "displayName: Demo\ntype: middleware\nruntime: wasm\nwasmPath: build/demo.wasm\ntestData:\n  headers: { Foo: Bar }\n",
        ),
        ("plugins-local/src/plain/.traefik.yml", "displayName: Plain\nruntime: wasm\n"),
    ]);
    for path in [
        "plugins-local/src/github.com/acme/demo/build/demo.wasm",
        "plugins-local/src/plain/plugin.wasm",
    ] {
        std::fs::create_dir_all(dir.path().join(path).parent().unwrap()).unwrap();
        std::fs::write(dir.path().join(path), tiny_guest()).unwrap();
    }
    let loaded = config::load(&dir.path().join("wasmgate.yaml")).unwrap();
    let catalog = PluginCatalog::load(&loaded).unwrap();
    let demo = catalog.get("demo").unwrap();
    assert!(demo
        .wasm_path
        .ends_with("github.com/acme/demo/build/demo.wasm"));
    assert_eq!(demo.wasm.as_slice(), tiny_guest().as_slice());
    // Without wasmPath, Traefik's default name.
    assert!(catalog
        .get("plain")
        .unwrap()
        .wasm_path
        .ends_with("plain/plugin.wasm"));
}

#[test]
fn bad_declarations_are_named() {
    let dir = write_files(&[
        (
            "wasmgate.yaml",
            "plugins:\n  notwasm:\n    path: notwasm.wasm\n    engine: wasmer\nexperimental:\n  localPlugins:\n    goplugin:\n      moduleName: goplugin\n  plugins:\n    remote:\n      moduleName: github.com/x/y\n      version: v1.0.0\n",
        ),
        ("notwasm.wasm", "hello"),
        ("plugins-local/src/goplugin/.traefik.yml", "runtime: yaegi\n"),
    ]);
    let loaded = config::load(&dir.path().join("wasmgate.yaml")).unwrap();
    let text = PluginCatalog::load(&loaded).err().unwrap().to_string();
    for expected in [
        "wasmgate.yaml:3:5: plugins.notwasm.path:",
        "is not a WebAssembly module",
        "experimental.localPlugins.goplugin.moduleName:",
        "runtime \"yaegi\"; wasmgate runs only wasm plugins",
        "wasmgate.yaml:10:5: experimental.plugins.remote: remote plugins",
    ] {
        assert!(text.contains(expected), "expected {expected:?} in:\n{text}");
    }
}

#[test]
fn unknown_engine_is_a_config_error() {
    let dir = write_files(&[(
        "wasmgate.yaml",
        "plugins:\n  p:\n    path: p.wasm\n    engine: v8\n",
    )]);
    let e = config::load(&dir.path().join("wasmgate.yaml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("wasmgate.yaml:4:13: plugins.p.engine: unknown variant `v8`, expected `wasmtime` or `wasmer`"), "{e}");
}

/// An install file declaring `tiny_guest` three times (two on wasmtime, one on wasmer) with
/// the given `poolSize`s, each used by one middleware.
fn pool_config(big: usize, small: usize) -> String {
    format!(
        "entryPoints:\n  web:\n    address: \"127.0.0.1:0\"\nplugins:\n  \
         p1:\n    path: g.wasm\n    poolSize: {big}\n  \
         p2:\n    path: g.wasm\n    poolSize: {small}\n  \
         w:\n    path: g.wasm\n    engine: wasmer\n    poolSize: 4000\n\
         http:\n  middlewares:\n    \
         big:\n      plugin:\n        p1: {{}}\n    \
         small:\n      plugin:\n        p2: {{}}\n    \
         elsewhere:\n      plugin:\n        w: {{}}\n"
    )
}

fn load_pool_config(big: usize, small: usize) -> Result<(), String> {
    let dir = write_files(&[("wasmgate.yaml", &pool_config(big, small))]);
    std::fs::write(dir.path().join("g.wasm"), tiny_guest()).unwrap();
    crate::common::load(&dir.path().join("wasmgate.yaml"))
        .map(drop)
        .map_err(|e| e.to_string())
}

#[test]
fn wasmtime_pool_slots_are_checked_at_load() {
    // 500 + 20 warm instances, twice over during a reload: 1040 of 1024 slots. The wasmer
    // plugin's 4000 take none.
    let e = load_pool_config(500, 20).unwrap_err();
    for expected in [
        "wasmgate.yaml:19:9: http.middlewares.big.plugin.p1: ",
        "keep 520 instances (big: 500, small: 20)",
        "1040 instances, more than the pool's 1024 slots",
        "at most 512 in all",
    ] {
        assert!(e.contains(expected), "expected {expected:?} in:\n{e}");
    }
    assert!(!e.contains("elsewhere"), "{e}");
    // 500 + 12: 1024 exactly fits.
    load_pool_config(500, 12).unwrap();
}

#[test]
fn max_host_bytes_is_range_checked() {
    for (decl, expected) in [
        (
            "    maxHostBytes: 1000\n",
            "wasmgate.yaml:4:5: plugins.p.maxHostBytes: 1000 is out of range: 65536 (64 KiB)",
        ),
        (
            "    maxHostBytes: 18446744073709551615\n",
            "plugins.p.maxHostBytes: 18446744073709551615 is out of range",
        ),
        (
            "    maxHostBytes: 1048576\n",
            "plugins.p.maxHostBytes: 1048576 is less than maxBodyBytes (16777216)",
        ),
        (
            "    maxBodyBytes: 65536\n    maxHostBytes: 65535\n",
            "plugins.p.maxHostBytes: 65535 is out of range",
        ),
    ] {
        let dir = write_files(&[(
            "wasmgate.yaml",
            &format!("plugins:\n  p:\n    path: p.wasm\n{decl}"),
        )]);
        let e = config::load(&dir.path().join("wasmgate.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(expected), "expected {expected:?} in:\n{e}");
    }
    // Within range and not below maxBodyBytes: accepted.
    let dir = write_files(&[(
        "wasmgate.yaml",
        "plugins:\n  p:\n    path: p.wasm\n    maxBodyBytes: 65536\n    maxHostBytes: 65536\n",
    )]);
    config::load(&dir.path().join("wasmgate.yaml")).unwrap();
}
