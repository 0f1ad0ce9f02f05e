//! What a guest failure does to the request that hit it and to the requests after it: the
//! middleware's [`FailurePolicy`] (Envoy's three), and one log line per backoff step for a
//! plugin that keeps failing, instead of one per request.
//!
//! A guest failure is a trap (a deadline, a memory or table bomb, a host function refusing
//! what the guest asked) or a guest that broke the ABI's contract (a pause nothing can
//! resume, a fresh instance that cannot start). Whatever the policy, the instance or VM that
//! failed is thrown away, never reused; errors that only pass through a middleware (an inner
//! middleware's, the upstream's) and the client's own (a 413) are not failures of it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::StatusCode;

use crate::error::ProxyError;
use crate::model::Response;

/// The response header a fail-closed answer carries: the name of the middleware that failed
/// (the failure's text goes to the log only, never to the client).
pub const FAILED_MIDDLEWARE_HEADER: &str = "x-wasmgate-failed-middleware";

/// The first backoff step: how long a `reload` middleware refuses requests after its fresh
/// instances failed again, and the first window of the failure log.
pub const BACKOFF_START: Duration = Duration::from_secs(1);

/// The longest backoff step; the steps double up to it.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// What a middleware does when its guest fails on a request (Envoy's `failure_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// The request gets one 503 naming the middleware ([`FAILED_MIDDLEWARE_HEADER`]); later
    /// requests run on fresh instances. The default, as in Envoy: a security plugin that
    /// fails must not let the request through.
    #[default]
    Closed,
    /// The request goes on as if the middleware were not in the chain: the rest of the chain
    /// gets the request (or the client the response) as it was before the failing call.
    Open,
    /// As `closed` for the request; then every instance of the middleware is replaced by a
    /// fresh one (a VM's root context starts anew). When the fresh ones fail too, requests get
    /// the `closed` answer without entering the guest for a backoff step (1 s, doubling to
    /// 60 s) before the next fresh start; a request that goes through ends the backoff.
    Reload,
}

impl FailurePolicy {
    /// Every policy, as written in a configuration.
    pub const NAMES: [&'static str; 3] = ["closed", "open", "reload"];
}

impl std::str::FromStr for FailurePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "closed" => Ok(FailurePolicy::Closed),
            "open" => Ok(FailurePolicy::Open),
            "reload" => Ok(FailurePolicy::Reload),
            other => Err(format!(
                "unknown failure policy {other:?}; the policies are {}",
                FailurePolicy::NAMES.join(", ")
            )),
        }
    }
}

impl std::fmt::Display for FailurePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FailurePolicy::Closed => "closed",
            FailurePolicy::Open => "open",
            FailurePolicy::Reload => "reload",
        })
    }
}

/// What the request that hit a guest failure gets.
#[derive(Debug)]
pub enum Verdict {
    /// This answer (the fail-closed 503).
    Answer(Response),
    /// Nothing from this middleware: the request (or the response) goes on as it was.
    Skip,
}

/// The fail-closed answer of `middleware`: 503, empty, naming the middleware.
pub fn closed_response(middleware: &str) -> Response {
    let mut resp = Response::new(StatusCode::SERVICE_UNAVAILABLE);
    resp.headers
        .set(FAILED_MIDDLEWARE_HEADER, middleware.to_string());
    resp.headers.set(http::header::CONTENT_LENGTH, "0");
    resp
}

/// One middleware's failures: its policy, the reload backoff, and the throttled log.
///
/// The request path reads two atomics ([`Failures::refused`], [`Failures::succeeded`]); the
/// lock is taken only when a guest fails or a failure streak ends.
pub struct Failures {
    plugin: String,
    middleware: String,
    policy: FailurePolicy,
    /// `reload` in backoff: requests are refused until this many milliseconds after `epoch`
    /// (0: not in backoff).
    down_until_ms: AtomicU64,
    /// A failure streak is on: the next request that goes through ends it.
    streak: AtomicBool,
    epoch: Instant,
    state: Mutex<State>,
    /// Guest failures so far, and requests refused during a backoff (for metrics).
    failed_total: AtomicU64,
    refused_total: AtomicU64,
}

