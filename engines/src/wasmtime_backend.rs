//! wasmtime behind the engine-neutral interface.
//!
//! Deadlines use epoch interruption: a ticker thread per engine bumps the
//! epoch every [`TICK`]; each outermost call sets its store's epoch deadline.
//! The stack limit is an engine-wide wasmtime setting, so one wasmtime engine
//! is kept per distinct stack limit (usually just one). Instantiation goes
//! through a pre-linked `InstancePre` and, by default, the pooling allocator.
//! A pool slot's memory reservation is a size class of the plugin's memory
//! limit ([`memory_class`]), so there is also one engine (and pool) per class
//! in use: 1 GiB for every plugin within the default limit.

use std::any::Any;
use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use wasmtime::{
    AsContext, AsContextMut, Config, Func, InstanceAllocationStrategy, InstancePre, Linker, Memory,
    Module, PoolingAllocationConfig, ResourceLimiter, Store, TypedFunc, ValRaw,
};

use crate::cache::{self, Artifact, Cache};
use crate::coarse;
use crate::exports::{Backend, EngineInstance};
use crate::wasi::StdioLines;
use crate::{
    check_range, compile_input, prepare, run_start_section, to_binary, Caller, CompiledModule,
    EngineError, EngineKind, EngineOptions, FuncType, GuestMemory, HostError, HostFunctions,
    ImportKind, Instance, Limits, ModuleInfo, Trap, TrapReason, Val, ValType,
    DEFAULT_MAX_MEMORY_BYTES, INSTANTIATE, MAX_MEMORY_BYTES, MAX_TABLE_ELEMENTS,
};

/// wasmtime version this crate links.
pub(crate) const VERSION: &str = "48.0.0";
const KIND: EngineKind = EngineKind::Wasmtime;
/// Epoch tick period: a runaway guest stops within one tick of its deadline.
pub(crate) const TICK: Duration = Duration::from_millis(5);

struct Shared {
    opts: EngineOptions,
    /// The compile cache, if its directory is safe to use.
    cache: Option<Cache>,
    /// By (stack limit, memory class).
    engines: Mutex<HashMap<(usize, u64), wasmtime::Engine>>,
}

pub(crate) struct WtEngine {
    shared: Arc<Shared>,
}

impl WtEngine {
    pub(crate) fn new(opts: EngineOptions, cache: Option<Cache>) -> Result<Self, EngineError> {
        let shared = Arc::new(Shared {
            opts,
            cache,
            engines: Mutex::new(HashMap::new()),
        });
        coarse::refresh();
        // Fail early on a bad configuration.
        let defaults = crate::Limits::default();
        engine_for(
            &shared,
            defaults.max_stack_bytes,
            memory_class(defaults.max_memory_bytes),
        )?;
        let weak: Weak<Shared> = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("wasmtime-epoch".into())
            .spawn(move || {
                // One increment per wake-up, never more: each comes at least a
                // TICK after the last, so a call is never stopped before its
                // deadline. Catching up with the wall clock after the thread
                // was starved (a loaded machine) would stop the calls that
                // began meanwhile early; under starvation deadlines run late.
                loop {
                    std::thread::sleep(TICK);
                    let Some(s) = weak.upgrade() else { break };
                    coarse::refresh();
                    for e in s.engines.lock().unwrap_or_else(|p| p.into_inner()).values() {
                        e.increment_epoch();
                    }
                }
            })
            .map_err(EngineError::Io)?;
        Ok(WtEngine { shared })
    }
}

fn fingerprint(opts: &EngineOptions, stack: usize, class: u64) -> String {
    format!(
        "wasmtime {VERSION} {} stack={stack} pooling={} pool_mem={class} tables={MAX_TABLE_ELEMENTS} epoch opt=speed {}",
        std::env::consts::ARCH,
        opts.pooling,
        crate::start::REWRITE_TAG,
    )
}

