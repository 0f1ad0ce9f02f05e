//! The `http_handler` host functions, written once against the engine-neutral
//! [`Caller`] and registered by whichever engine runs the plugin.
//!
//! Every guest-caused error (a bad pointer, a call the rules around next
//! forbid, an unknown kind) is returned as a [`HostError`], which traps the
//! calling instance only.

use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Method};
use wasmgate_engines::{wasi, Caller, HostError, HostFunctions};

use super::abi::{count_len, eof_len, feature, log_level, BodyKind, HeaderKind, MODULE};
use super::state::{Exchange, HttpWasmState, Phase, RequestBody};
use crate::headers::{Headers, GUEST_MAX_FIELD_LINES, GUEST_MAX_HEADER_BYTES};

fn trap(msg: impl Into<String>) -> HostError {
    HostError::msg(msg)
}

fn state(c: &mut dyn Caller) -> Result<&mut HttpWasmState, HostError> {
    c.data()
        .downcast_mut::<HttpWasmState>()
        .ok_or_else(|| trap("internal: instance data is not http-wasm state"))
}

fn exchange<'a>(c: &'a mut dyn Caller, func: &str) -> Result<&'a mut Exchange, HostError> {
    state(c)?
        .exchange
        .as_deref_mut()
        .ok_or_else(|| trap(format!("{func}: only usable while a request is in flight")))
}

/// Charges `bytes` the call is about to copy from the guest to the request's budget
/// (`maxHostBytes`, see [`crate::guest::HostBudget`]); past it the call traps, before copying.
fn charge(c: &mut dyn Caller, bytes: u32, func: &str) -> Result<(), HostError> {
    let cap = state(c)?.shared.max_host_bytes;
    exchange(c, func)?
        .charge(cap, bytes as usize)
        .map_err(|e| trap(format!("{func}: {e}")))
}

/// Writes `value` at `buf` only if it fits in `limit`; returns its full length either way.
fn write_value(c: &mut dyn Caller, buf: u32, limit: u32, value: &[u8]) -> Result<i32, HostError> {
    if !value.is_empty() && value.len() <= limit as usize {
        c.write(buf, value)?;
    }
    Ok(value.len() as i32)
}

/// A scratch buffer grown past this is let go after the call rather than kept (a guest that
/// once read a huge header list does not hold that much memory for good).
const SCRATCH_KEEP: usize = 16 << 10;

/// Runs `f` with the instance's scratch buffer, emptied: taken out of the instance's state
/// for the call (`f` borrows the state again while it fills it), then put back with what it
/// has grown to, so a call that returns a list or the URI allocates nothing once it has grown.
fn with_scratch<R>(
    c: &mut dyn Caller,
    f: impl FnOnce(&mut dyn Caller, &mut Vec<u8>) -> Result<R, HostError>,
) -> Result<R, HostError> {
    let mut buf = std::mem::take(&mut state(c)?.scratch);
    buf.clear();
    let result = f(c, &mut buf);
    if buf.capacity() <= SCRATCH_KEEP {
        state(c)?.scratch = buf;
    }
    result
}

/// Appends `items` to `out` NUL-terminated, while the list they come from is borrowed;
/// returns how many there are.
fn join_list<'a>(out: &mut Vec<u8>, items: impl Iterator<Item = &'a [u8]>) -> usize {
    let mut count = 0;
    for item in items {
        out.extend_from_slice(item);
        out.push(0);
        count += 1;
    }
    count
}

/// Writes a joined list of `count` items if it fits `limit`; the spec's count and length
/// either way.
fn write_list(
    c: &mut dyn Caller,
    buf: u32,
    limit: u32,
    out: &[u8],
    count: usize,
) -> Result<i64, HostError> {
    if count == 0 {
        return Ok(0);
    }
    if out.len() <= limit as usize {
        c.write(buf, out)?;
    }
    Ok(count_len(count, out.len()))
}

/// Longest header name read onto the stack; longer ones are read onto the heap.
const INLINE_NAME: usize = 64;

