//! WebAssembly engines behind one object-safe interface.
//!
//! This crate is the only place in wasmgate that names wasmtime or wasmer
//! types. It knows nothing about HTTP. The interface has three levels, in the
//! spirit of wasmtime's own split:
//!
//! * [`Engine`]: process-wide, one per [`EngineKind`] and [`EngineOptions`];
//!   created with [`new_engine`].
//! * [`CompiledModule`]: one per plugin; compiled once (or loaded from the
//!   on-disk [cache](EngineOptions::cache_dir)) and holding what
//!   instantiation needs.
//! * [`Instance`]: one per guest instance; calls exports with typed
//!   [`Val`]s, reads and writes guest memory ([`GuestMemory`]), reaches
//!   per-instance host data.
//!
//! Host functions are written once, engine-neutrally, as a [`HostFunctions`]
//! table (typed with [`HostFunctions::func_wrap`], or dynamic with
//! [`HostFunctions::add`]); inside a host function the ABI code gets a [`Caller`] for memory
//! access, re-entrant guest calls and per-instance state. [`wasi`] is a
//! capability-less WASI preview 1 written on that table, and [`pool`] holds
//! the instance pooling primitives.
//!
//! Inside, each backend (`wasmtime_backend`, `wasmer_backend`) supplies only
//! what differs: compiling and linking, resolving an export and running one
//! call under the deadline, guest memory access. The rest is written once:
//! the export table and [`Instance`] implementation (`exports`), the compile
//! cache (`cache::load_or_compile`), typed host functions (`typed`).

#![warn(missing_docs)]

use std::any::Any;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod cache;
mod coarse;
mod exports;
mod info;
pub mod pool;
mod start;
mod typed;
pub mod wasi;
mod wasmer_backend;
mod wasmer_interrupt;
mod wasmtime_backend;

pub use info::{Export, ExportKind, Import, ImportKind, MissingImport, ModuleInfo};
pub use pool::{InstancePool, PoolError, PooledInstance, Slot, DEFAULT_IDLE_LIMIT};
pub use start::START_EXPORT;
pub use typed::{IntoHostFunc, WasmResults, WasmTy};

/// Which runtime runs a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EngineKind {
    /// Bytecode Alliance's wasmtime.
    Wasmtime,
    /// Wasmer with its Cranelift compiler (sys backend).
    Wasmer,
}

impl EngineKind {
    /// Both engines, handy for parity loops.
    pub const ALL: [EngineKind; 2] = [EngineKind::Wasmtime, EngineKind::Wasmer];

    /// The lower-case name used in configuration (`wasmtime` / `wasmer`).
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Wasmtime => "wasmtime",
            EngineKind::Wasmer => "wasmer",
        }
    }

    /// The version of the runtime crate this build links.
    pub fn runtime_version(self) -> &'static str {
        match self {
            EngineKind::Wasmtime => wasmtime_backend::VERSION,
            EngineKind::Wasmer => wasmer_backend::VERSION,
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error of [`EngineKind::from_str`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown engine `{0}` (expected `wasmtime` or `wasmer`)")]
pub struct UnknownEngine(pub String);

impl FromStr for EngineKind {
    type Err = UnknownEngine;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "wasmtime" => Ok(EngineKind::Wasmtime),
            "wasmer" => Ok(EngineKind::Wasmer),
            _ => Err(UnknownEngine(s.to_string())),
        }
    }
}

/// A WebAssembly number type (the only types the host interface uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValType {
    /// 32-bit integer.
    I32,
    /// 64-bit integer.
    I64,
    /// 32-bit float.
    F32,
    /// 64-bit float.
    F64,
}

impl fmt::Display for ValType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ValType::I32 => "i32",
            ValType::I64 => "i64",
            ValType::F32 => "f32",
            ValType::F64 => "f64",
        })
    }
}

/// A WebAssembly value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Val {
    /// 32-bit integer.
    I32(i32),
    /// 64-bit integer.
    I64(i64),
    /// 32-bit float.
    F32(f32),
    /// 64-bit float.
    F64(f64),
}

