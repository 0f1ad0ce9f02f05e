//! Properties: `proxy_get_property`, `proxy_set_property`, in Envoy's encodings.

use super::prelude::*;
use std::time::UNIX_EPOCH;

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
fn property(st: &mut VmState, path: &[u8]) -> Option<Vec<u8>> {
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
    let header_value = |h: &HeaderPairs, name: Option<&String>| -> Option<Vec<u8>> {
        match name {
            None => Some(ser(h)),
            Some(n) => h.get(n).map(|v| v.to_vec()),
        }
    };
    let pseudo = |h: &HeaderPairs, n: &str| h.get(n).map(|v| v.to_vec());
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
            info.start_time()
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
        // Envoy's attributes: mTLS is a verified client certificate on a TLS connection.
        ("connection", Some("mtls")) => {
            vec![info.tls.as_ref().is_some_and(|t| t.peer_certificate) as u8]
        }
        ("connection", Some("tls_version")) => info.tls.as_ref()?.version.as_bytes().to_vec(),
        ("connection", Some("requested_server_name")) => {
            info.tls.as_ref()?.server_name.clone()?.into_bytes()
        }
        ("request", Some("id")) => info.request_id.as_ref()?.as_str().as_bytes().to_vec(),
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

/// This family's host functions.
pub(super) fn define(t: &mut Table) {
    use AbiVersion::V0_1_0;
    // Properties.
    t.def(
        "proxy_get_property",
        V0_1_0,
        None,
        |c: &mut dyn Caller,
         path_data: u32,
         path_size: u32,
         return_value_data: u32,
         return_value_size: u32| {
            let path = rd(c, path_data, path_size)?;
            match property(state(c)?, &path) {
                Some(v) => {
                    out(c, &v, return_value_data, return_value_size)?;
                    Ok(status::OK)
                }
                None => Ok(status::NOT_FOUND),
            }
        },
    );
    t.def(
        "proxy_set_property",
        V0_1_0,
        None,
        |c: &mut dyn Caller, path_data: u32, path_size: u32, value_data: u32, value_size: u32| {
            let path = rd(c, path_data, path_size)?;
            let value = rd(c, value_data, value_size)?;
            if path.is_empty() {
                return Ok(status::BAD_ARGUMENT);
            }
            let key = split_path(&path).join(&0u8);
            let bytes = key.len() + value.len();
            let st = state(c)?;
            // A stream's properties go with the stream; the root context's stay until
            // replaced, so a replaced one is given back.
            if st.active_stream().is_some() {
                if st.charge_stream(bytes).is_err() {
                    return Ok(OVER_BUDGET);
                }
                if let Some(s) = st.active_stream() {
                    s.properties.insert(key, value);
                }
            } else {
                let old = st
                    .root_properties
                    .get(&key)
                    .map_or(0, |v| key.len() + v.len());
                if bytes > old {
                    if st.budget.charge(bytes - old).is_err() {
                        return Ok(OVER_BUDGET);
                    }
                } else {
                    st.budget.release(old - bytes);
                }
                st.root_properties.insert(key, value);
            }
            Ok(status::OK)
        },
    );
}
