//! The VMs of one middleware: how many, which one takes a new stream, poisoning and
//! replacement, guest calls under the VM's lock, and each VM's dispatcher (ticks, queue
//! readiness, the root context's http calls).
//!
//! A VM is an instance with its root context and the streams alive on it ([`VmState`]). Its
//! lock is a [`TurnLock`]: a stream that finds the VM busy waits without blocking a worker,
//! and the lock is held only around the synchronous guest calls of one phase.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::runtime::Handle;
use tokio::sync::Notify;
use wasmgate_engines::{CompiledModule, Instance, Trap, TrapReason, Val, ValType};

use super::shared::QueueWaiter;
use super::state::{Callback, MiddlewareShared, PendingCall, Stream, VmState};
use super::turn_lock::{TurnGuard, TurnLock};
use crate::error::ProxyError;
use crate::guest::Failures;

/// How often an idle dispatcher (no tick period) looks whether its VM is gone.
const IDLE_CHECK: Duration = Duration::from_millis(500);

/// One VM: an instance, its root context and its streams.
pub(crate) struct Vm {
    /// Its place in the set (a replacement takes the same).
    slot: usize,
    guest: TurnLock<Box<dyn Instance>>,
    /// Streams on it now (the set gives new streams to the VM with the fewest).
    pub live: AtomicUsize,
    /// Http calls taken out of the VM and not yet answered to it.
    pub in_flight: AtomicUsize,
    /// Set once, by the first trap: the error every stream on the VM fails with.
    poisoned: OnceLock<String>,
    /// Taken out of its slot by a `reload` recycle: it gets no new streams, finishes the ones
    /// it has, and goes with the last of them; a trap on it is not the fresh VMs failing.
    retired: AtomicBool,
    /// Wakes the paused streams on the VM to look again (a poisoning, the last http call
    /// answered, a tick period gone); each stream also has its own waker for its resumes.
    changed: Notify,
    waiter: Arc<QueueWaiter>,
}

impl Vm {
    /// True once a guest call on it trapped.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.get().is_some()
    }

    /// Locks the VM for the guest calls of one phase; the error every stream gets once the
    /// VM is poisoned.
    pub async fn lock(&self) -> Result<Guest<'_>, ProxyError> {
        let inst = self.guest.lock().await;
        if let Some(msg) = self.poisoned.get() {
            return Err(ProxyError::plugin(msg.clone()));
        }
        Ok(Guest { vm: self, inst })
    }

    /// Makes every paused stream on the VM look at its state again.
    pub fn wake_all(&self) {
        self.changed.notify_waiters();
    }

    /// Waits until the stream with waker `wake` or the whole VM is woken; `changed` is
    /// [`Vm::changed`], enabled before the stream looked at its state.
    pub async fn woken(
        &self,
        wake: &Notify,
        changed: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
    ) {
        let mut changed = changed;
        let own = wake.notified();
        tokio::pin!(own);
        std::future::poll_fn(|cx| {
            if own.as_mut().poll(cx).is_ready() || changed.as_mut().poll(cx).is_ready() {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await
    }

    /// The VM-wide wake-up a paused stream enables before it looks at its state.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// One http call answered: the last one wakes the paused streams, which may now have
    /// nothing left that could resume them.
    pub fn call_answered(&self, n: usize) {
        if n > 0 && self.in_flight.fetch_sub(n, Ordering::AcqRel) == n {
            self.wake_all();
        }
    }
}

/// A locked VM.
pub(crate) struct Guest<'a> {
    vm: &'a Vm,
    inst: TurnGuard<'a, Box<dyn Instance>>,
}

impl Guest<'_> {
    /// The VM's host state.
    pub fn state(&mut self) -> &mut VmState {
        state_of(&mut **self.inst)
    }

    /// Stream `ctx`, which must be alive on this VM.
    pub fn stream(&mut self, ctx: u32) -> &mut Stream {
        self.state()
            .streams
            .get_mut(&ctx)
            .expect("a stream's context lives until its driver ends it")
    }

    /// Calls guest callback `name` on context `ctx` (see [`guest_call`]).
    pub fn call(
        &mut self,
        name: &'static str,
        ctx: u32,
        args: &[i32],
    ) -> Result<Option<i32>, Trap> {
        guest_call(&mut **self.inst, name, ctx, args)
    }

    /// Takes the http calls the guest dispatched; the caller sends them (counted in flight
    /// until answered).
    pub fn take_calls(&mut self) -> Vec<PendingCall> {
        let calls = std::mem::take(&mut self.state().pending_calls);
        self.vm.in_flight.fetch_add(calls.len(), Ordering::AcqRel);
        calls
    }
}

