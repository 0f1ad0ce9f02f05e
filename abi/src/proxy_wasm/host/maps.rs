//! Header maps: `proxy_{get,set}_header_map_pairs`, `proxy_get_header_map_size`,
//! `proxy_{get,add,replace,remove}_header_map_value`.

use super::prelude::*;
use bytes::Bytes;
use http::HeaderValue;

/// A header name a filter may write: lower-cased, a token (pseudo-headers keep their colon).
fn valid_name(name: &[u8]) -> Option<String> {
    let rest = name.strip_prefix(b":").unwrap_or(name);
    if rest.is_empty() || http::HeaderName::from_bytes(rest).is_err() {
        return None;
    }
    Some(String::from_utf8_lossy(name).to_ascii_lowercase())
}

/// A header value a filter may write: what may go on the wire (no CR, LF, NUL or other
/// control byte but tab). Envoy refuses only CR, LF and NUL here; a value with another
/// control byte could not be sent, so it is refused where it is written rather than failing
/// the request later.
fn valid_value(v: Vec<u8>) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(Bytes::from(v)).ok()
}

/// Validated pairs for a map a filter writes.
pub(crate) fn valid_pairs(pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Option<Vec<(String, HeaderValue)>> {
    pairs
        .into_iter()
        .map(|(k, v)| Some((valid_name(&k)?, valid_value(v)?)))
        .collect()
}

/// The header map `ty` names now: `Err(BAD_ARGUMENT)` when unknown, absent or read-only for a write.
fn map_for(st: &mut VmState, ty: i32, write: bool) -> Result<&mut HeaderPairs, i32> {
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
    let (d, trailers) = Direction::of_map(ty).ok_or(status::BAD_ARGUMENT)?;
    let s = st.active_stream().ok_or(status::BAD_ARGUMENT)?;
    // A direction's maps are writable only in its own phase.
    if write && s.phase != d.phase() {
        return Err(status::BAD_ARGUMENT);
    }
    match (d, trailers) {
        (Direction::Request, false) => {
            s.request_headers_written |= write;
            Ok(&mut s.request_headers)
        }
        (Direction::Response, false) => {
            let h = s.response_headers.as_mut().ok_or(status::BAD_ARGUMENT)?;
            s.response_headers_written |= write;
            Ok(h)
        }
        // Response trailers exist once the response does.
        (Direction::Response, true) if s.response_headers.is_none() => Err(status::BAD_ARGUMENT),
        (d, true) => Ok(s.trailers_mut(d)),
    }
}

/// This family's host functions.
pub(super) fn define(t: &mut Table) {
    use AbiVersion::V0_1_0;
    // Header maps.
    t.def(
        "proxy_get_header_map_pairs",
        V0_1_0,
        None,
        |c: &mut dyn Caller, ty: i32, return_data: u32, return_size: u32| {
            if !(0..=7).contains(&ty) {
                return Ok(status::BAD_ARGUMENT);
            }
            let data = map_for(state(c)?, ty, false)
                .map(|h| ser(h))
                .unwrap_or_default();
            out(c, &data, return_data, return_size)?;
            Ok(status::OK)
        },
    );
    t.def(
        "proxy_set_header_map_pairs",
        V0_1_0,
        None,
        |c: &mut dyn Caller, map_type: i32, data: u32, size: u32| {
            let raw = rd(c, data, size)?;
            let Some(pairs) = serial::deserialize(&raw).ok().and_then(valid_pairs) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let st = state(c)?;
            if let Err(s) = map_for(st, map_type, true) {
                return Ok(s);
            }
            let bytes = pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
            if st.charge_stream(bytes).is_err() {
                return Ok(OVER_BUDGET);
            }
            let Ok(h) = map_for(st, map_type, true) else {
                return Ok(status::BAD_ARGUMENT);
            };
            *h = HeaderPairs::with_capacity(pairs.len());
            for (k, v) in pairs {
                h.append(k, v);
            }
            Ok(status::OK)
        },
    );
    t.def(
        "proxy_get_header_map_size",
        V0_1_0,
        None,
        |c: &mut dyn Caller, map_type: i32, return_size: u32| {
            let n = match map_for(state(c)?, map_type, false) {
                Ok(h) => ser(h).len(),
                Err(s) => return Ok(s),
            };
            c.write_u32(return_size, n as u32)?;
            Ok(status::OK)
        },
    );
    t.def(
        "proxy_get_header_map_value",
        V0_1_0,
        None,
        |c: &mut dyn Caller,
         map_type: i32,
         key_data: u32,
         key_size: u32,
         return_value_data: u32,
         return_value_size: u32| {
            let key = rd(c, key_data, key_size)?;
            let st = state(c)?;
            let v1 = st.shared.version == AbiVersion::V0_1_0;
            let value = match map_for(st, map_type, false) {
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
                    out(c, &v, return_value_data, return_value_size)?;
                    Ok(status::OK)
                }
                // 0.1.0 (Envoy): a missing key is OK with an empty value.
                None if v1 => {
                    out(c, &[], return_value_data, return_value_size)?;
                    Ok(status::OK)
                }
                None => Ok(status::NOT_FOUND),
            }
        },
    );
    for (name, replace) in [
        ("proxy_add_header_map_value", false),
        ("proxy_replace_header_map_value", true),
    ] {
        t.def(
            name,
            V0_1_0,
            None,
            move |c: &mut dyn Caller,
                  map_type: i32,
                  key_data: u32,
                  key_size: u32,
                  value_data: u32,
                  value_size: u32| {
                let key = rd(c, key_data, key_size)?;
                let value = rd(c, value_data, value_size)?;
                let (Some(key), Some(value)) = (valid_name(&key), valid_value(value)) else {
                    return Ok(status::BAD_ARGUMENT);
                };
                let st = state(c)?;
                let h = match map_for(st, map_type, true) {
                    Ok(h) => h,
                    Err(s) => return Ok(s),
                };
                // A map may not grow past what a serialized map may hold (1024 pairs, 1 MiB).
                if !h.fits_one_more(&key, value.len()) {
                    return Ok(status::BAD_ARGUMENT);
                }
                if st.charge_stream(key.len() + value.len()).is_err() {
                    return Ok(OVER_BUDGET);
                }
                let Ok(h) = map_for(st, map_type, true) else {
                    return Ok(status::BAD_ARGUMENT);
                };
                if replace {
                    h.set(&key, value);
                } else {
                    h.append(key, value);
                }
                Ok(status::OK)
            },
        );
    }
    t.def(
        "proxy_remove_header_map_value",
        V0_1_0,
        None,
        |c: &mut dyn Caller, map_type: i32, key_data: u32, key_size: u32| {
            let key = rd(c, key_data, key_size)?;
            let h = match map_for(state(c)?, map_type, true) {
                Ok(h) => h,
                Err(s) => return Ok(s),
            };
            if let Ok(k) = std::str::from_utf8(&key) {
                h.remove(k);
            }
            Ok(status::OK)
        },
    );
}
