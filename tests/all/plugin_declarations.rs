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
