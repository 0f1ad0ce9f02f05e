//! The conformance suite, run in process on both engines, and checks of the runner itself.

use std::process::Command;

use wasmgate_conformance::case::{builtin_cases, load_dir, Abi};

fn engines() -> Vec<String> {
    vec!["wasmtime".to_string(), "wasmer".to_string()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_suite_passes_on_both_engines_alike() {
    let cases = builtin_cases().unwrap();
    let n = cases.len();
    let http_wasm = cases.iter().filter(|c| c.abi() == Abi::HttpWasm).count();
    let proxy_wasm = cases.iter().filter(|c| c.abi() == Abi::ProxyWasm).count();
    assert!(http_wasm >= 40, "only {http_wasm} http-wasm cases");
    assert!(proxy_wasm >= 12, "only {proxy_wasm} proxy-wasm cases");
    let report = wasmgate::conformance::run(cases, &engines()).await.unwrap();
    let text = report.to_text();
    assert_eq!(report.results.len(), 2 * n);
    assert_eq!(report.failed(), 0, "{text}");
    assert!(
        text.ends_with(&format!("{} passed, 0 failed\n", 2 * n)),
        "{text}"
    );
    for (case, by_engine) in report.matrix() {
        assert_eq!(by_engine.len(), 2, "{case}");
        assert!(by_engine.values().all(|p| *p), "{case}");
    }
    readme_support_table_is_current(&report);
}

/// The README's case counts must be the suite's distinct cases (a case run on three ABI
/// versions counts once).
#[test]
fn readme_case_counts_are_distinct_cases() {
    use wasmgate::support_table::{case_counts, replace_counts};
    let n = case_counts(&builtin_cases().unwrap());
    let expanded = builtin_cases().unwrap().len();
    assert!(n.http_wasm + n.proxy_wasm + n.sdk < expanded, "{n:?}");
    assert_eq!(n.runs + n.sdk, expanded, "{n:?}");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let current = replace_counts(&readme, n).expect("README.md lacks the case counts line");
    if current == readme {
        return;
    }
    if std::env::var_os("WASMGATE_BLESS").is_some() {
        std::fs::write(&path, current).unwrap();
        return;
    }
    panic!(
        "README.md's case counts are stale ({n:?}); rewrite them with \
         `WASMGATE_BLESS=1 cargo test -p wasmgate --test all conformance::`"
    );
}

/// The README's support table must be what this run produces.
fn readme_support_table_is_current(report: &wasmgate_conformance::Report) {
    use wasmgate::support_table::{render, replace_in};
    let table = render(report);
    assert!(!table.contains("no case"), "{table}");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let current = replace_in(&readme, &table).expect("README.md lacks the support-table markers");
    if current == readme {
        return;
    }
    if std::env::var_os("WASMGATE_BLESS").is_some() {
        std::fs::write(&path, current).unwrap();
        return;
    }
    panic!(
        "README.md's support table is stale; rewrite it with \
         `WASMGATE_BLESS=1 cargo test -p wasmgate --test all conformance::`. It should be:\n{table}"
    );
}

#[test]
fn every_host_function_has_a_case_on_every_abi_version() {
    let gaps = wasmgate::support_table::uncovered(&builtin_cases().unwrap());
    assert!(gaps.is_empty(), "host functions no case checks: {gaps:#?}");
}

/// Profiles name the reference hosts, each with a citation, and differ from `expect` (a
/// profile equal to it would record no difference).
#[test]
fn profiles_name_reference_hosts_and_cite_them() {
    let cases = builtin_cases().unwrap();
    let mut n = 0;
    for c in &cases {
        for (host, p) in &c.profiles {
            n += 1;
            assert!(
                ["envoy", "kong", "http-wasm-host-go"].contains(&host.as_str()),
                "{}: unknown host {host}",
                c.name
            );
            assert!(p.cite.len() > 20, "{}: {host} has no real citation", c.name);
            let same = serde_json::to_value(&p.expect).unwrap()
                == serde_json::to_value(&c.expect).unwrap();
            assert!(!same, "{}: {host}'s profile is its expect", c.name);
        }
    }
    assert!(n >= 15, "only {n} profiles");
}

#[test]
fn the_suite_has_at_least_150_cases() {
    let n = builtin_cases().unwrap().len();
    assert!(n >= 150, "only {n} cases");
}

async fn a_wrong_expectation_is_reported_with_what_came_back(engine: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("wrong.yaml"),
        r#"
- name: right
  spec: "http-handler-abi#get_method"
  guest: http_wasm
  test: 1
  expect: { status: 200, body: "GET" }
- name: wrong_header_and_body
  spec: "http-handler-abi#get_method"
  guest: http_wasm
  test: 1
  expect: { status: 200, headers: { x-never: "there" }, body: "POST" }
"#,
    )
    .unwrap();
    let cases = load_dir(dir.path()).unwrap();
    let report = wasmgate::conformance::run(cases, &[engine.to_string()])
        .await
        .unwrap();
    assert_eq!(report.summary(), "1 passed, 1 failed");
    let text = report.to_text();
    let r = report
        .results
        .iter()
        .find(|r| r.case == "wrong_header_and_body" && r.engine == engine)
        .unwrap();
    assert!(!r.passed);
    assert_eq!(
        r.mismatches,
        vec![
            "header x-never: expected \"there\", got absent".to_string(),
            "body: expected \"POST\", got \"GET\"".to_string(),
        ]
    );
    assert!(
        text.contains(&format!(
            "FAILED wrong_header_and_body on {engine} (http-handler-abi#get_method)"
        )),
        "{text}"
    );
    assert!(text.contains("header x-never: expected \"there\", got absent"));
    assert!(text.ends_with("1 passed, 1 failed\n"), "{text}");
}
parity!(async a_wrong_expectation_is_reported_with_what_came_back);

/// A case giving a profile host's answer passes as "behaves as" that host, only in a run
/// told to expect that host; otherwise only `expect` counts.
async fn a_profile_answer_behaves_as_that_host_only_when_asked(engine: &str) {
    use wasmgate_conformance::{Prepared, Target};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("profiles.yaml"),
        r#"
- name: as_envoy
  spec: "http-handler-abi#get_method"
  guest: http_wasm
  test: 1
  expect: { status: 200, body: "POST" }
  profiles:
    envoy: { expect: { status: 200, body: "GET" }, cite: "this test" }
- name: as_kong_only
  spec: "http-handler-abi#get_method"
  guest: http_wasm
  test: 1
  expect: { body: "POST" }
  profiles:
    kong: { expect: { body: "GET" }, cite: "this test" }
"#,
    )
    .unwrap();
    let cases = load_dir(dir.path()).unwrap();
    let mut prepared = Prepared::new(cases, &[engine.to_string()]).await.unwrap();
    let gateway = crate::common::load(&prepared.config_path()).unwrap();
    let server = wasmgate::proxy::start(gateway).await.unwrap();
    let target = Target::One(server.addrs["web"]);

    let report = prepared.run_target(target).await;
    assert_eq!(
        report.summary(),
        "0 passed, 2 failed",
        "{}",
        report.to_text()
    );

    prepared.set_profile(Some("envoy".to_string()));
    let report = prepared.run_target(target).await;
    let text = report.to_text();
    assert_eq!(
        report.summary(),
        "1 passed (1 behave as envoy), 1 failed",
        "{text}"
    );
    let r = report
        .results
        .iter()
        .find(|r| r.case == "as_envoy")
        .unwrap();
    assert!(r.passed && r.mismatches.is_empty());
    assert_eq!(r.behaves_as.as_deref(), Some("envoy"));
    assert!(text.contains("as envoy"), "{text}");
    assert!(text.contains("FAILED as_kong_only"), "{text}");
    assert!(
        text.contains("body: expected \"POST\", got \"GET\""),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["behaves_as"], 1);
    server.shutdown().await;
}
parity!(async a_profile_answer_behaves_as_that_host_only_when_asked);

