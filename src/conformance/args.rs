//! The options of `wasmgate conformance`, here rather than in [`crate::cli`] so that the
//! suite does not depend on the command line that offers it.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};

/// Options of `wasmgate conformance`: run the suite (in process, or against `--target`), or
/// write the guests for another host (`guests`).
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ConformanceArgs {
    /// Write the suite's files instead of running it.
    #[command(subcommand)]
    pub command: Option<ConformanceCommand>,
    /// Only this engine (repeatable): wasmtime or wasmer. With --target it names the slots
    /// used; pass `--engine wasmtime` to run each case once against another host.
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
    /// Send the cases to a proxy already running there (configured by `guests --out`)
    /// instead of starting wasmgate.
    #[arg(
        long,
        value_name = "http://HOST:PORT",
        conflicts_with = "target_per_slot"
    )]
    pub target: Option<String>,
    /// Like --target, for hosts with one listener per slot (the written envoy.yaml): slot
    /// `mN` is sent to port BASEPORT + N.
    #[arg(long, value_name = "http://HOST:BASEPORT")]
    pub target_per_slot: Option<String>,
    /// With a target: the file its plugin log lines go to (wasmgate's JSON or human format,
    /// Envoy's default format), so cases that expect log lines can pass.
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,
    /// With a target: where it serves Prometheus text (wasmgate's `/metrics`, Envoy's
    /// `/stats/prometheus`), so cases that expect proxy-wasm metrics can pass.
    #[arg(long, value_name = "http://HOST:PORT/PATH")]
    pub metrics_url: Option<String>,
    /// With a target: the reference host it is (`envoy`, `kong`, `http-wasm-host-go`); a case
    /// that gives that host's recorded answer (its profile) is reported as "behaves as NAME"
    /// rather than failed. In process only the spec's (or wasmgate's) answer counts.
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// Where the suite's upstream listens: default 127.0.0.1:9099 with a target (what
    /// `guests --out` writes), any free port in process.
    #[arg(long, value_name = "HOST:PORT")]
    pub upstream: Option<SocketAddr>,
    /// Also run the cases of the SDK-built guests; builds them from the source tree's
    /// examples (needs cargo with the wasm32 targets, and npm).
    #[arg(long)]
    pub sdk: bool,
}

/// Subcommands of `wasmgate conformance`.
#[derive(Debug, Subcommand)]
pub enum ConformanceCommand {
    /// Write every guest (.wasm) and configurations for wasmgate, Traefik 3 and Envoy.
    Guests(GuestsArgs),
}

/// Options of `wasmgate conformance guests`.
#[derive(Debug, clap::Args)]
pub struct GuestsArgs {
    /// The directory to write into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Where `wasmgate conformance --target` will start the upstream.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9099")]
    pub upstream: SocketAddr,
    /// The entry point of the written wasmgate and Traefik configurations.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Engines wasmgate.yaml declares the guests on (repeatable); all when none.
    #[arg(long, value_parser = ["wasmtime", "wasmer"])]
    pub engine: Vec<String>,
    /// Envoy's first port: slot `mN` gets a listener on BASE_PORT + N.
    #[arg(long, default_value_t = 10000)]
    pub base_port: u16,
    /// Also write the SDK-built guests (built from the source tree's examples).
    #[arg(long)]
    pub sdk: bool,
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
