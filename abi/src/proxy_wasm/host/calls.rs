//! HTTP calls (`proxy_http_call`), and gRPC and foreign functions: linked, not implemented.

use super::prelude::*;
use bytes::Bytes;
use std::time::Duration;

/// This family's host functions.
pub(super) fn define(t: &mut Table) {
    #[allow(unused_imports)]
    use AbiVersion::{V0_1_0, V0_2_0, V0_2_1};
    let mut def =
        |name, since, until, params: &[ValType], body| t.def(name, since, until, params, body);
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
    let unimplemented: Arc<Body> = Arc::new(|_, _| Ok(status::UNIMPLEMENTED));
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
}