enum Slot {
    Ready(Arc<Vm>),
    /// A fresh VM is being built (off the request path).
    Building,
    /// Building one failed; the next stream that finds no VM tries again.
    Failed(String),
}

/// The VMs of one middleware.
pub(crate) struct VmSet {
    pub shared: Arc<MiddlewareShared>,
    module: Arc<dyn CompiledModule>,
    allocator: &'static str,
    slots: Mutex<Vec<Slot>>,
    /// The VMs of the `Ready` slots, republished (under `slots`' lock) whenever a slot
    /// changes: a new stream picks from it without taking a lock.
    ready: ArcSwap<Vec<Arc<Vm>>>,
    /// A slot got a VM (or failed to).
    changed: Notify,
    created: AtomicU64,
    /// How long a stream waits for a VM when none is ready (all being replaced).
    wait: Duration,
    runtime: Handle,
    /// The middleware's failure record: every trap on the set's VMs goes there, once.
    failures: Arc<Failures>,
}

impl VmSet {
    /// A set with no VM yet.
    pub fn new(
        shared: Arc<MiddlewareShared>,
        module: Arc<dyn CompiledModule>,
        allocator: &'static str,
        wait: Duration,
        runtime: Handle,
        failures: Arc<Failures>,
    ) -> Arc<VmSet> {
        Arc::new(VmSet {
            shared,
            module,
            allocator,
            slots: Mutex::new(Vec::new()),
            ready: ArcSwap::default(),
            changed: Notify::new(),
            created: AtomicU64::new(0),
            wait,
            runtime,
            failures,
        })
    }

    /// Creates `count` VMs now (a middleware's creation: a rejected configuration fails it).
    pub fn start(self: &Arc<Self>, count: usize) -> Result<(), Trap> {
        for slot in 0..count {
            let vm = self.build(slot)?;
            let mut slots = self.slots();
            slots.push(Slot::Ready(vm));
            self.publish(&slots);
        }
        Ok(())
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the `Ready` slots of `slots` (locked: publishes happen in the order of the
    /// changes) the VMs new streams pick from.
    fn publish(&self, slots: &[Slot]) {
        let ready = slots.iter().filter_map(|s| match s {
            Slot::Ready(vm) => Some(vm.clone()),
            _ => None,
        });
        self.ready.store(Arc::new(ready.collect()));
    }

    /// The number of VMs the set keeps.
    pub fn count(&self) -> usize {
        self.slots().len()
    }

    /// VMs created so far, replacements included.
    pub fn created(&self) -> u64 {
        self.created.load(Ordering::Relaxed)
    }

    /// Streams alive on the set's current VMs.
    pub fn live(&self) -> usize {
        self.slots()
            .iter()
            .map(|s| match s {
                Slot::Ready(vm) => vm.live.load(Ordering::Relaxed),
                _ => 0,
            })
            .sum()
    }

    /// Whether the module exports `name` (the same for every VM).
    pub fn has_export(&self, name: &str) -> bool {
        self.module.info().export_func(name).is_some()
    }

    /// Instantiates, starts and configures a VM, and spawns its dispatcher.
    fn build(self: &Arc<Self>, slot: usize) -> Result<Arc<Vm>, Trap> {
        let mut st = VmState::new(self.shared.clone());
        st.allocator = self.allocator;
        let waiter = st.waiter.clone();
        let mut inst = self.module.instantiate(Box::new(st))?;
        start_instance(&mut *inst)?;
        let vm = Arc::new(Vm {
            slot,
            guest: TurnLock::new(inst),
            live: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            poisoned: OnceLock::new(),
            retired: AtomicBool::new(false),
            changed: Notify::new(),
            waiter,
        });
        self.created.fetch_add(1, Ordering::Relaxed);
        self.runtime
            .spawn(dispatcher(Arc::downgrade(self), Arc::downgrade(&vm)));
        Ok(vm)
    }

    /// The VM a new stream goes to: the ready one with the fewest live streams (counted as
    /// taken). When every VM is being replaced, waits for one, up to the pool wait.
    pub async fn pick(self: &Arc<Self>) -> Result<Arc<Vm>, ProxyError> {
        // Fast path: a sound VM is ready; no waiter registered, no clock read.
        if let Some(vm) = self.ready_vm() {
            return Ok(vm);
        }
        Box::pin(self.pick_waiting()).await
    }

    /// The sound VM with the fewest streams, counted as taken.
    fn ready_vm(&self) -> Option<Arc<Vm>> {
        take_best(&self.ready.load())
    }

    /// [`VmSet::pick`] when no VM was ready: rebuilds what failed and waits for one.
    async fn pick_waiting(self: &Arc<Self>) -> Result<Arc<Vm>, ProxyError> {
        let deadline = tokio::time::Instant::now() + self.wait;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let mut last_error = None;
            {
                let mut slots = self.slots();
                if let Some(vm) = self.ready_vm() {
                    return Ok(vm);
                }
                for (i, s) in slots.iter_mut().enumerate() {
                    match s {
                        Slot::Failed(e) => last_error = Some(std::mem::take(e)),
                        // Poisoned before it had its slot (a tick during the set's start).
                        Slot::Ready(vm) if vm.is_poisoned() => {}
                        _ => continue,
                    }
                    *s = Slot::Building;
                    self.rebuild(i);
                }
                self.publish(&slots);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let why = last_error.map(|e| format!(": {e}")).unwrap_or_default();
                return Err(ProxyError::new(
                    crate::error::ErrorSource::Plugin,
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "middleware {}: no VM of plugin {} ready within {:?}{why}",
                        self.shared.middleware, self.shared.plugin, self.wait
                    ),
                ));
            }
        }
    }