impl Val {
    /// The type of this value.
    pub fn ty(&self) -> ValType {
        match self {
            Val::I32(_) => ValType::I32,
            Val::I64(_) => ValType::I64,
            Val::F32(_) => ValType::F32,
            Val::F64(_) => ValType::F64,
        }
    }

    /// The zero value of a type.
    pub fn default_for(ty: ValType) -> Val {
        match ty {
            ValType::I32 => Val::I32(0),
            ValType::I64 => Val::I64(0),
            ValType::F32 => Val::F32(0.0),
            ValType::F64 => Val::F64(0.0),
        }
    }

    /// The value as `i32`, if it is one.
    pub fn i32(&self) -> Option<i32> {
        match self {
            Val::I32(v) => Some(*v),
            _ => None,
        }
    }

    /// The value as `i64`, if it is one.
    pub fn i64(&self) -> Option<i64> {
        match self {
            Val::I64(v) => Some(*v),
            _ => None,
        }
    }

    /// The value as `f32`, if it is one.
    pub fn f32(&self) -> Option<f32> {
        match self {
            Val::F32(v) => Some(*v),
            _ => None,
        }
    }

    /// The value as `f64`, if it is one.
    pub fn f64(&self) -> Option<f64> {
        match self {
            Val::F64(v) => Some(*v),
            _ => None,
        }
    }
}

/// A function signature.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct FuncType {
    /// Parameter types.
    pub params: Vec<ValType>,
    /// Result types.
    pub results: Vec<ValType>,
}

impl FuncType {
    /// Builds a signature from parameter and result types.
    pub fn new(params: impl Into<Vec<ValType>>, results: impl Into<Vec<ValType>>) -> Self {
        FuncType {
            params: params.into(),
            results: results.into(),
        }
    }
}

impl fmt::Display for FuncType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[ValType]| {
            v.iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        write!(f, "({}) -> ({})", list(&self.params), list(&self.results))
    }
}

/// Per-plugin resource limits, enforced the same way on both engines.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Maximum linear memory in bytes (rounded down to 64 KiB pages), at most
    /// [`MAX_MEMORY_BYTES`]; default [`DEFAULT_MAX_MEMORY_BYTES`].
    /// `memory.grow` beyond it returns -1; a module whose initial memory is
    /// larger fails to instantiate with [`TrapReason::MemoryLimit`]. It costs
    /// address space, not memory: pages are committed as the guest grows.
    pub max_memory_bytes: u64,
    /// CPU (wall-clock) deadline of one outermost guest call. A guest still
    /// running after it is stopped with [`TrapReason::Deadline`].
    pub call_deadline: Duration,
    /// Maximum stack the guest may use; deeper recursion traps with
    /// [`TrapReason::StackOverflow`]. Exact on wasmtime. On wasmer the guest
    /// runs on a separate stack of at least this size plus 64 KiB for host
    /// frames; wasmer 7.4 reuses cached stacks that are at least that large,
    /// so there the limit can be as large as the largest limit any plugin in
    /// the process uses. Runaway recursion traps on both.
    pub max_stack_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_memory_bytes: DEFAULT_MAX_MEMORY_BYTES,
            call_deadline: Duration::from_secs(1),
            max_stack_bytes: 512 << 10,
        }
    }
}

impl Limits {
    /// The memory cap in 64 KiB pages.
    pub fn max_memory_pages(&self) -> u64 {
        (self.max_memory_bytes / WASM_PAGE_SIZE).min(65536)
    }
}

/// Size of a WebAssembly page.
pub const WASM_PAGE_SIZE: u64 = 65536;

/// Default [`Limits::max_memory_bytes`]: 1 GiB, as Envoy's Wasm host allows.
/// Real plugins need more than a few dozen MiB (the Coraza WAF with the OWASP
/// Core Rule Set fails to start under 64 MiB).
pub const DEFAULT_MAX_MEMORY_BYTES: u64 = 1 << 30;

/// The largest [`Limits::max_memory_bytes`] accepted: 4 GiB, all a 32-bit
/// memory can address (what Traefik's wazero allows).
pub const MAX_MEMORY_BYTES: u64 = 4 << 30;