/// A header name read from guest memory: on the stack when it is short (nearly every name),
/// so reading one costs no allocation.
enum NameBuf {
    Inline([u8; INLINE_NAME], usize),
    Heap(Vec<u8>),
}

impl std::ops::Deref for NameBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            NameBuf::Inline(b, n) => &b[..*n],
            NameBuf::Heap(v) => v,
        }
    }
}

fn read_name(c: &mut dyn Caller, ptr: u32, len: u32, func: &str) -> Result<NameBuf, HostError> {
    if len == 0 {
        return Err(trap(format!("{func}: empty header name")));
    }
    let n = len as usize;
    if n <= INLINE_NAME {
        let mut b = [0u8; INLINE_NAME];
        c.read_into(ptr, &mut b[..n])?;
        Ok(NameBuf::Inline(b, n))
    } else {
        c.read(ptr, len).map(NameBuf::Heap)
    }
}

fn header_kind(v: i32, func: &str) -> Result<HeaderKind, HostError> {
    HeaderKind::from_i32(v).ok_or_else(|| trap(format!("{func}: unknown header kind {v}")))
}

fn body_kind(v: i32, func: &str) -> Result<BodyKind, HostError> {
    BodyKind::from_i32(v).ok_or_else(|| trap(format!("{func}: unknown body kind {v}")))
}

/// Records whether the guest declared the length of the request or response body (see
/// `state::honour_declared_length`); trailers carry no length.
fn mark_length_set(ex: &mut Exchange, kind: HeaderKind, set: bool) {
    match kind {
        HeaderKind::Request => ex.request_length_set = set,
        HeaderKind::Response => ex.response.length_set = set,
        HeaderKind::RequestTrailers | HeaderKind::ResponseTrailers => {}
    }
}

/// The header list `kind` names, applying the rules around next and the trailers feature.
/// `None` means "nothing there" for a getter.
fn headers_for<'a>(
    ex: &'a mut Exchange,
    kind: HeaderKind,
    write: bool,
    func: &str,
) -> Result<Option<&'a mut Headers>, HostError> {
    if kind.is_trailers() && !ex.has(feature::TRAILERS) {
        return if write {
            Err(trap(format!("{func}: trailers are not enabled")))
        } else {
            Ok(None)
        };
    }
    if write && ex.phase == Phase::Response {
        if kind.is_request() {
            return Err(trap(format!(
                "{func}: the request cannot change after next"
            )));
        }
        if !ex.has(feature::BUFFER_RESPONSE) {
            return Err(trap(format!(
                "{func}: changing the response after next needs buffer_response"
            )));
        }
    }
    Ok(match kind {
        HeaderKind::Request => Some(&mut ex.request.headers),
        HeaderKind::Response => {
            if ex.phase == Phase::Response && !ex.response.available {
                None
            } else {
                Some(&mut ex.response.headers)
            }
        }
        HeaderKind::RequestTrailers => {
            if write && ex.request_trailers.is_none() {
                ex.request_trailers = Some(ex.body.trailers.clone().unwrap_or_default());
            }
            match ex.request_trailers.as_mut() {
                Some(t) => Some(t),
                None => ex.body.trailers.as_mut(),
            }
        }
        HeaderKind::ResponseTrailers => {
            if write {
                Some(ex.response.trailers.get_or_insert_with(Headers::new))
            } else {
                ex.response.trailers.as_mut()
            }
        }
    })
}

/// The request trailers come after the body: the guest may read or write them during the
/// request phase once the whole body has been read ahead. A body larger than `maxBodyBytes`
/// was not: the call stops and the request gets a 413 (nothing waits inside a guest call).
fn request_trailers_arrived(
    c: &mut dyn Caller,
    kind: HeaderKind,
    func: &str,
) -> Result<(), HostError> {
    // Header calls are the hot path: other kinds leave at once.
    if kind != HeaderKind::RequestTrailers {
        return Ok(());
    }
    let st = state(c)?;
    let limit = st.shared.max_body_bytes;
    let Some(ex) = st.exchange.as_deref_mut() else {
        return Ok(());
    };
    // Not read ahead (the guest enabled trailers only during this call): the trailers have
    // not arrived, and the guest sees none yet, as with the reference host.
    if ex.phase != Phase::Request
        || ex.body.eof
        || !ex.body.read_ahead
        || !ex.has(feature::TRAILERS)
    {
        return Ok(());
    }
    Err(past_read_ahead(
        &mut ex.body,
        format!("{func}: the request trailers come after a body larger than maxBodyBytes ({limit} bytes)"),
    ))
}

