//! Runs cases against a proxy: wasmgate started on the install file this module writes, or
//! another host configured from the files `export` writes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::case::{guest, Case};
use crate::client::{send, Got};
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
pub struct Slot {
    /// The guest.
    pub guest: String,
    /// The engine it is declared on.
    pub engine: String,
    /// The middleware configuration.
    pub config: serde_json::Value,
}

/// The numbering of slots (`mN`): every distinct (guest, config) of a case list, in order,
/// repeated once per engine of [`ENGINES`] (engine-major). It depends only on that list, so
/// files written for the whole suite match a later run of a few of its cases; and the first
/// engine's slots come first, so hosts with no engine choice need only `m0`..`m{n-1}`.
#[derive(Debug, Clone)]
pub struct Slots {
    base: Vec<(String, serde_json::Value)>,
}

impl Slots {
    /// Numbers the slots of `universe`.
    pub fn new(universe: &[Case]) -> Slots {
        let mut base = Vec::new();
        for case in universe {
            let b = (case.guest.clone(), config_of(case));
            if !base.contains(&b) {
                base.push(b);
            }
        }
        Slots { base }
    }

    /// The number of `case` on `engine`; `None` when the case's (guest, config) is not in the
    /// numbered list or the engine is not in [`ENGINES`].
    pub fn index(&self, case: &Case, engine: &str) -> Option<usize> {
        let e = ENGINES.iter().position(|x| *x == engine)?;
        let b = (case.guest.clone(), config_of(case));
        let i = self.base.iter().position(|x| *x == b)?;
        Some(e * self.base.len() + i)
    }

    /// Every slot on `engines`, with its number, in number order.
    pub fn on(&self, engines: &[String]) -> Vec<(usize, Slot)> {
        let mut out = Vec::new();
        for (e, engine) in ENGINES.iter().enumerate() {
            if !engines.iter().any(|x| x == engine) {
                continue;
            }
            for (i, (g, c)) in self.base.iter().enumerate() {
                let slot = Slot {
                    guest: g.clone(),
                    engine: engine.to_string(),
                    config: c.clone(),
                };
                out.push((e * self.base.len() + i, slot));
            }
        }
        out
    }

    /// The guests the slots use, sorted.
    pub fn guests(&self) -> Vec<String> {
        let mut g: Vec<String> = self.base.iter().map(|(g, _)| g.clone()).collect();
        g.sort();
        g.dedup();
        g
    }
}

fn config_of(case: &Case) -> serde_json::Value {
    case.config.clone().unwrap_or_else(|| serde_json::json!({}))
}

/// Where the cases go.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// One entry point for every slot; the route header picks the middleware.
    One(SocketAddr),
    /// One listener per slot: slot `mN` listens on this address's port plus N (how the
    /// written Envoy configuration works).
    PerSlot(SocketAddr),
}

impl Target {
    /// The address that serves slot `idx`.
    pub fn addr(&self, idx: usize) -> anyhow::Result<SocketAddr> {
        match *self {
            Target::One(a) => Ok(a),
            Target::PerSlot(base) => {
                let port = u16::try_from(usize::from(base.port()) + idx)
                    .ok()
                    .with_context(|| format!("slot m{idx} is past the last port from {base}"))?;
                Ok(SocketAddr::new(base.ip(), port))
            }
        }
    }
}

/// The suite ready to run: guests compiled and written, upstream started, install file written.
pub struct Prepared {
    cases: Vec<Case>,
    engines: Vec<String>,
    slots: Slots,
    upstream: Upstream,
    dir: tempfile::TempDir,
}

impl Prepared {
    /// Compiles the guests `cases` use, starts the upstream on a free port and writes the
    /// install file; the slots are numbered from `cases` themselves.
    pub async fn new(cases: Vec<Case>, engines: &[String]) -> anyhow::Result<Prepared> {
        let slots = Slots::new(&cases);
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        Prepared::start(cases, slots, engines, any_port).await
    }

