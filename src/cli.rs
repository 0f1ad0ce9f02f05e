//! The command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// wasmgate: a reverse proxy that runs http-wasm and proxy-wasm plugins as chained middlewares.
#[derive(Debug, Parser)]
#[command(name = "wasmgate", version, about)]
pub struct Cli {
    /// The install file (YAML).
    #[arg(short = 'c', long = "config", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// Log level: error, warn, info, debug or trace (or a tracing filter such as `wasmgate=debug`).
    #[arg(long, global = true, default_value = "info", env = "WASMGATE_LOG")]
    pub log_level: String,
    /// What to do; `run` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve until SIGINT or SIGTERM, then drain in-flight requests and exit.
    Run,
    /// Parse the configuration, resolve every reference, load every plugin; exit 0 or 1.
    Validate,
    /// Run the ABI conformance suite against this build on every engine; needs no `-c`.
    Conformance(ConformanceArgs),
}

/// Options of `wasmgate conformance`.
#[derive(Debug, clap::Args)]
pub struct ConformanceArgs {
    /// Only this engine (repeatable): wasmtime or wasmer.
    #[arg(long, value_parser = ["wasmtime", "wasmer"])]
    pub engine: Vec<String>,
    /// Only this ABI: http-wasm or proxy-wasm.
    #[arg(long, value_parser = ["http-wasm", "proxy-wasm"])]
    pub abi: Option<String>,
    /// Only cases whose name contains PATTERN (or matches it, with `*` and `?`).
    #[arg(long = "case", value_name = "PATTERN")]
    pub case: Option<String>,
    /// Output: a matrix for people or JSON for machines.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
}

/// Output format of `wasmgate conformance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// The matrix, failures in detail, the summary line.
    Text,
    /// One JSON document.
    Json,
    /// The README's support table (host function × ABI version × engine) in Markdown.
    Markdown,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// Sets up `tracing` for the process; with `capture_plugin_logs` (for `wasmgate conformance`)
/// it adds the suite's log capture, which is off until a conformance run turns it on.
pub fn init_logging(format: LogFormat, level: &str, capture_plugin_logs: bool) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if !capture_plugin_logs {
        // One global filter: `tracing::enabled!` (which sets the plugin log level) stays exact,
        // which it is not once a per-layer filter decides per event.
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        match format {
            LogFormat::Human => builder.init(),
            LogFormat::Json => builder.json().flatten_event(true).init(),
        }
        return;
    }
    // Per-layer: a global filter would hide from the capture what it hides from stderr.
    let output = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let output = match format {
        LogFormat::Human => output.with_filter(filter).boxed(),
        LogFormat::Json => output
            .json()
            .flatten_event(true)
            .with_filter(filter)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(crate::conformance::log_capture_layer())
        .with(output)
        .init();
    crate::conformance::log_capture_installed();
}
