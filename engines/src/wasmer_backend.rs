//! wasmer (Cranelift, sys backend) behind the engine-neutral interface.
//!
//! * Each instance gets its own `Store` (wasmer keeps every instance of a
//!   store alive until the store is dropped).
//! * Deadlines: wasmer 7.4's `experimental-host-interrupt` (a signal sent to
//!   the thread running the store). One watchdog thread per engine scans the
//!   running calls every [`TICK`] and interrupts, repeatedly, every store
//!   past its deadline ([`Slot`]); a signal that lands in native code rather
//!   than guest code is defused ([`crate::wasmer_interrupt`]). Host functions
//!   also refuse to run past the deadline, so a guest that loops through host
//!   calls stops too.
//! * Memory, table and stack limits: per-module `Tunables` on a clone of the
//!   engine (clones share the compiler and code memory).

use std::any::Any;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use wasmer::sys::vm::{
    MemoryError, MemoryStyle, TableStyle, TrapCode, VMConfig, VMMemory, VMMemoryDefinition,
    VMTable, VMTableDefinition,
};
use wasmer::sys::{BaseTunables, NativeEngineExt, Tunables};
use wasmer::{
    AsStoreMut, AsStoreRef, Function, FunctionEnv, FunctionEnvMut, Imports, Memory, MemoryType,
    Module, Pages, RuntimeError, Store, TableType, Type, TypedFunction, Value,
};

use crate::cache::{self, Artifact, Cache};
use crate::coarse;
use crate::exports::{Backend, EngineInstance};
use crate::wasi::StdioLines;
use crate::{
    check_range, compile_input, prepare, run_start_section, to_binary, Caller, CompiledModule,
    EngineError, EngineKind, EngineOptions, FuncType, GuestMemory, HostError, HostFn,
    HostFunctions, ImportKind, Instance, Limits, ModuleInfo, Trap, TrapReason, Val, ValType,
    INSTANTIATE, MAX_TABLE_ELEMENTS,
};

/// wasmer version this crate links.
pub(crate) const VERSION: &str = "7.4.2";
const KIND: EngineKind = EngineKind::Wasmer;
/// Watchdog period: a runaway guest stops within about one tick of its deadline.
pub(crate) const TICK: Duration = Duration::from_millis(5);
/// Host functions run on wasmer's guest stack (on wasmtime they use the
/// thread's own stack), so it gets this much on top of
/// [`Limits::max_stack_bytes`] for host frames: a guest may recurse up to this
/// much deeper on wasmer than on wasmtime.
const HOST_STACK_MARGIN: usize = 64 << 10;

/// Watchdog ticks a call of `d` nanoseconds may run: the watchdog may tick
/// right after the call starts, so two extra ticks make sure it runs at least
/// `d` (see [`Watchdog::ticks`]).
fn deadline_ticks(d: u64) -> u64 {
    d.div_ceil(TICK.as_nanos() as u64) + 2
}

// Where a store's call is, as the watchdog sees it.
/// No call is running.
const IDLE: u64 = 0;
/// A call is running.
const RUNNING: u64 = 1;
/// The watchdog is sending the interrupt signal.
const SIGNALLING: u64 = 2;
/// A call is running and was sent a signal (maybe more will follow).
const SENT: u64 = 3;
const STATE_BITS: u32 = 2;
const STATE_MASK: u64 = (1 << STATE_BITS) - 1;

/// Deadline and interrupt state of one store, shared with the watchdog.
///
/// The state word is `generation << STATE_BITS | state`; each call gets a
/// new generation, so a watchdog that decided to interrupt one call can
/// never signal the next one (its compare-and-swap fails), and a call does
/// not end while a signal for it is being sent ([`SIGNALLING`]) or is still
/// on its way ([`SENT`]: taken on the host stack by [`flush_signals`]).
/// Where the signal may land is [`crate::wasmer_interrupt`]'s business.
struct Slot {
    /// Deadline in watchdog ticks ([`Watchdog::ticks`]); 0 = no call running.
    deadline: AtomicU64,
    /// The same deadline in [`coarse`] units, for host functions that wait
    /// ([`Caller::deadline`]).
    wall_deadline: AtomicU64,
    state: AtomicU64,
    store: wasmer::sys::vm::StoreId,
    /// The watchdog's tick count.
    ticks: Arc<AtomicU64>,
}

