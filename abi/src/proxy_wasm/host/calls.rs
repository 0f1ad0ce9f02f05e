//! HTTP calls (`proxy_http_call`), and gRPC and foreign functions: linked, not implemented.

use super::prelude::*;
use crate::guest::Charge;
use crate::proxy_wasm::MAX_CALLS_OUT;
use bytes::Bytes;
use std::time::Duration;

/// This family's host functions.
pub(super) fn define(t: &mut Table) {
    use AbiVersion::{V0_1_0, V0_2_0};
    // HTTP calls.
    t.def(
        "proxy_http_call",
        V0_1_0,
        None,
        |c: &mut dyn Caller,
         upstream_data: u32,
         upstream_size: u32,
         headers_data: u32,
         headers_size: u32,
         body_data: u32,
         body_size: u32,
         trailers_data: u32,
         trailers_size: u32,
         timeout_ms: u32,
         return_token: u32| {
            let upstream = rd(c, upstream_data, upstream_size)?;
            let headers = rd(c, headers_data, headers_size)?;
            let body = rd(c, body_data, body_size)?;
            let trailers = rd(c, trailers_data, trailers_size)?;
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
            let ctx = st.effective_ctx;
            if st.calls_out.get(&ctx).copied().unwrap_or(0) >= MAX_CALLS_OUT {
                return Ok(status::INTERNAL_FAILURE);
            }
            // What the call carries is held until it is done.
            let bytes = service.len()
                + body.len()
                + [&headers, &trailers]
                    .iter()
                    .flat_map(|m| m.iter())
                    .map(|(k, v)| k.len() + v.len())
                    .sum::<usize>();
            let mut held = Charge::default();
            if held.add(&st.budget, bytes).is_err() {
                return Ok(OVER_BUDGET);
            }
            let token = st.next_token;
            c.write_u32(return_token, token)?;
            let st = state(c)?;
            st.next_token += 1;
            *st.calls_out.entry(ctx).or_default() += 1;
            st.pending_calls.push(PendingCall {
                token,
                ctx,
                service,
                headers,
                body: Bytes::from(body),
                trailers,
                timeout: (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms as u64)),
                _held: held,
            });
            Ok(status::OK)
        },
    );

    // gRPC and foreign functions: linked (filters built with them load), not implemented.
    t.unimplemented("proxy_grpc_call", V0_1_0, 12);
    t.unimplemented("proxy_grpc_stream", V0_1_0, 9);
    t.unimplemented("proxy_grpc_send", V0_1_0, 4);
    t.unimplemented("proxy_grpc_cancel", V0_1_0, 1);
    t.unimplemented("proxy_grpc_close", V0_1_0, 1);
    t.unimplemented("proxy_call_foreign_function", V0_2_0, 6);
}