    /// Builds a fresh VM for `slot` on a blocking thread (start-up can take long).
    fn rebuild(self: &Arc<Self>, slot: usize) {
        let set = self.clone();
        self.runtime.spawn_blocking(move || {
            let built = set.build(slot);
            let mut slots = set.slots();
            slots[slot] = match built {
                Ok(vm) => Slot::Ready(vm),
                // Not logged here: the stream that finds no VM fails with this text, and its
                // failure is logged (throttled) with the middleware's others.
                Err(t) => Slot::Failed(t.to_string()),
            };
            set.publish(&slots);
            drop(slots);
            set.changed.notify_waiters();
        });
    }

    /// A guest call on `vm` trapped: poisons the VM (every stream on it fails), records the
    /// failure with the middleware's policy (the only place a trap is recorded, so each one is
    /// counted and logged once; under `reload` every VM of the set is replaced), starts the
    /// VM's replacement, and gives the error.
    pub fn trapped(self: &Arc<Self>, guest: &mut Guest<'_>, t: &Trap) -> ProxyError {
        let vm = guest.vm;
        let sh = &self.shared;
        let err = crate::guest::trap_error(&sh.plugin, &sh.middleware, &mut **guest.inst, t);
        // A VM a `reload` already retired: the failure that replaced it was recorded, and a
        // trap on it now must not count as the fresh VMs failing too (which would start the
        // backoff). It is poisoned all the same: its streams fail.
        let first = vm.poisoned.set(err.message.clone()).is_ok();
        if first && !vm.retired.load(Ordering::Acquire) {
            // What the request gets follows from the policy alone; the stream asks for it.
            let _ = self.failures.failed(&err, || self.recycle_all());
        } else {
            tracing::debug!(target: "wasmgate::plugin", plugin = %sh.plugin,
                middleware = %sh.middleware, "a VM being replaced trapped: {err}");
        }
        vm.wake_all();
        // Replaced once, by whoever poisons it while it holds its slot (a recycle may have).
        self.replace_if_current(vm);
        err
    }

    /// Puts a fresh VM in `vm`'s slot if `vm` still holds it.
    fn replace_if_current(self: &Arc<Self>, vm: &Vm) {
        let mut slots = self.slots();
        if matches!(slots.get(vm.slot), Some(Slot::Ready(v)) if std::ptr::eq(&**v, vm)) {
            slots[vm.slot] = Slot::Building;
            self.publish(&slots);
            drop(slots);
            self.rebuild(vm.slot);
        }
    }