impl Slot {
    fn expired(&self) -> bool {
        let d = self.deadline.load(Ordering::Acquire);
        d != 0 && self.ticks.load(Ordering::Acquire) >= d
    }

    /// An outermost call (or instantiation) of at most `d` nanoseconds starts.
    fn begin_call(&self, d: u64) {
        let deadline = self.ticks.load(Ordering::Acquire) + deadline_ticks(d);
        self.deadline.store(deadline, Ordering::Release);
        self.wall_deadline.store(
            coarse::now() + d + TICK.as_nanos() as u64,
            Ordering::Release,
        );
        let w = self.state.load(Ordering::Relaxed);
        self.state.store(
            ((w >> STATE_BITS) + 1) << STATE_BITS | RUNNING,
            Ordering::Release,
        );
    }

    /// The outermost call returned: once this returns, no signal for it is
    /// pending or being sent.
    fn end_call(&self) {
        loop {
            let w = self.state.load(Ordering::Acquire);
            match w & STATE_MASK {
                SIGNALLING => std::hint::spin_loop(),
                st => {
                    let idle = (w & !STATE_MASK) | IDLE;
                    if self
                        .state
                        .compare_exchange(w, idle, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        if st == SENT {
                            flush_signals();
                        }
                        break;
                    }
                }
            }
        }
        self.deadline.store(0, Ordering::Release);
        self.wall_deadline.store(0, Ordering::Release);
    }

    /// One watchdog scan: signals the running call if it is past its deadline.
    fn scan(&self) {
        let w = self.state.load(Ordering::Acquire);
        let st = w & STATE_MASK;
        if !(st == RUNNING || st == SENT) || !self.expired() {
            return;
        }
        let signalling = (w & !STATE_MASK) | SIGNALLING;
        if self
            .state
            .compare_exchange(w, signalling, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            // The call ended (or a new one began) meanwhile.
            return;
        }
        // Fails when the call has not entered wasmer yet (the next scan tries
        // again) or a signal to that thread is still in flight.
        let sent = wasmer::sys::vm::interrupt_registry::interrupt(self.store).is_ok();
        let after = if sent { (w & !STATE_MASK) | SENT } else { w };
        self.state.store(after, Ordering::Release);
    }
}

/// Makes a SIGUSR1 the watchdog sent to this thread arrive now, while it is
/// on the host stack outside any call (wasmer's handler then does nothing):
/// a pending signal is delivered when a system call returns. Otherwise it
/// could arrive during this thread's next call, for this or another store.
fn flush_signals() {
    // SAFETY: `sigpending` only writes the set we pass, a plain C struct for
    // which all-zero bytes are a valid value.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigpending(&mut set);
    }
}

struct Watchdog {
    slots: Mutex<Vec<Weak<Slot>>>,
    /// Ticks so far: one per wake-up of the watchdog, never more, so a call is
    /// never stopped early. Each wake-up comes at least [`TICK`] after the last,
    /// so `n` ticks after a call began at least `(n - 1) * TICK` has passed. A
    /// clock-based deadline would stop calls early after the watchdog thread was
    /// starved (a loaded machine): the call would have armed its deadline on a
    /// stale clock reading. Under starvation deadlines run late instead.
    ticks: Arc<AtomicU64>,
}

pub(crate) struct WmEngine {
    engine: wasmer::Engine,
    opts: EngineOptions,
    /// The compile cache, if its directory is safe to use.
    cache: Option<Cache>,
    watchdog: Arc<Watchdog>,
}

