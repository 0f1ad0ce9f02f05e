//! The `wasmgate` binary: `validate` and `run`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

fn wasmgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wasmgate"))
}

/// Runs `wasmgate validate` on `files`; returns (exit code, stdout + stderr).
fn validate(files: &[(&str, &str)]) -> (i32, String) {
    let dir = write_files(files);
    let out = wasmgate()
        .args(["validate", "-c"])
        .arg(dir.path().join("wasmgate.yaml"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn validate_accepts_the_quick_start() {
    // The quick start loads the demo plugin, built from source.
    let built = example_plugin("add-headers");
    assert!(built.ends_with("examples/plugins/target/wasm32-wasip1/release/add-headers.wasm"));
    let out = wasmgate()
        .args(["validate", "-c", "examples/quickstart/wasmgate.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration is valid"));
}

#[test]
fn validate_reports_each_kind_of_mistake_with_its_line() {
    let good_routing = "http:\n  routers:\n    r:\n      rule: \"PathPrefix(`/`)\"\n      service: echo@internal\n";
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, &'a [&'a str]);
    let cases: Vec<Case> = vec![
        (
            "unknown field",
            vec![("wasmgate.yaml", "entryPoints:\n  web:\n    address: \"127.0.0.1:0\"\n    adress: typo\n".into())],
            &["wasmgate.yaml:4:5: entryPoints.web.adress: unknown field `adress`, expected one of `address`"],
        ),
        (
            "missing service, listing the ones that exist",
            vec![("wasmgate.yaml", inline_config(
                "http:\n  routers:\n    r:\n      rule: \"Path(`/`)\"\n      service: svc-b\n  services:\n    svc-a:\n      loadBalancer: { servers: [ { url: \"http://127.0.0.1:1\" } ] }\n",
            ))],
            &["wasmgate.yaml:8:7: http.routers.r.service: service \"svc-b\" does not exist; defined services: svc-a, echo@internal"],
        ),
        (
            "rule that does not parse, with its column",
            vec![("wasmgate.yaml", inline_config(
                "http:\n  routers:\n    r:\n      rule: \"Host(`a`) && Foo(`b`)\"\n      service: echo@internal\n",
            ))],
            &["wasmgate.yaml:7:7: http.routers.r.rule: router \"r\": rule does not parse at column 14:"],
        ),
        (
            "missing middleware",
            vec![("wasmgate.yaml", inline_config(
                "http:\n  routers:\n    r:\n      rule: \"Path(`/`)\"\n      middlewares: [nope]\n      service: echo@internal\n",
            ))],
            &["wasmgate.yaml:8:21: http.routers.r.middlewares[0]: middleware \"nope\" does not exist; no middlewares are defined"],
        ),
        (
            "unknown entry point",
            vec![("wasmgate.yaml", inline_config(
                "http:\n  routers:\n    r:\n      rule: \"Path(`/`)\"\n      entryPoints: [websecure]\n      service: echo@internal\n",
            ))],
            &["http.routers.r.entryPoints[0]: entry point \"websecure\" does not exist; defined entry points: web"],
        ),
        (
            "bad duration",
            vec![("wasmgate.yaml", inline_config(
                "http:\n  serversTransports:\n    t:\n      forwardingTimeouts:\n        dialTimeout: soon\n",
            ))],
            &["wasmgate.yaml:8:9: http.serversTransports.t.forwardingTimeouts.dialTimeout: invalid duration \"soon\""],
        ),
        (
            "YAML syntax error",
            vec![("wasmgate.yaml", "entryPoints:\n  web: { address: \"127.0.0.1:0\"\n".into())],
            &["wasmgate.yaml:3:1:"],
        ),
        (
            "middleware cycle",
            vec![("wasmgate.yaml", inline_config(
                "http:\n  middlewares:\n    a: { chain: { middlewares: [b] } }\n    b: { chain: { middlewares: [a] } }\n",
            ))],
            &["includes itself: a -> b -> a"],
        ),
        (
            "plugin module that does not exist",
            vec![("wasmgate.yaml", format!("plugins:\n  example:\n    path: plugins/missing.wasm\n{}", inline_config(good_routing)))],
            &["wasmgate.yaml:3:5: plugins.example.path: cannot read plugin module"],
        ),
        (
            "routing file with an error, named as the file",
            vec![
                ("wasmgate.yaml", "entryPoints:\n  web: { address: \"127.0.0.1:0\" }\nproviders:\n  file: { filename: dynamic.yaml }\n".into()),
                ("dynamic.yaml", good_routing.replace("echo@internal", "gone")),
            ],
            &["dynamic.yaml:5:7: http.routers.r.service: service \"gone\" does not exist"],
        ),
    ];
    for (what, files, expected) in cases {
        let files: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
        let (code, text) = validate(&files);
        assert_eq!(code, 1, "{what}: {text}");
        for e in expected {
            assert!(text.contains(e), "{what}: expected {e:?} in:\n{text}");
        }
    }
    let (code, text) = validate(&[("wasmgate.yaml", &inline_config(good_routing))]);
    assert_eq!(code, 0, "{text}");
}

#[test]
fn missing_file_and_no_file_are_clear_errors() {
    let out = wasmgate()
        .args(["validate", "-c", "/nonexistent/wasmgate.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("/nonexistent/wasmgate.yaml: cannot read file"));
    let out = wasmgate().arg("validate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_then_drains_in_flight_requests_on_sigterm() {
    let (up, arrived) = counting_upstream(Duration::from_millis(1500)).await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = write_files(&[(
        "wasmgate.yaml",
        &format!(
            "entryPoints:\n  web:\n    address: \"127.0.0.1:{port}\"\naccessLog:\n  filePath: access.log\n  format: json\nhttp:\n  routers:\n    r: {{ rule: \"PathPrefix(`/`)\", service: slow }}\n  services:\n    slow:\n      loadBalancer: {{ servers: [ {{ url: \"http://{up}\" }} ] }}\n"
        ),
    )]);
    let mut child = wasmgate()
        .arg("-c")
        .arg(dir.path().join("wasmgate.yaml"))
        .args(["--log-format", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/");
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "wasmgate never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let in_flight = tokio::spawn(send(get(url.clone())));
    // SIGTERM once the request is at the upstream (which then takes 1.5 s to answer).
    arrived.wait_for(1).await;
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // The request that was in flight completes.
    let r = in_flight.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "counted");
    let status = tokio::task::spawn_blocking(move || {
        let s = child.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
        (s, err)
    })
    .await
    .unwrap();
    assert_eq!(status.0.code(), Some(0), "{}", status.1);
    // One JSON access-log line for the request (Traefik's field names), written out at shutdown.
    let log = std::fs::read_to_string(dir.path().join("access.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 1, "{log}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["RouterName"], "r");
    assert_eq!(v["ServiceName"], "slow");
    assert_eq!(v["ServiceURL"], format!("http://{up}"));
    assert_eq!(v["DownstreamStatus"], 200);
    assert_eq!(v["entryPointName"], "web");
    assert!(v["Duration"].as_u64().unwrap() >= 1_000_000_000);
    // After shutdown nothing listens.
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err());
}

#[test]
fn validate_reports_a_proxy_wasm_filter_rejecting_its_configuration() {
    let filter = proxy_wasm_example("header-filter", "wasm32-wasip1");
    let config = |cfg: &str| {
        format!(
            "entryPoints:\n  web:\n    address: \"127.0.0.1:0\"\ncache:\n  enabled: false\nplugins:\n  sdk:\n    path: \"{}\"\n    rootId: my_root\nhttp:\n  routers:\n    r: {{ rule: \"PathPrefix(`/`)\", middlewares: [pw], service: echo@internal }}\n  middlewares:\n    pw:\n      plugin:\n        sdk: \"{cfg}\"\n",
            filter.display()
        )
    };
    let (code, text) = validate(&[("wasmgate.yaml", &config("value=ok"))]);
    assert_eq!(code, 0, "{text}");
    let (code, text) = validate(&[("wasmgate.yaml", &config("bogus=1"))]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("http.middlewares.pw.plugin.sdk"), "{text}");
    assert!(text.contains("rejected its configuration"), "{text}");
}

/// A proxy-wasm filter that asks for ticks in `on_configure` and logs every tick.
const TICKING_FILTER: &str = r#"(module
  (import "env" "proxy_set_tick_period_milliseconds" (func $set_tick (param i32) (result i32)))
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "tick without traffic")
  (global $heap (mut i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "malloc") (param i32) (result i32) (local i32)
    global.get $heap local.set 1
    global.get $heap local.get 0 i32.add global.set $heap
    local.get 1)
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $set_tick (i32.const 50)))
    (i32.const 1))
  (func (export "proxy_on_tick") (param i32)
    (drop (call $log (i32.const 2) (i32.const 16) (i32.const 20))))
)"#;

