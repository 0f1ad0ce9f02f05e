//! `wasmgate plugin inspect`, run as a process on guests of both ABIs and every proxy-wasm
//! version.

use std::path::Path;
use std::process::Command;

/// Runs `wasmgate plugin inspect` with `args` on the module `wat` compiles to; exit code and stdout.
fn inspect(dir: &Path, wat: &str, args: &[&str]) -> (i32, String) {
    let file = dir.join("guest.wasm");
    std::fs::write(&file, wat::parse_str(wat).unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .args(["plugin", "inspect"])
        .arg(&file)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

const HTTP_WASM: &str = r#"(module
  (import "http_handler" "get_config" (func (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2 16)
  (func (export "handle_request") (result i64) (i64.const 1))
  (func (export "handle_response") (param i32 i32)))"#;

fn proxy_wasm(marker: &str) -> String {
    format!(
        r#"(module
  (import "env" "proxy_log" (func (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "{marker}"))
  (func (export "malloc") (param i32) (result i32) (i32.const 0))
  (func (export "proxy_on_context_create") (param i32 i32)))"#
    )
}

#[test]
fn inspect_names_the_abi_imports_exports_memory_and_wasi() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = inspect(dir.path(), HTTP_WASM, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("abi: http-wasm\n"), "{out}");
    assert!(
        out.contains("memory: initial 2 pages (128 KiB), maximum 16 pages"),
        "{out}"
    );
    assert!(out.contains("wasi: fd_write\n"), "{out}");
    assert!(
        out.contains("http_handler.get_config: func (i32, i32) -> (i32)\n"),
        "{out}"
    );
    assert!(out.contains("handle_request: func () -> (i64)"), "{out}");

    for (marker, version) in [
        ("proxy_abi_version_0_1_0", "0.1.0"),
        ("proxy_abi_version_0_2_0", "0.2.0"),
        ("proxy_abi_version_0_2_1", "0.2.1"),
    ] {
        let (code, out) = inspect(dir.path(), &proxy_wasm(marker), &["--format", "json"]);
        assert_eq!(code, 0, "{out}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("one JSON object");
        assert_eq!(v["abi"], "proxy-wasm", "{out}");
        assert_eq!(v["abi_version"], version, "{out}");
        assert_eq!(v["imports"][0]["name"], "proxy_log");
        assert_eq!(v["imports"][0]["provided"], true);
        assert_eq!(v["not_provided"], serde_json::json!([]));
        assert!(v["wasi"].as_array().unwrap().is_empty());
    }
}

#[test]
fn inspect_names_imports_wasmgate_does_not_provide_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    // One unknown function, one known under another signature.
    let wat = r#"(module
  (import "http_handler" "no_such_function" (func))
  (import "http_handler" "get_config" (func (param i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "handle_request") (result i64) (i64.const 1)))"#;
    let (code, out) = inspect(dir.path(), wat, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("http_handler.no_such_function: func () -> ()  NOT PROVIDED\n"),
        "{out}"
    );
    assert!(
        out.contains("NOT PROVIDED (wasmgate has func (i32, i32) -> (i32))"),
        "{out}"
    );
    assert!(
        out.contains(
            "wasmgate does not provide: http_handler.no_such_function, http_handler.get_config"
        ),
        "{out}"
    );
    // No ABI at all: said, and a failure.
    let (code, out) = inspect(dir.path(), "(module (func (export \"f\")))", &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("abi: unknown: cannot tell the module's ABI"),
        "{out}"
    );
    // An unknown proxy-wasm version marker.
    let (code, out) = inspect(dir.path(), &proxy_wasm("proxy_abi_version_9_9_9"), &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("proxy_abi_version_9_9_9"), "{out}");
    // Not a module: exit 2.
    std::fs::write(dir.path().join("junk.wasm"), b"not wasm").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .args(["plugin", "inspect"])
        .arg(dir.path().join("junk.wasm"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn inspect_with_an_engine_loads_it_there_and_reports_the_time() {
    let dir = tempfile::tempdir().unwrap();
    for engine in ["wasmtime", "wasmer"] {
        let (code, out) = inspect(dir.path(), HTTP_WASM, &["--engine", engine]);
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains(&format!("{engine}: loads, compiled in ")),
            "{out}"
        );
        // The ABI's load checks run too: a wrong handler signature does not load.
        let bad = r#"(module (memory (export "memory") 1)
          (func (export "handle_request") (result i32) (i32.const 1)))"#;
        let (code, out) = inspect(dir.path(), bad, &["--engine", engine, "--format", "json"]);
        assert_eq!(code, 1, "{out}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["compile"]["engine"], engine);
        let error = v["compile"]["error"].as_str().unwrap();
        assert!(error.contains("handle_request"), "{error}");
    }
}
