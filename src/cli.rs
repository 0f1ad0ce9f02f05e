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
    /// With `--provider`, also read what that KV store holds now and check it with the rest.
    Validate(ValidateArgs),
    /// Run the ABI conformance suite against this build on every engine, or against another
    /// proxy (`--target`), or write its guests and configs (`guests --out`); needs no `-c`.
    // Boxed: its options dwarf the other variants.
    Conformance(Box<ConformanceArgs>),
    /// Plugin tools (`plugin inspect FILE.wasm`); need no `-c`.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

/// Options of `validate`.
#[derive(Debug, Default, clap::Args)]
pub struct ValidateArgs {
    /// Also check the routing a KV provider of the install file stores now.
    #[arg(long, value_enum)]
    pub provider: Option<ProviderArg>,
}

/// A KV provider named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProviderArg {
    /// `providers.etcd`.
    Etcd,
    /// `providers.redis`.
    Redis,
}

/// `wasmgate plugin ...`.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// What a module is to wasmgate: its ABI and version, imports (and those wasmgate does not
    /// provide), exports, memory asked for, WASI use; with `--engine`, whether it loads there
    /// and how long compiling takes. Exit 0 when wasmgate can run it, 1 when not, 2 when the
    /// file is not a module.
    Inspect(InspectArgs),
}

/// Options of `plugin inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The .wasm file.
    pub file: PathBuf,
    /// Also compile it on this engine (and run the ABI's load checks), reporting the time.
    #[arg(long, value_enum)]
    pub engine: Option<EngineArg>,
    /// The ABI, when the module's exports and imports do not tell.
    #[arg(long, value_enum, default_value_t = AbiArg::Auto)]
    pub abi: AbiArg,
    /// Output format.
    #[arg(long, value_enum, default_value_t = InspectFormat::Text)]
    pub format: InspectFormat,
}

/// An engine named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineArg {
    /// wasmtime.
    Wasmtime,
    /// wasmer.
    Wasmer,
}

/// An ABI named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AbiArg {
    /// Detected from the module.
    Auto,
    /// http-wasm.
    HttpWasm,
    /// proxy-wasm.
    ProxyWasm,
}

/// How `plugin inspect` prints its report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InspectFormat {
    /// Lines for a terminal.
    Text,
    /// One JSON object.
    Json,
}