/// Most elements a guest table may have, on both engines: `table.grow` past
/// it returns -1, and a module declaring a larger minimum fails to
/// instantiate. Large Go programs have tables of tens of thousands of entries.
pub const MAX_TABLE_ELEMENTS: u32 = 1_000_000;

/// Export name in the [`Trap`] of a failing start section (the module's
/// core start function, run right after instantiation).
pub const START_SECTION: &str = "<start section>";

/// An error a host function returns; it becomes a trap of the calling
/// instance (and only that instance).
#[derive(Debug, Clone, thiserror::Error)]
pub enum HostError {
    /// A guest memory region outside linear memory.
    #[error("guest memory access out of bounds: ptr={ptr} len={len} memory_size={memory_size}")]
    OutOfBounds {
        /// Start of the region.
        ptr: u32,
        /// Length of the region.
        len: u64,
        /// Memory size in bytes at the time of the access.
        memory_size: u64,
    },
    /// The guest exports no memory named `memory`.
    #[error("guest exports no memory")]
    NoMemory,
    /// The guest asked to exit (WASI `proc_exit`): unwinds the guest and is
    /// reported as [`TrapReason::Exit`].
    #[error("guest exited with code {0}")]
    Exit(i32),
    /// The call's deadline ([`Caller::deadline`]) passed while the host
    /// function waited for the guest (WASI `poll_oneoff`); reported as
    /// [`TrapReason::Deadline`], as for a runaway guest.
    #[error("deadline exceeded")]
    Deadline,
    /// A guest call made from inside the host function trapped.
    #[error("nested guest call failed: {0}")]
    Nested(Box<Trap>),
    /// Anything else the ABI layer wants to report.
    #[error("{0}")]
    Message(String),
}

impl HostError {
    /// A free-form host error.
    pub fn msg(m: impl Into<String>) -> Self {
        HostError::Message(m.into())
    }
}

impl From<Trap> for HostError {
    fn from(t: Trap) -> Self {
        HostError::Nested(Box::new(t))
    }
}

/// Why a guest call stopped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TrapReason {
    /// Out-of-bounds memory (or table) access by the guest.
    #[error("out-of-bounds memory access")]
    OutOfBounds,
    /// `unreachable` executed.
    #[error("unreachable executed")]
    Unreachable,
    /// Stack exhausted (e.g. infinite recursion).
    #[error("stack overflow")]
    StackOverflow,
    /// The call ran past [`Limits::call_deadline`].
    #[error("deadline exceeded")]
    Deadline,
    /// The memory limit prevented instantiation.
    #[error("memory limit exceeded")]
    MemoryLimit,
    /// A host function returned an error.
    #[error("host error: {0}")]
    HostError(String),
    /// The guest exited (WASI `proc_exit`) with this code. `Exit(0)` from
    /// `_start` is success.
    #[error("guest exited with code {0}")]
    Exit(i32),
    /// Anything else (integer overflow, bad conversion, link error, ...).
    #[error("{0}")]
    Other(String),
}

/// A trap: which engine, which export, why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{engine}: export `{export}` trapped: {reason}")]
pub struct Trap {
    /// Engine that ran the guest.
    pub engine: EngineKind,
    /// Export that was called (or `<instantiate>` for instantiation).
    pub export: String,
    /// What happened.
    pub reason: TrapReason,
}

impl Trap {
    /// Builds a trap.
    pub fn new(engine: EngineKind, export: impl Into<String>, reason: TrapReason) -> Self {
        Trap {
            engine,
            export: export.into(),
            reason,
        }
    }

    /// True for `Exit(0)`: the guest exited successfully (e.g. TinyGo's
    /// `_start` calling `proc_exit(0)`).
    pub fn is_success_exit(&self) -> bool {
        self.reason == TrapReason::Exit(0)
    }
}

/// Export name used in traps raised while instantiating.
pub const INSTANTIATE: &str = "<instantiate>";