impl WmEngine {
    pub(crate) fn new(opts: EngineOptions, cache: Option<Cache>) -> Result<Self, EngineError> {
        let engine = wasmer::Engine::from(wasmer::sys::Cranelift::default());
        // Before any watchdog can send a signal.
        crate::wasmer_interrupt::install();
        coarse::refresh();
        let watchdog = Arc::new(Watchdog {
            slots: Mutex::new(Vec::new()),
            ticks: Arc::new(AtomicU64::new(1)),
        });
        let weak = Arc::downgrade(&watchdog);
        std::thread::Builder::new()
            .name("wasmer-watchdog".into())
            .spawn(move || loop {
                std::thread::sleep(TICK);
                let Some(w) = weak.upgrade() else { break };
                coarse::refresh();
                w.ticks.fetch_add(1, Ordering::AcqRel);
                let mut slots = w.slots.lock().unwrap_or_else(|p| p.into_inner());
                slots.retain(|s| match s.upgrade() {
                    Some(s) => {
                        s.scan();
                        true
                    }
                    None => false,
                });
            })
            .map_err(EngineError::Io)?;
        Ok(WmEngine {
            engine,
            opts,
            cache,
            watchdog,
        })
    }
}

/// Caps memories at the plugin's limit and tables at [`MAX_TABLE_ELEMENTS`]
/// (wasmer's own cap is 128 Mi elements, whose growth can abort the process
/// on allocation failure), and sets the guest stack size.
struct LimitTunables {
    base: BaseTunables,
    max_pages: u32,
    vmconfig: VMConfig,
}

impl LimitTunables {
    fn adjust(&self, ty: &MemoryType) -> Result<MemoryType, MemoryError> {
        if ty.minimum.0 > self.max_pages {
            return Err(MemoryError::Generic(format!(
                "initial memory of {} pages exceeds the limit of {} pages",
                ty.minimum.0, self.max_pages
            )));
        }
        let mut t = *ty;
        t.maximum = Some(Pages(
            ty.maximum
                .map_or(self.max_pages, |m| m.0.min(self.max_pages)),
        ));
        Ok(t)
    }

    /// A table of at most [`MAX_TABLE_ELEMENTS`]: `table.grow` past it
    /// returns -1, as on wasmtime; a larger minimum fails instantiation.
    fn adjust_table(ty: &TableType) -> Result<TableType, String> {
        if ty.minimum > MAX_TABLE_ELEMENTS {
            return Err(format!(
                "table of {} elements exceeds the limit of {MAX_TABLE_ELEMENTS} elements",
                ty.minimum
            ));
        }
        let mut t = *ty;
        t.maximum = Some(
            ty.maximum
                .map_or(MAX_TABLE_ELEMENTS, |m| m.min(MAX_TABLE_ELEMENTS)),
        );
        Ok(t)
    }
}

impl Tunables for LimitTunables {
    fn memory_style(&self, memory: &MemoryType) -> MemoryStyle {
        self.base.memory_style(memory)
    }
    fn table_style(&self, table: &TableType) -> TableStyle {
        self.base.table_style(table)
    }
    fn create_host_memory(
        &self,
        ty: &MemoryType,
        style: &MemoryStyle,
    ) -> Result<VMMemory, MemoryError> {
        let t = self.adjust(ty)?;
        self.base.create_host_memory(&t, style)
    }
    unsafe fn create_vm_memory(
        &self,
        ty: &MemoryType,
        style: &MemoryStyle,
        vm_definition_location: NonNull<VMMemoryDefinition>,
    ) -> Result<VMMemory, MemoryError> {
        let t = self.adjust(ty)?;
        // SAFETY: forwarded unchanged from the caller's contract.
        unsafe {
            self.base
                .create_vm_memory(&t, style, vm_definition_location)
        }
    }
    fn create_host_table(&self, ty: &TableType, style: &TableStyle) -> Result<VMTable, String> {
        self.base.create_host_table(&Self::adjust_table(ty)?, style)
    }
    unsafe fn create_vm_table(
        &self,
        ty: &TableType,
        style: &TableStyle,
        vm_definition_location: NonNull<VMTableDefinition>,
    ) -> Result<VMTable, String> {
        let t = Self::adjust_table(ty)?;
        // SAFETY: forwarded unchanged from the caller's contract (only the
        // table's maximum is lowered).
        unsafe { self.base.create_vm_table(&t, style, vm_definition_location) }
    }
    fn vmconfig(&self) -> &VMConfig {
        &self.vmconfig
    }
}