struct State {
    /// The log: the next failure is logged at `next_log` or later; until then they are counted.
    next_log: Option<Instant>,
    log_window: Duration,
    suppressed: u64,
    last_failure: Option<Instant>,
    /// `reload`: the backoff step a further failure starts, and whether fresh instances were
    /// started since the streak began.
    reload_step: Duration,
    reloaded: bool,
}

impl Failures {
    /// The failure record of `middleware` (running `plugin`) under `policy`.
    pub fn new(plugin: &str, middleware: &str, policy: FailurePolicy) -> Self {
        Failures {
            plugin: plugin.to_string(),
            middleware: middleware.to_string(),
            policy,
            down_until_ms: AtomicU64::new(0),
            streak: AtomicBool::new(false),
            epoch: Instant::now(),
            state: Mutex::new(State {
                next_log: None,
                log_window: BACKOFF_START,
                suppressed: 0,
                last_failure: None,
                reload_step: BACKOFF_START,
                reloaded: false,
            }),
            failed_total: AtomicU64::new(0),
            refused_total: AtomicU64::new(0),
        }
    }

    /// Guest failures so far.
    pub fn failed_total(&self) -> u64 {
        self.failed_total.load(Ordering::Relaxed)
    }

    /// Requests refused during a `reload` backoff so far.
    pub fn refused_total(&self) -> u64 {
        self.refused_total.load(Ordering::Relaxed)
    }

    /// The middleware's policy.
    pub fn policy(&self) -> FailurePolicy {
        self.policy
    }

    /// The middleware's name.
    pub fn middleware(&self) -> &str {
        &self.middleware
    }

    fn now_ms(&self) -> u64 {
        // At least 1, so 0 can mean "not in backoff".
        (self.epoch.elapsed().as_millis() as u64).max(1)
    }

    /// Before a request enters the guest: `Some(answer)` while a `reload` middleware is in
    /// backoff (its fresh instances failed too), so the request does not reach the guest.
    pub fn refused(&self) -> Option<Response> {
        let until = self.down_until_ms.load(Ordering::Relaxed);
        if until == 0 || self.now_ms() >= until {
            return None;
        }
        self.refused_total.fetch_add(1, Ordering::Relaxed);
        Some(closed_response(&self.middleware))
    }

    /// A request went through the guest without failing: a failure streak (and with it the
    /// reload backoff) ends.
    pub fn succeeded(&self) {
        if !self.streak.load(Ordering::Relaxed) {
            return;
        }
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if self.streak.swap(false, Ordering::Relaxed) {
            st.reload_step = BACKOFF_START;
            st.reloaded = false;
            self.down_until_ms.store(0, Ordering::Relaxed);
        }
    }

