//! The command line: its options and subcommands (what they do lives in `main.rs`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use crate::conformance::args::{ConformanceArgs, ConformanceCommand, GuestsArgs, ReportFormat};
pub use crate::logging::LogFormat;

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
    /// Log level: error, warn, info, debug or trace (or a tracing filter such as `wasmgate=debug`);
    /// `info` by default, `warn` for `conformance` (whose report is the output).
    #[arg(long, global = true, env = "WASMGATE_LOG")]
    pub log_level: Option<String>,
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
    /// Run the ABI conformance suite against this build on every engine, or against another
    /// proxy (`--target`), or write its guests and configs (`guests --out`); needs no `-c`.
    // Boxed: its options dwarf the other variants.
    Conformance(Box<ConformanceArgs>),
}
