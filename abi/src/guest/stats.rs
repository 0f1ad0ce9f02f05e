//! What a middleware's guest did, for metrics: calls and their time by phase, and the linear
//! memory its instances hold. Read at scrape time ([`crate::Middleware::stats`]).
//!
//! A call costs two clock reads, two relaxed atomic adds on counters every core shares and a
//! look at the instance's memory size, so all of it is done only when metrics were asked for
//! ([`GuestStats::new`]'s `enabled`); otherwise recording is one branch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// One phase's counters.
struct PhaseCounters {
    name: &'static str,
    calls: AtomicU64,
    nanos: AtomicU64,
}

/// Calls by phase and memory of one middleware's instances.
pub struct GuestStats {
    phases: Box<[PhaseCounters]>,
    enabled: bool,
    memory_bytes: AtomicU64,
}

impl GuestStats {
    /// Counters for `phases` (each call is recorded under its index in this list); they count
    /// only when `enabled`.
    pub fn new(phases: &[&'static str], enabled: bool) -> GuestStats {
        GuestStats {
            phases: phases
                .iter()
                .map(|&name| PhaseCounters {
                    name,
                    calls: AtomicU64::new(0),
                    nanos: AtomicU64::new(0),
                })
                .collect(),
            enabled,
            memory_bytes: AtomicU64::new(0),
        }
    }

    /// Whether calls and memory are recorded.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// When a call starts: the clock if calls are recorded.
    pub fn start(&self) -> Option<Instant> {
        self.enabled.then(Instant::now)
    }

    /// A call of phase `phase` (an index into the list given to [`GuestStats::new`]) ended;
    /// `started` is what [`GuestStats::start`] gave.
    pub fn record(&self, phase: usize, started: Option<Instant>) {
        let (Some(t), Some(p)) = (started, self.phases.get(phase)) else {
            return;
        };
        p.calls.fetch_add(1, Ordering::Relaxed);
        p.nanos
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    /// Calls so far by phase: name, count, total seconds (all 0 when not enabled).
    pub fn phases(&self) -> Vec<(&'static str, u64, f64)> {
        self.phases
            .iter()
            .map(|p| {
                (
                    p.name,
                    p.calls.load(Ordering::Relaxed),
                    p.nanos.load(Ordering::Relaxed) as f64 / 1e9,
                )
            })
            .collect()
    }

    /// Linear memory of the middleware's live instances, in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_bytes.load(Ordering::Relaxed)
    }
}

/// One instance's share of [`GuestStats::memory_bytes`]: updated after its calls, given back
/// when the instance (whose host state holds this) is dropped.
pub struct MemoryShare {
    stats: Arc<GuestStats>,
    bytes: u64,
}

impl MemoryShare {
    /// A share of `stats`, empty until the first [`MemoryShare::update`].
    pub fn new(stats: Arc<GuestStats>) -> MemoryShare {
        MemoryShare { stats, bytes: 0 }
    }

    /// Whether the middleware records memory: if not, [`MemoryShare::update`] need not be
    /// called (nor the memory size read).
    pub fn wanted(&self) -> bool {
        self.stats.enabled
    }

    /// The instance's memory is now `bytes` long.
    pub fn update(&mut self, bytes: u64) {
        if bytes != self.bytes {
            let m = &self.stats.memory_bytes;
            if bytes > self.bytes {
                m.fetch_add(bytes - self.bytes, Ordering::Relaxed);
            } else {
                m.fetch_sub(self.bytes - bytes, Ordering::Relaxed);
            }
            self.bytes = bytes;
        }
    }
}

impl Drop for MemoryShare {
    fn drop(&mut self) {
        self.update(0);
    }
}

/// What a plugin middleware reports at scrape time.
#[derive(Debug, Clone)]
pub struct MiddlewareStats {
    /// The plugin's declared name.
    pub plugin: String,
    /// Calls by phase: name, count, total seconds.
    pub phases: Vec<(&'static str, u64, f64)>,
    /// Guest failures (traps and the like) so far.
    pub failures: u64,
    /// Requests refused during a `reload` backoff.
    pub refused: u64,
    /// Instances (VMs for proxy-wasm) idle and ready.
    pub instances_idle: u64,
    /// Instances in use by a request (proxy-wasm: live streams).
    pub instances_busy: u64,
    /// Linear memory of the live instances, in bytes.
    pub memory_bytes: u64,
    /// proxy-wasm: the metrics the filter defined: name, kind, value.
    pub custom: Vec<(String, CustomKind, f64)>,
}

/// The kind of a metric a proxy-wasm filter defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CustomKind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Recorded values; reported here by the last one (the host keeps recent samples, not
    /// buckets).
    Histogram,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_counted_by_phase_and_memory_shares_add_up() {
        let stats = Arc::new(GuestStats::new(&["a", "b"], true));
        let t = stats.start();
        assert!(t.is_some());
        stats.record(1, t);
        stats.record(1, stats.start());
        stats.record(7, None); // out of range: ignored
        let phases = stats.phases();
        assert_eq!((phases[0].0, phases[0].1), ("a", 0));
        assert_eq!((phases[1].0, phases[1].1), ("b", 2));
        let mut one = MemoryShare::new(stats.clone());
        let mut two = MemoryShare::new(stats.clone());
        one.update(65536);
        two.update(131072);
        assert_eq!(stats.memory_bytes(), 196608);
        one.update(131072);
        drop(two);
        assert_eq!(stats.memory_bytes(), 131072);
        drop(one);
        assert_eq!(stats.memory_bytes(), 0);
        assert!(GuestStats::new(&[], false).start().is_none());
    }
}
