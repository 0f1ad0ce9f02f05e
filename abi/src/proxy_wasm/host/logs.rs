//! Logs, time, ticks, contexts and status: `proxy_log`, `proxy_get_log_level`,
//! `proxy_get_current_time_nanoseconds`, `proxy_set_tick_period_milliseconds`,
//! `proxy_set_effective_context`, `proxy_done`, `proxy_get_status`.

use super::prelude::*;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::Level;

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The lowest proxy-wasm log level `tracing` lets through for plugin logs.
pub fn min_log_level() -> i32 {
    if tracing::enabled!(target: "wasmgate::plugin", Level::TRACE) {
        log_level::TRACE
    } else if tracing::enabled!(target: "wasmgate::plugin", Level::DEBUG) {
        log_level::DEBUG
    } else if tracing::enabled!(target: "wasmgate::plugin", Level::INFO) {
        log_level::INFO
    } else if tracing::enabled!(target: "wasmgate::plugin", Level::WARN) {
        log_level::WARN
    } else {
        log_level::ERROR
    }
}

fn log_message(plugin: &str, middleware: &str, level: i32, text: &str) {
    match level {
        log_level::TRACE => {
            tracing::trace!(target: "wasmgate::plugin", plugin, middleware, "{text}")
        }
        log_level::DEBUG => {
            tracing::debug!(target: "wasmgate::plugin", plugin, middleware, "{text}")
        }
        log_level::INFO => tracing::info!(target: "wasmgate::plugin", plugin, middleware, "{text}"),
        log_level::WARN => tracing::warn!(target: "wasmgate::plugin", plugin, middleware, "{text}"),
        _ => tracing::error!(target: "wasmgate::plugin", plugin, middleware, "{text}"),
    }
}

/// This family's host functions.
pub(super) fn define(t: &mut Table) {
    #[allow(unused_imports)]
    use AbiVersion::{V0_1_0, V0_2_0, V0_2_1};
    let mut def =
        |name, since, until, params: &[ValType], body| t.def(name, since, until, params, body);
    // Logging, time, ticks, contexts.
    def(
        "proxy_log",
        V0_1_0,
        None,
        &[I32, I32, I32],
        Arc::new(|c, a| {
            let level = arg(a, 0);
            if !(log_level::TRACE..=log_level::CRITICAL).contains(&level) {
                return Ok(status::BAD_ARGUMENT);
            }
            let msg = rd(c, u(a, 1), u(a, 2))?;
            let sh = state(c)?.shared.clone();
            if level >= sh.log_level {
                log_message(
                    &sh.plugin,
                    &sh.middleware,
                    level,
                    &String::from_utf8_lossy(&msg),
                );
            }
            Ok(status::OK)
        }),
    );
    def(
        "proxy_get_log_level",
        V0_2_1,
        None,
        &[I32],
        Arc::new(|c, a| {
            let l = state(c)?.shared.log_level;
            c.write_u32(u(a, 0), l as u32)?;
            Ok(status::OK)
        }),
    );
    def(
        "proxy_get_current_time_nanoseconds",
        V0_1_0,
        None,
        &[I32],
        Arc::new(|c, a| {
            c.write_u64(u(a, 0), now_nanos())?;
            Ok(status::OK)
        }),
    );
    def(
        "proxy_set_tick_period_milliseconds",
        V0_1_0,
        None,
        &[I32],
        Arc::new(|c, a| {
            let ms = u(a, 0);
            let st = state(c)?;
            st.tick_period = (ms > 0).then(|| Duration::from_millis(ms as u64));
            st.last_tick = Instant::now();
            // The VM's dispatcher sleeps until the next tick: it must hear of the new period.
            st.waiter.notify.notify_one();
            Ok(status::OK)
        }),
    );
    def(
        "proxy_set_effective_context",
        V0_1_0,
        None,
        &[I32],
        Arc::new(|c, a| {
            let ctx = u(a, 0);
            let st = state(c)?;
            // Any context of this VM: the root or one of its live streams.
            if st.has_context(ctx) {
                st.effective_ctx = ctx;
                Ok(status::OK)
            } else {
                Ok(status::BAD_ARGUMENT)
            }
        }),
    );
    def(
        "proxy_done",
        V0_1_0,
        None,
        &[],
        Arc::new(|c, _| {
            let st = state(c)?;
            // The effective stream if it awaits proxy_done, else any stream of the VM that does.
            let eff = st.effective_ctx;
            let ctx = match st.streams.get(&eff).filter(|s| s.done_pending) {
                Some(_) => Some(eff),
                None => st.streams.values().find(|s| s.done_pending).map(|s| s.ctx),
            };
            match ctx.and_then(|c| st.streams.get_mut(&c)) {
                Some(s) => {
                    s.done_pending = false;
                    Ok(status::OK)
                }
                None => Ok(status::NOT_FOUND),
            }
        }),
    );
    def(
        "proxy_get_status",
        V0_1_0,
        None,
        &[I32, I32, I32],
        Arc::new(|c, a| {
            let (code, msg) = state(c)?.last_status.clone();
            c.write_u32(u(a, 0), code)?;
            out(c, msg.as_bytes(), u(a, 1), u(a, 2))?;
            Ok(status::OK)
        }),
    );
}
