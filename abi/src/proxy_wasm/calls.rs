//! HTTP calls (`proxy_http_call`): sending them to their service and delivering each
//! response to the root context (`proxy_on_http_call_response`).
//!
//! Whoever ran the callback that dispatched calls sends them: the stream's driver for
//! stream callbacks (the stream waits for them, as before a resume), the VM's dispatcher for
//! root callbacks. The VM is not held while a call is out.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{header, HeaderValue, Method, Uri};

use super::abi::status;
use super::maps::pairs_of;
use super::pairs::HeaderPairs;
use super::state::{CallResponse, MiddlewareShared, PendingCall};
use super::vm::{Vm, VmSet};
use super::MAX_CALL_TIMEOUT;
use crate::body::{Body, BufferedBody};
use crate::error::ProxyError;
use crate::headers::Headers;
use crate::model::Request;

/// Calls still out, answered to the VM one by one; those never answered (the sender was
/// dropped) stop counting when this goes.
struct InFlight<'a> {
    vm: &'a Vm,
    n: usize,
}

impl InFlight<'_> {
    fn answered(&mut self) {
        self.n -= 1;
        self.vm.call_answered(1);
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.vm.call_answered(self.n);
    }
}

impl VmSet {
    /// Sends `calls` (taken from `vm`) one after the other, delivering each response to the
    /// VM's root context, and the calls those callbacks make, until none is left. All of them
    /// share one deadline, [`MAX_CALL_TIMEOUT`] from now: a call still to send past it is
    /// answered as timed out, so a chain of calls cannot hold a stream longer than that.
    pub(crate) async fn drive(
        self: &Arc<Self>,
        vm: &Arc<Vm>,
        calls: Vec<PendingCall>,
    ) -> Result<(), ProxyError> {
        let mut queue = VecDeque::from(calls);
        let mut flight = InFlight { vm, n: queue.len() };
        let deadline = tokio::time::Instant::now() + MAX_CALL_TIMEOUT;
        while let Some(call) = queue.pop_front() {
            let result = execute(&self.shared, &call, deadline).await;
            let mut g = vm.lock().await?;
            let root = g.state().root_ctx;
            let args = match result {
                Ok(resp) => {
                    let a = [
                        root as i32,
                        call.token as i32,
                        resp.headers.len() as i32,
                        resp.body.len() as i32,
                        resp.trailers.len() as i32,
                    ];
                    let s = g.state();
                    s.call_response = Some(resp);
                    s.last_status = (status::OK as u32, String::new());
                    a
                }
                Err(msg) => {
                    let s = g.state();
                    s.call_response = None;
                    s.last_status = (status::BROKEN_CONNECTION as u32, msg);
                    [root as i32, call.token as i32, 0, 0, 0]
                }
            };
            let r = g.call("proxy_on_http_call_response", root, &args);
            let s = g.state();
            s.call_response = None;
            if let Some(n) = s.calls_out.get_mut(&call.ctx) {
                *n = n.saturating_sub(1);
            }
            if let Err(t) = r {
                return Err(self.trapped(&mut g, &t));
            }
            let more = g.take_calls();
            flight.n += more.len();
            queue.extend(more);
            // Answered only now, with the response delivered: a stream waiting for it must
            // see the resume, not "nothing left".
            flight.answered();
        }
        Ok(())
    }
}

/// Sends one http call to its service.
pub(crate) async fn execute(
    shared: &MiddlewareShared,
    call: &PendingCall,
    deadline: tokio::time::Instant,
) -> Result<CallResponse, String> {
    let endpoint = shared
        .services
        .service(&call.service)
        .ok_or_else(|| format!("unknown service {:?}", call.service))?;
    let get = |n: &[u8]| {
        call.headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    let method = Method::from_bytes(get(b":method").as_bytes()).map_err(|e| e.to_string())?;
    let uri: Uri = get(b":path")
        .parse()
        .map_err(|e: http::uri::InvalidUri| e.to_string())?;
    let mut req = Request::new(method, uri, SocketAddr::from(([127, 0, 0, 1], 0)));
    req.headers.append(http::header::HOST, get(b":authority"));
    for (k, v) in &call.headers {
        if !k.starts_with(b":") && !k.eq_ignore_ascii_case(b"host") {
            req.headers
                .append(&*String::from_utf8_lossy(k), v.as_slice());
        }
    }
    if !call.body.is_empty() {
        req.headers.set(header::CONTENT_LENGTH, call.body.len());
    }
    let mut trailers = Headers::new();
    for (k, v) in &call.trailers {
        trailers.append(&*String::from_utf8_lossy(k), v.as_slice());
    }
    req.body = Body::from(BufferedBody {
        data: call.body.clone(),
        trailers: Some(trailers),
    });
    let limit = shared.max_body_bytes;
    let timeout = call
        .timeout
        .unwrap_or(MAX_CALL_TIMEOUT)
        .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
    let fut = async move {
        let resp = endpoint.call(req).await.map_err(|e| e.message.clone())?;
        let b = resp.body.buffer(limit).await.map_err(|e| e.to_string())?;
        let mut headers = HeaderPairs::with_capacity(resp.headers.len() + 1);
        headers.append(":status", HeaderValue::from(resp.status.as_u16()));
        for (k, v) in resp.headers.iter_fields() {
            headers.append(k.as_str(), v.clone());
        }
        Ok::<_, String>(CallResponse {
            headers,
            body: b.data,
            trailers: b.trailers.map(|t| pairs_of(&t)).unwrap_or_default(),
        })
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err("timeout".into()),
    }
}
