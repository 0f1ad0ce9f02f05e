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
//! (a trap inside `malloc`) traps the calling instance.
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

use std::sync::Arc;

use wasmgate_engines::{wasi, Caller, FuncType, HostError, HostFunctions, Val, ValType};

use super::abi::{status, AbiVersion, MODULE};
use super::serial;
use super::state::VmState;
use crate::headers::Headers;

pub use self::logs::min_log_level;

/// What every family file uses.
mod prelude {
    pub(super) use super::super::abi::{
        buffer, log_level, map, status, stream, AbiVersion, MetricKind,
    };
    pub(super) use super::super::serial;
    pub(super) use super::super::state::{
        Callback, Direction, LocalResponse, PendingCall, VmState,
    };
    pub(super) use super::{arg, arg64, out, rd, ser, state, u, Body, Table};
    pub(super) use crate::headers::Headers;
    pub(super) use std::sync::Arc;
    pub(super) use wasmgate_engines::ValType;
    pub(super) use ValType::{I32, I64};
}

use ValType::I32;

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

type R = Result<i32, Fail>;
/// A host function body: the caller and its arguments, a status or a trap.
pub(crate) type Body = dyn Fn(&mut dyn Caller, &[Val]) -> R + Send + Sync;

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
    body: Arc<Body>,
}

impl Def {
    /// Whether `v` links this function.
    pub fn in_version(&self, v: AbiVersion) -> bool {
        v >= self.since && self.until.is_none_or(|u| v <= u)
    }
}

/// The table the families fill.
pub(crate) struct Table(Vec<Def>);

impl Table {
    fn def(
        &mut self,
        name: &'static str,
        since: AbiVersion,
        until: Option<AbiVersion>,
        params: &[ValType],
        body: Arc<Body>,
    ) {
        self.0.push(Def {
            name,
            since,
            until,
            params: params.to_vec(),
            body,
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

fn arg(a: &[Val], i: usize) -> i32 {
    a.get(i).and_then(Val::i32).unwrap_or(0)
}

fn u(a: &[Val], i: usize) -> u32 {
    arg(a, i) as u32
}

fn arg64(a: &[Val], i: usize) -> i64 {
    a.get(i).and_then(Val::i64).unwrap_or(0)
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

fn ser(h: &Headers) -> Vec<u8> {
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
    let name = plugin.to_string();
    t.extend(wasi::functions(Arc::new(move |s, bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        let text = text.trim_end();
        match s {
            wasi::WasiStream::Stdout => {
                tracing::info!(target: "wasmgate::plugin", plugin = %name, "{text}")
            }
            wasi::WasiStream::Stderr => {
                tracing::error!(target: "wasmgate::plugin", plugin = %name, "{text}")
            }
        }
    })));
    // The environment is the plugin's configured variables (cpp-host: `environment_variables`).
    const FAULT: i32 = 21;
    for module in ["wasi_snapshot_preview1", "wasi_unstable"] {
        t.add(
            module,
            "environ_sizes_get",
            FuncType::new([I32, I32], [I32]),
            |c, a, r| {
                let env = match state(c) {
                    Ok(st) => st.shared.env.clone(),
                    Err(_) => return Err(HostError::msg("internal: not proxy-wasm state")),
                };
                let size: usize = env.iter().map(|e| e.len() + 1).sum();
                let ok = c
                    .write_u32(u(a, 0), env.len() as u32)
                    .and_then(|_| c.write_u32(u(a, 1), size as u32));
                r[0] = Val::I32(if ok.is_ok() { 0 } else { FAULT });
                Ok(())
            },
        );
        t.add(
            module,
            "environ_get",
            FuncType::new([I32, I32], [I32]),
            |c, a, r| {
                let env = match state(c) {
                    Ok(st) => st.shared.env.clone(),
                    Err(_) => return Err(HostError::msg("internal: not proxy-wasm state")),
                };
                let (mut ptrs, mut buf) = (u(a, 0), u(a, 1));
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
                r[0] = Val::I32(if result.is_ok() { 0 } else { FAULT });
                Ok(())
            },
        );
    }
    for d in definitions().into_iter().filter(|d| d.in_version(version)) {
        let body = d.body.clone();
        t.add(
            MODULE,
            d.name,
            FuncType::new(d.params.clone(), [I32]),
            move |c, a, r| match body(c, a) {
                Ok(s) | Err(Fail::Status(s)) => {
                    r[0] = Val::I32(s);
                    Ok(())
                }
                Err(Fail::Trap(e)) => Err(e),
            },
        );
    }
    t
}
