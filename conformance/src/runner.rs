//! Runs cases against a proxy: wasmgate started on the install file this module writes, or
//! another host configured from the files `export` writes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::case::{guest, guest_wasm, Case, Expect, PluginSettings};
use crate::client::{send, Got};
use crate::report::{CaseResult, Report};
use crate::upstream::{Upstream, CASE_KEY_HEADER};

/// The engines wasmgate offers.
pub const ENGINES: &[&str] = &["wasmtime", "wasmer"];

/// The request header that picks the middleware (and so guest, engine and config).
pub const ROUTE_HEADER: &str = "x-conformance-route";

/// The request header that picks the guest's behaviour.
pub const TEST_ID_HEADER: &str = "x-test-id";

/// How long the runner waits for expected log lines and metric values after the response:
/// proxy-wasm `on_log` and `on_delete` may run after the response has been sent.
pub const SETTLE: Duration = Duration::from_millis(200);

/// How long the runner waits after a client gave up (`abort_after_ms`) before it looks at
/// upstream calls, log lines and metrics.
pub const ABORT_SETTLE: Duration = Duration::from_millis(500);

/// The plugin log lines of the proxy under test, for `expect.logs`.
pub trait LogSource: Send + Sync {
    /// Forgets the lines seen so far: a case is about to run (cases run one at a time).
    fn start_case(&self);
    /// The plugin log lines emitted since [`LogSource::start_case`], each `LEVEL message`.
    fn lines(&self) -> Vec<String>;
}

/// The proxy-wasm metrics of the proxy under test, for `expect.metrics`.
pub trait MetricSource: Send + Sync {
    /// The value of metric `name` of the plugin declared as `plugin`, if it is defined.
    fn metric(&self, plugin: &str, name: &str) -> Option<i64>;
}

/// What the runner can observe of the proxy besides its responses; `None` is "not observable",
/// and a case expecting it fails with a mismatch that says so.
#[derive(Default, Clone, Copy)]
pub struct Observers<'a> {
    /// Plugin log lines.
    pub logs: Option<&'a dyn LogSource>,
    /// proxy-wasm metrics.
    pub metrics: Option<&'a dyn MetricSource>,
}

/// A router of the install file: its middlewares (one, or a case's chain) on one engine.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    /// The engine its plugins are declared on.
    pub engine: String,
    /// Its middlewares, in order: `mN`, then `mN-1`, `mN-2`... for the rest of a chain.
    pub links: Vec<SlotLink>,
}

/// One middleware of a slot: one guest with one configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotLink {
    /// The guest.
    pub guest: String,
    /// The middleware configuration.
    pub config: serde_json::Value,
    /// The plugin settings, if any (then the guest has a declaration of its own).
    pub settings: Option<PluginSettings>,
    /// The name of the plugin declaration the middleware uses.
    pub plugin: String,
}

/// The name of middleware `link` of slot `idx`: `mN` for the first, `mN-L` for the others.
pub fn middleware_name(idx: usize, link: usize) -> String {
    match link {
        0 => format!("m{idx}"),
        l => format!("m{idx}-{l}"),
    }
}

/// The numbering of slots (`mN`): every distinct chain of (guest, config, plugin settings) of
/// a case list (most cases: a chain of one), in order, repeated once per engine of
/// [`ENGINES`] (engine-major). It depends only
/// on that list, so files written for the whole suite match a later run of a few of its
/// cases; and the first engine's slots come first, so hosts with no engine choice need only
/// `m0`..`m{n-1}`. Cases whose plugin must fail to load (`expect.load: fail`) have no slot:
/// one plugin that fails to load stops the whole proxy, so each gets a file of its own
/// ([`Prepared::load_install_file`]).
#[derive(Debug, Clone)]
pub struct Slots {
    base: Vec<SlotKey>,
    /// Distinct (guest, settings) with settings, numbered for their declarations' names.
    decls: Vec<(String, PluginSettings)>,
}

type SlotKey = Vec<(String, serde_json::Value, Option<PluginSettings>)>;

