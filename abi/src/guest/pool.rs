//! A middleware's instances: a pool that owns its limit, and the one guard a request holds.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use wasmgate_engines::{
    CompiledModule, Instance, InstancePool, PoolError, PooledInstance, Slot, Trap,
};

use super::waiters::Waiters;
use super::PluginOptions;
use crate::error::{ErrorSource, ProxyError};

/// How many instances a middleware starts with, at most (the rest are made on demand).
pub const PREWARM: usize = 2;

/// A middleware's instance pool: `pool_size` instances kept warm, at most `max_instances`
/// at once (unbounded when not set).
///
/// The pool's slots are the permits: when a cap is set, requests wait for a slot instead
/// of multiplying instances, and past `pool_wait` a request gets a 503. Taking a slot and
/// an idle instance takes no lock; only a request that finds the pool full registers as a
/// waiter. Cheap to share: the engines' pool is itself shared.
pub struct GuestPool {
    pool: InstancePool,
    waiters: Arc<Waiters>,
    wait: Duration,
    middleware: String,
}

impl GuestPool {
    /// The pool of `middleware`'s instances of `module`: `factory` makes each new instance's
    /// host data, `init` starts it (`_start`, the ABI's configuration calls) before first use.
    pub fn new(
        module: Arc<dyn CompiledModule>,
        opts: &PluginOptions,
        middleware: &str,
        factory: impl Fn() -> Box<dyn std::any::Any + Send> + Send + Sync + 'static,
        init: impl Fn(&mut dyn Instance) -> Result<(), Trap> + Send + Sync + 'static,
    ) -> GuestPool {
        let max = opts.max_instances.unwrap_or(usize::MAX).max(1);
        let waiters = Arc::new(Waiters::default());
        let hook = waiters.clone();
        let pool = InstancePool::new(module, max, factory)
            .with_idle_limit(opts.pool_size)
            .with_init(init)
            .on_release(move || hook.released());
        GuestPool {
            pool,
            waiters,
            wait: opts.pool_wait,
            middleware: middleware.to_string(),
        }
    }

    /// The engines' pool underneath (for tests and metrics: created, idle, in use).
    pub fn instances(&self) -> &InstancePool {
        &self.pool
    }

    /// Starts up to `n` instances now, on the caller's thread (configuration time, not a
    /// request), and hands them out; dropping them leaves them warm in the pool. A start-up
    /// failure is then a configuration error instead of a 500 at the first request.
    pub fn prewarm(&self, n: usize) -> Result<Vec<PooledInstance>, PoolError> {
        (0..n).map(|_| self.pool.acquire()).collect()
    }

    /// A slot and an instance for one request, waiting up to `pool_wait` for a slot.
    ///
    /// A warm instance is handed out at once. Creating one (instantiate plus the guest's
    /// start-up, which may take long) runs on the blocking pool, never on the runtime worker
    /// that polls this future.
    pub async fn acquire(&self) -> Result<Lease, ProxyError> {
        // Fast path, with no await and no lock: a free slot and a warm instance. The waits
        // are boxed: their state (a timer, a blocking task) would otherwise be part of every
        // caller's future, which is moved as a whole.
        let slot = match self.waiters.take_unless_queued(|| self.pool.reserve().ok()) {
            Some(slot) => slot,
            None => Box::pin(self.wait_for_slot()).await?,
        };
        match slot.take_idle() {
            Ok(inst) => Ok(inst),
            Err(slot) => Box::pin(self.create(slot)).await,
        }
    }

    /// A slot, waiting up to `pool_wait` for one.
    async fn wait_for_slot(&self) -> Result<Slot, ProxyError> {
        let slot = self.waiters.wait_for(|| self.pool.reserve().ok());
        tokio::time::timeout(self.wait, slot).await.map_err(|_| {
            ProxyError::new(
                ErrorSource::Plugin,
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "middleware {}: no plugin instance free within {:?}",
                    self.middleware, self.wait
                ),
            )
        })
    }

    /// A new instance under `slot`, created on the blocking pool.
    async fn create(&self, slot: Slot) -> Result<Lease, ProxyError> {
        // The slot moves along: if this request goes away meanwhile, the instance being
        // created still counts against the cap until it is back in the pool.
        let created = tokio::task::spawn_blocking(move || slot.create())
            .await
            .map_err(|e| {
                ProxyError::internal("creating a plugin instance panicked").with_source(e)
            })?;
        created.map_err(|t| self.start_error(t))
    }

    /// Replaces every instance with a fresh one (see [`InstancePool::recycle`]).
    pub fn recycle(&self) {
        self.pool.recycle();
    }

    /// A new instance that could not start is the guest's failure (500, see
    /// [`is_start_failure`]); a full pool is a 503 from the wait instead.
    fn start_error(&self, t: Trap) -> ProxyError {
        let e = PoolError::Instantiate(t);
        ProxyError::new(
            ErrorSource::Plugin,
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("middleware {}: {e}", self.middleware),
        )
        .with_source(e)
    }
}

/// Whether an error from [`GuestPool::acquire`] is a guest failure (a new instance trapped
/// in its start-up), rather than a pool at its cap.
pub fn is_start_failure(e: &ProxyError) -> bool {
    e.source_kind == ErrorSource::Plugin && e.status == StatusCode::INTERNAL_SERVER_ERROR
}

/// One instance leased from a [`GuestPool`]: its pool slot is the permit that bounds the
/// pool, and dropping the lease gives both back (the instance is thrown away instead if it
/// was poisoned).
pub type Lease = PooledInstance;
