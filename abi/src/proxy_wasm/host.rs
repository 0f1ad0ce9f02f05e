//! The proxy-wasm host functions (module `env`), written once against the
//! engine-neutral [`Caller`].
//!
//! Every entry is tagged with the ABI version that introduced it (and the last
//! one that has it), Kong style; [`functions`] links exactly one version's set.
//! Guest mistakes answer with the spec's statuses: a pointer or length outside
//! linear memory is `INVALID_MEMORY_ACCESS`. Only a failing guest allocator
//! (a trap inside `malloc`) traps the calling instance.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use tracing::Level;
use wasmgate_engines::{wasi, Caller, FuncType, HostError, HostFunctions, Val, ValType};

use super::abi::{buffer, log_level, map, status, stream, AbiVersion, MetricKind, MODULE};
use super::serial;
use super::state::{Callback, InstanceState, LocalResponse, PendingCall, Phase};
use crate::headers::Headers;

use ValType::{I32, I64};

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
type Body = dyn Fn(&mut dyn Caller, &[Val]) -> R + Send + Sync;

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

fn fail(s: i32) -> Fail {
    Fail::Status(s)
}

fn state(c: &mut dyn Caller) -> Result<&mut InstanceState, Fail> {
    c.data().downcast_mut::<InstanceState>().ok_or_else(|| {
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

/// A header name a filter may write: lower-cased, a token (pseudo-headers keep their colon).
fn valid_name(name: &[u8]) -> Option<String> {
    let rest = name.strip_prefix(b":").unwrap_or(name);
    if rest.is_empty() || http::HeaderName::from_bytes(rest).is_err() {
        return None;
    }
    Some(String::from_utf8_lossy(name).to_ascii_lowercase())
}

/// A header value a filter may write: no CR, LF or NUL.
fn valid_value(v: &[u8]) -> bool {
    !v.iter().any(|b| matches!(b, b'\r' | b'\n' | 0))
}

/// Validated pairs for a map a filter writes.
pub(crate) fn valid_pairs(pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Option<Vec<(String, Bytes)>> {
    pairs
        .into_iter()
        .map(|(k, v)| {
            let name = valid_name(&k)?;
            valid_value(&v).then(|| (name, Bytes::from(v)))
        })
        .collect()
}

fn ser(h: &Headers) -> Vec<u8> {
    serial::serialize(h.iter().map(|(k, v)| (k.as_bytes(), v)))
}

/// The header map `ty` names now: `Err(BAD_ARGUMENT)` when unknown, absent or read-only for a write.
fn map_for(st: &mut InstanceState, ty: i32, write: bool) -> Result<&mut Headers, i32> {
    if matches!(
        ty,
        map::HTTP_CALL_RESPONSE_HEADERS | map::HTTP_CALL_RESPONSE_TRAILERS
    ) {
        if write {
            return Err(status::BAD_ARGUMENT);
        }
        let r = st.call_response.as_mut().ok_or(status::BAD_ARGUMENT)?;
        return Ok(if ty == map::HTTP_CALL_RESPONSE_HEADERS {
            &mut r.headers
        } else {
            &mut r.trailers
        });
    }
    let s = st.active_stream().ok_or(status::BAD_ARGUMENT)?;
    let writable_req = s.phase == Phase::Request;
    let writable_resp = s.phase == Phase::Response;
    match ty {
        map::HTTP_REQUEST_HEADERS if !write || writable_req => Ok(&mut s.request_headers),
        map::HTTP_REQUEST_TRAILERS if !write || writable_req => Ok(&mut s.request_trailers),
        map::HTTP_RESPONSE_HEADERS if !write || writable_resp => {
            s.response_headers.as_mut().ok_or(status::BAD_ARGUMENT)
        }
        map::HTTP_RESPONSE_TRAILERS
            if (!write || writable_resp) && s.response_headers.is_some() =>
        {
            Ok(&mut s.response_trailers)
        }
        _ => Err(status::BAD_ARGUMENT),
    }
}

/// The bytes `range` of the buffer `ty` names now (clamped to its end), and its length.
/// Only the window is copied: a filter that pauses on every chunk and reads a little of the
/// growing buffer each time must not cost a copy of all of it per call.
fn buffer_get(
    st: &mut InstanceState,
    ty: i32,
    range: std::ops::Range<usize>,
) -> Result<(Bytes, usize), i32> {
    let window = |b: &[u8]| {
        let start = range.start.min(b.len());
        let end = range.end.min(b.len()).max(start);
        (Bytes::copy_from_slice(&b[start..end]), b.len())
    };
    let whole = |b: &Bytes| {
        let start = range.start.min(b.len());
        let end = range.end.min(b.len()).max(start);
        (b.slice(start..end), b.len())
    };
    match ty {
        buffer::HTTP_REQUEST_BODY | buffer::HTTP_RESPONSE_BODY => {
            let s = st.active_stream().ok_or(status::NOT_FOUND)?;
            let b = if ty == buffer::HTTP_REQUEST_BODY && s.phase == Phase::Request {
                s.request_body.as_ref()
            } else if ty == buffer::HTTP_RESPONSE_BODY && s.phase == Phase::Response {
                s.response_body.as_ref()
            } else {
                None
            };
            b.map(|b| window(b)).ok_or(status::NOT_FOUND)
        }
        buffer::HTTP_CALL_RESPONSE_BODY => st
            .call_response
            .as_ref()
            .map(|r| whole(&r.body))
            .ok_or(status::NOT_FOUND),
        buffer::VM_CONFIGURATION => Ok(whole(&st.shared.vm_config)),
        buffer::PLUGIN_CONFIGURATION => Ok(whole(&st.shared.plugin_config)),
        buffer::DOWNSTREAM_DATA
        | buffer::UPSTREAM_DATA
        | buffer::GRPC_CALL_MESSAGE
        | buffer::FOREIGN_FUNCTION_ARGUMENTS => Err(status::NOT_FOUND),
        _ => Err(status::BAD_ARGUMENT),
    }
}

/// Edits a body buffer as Envoy's `Buffer::copyFrom` does: at `start` 0, drain `size`
/// bytes (all of them when `size` is past the end), then prepend `value` (so (0, 0)
/// prepends and (0, len) replaces); at or past the end, append; anywhere else
/// BAD_ARGUMENT. Filters rely on the drain-then-prepend form to rewrite the head of the
/// chunk in flight (Envoy's example filter writes `Hello, world` over 12 bytes). A result
/// longer than `limit` (maxBodyBytes, the bound of every body the host buffers) is
/// BAD_ARGUMENT and leaves the buffer as it was.
pub(crate) fn splice(buf: &mut BytesMut, start: u32, size: u32, value: &[u8], limit: usize) -> i32 {
    let len = buf.len();
    if start == 0 {
        let drained = (size as usize).min(len);
        if len - drained + value.len() > limit {
            return status::BAD_ARGUMENT;
        }
        let mut n = BytesMut::with_capacity(len - drained + value.len());
        n.extend_from_slice(value);
        n.extend_from_slice(&buf[drained..]);
        *buf = n;
    } else if start as usize >= len {
        if len + value.len() > limit {
            return status::BAD_ARGUMENT;
        }
        buf.extend_from_slice(value);
    } else {
        return status::BAD_ARGUMENT;
    }
    status::OK
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Splits a property path on NULs, ignoring one empty tail.
pub(crate) fn split_path(path: &[u8]) -> Vec<&[u8]> {
    let mut segs: Vec<&[u8]> = path.split(|b| *b == 0).collect();
    if segs.len() > 1 && segs.last().is_some_and(|s| s.is_empty()) {
        segs.pop();
    }
    segs
}

fn i64b(v: i64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

/// A property value in Envoy's encodings.
fn property(st: &mut InstanceState, path: &[u8]) -> Option<Vec<u8>> {
    let segs = split_path(path);
    let key: Vec<u8> = segs.join(&0u8);
    if let Some(s) = st.active_stream() {
        if let Some(v) = s.properties.get(&key) {
            return Some(v.clone());
        }
    }
    if let Some(v) = st.root_properties.get(&key) {
        return Some(v.clone());
    }
    let names: Vec<String> = segs
        .iter()
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    let first = names.first().map(String::as_str).unwrap_or("");
    let second = names.get(1).map(String::as_str);
    match (first, second, names.len()) {
        ("plugin_name", None, 1) => return Some(st.shared.plugin.clone().into_bytes()),
        ("plugin_root_id", None, 1) => return Some(st.shared.root_id.clone().into_bytes()),
        ("plugin_vm_id", None, 1) => return Some(st.shared.vm.vm_id.clone().into_bytes()),
        _ => {}
    }
    let s = st.active_stream()?;
    let info = &s.info;
    let header_value = |h: &Headers, name: Option<&String>| -> Option<Vec<u8>> {
        match name {
            None => Some(ser(h)),
            Some(n) => h.get(n).map(|v| v.to_vec()),
        }
    };
    let pseudo = |h: &Headers, n: &str| h.get(n).map(|v| v.to_vec());
    let v = match (first, second) {
        ("request", Some("path")) => pseudo(&s.request_headers, ":path")?,
        ("request", Some("url_path")) => {
            let p = pseudo(&s.request_headers, ":path")?;
            let end = p.iter().position(|b| *b == b'?').unwrap_or(p.len());
            p[..end].to_vec()
        }
        ("request", Some("host")) => pseudo(&s.request_headers, ":authority")?,
        ("request", Some("scheme")) => pseudo(&s.request_headers, ":scheme")?,
        ("request", Some("method")) => pseudo(&s.request_headers, ":method")?,
        ("request", Some("protocol")) => match info.version {
            http::Version::HTTP_10 => b"HTTP/1.0".to_vec(),
            http::Version::HTTP_2 => b"HTTP/2".to_vec(),
            http::Version::HTTP_3 => b"HTTP/3".to_vec(),
            _ => b"HTTP/1.1".to_vec(),
        },
        ("request", Some("headers")) => header_value(&s.request_headers, names.get(2))?,
        ("request", Some("time")) => i64b(
            info.start
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as i64)
                .unwrap_or(0),
        ),
        ("request", Some("duration")) => i64b(info.started.elapsed().as_nanos() as i64),
        ("request", Some("size")) => i64b(info.request_size as i64),
        ("response", Some("code")) => i64b(info.response_code? as i64),
        ("response", Some("size")) => i64b(info.response_size as i64),
        ("response", Some("headers")) => header_value(s.response_headers.as_ref()?, names.get(2))?,
        ("source", Some("address")) => info.source.to_string().into_bytes(),
        ("source", Some("port")) => i64b(info.source.port() as i64),
        ("destination", Some("address")) => info.destination.to_string().into_bytes(),
        ("destination", Some("port")) => i64b(info.destination.port() as i64),
        ("connection", Some("id")) => info.connection_id.to_le_bytes().to_vec(),
        ("connection", Some("mtls")) => vec![0],
        _ => return None,
    };
    // Extra segments only index maps (handled above).
    let max_len = if matches!(second, Some("headers")) {
        3
    } else {
        2
    };
    (names.len() <= max_len).then_some(v)
}

/// The lowest proxy-wasm log level `tracing` lets through for plugin logs.
pub fn min_log_level() -> i32 {
    match crate::guest::log::max_enabled_level() {
        Some(Level::TRACE) => log_level::TRACE,
        Some(Level::DEBUG) => log_level::DEBUG,
        Some(Level::INFO) => log_level::INFO,
        Some(Level::WARN) => log_level::WARN,
        _ => log_level::ERROR,
    }
}

fn log_message(plugin: &str, middleware: &str, level: i32, text: &str) {
    let level = match level {
        log_level::TRACE => Level::TRACE,
        log_level::DEBUG => Level::DEBUG,
        log_level::INFO => Level::INFO,
        log_level::WARN => Level::WARN,
        _ => Level::ERROR,
    };
    crate::guest::log::emit(level, plugin, middleware, text);
}

/// Every proxy-wasm host function this host knows, tagged with its versions.
pub fn definitions() -> Vec<Def> {
    use AbiVersion::{V0_1_0, V0_2_0, V0_2_1};
    let mut d: Vec<Def> = Vec::new();
    let mut def = |name: &'static str,
                   since: AbiVersion,
                   until: Option<AbiVersion>,
                   params: &[ValType],
                   body: Arc<Body>| {
        d.push(Def {
            name,
            since,
            until,
            params: params.to_vec(),
            body,
        })
    };
    let unimplemented: Arc<Body> = Arc::new(|_, _| Ok(status::UNIMPLEMENTED));

    // Logging, time, ticks, contexts.
    def(
        "proxy_log",
        V0_1_0,
        None,
        &[I32, I32, I32],
        Arc::new(|c, a| {
            let level = arg(a, 0);
            if !(log_level::TRACE..=log_level::CRITICAL).contains(&level) {
                return Ok(status::BAD_ARGUMENT);
            }
            let msg = rd(c, u(a, 1), u(a, 2))?;
            let sh = state(c)?.shared.clone();
            if level >= sh.log_level {
                log_message(
                    &sh.plugin,
                    &sh.middleware,
                    level,
                    &String::from_utf8_lossy(&msg),
                );
            }
            Ok(status::OK)
        }),
    );
    def(
        "proxy_get_log_level",
        V0_2_1,
        None,
        &[I32],
        Arc::new(|c, a| {
            let l = state(c)?.shared.log_level;
            c.write_u32(u(a, 0), l as u32)?;
            Ok(status::OK)
        }),
    );
    def(
        "proxy_get_current_time_nanoseconds",
        V0_1_0,
        None,
        &[I32],
        Arc::new(|c, a| {
            c.write_u64(u(a, 0), now_nanos())?;
            Ok(status::OK)
        }),
    );
    def(
        "proxy_set_tick_period_milliseconds",
        V0_1_0,
        None,
        &[I32],
        Arc::new(|c, a| {
            let ms = u(a, 0);
            let st = state(c)?;
            st.tick_period = (ms > 0).then(|| Duration::from_millis(ms as u64));
            st.last_tick = Instant::now();
            Ok(status::OK)
        }),
    );
    def(
        "proxy_set_effective_context",
        V0_1_0,
        None,
        &[I32],
        Arc::new(|c, a| {
            let ctx = u(a, 0);
            let st = state(c)?;
            if ctx == st.root_ctx || st.stream.as_ref().is_some_and(|s| s.ctx == ctx) {
                st.effective_ctx = ctx;
                Ok(status::OK)
            } else {
                Ok(status::BAD_ARGUMENT)
            }
        }),
    );
    def(
        "proxy_done",
        V0_1_0,
        None,
        &[],
        Arc::new(|c, _| {
            let st = state(c)?;
            match st.stream.as_mut().filter(|s| s.done_pending) {
                Some(s) => {
                    s.done_pending = false;
                    Ok(status::OK)
                }
                None => Ok(status::NOT_FOUND),
            }
        }),
    );
    def(
        "proxy_get_status",
        V0_1_0,
        None,
        &[I32, I32, I32],
        Arc::new(|c, a| {
            let (code, msg) = state(c)?.last_status.clone();
            c.write_u32(u(a, 0), code)?;
            out(c, msg.as_bytes(), u(a, 1), u(a, 2))?;
            Ok(status::OK)
        }),
    );

    // Configuration (0.1.0).
    def(
        "proxy_get_configuration",
        V0_1_0,
        Some(V0_1_0),
        &[I32, I32],
        Arc::new(|c, a| {
            let st = state(c)?;
            let data = match st.callback {
                Callback::VmStart => st.shared.vm_config.clone(),
                _ => st.shared.plugin_config.clone(),
            };
            out(c, &data, u(a, 0), u(a, 1))?;
            Ok(status::OK)
        }),
    );

    // Buffers.
    def(
        "proxy_get_buffer_bytes",
        V0_1_0,
        None,
        &[I32, I32, I32, I32, I32],
        Arc::new(|c, a| {
            let (start, max) = (u(a, 1), u(a, 2));
            let Some(end) = start.checked_add(max) else {
                // An unknown buffer type is still BAD_ARGUMENT, an absent one NOT_FOUND.
                return Ok(match buffer_get(state(c)?, arg(a, 0), 0..0) {
                    Ok(_) => status::BAD_ARGUMENT,
                    Err(s) => s,
                });
            };
            let data = match buffer_get(state(c)?, arg(a, 0), start as usize..end as usize) {
                Ok((d, _)) => d,
                Err(s) => return Ok(s),
            };
            out(c, &data, u(a, 3), u(a, 4))?;
            Ok(status::OK)
        }),
    );
    def(
        "proxy_set_buffer_bytes",
        V0_1_0,
        None,
        &[I32, I32, I32, I32, I32],
        Arc::new(|c, a| {
            let ty = arg(a, 0);
            // No body may grow past maxBodyBytes (checked before the bytes are copied).
            let limit = state(c)?.shared.max_body_bytes;
            if u(a, 4) as usize > limit {
                return Ok(status::BAD_ARGUMENT);
            }
            let value = rd(c, u(a, 3), u(a, 4))?;
            let st = state(c)?;
            match ty {
                buffer::HTTP_REQUEST_BODY | buffer::HTTP_RESPONSE_BODY => {
                    let Some(s) = st.active_stream() else {
                        return Ok(status::NOT_FOUND);
                    };
                    let b = if ty == buffer::HTTP_REQUEST_BODY && s.phase == Phase::Request {
                        s.request_body.as_mut()
                    } else if ty == buffer::HTTP_RESPONSE_BODY && s.phase == Phase::Response {
                        s.response_body.as_mut()
                    } else {
                        None
                    };
                    match b {
                        Some(b) => Ok(splice(b, u(a, 1), u(a, 2), &value, limit)),
                        None => Ok(status::NOT_FOUND),
                    }
                }
                buffer::HTTP_CALL_RESPONSE_BODY
                | buffer::VM_CONFIGURATION
                | buffer::PLUGIN_CONFIGURATION => Ok(status::BAD_ARGUMENT),
                buffer::DOWNSTREAM_DATA
                | buffer::UPSTREAM_DATA
                | buffer::GRPC_CALL_MESSAGE
                | buffer::FOREIGN_FUNCTION_ARGUMENTS => Ok(status::NOT_FOUND),
                _ => Ok(status::BAD_ARGUMENT),
            }
        }),
    );
    def(
        "proxy_get_buffer_status",
        V0_1_0,
        None,
        &[I32, I32, I32],
        Arc::new(|c, a| {
            let len = match buffer_get(state(c)?, arg(a, 0), 0..0) {
                Ok((_, len)) => len,
                Err(s) => return Ok(s),
            };
            c.write_u32(u(a, 1), len as u32)?;
            c.write_u32(u(a, 2), 0)?;
            Ok(status::OK)
        }),
    );

    // Header maps.
    def(
        "proxy_get_header_map_pairs",
        V0_1_0,
        None,
        &[I32, I32, I32],
        Arc::new(|c, a| {
            let ty = arg(a, 0);
            if !(0..=7).contains(&ty) {
                return Ok(status::BAD_ARGUMENT);
            }
            let data = map_for(state(c)?, ty, false)
                .map(|h| ser(h))
                .unwrap_or_default();
            out(c, &data, u(a, 1), u(a, 2))?;
            Ok(status::OK)
        }),
    );
    def(
        "proxy_set_header_map_pairs",
        V0_1_0,
        None,
        &[I32, I32, I32],
        Arc::new(|c, a| {
            let raw = rd(c, u(a, 1), u(a, 2))?;
            let Some(pairs) = serial::deserialize(&raw).ok().and_then(valid_pairs) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let h = match map_for(state(c)?, arg(a, 0), true) {
                Ok(h) => h,
                Err(s) => return Ok(s),
            };
            *h = Headers::new();
            for (k, v) in pairs {
                h.append(k, v);
            }
            Ok(status::OK)
        }),
    );
    def(
        "proxy_get_header_map_size",
        V0_1_0,
        None,
        &[I32, I32],
        Arc::new(|c, a| {
            let n = match map_for(state(c)?, arg(a, 0), false) {
                Ok(h) => ser(h).len(),
                Err(s) => return Ok(s),
            };
            c.write_u32(u(a, 1), n as u32)?;
            Ok(status::OK)
        }),
    );
    def(
        "proxy_get_header_map_value",
        V0_1_0,
        None,
        &[I32, I32, I32, I32, I32],
        Arc::new(|c, a| {
            let key = rd(c, u(a, 1), u(a, 2))?;
            let st = state(c)?;
            let v1 = st.shared.version == AbiVersion::V0_1_0;
            let value = match map_for(st, arg(a, 0), false) {
                Ok(h) => std::str::from_utf8(&key).ok().and_then(|k| {
                    #[cfg(feature = "fault-injection")]
                    if crate::faults::active(crate::faults::Fault::ProxyWasmHeaderValueLastNotFirst)
                    {
                        return h.get_all(k).last().map(|v| v.to_vec());
                    }
                    h.get(k).map(|v| v.to_vec())
                }),
                Err(s) => return Ok(s),
            };
            match value {
                Some(v) => {
                    out(c, &v, u(a, 3), u(a, 4))?;
                    Ok(status::OK)
                }
                // 0.1.0 (Envoy): a missing key is OK with an empty value.
                None if v1 => {
                    out(c, &[], u(a, 3), u(a, 4))?;
                    Ok(status::OK)
                }
                None => Ok(status::NOT_FOUND),
            }
        }),
    );
    for (name, replace) in [
        ("proxy_add_header_map_value", false),
        ("proxy_replace_header_map_value", true),
    ] {
        def(
            name,
            V0_1_0,
            None,
            &[I32, I32, I32, I32, I32],
            Arc::new(move |c, a| {
                let key = rd(c, u(a, 1), u(a, 2))?;
                let value = rd(c, u(a, 3), u(a, 4))?;
                let (Some(key), true) = (valid_name(&key), valid_value(&value)) else {
                    return Ok(status::BAD_ARGUMENT);
                };
                let h = match map_for(state(c)?, arg(a, 0), true) {
                    Ok(h) => h,
                    Err(s) => return Ok(s),
                };
                // A map may not grow past what a serialized map may hold (1024 pairs, 1 MiB).
                if !h.fits_one_more(&key, value.len()) {
                    return Ok(status::BAD_ARGUMENT);
                }
                if replace {
                    h.set(&key, value);
                } else {
                    h.append(key, value);
                }
                Ok(status::OK)
            }),
        );
    }
    def(
        "proxy_remove_header_map_value",
        V0_1_0,
        None,
        &[I32, I32, I32],
        Arc::new(|c, a| {
            let key = rd(c, u(a, 1), u(a, 2))?;
            let h = match map_for(state(c)?, arg(a, 0), true) {
                Ok(h) => h,
                Err(s) => return Ok(s),
            };
            if let Ok(k) = std::str::from_utf8(&key) {
                h.remove(k);
            }
            Ok(status::OK)
        }),
    );

    // Properties.
    def(
        "proxy_get_property",
        V0_1_0,
        None,
        &[I32, I32, I32, I32],
        Arc::new(|c, a| {
            let path = rd(c, u(a, 0), u(a, 1))?;
            match property(state(c)?, &path) {
                Some(v) => {
                    out(c, &v, u(a, 2), u(a, 3))?;
                    Ok(status::OK)
                }
                None => Ok(status::NOT_FOUND),
            }
        }),
    );
    def(
        "proxy_set_property",
        V0_1_0,
        None,
        &[I32, I32, I32, I32],
        Arc::new(|c, a| {
            let path = rd(c, u(a, 0), u(a, 1))?;
            let value = rd(c, u(a, 2), u(a, 3))?;
            if path.is_empty() {
                return Ok(status::BAD_ARGUMENT);
            }
            let key = split_path(&path).join(&0u8);
            let st = state(c)?;
            match st.active_stream() {
                Some(s) => s.properties.insert(key, value),
                None => st.root_properties.insert(key, value),
            };
            Ok(status::OK)
        }),
    );

    // Stream control.
    def(
        "proxy_continue_request",
        V0_1_0,
        Some(V0_1_0),
        &[],
        Arc::new(|c, _| match state(c)?.active_stream() {
            Some(s) => {
                s.resume_request = true;
                Ok(status::OK)
            }
            None => Ok(status::NOT_FOUND),
        }),
    );
    def(
        "proxy_continue_response",
        V0_1_0,
        Some(V0_1_0),
        &[],
        Arc::new(|c, _| match state(c)?.active_stream() {
            Some(s) => {
                s.resume_response = true;
                Ok(status::OK)
            }
            None => Ok(status::NOT_FOUND),
        }),
    );
    // Routes are chosen before middlewares run: there is no route cache to clear.
    def(
        "proxy_clear_route_cache",
        V0_1_0,
        Some(V0_1_0),
        &[],
        Arc::new(|_, _| Ok(status::OK)),
    );
    for (name, close) in [
        ("proxy_continue_stream", false),
        ("proxy_close_stream", true),
    ] {
        def(
            name,
            V0_2_0,
            None,
            &[I32],
            Arc::new(move |c, a| {
                let ty = arg(a, 0);
                if matches!(ty, stream::DOWNSTREAM | stream::UPSTREAM) {
                    return Ok(status::UNIMPLEMENTED);
                }
                if !matches!(ty, stream::HTTP_REQUEST | stream::HTTP_RESPONSE) {
                    return Ok(status::BAD_ARGUMENT);
                }
                let Some(s) = state(c)?.active_stream() else {
                    return Ok(status::NOT_FOUND);
                };
                if close {
                    s.closed = true;
                } else if ty == stream::HTTP_REQUEST {
                    s.resume_request = true;
                } else {
                    s.resume_response = true;
                }
                Ok(status::OK)
            }),
        );
    }
    def(
        "proxy_send_local_response",
        V0_1_0,
        None,
        &[I32, I32, I32, I32, I32, I32, I32, I32],
        Arc::new(|c, a| {
            let code = arg(a, 0);
            let details = rd(c, u(a, 1), u(a, 2))?;
            let body = rd(c, u(a, 3), u(a, 4))?;
            let raw = rd(c, u(a, 5), u(a, 6))?;
            if !(100..=599).contains(&code) {
                return Ok(status::BAD_ARGUMENT);
            }
            let Some(headers) = serial::deserialize(&raw).ok().and_then(valid_pairs) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let st = state(c)?;
            let sh = st.shared.clone();
            let Some(s) = st.active_stream() else {
                return Ok(status::NOT_FOUND);
            };
            if !details.is_empty() {
                tracing::debug!(target: "wasmgate::plugin", plugin = %sh.plugin, middleware = %sh.middleware,
                "local response {code}: {}", String::from_utf8_lossy(&details));
            }
            s.local_response = Some(LocalResponse {
                status: code as u16,
                headers,
                body: Bytes::from(body),
            });
            Ok(status::OK)
        }),
    );

    // HTTP calls.
    def(
        "proxy_http_call",
        V0_1_0,
        None,
        &[I32, I32, I32, I32, I32, I32, I32, I32, I32, I32],
        Arc::new(|c, a| {
            let upstream = rd(c, u(a, 0), u(a, 1))?;
            let headers = rd(c, u(a, 2), u(a, 3))?;
            let body = rd(c, u(a, 4), u(a, 5))?;
            let trailers = rd(c, u(a, 6), u(a, 7))?;
            let timeout_ms = u(a, 8);
            let token_ptr = u(a, 9);
            let (Ok(headers), Ok(trailers)) = (
                serial::deserialize(&headers),
                serial::deserialize(&trailers),
            ) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let has = |n: &[u8]| headers.iter().any(|(k, v)| k == n && !v.is_empty());
            if !(has(b":method") && has(b":path") && has(b":authority")) {
                return Ok(status::BAD_ARGUMENT);
            }
            let Ok(service) = String::from_utf8(upstream) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let st = state(c)?;
            if st.shared.services.service(&service).is_none() {
                return Ok(status::BAD_ARGUMENT);
            }
            let token = st.next_token;
            c.write_u32(token_ptr, token)?;
            let st = state(c)?;
            st.next_token += 1;
            st.pending_calls.push(PendingCall {
                token,
                service,
                headers,
                body: Bytes::from(body),
                trailers,
                timeout: (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms as u64)),
            });
            Ok(status::OK)
        }),
    );

    // gRPC and foreign functions: linked, not implemented.
    def(
        "proxy_grpc_call",
        V0_1_0,
        None,
        &[I32; 12],
        unimplemented.clone(),
    );
    def(
        "proxy_grpc_stream",
        V0_1_0,
        None,
        &[I32; 9],
        unimplemented.clone(),
    );
    def(
        "proxy_grpc_send",
        V0_1_0,
        None,
        &[I32; 4],
        unimplemented.clone(),
    );
    def(
        "proxy_grpc_cancel",
        V0_1_0,
        None,
        &[I32],
        unimplemented.clone(),
    );
    def(
        "proxy_grpc_close",
        V0_1_0,
        None,
        &[I32],
        unimplemented.clone(),
    );
    def(
        "proxy_call_foreign_function",
        V0_2_0,
        None,
        &[I32; 6],
        unimplemented,
    );

    // Shared data.
    def(
        "proxy_get_shared_data",
        V0_1_0,
        None,
        &[I32, I32, I32, I32, I32],
        Arc::new(|c, a| {
            let key = rd(c, u(a, 0), u(a, 1))?;
            let Some((v, cas)) = state(c)?.shared.vm.get_data(&key) else {
                return Ok(status::NOT_FOUND);
            };
            c.write_u32(u(a, 4), cas)?;
            out(c, &v, u(a, 2), u(a, 3))?;
            Ok(status::OK)
        }),
    );
    def(
        "proxy_set_shared_data",
        V0_1_0,
        None,
        &[I32, I32, I32, I32, I32],
        Arc::new(|c, a| {
            let key = rd(c, u(a, 0), u(a, 1))?;
            let value = rd(c, u(a, 2), u(a, 3))?;
            Ok(state(c)?.shared.vm.set_data(&key, &value, u(a, 4)))
        }),
    );

    // Shared queues.
    def(
        "proxy_register_shared_queue",
        V0_1_0,
        None,
        &[I32, I32, I32],
        Arc::new(|c, a| {
            let name = rd(c, u(a, 0), u(a, 1))?;
            let Ok(name) = String::from_utf8(name) else {
                return Ok(status::BAD_ARGUMENT);
            };
            c.write_u32(u(a, 2), 0)?;
            let sh = state(c)?.shared.clone();
            match sh.vm.register_queue(&name, &sh.waiter) {
                Some(id) => {
                    c.write_u32(u(a, 2), id)?;
                    Ok(status::OK)
                }
                // The VM's queue registry is full.
                None => Ok(status::INTERNAL_FAILURE),
            }
        }),
    );
    def(
        "proxy_resolve_shared_queue",
        V0_1_0,
        None,
        &[I32, I32, I32, I32, I32],
        Arc::new(|c, a| {
            let vm = rd(c, u(a, 0), u(a, 1))?;
            let name = rd(c, u(a, 2), u(a, 3))?;
            let id = state(c)?.shared.vm.resolve_queue(
                &String::from_utf8_lossy(&vm),
                &String::from_utf8_lossy(&name),
            );
            match id {
                Some(id) => {
                    c.write_u32(u(a, 4), id)?;
                    Ok(status::OK)
                }
                None => Ok(status::NOT_FOUND),
            }
        }),
    );
    def(
        "proxy_enqueue_shared_queue",
        V0_1_0,
        None,
        &[I32, I32, I32],
        Arc::new(|c, a| {
            let value = rd(c, u(a, 1), u(a, 2))?;
            Ok(state(c)?.shared.vm.enqueue(u(a, 0), value))
        }),
    );
    def(
        "proxy_dequeue_shared_queue",
        V0_1_0,
        None,
        &[I32, I32, I32],
        Arc::new(|c, a| {
            c.write_u32(u(a, 1), 0)?;
            c.write_u32(u(a, 2), 0)?;
            match state(c)?.shared.vm.dequeue(u(a, 0)) {
                Ok(v) => {
                    out(c, &v, u(a, 1), u(a, 2))?;
                    Ok(status::OK)
                }
                Err(s) => Ok(s),
            }
        }),
    );

    // Metrics.
    def(
        "proxy_define_metric",
        V0_1_0,
        None,
        &[I32, I32, I32, I32],
        Arc::new(|c, a| {
            let Some(kind) = MetricKind::from_i32(arg(a, 0)) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let name = rd(c, u(a, 1), u(a, 2))?;
            let Ok(name) = String::from_utf8(name) else {
                return Ok(status::BAD_ARGUMENT);
            };
            c.write_u32(u(a, 3), 0)?;
            match state(c)?.shared.vm.define_metric(kind, &name) {
                Some(id) => {
                    c.write_u32(u(a, 3), id)?;
                    Ok(status::OK)
                }
                // The VM's metric registry is full.
                None => Ok(status::INTERNAL_FAILURE),
            }
        }),
    );
    def(
        "proxy_increment_metric",
        V0_1_0,
        None,
        &[I32, I64],
        Arc::new(|c, a| Ok(state(c)?.shared.vm.increment_metric(u(a, 0), arg64(a, 1)))),
    );
    def(
        "proxy_record_metric",
        V0_1_0,
        None,
        &[I32, I64],
        Arc::new(|c, a| {
            Ok(state(c)?
                .shared
                .vm
                .record_metric(u(a, 0), arg64(a, 1) as u64))
        }),
    );
    def(
        "proxy_get_metric",
        V0_1_0,
        None,
        &[I32, I32],
        Arc::new(|c, a| match state(c)?.shared.vm.get_metric(u(a, 0)) {
            Ok(v) => {
                c.write_u64(u(a, 1), v)?;
                Ok(status::OK)
            }
            Err(s) => Ok(s),
        }),
    );
    let _ = V0_2_1;
    d
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