fn key_of(case: &Case) -> SlotKey {
    case.links()
}

impl Slots {
    /// Numbers the slots of `universe`.
    pub fn new(universe: &[Case]) -> Slots {
        let mut base = Vec::new();
        let mut decls = Vec::new();
        for case in universe.iter().filter(|c| !c.load_fails()) {
            let b = key_of(case);
            for (g, _, set) in &b {
                if let Some(set) = set {
                    let d = (g.clone(), set.clone());
                    if !decls.contains(&d) {
                        decls.push(d);
                    }
                }
            }
            if !base.contains(&b) {
                base.push(b);
            }
        }
        Slots { base, decls }
    }

    /// The number of `case` on `engine`; `None` when the case's chain is not in the numbered
    /// list or the engine is not in [`ENGINES`].
    pub fn index(&self, case: &Case, engine: &str) -> Option<usize> {
        let e = ENGINES.iter().position(|x| *x == engine)?;
        let b = key_of(case);
        let i = self.base.iter().position(|x| *x == b)?;
        Some(e * self.base.len() + i)
    }

    /// The name of the plugin declaration `guest` with `settings` has on `engine`.
    pub fn plugin(&self, guest: &str, settings: Option<&PluginSettings>, engine: &str) -> String {
        let d =
            settings.and_then(|set| self.decls.iter().position(|(g, x)| g == guest && x == set));
        match d {
            Some(d) => format!("{}-p{d}-{engine}", file_stem(guest)),
            None => plugin_name(guest, engine),
        }
    }

    /// The declaration `case`'s first plugin has on `engine` (whose metrics the case checks).
    pub fn case_plugin(&self, case: &Case, engine: &str) -> String {
        let links = case.links();
        let (g, _, set) = &links[0];
        self.plugin(g, set.as_ref(), engine)
    }

    /// Every slot on `engines`, with its number, in number order.
    pub fn on(&self, engines: &[String]) -> Vec<(usize, Slot)> {
        let mut out = Vec::new();
        for (e, engine) in ENGINES.iter().enumerate() {
            if !engines.iter().any(|x| x == engine) {
                continue;
            }
            for (i, links) in self.base.iter().enumerate() {
                let slot = Slot {
                    engine: engine.to_string(),
                    links: links
                        .iter()
                        .map(|(g, c, set)| SlotLink {
                            guest: g.clone(),
                            config: c.clone(),
                            settings: set.clone(),
                            plugin: self.plugin(g, set.as_ref(), engine),
                        })
                        .collect(),
                };
                out.push((e * self.base.len() + i, slot));
            }
        }
        out
    }

