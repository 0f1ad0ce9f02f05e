//! `wasmgate conformance`: the suite of the `wasmgate-conformance` crate run against this
//! build, in process, on every engine; or against another proxy (`--target`); or written out
//! for one (`guests --out`).
//!
//! In process the suite also sees plugin log lines (through [`log_capture_layer`], part of
//! the global `tracing` subscriber) and proxy-wasm metrics (through the gateway).

pub mod args;
mod capture;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use wasmgate_conformance::case::{self, Abi, Case};
use wasmgate_conformance::export::{self, ExportOptions, Exported};
use wasmgate_conformance::observe::{LogFile, PrometheusScrape};
use wasmgate_conformance::{
    LogSource, MetricSource, Observers, Prepared, Report, Slots, Target, ENGINES,
};

use self::args::{ConformanceArgs, GuestsArgs};
pub use self::capture::{log_capture_installed, log_capture_layer};
use self::capture::{CapturedLogs, Capturing};

use crate::gateway::Gateway;

/// Where `--target` runs start the upstream unless told: what `guests --out` writes.
pub const DEFAULT_TARGET_UPSTREAM: &str = "127.0.0.1:9099";

/// proxy-wasm metrics, read from the VMs of the gateway's plugins.
struct GatewayMetrics(Arc<Gateway>);

impl MetricSource for GatewayMetrics {
    fn metric(&self, plugin: &str, name: &str) -> Option<i64> {
        let plugin = self.0.plugin(plugin)?;
        plugin.proxy_wasm()?.vm().metric(name).map(|m| m.value)
    }
}

/// Starts wasmgate on the suite's install file, runs `cases` on `engines`, stops it.
pub async fn run(cases: Vec<Case>, engines: &[String]) -> anyhow::Result<Report> {
    let slots = Slots::new(&cases);
    run_in_process(cases, slots, engines, SocketAddr::from(([127, 0, 0, 1], 0))).await
}

/// Starts the upstream on `upstream` and wasmgate on the install file, runs, stops.
async fn run_in_process(
    cases: Vec<Case>,
    slots: Slots,
    engines: &[String],
    upstream: SocketAddr,
) -> anyhow::Result<Report> {
    let _one = capture::ONE_RUN.lock().await;
    capture::install_capture_if_none();
    let prepared = Prepared::start(cases, slots, engines, upstream).await?;
    let plugins = crate::config::load(&prepared.config_path())
        .map_err(|e| anyhow::anyhow!("the suite's install file did not load:\n{e}"))?
        .config
        .plugins
        .into_keys();
    // On before the plugins load: their middlewares read the enabled log level when they start.
    let _capturing = Capturing::start(plugins);
    let gateway = Gateway::load(&prepared.config_path(), &tokio::runtime::Handle::current())
        .map_err(|e| anyhow::anyhow!("the suite's install file did not load:\n{e}"))?;
    let metrics = GatewayMetrics(gateway.clone());
    let server = crate::proxy::start(gateway).await?;
    let addr = *server
        .addrs
        .get("web")
        .context("the suite's entry point did not start")?;
    let logs = CapturedLogs;
    let observers = Observers {
        logs: capture::INSTALLED
            .load(Ordering::SeqCst)
            .then_some(&logs as &dyn LogSource),
        metrics: Some(&metrics),
    };
    let mut report = prepared.run_observed(Target::One(addr), observers).await;
    server.shutdown().await;
    // Each plugin that must fail to load gets a start of its own (one failing plugin stops
    // the whole proxy).
    let handle = tokio::runtime::Handle::current();
    for (case, engine) in prepared.load_cases() {
        let path = prepared.load_install_file(case, engine)?;
        let loaded = match Gateway::load(&path, &handle) {
            Ok(_) => Ok(()),
            Err(e) => Err(format!("{e:#}")),
        };
        report
            .results
            .push(prepared.load_result(case, engine, loaded));
    }
    Ok(report)
}

/// What a `--target` run observes of the proxy besides its responses.
#[derive(Default)]
pub struct TargetObservers {
    /// Its plugin log lines, from the file it writes them to.
    pub logs: Option<LogFile>,
    /// Its metrics, scraped.
    pub metrics: Option<PrometheusScrape>,
}