fn to_wm_ty(t: ValType) -> Type {
    match t {
        ValType::I32 => Type::I32,
        ValType::I64 => Type::I64,
        ValType::F32 => Type::F32,
        ValType::F64 => Type::F64,
    }
}

fn to_wm(v: Val) -> Value {
    match v {
        Val::I32(x) => Value::I32(x),
        Val::I64(x) => Value::I64(x),
        Val::F32(x) => Value::F32(x),
        Val::F64(x) => Value::F64(x),
    }
}

fn from_wm(v: &Value) -> Val {
    match v {
        Value::I32(x) => Val::I32(*x),
        Value::I64(x) => Val::I64(*x),
        Value::F32(x) => Val::F32(*x),
        Value::F64(x) => Val::F64(*x),
        _ => Val::I32(0),
    }
}

/// Raised by a host function called after the deadline passed.
#[derive(Debug, thiserror::Error)]
#[error("deadline exceeded")]
struct DeadlineExceeded;

fn map_err(err: RuntimeError, export: &str) -> Trap {
    let reason = if let Some(h) = err.downcast_ref::<HostError>() {
        match h {
            HostError::Exit(c) => TrapReason::Exit(*c),
            HostError::Deadline => TrapReason::Deadline,
            HostError::Nested(t) => t.reason.clone(),
            other => TrapReason::HostError(other.to_string()),
        }
    } else if err.downcast_ref::<DeadlineExceeded>().is_some() {
        TrapReason::Deadline
    } else {
        let msg = err.message();
        match err.to_trap() {
            Some(
                TrapCode::HeapAccessOutOfBounds
                | TrapCode::TableAccessOutOfBounds
                | TrapCode::UnalignedAtomic,
            ) => TrapReason::OutOfBounds,
            Some(TrapCode::UnreachableCodeReached) => TrapReason::Unreachable,
            Some(TrapCode::StackOverflow) => TrapReason::StackOverflow,
            Some(TrapCode::HostInterrupt) => TrapReason::Deadline,
            Some(c) => TrapReason::Other(c.to_string()),
            None => TrapReason::Other(msg),
        }
    };
    Trap::new(KIND, export, reason)
}

struct WmEnv {
    user: Box<dyn Any + Send>,
    stdio: StdioLines,
    memory: Option<Memory>,
    instance: Option<wasmer::Instance>,
    slot: Arc<Slot>,
}

struct WmCaller<'a> {
    env: FunctionEnvMut<'a, WmEnv>,
}

impl GuestMemory for WmCaller<'_> {
    fn memory_size(&self) -> u64 {
        mem_size(self.env.data().memory.as_ref(), &self.env)
    }
    fn read_into(&self, ptr: u32, buf: &mut [u8]) -> Result<(), HostError> {
        mem_read(self.env.data().memory.as_ref(), &self.env, ptr, buf)
    }
    fn write(&mut self, ptr: u32, src: &[u8]) -> Result<(), HostError> {
        mem_write(self.env.data().memory.as_ref(), &self.env, ptr, src)
    }
}

impl Caller for WmCaller<'_> {
    fn engine(&self) -> EngineKind {
        KIND
    }
    fn call(&mut self, export: &str, args: &[Val], results: &mut [Val]) -> Result<(), Trap> {
        let func = self
            .env
            .data()
            .instance
            .as_ref()
            .and_then(|i| i.exports.get_function(export).ok().cloned())
            .ok_or_else(|| {
                Trap::new(
                    KIND,
                    export,
                    TrapReason::Other(format!("no exported function `{export}`")),
                )
            })?;
        call_dyn(&func, &mut self.env, export, args, results)
    }
    fn data(&mut self) -> &mut (dyn Any + Send) {
        self.env.data_mut().user.as_mut()
    }
    fn stdio(&mut self) -> &mut StdioLines {
        &mut self.env.data_mut().stdio
    }
    fn deadline(&self) -> Option<Instant> {
        match self.env.data().slot.wall_deadline.load(Ordering::Acquire) {
            0 => None,
            d => Some(coarse::instant(d)),
        }
    }
}