    /// Like [`Prepared::new`], with slots numbered by `slots` (which must cover `cases`) and
    /// the upstream on `upstream` (port 0 for any).
    pub async fn start(
        cases: Vec<Case>,
        slots: Slots,
        engines: &[String],
        upstream: SocketAddr,
    ) -> anyhow::Result<Prepared> {
        for case in &cases {
            for engine in engines {
                if slots.index(case, engine).is_none() {
                    anyhow::bail!("case {} on {engine} has no slot", case.name);
                }
            }
        }
        let dir = tempfile::tempdir().context("creating a temp dir")?;
        let upstream = Upstream::start(upstream)
            .await
            .with_context(|| format!("starting the upstream on {upstream}"))?;
        let guests = write_guests(dir.path(), &slots.guests())?;
        let yaml = install_file(
            dir.path(),
            &guests,
            engines,
            &slots,
            upstream.addr,
            "127.0.0.1:0",
        )?;
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

    /// Where the upstream listens.
    pub fn upstream_addr(&self) -> SocketAddr {
        self.upstream.addr
    }

    /// Runs every case on every engine against the proxy listening on `proxy`.
    pub async fn run(&self, proxy: SocketAddr) -> Report {
        self.run_target(Target::One(proxy)).await
    }

    /// The address the first case goes to, to check the target answers before running.
    pub fn first_addr(&self, target: Target) -> anyhow::Result<Option<SocketAddr>> {
        for case in &self.cases {
            for engine in &self.engines {
                if let Some(idx) = self.slots.index(case, engine) {
                    return target.addr(idx).map(Some);
                }
            }
        }
        Ok(None)
    }

    /// Runs every case on every engine against `target`.
    pub async fn run_target(&self, target: Target) -> Report {
        let mut results = Vec::new();
        for case in &self.cases {
            for engine in &self.engines {
                // `start` checked every (case, engine) has a slot.
                let idx = self.slots.index(case, engine).unwrap_or(0);
                let key = format!("{}@{}", case.name, engine);
                self.upstream.set_answer(&key, case.upstream.clone());
                let mut headers = vec![
                    (ROUTE_HEADER.to_string(), format!("m{idx}")),
                    (TEST_ID_HEADER.to_string(), case.test.to_string()),
                    (CASE_KEY_HEADER.to_string(), key.clone()),
                ];
                headers.extend(case.request.headers.iter().cloned());
                let r = &case.request;
                let got = match target.addr(idx) {
                    Ok(addr) => send(addr, &r.method, &r.uri, &r.version, &headers, &r.body).await,
                    Err(e) => Err(e),
                };
                let calls = self.upstream.calls(&key);
                let (mismatches, got) = match got {
                    Ok(g) => (compare(case, &g, calls), Some(g)),
                    Err(e) => (vec![format!("request failed: {e:#}")], None),
                };
                results.push(CaseResult {
                    case: case.name.clone(),
                    spec: case.spec.clone(),
                    abi: case.abi().name().to_string(),
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

/// Compiles each guest of `names` from WAT into `dir/<name>.wasm`; returns the names.
pub fn write_guests(dir: &Path, names: &[String]) -> anyhow::Result<Vec<String>> {
    for name in names {
        let g = guest(name).with_context(|| format!("unknown guest {name}"))?;
        let wasm = wat::parse_str(g.wat).with_context(|| format!("guest {name}"))?;
        let path = dir.join(format!("{name}.wasm"));
        std::fs::write(&path, wasm).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(names.to_vec())
}

/// The wasmgate install file: each guest declared once per engine, one middleware per slot
/// on `engines`, and one router per middleware, picked by the route header; the guests'
/// modules are `dir/<guest>.wasm` and the entry point `web` listens on `listen`.
pub fn install_file(
    dir: &Path,
    guests: &[String],
    engines: &[String],
    slots: &Slots,
    upstream: SocketAddr,
    listen: &str,
) -> anyhow::Result<String> {
    use serde_json::{json, Map, Value};
    let mut plugins = Map::new();
    for g in guests {
        for e in engines {
            plugins.insert(
                format!("{g}-{e}"),
                json!({"path": dir.join(format!("{g}.wasm")).display().to_string(), "engine": e}),
            );
        }
    }
    let mut routers = Map::new();
    let mut middlewares = Map::new();
    for (i, s) in slots.on(engines) {
        let m = format!("m{i}");
        let mut plugin = Map::new();
        plugin.insert(format!("{}-{}", s.guest, s.engine), s.config.clone());
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
        "entryPoints": {"web": {"address": listen}},
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