/// Runs `cases` on `engines` against a proxy already running at `target`, with the upstream
/// on `upstream` and slots numbered from `all` (the cases the proxy was configured for).
pub async fn run_target(
    cases: Vec<Case>,
    all: &[Case],
    engines: &[String],
    target: Target,
    upstream: SocketAddr,
    observe: &TargetObservers,
    profile: Option<String>,
) -> anyhow::Result<Report> {
    // The proxy under test was started once, on files without them.
    let (load, cases): (Vec<Case>, Vec<Case>) = cases.into_iter().partition(|c| c.load_fails());
    if !load.is_empty() {
        eprintln!(
            "({} load-time cases left out: each needs a proxy started on its own plugin)",
            load.len()
        );
    }
    let mut prepared = Prepared::start(cases, Slots::new(all), engines, upstream).await?;
    prepared.set_profile(profile);
    eprintln!("upstream listening on {}", prepared.upstream_addr());
    // Every case would fail alike; one clear error says more.
    if let Some(addr) = prepared.first_addr(target)? {
        tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| {
                format!("nothing answers at {addr}: is the proxy under test running there?")
            })?;
    }
    let observers = Observers {
        logs: observe.logs.as_ref().map(|l| l as &dyn LogSource),
        metrics: observe.metrics.as_ref().map(|m| m as &dyn MetricSource),
    };
    Ok(prepared.run_observed(target, observers).await)
}

/// The built-in cases, filtered as the command line asks, on the engines it names (all when none).
pub fn run_cli(args: &ConformanceArgs) -> anyhow::Result<Report> {
    let all = builtin_cases(args.sdk)?;
    let cases = case::filter(
        all.clone(),
        args.abi.as_deref().and_then(Abi::parse),
        args.case.as_deref(),
    );
    if cases.is_empty() {
        anyhow::bail!("no case matches the filters");
    }
    if let Some(p) = &args.profile {
        // A misspelt host name would silently turn every recorded difference into a failure.
        let known: std::collections::BTreeSet<&str> = all
            .iter()
            .flat_map(|c| c.profiles.keys().map(String::as_str))
            .collect();
        if !known.contains(p.as_str()) {
            let known: Vec<&str> = known.into_iter().collect();
            anyhow::bail!(
                "no case has a profile named {p:?} (known: {})",
                known.join(", ")
            );
        }
    }
    let engines = engines_or_all(&args.engine);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let target = match (&args.target, &args.target_per_slot) {
            (Some(url), _) => Some(Target::One(resolve(url).await?)),
            (None, Some(url)) => Some(Target::PerSlot(resolve(url).await?)),
            (None, None) => None,
        };
        if target.is_none() && args.profile.is_some() {
            anyhow::bail!("--profile names the host under test: it needs --target or --target-per-slot");
        }
        if target.is_none() && (args.log_file.is_some() || args.metrics_url.is_some()) {
            anyhow::bail!("--log-file and --metrics-url observe a proxy under test: they need --target or --target-per-slot");
        }
        match target {
            Some(t) => {
                let upstream = match args.upstream {
                    Some(u) => u,
                    None => DEFAULT_TARGET_UPSTREAM.parse()?,
                };
                let observe = TargetObservers {
                    logs: args.log_file.clone().map(LogFile::new),
                    metrics: args
                        .metrics_url
                        .as_deref()
                        .map(PrometheusScrape::new)
                        .transpose()?,
                };
                run_target(
                    cases,
                    &all,
                    &engines,
                    t,
                    upstream,
                    &observe,
                    args.profile.clone(),
                )
                .await
            }
            None => {
                let upstream = args
                    .upstream
                    .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
                let slots = Slots::new(&cases);
                run_in_process(cases, slots, &engines, upstream).await
            }
        }
    })
}

/// `wasmgate conformance guests --out DIR`: writes the guests and configurations.
pub fn guests_cli(args: &GuestsArgs) -> anyhow::Result<Exported> {
    let opts = ExportOptions {
        upstream: args.upstream,
        listen: args.listen,
        engines: engines_or_all(&args.engine),
        base_port: args.base_port,
    };
    export::export(&args.out, &builtin_cases(args.sdk)?, &opts)
}

/// The built-in cases; those of SDK-built guests only when `sdk`.
fn builtin_cases(sdk: bool) -> anyhow::Result<Vec<Case>> {
    let mut all = case::builtin_cases()?;
    let sdk_cases = all.iter().filter(|c| c.is_sdk()).count();
    if !sdk {
        all.retain(|c| !c.is_sdk());
        if sdk_cases > 0 {
            eprintln!("({sdk_cases} cases of SDK-built guests left out; --sdk runs them)");
        }
    }
    Ok(all)
}

fn engines_or_all(engines: &[String]) -> Vec<String> {
    if engines.is_empty() {
        ENGINES.iter().map(|e| e.to_string()).collect()
    } else {
        engines.to_vec()
    }
}

/// `http://HOST:PORT` (a trailing `/` allowed) as a socket address.
async fn resolve(url: &str) -> anyhow::Result<SocketAddr> {
    let hostport = url
        .strip_prefix("http://")
        .with_context(|| format!("target {url:?}: expected http://HOST:PORT"))?
        .trim_end_matches('/');
    if hostport.contains('/') || !hostport.contains(':') {
        anyhow::bail!("target {url:?}: expected http://HOST:PORT");
    }
    tokio::net::lookup_host(hostport)
        .await
        .with_context(|| format!("resolving {hostport}"))?
        .next()
        .with_context(|| format!("{hostport} has no address"))
}