/// The guest asked for what was not read ahead: marks the request as too large (413) and
/// stops the call.
fn past_read_ahead(body: &mut RequestBody, msg: String) -> HostError {
    body.too_large = true;
    trap(msg)
}

fn validate_header(
    name: &[u8],
    value: Vec<u8>,
    func: &str,
) -> Result<(HeaderName, HeaderValue), HostError> {
    let name = HeaderName::from_bytes(name).map_err(|_| {
        trap(format!(
            "{func}: invalid header name {:?}",
            String::from_utf8_lossy(name)
        ))
    })?;
    let value = HeaderValue::from_maybe_shared(Bytes::from(value))
        .map_err(|_| trap(format!("{func}: invalid value for header {name}")))?;
    Ok((name, value))
}

/// The lowest http-wasm log level enabled for a plugin whose `logLevel` is `configured`,
/// within the `tracing` configuration in force.
pub fn min_log_level(configured: Option<tracing::level_filters::LevelFilter>) -> i32 {
    use tracing::Level;
    match crate::guest::log::guest_max_level(configured) {
        // http-wasm has no trace level: debug is its most verbose.
        Some(Level::TRACE) | Some(Level::DEBUG) => log_level::DEBUG,
        Some(Level::INFO) => log_level::INFO,
        Some(Level::WARN) => log_level::WARN,
        Some(_) => log_level::ERROR,
        None => log_level::NONE,
    }
}

fn log_message(plugin: &str, middleware: &str, request_id: Option<&str>, level: i32, text: &str) {
    use tracing::Level;
    let level = match level {
        log_level::DEBUG => Level::DEBUG,
        log_level::INFO => Level::INFO,
        log_level::WARN => Level::WARN,
        log_level::ERROR => Level::ERROR,
        _ => return,
    };
    crate::guest::log::emit(level, plugin, middleware, request_id, text);
}

