//! Instance pooling: create instances from a compiled module, reuse them,
//! and throw away any instance that trapped.
//!
//! A lease is taken on every request, so its fast path takes no lock: the count of
//! instances in use is an atomic under the cap, the instance given back last waits in one
//! atomic slot (taken first, so a quiet pool serves request after request from one warm
//! instance), and the other idle ones in a bounded lock-free queue. Each idle instance
//! carries the pool's generation from when it was made, which is how
//! [`InstancePool::recycle`] retires instances without a lock: one of an older generation
//! is dropped wherever it is found.

use std::any::Any;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use crate::{CompiledModule, Instance, Trap};

/// Makes the per-instance host data for a new instance.
pub type DataFactory = dyn Fn() -> Box<dyn Any + Send> + Send + Sync;
/// Runs once on every new instance (e.g. `_start`); an error discards it.
pub type InitHook = dyn Fn(&mut dyn Instance) -> Result<(), Trap> + Send + Sync;
/// Runs each time a slot is given back (see [`InstancePool::on_release`]).
pub type ReleaseHook = dyn Fn() + Send + Sync;

/// How many idle instances a pool keeps when [`InstancePool::with_idle_limit`] is not
/// called (the idle queue is allocated up front, so it needs a bound).
pub const DEFAULT_IDLE_LIMIT: usize = 1024;

/// Why [`InstancePool::acquire`] failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PoolError {
    /// `max_instances` instances are in use.
    #[error("instance pool exhausted ({0} instances in use)")]
    Exhausted(usize),
    /// Creating or initializing a new instance failed.
    #[error("creating an instance failed: {0}")]
    Instantiate(#[from] Trap),
}

/// An instance and the pool generation it belongs to. Boxed once, when the instance is
/// made, and moved as that box between the idle slots and its leases: giving an instance
/// back allocates nothing.
struct Idle {
    inst: Box<dyn Instance>,
    generation: u64,
}

/// One idle instance behind an atomic pointer: a swap puts one in and takes the one that was
/// there out, so ownership moves whole and no lock is needed.
struct HotSlot(AtomicPtr<Idle>);

impl HotSlot {
    fn empty() -> Self {
        HotSlot(AtomicPtr::new(std::ptr::null_mut()))
    }

    /// Puts `new` in (or empties the slot) and hands back what was there.
    fn swap(&self, new: Option<Box<Idle>>) -> Option<Box<Idle>> {
        let new = new.map_or(std::ptr::null_mut(), Box::into_raw);
        let old = self.0.swap(new, Ordering::AcqRel);
        // SAFETY: every non-null pointer in the slot came from `Box::into_raw` above, and the
        // swap hands it to exactly one caller.
        (!old.is_null()).then(|| unsafe { Box::from_raw(old) })
    }

    fn is_occupied(&self) -> bool {
        !self.0.load(Ordering::Acquire).is_null()
    }
}

impl Drop for HotSlot {
    fn drop(&mut self) {
        drop(self.swap(None));
    }
}

struct Inner {
    module: Arc<dyn CompiledModule>,
    max: usize,
    /// The instance given back last: the next lease takes it.
    hot: HotSlot,
    /// The other idle instances, up to the idle limit less one (none when that is one); one
    /// given back to a full queue is dropped.
    idle: Option<ArrayQueue<Box<Idle>>>,
    /// Slots taken: instances in use plus those being created. Sequentially consistent, so
    /// that a release hook that looks for waiters after freeing a slot cannot miss one that
    /// registered before it found the pool full (see [`InstancePool::on_release`]).
    in_use: AtomicUsize,
    factory: Arc<DataFactory>,
    init: Option<Arc<InitHook>>,
    on_release: Option<Arc<ReleaseHook>>,
    created: AtomicU64,
    discarded: AtomicU64,
    /// Bumped by [`InstancePool::recycle`]: an instance of an older generation is dropped
    /// when it comes back or is found idle.
    generation: AtomicU64,
}

impl Inner {
    fn release_slot(&self) {
        self.in_use.fetch_sub(1, Ordering::SeqCst);
        if let Some(hook) = &self.on_release {
            hook();
        }
    }

    fn discard(&self) {
        self.discarded.fetch_add(1, Ordering::Relaxed);
    }

    /// Idle slots for at most `keep` instances: the hot one and a queue for the rest.
    fn idle_queue(keep: usize) -> Option<ArrayQueue<Box<Idle>>> {
        (keep > 1).then(|| ArrayQueue::new(keep - 1))
    }

