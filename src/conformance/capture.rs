//! Plugin log lines for `expect.logs`: a `tracing` layer that keeps events of target
//! `wasmgate::plugin` while an in-process run captures.

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
        let mut message = Message(String::new());
        event.record(&mut message);
        let line = format!("{} {}", event.metadata().level(), message.0);
        LINES.lock().unwrap_or_else(|p| p.into_inner()).push(line);
    }
}

struct Message(String);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_string();
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

/// Turns capture on for as long as it lives.
pub(super) struct Capturing;

impl Capturing {
    pub(super) fn start() -> Capturing {
        CAPTURING.store(true, Ordering::SeqCst);
        Capturing
    }
}

impl Drop for Capturing {
    fn drop(&mut self) {
        CAPTURING.store(false, Ordering::SeqCst);
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