    /// The guest failed on a request with `err` (whose text stays in the log): logs it, at
    /// most once per backoff step, and says what the request gets. Under `reload`, `recycle`
    /// is called to replace every instance of the middleware.
    pub fn failed(&self, err: &ProxyError, recycle: impl FnOnce()) -> Verdict {
        let now = Instant::now();
        self.failed_total.fetch_add(1, Ordering::Relaxed);
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.streak.store(true, Ordering::Relaxed);
        // A quiet minute starts the log over.
        if st.last_failure.is_some_and(|t| now - t > BACKOFF_MAX) {
            st.log_window = BACKOFF_START;
        }
        st.last_failure = Some(now);
        let mut down_for = None;
        if self.policy == FailurePolicy::Reload {
            if st.reloaded {
                // The fresh instances failed too: refuse requests for this step, then start
                // fresh ones again.
                let step = st.reload_step;
                let until = self.now_ms() + step.as_millis() as u64;
                self.down_until_ms.fetch_max(until, Ordering::Relaxed);
                st.reload_step = (step * 2).min(BACKOFF_MAX);
                down_for = Some(step);
            }
            st.reloaded = true;
            recycle();
        }
        if st.next_log.is_none_or(|t| now >= t) {
            let more = std::mem::take(&mut st.suppressed);
            let window = st.log_window;
            st.next_log = Some(now + window);
            st.log_window = (window * 2).min(BACKOFF_MAX);
            let then = match (self.policy, down_for) {
                (FailurePolicy::Reload, Some(d)) => {
                    format!("fresh instances failed again: requests refused for {d:?}")
                }
                (FailurePolicy::Reload, None) => "starting fresh instances".to_string(),
                (FailurePolicy::Open, _) => "the request skips the middleware".to_string(),
                (FailurePolicy::Closed, _) => "the request gets a 503".to_string(),
            };
            tracing::error!(
                target: "wasmgate::plugin",
                plugin = %self.plugin,
                middleware = %self.middleware,
                policy = %self.policy,
                suppressed = more,
                "guest failed ({then}; {more} more failures since the last report, next report \
                 in {window:?} at the earliest): {}",
                err.chain()
            );
        } else {
            st.suppressed += 1;
        }
        match self.policy {
            FailurePolicy::Open => Verdict::Skip,
            FailurePolicy::Closed | FailurePolicy::Reload => {
                Verdict::Answer(closed_response(&self.middleware))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    fn err() -> ProxyError {
        ProxyError::plugin("guest trapped: unreachable")
    }

    #[test]
    fn closed_answers_503_naming_the_middleware_and_never_the_trap() {
        let f = Failures::new("p", "mw", FailurePolicy::Closed);
        let Verdict::Answer(resp) = f.failed(&err(), || panic!("closed never recycles")) else {
            panic!("closed answers");
        };
        assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers.get(FAILED_MIDDLEWARE_HEADER), Some(&b"mw"[..]));
        // Later requests are not refused: they run on fresh instances.
        assert!(f.refused().is_none());
    }

    #[test]
    fn open_skips() {
        let f = Failures::new("p", "mw", FailurePolicy::Open);
        assert!(matches!(f.failed(&err(), || {}), Verdict::Skip));
        assert!(f.refused().is_none());
    }

    #[test]
    fn reload_recycles_then_backs_off_while_it_keeps_failing() {
        let f = Failures::new("p", "mw", FailurePolicy::Reload);
        let recycled = AtomicUsize::new(0);
        let recycle = || {
            recycled.fetch_add(1, Ordering::Relaxed);
        };
        // The first failure: fresh instances at once, no refusal.
        assert!(matches!(f.failed(&err(), recycle), Verdict::Answer(_)));
        assert_eq!(recycled.load(Ordering::Relaxed), 1);
        assert!(f.refused().is_none());
        // The fresh ones fail too: refused for the first step.
        f.failed(&err(), recycle);
        assert_eq!(recycled.load(Ordering::Relaxed), 2);
        let refused = f.refused().expect("in backoff");
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        {
            let st = f.state.lock().unwrap();
            assert_eq!(st.reload_step, BACKOFF_START * 2);
        }
        // The steps double up to the cap.
        for _ in 0..10 {
            f.failed(&err(), recycle);
        }
        assert_eq!(f.state.lock().unwrap().reload_step, BACKOFF_MAX);
        // A request that goes through ends the backoff.
        f.succeeded();
        assert!(f.refused().is_none());
        assert_eq!(f.state.lock().unwrap().reload_step, BACKOFF_START);
    }

    #[test]
    fn a_plugin_failing_on_every_call_is_logged_once_per_step() {
        let f = Failures::new("p", "mw", FailurePolicy::Closed);
        for _ in 0..1000 {
            f.failed(&err(), || {});
        }
        let st = f.state.lock().unwrap();
        // One report (the first); the other 999 wait for the next window.
        assert_eq!(st.suppressed, 999);
        assert_eq!(st.log_window, BACKOFF_START * 2);
    }
}
