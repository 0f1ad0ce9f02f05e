//! The proxy-wasm host functions (module `env`), written once against the
//! engine-neutral [`Caller`], one file per family (as wasmtime's WASI crate splits its
//! families): [`logs`] (logs, time, ticks, contexts, status), [`buffers`], [`maps`] (header
//! maps), [`properties`], [`stream`] (stream control, local responses), [`calls`] (http
//! calls; gRPC and foreign functions answer UNIMPLEMENTED), [`shared`] (shared data and
//! queues), [`metrics`]; WASI's environment is here.
//!
//! Every entry is tagged with the ABI version that introduced it (and the last
//! one that has it), Kong style; [`functions`] links exactly one version's set.
//! Guest mistakes answer with the spec's statuses: a pointer or length outside
//! linear memory is `INVALID_MEMORY_ACCESS`. Only a failing guest allocator
//! (a trap inside `malloc`) traps the calling instance. A call that would make the host hold
//! more than `maxHostBytes` for the guest (see [`crate::guest::HostBudget`]) is refused with
//! [`OVER_BUDGET`] and changes nothing.
//!
//! Host functions act on the VM's effective context: the stream (or root) whose callback
//! is running, or the one `proxy_set_effective_context` switched to.

pub mod buffers;
pub mod calls;
pub mod logs;
pub mod maps;
pub mod metrics;
pub mod properties;
pub mod shared;
pub mod stream;

use wasmgate_engines::{
    wasi, Caller, FuncType, HostError, HostFunc, HostFunctions, Val, ValType, WasmTy,
};

use super::abi::{status, AbiVersion, MODULE};
use super::pairs::HeaderPairs;
use super::serial;
use super::state::VmState;

pub use self::logs::min_log_level;

/// The status of a call refused because the host would hold more than `maxHostBytes` for the
/// guest: INTERNAL_FAILURE, the status the spec gives a host that cannot do what was asked
/// (and the one the other host-side caps answer).
pub const OVER_BUDGET: i32 = status::INTERNAL_FAILURE;

/// What every family file uses.
mod prelude {
    pub(super) use super::super::abi::{
        buffer, log_level, map, status, stream, AbiVersion, MetricKind,
    };
    pub(super) use super::super::pairs::HeaderPairs;
    pub(super) use super::super::serial;
    pub(super) use super::super::state::{
        Callback, Direction, LocalResponse, PendingCall, VmState,
    };
    pub(super) use super::{out, rd, ser, state, Table, OVER_BUDGET};
    pub(super) use wasmgate_engines::Caller;
}

/// Why a host function stops early: a status for the guest, or a trap.
pub(crate) enum Fail {
    Status(i32),
    Trap(HostError),
}

impl From<HostError> for Fail {
    fn from(e: HostError) -> Self {
        match e {
            HostError::OutOfBounds { .. } | HostError::NoMemory => {
                Fail::Status(status::INVALID_MEMORY_ACCESS)
            }
            other => Fail::Trap(other),
        }
    }
}

/// One host function of the table, with the versions that have it.
pub struct Def {
    /// Import name.
    pub name: &'static str,
    /// First version with it.
    pub since: AbiVersion,
    /// Last version with it (`None`: still there).
    pub until: Option<AbiVersion>,
    /// Parameter types (the result is always one i32 status).
    pub params: Vec<ValType>,
    func: HostFunc,
}

impl Def {
    /// Whether `v` links this function.
    pub fn in_version(&self, v: AbiVersion) -> bool {
        v >= self.since && self.until.is_none_or(|u| v <= u)
    }
}

/// A proxy-wasm host function body: `Fn(&mut dyn Caller, A1, .., An) -> Result<i32, Fail>`
/// with typed arguments (the wasm signature comes from them, through
/// [`HostFunctions::func_wrap`]); the result is the status, a [`Fail`] a status or a trap.
pub(crate) trait StatusFn<Params>: Send + Sync + 'static {
    /// The engine-neutral host function `env.name`.
    fn host_func(self, name: &str) -> HostFunc;
}