/// The memory reservation of a pool slot for a plugin limited to `max_bytes`:
/// the limit rounded up to a power of two, between 1 GiB and 4 GiB. Pool
/// slots reserve address space, not memory, so the default class costs about
/// 1 TiB of address space for 1024 slots (plus guard regions); the 4 GiB
/// class, 4 TiB, and also lets Cranelift drop bounds checks.
pub(crate) fn memory_class(max_bytes: u64) -> u64 {
    max_bytes
        .max(DEFAULT_MAX_MEMORY_BYTES)
        .next_power_of_two()
        .min(MAX_MEMORY_BYTES)
}

fn engine_for(shared: &Shared, stack: usize, class: u64) -> Result<wasmtime::Engine, EngineError> {
    let mut map = shared.engines.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(e) = map.get(&(stack, class)) {
        return Ok(e.clone());
    }
    let opts = &shared.opts;
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.max_wasm_stack(stack);
    config.cranelift_opt_level(wasmtime::OptLevel::Speed);
    if opts.pooling {
        let mut p = PoolingAllocationConfig::default();
        p.total_core_instances(opts.pool_instances)
            .total_memories(opts.pool_instances)
            .total_tables(opts.pool_instances)
            .table_elements(MAX_TABLE_ELEMENTS as usize)
            .max_memory_size(class as usize);
        config.memory_reservation(class);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
    }
    let e = wasmtime::Engine::new(&config)
        .map_err(|e| EngineError::Config(format!("wasmtime: {e:#}")))?;
    map.insert((stack, class), e.clone());
    Ok(e)
}

pub(crate) fn to_wt_ty(t: ValType) -> wasmtime::ValType {
    match t {
        ValType::I32 => wasmtime::ValType::I32,
        ValType::I64 => wasmtime::ValType::I64,
        ValType::F32 => wasmtime::ValType::F32,
        ValType::F64 => wasmtime::ValType::F64,
    }
}

fn to_wt(v: Val) -> wasmtime::Val {
    match v {
        Val::I32(x) => wasmtime::Val::I32(x),
        Val::I64(x) => wasmtime::Val::I64(x),
        Val::F32(x) => wasmtime::Val::F32(x.to_bits()),
        Val::F64(x) => wasmtime::Val::F64(x.to_bits()),
    }
}

fn from_wt(v: &wasmtime::Val) -> Val {
    match v {
        wasmtime::Val::I32(x) => Val::I32(*x),
        wasmtime::Val::I64(x) => Val::I64(*x),
        wasmtime::Val::F32(x) => Val::F32(f32::from_bits(*x)),
        wasmtime::Val::F64(x) => Val::F64(f64::from_bits(*x)),
        _ => Val::I32(0),
    }
}

fn map_err(err: &wasmtime::Error, export: &str) -> Trap {
    let reason = if let Some(h) = err.downcast_ref::<HostError>() {
        match h {
            HostError::Exit(c) => TrapReason::Exit(*c),
            HostError::Deadline => TrapReason::Deadline,
            HostError::Nested(t) => t.reason.clone(),
            other => TrapReason::HostError(other.to_string()),
        }
    } else if let Some(t) = err.downcast_ref::<wasmtime::Trap>() {
        match t {
            wasmtime::Trap::MemoryOutOfBounds
            | wasmtime::Trap::HeapMisaligned
            | wasmtime::Trap::TableOutOfBounds => TrapReason::OutOfBounds,
            wasmtime::Trap::UnreachableCodeReached => TrapReason::Unreachable,
            wasmtime::Trap::StackOverflow => TrapReason::StackOverflow,
            wasmtime::Trap::Interrupt => TrapReason::Deadline,
            other => TrapReason::Other(other.to_string()),
        }
    } else {
        TrapReason::Other(format!("{err:#}"))
    };
    Trap::new(KIND, export, reason)
}

struct MemLimiter {
    max_bytes: usize,
}

impl ResourceLimiter for MemLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.max_bytes)
    }
    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS as usize)
    }
}