/// Guest memory of a wasmer store, shared by [`WmCaller`] and [`WmBackend`].
fn mem_size(m: Option<&Memory>, store: &impl AsStoreRef) -> u64 {
    m.map_or(0, |m| m.view(store).data_size())
}

fn mem_read(
    m: Option<&Memory>,
    store: &impl AsStoreRef,
    ptr: u32,
    buf: &mut [u8],
) -> Result<(), HostError> {
    read_view(&m.ok_or(HostError::NoMemory)?.view(store), ptr, buf)
}

fn mem_write(
    m: Option<&Memory>,
    store: &impl AsStoreRef,
    ptr: u32,
    src: &[u8],
) -> Result<(), HostError> {
    write_view(&m.ok_or(HostError::NoMemory)?.view(store), ptr, src)
}

fn read_view(view: &wasmer::MemoryView<'_>, ptr: u32, buf: &mut [u8]) -> Result<(), HostError> {
    let size = view.data_size();
    check_range(ptr, buf.len() as u64, size)?;
    view.read(ptr as u64, buf)
        .map_err(|_| HostError::OutOfBounds {
            ptr,
            len: buf.len() as u64,
            memory_size: size,
        })
}

fn write_view(view: &wasmer::MemoryView<'_>, ptr: u32, src: &[u8]) -> Result<(), HostError> {
    let size = view.data_size();
    check_range(ptr, src.len() as u64, size)?;
    view.write(ptr as u64, src)
        .map_err(|_| HostError::OutOfBounds {
            ptr,
            len: src.len() as u64,
            memory_size: size,
        })
}

fn call_dyn(
    func: &Function,
    store: &mut impl AsStoreMut,
    export: &str,
    args: &[Val],
    results: &mut [Val],
) -> Result<(), Trap> {
    let wargs: Vec<Value> = args.iter().map(|v| to_wm(*v)).collect();
    let out = func.call(store, &wargs).map_err(|e| map_err(e, export))?;
    if out.len() != results.len() {
        return Err(Trap::new(
            KIND,
            export,
            TrapReason::Other(format!(
                "export returned {} values, expected {}",
                out.len(),
                results.len()
            )),
        ));
    }
    for (d, s) in results.iter_mut().zip(out.iter()) {
        *d = from_wm(s);
    }
    Ok(())
}

fn fingerprint(limits: &Limits) -> String {
    format!(
        "wasmer {VERSION} {} cranelift stack={} {}",
        std::env::consts::ARCH,
        limits.max_stack_bytes,
        crate::start::REWRITE_TAG,
    )
}

impl crate::Engine for WmEngine {
    fn kind(&self) -> EngineKind {
        KIND
    }

    fn compile(
        &self,
        wasm: &[u8],
        host: Arc<HostFunctions>,
        limits: Limits,
    ) -> Result<Arc<dyn CompiledModule>, EngineError> {
        let bin = to_binary(wasm)?;
        let info = prepare(&bin, &host, &limits, &self.opts)?;
        let mut engine = self.engine.clone();
        engine.set_tunables(LimitTunables {
            base: BaseTunables::new(),
            max_pages: limits.max_memory_pages() as u32,
            vmconfig: VMConfig {
                wasm_stack_size: Some(limits.max_stack_bytes + HOST_STACK_MARGIN),
            },
        });
        let key = format!("{} {}", info.sha256, fingerprint(&limits));
        let (module, from_cache) =
            cache::load_or_compile(self.cache.as_ref(), &engine, "wasmer", &key, || {
                Module::new(&engine, &*compile_input(&bin, &info)?).map_err(|e| {
                    EngineError::Compile {
                        engine: KIND,
                        message: e.to_string(),
                    }
                })
            })?;
        let mut imports = Vec::new();
        for imp in &info.imports {
            if let (ImportKind::Func(_), Some(hf)) = (&imp.kind, host.get(&imp.module, &imp.name)) {
                imports.push(ResolvedImport {
                    module: imp.module.clone(),
                    name: imp.name.clone(),
                    ty: wasmer::FunctionType::new(
                        hf.ty
                            .params
                            .iter()
                            .map(|t| to_wm_ty(*t))
                            .collect::<Vec<_>>(),
                        hf.ty
                            .results
                            .iter()
                            .map(|t| to_wm_ty(*t))
                            .collect::<Vec<_>>(),
                    ),
                    results: Arc::new(hf.ty.results.clone()),
                    func: hf.func.clone(),
                });
            }
        }
        Ok(Arc::new(WmModule {
            engine,
            module,
            start: info.start.is_some(),
            info,
            limits,
            from_cache,
            imports,
            watchdog: self.watchdog.clone(),
        }))
    }
}