/// Errors of engine creation and module compilation.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The bytes are not a valid module (or WAT text).
    #[error("invalid module: {0}")]
    Invalid(String),
    /// The module imports functions the host does not provide.
    #[error("missing imports: {}", .0.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(", "))]
    MissingImports(Vec<MissingImport>),
    /// The engine failed to compile the module.
    #[error("{engine}: compilation failed: {message}")]
    Compile {
        /// Engine.
        engine: EngineKind,
        /// Engine message.
        message: String,
    },
    /// Bad engine configuration or limits.
    #[error("configuration: {0}")]
    Config(String),
    /// I/O while using the cache directory.
    #[error("cache i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Signature of a host function body.
pub type HostFn =
    dyn Fn(&mut dyn Caller, &[Val], &mut [Val]) -> Result<(), HostError> + Send + Sync;

/// One engine-neutral host function.
#[derive(Clone)]
pub struct HostFunc {
    /// Import module name (e.g. `env`, `http_handler`).
    pub module: String,
    /// Import field name.
    pub name: String,
    /// Signature.
    pub ty: FuncType,
    /// Body. `results` arrives filled with zeros of the right types.
    pub func: Arc<HostFn>,
}

impl fmt::Debug for HostFunc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostFunc({}.{} {})", self.module, self.name, self.ty)
    }
}

/// The table of host functions an ABI offers; each engine registers it.
#[derive(Clone, Debug, Default)]
pub struct HostFunctions(pub Vec<HostFunc>);

impl HostFunctions {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a function (replacing one with the same module and name).
    pub fn add(
        &mut self,
        module: &str,
        name: &str,
        ty: FuncType,
        func: impl Fn(&mut dyn Caller, &[Val], &mut [Val]) -> Result<(), HostError>
            + Send
            + Sync
            + 'static,
    ) -> &mut Self {
        self.push(HostFunc {
            module: module.to_string(),
            name: name.to_string(),
            ty,
            func: Arc::new(func),
        })
    }

    /// Adds a prepared [`HostFunc`] (replacing one with the same module and name).
    pub fn push(&mut self, f: HostFunc) -> &mut Self {
        self.0
            .retain(|g| !(g.module == f.module && g.name == f.name));
        self.0.push(f);
        self
    }

    /// Appends all functions of another table.
    pub fn extend(&mut self, other: HostFunctions) -> &mut Self {
        for f in other.0 {
            self.push(f);
        }
        self
    }

    /// Looks a function up by module and name.
    pub fn get(&self, module: &str, name: &str) -> Option<&HostFunc> {
        self.0.iter().find(|f| f.module == module && f.name == name)
    }

    /// Number of functions.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn check_range(ptr: u32, len: u64, memory_size: u64) -> Result<usize, HostError> {
    let end = ptr as u64 + len;
    if end > memory_size {
        return Err(HostError::OutOfBounds {
            ptr,
            len,
            memory_size,
        });
    }
    Ok(ptr as usize)
}

/// Bounds-checked access to a guest's exported `memory`, the same for a
/// host function ([`Caller`]) and for the embedder ([`Instance`]).
///
/// As a supertrait of both, its methods are callable on a `dyn Caller` or
/// `dyn Instance` without importing it (a trait object's supertrait methods
/// resolve like inherent ones).
pub trait GuestMemory {
    /// Current size of the guest's exported `memory` in bytes (0 if none).
    fn memory_size(&self) -> u64;
    /// Reads `buf.len()` bytes at `ptr`; out of bounds is an error, never a panic.
    fn read_into(&self, ptr: u32, buf: &mut [u8]) -> Result<(), HostError>;
    /// Writes `data` at `ptr`; out of bounds is an error, never a panic.
    fn write(&mut self, ptr: u32, data: &[u8]) -> Result<(), HostError>;