struct WtData {
    user: Box<dyn Any + Send>,
    stdio: StdioLines,
    limiter: MemLimiter,
    memory: Option<Memory>,
    instance: Option<wasmtime::Instance>,
    /// Wall-clock deadline of the running outermost call in [`coarse`]
    /// units (0: none), for host functions that wait ([`Caller::deadline`]).
    deadline: u64,
}

struct WtCaller<'a, 'b> {
    c: &'a mut wasmtime::Caller<'b, WtData>,
}

/// Guest memory of a wasmtime store (the instance's exported `memory`,
/// kept in the store data); shared by [`WtCaller`] and [`WtBackend`].
fn mem_size(store: impl AsContext<Data = WtData>) -> u64 {
    let s = store.as_context();
    s.data().memory.map_or(0, |m| m.data_size(&s) as u64)
}

fn mem_read(
    store: impl AsContext<Data = WtData>,
    ptr: u32,
    buf: &mut [u8],
) -> Result<(), HostError> {
    let s = store.as_context();
    let data = s.data().memory.ok_or(HostError::NoMemory)?.data(&s);
    let start = check_range(ptr, buf.len() as u64, data.len() as u64)?;
    buf.copy_from_slice(&data[start..start + buf.len()]);
    Ok(())
}

fn mem_write(
    mut store: impl AsContextMut<Data = WtData>,
    ptr: u32,
    src: &[u8],
) -> Result<(), HostError> {
    let mut s = store.as_context_mut();
    let m = s.data().memory.ok_or(HostError::NoMemory)?;
    let data = m.data_mut(&mut s);
    let start = check_range(ptr, src.len() as u64, data.len() as u64)?;
    data[start..start + src.len()].copy_from_slice(src);
    Ok(())
}

impl GuestMemory for WtCaller<'_, '_> {
    fn memory_size(&self) -> u64 {
        mem_size(&*self.c)
    }
    fn read_into(&self, ptr: u32, buf: &mut [u8]) -> Result<(), HostError> {
        mem_read(&*self.c, ptr, buf)
    }
    fn write(&mut self, ptr: u32, src: &[u8]) -> Result<(), HostError> {
        mem_write(&mut *self.c, ptr, src)
    }
}

impl Caller for WtCaller<'_, '_> {
    fn engine(&self) -> EngineKind {
        KIND
    }
    fn call(&mut self, export: &str, args: &[Val], results: &mut [Val]) -> Result<(), Trap> {
        let inst = self.c.data().instance.ok_or_else(|| {
            Trap::new(KIND, export, TrapReason::Other("instance not ready".into()))
        })?;
        let func = inst.get_func(&mut *self.c, export).ok_or_else(|| {
            Trap::new(
                KIND,
                export,
                TrapReason::Other(format!("no exported function `{export}`")),
            )
        })?;
        call_dyn(&func, &mut *self.c, export, args, results)
    }
    fn data(&mut self) -> &mut (dyn Any + Send) {
        self.c.data_mut().user.as_mut()
    }
    fn stdio(&mut self) -> &mut StdioLines {
        &mut self.c.data_mut().stdio
    }
    fn deadline(&self) -> Option<Instant> {
        match self.c.data().deadline {
            0 => None,
            d => Some(coarse::instant(d)),
        }
    }
}

fn call_dyn(
    func: &Func,
    mut store: impl AsContextMut<Data = WtData>,
    export: &str,
    args: &[Val],
    results: &mut [Val],
) -> Result<(), Trap> {
    let wargs: Vec<wasmtime::Val> = args.iter().map(|v| to_wt(*v)).collect();
    let mut wres = vec![wasmtime::Val::I32(0); results.len()];
    func.call(&mut store, &wargs, &mut wres)
        .map_err(|e| map_err(&e, export))?;
    for (d, s) in results.iter_mut().zip(&wres) {
        *d = from_wt(s);
    }
    Ok(())
}

