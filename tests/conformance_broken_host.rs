//! The suite catches a broken host: with a host function made to misbehave on purpose
//! (wasmgate-abi's `fault-injection` feature, on for tests only), exactly the cases that check
//! that behaviour fail, saying what they expected and what came back. Its own test binary,
//! and one test, because a fault is process-wide.

use std::collections::BTreeSet;

use wasmgate_abi::faults::{self, Fault};
use wasmgate_conformance::case::{builtin_cases, Case, PROXY_WASM_VERSIONS};
use wasmgate_conformance::Report;

const ENGINES: [&str; 2] = ["wasmtime", "wasmer"];

fn engines() -> Vec<String> {
    ENGINES.iter().map(|e| e.to_string()).collect()
}

fn cases_named(part: &str) -> Vec<Case> {
    let cases: Vec<Case> = builtin_cases()
        .unwrap()
        .into_iter()
        .filter(|c| c.name.contains(part))
        .collect();
    assert!(
        cases.len() >= 3,
        "only {} cases named *{part}*",
        cases.len()
    );
    cases
}

/// (case, engine) of every failed result.
fn failed(report: &Report) -> BTreeSet<(String, String)> {
    report
        .results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| (r.case.clone(), r.engine.clone()))
        .collect()
}

fn on_both(names: &[&str]) -> BTreeSet<(String, String)> {
    names
        .iter()
        .flat_map(|n| ENGINES.iter().map(|e| (n.to_string(), e.to_string())))
        .collect()
}

fn mismatches<'a>(report: &'a Report, case: &str, engine: &str) -> &'a [String] {
    &report
        .results
        .iter()
        .find(|r| r.case == case && r.engine == engine)
        .unwrap()
        .mismatches
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_host_function_fails_exactly_the_cases_that_check_it() {
    // http-wasm get_uri percent-decodes: only the cases whose URI holds %XX escapes notice.
    let get_uri = cases_named("get_uri");
    faults::inject(Fault::HttpWasmGetUriDecoded);
    let broken = wasmgate::conformance::run(get_uri.clone(), &engines())
        .await
        .unwrap();
    faults::clear();
    let text = broken.to_text();
    assert_eq!(
        failed(&broken),
        on_both(&[
            "get_uri_kept_encoded",
            "set_uri_then_get_uri",
            "get_uri_http2_path_and_query"
        ]),
        "{text}"
    );
    assert_eq!(broken.failed(), 6, "{text}");
    for engine in ENGINES {
        assert_eq!(
            mismatches(&broken, "get_uri_kept_encoded", engine),
            [
                r#"body: expected "/simple%26clean/a%20b?name=kung+fu%2Bpanda", got "/simple&clean/a b?name=kung+fu+panda""#
            ]
        );
        assert_eq!(
            mismatches(&broken, "get_uri_http2_path_and_query", engine),
            [r#"body: expected "/a%20b/c?x=1&y", got "/a b/c?x=1&y""#]
        );
        assert_eq!(
            mismatches(&broken, "set_uri_then_get_uri", engine),
            [r#"body: expected "/n%41me?k=v+w", got "/nAme?k=v+w""#]
        );
        for passing in [
            "get_uri_root",
            "get_uri_path_and_query",
            "get_uri_buffer_too_small",
        ] {
            assert!(mismatches(&broken, passing, engine).is_empty(), "{text}");
        }
        assert!(
            text.contains(&format!(
                "FAILED get_uri_kept_encoded on {engine} (http-handler-abi#get_uri)"
            )),
            "{text}"
        );
    }
    let fixed = wasmgate::conformance::run(get_uri.clone(), &engines())
        .await
        .unwrap();
    assert_eq!(fixed.failed(), 0, "{}", fixed.to_text());
    assert_eq!(fixed.results.len(), 2 * get_uri.len());

    // proxy-wasm proxy_get_header_map_value answers the last value: only a repeated header shows it.
    let get_value = cases_named("pw_get_header_map_value");
    faults::inject(Fault::ProxyWasmHeaderValueLastNotFirst);
    let broken = wasmgate::conformance::run(get_value.clone(), &engines())
        .await
        .unwrap();
    faults::clear();
    let text = broken.to_text();
    // Every proxy-wasm case runs once per ABI version (`name@0.1.0`, ...).
    let repeated: Vec<String> = PROXY_WASM_VERSIONS
        .iter()
        .map(|v| format!("pw_get_header_map_value_first_of_repeated@{v}"))
        .collect();
    let repeated: Vec<&str> = repeated.iter().map(String::as_str).collect();
    assert_eq!(failed(&broken), on_both(&repeated), "{text}");
    for engine in ENGINES {
        for case in &repeated {
            assert_eq!(
                mismatches(&broken, case, engine),
                [r#"body: expected "one", got "two""#]
            );
        }
        for v in PROXY_WASM_VERSIONS {
            let single = format!("pw_get_header_map_value@{v}");
            assert!(mismatches(&broken, &single, engine).is_empty(), "{text}");
        }
    }
    let fixed = wasmgate::conformance::run(get_value, &engines())
        .await
        .unwrap();
    assert_eq!(fixed.failed(), 0, "{}", fixed.to_text());
}
