//! Where a guest's logs go: every plugin logs to `tracing` under the target
//! `wasmgate::plugin`, with its plugin and middleware names and the id of the request the
//! call serves (`request_id`, the request's `X-Request-Id`, which the access log line carries
//! too) as fields. Calls that serve no request (start-up; proxy-wasm's root context: VM and
//! plugin start, ticks, queue readiness, http call answers to the root) have no `request_id`.
//! WASI stdout and stderr lines get the fields of the guest call that wrote them ([`in_call`]);
//! written outside any call (during start-up), they carry only `plugin`.
//!
//! Each ABI numbers its log levels its own way and maps them to a
//! [`tracing::Level`]; the WASI stdout/stderr of every guest goes through one
//! sink, [`wasi_sink`]: stdout at info, stderr at error, as Envoy
//! (proxy-wasm-cpp-host) does.

use std::cell::RefCell;
use std::sync::Arc;

use tracing::level_filters::LevelFilter;
use tracing::Level;
use wasmgate_engines::wasi::{LogSink, WasiStream};

use crate::model::RequestId;

/// The target every guest log line is emitted under.
pub const TARGET: &str = "wasmgate::plugin";

/// The most verbose level enabled for guest logs by the `tracing` configuration in force,
/// or `None` when guest logs are off. Read once per middleware: guests ask for it often.
pub fn max_enabled_level() -> Option<Level> {
    [
        Level::TRACE,
        Level::DEBUG,
        Level::INFO,
        Level::WARN,
        Level::ERROR,
    ]
    .into_iter()
    .find(|l| enabled(*l))
}

/// The most verbose level a guest may log at: the plugin's `logLevel` (`configured`), within
/// what the process's log filter lets through (a plugin cannot log more than the process
/// shows); `None`: nothing.
pub fn guest_max_level(configured: Option<LevelFilter>) -> Option<Level> {
    let process = max_enabled_level();
    match configured {
        None => process,
        Some(filter) => {
            let plugin = filter.into_level()?;
            // tracing orders levels by verbosity: the smaller is the stricter.
            process.map(|p| p.min(plugin))
        }
    }
}

/// Whether guest log lines at `level` are enabled.
fn enabled(level: Level) -> bool {
    // `tracing::enabled!` needs a constant level, hence one branch per level.
    if level == Level::TRACE {
        tracing::enabled!(target: TARGET, Level::TRACE)
    } else if level == Level::DEBUG {
        tracing::enabled!(target: TARGET, Level::DEBUG)
    } else if level == Level::INFO {
        tracing::enabled!(target: TARGET, Level::INFO)
    } else if level == Level::WARN {
        tracing::enabled!(target: TARGET, Level::WARN)
    } else {
        tracing::enabled!(target: TARGET, Level::ERROR)
    }
}

/// One guest line at a constant level, with `request_id` only when there is one.
macro_rules! guest_line {
    ($level:ident, $plugin:expr, $middleware:expr, $request_id:expr, $text:expr) => {
        match $request_id {
            Some(request_id) => tracing::$level!(
                target: TARGET,
                plugin = $plugin,
                middleware = $middleware,
                request_id,
                "{}",
                $text
            ),
            None => tracing::$level!(
                target: TARGET,
                plugin = $plugin,
                middleware = $middleware,
                "{}",
                $text
            ),
        }
    };
}

/// Emits one line a guest logged, with the request it was serving (`request_id`; none for
/// calls that serve no request: start-up, proxy-wasm's root context).
pub fn emit(level: Level, plugin: &str, middleware: &str, request_id: Option<&str>, text: &str) {
    if level == Level::TRACE {
        guest_line!(trace, plugin, middleware, request_id, text)
    } else if level == Level::DEBUG {
        guest_line!(debug, plugin, middleware, request_id, text)
    } else if level == Level::INFO {
        guest_line!(info, plugin, middleware, request_id, text)
    } else if level == Level::WARN {
        guest_line!(warn, plugin, middleware, request_id, text)
    } else {
        guest_line!(error, plugin, middleware, request_id, text)
    }
}

/// The level a WASI stream's lines are logged at: stdout info, stderr error.
pub fn wasi_level(stream: WasiStream) -> Level {
    match stream {
        WasiStream::Stdout => Level::INFO,
        WasiStream::Stderr => Level::ERROR,
    }
}

/// The middleware and request a guest call on this thread is serving.
struct CallTag {
    middleware: Arc<str>,
    request_id: Option<RequestId>,
}