    /// Reads `len` bytes at `ptr` into a new vector.
    fn read(&self, ptr: u32, len: u32) -> Result<Vec<u8>, HostError> {
        // Checked first so a bogus length allocates nothing.
        check_range(ptr, len as u64, self.memory_size())?;
        let mut v = vec![0; len as usize];
        self.read_into(ptr, &mut v)?;
        Ok(v)
    }
    /// Reads a little-endian u32 at `ptr`.
    fn read_u32(&self, ptr: u32) -> Result<u32, HostError> {
        let mut b = [0; 4];
        self.read_into(ptr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    /// Writes a little-endian u32 at `ptr`.
    fn write_u32(&mut self, ptr: u32, v: u32) -> Result<(), HostError> {
        self.write(ptr, &v.to_le_bytes())
    }
    /// Writes a little-endian u64 at `ptr`.
    fn write_u64(&mut self, ptr: u32, v: u64) -> Result<(), HostError> {
        self.write(ptr, &v.to_le_bytes())
    }
}

/// What a host function can do with the instance that called it (guest
/// memory through [`GuestMemory`]).
pub trait Caller: GuestMemory {
    /// Engine running the guest.
    fn engine(&self) -> EngineKind;
    /// Calls a guest export re-entrantly (e.g. `malloc`). The deadline of the
    /// outer call keeps running.
    fn call(&mut self, export: &str, args: &[Val], results: &mut [Val]) -> Result<(), Trap>;
    /// The per-instance host data given to [`CompiledModule::instantiate`].
    fn data(&mut self) -> &mut (dyn Any + Send);
    /// The instance's WASI stdout/stderr line buffers (flushed by the engine
    /// when an outermost guest call returns and when the instance is dropped).
    fn stdio(&mut self) -> &mut wasi::StdioLines;
    /// When the running outermost call reaches [`Limits::call_deadline`]
    /// (`None` outside a call). A host function that waits (WASI
    /// `poll_oneoff`) waits at most until then and fails with
    /// [`HostError::Deadline`]: the engines interrupt guest code, not a host
    /// function sleeping on the guest's behalf.
    fn deadline(&self) -> Option<Instant>;
}

/// Engine options (one engine per kind and option set).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EngineOptions {
    /// Directory for compiled artifacts; `None` disables the cache.
    ///
    /// Loaded artifacts are native code, so the directory must be writable
    /// by the current user alone: a missing one is created with mode 0700;
    /// an existing one owned by another user or writable by group or others
    /// is not used (the engine logs a warning and compiles every module),
    /// and files in it that another user owns are never loaded.
    pub cache_dir: Option<PathBuf>,
    /// Most bytes of artifacts kept in [`EngineOptions::cache_dir`]; past it,
    /// each store removes the oldest artifacts (by modification time). An
    /// artifact larger than the cap is not kept. Default
    /// [`DEFAULT_CACHE_MAX_BYTES`].
    pub cache_max_bytes: u64,
    /// wasmtime only: use the pooling instance allocator (fast instantiation;
    /// reserves virtual memory for `pool_instances` slots up front).
    pub pooling: bool,
    /// wasmtime pooling: number of instance/memory slots of each pool.
    pub pool_instances: u32,
    /// The largest memory any plugin may get (default and at most
    /// [`MAX_MEMORY_BYTES`]). A plugin whose [`Limits::max_memory_bytes`]
    /// exceeds it is rejected at compile time, on both engines.
    ///
    /// With pooling, a pool slot reserves (address space only) the plugin's
    /// size class: its limit rounded up to a power of two, at least
    /// [`DEFAULT_MAX_MEMORY_BYTES`]; plugins of another class get their own
    /// pool, so slots × reservation stays near 1 TiB per pool for the default
    /// and 4 TiB for 4 GiB plugins (47-bit user address space: 128 TiB).
    pub pool_max_memory_bytes: u64,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            cache_dir: None,
            cache_max_bytes: DEFAULT_CACHE_MAX_BYTES,
            pooling: true,
            pool_instances: 128,
            pool_max_memory_bytes: MAX_MEMORY_BYTES,
        }
    }
}

/// Which wasmtime instance pool a plugin whose memory is limited to `max_memory_bytes` draws
/// on (its memory-size class, in bytes): with pooling, each class has a pool of its own of
/// [`EngineOptions::pool_instances`] slots (for each stack limit in use).
pub fn wasmtime_pool_class(max_memory_bytes: u64) -> u64 {
    wasmtime_backend::memory_class(max_memory_bytes)
}

/// Default [`EngineOptions::cache_max_bytes`]: 1 GiB, room for hundreds of
/// compiled plugins (a large one, such as the Coraza WAF, compiles to tens of MiB).
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 1 << 30;

