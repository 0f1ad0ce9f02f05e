//! The lock a VM is held under for one turn (the guest calls of one phase of one stream).
//!
//! Every stream takes it at least twice, so a free lock costs what a free `std` mutex costs
//! (one compare-and-swap to take, one swap to give back) plus a fence, with no lock inside
//! (tokio's `Mutex` takes its waiter list's lock on every release). A stream that finds it
//! taken waits without blocking a worker ([`Waiters`]); only then does a release wake
//! anyone.

use std::ops::{Deref, DerefMut};
use std::sync::{Mutex, MutexGuard, TryLockError};

use crate::guest::waiters::Waiters;

/// An async lock around `T`, free of locks while nobody waits.
///
/// Only ever tried, never blocked on: `Mutex::try_lock` is the whole of taking it, and a
/// task that finds it held waits in [`Waiters`] for a release.
pub(crate) struct TurnLock<T> {
    value: Mutex<T>,
    waiters: Waiters,
}

impl<T> TurnLock<T> {
    pub fn new(value: T) -> Self {
        TurnLock {
            value: Mutex::new(value),
            waiters: Waiters::default(),
        }
    }

    /// Takes the lock, waiting for it when it is held. A task that arrives while others wait
    /// queues behind them rather than taking the lock just given back for them.
    pub async fn lock(&self) -> TurnGuard<'_, T> {
        if let Some(g) = self.waiters.take_unless_queued(|| self.try_lock()) {
            return g;
        }
        // Boxed: the wait's state would otherwise be part of every caller's future.
        Box::pin(self.waiters.wait_for(|| self.try_lock())).await
    }

    fn try_lock(&self) -> Option<TurnGuard<'_, T>> {
        let guard = match self.value.try_lock() {
            Ok(g) => g,
            // A panic while it was held: the value is what the holder left (the VM's own
            // poisoning, not this, says whether it is still fit for use).
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        Some(TurnGuard {
            lock: self,
            guard: Some(guard),
        })
    }
}

/// The lock, held: the value is reachable through it, and dropping it gives the lock back.
pub(crate) struct TurnGuard<'a, T> {
    lock: &'a TurnLock<T>,
    /// Taken on drop, to unlock before the waiters are looked at.
    guard: Option<MutexGuard<'a, T>>,
}

impl<T> Deref for TurnGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.guard.as_ref().expect("held until drop")
    }
}

impl<T> DerefMut for TurnGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.guard.as_mut().expect("held until drop")
    }
}

impl<T> Drop for TurnGuard<'_, T> {
    fn drop(&mut self) {
        drop(self.guard.take());
        self.lock.waiters.released();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn holders_exclude_each_other_and_every_waiter_gets_its_turn() {
        // 16 tasks on 4 workers, each 200 turns that read, give up the thread (so tasks on
        // other workers find the lock held and wait) and write back: an overlap would lose
        // an increment, a lost wake-up would hang. A turn holds no await, as a VM's turn.
        let lock = Arc::new(TurnLock::new(0u64));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let lock = lock.clone();
                tokio::spawn(async move {
                    for i in 0..200 {
                        {
                            let mut g = lock.lock().await;
                            let seen = *g;
                            std::thread::yield_now();
                            *g = seen + 1;
                        }
                        if i % 3 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        let all = async {
            for t in tasks {
                t.await.unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(60), all)
            .await
            .expect("every waiter was woken");
        assert_eq!(*lock.lock().await, 16 * 200);
        assert_eq!(lock.waiters.count(), 0);
        assert!(
            lock.waiters.waited.load(Ordering::SeqCst) > 0,
            "no turn ever waited: the test did not reach the waiting path"
        );
    }

    #[tokio::test]
    async fn a_waiter_that_goes_away_leaves_the_lock_usable() {
        let lock = TurnLock::new(1u8);
        let held = lock.lock().await;
        // Waits, then is dropped (its request cancelled) while the lock is held.
        let gave_up = tokio::time::timeout(Duration::from_millis(20), lock.lock()).await;
        assert!(gave_up.is_err());
        assert_eq!(lock.waiters.count(), 0);
        drop(held);
        assert_eq!(*lock.lock().await, 1);
    }
}
