//! `wasmgate conformance`: the suite of the `wasmgate-conformance` crate run against this
//! build, in process, on every engine.

use anyhow::Context;
use wasmgate_conformance::case::{self, Abi, Case};
use wasmgate_conformance::{Prepared, Report, ENGINES};

use crate::cli::ConformanceArgs;
use crate::gateway::Gateway;

/// Starts wasmgate on the suite's install file, runs `cases` on `engines`, stops it.
pub async fn run(cases: Vec<Case>, engines: &[String]) -> anyhow::Result<Report> {
    let prepared = Prepared::new(cases, engines).await?;
    let gateway = Gateway::load(&prepared.config_path())
        .map_err(|e| anyhow::anyhow!("the suite's install file did not load:\n{e}"))?;
    let server = crate::proxy::start(gateway).await?;
    let addr = *server
        .addrs
        .get("web")
        .context("the suite's entry point did not start")?;
    let report = prepared.run(addr).await;
    server.shutdown().await;
    Ok(report)
}

/// The built-in cases, filtered as the command line asks, on the engines it names (all when none).
pub fn run_cli(args: &ConformanceArgs) -> anyhow::Result<Report> {
    let cases = case::filter(
        case::builtin_cases()?,
        args.abi.as_deref().and_then(Abi::parse),
        args.case.as_deref(),
    );
    if cases.is_empty() {
        anyhow::bail!("no case matches the filters");
    }
    let engines: Vec<String> = if args.engine.is_empty() {
        ENGINES.iter().map(|e| e.to_string()).collect()
    } else {
        args.engine.clone()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(cases, &engines))
}