macro_rules! status_fn {
    ($($a:ident $v:ident),*) => {
        impl<F, $($a: WasmTy),*> StatusFn<($($a,)*)> for F
        where
            F: Fn(&mut dyn Caller, $($a),*) -> Result<i32, Fail> + Send + Sync + 'static,
        {
            fn host_func(self, name: &str) -> HostFunc {
                let mut t = HostFunctions::new();
                t.func_wrap(
                    MODULE,
                    name,
                    move |c: &mut dyn Caller, $($v: $a),*| -> Result<i32, HostError> {
                        match self(c, $($v),*) {
                            Ok(s) | Err(Fail::Status(s)) => Ok(s),
                            Err(Fail::Trap(e)) => Err(e),
                        }
                    },
                );
                t.0.pop().expect("func_wrap added it")
            }
        }
    };
}

status_fn!();
status_fn!(A1 a1);
status_fn!(A1 a1, A2 a2);
status_fn!(A1 a1, A2 a2, A3 a3);
status_fn!(A1 a1, A2 a2, A3 a3, A4 a4);
status_fn!(A1 a1, A2 a2, A3 a3, A4 a4, A5 a5);
status_fn!(A1 a1, A2 a2, A3 a3, A4 a4, A5 a5, A6 a6);
status_fn!(A1 a1, A2 a2, A3 a3, A4 a4, A5 a5, A6 a6, A7 a7);
status_fn!(A1 a1, A2 a2, A3 a3, A4 a4, A5 a5, A6 a6, A7 a7, A8 a8);
status_fn!(A1 a1, A2 a2, A3 a3, A4 a4, A5 a5, A6 a6, A7 a7, A8 a8, A9 a9);
status_fn!(A1 a1, A2 a2, A3 a3, A4 a4, A5 a5, A6 a6, A7 a7, A8 a8, A9 a9, A10 a10);
status_fn!(A1 a1, A2 a2, A3 a3, A4 a4, A5 a5, A6 a6, A7 a7, A8 a8, A9 a9, A10 a10, A11 a11);
status_fn!(
    A1 a1, A2 a2, A3 a3, A4 a4, A5 a5, A6 a6, A7 a7, A8 a8, A9 a9, A10 a10, A11 a11, A12 a12
);

/// The table the families fill.
pub(crate) struct Table(Vec<Def>);

impl Table {
    /// Adds `env.name`, linked by the versions `since..=until`.
    pub(crate) fn def<P>(
        &mut self,
        name: &'static str,
        since: AbiVersion,
        until: Option<AbiVersion>,
        f: impl StatusFn<P>,
    ) {
        self.push(name, since, until, f.host_func(name));
    }

    /// Adds `env.name` taking `params` i32s, linked from `since` on, answering UNIMPLEMENTED:
    /// a filter that imports it loads, and learns at the call that the host lacks it.
    pub(crate) fn unimplemented(&mut self, name: &'static str, since: AbiVersion, params: usize) {
        let ty = FuncType::new(vec![ValType::I32; params], [ValType::I32]);
        let mut t = HostFunctions::new();
        t.add(MODULE, name, ty, |_, _, r| {
            r[0] = Val::I32(status::UNIMPLEMENTED);
            Ok(())
        });
        let func = t.0.pop().expect("add added it");
        self.push(name, since, None, func);
    }

    fn push(
        &mut self,
        name: &'static str,
        since: AbiVersion,
        until: Option<AbiVersion>,
        func: HostFunc,
    ) {
        self.0.push(Def {
            name,
            since,
            until,
            params: func.ty.params.clone(),
            func,
        })
    }
}

fn fail(s: i32) -> Fail {
    Fail::Status(s)
}

fn state(c: &mut dyn Caller) -> Result<&mut VmState, Fail> {
    c.data().downcast_mut::<VmState>().ok_or_else(|| {
        Fail::Trap(HostError::msg(
            "internal: instance data is not proxy-wasm state",
        ))
    })
}

/// Reads a guest region; length 0 is empty whatever the pointer.
fn rd(c: &mut dyn Caller, ptr: u32, len: u32) -> Result<Vec<u8>, Fail> {
    if len == 0 {
        return Ok(Vec::new());
    }
    Ok(c.read(ptr, len)?)
}