    /// Replaces every VM of the set (`reload`): each leaves its slot, where a fresh one (a
    /// new root context) is built on a blocking thread, so new streams go to fresh VMs. A VM
    /// that did not fail finishes the streams it has (they are not failed with it) and is
    /// dropped with the last of them; the one that trapped is poisoned already. Slots
    /// already being built are left alone.
    pub fn recycle_all(self: &Arc<Self>) {
        let mut slots = self.slots();
        let mut fresh = Vec::new();
        for (i, s) in slots.iter_mut().enumerate() {
            if let Slot::Ready(vm) = s {
                vm.retired.store(true, Ordering::Release);
                *s = Slot::Building;
                fresh.push(i);
            }
        }
        self.publish(&slots);
        drop(slots);
        for i in fresh {
            self.rebuild(i);
        }
    }
}

/// A VM's dispatcher: delivers queue readiness and ticks to its root context and sends the
/// http calls the root context makes. Ends with the VM (dropped or poisoned).
async fn dispatcher(set: Weak<VmSet>, vm: Weak<Vm>) {
    let mut due: Option<Instant> = None;
    let mut first = true;
    loop {
        let waiter = match vm.upgrade() {
            Some(v) if !v.is_poisoned() => v.waiter.clone(),
            _ => return,
        };
        // The first round runs at once: calls on_configure made, a tick period it set.
        if !first {
            let until = due.unwrap_or_else(|| Instant::now() + IDLE_CHECK);
            let _ = tokio::time::timeout_at(until.into(), waiter.notify.notified()).await;
        }
        first = false;
        let (Some(set), Some(vm)) = (set.upgrade(), vm.upgrade()) else {
            return;
        };
        let ready: Vec<u32> =
            std::mem::take(&mut *waiter.ready.lock().unwrap_or_else(|p| p.into_inner()));
        let calls = {
            let Ok(mut g) = vm.lock().await else { return };
            let root = g.state().root_ctx;
            let mut result = Ok(());
            for q in ready {
                result = g
                    .call("proxy_on_queue_ready", root, &[root as i32, q as i32])
                    .map(|_| ());
                if result.is_err() {
                    break;
                }
            }
            if result.is_ok() {
                let st = g.state();
                if let Some(p) = st.tick_period {
                    if st.last_tick.elapsed() >= p {
                        st.last_tick = Instant::now();
                        result = g.call("proxy_on_tick", root, &[root as i32]).map(|_| ());
                    }
                }
            }
            if let Err(t) = result {
                // Recorded (and logged, throttled) as a failure of the middleware there.
                set.trapped(&mut g, &t);
                return;
            }
            let st = g.state();
            due = st.tick_period.map(|p| st.last_tick + p);
            g.take_calls()
        };
        // A tick may have stopped the ticks: paused streams look whether anything is left.
        vm.wake_all();
        // A trap there was recorded by `trapped`; anything else is the VM poisoned meanwhile.
        if set.drive(&vm, calls).await.is_err() {
            return;
        }
    }
}

/// The sound VM of `ready` with the fewest streams, counted as taken.
fn take_best(ready: &[Arc<Vm>]) -> Option<Arc<Vm>> {
    let best = ready
        .iter()
        .filter(|vm| !vm.is_poisoned())
        .min_by_key(|vm| vm.live.load(Ordering::Relaxed))?;
    best.live.fetch_add(1, Ordering::Relaxed);
    Some(best.clone())
}

fn state_of(inst: &mut dyn Instance) -> &mut VmState {
    inst.data()
        .downcast_mut::<VmState>()
        .expect("proxy-wasm instances carry VmState")
}

/// The most parameters a proxy-wasm callback has (`proxy_on_http_call_response`: 5).
const MAX_CALLBACK_ARGS: usize = 8;