impl crate::Engine for WtEngine {
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
        let opts = &self.shared.opts;
        let info = prepare(&bin, &host, &limits, opts)?;
        let class = memory_class(limits.max_memory_bytes);
        let engine = engine_for(&self.shared, limits.max_stack_bytes, class)?;
        let cerr = |e: wasmtime::Error| EngineError::Compile {
            engine: KIND,
            message: format!("{e:#}"),
        };
        let key = format!(
            "{} {}",
            info.sha256,
            fingerprint(opts, limits.max_stack_bytes, class)
        );
        let (module, from_cache) = cache::load_or_compile(
            self.shared.cache.as_ref(),
            &engine,
            "wasmtime",
            &key,
            || Module::new(&engine, &compile_input(&bin, &info)?).map_err(cerr),
        )?;
        let mut linker: Linker<WtData> = Linker::new(&engine);
        linker.allow_shadowing(true);
        for imp in &info.imports {
            if let (ImportKind::Func(_), Some(hf)) = (&imp.kind, host.get(&imp.module, &imp.name)) {
                let ty = wasmtime::FuncType::new(
                    &engine,
                    hf.ty.params.iter().map(|t| to_wt_ty(*t)),
                    hf.ty.results.iter().map(|t| to_wt_ty(*t)),
                );
                let f = hf.func.clone();
                let pty = hf.ty.params.clone();
                let rty = hf.ty.results.clone();
                let trampoline = move |mut caller: wasmtime::Caller<'_, WtData>,
                                       space: &mut [MaybeUninit<ValRaw>]|
                      -> wasmtime::Result<()> {
                    let (np, nr) = (pty.len(), rty.len());
                    let mut buf = [Val::I32(0); 16];
                    let mut heap;
                    let vals: &mut [Val] = if np + nr <= 16 {
                        &mut buf[..np + nr]
                    } else {
                        heap = vec![Val::I32(0); np + nr];
                        &mut heap
                    };
                    let (a, r) = vals.split_at_mut(np);
                    for ((d, t), raw) in a.iter_mut().zip(&pty).zip(space.iter()) {
                        // SAFETY: wasmtime initialises the first `np` slots with
                        // the parameters of the signature built from `pty`.
                        let raw = unsafe { raw.assume_init_ref() };
                        *d = match t {
                            ValType::I32 => Val::I32(raw.get_i32()),
                            ValType::I64 => Val::I64(raw.get_i64()),
                            ValType::F32 => Val::F32(f32::from_bits(raw.get_f32())),
                            ValType::F64 => Val::F64(f64::from_bits(raw.get_f64())),
                        };
                    }
                    for (d, t) in r.iter_mut().zip(&rty) {
                        *d = Val::default_for(*t);
                    }
                    let mut c = WtCaller { c: &mut caller };
                    f(&mut c, a, r).map_err(wasmtime::Error::new)?;
                    for ((slot, v), t) in space.iter_mut().zip(r.iter()).zip(&rty) {
                        if v.ty() != *t {
                            return Err(wasmtime::Error::new(HostError::msg(format!(
                                "host function returned {} where {t} was declared",
                                v.ty()
                            ))));
                        }
                        *slot = MaybeUninit::new(match *v {
                            Val::I32(x) => ValRaw::i32(x),
                            Val::I64(x) => ValRaw::i64(x),
                            Val::F32(x) => ValRaw::f32(x.to_bits()),
                            Val::F64(x) => ValRaw::f64(x.to_bits()),
                        });
                    }
                    Ok(())
                };
                // SAFETY: `ty` is built from `pty`/`rty`, and the trampoline
                // reads exactly those parameter types and writes exactly those
                // result types (checked above) into `space`, whose length
                // wasmtime makes max(params, results).
                unsafe { linker.func_new_unchecked(&imp.module, &imp.name, ty, trampoline) }
                    .map_err(cerr)?;
            }
        }
        let pre = linker.instantiate_pre(&module).map_err(cerr)?;
        Ok(Arc::new(WtModule {
            shared: self.shared.clone(),
            engine,
            start: info.start.is_some(),
            info,
            deadline_ticks: deadline_ticks(limits.call_deadline),
            limits,
            from_cache,
            pre,
        }))
    }
}

