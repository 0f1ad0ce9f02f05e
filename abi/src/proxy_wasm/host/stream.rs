//! Stream control: `proxy_continue_stream`, `proxy_close_stream` (0.1.0's
//! `proxy_continue_request`, `proxy_continue_response`, `proxy_clear_route_cache`), and
//! `proxy_send_local_response`.

use super::prelude::*;
use bytes::Bytes;

use super::maps::valid_pairs;

/// This family's host functions.
pub(super) fn define(t: &mut Table) {
    use AbiVersion::{V0_1_0, V0_2_0};
    // Stream control; 0.1.0 names each direction's resume.
    for (name, d) in [
        ("proxy_continue_request", Direction::Request),
        ("proxy_continue_response", Direction::Response),
    ] {
        t.def(
            name,
            V0_1_0,
            Some(V0_1_0),
            move |c: &mut dyn Caller| match state(c)?.active_stream() {
                Some(s) => {
                    s.resume(d);
                    Ok(status::OK)
                }
                None => Ok(status::NOT_FOUND),
            },
        );
    }
    // Routes are chosen before middlewares run: there is no route cache to clear.
    t.def(
        "proxy_clear_route_cache",
        V0_1_0,
        Some(V0_1_0),
        |_c: &mut dyn Caller| Ok(status::OK),
    );
    for (name, close) in [
        ("proxy_continue_stream", false),
        ("proxy_close_stream", true),
    ] {
        t.def(name, V0_2_0, None, move |c: &mut dyn Caller, ty: i32| {
            if matches!(ty, stream::DOWNSTREAM | stream::UPSTREAM) {
                return Ok(status::UNIMPLEMENTED);
            }
            let Some(d) = Direction::of_stream(ty) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let Some(s) = state(c)?.active_stream() else {
                return Ok(status::NOT_FOUND);
            };
            if close {
                s.closed = true;
                s.wake.notify_one();
            } else {
                s.resume(d);
            }
            Ok(status::OK)
        });
    }
    t.def(
        "proxy_send_local_response",
        V0_1_0,
        None,
        |c: &mut dyn Caller,
         code: i32,
         details_data: u32,
         details_size: u32,
         body_data: u32,
         body_size: u32,
         headers_data: u32,
         headers_size: u32,
         grpc_status: i32| {
            let details = rd(c, details_data, details_size)?;
            let body = rd(c, body_data, body_size)?;
            let raw = rd(c, headers_data, headers_size)?;
            if !(100..=599).contains(&code) {
                return Ok(status::BAD_ARGUMENT);
            }
            let Some(headers) = serial::deserialize(&raw).ok().and_then(valid_pairs) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let st = state(c)?;
            let sh = st.shared.clone();
            if st.active_stream().is_none() {
                return Ok(status::NOT_FOUND);
            }
            let bytes = body.len() + headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
            if st.charge_stream(bytes).is_err() {
                return Ok(OVER_BUDGET);
            }
            let Some(s) = st.active_stream() else {
                return Ok(status::NOT_FOUND);
            };
            if !details.is_empty() {
                tracing::debug!(target: "wasmgate::plugin", plugin = %sh.plugin, middleware = %sh.middleware,
                "local response {code}: {}", String::from_utf8_lossy(&details));
            }
            let mut reply = LocalResponse {
                status: code as u16,
                headers,
                body: Bytes::from(body),
            };
            let grpc = s
                .request_headers
                .get_str("content-type")
                .is_some_and(|t| t.starts_with("application/grpc"));
            if grpc {
                reply = grpc_local_reply(reply, grpc_status);
            }
            s.local_response = Some(reply);
            s.wake.notify_one();
            Ok(status::OK)
        },
);
}

/// A local reply to a gRPC request, as Envoy's `sendLocalReply` makes it: trailers-only,
/// HTTP 200, `grpc-status` the guest's (−1: mapped from the HTTP code), the body as
/// `grpc-message` (percent-encoded), no body.
fn grpc_local_reply(mut reply: LocalResponse, grpc_status: i32) -> LocalResponse {
    let status = if grpc_status >= 0 {
        grpc_status as u32
    } else {
        // Envoy's Grpc::Utility::httpToGrpcStatus.
        match reply.status {
            400 => 13,
            401 => 16,
            403 => 7,
            404 => 12,
            429 | 502..=504 => 14,
            _ => 2,
        }
    };
    reply
        .headers
        .retain(|(k, _)| !k.eq_ignore_ascii_case("content-type"));
    reply.headers.push((
        "content-type".into(),
        http::HeaderValue::from_static("application/grpc"),
    ));
    // A grpc-status among the guest's headers stays (Envoy sets it only when absent).
    if !reply
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("grpc-status"))
    {
        reply
            .headers
            .push(("grpc-status".into(), http::HeaderValue::from(status)));
    }
    if !reply.body.is_empty() {
        let mut msg = String::new();
        for &b in reply.body.iter() {
            if (0x20..=0x7e).contains(&b) && b != b'%' {
                msg.push(b as char);
            } else {
                msg.push_str(&format!("%{b:02X}"));
            }
        }
        reply.headers.push((
            "grpc-message".into(),
            http::HeaderValue::from_maybe_shared(Bytes::from(msg))
                .unwrap_or_else(|_| http::HeaderValue::from_static("")),
        ));
    }
    reply.status = 200;
    reply.body = Bytes::new();
    reply
}
