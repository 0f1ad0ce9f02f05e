//! The process's `tracing` setup: one global subscriber, set once by the binary.

use clap::ValueEnum;

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
pub fn init(format: LogFormat, level: &str, capture_plugin_logs: bool) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    // Colours only on a terminal: a log file or a collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if !capture_plugin_logs {
        // One global filter: `tracing::enabled!` (which sets the plugin log level) stays exact,
        // which it is not once a per-layer filter decides per event.
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(ansi)
            .with_writer(std::io::stderr);
        match format {
            LogFormat::Human => builder.init(),
            LogFormat::Json => builder.json().flatten_event(true).init(),
        }
        return;
    }
    // Per-layer: a global filter would hide from the capture what it hides from stderr.
    let output = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
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
