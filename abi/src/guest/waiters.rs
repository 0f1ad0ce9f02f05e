//! Tasks waiting for something a release frees (a slot of a full instance pool, a VM's turn
//! lock), so that the fast path, taking a free one, needs no lock and wakes nobody.
//!
//! The protocol: a waiter counts itself, enables its wake-up, fences, then tries to take; a
//! release gives back, fences, then wakes one waiter if any is counted. Each side writes one
//! thing, fences, and reads the other's, so at least one of them sees the other: a waiter that
//! failed to take is woken by the release that follows.

use std::sync::atomic::{fence, AtomicUsize, Ordering};

use tokio::sync::Notify;

/// The tasks waiting for one kind of thing to be released.
#[derive(Default)]
pub(crate) struct Waiters {
    count: AtomicUsize,
    released: Notify,
    /// How many times a task had to wait (tests check that they reached that path).
    #[cfg(test)]
    pub waited: AtomicUsize,
}

impl Waiters {
    /// `take`, unless anyone waits: a newcomer then queues behind them rather than taking
    /// what was just released for them. The fast path: no lock, no wake-up.
    pub fn take_unless_queued<T>(&self, take: impl FnOnce() -> Option<T>) -> Option<T> {
        if self.count.load(Ordering::SeqCst) > 0 {
            return None;
        }
        take()
    }

    /// To call after each release, once it is visible: wakes one waiter, if any. Costs a
    /// fence and a load when nobody waits.
    pub fn released(&self) {
        fence(Ordering::SeqCst);
        if self.count.load(Ordering::Relaxed) > 0 {
            self.released.notify_one();
        }
    }

    /// Waits until `take` succeeds, trying again after each release. Dropped while waiting
    /// (its request went away), it stops counting, and a wake-up it got passes to the next
    /// waiter.
    pub async fn wait_for<T>(&self, mut take: impl FnMut() -> Option<T>) -> T {
        self.count.fetch_add(1, Ordering::SeqCst);
        #[cfg(test)]
        self.waited.fetch_add(1, Ordering::Relaxed);
        let _counted = Counted(&self.count);
        loop {
            // Enabled before trying, so a release after the try wakes it.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            fence(Ordering::SeqCst);
            if let Some(t) = take() {
                return t;
            }
            released.await;
        }
    }

    /// How many wait now.
    #[cfg(test)]
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

/// Counts a waiter until it has what it waited for or is dropped.
struct Counted<'a>(&'a AtomicUsize);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