fn deadline_ticks(d: Duration) -> u64 {
    // The epoch may tick right after the deadline is set, and every later tick
    // comes at least a TICK after the one before: with two extra ticks the
    // guest runs at least `d`; it stops within about `d + 3 * TICK` plus the
    // ticker's wake-up delays.
    (d.as_nanos().div_ceil(TICK.as_nanos()) as u64) + 2
}

/// The call deadline as host functions see it, added to the coarse clock
/// when a call starts: the clock may lag by a tick, so one tick is added (as
/// the epoch deadline adds two); a waiting host function returns no earlier
/// than about `d` after the call started.
fn deadline_nanos(d: Duration) -> u64 {
    (d + TICK).as_nanos().min(u64::MAX as u128 / 2) as u64
}

struct WtModule {
    /// Keeps the epoch ticker alive while the module exists.
    shared: Arc<Shared>,
    engine: wasmtime::Engine,
    /// The module had a start section, now exported (see [`crate::start`]).
    start: bool,
    info: ModuleInfo,
    limits: Limits,
    deadline_ticks: u64,
    from_cache: bool,
    pre: InstancePre<WtData>,
}

impl CompiledModule for WtModule {
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
        let mut store = Store::new(
            &self.engine,
            WtData {
                user: data,
                stdio: StdioLines::default(),
                limiter: MemLimiter {
                    max_bytes: (self.limits.max_memory_pages() * crate::WASM_PAGE_SIZE) as usize,
                },
                memory: None,
                instance: None,
                deadline: 0,
            },
        );
        store.limiter(|d| &mut d.limiter);
        store.set_epoch_deadline(self.deadline_ticks);
        let inst = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| map_err(&e, INSTANTIATE))?;
        let memory = inst.get_memory(&mut store, "memory");
        store.data_mut().memory = memory;
        store.data_mut().instance = Some(inst);
        let mut inst: Box<dyn Instance> = Box::new(EngineInstance::new(WtBackend {
            store,
            instance: inst,
            deadline_ticks: self.deadline_ticks,
            deadline_nanos: deadline_nanos(self.limits.call_deadline),
            _shared: self.shared.clone(),
        }));
        if self.start {
            run_start_section(inst.as_mut())?;
        }
        Ok(inst)
    }
}

enum WtFunc {
    VV(TypedFunc<(), ()>),
    VI32(TypedFunc<(), i32>),
    VI64(TypedFunc<(), i64>),
    I32V(TypedFunc<i32, ()>),
    I32I32(TypedFunc<i32, i32>),
    I32x2V(TypedFunc<(i32, i32), ()>),
    I32x2I32(TypedFunc<(i32, i32), i32>),
    /// proxy-wasm's stream callbacks: (context, size or count, end_of_stream) -> action.
    I32x3I32(TypedFunc<(i32, i32, i32), i32>),
    Dyn(Func),
}

struct WtBackend {
    store: Store<WtData>,
    instance: wasmtime::Instance,
    deadline_ticks: u64,
    /// [`Limits::call_deadline`] plus a tick, see [`deadline_nanos`].
    deadline_nanos: u64,
    /// Keeps the epoch ticker alive while the instance exists.
    _shared: Arc<Shared>,
}

fn i32_at(args: &[Val], i: usize) -> i32 {
    match args[i] {
        Val::I32(v) => v,
        _ => 0,
    }
}

impl GuestMemory for WtBackend {
    fn memory_size(&self) -> u64 {
        mem_size(&self.store)
    }
    fn read_into(&self, ptr: u32, buf: &mut [u8]) -> Result<(), HostError> {
        mem_read(&self.store, ptr, buf)
    }
    fn write(&mut self, ptr: u32, src: &[u8]) -> Result<(), HostError> {
        mem_write(&mut self.store, ptr, src)
    }
}

impl Backend for WtBackend {
    const KIND: EngineKind = KIND;
    type Func = WtFunc;

