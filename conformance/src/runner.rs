//! Runs cases against a proxy started on the install file this module writes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::case::{guest_source, Case};
use crate::client::{send_with_trailers, Got};
use crate::report::{CaseResult, Report};
use crate::upstream::{Upstream, CASE_KEY_HEADER};

/// The engines wasmgate offers.
pub const ENGINES: &[&str] = &["wasmtime", "wasmer"];

/// The request header that picks the middleware (and so guest, engine and config).
pub const ROUTE_HEADER: &str = "x-conformance-route";

/// The request header that picks the guest's behaviour.
pub const TEST_ID_HEADER: &str = "x-test-id";

/// A middleware of the install file: one guest on one engine with one configuration.
#[derive(Debug, Clone, PartialEq)]
struct Slot {
    guest: String,
    engine: String,
    config: serde_json::Value,
}

/// The suite ready to run: guests compiled and written, upstream started, install file written.
pub struct Prepared {
    cases: Vec<Case>,
    engines: Vec<String>,
    slots: Vec<Slot>,
    upstream: Upstream,
    dir: tempfile::TempDir,
}

impl Prepared {
    /// Compiles the guests `cases` use, starts the upstream and writes the install file.
    pub async fn new(cases: Vec<Case>, engines: &[String]) -> anyhow::Result<Prepared> {
        let dir = tempfile::tempdir().context("creating a temp dir")?;
        let upstream = Upstream::start().await.context("starting the upstream")?;
        let mut slots = Vec::new();
        for case in &cases {
            for engine in engines {
                let slot = slot_of(case, engine);
                if !slots.contains(&slot) {
                    slots.push(slot);
                }
            }
        }
        let mut guests: Vec<&str> = cases.iter().map(|c| c.guest.as_str()).collect();
        guests.sort();
        guests.dedup();
        for name in &guests {
            let wat = guest_source(name).with_context(|| format!("unknown guest {name}"))?;
            let wasm = wat::parse_str(&wat).with_context(|| format!("guest {name}"))?;
            std::fs::write(dir.path().join(format!("{}.wasm", file_stem(name))), wasm)?;
        }
        let yaml = install_file(dir.path(), &guests, engines, &slots, upstream.addr)?;
        std::fs::write(dir.path().join("wasmgate.yaml"), yaml)?;
        Ok(Prepared {
            cases,
            engines: engines.to_vec(),
            slots,
            upstream,
            dir,
        })
    }

    /// The install file to start wasmgate on; its entry point is `web` on `127.0.0.1:0`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("wasmgate.yaml")
    }

    /// Runs every case on every engine against the proxy listening on `proxy`.
    pub async fn run(&self, proxy: SocketAddr) -> Report {
        let mut results = Vec::new();
        for case in &self.cases {
            for engine in &self.engines {
                let slot = slot_of(case, engine);
                let idx = self.slots.iter().position(|s| *s == slot).unwrap_or(0);
                let key = format!("{}@{}", case.name, engine);
                self.upstream.set_answer(&key, case.upstream.clone());
                let mut headers = vec![
                    (ROUTE_HEADER.to_string(), format!("m{idx}")),
                    (TEST_ID_HEADER.to_string(), case.test.to_string()),
                    (CASE_KEY_HEADER.to_string(), key.clone()),
                ];
                headers.extend(case.request.headers.iter().cloned());
                let r = &case.request;
                let got = send_with_trailers(
                    proxy,
                    &r.method,
                    &r.uri,
                    &r.version,
                    &headers,
                    &r.body,
                    &r.trailers,
                )
                .await;
                let calls = self.upstream.calls(&key);
                let (mismatches, got) = match got {
                    Ok(g) => (compare(case, &g, calls), Some(g)),
                    Err(e) => (vec![format!("request failed: {e:#}")], None),
                };
                results.push(CaseResult {
                    case: case.name.clone(),
                    spec: case.spec.clone(),
                    abi: case.abi().name().to_string(),
                    version: case.abi_version(),
                    engine: engine.clone(),
                    passed: mismatches.is_empty(),
                    mismatches,
                    got,
                });
            }
        }
        Report {
            engines: self.engines.clone(),
            results,
        }
    }
}