#[test]
fn the_command_filters_prints_the_summary_and_exits_by_result() {
    let out = Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .args([
            "conformance",
            "--engine",
            "wasmtime",
            "--case",
            "get_method_*",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let n = builtin_cases()
        .unwrap()
        .iter()
        .filter(|c| c.name.starts_with("get_method_"))
        .count();
    assert!(n >= 3);
    assert!(
        stdout.ends_with(&format!("{n} passed, 0 failed\n")),
        "{stdout}"
    );
    assert!(stdout.contains("http-wasm/get_method_get"), "{stdout}");
    assert!(!stdout.contains("get_uri"), "{stdout}");

    let out = Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .args([
            "conformance",
            "--engine",
            "wasmer",
            "--case",
            "get_uri_root",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["passed"], 1);
    assert_eq!(v["failed"], 0);
    assert_eq!(v["results"][0]["engine"], "wasmer");
    assert_eq!(v["results"][0]["case"], "get_uri_root");

    let out = Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .args(["conformance", "--case", "no_such_case"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

async fn log_and_metric_expectations_that_do_not_hold_are_reported(engine: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("observed.yaml"),
        r#"
- name: logs_right
  spec: "http-handler-abi#log"
  guest: http_wasm
  test: 70
  expect: { logs: ["^WARN guest says warn$"], logs_absent: ["says none"] }
- name: logs_wrong
  spec: "http-handler-abi#log"
  guest: http_wasm
  test: 70
  expect: { logs: ["^INFO never said$"], logs_absent: ["^DEBUG guest says debug$"] }
- name: metrics_wrong
  spec: "proxy-wasm-abi-{version}#proxy_increment_metric"
  guest: proxy_wasm
  test: 41
  versions: [0.2.1]
  expect: { metrics: { pw_metric_counter: 8, never_defined: 1 } }
"#,
    )
    .unwrap();
    let cases = load_dir(dir.path()).unwrap();
    let report = wasmgate::conformance::run(cases, &[engine.to_string()])
        .await
        .unwrap();
    let text = report.to_text();
    assert_eq!(report.summary(), "1 passed, 2 failed", "{text}");
    let of = |case: &str| {
        report
            .results
            .iter()
            .find(|r| r.case == case && r.engine == engine)
            .unwrap()
            .mismatches
            .clone()
    };
    let logs = of("logs_wrong");
    assert_eq!(logs.len(), 2, "{logs:?}");
    assert!(
        logs[0].starts_with("logs: expected a line matching /^INFO never said$/, got [")
            && logs[0].contains("\"INFO guest says info\""),
        "{logs:?}"
    );
    assert_eq!(
        logs[1],
        "logs: expected no line matching /^DEBUG guest says debug$/, got \"DEBUG guest says debug\""
    );
    assert_eq!(
        of("metrics_wrong@0.2.1"),
        vec![
            "metric never_defined: expected 1, got absent".to_string(),
            "metric pw_metric_counter: expected 8, got 7".to_string(),
        ]
    );
}
parity!(async log_and_metric_expectations_that_do_not_hold_are_reported);

/// One case, one spec anchor: no two cases send the same request through the same behaviour
/// and expect the same (filed under two anchors, they would count twice in the support table).
#[test]
fn no_case_runs_twice_under_another_name() {
    let mut seen = std::collections::BTreeMap::new();
    let mut twice = Vec::new();
    for c in builtin_cases().unwrap() {
        let mut v = serde_json::to_value(&c).unwrap();
        let o = v.as_object_mut().unwrap();
        o.remove("name");
        o.remove("spec");
        if let Some(first) = seen.insert(v.to_string(), c.name.clone()) {
            twice.push(format!("{first} and {}", c.name));
        }
    }
    assert!(
        twice.is_empty(),
        "the same case under two names: {twice:#?}"
    );
}