/// Calls guest callback `name` with `args` (cut to its arity) after making
/// `ctx` the effective context. `Ok(None)`: not exported.
pub(crate) fn guest_call(
    inst: &mut dyn Instance,
    name: &'static str,
    ctx: u32,
    args: &[i32],
) -> Result<Option<i32>, Trap> {
    // Taken out of its slot for the call (no reference counting), put back after it.
    let found = match state_of(inst).exports.slot(name) {
        Some(slot) => slot.take(),
        None => {
            let f = inst.export(name);
            state_of(inst).exports.insert(name, None);
            f
        }
    };
    let Some(f) = found else {
        return Ok(None);
    };
    let r = call_export(inst, &f, name, ctx, args);
    let st = state_of(inst);
    st.callback = Callback::Other;
    if let Some(slot) = st.exports.slot(name) {
        *slot = Some(f);
    }
    r
}

/// [`guest_call`] once the export is known.
fn call_export(
    inst: &mut dyn Instance,
    f: &wasmgate_engines::ExportFunc,
    name: &'static str,
    ctx: u32,
    args: &[i32],
) -> Result<Option<i32>, Trap> {
    // On the stack: a callback runs per request phase, and takes at most a few i32s
    // (callback types are checked at load) and returns at most one.
    let n = f.ty().params.len().min(args.len()).min(MAX_CALLBACK_ARGS);
    let mut argv = [Val::I32(0); MAX_CALLBACK_ARGS];
    for (slot, a) in argv.iter_mut().zip(&args[..n]) {
        *slot = Val::I32(*a);
    }
    let args = &argv[..n];
    let mut resv = [Val::I32(0); 1];
    let results = &mut resv[..f.ty().results.len().min(1)];
    let st = state_of(inst);
    st.effective_ctx = ctx;
    // The stream's request, for the guest's WASI output (root contexts have none); only a
    // guest that can write to stdout needs its calls marked.
    let in_call = st.shared.writes_stdio.then(|| {
        crate::guest::log::in_call(
            &st.shared.middleware,
            st.streams
                .get(&ctx)
                .and_then(|s| s.info.request_id.as_ref()),
        )
    });
    let started = st.shared.stats.start();
    let r = inst.call(f, args, results);
    drop(in_call);
    if started.is_some() {
        let memory = inst.memory_size();
        let st = state_of(inst);
        st.shared
            .stats
            .record(super::state::phase_of(name), started);
        st.memory.update(memory);
    }
    r?;
    Ok(Some(results.first().and_then(Val::i32).unwrap_or(0)))
}

/// Start-up and root context lifecycle of a new instance.
fn start_instance(inst: &mut dyn Instance) -> Result<(), Trap> {
    let engine = inst.engine();
    let ok_exit = |r: Result<(), Trap>| match r {
        Err(t) if !t.is_success_exit() => Err(t),
        _ => Ok(()),
    };
    if let Some(f) = inst.export("_initialize") {
        ok_exit(inst.call(&f, &[], &mut []))?;
        for main in ["main", "__main_void"] {
            if let Some(f) = inst.export(main) {
                let args = vec![Val::I32(0); f.ty().params.len()];
                let mut res: Vec<Val> = f
                    .ty()
                    .results
                    .iter()
                    .map(|t| Val::default_for(*t))
                    .collect();
                if f.ty().params.iter().all(|t| *t == ValType::I32) {
                    ok_exit(inst.call(&f, &args, &mut res))?;
                }
                break;
            }
        }
    } else if let Some(f) = inst.export("_start") {
        ok_exit(inst.call(&f, &[], &mut []))?;
    }
    let (root, vm_len, cfg_len) = {
        let s = state_of(inst);
        (
            s.root_ctx,
            s.shared.vm_config.len() as i32,
            s.shared.plugin_config.len() as i32,
        )
    };
    guest_call(inst, "proxy_on_context_create", root, &[root as i32, 0])?;
    state_of(inst).callback = Callback::VmStart;
    // cpp-host passes the root id to on_vm_start (the Rust SDK expects it).
    if guest_call(inst, "proxy_on_vm_start", root, &[root as i32, vm_len])? == Some(0) {
        return Err(Trap::new(
            engine,
            "proxy_on_vm_start",
            TrapReason::Other("returned false: the VM configuration was rejected".into()),
        ));
    }
    state_of(inst).callback = Callback::Configure;
    if guest_call(inst, "proxy_on_configure", root, &[root as i32, cfg_len])? == Some(0) {
        return Err(Trap::new(
            engine,
            "proxy_on_configure",
            TrapReason::Other("returned false: the plugin configuration was rejected".into()),
        ));
    }
    Ok(())
}
