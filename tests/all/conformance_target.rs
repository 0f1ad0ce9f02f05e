//! `wasmgate conformance guests --out` and `--target`: the written files run in a separate
//! wasmgate process, and the suite reaches it over loopback like any other host.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use wasmgate_conformance::case::builtin_cases;

const BIN: &str = env!("CARGO_BIN_EXE_wasmgate");

/// Kills the proxy under test even when an assertion fails first.
struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port nothing listens on right now (the OS just handed it out).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wasmgate(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn wait_for(addr: SocketAddr, proxy: &mut Proxy) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(addr).is_err() {
        if let Some(status) = proxy.0.try_wait().unwrap() {
            panic!("wasmgate exited before listening: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "wasmgate did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `wasmgate conformance guests --out OUT` for wasmtime, upstream and entry point as given.
fn write_guests(out: &Path, upstream: &str, listen: SocketAddr) {
    let o = wasmgate(&[
        "conformance",
        "guests",
        "--out",
        out.to_str().unwrap(),
        "--upstream",
        upstream,
        "--listen",
        &listen.to_string(),
        "--engine",
        "wasmtime",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn written_configuration_runs_in_another_wasmgate_and_the_target_run_passes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let upstream = format!("127.0.0.1:{}", free_port());
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    write_guests(&out, &upstream, listen);
    for f in [
        "http_wasm.wasm",
        "proxy_wasm-0_1_0.wasm",
        "proxy_wasm-0_2_1.wasm",
        "wasmgate.yaml",
        "envoy.yaml",
        "traefik/traefik.yml",
        "traefik/dynamic.yml",
        "traefik/plugins-local/src/http_wasm/.traefik.yml",
        "traefik/plugins-local/src/http_wasm/plugin.wasm",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let config = out.join("wasmgate.yaml");
    let yaml = std::fs::read_to_string(&config).unwrap();
    assert!(yaml.contains(&format!("url: http://{upstream}")), "{yaml}");
    assert!(!yaml.contains("wasmer"), "{yaml}");

    // Loading every plugin is the proof that the written modules are valid.
    let config = config.to_str().unwrap();
    let o = wasmgate(&["validate", "-c", config]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let mut proxy = Proxy(
        Command::new(BIN)
            .args(["run", "-c", config, "--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(listen, &mut proxy);

    let target = format!("http://{listen}");
    let o = wasmgate(&[
        "conformance",
        "--target",
        &target,
        "--upstream",
        &upstream,
        "--engine",
        "wasmtime",
        "--case",
        "get_uri",
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stdout}\n{stderr}");
    let n = builtin_cases()
        .unwrap()
        .iter()
        .filter(|c| c.name.contains("get_uri"))
        .count();
    assert!(n >= 4);
    assert!(
        stdout.ends_with(&format!("{n} passed, 0 failed\n")),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!("upstream listening on {upstream}")),
        "{stderr}"
    );
}

#[test]
fn a_target_where_nothing_listens_fails_with_a_clear_message() {
    let nobody = format!("127.0.0.1:{}", free_port());
    let upstream = format!("127.0.0.1:{}", free_port());
    let o = wasmgate(&[
        "conformance",
        "--target",
        &format!("http://{nobody}"),
        "--upstream",
        &upstream,
        "--engine",
        "wasmtime",
        "--case",
        "get_uri_root",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("nothing answers at {nobody}")),
        "{stderr}"
    );
    assert!(o.stdout.is_empty());
}

#[test]
fn target_urls_and_subcommand_conflicts_are_checked() {
    let o = wasmgate(&[
        "conformance",
        "--target",
        "https://127.0.0.1:1",
        "--case",
        "get_uri_root",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("expected http://HOST:PORT"));

    // A profile names a host some case has a profile for.
    let o = wasmgate(&[
        "conformance",
        "--target",
        "http://127.0.0.1:1",
        "--profile",
        "envoi",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no case has a profile named \"envoi\""),
        "{err}"
    );
    assert!(err.contains("envoy") && err.contains("kong"), "{err}");

    // A profile names the host under test: in process only `expect` counts.
    let o = wasmgate(&[
        "conformance",
        "--profile",
        "envoy",
        "--case",
        "get_uri_root",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--profile names the host under test"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // The run flags and the `guests` subcommand do not mix.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x");
    let o = wasmgate(&[
        "conformance",
        "--case",
        "get_uri",
        "guests",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(!Path::new(&out).exists());
}

#[test]
fn per_slot_target_sends_slot_n_to_base_port_plus_n() {
    let cases = builtin_cases().unwrap();
    let case = cases
        .iter()
        .find(|c| c.name == "pw_plugin_configuration@0.2.1")
        .unwrap();
    let idx = wasmgate_conformance::Slots::new(&cases)
        .index(case, "wasmtime")
        .unwrap();
    assert!(idx > 0, "the test needs a slot past m0");
    // wasmgate listens only on base + idx, as Envoy's listener for that slot would.
    let port = free_port();
    let base = port.checked_sub(idx as u16).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let upstream = format!("127.0.0.1:{}", free_port());
    let listen: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    write_guests(&out, &upstream, listen);
    let config = out.join("wasmgate.yaml");
    let mut proxy = Proxy(
        Command::new(BIN)
            .args([
                "run",
                "-c",
                config.to_str().unwrap(),
                "--log-level",
                "error",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(listen, &mut proxy);
    let o = wasmgate(&[
        "conformance",
        "--target-per-slot",
        &format!("http://127.0.0.1:{base}"),
        "--upstream",
        &upstream,
        "--engine",
        "wasmtime",
        "--case",
        "pw_plugin_configuration@0.2.1",
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}");
    assert!(stdout.ends_with("1 passed, 0 failed\n"), "{stdout}");
}

/// The whole suite against a second wasmgate, its plugin log lines read from the file it
/// writes (JSON) and its metrics scraped from `/metrics`: every case passes, logs and metrics
/// included (without them those cases say "not observable" and fail).
#[test]
fn target_run_observes_logs_and_metrics_of_the_other_host() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let upstream = format!("127.0.0.1:{}", free_port());
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    write_guests(&out, &upstream, listen);
    let log = dir.path().join("proxy.log");
    let config = out.join("wasmgate.yaml");
    let mut proxy = Proxy(
        Command::new(BIN)
            .args([
                "run",
                "-c",
                config.to_str().unwrap(),
                "--log-format",
                "json",
            ])
            .args(["--log-level", "warn,wasmgate::plugin=trace"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for(listen, &mut proxy);
    let target = format!("http://{listen}");
    let run = |observe: bool| {
        let metrics = format!("http://{listen}/metrics");
        let mut args = vec![
            "conformance",
            "--target",
            &target,
            "--upstream",
            &upstream,
            "--engine",
            "wasmtime",
        ];
        if observe {
            args.extend([
                "--log-file",
                log.to_str().unwrap(),
                "--metrics-url",
                &metrics,
            ]);
        }
        let o = wasmgate(&args);
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    let (ok, stdout) = run(true);
    let last = stdout.lines().last().unwrap_or("").to_string();
    assert!(ok && last.ends_with(" passed, 0 failed"), "{stdout}");
    let passed: usize = last.split(' ').next().unwrap().parse().unwrap();
    assert!(passed > 600, "{last}");
    // The same run blind to logs and metrics fails exactly those cases, saying why.
    let (ok, stdout) = run(false);
    assert!(!ok, "{stdout}");
    assert!(
        stdout.contains("logs: not observable against this host"),
        "{stdout}"
    );
    assert!(
        stdout.contains("metrics: not observable against this host"),
        "{stdout}"
    );
}
