//! Buffers: `proxy_get_buffer_bytes`, `proxy_set_buffer_bytes`, `proxy_get_buffer_status`,
//! and 0.1.0's `proxy_get_configuration`.

use super::prelude::*;
use bytes::{Bytes, BytesMut};

/// The bytes `range` of the buffer `ty` names now (clamped to its end), and its length.
/// Only the window is copied: a filter that pauses on every chunk and reads a little of the
/// growing buffer each time must not cost a copy of all of it per call.
fn buffer_get(
    st: &mut VmState,
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
            body_of(st, ty).map(|b| window(b)).ok_or(status::NOT_FOUND)
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

/// The body buffer `ty` names, if the effective stream is in that direction's phase.
fn body_of(st: &mut VmState, ty: i32) -> Option<&mut BytesMut> {
    let d = Direction::of_buffer(ty)?;
    let s = st.active_stream()?;
    if s.phase != d.phase() {
        return None;
    }
    s.body_mut(d).as_mut()
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

/// How many bytes [`splice`] adds to a buffer of `len` bytes (0 when it shrinks it or
/// refuses the edit).
fn grown_by(len: usize, start: u32, size: u32, value: usize) -> usize {
    if start == 0 {
        value.saturating_sub((size as usize).min(len))
    } else {
        value
    }
}

/// This family's host functions.
pub(super) fn define(t: &mut Table) {
    use AbiVersion::V0_1_0;
    // Configuration (0.1.0).
    t.def(
        "proxy_get_configuration",
        V0_1_0,
        Some(V0_1_0),
        |c: &mut dyn Caller, return_data: u32, return_size: u32| {
            let st = state(c)?;
            let data = match st.callback {
                Callback::VmStart => st.shared.vm_config.clone(),
                _ => st.shared.plugin_config.clone(),
            };
            out(c, &data, return_data, return_size)?;
            Ok(status::OK)
        },
    );

    // Buffers.
    t.def(
        "proxy_get_buffer_bytes",
        V0_1_0,
        None,
        |c: &mut dyn Caller,
         buffer_type: i32,
         start: u32,
         max_size: u32,
         return_data: u32,
         return_size: u32| {
            let Some(end) = start.checked_add(max_size) else {
                // An unknown buffer type is still BAD_ARGUMENT, an absent one NOT_FOUND.
                return Ok(match buffer_get(state(c)?, buffer_type, 0..0) {
                    Ok(_) => status::BAD_ARGUMENT,
                    Err(s) => s,
                });
            };
            let data = match buffer_get(state(c)?, buffer_type, start as usize..end as usize) {
                Ok((d, _)) => d,
                Err(s) => return Ok(s),
            };
            out(c, &data, return_data, return_size)?;
            Ok(status::OK)
        },
    );
    t.def(
        "proxy_set_buffer_bytes",
        V0_1_0,
        None,
        |c: &mut dyn Caller,
         buffer_type: i32,
         start: u32,
         size: u32,
         value_data: u32,
         value_size: u32| {
            let ty = buffer_type;
            // No body may grow past maxBodyBytes (checked before the bytes are copied).
            let limit = state(c)?.shared.max_body_bytes;
            if value_size as usize > limit {
                return Ok(status::BAD_ARGUMENT);
            }
            let value = rd(c, value_data, value_size)?;
            let st = state(c)?;
            match ty {
                buffer::HTTP_REQUEST_BODY | buffer::HTTP_RESPONSE_BODY => {
                    let Some(len) = body_of(st, ty).map(|b| b.len()) else {
                        return Ok(status::NOT_FOUND);
                    };
                    // What the edit adds to the buffer counts against maxHostBytes (a filter
                    // rewriting each chunk in flight in place adds nothing).
                    let added = grown_by(len, start, size, value.len());
                    if st.charge_stream(added).is_err() {
                        return Ok(OVER_BUDGET);
                    }
                    let result = match body_of(st, ty) {
                        Some(b) => splice(b, start, size, &value, limit),
                        None => status::NOT_FOUND,
                    };
                    if result != status::OK {
                        st.release_stream(added);
                    }
                    Ok(result)
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
        },
    );
    t.def(
        "proxy_get_buffer_status",
        V0_1_0,
        None,
        |c: &mut dyn Caller, buffer_type: i32, return_length: u32, return_flags: u32| {
            let len = match buffer_get(state(c)?, buffer_type, 0..0) {
                Ok((_, len)) => len,
                Err(s) => return Ok(s),
            };
            c.write_u32(return_length, len as u32)?;
            c.write_u32(return_flags, 0)?;
            Ok(status::OK)
        },
    );
}
