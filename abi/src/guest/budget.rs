//! `maxHostBytes`: one budget for the bytes the host holds on a guest's behalf.
//!
//! Each host function that copies guest-provided bytes into host memory has its own cap
//! (header lists, bodies, queues, metrics...), but a guest could fill many of them at once. A
//! [`HostBudget`] bounds their sum: host functions charge it before they copy, and a charge
//! past the cap is refused (a proxy-wasm status, an http-wasm trap), never an abort.
//!
//! What is charged, and for how long:
//! - http-wasm: every byte a host function copies from the guest during one request (header
//!   names and values, `write_body`, `set_uri`, `set_method`), counted as it is copied (a
//!   header removed later is not given back); the budget lives and dies with the request.
//! - proxy-wasm, per VM: what a stream's callbacks hand the host (header map writes, body
//!   bytes added with `set_buffer_bytes`, stream properties, a local response) is held by the
//!   stream and given back when the stream ends; an http call's headers, body and trailers
//!   until the call is done; root-context properties while they are set.
//! - proxy-wasm, per plugin: the shared data, the queued items and the queue and metric names
//!   all VMs of a plugin share have a budget of their own (they outlive any one VM), given back
//!   as data is replaced and items are dequeued.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Default `maxHostBytes`: 64 MiB.
pub const DEFAULT_MAX_HOST_BYTES: usize = 64 << 20;

/// A charge the budget refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "maxHostBytes ({cap} bytes) reached: the host already holds {used} bytes for this guest \
     and {asked} more were asked"
)]
pub struct OverBudget {
    /// The budget's cap.
    pub cap: usize,
    /// Bytes charged when the charge was refused.
    pub used: usize,
    /// Bytes the refused charge asked for.
    pub asked: usize,
}

struct Inner {
    used: AtomicUsize,
    cap: usize,
}

/// Bytes charged against a cap. Cheap to clone: clones share the count (what a VM's streams
/// and calls give back when they end lands in the VM's budget).
#[derive(Clone)]
pub struct HostBudget(Arc<Inner>);

impl std::fmt::Debug for HostBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostBudget({} of {} bytes)", self.used(), self.cap())
    }
}

impl HostBudget {
    /// An empty budget of `cap` bytes.
    pub fn new(cap: usize) -> HostBudget {
        HostBudget(Arc::new(Inner {
            used: AtomicUsize::new(0),
            cap,
        }))
    }

    /// The cap.
    pub fn cap(&self) -> usize {
        self.0.cap
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.0.used.load(Ordering::Relaxed)
    }

    /// Charges `bytes`, or refuses them all when the total would pass the cap.
    pub fn charge(&self, bytes: usize) -> Result<(), OverBudget> {
        let cap = self.0.cap;
        self.0
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|total| *total <= cap)
            })
            .map(|_| ())
            .map_err(|used| OverBudget {
                cap,
                used,
                asked: bytes,
            })
    }

    /// Gives back `bytes` charged before.
    pub fn release(&self, bytes: usize) {
        // Saturating: a release never wraps the count, whatever the caller's arithmetic.
        let _ = self
            .0
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                Some(used.saturating_sub(bytes))
            });
    }

    /// Whether `other` is this budget (or a clone of it).
    pub fn same(&self, other: &HostBudget) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// What one holder (a stream, an http call, the root context's properties) has charged to a
/// budget: given back when the holder drops it, so no path that ends the holder can leak it.
#[derive(Default)]
pub struct Charge {
    budget: Option<HostBudget>,
    bytes: usize,
}

impl std::fmt::Debug for Charge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Charge({} bytes)", self.bytes)
    }
}

impl Charge {
    /// Charges `bytes` to `budget` on this holder's account (a holder charges one budget only).
    pub fn add(&mut self, budget: &HostBudget, bytes: usize) -> Result<(), OverBudget> {
        debug_assert!(self.budget.as_ref().is_none_or(|b| b.same(budget)));
        budget.charge(bytes)?;
        self.bytes += bytes;
        if self.budget.is_none() {
            self.budget = Some(budget.clone());
        }
        Ok(())
    }

    /// Gives back up to `bytes` of what this holder charged.
    pub fn release(&mut self, bytes: usize) {
        let n = bytes.min(self.bytes);
        if let Some(b) = &self.budget {
            b.release(n);
        }
        self.bytes -= n;
    }

    /// Bytes this holder has charged.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.release(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_stop_at_the_cap_and_come_back_on_release_or_drop() {
        let b = HostBudget::new(100);
        b.charge(60).unwrap();
        assert_eq!(
            b.charge(41),
            Err(OverBudget {
                cap: 100,
                used: 60,
                asked: 41
            })
        );
        // A refused charge takes nothing.
        assert_eq!(b.used(), 60);
        b.charge(40).unwrap();
        assert!(b.charge(1).is_err());
        b.release(30);
        assert_eq!(b.used(), 70);
        assert!(b.charge(usize::MAX).is_err(), "no overflow");
        b.release(1000);
        assert_eq!(b.used(), 0, "a release never wraps");

        let mut held = Charge::default();
        held.add(&b, 50).unwrap();
        let mut other = Charge::default();
        other.add(&b, 50).unwrap();
        assert!(held.add(&b, 1).is_err());
        assert_eq!(held.bytes(), 50);
        held.release(20);
        assert_eq!((held.bytes(), b.used()), (30, 80));
        drop(held);
        assert_eq!(b.used(), 50);
        drop(other);
        assert_eq!(b.used(), 0);
        // A holder that never charged gives nothing back.
        drop(Charge::default());
        assert_eq!(b.used(), 0);
    }
}