/// The `http_handler` functions plus WASI (whose stdout and stderr go to the plugin's log,
/// see [`crate::guest::log::wasi_sink`]).
pub fn functions(plugin: &str) -> HostFunctions {
    let mut t = HostFunctions::new();
    t.extend(wasi::functions(crate::guest::log::wasi_sink(plugin)));

    t.func_wrap(
        MODULE,
        "enable_features",
        |c: &mut dyn Caller, features: u32| -> Result<i32, HostError> {
            let asked = features & feature::SUPPORTED;
            let st = state(c)?;
            let now = match st.exchange.as_mut() {
                Some(ex) => {
                    ex.features |= asked;
                    ex.features
                }
                None => {
                    st.module_features |= asked;
                    st.module_features
                }
            };
            Ok(now as i32)
        },
    );
    t.func_wrap(
        MODULE,
        "get_config",
        |c: &mut dyn Caller, buf: u32, limit: u32| -> Result<i32, HostError> {
            let config = state(c)?.shared.clone();
            write_value(c, buf, limit, &config.config)
        },
    );
    t.func_wrap(
        MODULE,
        "log_enabled",
        |c: &mut dyn Caller, level: i32| -> Result<i32, HostError> {
            let min = state(c)?.shared.min_log_level;
            Ok((level >= min && level < log_level::NONE) as i32)
        },
    );
    t.func_wrap(
        MODULE,
        "log",
        |c: &mut dyn Caller, level: i32, msg: u32, msg_len: u32| -> Result<(), HostError> {
            let st = state(c)?;
            let shared = st.shared.clone();
            if level < shared.min_log_level || level >= log_level::NONE {
                return Ok(());
            }
            // The request this call serves (none during start-up).
            let id = st
                .exchange
                .as_ref()
                .and_then(|ex| ex.request.request_id.clone());
            // Logging never traps on a bad message: it is dropped.
            if let Ok(bytes) = c.read(msg, msg_len) {
                let text = String::from_utf8_lossy(&bytes);
                let id = id.as_ref().map(|id| id.as_str());
                log_message(&shared.plugin, &shared.middleware, id, level, &text);
            }
            Ok(())
        },
    );
    t.func_wrap(
        MODULE,
        "get_method",
        |c: &mut dyn Caller, buf: u32, limit: u32| -> Result<i32, HostError> {
            let m = exchange(c, "get_method")?.request.method.clone();
            write_value(c, buf, limit, m.as_str().as_bytes())
        },
    );
    t.func_wrap(
        MODULE,
        "set_method",
        |c: &mut dyn Caller, ptr: u32, len: u32| -> Result<(), HostError> {
            if len == 0 {
                return Err(trap("set_method: empty method"));
            }
            charge(c, len, "set_method")?;
            let bytes = c.read(ptr, len)?;
            let ex = exchange(c, "set_method")?;
            if ex.phase == Phase::Response {
                return Err(trap("set_method: the request cannot change after next"));
            }
            ex.request.method = Method::from_bytes(&bytes).map_err(|_| {
                trap(format!(
                    "set_method: invalid method {:?}",
                    String::from_utf8_lossy(&bytes)
                ))
            })?;
            Ok(())
        },
    );
    t.func_wrap(
        MODULE,
        "get_uri",
        |c: &mut dyn Caller, buf: u32, limit: u32| -> Result<i32, HostError> {
            with_scratch(c, |c, uri| {
                uri.extend_from_slice(exchange(c, "get_uri")?.uri_text().as_bytes());
                #[cfg(feature = "fault-injection")]
                if crate::faults::active(crate::faults::Fault::HttpWasmGetUriDecoded) {
                    *uri = crate::faults::percent_decode(std::str::from_utf8(uri).unwrap_or(""));
                }
                write_value(c, buf, limit, uri)
            })
        },
    );
    t.func_wrap(
        MODULE,
        "set_uri",
        |c: &mut dyn Caller, ptr: u32, len: u32| -> Result<(), HostError> {
            charge(c, len, "set_uri")?;
            let bytes = c.read(ptr, len)?;
            let ex = exchange(c, "set_uri")?;
            if ex.phase == Phase::Response {
                return Err(trap("set_uri: the request cannot change after next"));
            }
            ex.set_uri(&bytes).map_err(trap)
        },
    );
    t.func_wrap(
        MODULE,
        "get_protocol_version",
        |c: &mut dyn Caller, buf: u32, limit: u32| -> Result<i32, HostError> {
            let v = crate::model::go_proto(exchange(c, "get_protocol_version")?.request.version);
            write_value(c, buf, limit, v.as_bytes())
        },
    );
    t.func_wrap(
        MODULE,
        "get_header_names",
        |c: &mut dyn Caller, kind: i32, buf: u32, limit: u32| -> Result<i64, HostError> {
            let kind = header_kind(kind, "get_header_names")?;
            request_trailers_arrived(c, kind, "get_header_names")?;
            with_scratch(c, |c, out| {
                let ex = exchange(c, "get_header_names")?;
                let count = match headers_for(ex, kind, false, "get_header_names")? {
                    Some(h) => join_list(out, h.header_map().keys().map(|n| n.as_str().as_bytes())),
                    None => 0,
                };
                write_list(c, buf, limit, out, count)
            })
        },
    );
    t.func_wrap(
        MODULE,
        "get_header_values",
        |c: &mut dyn Caller,
         kind: i32,
         name: u32,
         name_len: u32,
         buf: u32,
         limit: u32|
         -> Result<i64, HostError> {
            let kind = header_kind(kind, "get_header_values")?;
            let name = read_name(c, name, name_len, "get_header_values")?;
            request_trailers_arrived(c, kind, "get_header_values")?;
            with_scratch(c, |c, out| {
                let ex = exchange(c, "get_header_values")?;
                let count = match (
                    headers_for(ex, kind, false, "get_header_values")?,
                    std::str::from_utf8(&name),
                ) {
                    (Some(h), Ok(name)) => join_list(out, h.get_all(name)),
                    _ => 0,
                };
                write_list(c, buf, limit, out, count)
            })
        },
    );
    for (func, add) in [("set_header_value", false), ("add_header_value", true)] {
        t.func_wrap(
            MODULE,
            func,
            move |c: &mut dyn Caller,
                  kind: i32,
                  name: u32,
                  name_len: u32,
                  value: u32,
                  value_len: u32|
                  -> Result<(), HostError> {
                let kind = header_kind(kind, func)?;
                charge(c, name_len.saturating_add(value_len), func)?;
                let name = read_name(c, name, name_len, func)?;
                let value = c.read(value, value_len)?;
                let (name, value) = validate_header(&name, value, func)?;
                request_trailers_arrived(c, kind, func)?;
                let ex = exchange(c, func)?;
                let is_length = name == http::header::CONTENT_LENGTH;
                let headers = headers_for(ex, kind, true, func)?
                    .ok_or_else(|| trap(format!("{func}: no such header list now")))?;
                if !headers.fits_one_more(name.as_str(), value.len()) {
                    return Err(trap(format!(
                        "{func}: a header list may hold at most {GUEST_MAX_FIELD_LINES} field \
                         lines and {GUEST_MAX_HEADER_BYTES} bytes"
                    )));
                }
                if add {
                    headers.append(name, value);
                } else {
                    headers.set(name, value);
                }
                if is_length {
                    mark_length_set(ex, kind, true);
                }
                Ok(())
            },
        );
    }
    t.func_wrap(
        MODULE,
        "remove_header",
        |c: &mut dyn Caller, kind: i32, name: u32, name_len: u32| -> Result<(), HostError> {
            let kind = header_kind(kind, "remove_header")?;
            let name = read_name(c, name, name_len, "remove_header")?;
            request_trailers_arrived(c, kind, "remove_header")?;
            let ex = exchange(c, "remove_header")?;
            if let (Some(h), Ok(name)) = (
                headers_for(ex, kind, true, "remove_header")?,
                std::str::from_utf8(&name),
            ) {
                h.remove(name);
                if name.eq_ignore_ascii_case("content-length") {
                    mark_length_set(ex, kind, false);
                }
            }
            Ok(())
        },
    );
    t.func_wrap(
        MODULE,
        "read_body",
        |c: &mut dyn Caller, kind: i32, buf: u32, limit: u32| -> Result<i64, HostError> {
            let kind = body_kind(kind, "read_body")?;
            let (buf, limit) = (buf, limit as usize);
            if limit == 0 {
                return Err(trap("read_body: buf_limit must not be 0"));
            }
            let max_body = state(c)?.shared.max_body_bytes;
            let ex = exchange(c, "read_body")?;
            let (chunk, eof) = match (kind, ex.phase) {
                (BodyKind::Request, Phase::Request) => {
                    // Served from what was read ahead; past it the body is larger than
                    // maxBodyBytes (nothing waits for the client inside a guest call).
                    if ex.body.pending.is_empty() && !ex.body.eof {
                        return Err(past_read_ahead(
                            &mut ex.body,
                            format!(
                                "read_body: the request body is larger than maxBodyBytes \
                                 ({max_body} bytes)"
                            ),
                        ));
                    }
                    let chunk = ex.body.take_pending(limit);
                    if !ex.has(feature::BUFFER_REQUEST) {
                        // Without buffer_request what the guest reads is gone.
                        ex.body.consumed.clear();
                    }
                    (chunk, ex.body.eof && ex.body.pending.is_empty())
                }
                (BodyKind::Request, Phase::Response) => {
                    if !ex.has(feature::BUFFER_REQUEST) {
                        return Err(trap(
                            "read_body: reading the request body after next needs buffer_request",
                        ));
                    }
                    ex.body.read_replay(limit)
                }
                (BodyKind::Response, phase) => {
                    if !ex.has(feature::BUFFER_RESPONSE) {
                        return Err(trap(
                            "read_body: reading the response body needs buffer_response",
                        ));
                    }
                    let source = match phase {
                        Phase::Request => ex
                            .response
                            .written
                            .as_ref()
                            .map(|(_, w)| w.clone().freeze())
                            .unwrap_or_default(),
                        Phase::Response => ex.response.buffered.clone().unwrap_or_default(),
                    };
                    let start = ex.response.read_pos.min(source.len());
                    let end = (start + limit).min(source.len());
                    ex.response.read_pos = end;
                    (source.slice(start..end), end == source.len())
                }
            };
            if !chunk.is_empty() {
                c.write(buf, &chunk)?;
            }
            Ok(eof_len(eof, chunk.len()))
        },
    );
    t.func_wrap(
        MODULE,
        "write_body",
        |c: &mut dyn Caller, kind: i32, body: u32, len: u32| -> Result<(), HostError> {
            let kind = body_kind(kind, "write_body")?;
            // What this write leaves in the body is bounded like any body a plugin buffers;
            // checked before the bytes are copied out of the guest.
            let limit = state(c)?.shared.max_body_bytes;
            let ex = exchange(c, "write_body")?;
            match kind {
                BodyKind::Request if ex.phase == Phase::Response => {
                    return Err(trap("write_body: the request cannot change after next"));
                }
                BodyKind::Response
                    if ex.phase == Phase::Response && !ex.has(feature::BUFFER_RESPONSE) =>
                {
                    return Err(trap(
                        "write_body: changing the response after next needs buffer_response",
                    ));
                }
                _ => {}
            }
            // The first response write of a phase replaces the body of the phase before: the
            // host no longer holds that one.
            let (so_far, replaced) = match kind {
                BodyKind::Request => (ex.body.written.as_ref().map_or(0, |w| w.len()), 0),
                BodyKind::Response => match &ex.response.written {
                    Some((p, w)) if *p == ex.phase => (w.len(), 0),
                    Some((_, w)) => (0, w.len()),
                    None => (0, 0),
                },
            };
            if so_far + len as usize > limit {
                return Err(trap(format!(
                    "write_body: the body would exceed maxBodyBytes ({limit} bytes)"
                )));
            }
            ex.release(replaced);
            charge(c, len, "write_body")?;
            let data = c.read(body, len)?;
            let ex = exchange(c, "write_body")?;
            match kind {
                BodyKind::Request => ex
                    .body
                    .written
                    .get_or_insert_with(BytesMut::new)
                    .extend_from_slice(&data),
                // The first write in each phase replaces, later ones append.
                BodyKind::Response => match &mut ex.response.written {
                    Some((p, w)) if *p == ex.phase => w.extend_from_slice(&data),
                    slot => *slot = Some((ex.phase, BytesMut::from(&data[..]))),
                },
            }
            Ok(())
        },
    );
    t.func_wrap(
        MODULE,
        "get_status_code",
        |c: &mut dyn Caller| -> Result<i32, HostError> {
            let ex = exchange(c, "get_status_code")?;
            if !ex.has(feature::BUFFER_RESPONSE) {
                return Err(trap("get_status_code: needs buffer_response"));
            }
            Ok(ex.response.status as i32)
        },
    );
    t.func_wrap(
        MODULE,
        "set_status_code",
        |c: &mut dyn Caller, code: i32| -> Result<(), HostError> {
            let ex = exchange(c, "set_status_code")?;
            if ex.phase == Phase::Response && !ex.has(feature::BUFFER_RESPONSE) {
                return Err(trap(
                    "set_status_code: changing the response after next needs buffer_response",
                ));
            }
            if !(100..=999).contains(&code) {
                return Err(trap(format!("set_status_code: invalid status {code}")));
            }
            ex.response.status = code as u16;
            Ok(())
        },
    );
    t.func_wrap(
        MODULE,
        "get_source_addr",
        |c: &mut dyn Caller, buf: u32, limit: u32| -> Result<i32, HostError> {
            let addr = exchange(c, "get_source_addr")?
                .request
                .source_addr
                .to_string();
            write_value(c, buf, limit, addr.as_bytes())
        },
    );
    t
}
