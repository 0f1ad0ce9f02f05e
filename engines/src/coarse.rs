//! A coarse clock shared by both backends' deadline threads.
//!
//! The wasmtime epoch ticker and the wasmer watchdog advance it every tick,
//! so arming a call's deadline costs an atomic load instead of a clock read.
//! Readings may lag the real clock by about a tick (more on a loaded machine).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

static BASE: LazyLock<Instant> = LazyLock::new(Instant::now);
static COARSE_NOW: AtomicU64 = AtomicU64::new(1);

/// Exact nanoseconds since [`BASE`], plus one (0 means "no deadline" to callers).
pub(crate) fn now_nanos() -> u64 {
    BASE.elapsed().as_nanos() as u64 + 1
}

/// Moves the coarse clock to the real time (never backwards).
pub(crate) fn refresh() {
    COARSE_NOW.fetch_max(now_nanos(), Ordering::Relaxed);
}

/// The coarse clock, in [`now_nanos`] units.
pub(crate) fn now() -> u64 {
    COARSE_NOW.load(Ordering::Relaxed)
}

/// The instant a [`now_nanos`] reading stands for.
pub(crate) fn instant(nanos: u64) -> Instant {
    *BASE + Duration::from_nanos(nanos.saturating_sub(1))
}