/// Allocates `size` bytes in the guest.
fn alloc(c: &mut dyn Caller, size: u32) -> Result<u32, Fail> {
    let export = state(c)?.allocator;
    let mut out = [Val::I32(0)];
    c.call(export, &[Val::I32(size as i32)], &mut out)
        .map_err(|t| Fail::Trap(HostError::from(t)))?;
    let ptr = out[0].i32().unwrap_or(0) as u32;
    if ptr == 0 || ptr as u64 + size as u64 > c.memory_size() {
        return Err(fail(status::INVALID_MEMORY_ACCESS));
    }
    Ok(ptr)
}

/// Hands `data` to the guest: allocates, copies, writes pointer and size.
/// Empty data is ptr 0 / size 0 without an allocation.
fn out(c: &mut dyn Caller, data: &[u8], ptr_ptr: u32, size_ptr: u32) -> Result<(), Fail> {
    // Check the out-params before allocating.
    c.write_u32(ptr_ptr, 0)?;
    c.write_u32(size_ptr, 0)?;
    if data.is_empty() {
        return Ok(());
    }
    let p = alloc(c, data.len() as u32)?;
    c.write(p, data)?;
    c.write_u32(ptr_ptr, p)?;
    c.write_u32(size_ptr, data.len() as u32)?;
    Ok(())
}

fn ser(h: &HeaderPairs) -> Vec<u8> {
    serial::serialize(h.iter().map(|(k, v)| (k.as_bytes(), v)))
}

/// Every proxy-wasm host function this host knows, tagged with its versions.
pub fn definitions() -> Vec<Def> {
    let mut t = Table(Vec::new());
    logs::define(&mut t);
    buffers::define(&mut t);
    maps::define(&mut t);
    properties::define(&mut t);
    stream::define(&mut t);
    calls::define(&mut t);
    shared::define(&mut t);
    metrics::define(&mut t);
    t.0
}

/// Names of the functions that answer UNIMPLEMENTED.
pub const UNIMPLEMENTED: &[&str] = &[
    "proxy_grpc_call",
    "proxy_grpc_stream",
    "proxy_grpc_send",
    "proxy_grpc_cancel",
    "proxy_grpc_close",
    "proxy_call_foreign_function",
];

/// The host functions one ABI version links, plus WASI (stdout → info, stderr → error logs).
pub fn functions(plugin: &str, version: AbiVersion) -> HostFunctions {
    let mut t = HostFunctions::new();
    t.extend(wasi::functions(crate::guest::log::wasi_sink(plugin)));
    // The environment is the plugin's configured variables (cpp-host: `environment_variables`).
    const FAULT: i32 = 21;
    for module in ["wasi_snapshot_preview1", "wasi_unstable"] {
        t.func_wrap(
            module,
            "environ_sizes_get",
            |c: &mut dyn Caller, count_ptr: u32, size_ptr: u32| -> Result<i32, HostError> {
                let env = match state(c) {
                    Ok(st) => st.shared.env.clone(),
                    Err(_) => return Err(HostError::msg("internal: not proxy-wasm state")),
                };
                let size: usize = env.iter().map(|e| e.len() + 1).sum();
                let ok = c
                    .write_u32(count_ptr, env.len() as u32)
                    .and_then(|_| c.write_u32(size_ptr, size as u32));
                Ok(if ok.is_ok() { 0 } else { FAULT })
            },
        );
        t.func_wrap(
            module,
            "environ_get",
            |c: &mut dyn Caller, ptrs: u32, buf: u32| -> Result<i32, HostError> {
                let env = match state(c) {
                    Ok(st) => st.shared.env.clone(),
                    Err(_) => return Err(HostError::msg("internal: not proxy-wasm state")),
                };
                let (mut ptrs, mut buf) = (ptrs, buf);
                let mut result = Ok(());
                for e in &env {
                    let mut bytes = e.as_bytes().to_vec();
                    bytes.push(0);
                    result = c.write_u32(ptrs, buf).and_then(|_| c.write(buf, &bytes));
                    if result.is_err() {
                        break;
                    }
                    ptrs = ptrs.wrapping_add(4);
                    buf = buf.wrapping_add(bytes.len() as u32);
                }
                Ok(if result.is_ok() { 0 } else { FAULT })
            },
        );
    }
    for d in definitions().into_iter().filter(|d| d.in_version(version)) {
        t.push(d.func);
    }
    t
}