    /// The next idle instance: the one given back last, else the longest idle.
    fn pop_idle(&self) -> Option<Box<Idle>> {
        self.hot
            .swap(None)
            .or_else(|| self.idle.as_ref().and_then(ArrayQueue::pop))
    }

    /// Keeps `idle` as the hot instance; the one it replaces goes to the queue, or is
    /// dropped when that is full.
    fn push_idle(&self, idle: Box<Idle>) {
        if let Some(older) = self.hot.swap(Some(idle)) {
            if let Some(queue) = &self.idle {
                let _ = queue.push(older);
            }
        }
    }
}

/// A bounded pool of instances of one module. Cheap to clone (shared).
#[derive(Clone)]
pub struct InstancePool {
    inner: Arc<Inner>,
}

impl InstancePool {
    /// A pool of at most `max_instances` live instances (idle plus in use);
    /// `factory` makes each new instance's host data.
    pub fn new(
        module: Arc<dyn CompiledModule>,
        max_instances: usize,
        factory: impl Fn() -> Box<dyn Any + Send> + Send + Sync + 'static,
    ) -> Self {
        let max = max_instances.max(1);
        InstancePool {
            inner: Arc::new(Inner {
                module,
                max,
                hot: HotSlot::empty(),
                idle: Inner::idle_queue(max.min(DEFAULT_IDLE_LIMIT)),
                in_use: AtomicUsize::new(0),
                factory: Arc::new(factory),
                init: None,
                on_release: None,
                created: AtomicU64::new(0),
                discarded: AtomicU64::new(0),
                generation: AtomicU64::new(0),
            }),
        }
    }

    /// Sets a hook run on every freshly created instance (before first use).
    /// Only valid before the pool is shared.
    pub fn with_init(
        mut self,
        init: impl Fn(&mut dyn Instance) -> Result<(), Trap> + Send + Sync + 'static,
    ) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.init = Some(Arc::new(init));
        }
        self
    }

    /// Keeps at most `keep` idle instances (and never more than the pool's cap): one given
    /// back beyond that is dropped, so a pool that grew under a burst shrinks back. Only
    /// valid before the pool is shared.
    pub fn with_idle_limit(mut self, keep: usize) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.idle = Inner::idle_queue(keep.clamp(1, inner.max));
        }
        self
    }

    /// Sets a hook run each time a slot is given back (an instance returned or thrown away,
    /// a reservation dropped): a caller that waits for a full pool wakes its waiters there.
    /// The slot is free when the hook runs, and the count is sequentially consistent: a
    /// waiter that registers itself, then fails to [`reserve`](Self::reserve), is seen by
    /// the hook of the release that follows. Only valid before the pool is shared.
    pub fn on_release(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.on_release = Some(Arc::new(hook));
        }
        self
    }

    /// Takes an idle instance or creates one; the guard gives it back on
    /// drop unless it is poisoned (trapped), in which case it is discarded.
    pub fn acquire(&self) -> Result<PooledInstance, PoolError> {
        match self.reserve()?.take_idle() {
            Ok(inst) => Ok(inst),
            Err(slot) => Ok(slot.create()?),
        }
    }

    /// Takes one of the pool's `max_instances` slots, without a lock; fails when all are
    /// taken. The slot becomes an instance with [`Slot::take_idle`] or [`Slot::create`], and
    /// is given back when that instance (or the unused slot) is dropped.
    pub fn reserve(&self) -> Result<Slot, PoolError> {
        let max = self.inner.max;
        self.inner
            .in_use
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(PoolError::Exhausted)?;
        Ok(Slot {
            inner: self.inner.clone(),
        })
    }

    /// Replaces every instance: the idle ones are dropped now, those in use when they come
    /// back; later requests get fresh ones (a failure policy that starts the plugin anew).
    pub fn recycle(&self) {
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
        // An instance given back meanwhile may still be queued with the old generation; it
        // is dropped when it is found.
        while self.inner.pop_idle().is_some() {
            self.inner.discard();
        }
    }

    /// The module this pool instantiates.
    pub fn module(&self) -> &Arc<dyn CompiledModule> {
        &self.inner.module
    }
    /// Instances created so far.
    pub fn created(&self) -> u64 {
        self.inner.created.load(Ordering::Relaxed)
    }
    /// Instances thrown away because they were poisoned or recycled.
    pub fn discarded(&self) -> u64 {
        self.inner.discarded.load(Ordering::Relaxed)
    }
    /// Idle instances ready for reuse.
    pub fn idle(&self) -> usize {
        usize::from(self.inner.hot.is_occupied())
            + self.inner.idle.as_ref().map_or(0, ArrayQueue::len)
    }
    /// Instances currently acquired (and slots reserved).
    pub fn in_use(&self) -> usize {
        self.inner.in_use.load(Ordering::SeqCst)
    }
}