    fn resolve(&mut self, name: &str) -> Option<(WtFunc, FuncType)> {
        let func = self.instance.get_func(&mut self.store, name)?;
        let fty = func.ty(&self.store);
        let conv = |t: wasmtime::ValType| match t {
            wasmtime::ValType::I32 => Some(ValType::I32),
            wasmtime::ValType::I64 => Some(ValType::I64),
            wasmtime::ValType::F32 => Some(ValType::F32),
            wasmtime::ValType::F64 => Some(ValType::F64),
            _ => None,
        };
        let params: Option<Vec<_>> = fty.params().map(conv).collect();
        let results: Option<Vec<_>> = fty.results().map(conv).collect();
        let ty = FuncType::new(params?, results?);
        use ValType::*;
        let s = &self.store;
        let wf = match (ty.params.as_slice(), ty.results.as_slice()) {
            ([], []) => func.typed(s).ok().map(WtFunc::VV),
            ([], [I32]) => func.typed(s).ok().map(WtFunc::VI32),
            ([], [I64]) => func.typed(s).ok().map(WtFunc::VI64),
            ([I32], []) => func.typed(s).ok().map(WtFunc::I32V),
            ([I32], [I32]) => func.typed(s).ok().map(WtFunc::I32I32),
            ([I32, I32], []) => func.typed(s).ok().map(WtFunc::I32x2V),
            ([I32, I32], [I32]) => func.typed(s).ok().map(WtFunc::I32x2I32),
            ([I32, I32, I32], [I32]) => func.typed(s).ok().map(WtFunc::I32x3I32),
            _ => None,
        }
        .unwrap_or(WtFunc::Dyn(func));
        Some((wf, ty))
    }

    fn invoke(
        &mut self,
        f: &WtFunc,
        name: &str,
        args: &[Val],
        results: &mut [Val],
    ) -> Result<(), Trap> {
        self.store.set_epoch_deadline(self.deadline_ticks);
        self.store.data_mut().deadline = coarse::now() + self.deadline_nanos;
        let st = &mut self.store;
        let r = match f {
            WtFunc::VV(t) => t.call(st, ()),
            WtFunc::VI32(t) => t.call(st, ()).map(|v| results[0] = Val::I32(v)),
            WtFunc::VI64(t) => t.call(st, ()).map(|v| results[0] = Val::I64(v)),
            WtFunc::I32V(t) => t.call(st, i32_at(args, 0)),
            WtFunc::I32I32(t) => t
                .call(st, i32_at(args, 0))
                .map(|v| results[0] = Val::I32(v)),
            WtFunc::I32x2V(t) => t.call(st, (i32_at(args, 0), i32_at(args, 1))),
            WtFunc::I32x2I32(t) => t
                .call(st, (i32_at(args, 0), i32_at(args, 1)))
                .map(|v| results[0] = Val::I32(v)),
            WtFunc::I32x3I32(t) => t
                .call(st, (i32_at(args, 0), i32_at(args, 1), i32_at(args, 2)))
                .map(|v| results[0] = Val::I32(v)),
            WtFunc::Dyn(func) => {
                let r = call_dyn(func, &mut self.store, name, args, results);
                self.store.data_mut().stdio.flush();
                return r;
            }
        };
        // A line the guest left unfinished is logged when its call is over.
        self.store.data_mut().stdio.flush();
        r.map_err(|e| map_err(&e, name))
    }

    fn data(&mut self) -> &mut (dyn Any + Send) {
        self.store.data_mut().user.as_mut()
    }
}

impl Artifact for Module {
    type Engine = wasmtime::Engine;
    fn serialize(&self) -> Option<Vec<u8>> {
        Module::serialize(self).ok()
    }
    unsafe fn deserialize(engine: &wasmtime::Engine, bytes: Vec<u8>) -> Option<Self> {
        // SAFETY: the caller guarantees `bytes` came from `Module::serialize`
        // of this wasmtime version and configuration (the trait's contract).
        unsafe { Module::deserialize(engine, &bytes) }.ok()
    }
}