struct ResolvedImport {
    module: String,
    name: String,
    ty: wasmer::FunctionType,
    results: Arc<Vec<ValType>>,
    func: Arc<HostFn>,
}

struct WmModule {
    engine: wasmer::Engine,
    module: Module,
    /// The module had a start section, now exported (see [`crate::start`]).
    start: bool,
    info: ModuleInfo,
    limits: Limits,
    from_cache: bool,
    imports: Vec<ResolvedImport>,
    watchdog: Arc<Watchdog>,
}

fn host_trampoline(
    f: Arc<HostFn>,
    rty: Arc<Vec<ValType>>,
    slot: Arc<Slot>,
) -> impl Fn(FunctionEnvMut<WmEnv>, &[Value]) -> Result<Vec<Value>, RuntimeError> + Send + Sync + 'static
{
    move |env, params| {
        if slot.expired() {
            return Err(RuntimeError::user(Box::new(DeadlineExceeded)));
        }
        let np = params.len();
        let mut buf = [Val::I32(0); 16];
        let mut heap;
        let vals: &mut [Val] = if np + rty.len() <= 16 {
            &mut buf[..np + rty.len()]
        } else {
            heap = vec![Val::I32(0); np + rty.len()];
            &mut heap
        };
        let (a, r) = vals.split_at_mut(np);
        for (d, s) in a.iter_mut().zip(params) {
            *d = from_wm(s);
        }
        for (d, t) in r.iter_mut().zip(rty.iter()) {
            *d = Val::default_for(*t);
        }
        let mut c = WmCaller { env };
        f(&mut c, a, r).map_err(|e| RuntimeError::user(Box::new(e)))?;
        for (v, t) in r.iter().zip(rty.iter()) {
            if v.ty() != *t {
                return Err(RuntimeError::user(Box::new(HostError::msg(format!(
                    "host function returned {} where {t} was declared",
                    v.ty()
                )))));
            }
        }
        Ok(r.iter().map(|v| to_wm(*v)).collect())
    }
}

impl CompiledModule for WmModule {
    fn engine(&self) -> EngineKind {
        KIND
    }
    fn info(&self) -> &ModuleInfo {
        &self.info
    }
    fn limits(&self) -> &Limits {
        &self.limits
    }
    fn loaded_from_cache(&self) -> bool {
        self.from_cache
    }
    fn instantiate(&self, data: Box<dyn Any + Send>) -> Result<Box<dyn Instance>, Trap> {
        if let Some(min) = self.info.memory_min_pages {
            if min > self.limits.max_memory_pages() {
                return Err(Trap::new(KIND, INSTANTIATE, TrapReason::MemoryLimit));
            }
        }
        let mut store = Store::new(self.engine.clone());
        let slot = Arc::new(Slot {
            deadline: AtomicU64::new(0),
            wall_deadline: AtomicU64::new(0),
            state: AtomicU64::new(IDLE),
            store: store.id(),
            ticks: self.watchdog.ticks.clone(),
        });
        self.watchdog
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::downgrade(&slot));
        let env = FunctionEnv::new(
            &mut store,
            WmEnv {
                user: data,
                stdio: StdioLines::default(),
                memory: None,
                instance: None,
                slot: slot.clone(),
            },
        );
        let mut imports = Imports::new();
        for imp in &self.imports {
            let f = Function::new_with_env(
                &mut store,
                &env,
                imp.ty.clone(),
                host_trampoline(imp.func.clone(), imp.results.clone(), slot.clone()),
            );
            imports.define(&imp.module, &imp.name, f);
        }
        let deadline = self.limits.call_deadline.as_nanos() as u64;
        slot.begin_call(deadline);
        let inst = wasmer::Instance::new(&mut store, &self.module, &imports);
        slot.end_call();
        let inst = inst.map_err(|e| {
            let reason = match e {
                wasmer::InstantiationError::Start(rt) => return map_err(rt, INSTANTIATE),
                other => TrapReason::Other(other.to_string()),
            };
            Trap::new(KIND, INSTANTIATE, reason)
        })?;
        let memory = inst.exports.get_memory("memory").ok().cloned();
        {
            let d = env.as_mut(&mut store);
            d.memory = memory.clone();
            d.instance = Some(inst.clone());
        }
        let mut inst: Box<dyn Instance> = Box::new(EngineInstance::new(WmBackend {
            store: SendStore(store),
            env,
            instance: inst,
            memory,
            deadline,
            slot,
            _watchdog: self.watchdog.clone(),
        }));
        if self.start {
            run_start_section(inst.as_mut())?;
        }
        Ok(inst)
    }
}