/// One of a pool's slots, reserved: it becomes an instance, or is given back on drop.
#[must_use = "a slot is given back at once when dropped"]
pub struct Slot {
    inner: Arc<Inner>,
}

impl Slot {
    /// An idle instance of the pool's current generation under this slot, or the slot
    /// back when none is waiting (creating one is the caller's choice: it may do that on
    /// another thread).
    pub fn take_idle(self) -> Result<PooledInstance, Slot> {
        let current = self.inner.generation.load(Ordering::SeqCst);
        while let Some(idle) = self.inner.pop_idle() {
            if idle.generation == current {
                return Ok(PooledInstance {
                    idle: Some(idle),
                    slot: self,
                });
            }
            // Queued after a recycle had emptied the queue.
            self.inner.discard();
        }
        Err(self)
    }

    /// A new instance under this slot: instantiated, then started by the pool's init hook.
    /// The slot is already held, so the only failure is the instance's own (it did not
    /// instantiate or its start trapped); the slot is then given back.
    pub fn create(self) -> Result<PooledInstance, Trap> {
        let inner = &self.inner;
        let generation = inner.generation.load(Ordering::SeqCst);
        let mut inst = inner.module.instantiate((inner.factory)())?;
        inner.created.fetch_add(1, Ordering::Relaxed);
        if let Some(init) = &inner.init {
            init(inst.as_mut())?;
        }
        Ok(PooledInstance {
            idle: Some(Box::new(Idle { inst, generation })),
            slot: self,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.inner.release_slot();
    }
}

/// An acquired instance; returns to the pool on drop unless poisoned.
pub struct PooledInstance {
    /// The instance and the pool's generation when it was made (see
    /// [`InstancePool::recycle`]); taken on drop.
    idle: Option<Box<Idle>>,
    /// Given back after the instance is queued (fields drop in order), so that a waiter the
    /// release wakes finds the instance idle.
    slot: Slot,
}

impl PooledInstance {
    /// Marks the instance so that it is discarded instead of reused.
    pub fn poison(&mut self) {
        self.deref_mut().poison();
    }
}

impl Deref for PooledInstance {
    type Target = dyn Instance;
    fn deref(&self) -> &Self::Target {
        &*self
            .idle
            .as_ref()
            .expect("instance present until drop")
            .inst
    }
}

impl DerefMut for PooledInstance {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut *self
            .idle
            .as_mut()
            .expect("instance present until drop")
            .inst
    }
}

impl Drop for PooledInstance {
    fn drop(&mut self) {
        let Some(idle) = self.idle.take() else { return };
        let inner = &self.slot.inner;
        // Dropped while unwinding (a panic mid-request): the guest's state is unknown.
        if idle.inst.is_poisoned()
            || std::thread::panicking()
            || inner.generation.load(Ordering::SeqCst) != idle.generation
        {
            inner.discard();
            return;
        }
        inner.push_idle(idle);
    }
}

#[cfg(test)]
mod tests {
    //! The pool's bookkeeping on a stand-in module (no engine: the parity tests run the
    //! pool on both engines; this reaches a state those can only hit by a race).
    use super::*;
    use crate::{EngineKind, ExportFunc, GuestMemory, HostError, Limits, ModuleInfo, Val};

    struct StandIn {
        info: ModuleInfo,
        limits: Limits,
    }

    struct StandInInstance {
        data: Box<dyn Any + Send>,
        poisoned: bool,
    }

    impl CompiledModule for StandIn {
        fn engine(&self) -> EngineKind {
            EngineKind::Wasmtime
        }
        fn info(&self) -> &ModuleInfo {
            &self.info
        }
        fn limits(&self) -> &Limits {
            &self.limits
        }
        fn loaded_from_cache(&self) -> bool {
            false
        }
        fn instantiate(&self, data: Box<dyn Any + Send>) -> Result<Box<dyn Instance>, Trap> {
            Ok(Box::new(StandInInstance {
                data,
                poisoned: false,
            }))
        }
    }

    impl GuestMemory for StandInInstance {
        fn memory_size(&self) -> u64 {
            0
        }
        fn read_into(&self, _: u32, _: &mut [u8]) -> Result<(), HostError> {
            Err(HostError::msg("no memory"))
        }
        fn write(&mut self, _: u32, _: &[u8]) -> Result<(), HostError> {
            Err(HostError::msg("no memory"))
        }
    }

