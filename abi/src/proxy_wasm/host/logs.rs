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

/// The lowest proxy-wasm log level enabled for a plugin whose `logLevel` is `configured`,
/// within what `tracing` lets through for plugin logs. Off is above `critical`: the guest
/// skips every line.
pub fn min_log_level(configured: Option<tracing::level_filters::LevelFilter>) -> i32 {
    match crate::guest::log::guest_max_level(configured) {
        Some(Level::TRACE) => log_level::TRACE,
        Some(Level::DEBUG) => log_level::DEBUG,
        Some(Level::INFO) => log_level::INFO,
        Some(Level::WARN) => log_level::WARN,
        Some(Level::ERROR) => log_level::ERROR,
        None => log_level::CRITICAL + 1,
    }
}

fn log_message(plugin: &str, middleware: &str, request_id: Option<&str>, level: i32, text: &str) {
    let level = match level {
        log_level::TRACE => Level::TRACE,
        log_level::DEBUG => Level::DEBUG,
        log_level::INFO => Level::INFO,
        log_level::WARN => Level::WARN,
        _ => Level::ERROR,
    };
    crate::guest::log::emit(level, plugin, middleware, request_id, text);
}

/// This family's host functions.
pub(super) fn define(t: &mut Table) {
    use AbiVersion::{V0_1_0, V0_2_1};
    // Logging, time, ticks, contexts.
    t.def(
        "proxy_log",
        V0_1_0,
        None,
        |c: &mut dyn Caller, level: i32, message_data: u32, message_size: u32| {
            if !(log_level::TRACE..=log_level::CRITICAL).contains(&level) {
                return Ok(status::BAD_ARGUMENT);
            }
            let msg = rd(c, message_data, message_size)?;
            let st = state(c)?;
            let sh = st.shared.clone();
            if level >= sh.log_level {
                // The request of the stream the callback is for; the root context has none.
                let id = st
                    .streams
                    .get(&st.effective_ctx)
                    .and_then(|s| s.info.request_id.clone());
                log_message(
                    &sh.plugin,
                    &sh.middleware,
                    id.as_ref().map(|id| id.as_str()),
                    level,
                    &String::from_utf8_lossy(&msg),
                );
            }
            Ok(status::OK)
        },
    );
    t.def(
        "proxy_get_log_level",
        V0_2_1,
        None,
        |c: &mut dyn Caller, return_level: u32| {
            // Logs off is one past critical here; the guest is told critical (the SDKs know
            // no higher level), and `proxy_log` drops that too.
            let l = state(c)?.shared.log_level.min(log_level::CRITICAL);
            c.write_u32(return_level, l as u32)?;
            Ok(status::OK)
        },
    );
    t.def(
        "proxy_get_current_time_nanoseconds",
        V0_1_0,
        None,
        |c: &mut dyn Caller, return_time: u32| {
            c.write_u64(return_time, now_nanos())?;
            Ok(status::OK)
        },
    );
    t.def(
        "proxy_set_tick_period_milliseconds",
        V0_1_0,
        None,
        |c: &mut dyn Caller, period_ms: u32| {
            let ms = period_ms;
            let st = state(c)?;
            st.tick_period = (ms > 0).then(|| Duration::from_millis(ms as u64));
            st.last_tick = Instant::now();
            // The VM's dispatcher sleeps until the next tick: it must hear of the new period.
            st.waiter.notify.notify_one();
            Ok(status::OK)
        },
    );
    t.def(
        "proxy_set_effective_context",
        V0_1_0,
        None,
        |c: &mut dyn Caller, context_id: u32| {
            let ctx = context_id;
            let st = state(c)?;
            // Any context of this VM: the root or one of its live streams.
            if st.has_context(ctx) {
                st.effective_ctx = ctx;
                Ok(status::OK)
            } else {
                Ok(status::BAD_ARGUMENT)
            }
        },
    );
    t.def("proxy_done", V0_1_0, None, |c: &mut dyn Caller| {
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
    });
    t.def(
        "proxy_get_status",
        V0_1_0,
        None,
        |c: &mut dyn Caller,
         return_code: u32,
         return_message_data: u32,
         return_message_size: u32| {
            let (code, msg) = state(c)?.last_status.clone();
            c.write_u32(return_code, code)?;
            out(c, msg.as_bytes(), return_message_data, return_message_size)?;
            Ok(status::OK)
        },
    );
}