    /// The guests the slots use, sorted.
    pub fn guests(&self) -> Vec<String> {
        let mut g: Vec<String> = self
            .base
            .iter()
            .flatten()
            .map(|(g, _, _)| g.clone())
            .collect();
        g.sort();
        g.dedup();
        g
    }
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
    profile: Option<String>,
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
        for case in cases.iter().filter(|c| !c.load_fails()) {
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
            profile: None,
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

    /// Runs every case on every engine against the proxy listening on `proxy`, which
    /// offers no log lines or metrics.
    pub async fn run(&self, proxy: SocketAddr) -> Report {
        self.run_observed(Target::One(proxy), Observers::default())
            .await
    }

    /// Runs every case on every engine against `target`, which offers no log lines or metrics.
    pub async fn run_target(&self, target: Target) -> Report {
        self.run_observed(target, Observers::default()).await
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

    /// Runs every case on every engine against `target`, checking `expect.logs` and
    /// `expect.metrics` with `observers`. Cases whose plugin must fail to load are not run
    /// here (see [`Prepared::load_cases`]).
    pub async fn run_observed(&self, target: Target, observers: Observers<'_>) -> Report {
        let mut results = Vec::new();
        for case in self.cases.iter().filter(|c| !c.load_fails()) {
            for engine in &self.engines {
                results.push(self.run_case(case, engine, target, observers).await);
            }
        }
        Report {
            engines: self.engines.clone(),
            results,
        }
    }

    /// Reports a case that matches its `--profile` host's answer as "behaves as" that host
    /// (`None`: only `expect` counts, as in process).
    pub fn set_profile(&mut self, profile: Option<String>) {
        self.profile = profile;
    }

    async fn run_case(
        &self,
        case: &Case,
        engine: &str,
        target: Target,
        observers: Observers<'_>,
    ) -> CaseResult {
        // `start` checked every (case, engine) has a slot.
        let idx = self.slots.index(case, engine).unwrap_or(0);
        let key = format!("{}@{}", case.name, engine);
        self.upstream.set_answer(&key, case.upstream.clone());
        let headers = vec![
            (ROUTE_HEADER.to_string(), format!("m{idx}")),
            (TEST_ID_HEADER.to_string(), case.test.to_string()),
            (CASE_KEY_HEADER.to_string(), key.clone()),
        ];
        if let Some(logs) = observers.logs {
            logs.start_case();
        }
        let r = &case.request;
        let mut answers = vec![Answer::Failed("no request sent".to_string())];
        for _ in 0..r.repeat.max(1) {
            answers = match target.addr(idx) {
                Ok(addr) => send_copies(addr, r, &headers).await,
                Err(e) => vec![Answer::Failed(format!("{e:#}"))],
            };
            if answers.iter().any(|a| matches!(a, Answer::Failed(_))) {
                break;
            }
        }
        if answers.iter().any(|a| matches!(a, Answer::Aborted)) {
            // What a host does after a client gave up (callbacks that must not come) happens
            // later: give it time before looking.
            tokio::time::sleep(ABORT_SETTLE).await;
        }
        let calls = self.upstream.calls(&key);
        let plugin = self.slots.case_plugin(case, engine);
        let mut mismatches = compare_answers(&case.expect, &answers, calls);
        mismatches.extend(settle_observed(&case.expect, &plugin, observers).await);
        let mut behaves_as = None;
        let profile = self
            .profile
            .as_ref()
            .and_then(|n| case.profiles.get_key_value(n));
        if let (false, Some((name, p))) = (mismatches.is_empty(), profile) {
            let mut m = compare_answers(&p.expect, &answers, calls);
            if m.is_empty() {
                m = settle_observed(&p.expect, &plugin, observers).await;
            }
            if m.is_empty() {
                mismatches.clear();
                behaves_as = Some(name.clone());
            }
        }
        let got = answers.into_iter().rev().find_map(|a| match a {
            Answer::Got(g) => Some(g),
            _ => None,
        });
        CaseResult {
            case: case.name.clone(),
            spec: case.spec.clone(),
            abi: case.abi().name().to_string(),
            version: case.abi_version(),
            engine: engine.to_string(),
            passed: mismatches.is_empty(),
            mismatches,
            got,
            behaves_as,
        }
    }

    /// The cases whose plugin must fail to load (`expect.load: fail`): the caller starts
    /// the proxy on [`Prepared::load_install_file`] for each, on each engine, and hands what
    /// happened to [`Prepared::load_result`].
    pub fn load_cases(&self) -> impl Iterator<Item = (&Case, &str)> {
        self.cases
            .iter()
            .filter(|c| c.load_fails())
            .flat_map(|c| self.engines.iter().map(move |e| (c, e.as_str())))
    }

    /// An install file with only `case`'s plugin on `engine` (one plugin that fails to load
    /// stops the whole proxy, so such a case cannot share the suite's file).
    pub fn load_install_file(&self, case: &Case, engine: &str) -> anyhow::Result<PathBuf> {
        let mut alone = case.clone();
        alone.expect.load = None;
        let slots = Slots::new(std::slice::from_ref(&alone));
        let guests = write_guests(self.dir.path(), &slots.guests())?;
        let engines = [engine.to_string()];
        let yaml = install_file(
            self.dir.path(),
            &guests,
            &engines,
            &slots,
            self.upstream.addr,
            "127.0.0.1:0",
        )?;
        let path = self
            .dir
            .path()
            .join(format!("load-{}-{engine}.yaml", file_stem(&case.name)));
        std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// The result of a load case given what starting the proxy on its file did (`Err` with
    /// the error's text when it failed).
    pub fn load_result(&self, case: &Case, engine: &str, loaded: Result<(), String>) -> CaseResult {
        let mut mismatches = Vec::new();
        match loaded {
            Ok(()) => mismatches.push("load: expected to fail, but the plugin loaded".to_string()),
            Err(err) => {
                if let Some(re) = &case.expect.load_error {
                    match regex::Regex::new(re) {
                        Ok(r) if r.is_match(&err) => {}
                        Ok(_) => mismatches.push(format!(
                            "load_error: expected a match for /{re}/, got {err:?}"
                        )),
                        Err(e) => mismatches.push(format!("load_error: bad regex {re:?}: {e}")),
                    }
                }
            }
        }
        CaseResult {
            case: case.name.clone(),
            spec: case.spec.clone(),
            abi: case.abi().name().to_string(),
            version: case.abi_version(),
            engine: engine.to_string(),
            passed: mismatches.is_empty(),
            mismatches,
            got: None,
            behaves_as: None,
        }
    }
}

/// What one copy of a request got.
enum Answer {
    /// A whole response.
    Got(Got),
    /// No whole response: refused, reset, closed, timed out.
    Failed(String),
    /// The client gave up first (`abort_after_ms`).
    Aborted,
}

/// Sends `concurrent` copies of the request at once (each on its own connection).
async fn send_copies(
    addr: SocketAddr,
    r: &crate::case::RequestSpec,
    headers: &[(String, String)],
) -> Vec<Answer> {
    let mut tasks = Vec::new();
    for _ in 0..r.concurrent.max(1) {
        let (r, headers) = (r.clone(), headers.to_vec());
        tasks.push(tokio::spawn(async move {
            let sent = send(addr, &r, &headers);
            match r.abort_after_ms {
                Some(ms) => match tokio::time::timeout(Duration::from_millis(ms), sent).await {
                    Ok(Ok(g)) => Answer::Got(g),
                    Ok(Err(e)) => Answer::Failed(format!("{e:#}")),
                    Err(_) => Answer::Aborted,
                },
                None => match sent.await {
                    Ok(g) => Answer::Got(g),
                    Err(e) => Answer::Failed(format!("{e:#}")),
                },
            }
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap_or_else(|e| Answer::Failed(e.to_string())));
    }
    out
}

/// Every way `answers` differ from `e`; with several copies each line names its copy.
fn compare_answers(e: &Expect, answers: &[Answer], upstream_calls: u32) -> Vec<String> {
    let mut out = Vec::new();
    let many = answers.len() > 1;
    for (i, a) in answers.iter().enumerate() {
        let lines = match a {
            Answer::Got(g) => {
                let mut l = Vec::new();
                if e.reset == Some(true) {
                    l.push(format!(
                        "reset: expected no response, got status {}",
                        g.status
                    ));
                }
                l.extend(compare_response(e, g));
                l
            }
            Answer::Failed(_) if e.reset == Some(true) => Vec::new(),
            Answer::Failed(err) => vec![format!("request failed: {err}")],
            Answer::Aborted if expects_response(e) || e.reset == Some(true) => {
                vec!["the client gave up before an answer came".to_string()]
            }
            Answer::Aborted => Vec::new(),
        };
        for l in lines {
            out.push(if many {
                format!("copy {}: {l}", i + 1)
            } else {
                l
            });
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

/// Whether `e` says anything about a response.
fn expects_response(e: &Expect) -> bool {
    e.status.is_some()
        || !e.headers.is_empty()
        || !e.trailers.is_empty()
        || e.body.is_some()
        || !e.body_contains.is_empty()
        || !e.body_not_contains.is_empty()
        || e.body_matches.is_some()
        || e.body_len.is_some()
        || e.list_count.is_some()
        || !e.header_lines.is_empty()
}

/// `guest@0.2.1` → `guest-0_2_1`: a name fit for files and for wasmgate plugin names, where
/// `@` would read as a provider suffix.
pub fn file_stem(guest: &str) -> String {
    guest.replace('@', "-").replace('.', "_")
}

/// The name the install file declares `guest` on `engine` under.
pub fn plugin_name(guest: &str, engine: &str) -> String {
    format!("{}-{engine}", file_stem(guest))
}

/// [`compare_observed`], retried for up to [`SETTLE`] while something expected is missing.
async fn settle_observed(e: &Expect, plugin: &str, observers: Observers<'_>) -> Vec<String> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let out = compare_observed(e, plugin, observers);
        let unobservable = (observers.logs.is_none()
            && !(e.logs.is_empty() && e.logs_absent.is_empty()))
            || (observers.metrics.is_none() && !e.metrics.is_empty());
        if out.is_empty() || unobservable || Instant::now() >= deadline {
            return out;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every way the log lines and metrics `observers` see differ from `e`, as readable lines.
pub fn compare_observed(e: &Expect, plugin: &str, observers: Observers<'_>) -> Vec<String> {
    let mut out = Vec::new();
    if !e.logs.is_empty() || !e.logs_absent.is_empty() {
        match observers.logs {
            Some(src) => out.extend(compare_logs(e, &src.lines())),
            None => out.push("logs: not observable against this host".to_string()),
        }
    }
    if !e.metrics.is_empty() {
        match observers.metrics {
            Some(src) => {
                for (name, want) in &e.metrics {
                    match src.metric(plugin, name) {
                        Some(have) if have == *want => {}
                        Some(have) => {
                            out.push(format!("metric {name}: expected {want}, got {have}"))
                        }
                        None => out.push(format!("metric {name}: expected {want}, got absent")),
                    }
                }
            }
            None => out.push("metrics: not observable against this host".to_string()),
        }
    }
    out
}

/// Every way plugin log `lines` differ from `e.logs` and `e.logs_absent`.
pub fn compare_logs(e: &Expect, lines: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for re in &e.logs {
        match regex::Regex::new(re) {
            Ok(r) if lines.iter().any(|l| r.is_match(l)) => {}
            Ok(_) => out.push(format!(
                "logs: expected a line matching /{re}/, got {lines:?}"
            )),
            Err(err) => out.push(format!("logs: bad regex {re:?}: {err}")),
        }
    }
    for re in &e.logs_absent {
        match regex::Regex::new(re) {
            Ok(r) => {
                if let Some(l) = lines.iter().find(|l| r.is_match(l)) {
                    out.push(format!("logs: expected no line matching /{re}/, got {l:?}"));
                }
            }
            Err(err) => out.push(format!("logs_absent: bad regex {re:?}: {err}")),
        }
    }
    out
}

/// Compiles each guest of `names` into `dir/<file stem>.wasm`; returns the names.
pub fn write_guests(dir: &Path, names: &[String]) -> anyhow::Result<Vec<String>> {
    for name in names {
        let wasm = guest_wasm(name)?;
        let path = dir.join(format!("{}.wasm", file_stem(name)));
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
            plugins.insert(plugin_name(g, e), declaration(dir, g, e, None));
        }
    }
    for (g, set) in &slots.decls {
        for e in engines {
            plugins.insert(
                slots.plugin(g, Some(set), e),
                declaration(dir, g, e, Some(set)),
            );
        }
    }
    let mut routers = Map::new();
    let mut middlewares = Map::new();
    for (i, s) in slots.on(engines) {
        let mut names = Vec::new();
        for (l, link) in s.links.iter().enumerate() {
            let m = middleware_name(i, l);
            let mut plugin = Map::new();
            plugin.insert(link.plugin.clone(), link.config.clone());
            middlewares.insert(m.clone(), json!({ "plugin": Value::Object(plugin) }));
            names.push(m);
        }
        routers.insert(
            format!("r{i}"),
            json!({
                "rule": format!("Header(`{ROUTE_HEADER}`, `m{i}`)"),
                "middlewares": names,
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

/// The plugin declaration of `guest` on `engine` with `settings`.
fn declaration(
    dir: &Path,
    guest_name: &str,
    engine: &str,
    settings: Option<&PluginSettings>,
) -> serde_json::Value {
    use serde_json::json;
    let mut decl = json!({
        "path": dir.join(format!("{}.wasm", file_stem(guest_name))).display().to_string(),
        "engine": engine,
    });
    if let Some(root_id) = guest(guest_name)
        .and_then(|g| g.sdk.as_ref())
        .and_then(|s| s.root_id)
    {
        decl["rootId"] = json!(root_id);
    }
    if let Some(set) = settings {
        if let Some(r) = &set.root_id {
            decl["rootId"] = json!(r);
        }
        if let Some(v) = &set.vm_config {
            decl["vmConfig"] = json!(v);
        }
        if let Some(v) = &set.vm_id {
            decl["vmId"] = json!(v);
        }
        if let Some(l) = &set.log_level {
            decl["logLevel"] = json!(l);
        }
        for (k, v) in &set.limits {
            decl[k.as_str()] = v.clone();
        }
    }
    decl
}

/// A guest's `N|item,item,` list whose count `N` does not match its items (`per_entry` items
/// per counted entry), as a line.
fn check_list_count(body: &str, per_entry: usize) -> Option<String> {
    let Some((count, items)) = body.split_once('|') else {
        return Some(format!("list: expected `N|item,...`, got {body:?}"));
    };
    let listed = items.matches(',').count();
    match count.parse::<usize>() {
        Ok(n) if n * per_entry == listed => None,
        Ok(n) => Some(format!(
            "list: the count says {n} (of {per_entry} items each), but {listed} items are listed: {body:?}"
        )),
        Err(_) => Some(format!("list: {count:?} is not a count: {body:?}")),
    }
}

/// Every way `got` differs from what `case` expects, as readable lines.
pub fn compare(case: &Case, got: &Got, upstream_calls: u32) -> Vec<String> {
    compare_answers(&case.expect, &[Answer::Got(got.clone())], upstream_calls)
}

/// Every way the response `got` differs from `e` (the response fields only).
fn compare_response(e: &Expect, got: &Got) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(s) = e.status {
        if s != got.status {
            out.push(format!("status: expected {s}, got {}", got.status));
        }
    }
    let show = |v: &Option<String>| match v {
        Some(v) => format!("{v:?}"),
        None => "absent".to_string(),
    };
    let fields = [
        (
            "header",
            &e.headers,
            Got::header as fn(&Got, &str) -> Option<String>,
        ),
        ("trailer", &e.trailers, Got::trailer),
    ];
    for (what, expected, get) in fields {
        for (name, want) in expected {
            let have = get(got, name);
            if have != *want {
                out.push(format!(
                    "{what} {name}: expected {}, got {}",
                    show(want),
                    show(&have)
                ));
            }
        }
    }
    if !e.header_lines.is_empty() {
        let names: Vec<String> = e
            .header_lines
            .iter()
            .map(|(n, _)| n.to_ascii_lowercase())
            .collect();
        let want: Vec<(String, String)> = e
            .header_lines
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
            .collect();
        let have: Vec<(String, String)> = got
            .headers
            .iter()
            .filter(|(n, _)| names.contains(n))
            .cloned()
            .collect();
        if have != want {
            out.push(format!("header lines: expected {want:?}, got {have:?}"));
        }
    }
    if let Some(b) = &e.body {
        if *b != got.body {
            out.push(format!("body: expected {b:?}, got {:?}", got.body));
        }
    }
    if let Some(n) = e.body_len {
        if n != got.body_len {
            out.push(format!("body length: expected {n}, got {}", got.body_len));
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
    if let Some(per_entry) = e.list_count {
        out.extend(check_list_count(&got.body, per_entry));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Lines(Vec<String>);

    impl LogSource for Lines {
        fn start_case(&self) {}
        fn lines(&self) -> Vec<String> {
            self.0.clone()
        }
    }

    fn expect(yaml: &str) -> Expect {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn logs_are_regexes_searched_in_each_line() {
        let e = expect(r#"{ logs: ["^INFO hel+o$", "^WARN bye"], logs_absent: ["^DEBUG"] }"#);
        let lines = Lines(vec!["INFO hello".into(), "WARN a warning".into()]);
        let obs = Observers {
            logs: Some(&lines),
            metrics: None,
        };
        assert_eq!(
            compare_observed(&e, "p", obs),
            vec![
                r#"logs: expected a line matching /^WARN bye/, got ["INFO hello", "WARN a warning"]"#
            ]
        );
        let lines = Lines(vec![
            "INFO hello".into(),
            "WARN bye".into(),
            "DEBUG x".into(),
        ]);
        let obs = Observers {
            logs: Some(&lines),
            metrics: None,
        };
        assert_eq!(
            compare_observed(&e, "p", obs),
            vec![r#"logs: expected no line matching /^DEBUG/, got "DEBUG x""#]
        );
    }

    #[test]
    fn without_observers_expectations_are_not_observable() {
        let e = expect(r#"{ logs: ["x"], metrics: { m: 1 } }"#);
        assert_eq!(
            compare_observed(&e, "p", Observers::default()),
            vec![
                "logs: not observable against this host",
                "metrics: not observable against this host"
            ]
        );
        assert!(compare_observed(&expect("{ status: 200 }"), "p", Observers::default()).is_empty());
    }

    #[test]
    fn list_counts_are_checked_against_the_items() {
        assert_eq!(check_list_count("2|a,b,", 1), None);
        assert_eq!(check_list_count("0|", 1), None);
        assert_eq!(check_list_count("2|k,v,k2,,", 2), None);
        assert!(check_list_count("3|a,b,", 1)
            .unwrap()
            .contains("says 3 (of 1 items each), but 2"));
        assert!(check_list_count("2|k,v,", 2).is_some());
        assert!(check_list_count("a,b,", 1)
            .unwrap()
            .contains("expected `N|item"));
        assert!(check_list_count("x|a,", 1).unwrap().contains("not a count"));
    }

    fn got(headers: &[(&str, &str)]) -> Got {
        Got {
            status: 200,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: String::new(),
            body_len: 0,
            trailers: Vec::new(),
        }
    }

    #[test]
    fn header_lines_are_compared_in_order_for_the_listed_names() {
        let e = expect(r#"{ header_lines: [[X-M, "1"], [x-m, "2"]] }"#);
        let ok = got(&[("x-m", "1"), ("x-n", "a"), ("x-m", "2")]);
        assert!(compare_answers(&e, &[Answer::Got(ok)], 0).is_empty());
        let swapped = got(&[("x-m", "2"), ("x-m", "1")]);
        assert_eq!(compare_answers(&e, &[Answer::Got(swapped)], 0).len(), 1);
        let joined = got(&[("x-m", "1, 2")]);
        assert_eq!(compare_answers(&e, &[Answer::Got(joined)], 0).len(), 1);
    }

    #[test]
    fn resets_aborts_and_copies() {
        let reset = expect("{ reset: true, upstream_calls: 1 }");
        assert!(compare_answers(&reset, &[Answer::Failed("closed".into())], 1).is_empty());
        assert_eq!(
            compare_answers(&reset, &[Answer::Got(got(&[]))], 1),
            vec!["reset: expected no response, got status 200"]
        );
        let plain = expect("{ status: 200 }");
        assert_eq!(
            compare_answers(&plain, &[Answer::Failed("closed".into())], 0),
            vec!["request failed: closed"]
        );
        assert_eq!(
            compare_answers(&plain, &[Answer::Aborted], 0),
            vec!["the client gave up before an answer came"]
        );
        assert!(
            compare_answers(&expect("{ upstream_calls: 1 }"), &[Answer::Aborted], 1).is_empty()
        );
        let two = [Answer::Got(got(&[])), Answer::Failed("x".into())];
        assert_eq!(
            compare_answers(&plain, &two, 0),
            vec!["copy 2: request failed: x"]
        );
    }
}