/// A process-wide engine. Object safe; share it as `Arc<dyn Engine>`.
pub trait Engine: Send + Sync {
    /// Which runtime.
    fn kind(&self) -> EngineKind;
    /// Compiles (or loads from cache) a module given as binary or WAT text,
    /// links it against `host` and applies `limits`. Fails with
    /// [`EngineError::MissingImports`] if the module imports a function the
    /// table lacks.
    fn compile(
        &self,
        wasm: &[u8],
        host: Arc<HostFunctions>,
        limits: Limits,
    ) -> Result<Arc<dyn CompiledModule>, EngineError>;
}

/// A compiled, linked module, ready to instantiate cheaply.
pub trait CompiledModule: Send + Sync {
    /// Engine kind.
    fn engine(&self) -> EngineKind;
    /// Imports and exports.
    fn info(&self) -> &ModuleInfo;
    /// Limits applied to its instances.
    fn limits(&self) -> &Limits;
    /// True if the code came from the disk cache rather than the compiler.
    fn loaded_from_cache(&self) -> bool;
    /// Creates a fresh instance with `data` as its per-instance host data.
    /// Runs the module's start section (not `_start`) under the call deadline,
    /// after the instance and its exported memory are in place, so host
    /// functions called from it reach the memory as from any other export.
    fn instantiate(&self, data: Box<dyn Any + Send>) -> Result<Box<dyn Instance>, Trap>;
}

/// A cached handle to an export of one instance; cheap to clone and to call.
#[derive(Debug, Clone)]
pub struct ExportFunc {
    pub(crate) index: usize,
    pub(crate) owner: u64,
    pub(crate) name: Arc<str>,
    pub(crate) ty: Arc<FuncType>,
}

impl ExportFunc {
    /// Export name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Signature.
    pub fn ty(&self) -> &FuncType {
        &self.ty
    }
}

static NEXT_INSTANCE_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) fn next_instance_id() -> u64 {
    NEXT_INSTANCE_ID.fetch_add(1, Ordering::Relaxed)
}

/// One guest instance. Not shared between threads at once (`Send` only).
/// Guest memory through [`GuestMemory`].
pub trait Instance: GuestMemory + Send {
    /// Engine kind.
    fn engine(&self) -> EngineKind;
    /// Looks up an exported function once; keep the handle for repeated calls.
    /// Both hits and misses are remembered, so asking again costs a hash lookup.
    fn export(&mut self, name: &str) -> Option<ExportFunc>;
    /// Calls an export through its handle. `args` must match the signature and
    /// `results` must have the length of its results.
    fn call(&mut self, f: &ExportFunc, args: &[Val], results: &mut [Val]) -> Result<(), Trap>;
    /// The per-instance host data.
    fn data(&mut self) -> &mut (dyn Any + Send);
    /// True once any call trapped (other than `Exit(0)`) or [`Instance::poison`]
    /// was called; a pool throws such instances away.
    fn is_poisoned(&self) -> bool;
    /// Marks the instance as unusable.
    fn poison(&mut self);

    /// Looks the export up and calls it.
    fn call_by_name(&mut self, name: &str, args: &[Val], results: &mut [Val]) -> Result<(), Trap> {
        match self.export(name) {
            Some(f) => self.call(&f, args, results),
            None => Err(Trap::new(
                self.engine(),
                name,
                TrapReason::Other(format!("no exported function `{name}`")),
            )),
        }
    }
}

/// Creates an engine of the given kind. A cache directory that cannot be
/// created or is not safe to load from (see [`EngineOptions::cache_dir`])
/// is logged and left unused; it never fails the engine.
pub fn new_engine(kind: EngineKind, opts: EngineOptions) -> Result<Arc<dyn Engine>, EngineError> {
    let cache = opts.cache_dir.as_ref().and_then(|dir| {
        cache::Cache::open(dir, opts.cache_max_bytes)
            .map_err(|e| {
                tracing::warn!(
                    target: "wasmgate::cache",
                    dir = %dir.display(),
                    "compile cache not used: {e}; plugins are compiled at every start"
                )
            })
            .ok()
    });
    match kind {
        EngineKind::Wasmtime => Ok(Arc::new(wasmtime_backend::WtEngine::new(opts, cache)?)),
        EngineKind::Wasmer => Ok(Arc::new(wasmer_backend::WmEngine::new(opts, cache)?)),
    }
}

