//! Plugin log lines for `expect.logs`: a `tracing` layer that keeps events of target
//! `wasmgate::plugin` while an in-process run captures, from that run's plugins only.
//!
//! The subscriber is process-wide and other gateways may run beside the suite (tests share
//! one process): their plugins' lines are told apart by the `plugin` field every plugin
//! event carries.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::{self, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use wasmgate_conformance::LogSource;

/// The `tracing` target of plugin log lines.
const PLUGIN_TARGET: &str = "wasmgate::plugin";

/// Whether a run is capturing plugin log lines; no line is kept otherwise.
static CAPTURING: AtomicBool = AtomicBool::new(false);
/// Whether the global subscriber holds [`log_capture_layer`].
pub(super) static INSTALLED: AtomicBool = AtomicBool::new(false);
/// The plugin log lines of the current case, `LEVEL message`.
static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// The plugins (declared names) of the run capturing: other plugins' lines are not kept.
static PLUGINS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
/// Capture, and the faults tests inject, are process-wide: one in-process run at a time.
pub(super) static ONE_RUN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The layer that hands plugin log lines to the suite. Add it to the global subscriber and
/// call [`log_capture_installed`]; it lets events through only while a run captures.
///
/// Only for processes that run the suite: its per-layer filter decides per event, and
/// `tracing::enabled!` then answers yes for plugin levels no layer keeps, so plugins would
/// log (and http-wasm `log_enabled` answer) below the configured level.
pub fn log_capture_layer<S>() -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    CaptureLayer.with_filter(CaptureFilter)
}

/// Records that the global subscriber holds [`log_capture_layer`], so runs can check logs.
pub fn log_capture_installed() {
    INSTALLED.store(true, Ordering::SeqCst);
}

struct CaptureFilter;

impl<S> layer::Filter<S> for CaptureFilter {
    fn enabled(&self, meta: &Metadata<'_>, _: &layer::Context<'_, S>) -> bool {
        meta.target() == PLUGIN_TARGET && CAPTURING.load(Ordering::Relaxed)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        // Asked per event for plugin lines only: capture turns on and off at run time.
        if meta.target() == PLUGIN_TARGET {
            Interest::sometimes()
        } else {
            Interest::never()
        }
    }
}

struct CaptureLayer;

impl<S: Subscriber> Layer<S> for CaptureLayer {
    fn on_event(&self, event: &Event<'_>, _: layer::Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let ours = PLUGINS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&fields.plugin);
        if ours {
            let line = format!("{} {}", event.metadata().level(), fields.message);
            LINES.lock().unwrap_or_else(|p| p.into_inner()).push(line);
        }
    }
}

/// The fields of a plugin log event the capture needs.
#[derive(Default)]
struct Fields {
    message: String,
    plugin: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_string(),
            "plugin" => self.plugin = value.to_string(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "plugin" => self.plugin = format!("{value:?}"),
            _ => {}
        }
    }
}

/// Turns capture on for as long as it lives, for the lines of `plugins` (declared names).
pub(super) struct Capturing;

impl Capturing {
    pub(super) fn start(plugins: impl IntoIterator<Item = String>) -> Capturing {
        *PLUGINS.lock().unwrap_or_else(|p| p.into_inner()) = plugins.into_iter().collect();
        CAPTURING.store(true, Ordering::SeqCst);
        Capturing
    }
}

impl Drop for Capturing {
    fn drop(&mut self) {
        CAPTURING.store(false, Ordering::SeqCst);
        PLUGINS.lock().unwrap_or_else(|p| p.into_inner()).clear();
        LINES.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

pub(super) struct CapturedLogs;

impl LogSource for CapturedLogs {
    fn start_case(&self) {
        LINES.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn lines(&self) -> Vec<String> {
        LINES.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Without a global subscriber (under `cargo test`), installs one that only captures.
pub(super) fn install_capture_if_none() {
    let subscriber = tracing_subscriber::registry().with(log_capture_layer());
    if tracing::subscriber::set_global_default(subscriber).is_ok() {
        log_capture_installed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_keeps_its_own_plugins_lines_only_and_only_while_it_captures() {
        // Capture state is process-wide: hold it as a run would.
        let _one = ONE_RUN.blocking_lock();
        let subscriber = tracing_subscriber::registry().with(log_capture_layer());
        tracing::subscriber::with_default(subscriber, || {
            let capturing = Capturing::start(["ours".to_string()]);
            tracing::warn!(target: "wasmgate::plugin", plugin = "ours", middleware = "m", "kept");
            let theirs = "theirs";
            tracing::warn!(target: "wasmgate::plugin", plugin = %theirs, "another gateway's");
            tracing::warn!(target: "wasmgate::other", plugin = "ours", "not a plugin line");
            tracing::info!(target: "wasmgate::plugin", plugin = %"ours", "kept too");
            assert_eq!(CapturedLogs.lines(), ["WARN kept", "INFO kept too"]);
            drop(capturing);
            tracing::warn!(target: "wasmgate::plugin", plugin = "ours", "after the run");
            assert!(CapturedLogs.lines().is_empty());
        });
    }
}