thread_local! {
    /// Set around guest calls ([`in_call`]): WASI output reaches the sink with no context of
    /// its own (the module's stdout is module-wide), and a guest call runs on one thread.
    static IN_CALL: RefCell<Option<CallTag>> = const { RefCell::new(None) };
}

/// While alive, this thread runs a guest call for `middleware` (and a request): what the guest
/// writes to stdout or stderr meanwhile is logged with them. Restores the previous one when
/// dropped (a call may run inside another's host function).
#[must_use = "the call is marked only while the guard lives"]
pub struct InCall(Option<CallTag>);

/// Whether a module can write to its WASI stdout or stderr (it imports `fd_write`): only then
/// is a guest call worth marking with [`in_call`].
pub fn writes_stdio(info: &wasmgate_engines::ModuleInfo) -> bool {
    info.imports
        .iter()
        .any(|i| i.name == "fd_write" && i.module.starts_with("wasi"))
}

/// Marks the guest call about to run on this thread; see [`InCall`].
pub fn in_call(middleware: &Arc<str>, request_id: Option<&RequestId>) -> InCall {
    let tag = CallTag {
        middleware: middleware.clone(),
        request_id: request_id.cloned(),
    };
    InCall(IN_CALL.with(|c| c.replace(Some(tag))))
}

impl Drop for InCall {
    fn drop(&mut self) {
        let prev = self.0.take();
        IN_CALL.with(|c| *c.borrow_mut() = prev);
    }
}

/// The sink of `plugin`'s WASI stdout and stderr (one call per complete line): during a guest
/// call (see [`in_call`]) each line carries the middleware and request id as the ABI's own log
/// calls do; outside one (start-up, a line finished when the instance goes) the plugin only.
pub fn wasi_sink(plugin: &str) -> LogSink {
    let plugin = plugin.to_string();
    Arc::new(move |stream, bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        let text = text.trim_end();
        let level = wasi_level(stream);
        let tag = IN_CALL.with(|c| {
            c.borrow()
                .as_ref()
                .map(|t| (t.middleware.clone(), t.request_id.clone()))
        });
        match tag {
            Some((middleware, id)) => emit(
                level,
                &plugin,
                &middleware,
                id.as_ref().map(RequestId::as_str),
                text,
            ),
            None if level == Level::INFO => {
                tracing::info!(target: TARGET, plugin = %plugin, "{text}")
            }
            None => tracing::error!(target: TARGET, plugin = %plugin, "{text}"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasi_streams_map_as_envoy_does() {
        assert_eq!(wasi_level(WasiStream::Stdout), Level::INFO);
        assert_eq!(wasi_level(WasiStream::Stderr), Level::ERROR);
    }

    #[test]
    fn the_most_verbose_enabled_level_is_found() {
        let subscriber = tracing_subscriber_for_tests();
        tracing::subscriber::with_default(subscriber, || {
            assert_eq!(max_enabled_level(), Some(Level::INFO));
        });
    }

    #[test]
    fn a_plugin_log_level_narrows_what_the_process_lets_through() {
        let subscriber = tracing_subscriber_for_tests();
        tracing::subscriber::with_default(subscriber, || {
            assert_eq!(guest_max_level(None), Some(Level::INFO));
            assert_eq!(guest_max_level(Some(LevelFilter::WARN)), Some(Level::WARN));
            // It cannot widen it: the process shows info and above.
            assert_eq!(guest_max_level(Some(LevelFilter::DEBUG)), Some(Level::INFO));
            assert_eq!(guest_max_level(Some(LevelFilter::OFF)), None);
            // What each ABI tells its guests.
            use crate::http_wasm::abi::log_level as http;
            use crate::proxy_wasm::abi::log_level as proxy;
            let warn = Some(LevelFilter::WARN);
            assert_eq!(crate::http_wasm::host_min_log_level(warn), http::WARN);
            assert_eq!(crate::proxy_wasm::host::min_log_level(warn), proxy::WARN);
            let off = Some(LevelFilter::OFF);
            assert_eq!(crate::http_wasm::host_min_log_level(off), http::NONE);
            assert!(crate::proxy_wasm::host::min_log_level(off) > proxy::CRITICAL);
        });
    }

    /// A subscriber enabling info and above.
    fn tracing_subscriber_for_tests() -> impl tracing::Subscriber {
        struct Info;
        impl tracing::Subscriber for Info {
            fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
                *m.level() <= Level::INFO
            }
            fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
                tracing::span::Id::from_u64(1)
            }
            fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
            fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
            fn event(&self, _: &tracing::Event<'_>) {}
            fn enter(&self, _: &tracing::span::Id) {}
            fn exit(&self, _: &tracing::span::Id) {}
        }
        Info
    }
}
