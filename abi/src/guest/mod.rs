//! What both plugin ABIs share, whatever the ABI: how a plugin is run
//! ([`PluginOptions`]) and why it could not be loaded ([`PluginError`]), the
//! instance pool a middleware draws on ([`GuestPool`], whose [`Lease`] is an instance
//! and the pool slot that bounds it), the budget of what the host holds for a guest
//! ([`HostBudget`], `maxHostBytes`), what a trap does to a request
//! ([`trap_error`]) and what the middleware's [`FailurePolicy`] then makes of it, and where a guest's logs go ([`log`]).
//!
//! This module imports neither ABI: `http_wasm` and `proxy_wasm` build on it,
//! and `plugin` (loading, ABI detection) builds on all three.

mod budget;
mod failure;
pub mod log;
mod options;
mod pool;
mod stats;
pub(crate) mod waiters;

use wasmgate_engines::{Instance, Trap};

use crate::error::ProxyError;

pub use self::budget::{Charge, HostBudget, OverBudget, DEFAULT_MAX_HOST_BYTES};
pub use self::failure::{
    closed_response, FailurePolicy, Failures, Verdict, BACKOFF_MAX, BACKOFF_START,
    FAILED_MIDDLEWARE_HEADER,
};
pub use self::options::{AbiChoice, AbiKind, PluginError, PluginOptions};
pub use self::pool::{is_start_failure, GuestPool, Lease, PREWARM};
pub use self::stats::{CustomKind, GuestStats, MemoryShare, MiddlewareStats};

/// What a trap does to the request that hit it: the instance is poisoned (its guest state is
/// unknown, so it is thrown away rather than reused) and the error names the trap (its source).
/// Not logged here: the middleware hands the error to [`Failures::failed`], whose log is
/// throttled per backoff step, so a plugin trapping on every request is not one line each.
pub fn trap_error(plugin: &str, middleware: &str, inst: &mut dyn Instance, t: &Trap) -> ProxyError {
    inst.poison();
    ProxyError::plugin(format!(
        "plugin {plugin} (middleware {middleware}) trapped: {t}"
    ))
    .with_source(t.clone())
}
