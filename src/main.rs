//! The `wasmgate` binary: the command line's edge, where errors become exit codes.

// The global allocator below is declared in safe code; mimalloc's own unsafe stays in its crate.
#![forbid(unsafe_code)]

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use wasmgate::cli::{self, Cli, Command};
use wasmgate::gateway::Gateway;

/// mimalloc instead of the system allocator: every request allocates (headers, bodies, futures)
/// and glibc's malloc and free took about a quarter of the CPU in profiles of the proxy.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let conformance_run = matches!(cli.command, Some(Command::Conformance(_)));
    let default_level = if conformance_run { "warn" } else { "info" };
    let level = cli.log_level.as_deref().unwrap_or(default_level);
    wasmgate::logging::init(cli.log_format, level, conformance_run);
    if let Some(Command::Conformance(args)) = &cli.command {
        return conformance(args);
    }
    if let Some(Command::Plugin(cli::PluginCommand::Inspect(args))) = &cli.command {
        return inspect(args);
    }
    let Some(config) = cli.config.as_deref() else {
        eprintln!("error: no configuration file; pass -c FILE");
        return ExitCode::from(2);
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Validate(ref args) => validate(config, args.provider),
        Command::Conformance(ref args) => conformance(args),
        Command::Plugin(cli::PluginCommand::Inspect(ref args)) => inspect(args),
        Command::Run => match run(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn validate(config: &Path, provider: Option<cli::ProviderArg>) -> ExitCode {
    // Middlewares are built inside a runtime (proxy-wasm ones spawn their dispatcher there).
    // This one is never driven and is dropped after the gateway: no tick or task runs.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let loaded = Gateway::load(config, runtime.handle()).and_then(|gateway| {
        let Some(which) = provider else {
            return Ok(());
        };
        let which = match which {
            cli::ProviderArg::Etcd => wasmgate::provider::Which::Etcd,
            cli::ProviderArg::Redis => wasmgate::provider::Which::Redis,
        };
        let read = runtime.block_on(wasmgate::provider::read_once(&gateway, which));
        let (name, root_key, pairs) = read.map_err(|e| {
            let file = config.to_path_buf();
            wasmgate::config::ConfigErrors(vec![wasmgate::config::ConfigError::at(
                &file,
                "providers",
                format!("reading the store: {e}"),
            )])
        })?;
        let keys = pairs.len();
        gateway.apply_kv(name, &root_key, pairs)?;
        println!("{name}: {keys} key(s) under {root_key}/ checked");
        Ok(())
    });
    match loaded {
        Ok(()) => {
            println!("{}: configuration is valid", config.display());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("error: {e}");
            }
            eprintln!("{} error(s) in the configuration", errors.0.len());
            ExitCode::FAILURE
        }
    }
}

fn conformance(args: &cli::ConformanceArgs) -> ExitCode {
    if let Some(cli::ConformanceCommand::Guests(g)) = &args.command {
        return guests(g);
    }
    match wasmgate::conformance::run_cli(args) {
        Ok(report) => {
            match args.format {
                cli::ReportFormat::Text => print!("{}", report.to_text()),
                cli::ReportFormat::Json => println!("{}", report.to_json()),
                cli::ReportFormat::Markdown => {
                    println!("{}", wasmgate::support_table::render(&report))
                }
            }
            if report.failed() == 0 && !report.results.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn inspect(args: &cli::InspectArgs) -> ExitCode {
    use wasmgate_abi::plugin::{AbiChoice, EngineKind};
    let abi = match args.abi {
        cli::AbiArg::Auto => AbiChoice::Auto,
        cli::AbiArg::HttpWasm => AbiChoice::HttpWasm,
        cli::AbiArg::ProxyWasm => AbiChoice::ProxyWasm,
    };
    let engine = args.engine.map(|e| match e {
        cli::EngineArg::Wasmtime => EngineKind::Wasmtime,
        cli::EngineArg::Wasmer => EngineKind::Wasmer,
    });
    match wasmgate::inspect::inspect(&args.file, abi, engine) {
        Ok(report) => {
            match args.format {
                cli::InspectFormat::Text => print!("{}", report.to_text()),
                cli::InspectFormat::Json => match serde_json::to_string_pretty(&report) {
                    Ok(json) => println!("{json}"),
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(2);
                    }
                },
            }
            if report.loads() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn guests(args: &cli::GuestsArgs) -> ExitCode {
    match wasmgate::conformance::guests_cli(args) {
        Ok(done) => {
            for f in &done.files {
                println!("{}", f.display());
            }
            for s in &done.skipped {
                eprintln!("skipped: {s}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(config: &Path) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // Loaded for the runtime: proxy-wasm dispatchers (ticks, queues) start with the gateway,
    // not with the first request.
    let gateway =
        Gateway::load(config, runtime.handle()).map_err(|errors| anyhow::anyhow!("{errors}"))?;
    runtime.block_on(async move {
        let server = wasmgate::proxy::start(gateway.clone()).await?;
        let _watcher =
            wasmgate::reload::watch(gateway.clone()).context("watching the routing file")?;
        // After the entry points: a store that cannot be reached does not keep them closed.
        let _providers = wasmgate::provider::start(&gateway);
        shutdown_signal().await;
        tracing::info!("shutting down: draining in-flight requests");
        server.shutdown().await;
        if let Some(log) = &gateway.access_log {
            log.close();
        }
        tracing::info!("stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