/// `guest@0.2.1` → `guest-0_2_1`: a name fit for files and for wasmgate plugin names, where
/// `@` would read as a provider suffix.
fn file_stem(guest: &str) -> String {
    guest.replace('@', "-").replace('.', "_")
}

fn slot_of(case: &Case, engine: &str) -> Slot {
    Slot {
        guest: case.guest.clone(),
        engine: engine.to_string(),
        config: case.config.clone().unwrap_or_else(|| serde_json::json!({})),
    }
}

/// The wasmgate install file: each guest declared once per engine, one middleware per slot,
/// and one router per middleware, picked by the route header.
fn install_file(
    dir: &Path,
    guests: &[&str],
    engines: &[String],
    slots: &[Slot],
    upstream: SocketAddr,
) -> anyhow::Result<String> {
    use serde_json::{json, Map, Value};
    let mut plugins = Map::new();
    for g in guests {
        for e in engines {
            let stem = file_stem(g);
            plugins.insert(
                format!("{stem}-{e}"),
                json!({"path": dir.join(format!("{stem}.wasm")).display().to_string(), "engine": e}),
            );
        }
    }
    let mut routers = Map::new();
    let mut middlewares = Map::new();
    for (i, s) in slots.iter().enumerate() {
        let m = format!("m{i}");
        let mut plugin = Map::new();
        plugin.insert(
            format!("{}-{}", file_stem(&s.guest), s.engine),
            s.config.clone(),
        );
        middlewares.insert(m.clone(), json!({ "plugin": Value::Object(plugin) }));
        routers.insert(
            format!("r{i}"),
            json!({
                "rule": format!("Header(`{ROUTE_HEADER}`, `{m}`)"),
                "middlewares": [m],
                "service": "upstream",
            }),
        );
    }
    let mut services = BTreeMap::new();
    services.insert(
        "upstream",
        json!({"loadBalancer": {"servers": [{"url": format!("http://{upstream}")}]}}),
    );
    let doc = json!({
        "entryPoints": {"web": {"address": "127.0.0.1:0"}},
        "plugins": Value::Object(plugins),
        "http": {
            "routers": Value::Object(routers),
            "middlewares": Value::Object(middlewares),
            "services": services,
        },
    });
    Ok(serde_yaml::to_string(&doc)?)
}

/// Every way `got` differs from what `case` expects, as readable lines.
pub fn compare(case: &Case, got: &Got, upstream_calls: u32) -> Vec<String> {
    let e = &case.expect;
    let mut out = Vec::new();
    if let Some(s) = e.status {
        if s != got.status {
            out.push(format!("status: expected {s}, got {}", got.status));
        }
    }
    for (name, want) in &e.headers {
        let have = got.header(name);
        if have != *want {
            let show = |v: &Option<String>| match v {
                Some(v) => format!("{v:?}"),
                None => "absent".to_string(),
            };
            out.push(format!(
                "header {name}: expected {}, got {}",
                show(want),
                show(&have)
            ));
        }
    }
    if let Some(b) = &e.body {
        if *b != got.body {
            out.push(format!("body: expected {b:?}, got {:?}", got.body));
        }
    }
    for c in &e.body_contains {
        if !got.body.contains(c.as_str()) {
            out.push(format!(
                "body: expected to contain {c:?}, got {:?}",
                got.body
            ));
        }
    }
    for c in &e.body_not_contains {
        if got.body.contains(c.as_str()) {
            out.push(format!(
                "body: expected not to contain {c:?}, got {:?}",
                got.body
            ));
        }
    }
    if let Some(re) = &e.body_matches {
        match regex::Regex::new(&format!("^(?s:{re})$")) {
            Ok(r) if r.is_match(&got.body) => {}
            Ok(_) => out.push(format!(
                "body: expected to match /{re}/, got {:?}",
                got.body
            )),
            Err(err) => out.push(format!("body_matches: bad regex: {err}")),
        }
    }
    if let Some(n) = e.upstream_calls {
        if n != upstream_calls {
            out.push(format!(
                "upstream calls: expected {n}, got {upstream_calls}"
            ));
        }
    }
    out
}