/// Checks `args` against a signature and `results` length.
pub(crate) fn check_call(
    engine: EngineKind,
    f: &ExportFunc,
    args: &[Val],
    results: &[Val],
) -> Result<(), Trap> {
    let ok = args.len() == f.ty.params.len()
        && results.len() == f.ty.results.len()
        && args.iter().zip(&f.ty.params).all(|(a, t)| a.ty() == *t);
    if ok {
        Ok(())
    } else {
        Err(Trap::new(
            engine,
            &*f.name,
            TrapReason::Other(format!(
                "signature mismatch: export is {}, called with {} args and {} result slots",
                f.ty,
                args.len(),
                results.len()
            )),
        ))
    }
}

/// Parses WAT text to binary if needed.
pub(crate) fn to_binary(wasm: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, EngineError> {
    if wasm.starts_with(b"\0asm") {
        Ok(std::borrow::Cow::Borrowed(wasm))
    } else {
        wat::parse_bytes(wasm)
            .map(|c| std::borrow::Cow::Owned(c.into_owned()))
            .map_err(|e| EngineError::Invalid(e.to_string()))
    }
}

/// Builds the module info and checks imports and limits; shared by both backends.
pub(crate) fn prepare(
    wasm: &[u8],
    host: &HostFunctions,
    limits: &Limits,
    opts: &EngineOptions,
) -> Result<ModuleInfo, EngineError> {
    let info = ModuleInfo::parse(wasm)?;
    let missing = info.missing_imports(host);
    if !missing.is_empty() {
        return Err(EngineError::MissingImports(missing));
    }
    if limits.call_deadline.is_zero() {
        return Err(EngineError::Config("call_deadline must be > 0".into()));
    }
    // Refused here on both engines (wasmtime's pooling allocator would refuse
    // it at compile time, wasmer when instantiating).
    if let Some(min) = info.table_min.filter(|m| *m > MAX_TABLE_ELEMENTS as u64) {
        return Err(EngineError::Config(format!(
            "table of {min} elements exceeds the limit of {MAX_TABLE_ELEMENTS} elements"
        )));
    }
    let cap = opts.pool_max_memory_bytes.min(MAX_MEMORY_BYTES);
    if limits.max_memory_bytes > cap {
        return Err(EngineError::Config(format!(
            "max_memory_bytes {} exceeds the maximum of {cap} bytes{}",
            limits.max_memory_bytes,
            if cap == MAX_MEMORY_BYTES {
                " (4 GiB, all a 32-bit memory can address)"
            } else {
                " (EngineOptions::pool_max_memory_bytes)"
            }
        )));
    }
    Ok(info)
}

/// The bytes an engine compiles: `bin` with its start section turned into an
/// export (see [`start`]) when `info` says it has one.
pub(crate) fn compile_input<'a>(
    bin: &'a [u8],
    info: &ModuleInfo,
) -> Result<std::borrow::Cow<'a, [u8]>, EngineError> {
    if info.start.is_none() {
        return Ok(std::borrow::Cow::Borrowed(bin));
    }
    Ok(match start::hoist(bin)? {
        Some(v) => std::borrow::Cow::Owned(v),
        None => std::borrow::Cow::Borrowed(bin),
    })
}

/// Runs the start section of a fresh instance (exported by the rewrite).
/// `proc_exit(0)` there is success, as from `_start`; any other trap fails
/// the instantiation and names [`START_SECTION`].
pub(crate) fn run_start_section(inst: &mut dyn Instance) -> Result<(), Trap> {
    match inst.call_by_name(START_EXPORT, &[], &mut []) {
        Ok(()) => Ok(()),
        Err(t) if t.is_success_exit() => Ok(()),
        Err(mut t) => {
            t.export = START_SECTION.to_string();
            Err(t)
        }
    }
}
