//! Instance pooling: create instances from a compiled module, reuse them,
//! and throw away any instance that trapped.

use std::any::Any;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::{CompiledModule, Instance, Trap};

/// Makes the per-instance host data for a new instance.
pub type DataFactory = dyn Fn() -> Box<dyn Any + Send> + Send + Sync;
/// Runs once on every new instance (e.g. `_start`); an error discards it.
pub type InitHook = dyn Fn(&mut dyn Instance) -> Result<(), Trap> + Send + Sync;

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

struct Inner {
    module: Arc<dyn CompiledModule>,
    max: usize,
    /// Idle instances kept for reuse; one returned beyond this is dropped.
    keep_idle: usize,
    idle: Mutex<Vec<Box<dyn Instance>>>,
    in_use: Mutex<usize>,
    factory: Arc<DataFactory>,
    init: Option<Arc<InitHook>>,
    created: AtomicU64,
    discarded: AtomicU64,
    /// Bumped by [`InstancePool::recycle`]: an instance of an older generation is dropped
    /// when it comes back. Changed only with `idle` locked.
    generation: AtomicU64,
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
        InstancePool {
            inner: Arc::new(Inner {
                module,
                max: max_instances.max(1),
                keep_idle: usize::MAX,
                idle: Mutex::new(Vec::new()),
                in_use: Mutex::new(0),
                factory: Arc::new(factory),
                init: None,
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

    /// Keeps at most `keep` idle instances: one given back beyond that is dropped, so a pool
    /// that grew under a burst shrinks back. Only valid before the pool is shared.
    pub fn with_idle_limit(mut self, keep: usize) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.keep_idle = keep.max(1);
        }
        self
    }

    /// Takes an idle instance or creates one; the guard gives it back on
    /// drop unless it is poisoned (trapped), in which case it is discarded.
    pub fn acquire(&self) -> Result<PooledInstance, PoolError> {
        if let Some(inst) = self.try_acquire_idle()? {
            return Ok(inst);
        }
        *self.slot()? += 1;
        let generation = self.inner.generation.load(Ordering::Acquire);
        match self.create() {
            Ok(i) => Ok(self.guard(i, generation)),
            Err(e) => {
                *self.inner.in_use.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
                Err(e)
            }
        }
    }

    /// An idle instance, if one is waiting (never creates one): the fast path of a caller
    /// that creates instances elsewhere (off its thread).
    pub fn try_acquire_idle(&self) -> Result<Option<PooledInstance>, PoolError> {
        let mut n = self.slot()?;
        let (idle, generation) = {
            let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
            (idle.pop(), self.inner.generation.load(Ordering::Acquire))
        };
        Ok(idle.map(|i| {
            *n += 1;
            self.guard(i, generation)
        }))
    }

    /// Replaces every instance: the idle ones are dropped now, those in use when they come
    /// back; later requests get fresh ones (a failure policy that starts the plugin anew).
    pub fn recycle(&self) {
        let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        self.inner
            .discarded
            .fetch_add(idle.len() as u64, Ordering::Relaxed);
        idle.clear();
    }

    /// The count of instances in use, locked, when one more fits under the cap.
    fn slot(&self) -> Result<std::sync::MutexGuard<'_, usize>, PoolError> {
        let n = self.inner.in_use.lock().unwrap_or_else(|p| p.into_inner());
        if *n >= self.inner.max {
            return Err(PoolError::Exhausted(*n));
        }
        Ok(n)
    }

    fn guard(&self, inst: Box<dyn Instance>, generation: u64) -> PooledInstance {
        PooledInstance {
            inner: self.inner.clone(),
            inst: Some(inst),
            generation,
        }
    }

    fn create(&self) -> Result<Box<dyn Instance>, PoolError> {
        let mut i = self.inner.module.instantiate((self.inner.factory)())?;
        self.inner.created.fetch_add(1, Ordering::Relaxed);
        if let Some(init) = &self.inner.init {
            init(i.as_mut())?;
        }
        Ok(i)
    }

    /// The module this pool instantiates.
    pub fn module(&self) -> &Arc<dyn CompiledModule> {
        &self.inner.module
    }
    /// Instances created so far.
    pub fn created(&self) -> u64 {
        self.inner.created.load(Ordering::Relaxed)
    }
    /// Instances thrown away because they were poisoned.
    pub fn discarded(&self) -> u64 {
        self.inner.discarded.load(Ordering::Relaxed)
    }
    /// Idle instances ready for reuse.
    pub fn idle(&self) -> usize {
        self.inner
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
    /// Instances currently acquired.
    pub fn in_use(&self) -> usize {
        *self.inner.in_use.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An acquired instance; returns to the pool on drop unless poisoned.
pub struct PooledInstance {
    inner: Arc<Inner>,
    inst: Option<Box<dyn Instance>>,
    /// The pool's generation when it was handed out (see [`InstancePool::recycle`]).
    generation: u64,
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
        self.inst.as_deref().expect("instance present until drop")
    }
}

impl DerefMut for PooledInstance {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.inst
            .as_deref_mut()
            .expect("instance present until drop")
    }
}

impl Drop for PooledInstance {
    fn drop(&mut self) {
        if let Some(i) = self.inst.take() {
            // Dropped while unwinding (a panic mid-request): the guest's state is unknown.
            if i.is_poisoned() || std::thread::panicking() {
                self.inner.discarded.fetch_add(1, Ordering::Relaxed);
            } else {
                let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
                if self.inner.generation.load(Ordering::Acquire) != self.generation {
                    // Recycled while in use.
                    self.inner.discarded.fetch_add(1, Ordering::Relaxed);
                } else if idle.len() < self.inner.keep_idle {
                    idle.push(i);
                }
            }
        }
        *self.inner.in_use.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
    }
}