enum WmFunc {
    VV(TypedFunction<(), ()>),
    VI32(TypedFunction<(), i32>),
    VI64(TypedFunction<(), i64>),
    I32V(TypedFunction<i32, ()>),
    I32I32(TypedFunction<i32, i32>),
    I32x2V(TypedFunction<(i32, i32), ()>),
    I32x2I32(TypedFunction<(i32, i32), i32>),
    /// proxy-wasm's stream callbacks: (context, size or count, end_of_stream) -> action.
    I32x3I32(TypedFunction<(i32, i32, i32), i32>),
    Dyn(Function),
}

/// A wasmer `Store` that may move between threads between calls.
struct SendStore(Store);

// SAFETY: wasmer 7.4 leaves `Store` `!Send` because of its optional
// `on_called` callback (a `Box<dyn FnOnce>` without `Send`) and the raw
// pointers into the VM objects it owns. Moving one between threads is sound
// here because:
// * `on_called` is never set: only `StoreMut::on_called` sets it, and
//   neither this crate nor wasmer itself calls that;
// * the raw pointers point into heap allocations the store owns (its boxed
//   inner context, instances, memories, tables), which do not move with the
//   `Store` value and are reached only through the store, or through the
//   handles kept next to it in the same [`WmBackend`], with `&mut` access;
// * everything put in it is `Send`: `WmEnv` (`Send` user data, `Arc<Slot>`,
//   handles) and `Send + Sync` host closures;
// * wasmer's thread-affine state exists only while a call runs: the
//   interrupt registry entry recording the calling thread is installed when
//   a call enters and removed when the outermost call returns, the
//   thread-local store context likewise, the guest stack is per call, and
//   with `experimental-async` off a call cannot be suspended and resumed
//   elsewhere. A call holds `&mut` of the store for its whole length, so the
//   store moves only between calls, when none of that state exists.
// The parity tests call one instance from several threads, deadline included.
unsafe impl Send for SendStore {}

struct WmBackend {
    store: SendStore,
    env: FunctionEnv<WmEnv>,
    instance: wasmer::Instance,
    memory: Option<Memory>,
    /// [`Limits::call_deadline`] in nanoseconds.
    deadline: u64,
    slot: Arc<Slot>,
    /// Keeps the watchdog thread alive while the instance exists.
    _watchdog: Arc<Watchdog>,
}

fn i32_at(args: &[Val], i: usize) -> i32 {
    match args[i] {
        Val::I32(v) => v,
        _ => 0,
    }
}

impl GuestMemory for WmBackend {
    fn memory_size(&self) -> u64 {
        mem_size(self.memory.as_ref(), &self.store.0)
    }
    fn read_into(&self, ptr: u32, buf: &mut [u8]) -> Result<(), HostError> {
        mem_read(self.memory.as_ref(), &self.store.0, ptr, buf)
    }
    fn write(&mut self, ptr: u32, src: &[u8]) -> Result<(), HostError> {
        mem_write(self.memory.as_ref(), &self.store.0, ptr, src)
    }
}