/// `run` starts proxy-wasm dispatchers with the gateway: a tick period set in `on_configure`
/// fires with no request ever sent. `validate` runs no tick.
#[test]
fn run_delivers_ticks_from_start_up_without_traffic() {
    let dir = write_files(&[(
        "wasmgate.yaml",
        "entryPoints:\n  web:\n    address: \"127.0.0.1:0\"\ncache:\n  enabled: false\nplugins:\n  ticker:\n    path: ticker.wasm\nhttp:\n  routers:\n    r: { rule: \"PathPrefix(`/`)\", middlewares: [pw], service: echo@internal }\n  middlewares:\n    pw:\n      plugin:\n        ticker: {}\n",
    )]);
    std::fs::write(
        dir.path().join("ticker.wasm"),
        wat::parse_str(TICKING_FILTER).unwrap(),
    )
    .unwrap();
    let config = dir.path().join("wasmgate.yaml");

    let out = wasmgate()
        .arg("validate")
        .arg("-c")
        .arg(&config)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(!text.contains("tick without traffic"), "{text}");

    let mut child = wasmgate()
        .arg("run")
        .arg("-c")
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Both streams go to one channel, line by line, until the process ends.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let readers: Vec<_> = [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ]
    .into_iter()
    .map(|stream| {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in
                std::io::BufRead::lines(std::io::BufReader::new(stream)).map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        })
    })
    .collect();
    drop(tx);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    let mut ticks = 0;
    while ticks < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if line.contains("tick without traffic") {
                    ticks += 1;
                }
                seen.push(line);
            }
            Err(_) => break,
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    for r in readers {
        r.join().unwrap();
    }
    assert!(
        ticks >= 2,
        "no tick logged within 5 s of start-up without traffic; output:\n{}",
        seen.join("\n")
    );
}

#[test]
fn a_bad_access_log_filter_is_a_config_error_at_its_path() {
    let config = "entryPoints:\n  web:\n    address: \"127.0.0.1:0\"\naccessLog:\n  filters:\n    statusCodes: [\"404\", \"5xx\"]\nhttp:\n  routers:\n    r: { rule: \"Path(`/`)\", service: echo@internal }\n";
    let (code, text) = validate(&[("wasmgate.yaml", config)]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("accessLog.filters.statusCodes[1]"), "{text}");
    assert!(text.contains("invalid status code range \"5xx\""), "{text}");
}