    impl Instance for StandInInstance {
        fn engine(&self) -> EngineKind {
            EngineKind::Wasmtime
        }
        fn export(&mut self, _: &str) -> Option<ExportFunc> {
            None
        }
        fn call(&mut self, _: &ExportFunc, _: &[Val], _: &mut [Val]) -> Result<(), Trap> {
            unreachable!("no exports")
        }
        fn data(&mut self) -> &mut (dyn Any + Send) {
            &mut *self.data
        }
        fn is_poisoned(&self) -> bool {
            self.poisoned
        }
        fn poison(&mut self) {
            self.poisoned = true;
        }
    }

    fn numbered_pool(max: usize) -> InstancePool {
        let module = Arc::new(StandIn {
            info: ModuleInfo::default(),
            limits: Limits::default(),
        });
        let next = AtomicU64::new(0);
        InstancePool::new(module, max, move || {
            Box::new(next.fetch_add(1, Ordering::Relaxed)) as Box<dyn Any + Send>
        })
    }

    fn number(inst: &mut PooledInstance) -> u64 {
        *inst.data().downcast_ref::<u64>().unwrap()
    }

    #[test]
    fn an_instance_queued_after_a_recycle_is_dropped_when_found() {
        let pool = numbered_pool(2);
        let old = pool.acquire().unwrap();
        // The race this stands for: the instance is given back just as a recycle empties the
        // queue, and lands in it with its old generation.
        let stale = { old }.idle.take().unwrap();
        pool.recycle();
        pool.inner.push_idle(stale);
        assert_eq!(pool.idle(), 1);
        let mut fresh = pool.acquire().unwrap();
        assert_eq!(
            number(&mut fresh),
            1,
            "a new instance, not the recycled one"
        );
        assert_eq!(pool.discarded(), 1);
        assert_eq!(pool.idle(), 0);
        drop(fresh);
        assert_eq!(pool.idle(), 1, "the fresh one is kept");
    }

    #[test]
    fn the_instance_given_back_last_is_leased_next_and_the_idle_limit_holds() {
        let pool = numbered_pool(4).with_idle_limit(2);
        let mut held: Vec<_> = (0..3).map(|_| pool.acquire().unwrap()).collect();
        let mut last = held.pop().unwrap();
        assert_eq!(number(&mut last), 2);
        drop(held);
        drop(last);
        assert_eq!(pool.idle(), 2, "one of the three given back is dropped");
        // Request after request on a quiet pool: the same instance each time.
        for _ in 0..3 {
            let mut inst = pool.acquire().unwrap();
            assert_eq!(number(&mut inst), 2);
        }
        // Under load the queued one comes out too (1 was dropped: it was displaced from the
        // hot slot into a full queue).
        let mut a = pool.acquire().unwrap();
        let mut b = pool.acquire().unwrap();
        assert_eq!((number(&mut a), number(&mut b)), (2, 0));
        let mut c = pool.acquire().unwrap();
        assert_eq!(number(&mut c), 3, "none idle: a new one");
        assert_eq!(pool.created(), 4);
    }

    #[test]
    fn slots_bound_the_pool_and_come_back_on_every_path() {
        let released = Arc::new(AtomicUsize::new(0));
        let hook = released.clone();
        let pool = numbered_pool(2).on_release(move || {
            hook.fetch_add(1, Ordering::SeqCst);
        });
        let a = pool.reserve().unwrap();
        let b = pool.acquire().unwrap();
        assert!(matches!(pool.reserve(), Err(PoolError::Exhausted(2))));
        // A reserved slot with nothing idle comes back unused.
        let a = a.take_idle().err().expect("nothing idle yet");
        drop(a);
        assert_eq!(released.load(Ordering::SeqCst), 1);
        assert_eq!(pool.in_use(), 1);
        drop(b);
        assert_eq!(released.load(Ordering::SeqCst), 2);
        assert_eq!((pool.in_use(), pool.idle()), (0, 1));
        // The idle one is handed out again under a fresh slot.
        let mut again = pool.reserve().unwrap().take_idle().ok().unwrap();
        assert_eq!(number(&mut again), 0);
        again.poison();
        drop(again);
        assert_eq!((pool.in_use(), pool.idle(), pool.discarded()), (0, 0, 1));
        assert_eq!(released.load(Ordering::SeqCst), 3);
    }
}