impl Backend for WmBackend {
    const KIND: EngineKind = KIND;
    type Func = WmFunc;

    fn resolve(&mut self, name: &str) -> Option<(WmFunc, FuncType)> {
        let func = self.instance.exports.get_function(name).ok()?.clone();
        let store = &self.store.0;
        let fty = func.ty(store);
        let conv = |t: &Type| match t {
            Type::I32 => Some(ValType::I32),
            Type::I64 => Some(ValType::I64),
            Type::F32 => Some(ValType::F32),
            Type::F64 => Some(ValType::F64),
            _ => None,
        };
        let params: Option<Vec<_>> = fty.params().iter().map(conv).collect();
        let results: Option<Vec<_>> = fty.results().iter().map(conv).collect();
        let ty = FuncType::new(params?, results?);
        use ValType::*;
        let wf = match (ty.params.as_slice(), ty.results.as_slice()) {
            ([], []) => func.typed(store).ok().map(WmFunc::VV),
            ([], [I32]) => func.typed(store).ok().map(WmFunc::VI32),
            ([], [I64]) => func.typed(store).ok().map(WmFunc::VI64),
            ([I32], []) => func.typed(store).ok().map(WmFunc::I32V),
            ([I32], [I32]) => func.typed(store).ok().map(WmFunc::I32I32),
            ([I32, I32], []) => func.typed(store).ok().map(WmFunc::I32x2V),
            ([I32, I32], [I32]) => func.typed(store).ok().map(WmFunc::I32x2I32),
            ([I32, I32, I32], [I32]) => func.typed(store).ok().map(WmFunc::I32x3I32),
            _ => None,
        }
        .unwrap_or(WmFunc::Dyn(func));
        Some((wf, ty))
    }

    fn invoke(
        &mut self,
        f: &WmFunc,
        name: &str,
        args: &[Val],
        results: &mut [Val],
    ) -> Result<(), Trap> {
        self.slot.begin_call(self.deadline);
        let st = &mut self.store.0;
        let r = match f {
            WmFunc::VV(t) => t.call(st),
            WmFunc::VI32(t) => t.call(st).map(|v| results[0] = Val::I32(v)),
            WmFunc::VI64(t) => t.call(st).map(|v| results[0] = Val::I64(v)),
            WmFunc::I32V(t) => t.call(st, i32_at(args, 0)),
            WmFunc::I32I32(t) => t
                .call(st, i32_at(args, 0))
                .map(|v| results[0] = Val::I32(v)),
            WmFunc::I32x2V(t) => t.call(st, i32_at(args, 0), i32_at(args, 1)),
            WmFunc::I32x2I32(t) => t
                .call(st, i32_at(args, 0), i32_at(args, 1))
                .map(|v| results[0] = Val::I32(v)),
            WmFunc::I32x3I32(t) => t
                .call(st, i32_at(args, 0), i32_at(args, 1), i32_at(args, 2))
                .map(|v| results[0] = Val::I32(v)),
            WmFunc::Dyn(func) => {
                let r = call_dyn(func, st, name, args, results);
                self.slot.end_call();
                self.env.as_mut(&mut self.store.0).stdio.flush();
                return r;
            }
        };
        self.slot.end_call();
        // A line the guest left unfinished is logged when its call is over.
        self.env.as_mut(&mut self.store.0).stdio.flush();
        r.map_err(|e| map_err(e, name))
    }

    fn data(&mut self) -> &mut (dyn Any + Send) {
        self.env.as_mut(&mut self.store.0).user.as_mut()
    }
}

impl Artifact for Module {
    type Engine = wasmer::Engine;
    fn serialize(&self) -> Option<Vec<u8>> {
        Module::serialize(self).ok().map(|b| b.to_vec())
    }
    unsafe fn deserialize(engine: &wasmer::Engine, bytes: Vec<u8>) -> Option<Self> {
        // SAFETY: the caller guarantees `bytes` came from `Module::serialize`
        // of this wasmer version and configuration (the trait's contract).
        unsafe { Module::deserialize(engine, bytes) }.ok()
    }
}
