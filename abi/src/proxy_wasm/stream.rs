//! The stream driver: [`ProxyWasmMiddleware`] runs each request as one HTTP context on one
//! of its VMs, phase by phase: context creation, request headers, body and trailers, the
//! upstream, response headers, body and trailers, then `on_done`, `on_log`, `on_delete`.
//!
//! Each phase locks the VM for its guest calls only; waiting for the body, the upstream, an
//! http call or a resume happens with the VM free for other streams.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http_body_util::BodyExt;
use tokio::sync::Notify;

use super::abi::action;
use super::maps::{
    apply_request_map, apply_response_map, local_response, request_map, response_map,
};
use super::state::{Direction, PendingCall, Phase, RequestInfo, Stream};
use super::vm::{Guest, Vm, VmSet};
use super::MAX_PAUSE;
use crate::body::{Body, BufferError, BufferedBody};
use crate::error::{ErrorSource, ProxyError};
use crate::guest::Failures;
use crate::headers::Headers;
use crate::middleware::{Middleware, Next};
use crate::model::{Request, Response};

/// A middleware running a proxy-wasm filter on a small set of VMs.
pub struct ProxyWasmMiddleware {
    pub(crate) set: Arc<VmSet>,
    /// Its failure policy, reload backoff and failure log.
    pub(crate) failures: Arc<Failures>,
}

impl ProxyWasmMiddleware {
    /// How many VMs the middleware keeps (one per runtime worker, or `maxInstances`).
    pub fn vm_count(&self) -> usize {
        self.set.count()
    }

    /// VMs created so far, replacements of poisoned ones included.
    pub fn vms_created(&self) -> u64 {
        self.set.created()
    }

    /// Streams alive on the middleware's current VMs.
    pub fn live_streams(&self) -> usize {
        self.set.live()
    }
}

static NEXT_STREAM: AtomicU64 = AtomicU64::new(1);

#[async_trait]
impl Middleware for ProxyWasmMiddleware {
    async fn handle(&self, mut req: Request, next: Next<'_>) -> Result<Response, ProxyError> {
        let vm = self.set.pick().await?;
        let mut run = StreamRun {
            set: self.set.clone(),
            vm,
            ctx: 0,
            wake: Arc::new(Notify::new()),
            open: false,
        };
        let result = run.run(&mut req, next).await;
        if result.is_err() && run.open && !run.vm.is_poisoned() {
            // The stream failed outside the guest (a 413, say): end the context properly.
            let _ = run.finish().await;
        }
        result
    }
}

/// One stream on one VM.
struct StreamRun {
    set: Arc<VmSet>,
    vm: Arc<Vm>,
    /// Its context id (unique in the VM).
    ctx: u32,
    wake: Arc<Notify>,
    /// The context was created and not ended yet.
    open: bool,
}

impl Drop for StreamRun {
    fn drop(&mut self) {
        self.vm.live.fetch_sub(1, Ordering::Relaxed);
        // Still open here: the request was abandoned (its future dropped, the client gone).
        // Its context is ended on a task of its own; the VM goes on with its other streams.
        if self.open && !self.vm.is_poisoned() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let (set, vm, ctx) = (self.set.clone(), self.vm.clone(), self.ctx);
                rt.spawn(async move {
                    let _ = end_context(&set, &vm, ctx).await;
                });
            }
        }
    }
}

/// `on_done`, `on_log`, `on_delete`, in the spec's order, then the context is gone; the
/// response headers as the filter left them.
async fn end_context(
    set: &Arc<VmSet>,
    vm: &Arc<Vm>,
    ctx: u32,
) -> Result<Option<Headers>, ProxyError> {
    let mut g = vm.lock().await?;
    g.stream(ctx).phase = Phase::Done;
    let arg = [ctx as i32];
    let r = g.call("proxy_on_done", ctx, &arg).and_then(|done| {
        if done == Some(0) {
            g.stream(ctx).done_pending = true;
        }
        g.call("proxy_on_log", ctx, &arg)?;
        g.call("proxy_on_delete", ctx, &arg)
    });
    if let Err(t) = r {
        return Err(set.trapped(&mut g, &t));
    }
    let st = g.state();
    let stream = st.streams.remove(&ctx);
    st.calls_out.remove(&ctx);
    st.effective_ctx = st.root_ctx;
    let calls = g.take_calls();
    drop(g);
    spawn_drive(set, vm, calls);
    Ok(stream.and_then(|s| s.response_headers))
}

/// Sends calls whose dispatcher does not wait for them (a stream that stopped or ended).
fn spawn_drive(set: &Arc<VmSet>, vm: &Arc<Vm>, calls: Vec<PendingCall>) {
    if calls.is_empty() {
        return;
    }
    let (set, vm) = (set.clone(), vm.clone());
    tokio::spawn(async move {
        if let Err(e) = set.drive(&vm, calls).await {
            tracing::error!(target: "wasmgate::plugin", plugin = %set.shared.plugin,
                middleware = %set.shared.middleware, "http call response failed: {e}");
        }
    });
}

fn body_failed(d: Direction, e: impl std::fmt::Display) -> ProxyError {
    match d {
        Direction::Request => ProxyError::bad_request(format!("request body failed: {e}")),
        Direction::Response => ProxyError::bad_gateway(format!("response body failed: {e}")),
    }
}

impl StreamRun {
    async fn guest(&self) -> Result<Guest<'_>, ProxyError> {
        self.vm.lock().await
    }

    /// Calls `name` on this stream's context; a trap poisons the VM.
    fn call(&self, g: &mut Guest<'_>, name: &str, args: &[i32]) -> Result<Option<i32>, ProxyError> {
        g.call(name, self.ctx, args)
            .map_err(|t| self.set.trapped(g, &t))
    }

    fn plugin_error(&self, msg: String) -> ProxyError {
        ProxyError::plugin(format!(
            "plugin {} (middleware {}): {msg}",
            self.set.shared.plugin, self.set.shared.middleware
        ))
    }

    /// Creates the stream's context and runs the request headers callback, in one turn on
    /// the VM; `Ok(true)`: the stream must stop here.
    async fn open(&mut self, req: &Request, eos: bool) -> Result<bool, ProxyError> {
        let info = RequestInfo {
            version: req.version,
            source: req.source_addr,
            destination: req.local_addr,
            start: SystemTime::now(),
            started: Instant::now(),
            request_size: 0,
            response_code: None,
            response_size: 0,
            connection_id: NEXT_STREAM.fetch_add(1, Ordering::Relaxed),
        };
        let map = request_map(req);
        let n = map.len() as i32;
        let d = Direction::Request;
        let vm = self.vm.clone();
        let (paused, stop, calls) = {
            let mut g = vm.lock().await?;
            let st = g.state();
            let (ctx, root) = (st.next_ctx, st.root_ctx);
            st.next_ctx += 1;
            let stream = Stream::new(ctx, map, info);
            self.wake = stream.wake.clone();
            st.streams.insert(ctx, stream);
            self.ctx = ctx;
            self.open = true;
            let args = [ctx as i32, root as i32];
            self.call(&mut g, "proxy_on_context_create", &args)?;
            let args = [n, eos as i32];
            self.run_callback(&mut g, d.headers_callback(), &args, d, |_| {})?
        };
        self.after_callback(paused, stop, calls, d).await
    }

    /// Runs a stream callback (after `prepare` on the stream) and everything it started;
    /// `Ok(true)`: the stream must stop here (a local response or a close).
    async fn callback(
        &mut self,
        name: &str,
        args: &[i32],
        d: Direction,
        prepare: impl FnOnce(&mut Stream),
    ) -> Result<bool, ProxyError> {
        let (paused, stop, calls) = {
            let mut g = self.guest().await?;
            self.run_callback(&mut g, name, args, d, prepare)?
        };
        self.after_callback(paused, stop, calls, d).await
    }

    /// The guest side of a stream callback: whether it paused, whether the filter stopped
    /// the stream, and the http calls it made.
    fn run_callback(
        &self,
        g: &mut Guest<'_>,
        name: &str,
        args: &[i32],
        d: Direction,
        prepare: impl FnOnce(&mut Stream),
    ) -> Result<(bool, bool, Vec<PendingCall>), ProxyError> {
        let s = g.stream(self.ctx);
        prepare(s);
        *s.resumed_mut(d) = false;
        let mut full = vec![self.ctx as i32];
        full.extend_from_slice(args);
        let r = self.call(g, name, &full)?;
        let stop = g.stream(self.ctx).stopped();
        Ok((
            r.is_some_and(|a| a != action::CONTINUE),
            stop,
            g.take_calls(),
        ))
    }

    /// The host side of a stream callback, with the VM free: sends its calls, waits for a
    /// resume if it paused. `Ok(true)`: the stream must stop here.
    async fn after_callback(
        &mut self,
        paused: bool,
        stop: bool,
        calls: Vec<PendingCall>,
        d: Direction,
    ) -> Result<bool, ProxyError> {
        if stop {
            spawn_drive(&self.set, &self.vm, calls);
            return Ok(true);
        }
        self.settle(calls, paused, d).await
    }

    /// After a stream callback: sends the calls it made; then, if it paused, waits for a
    /// resume with the VM free. `Ok(true)`: the filter stopped the stream.
    async fn settle(
        &mut self,
        calls: Vec<PendingCall>,
        paused: bool,
        d: Direction,
    ) -> Result<bool, ProxyError> {
        // Nothing ran since the callback, which did not stop the stream: nothing to look at.
        if calls.is_empty() && !paused {
            return Ok(false);
        }
        self.set.drive(&self.vm, calls).await?;
        let deadline = tokio::time::Instant::now() + MAX_PAUSE;
        loop {
            // Enabled before looking: a wake-up while we look is not lost.
            let changed = self.vm.changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut g = self.guest().await?;
                let in_flight = self.vm.in_flight.load(Ordering::Acquire);
                let st = g.state();
                let ticking = st.tick_period.is_some();
                let pending = !st.pending_calls.is_empty();
                let s = g.stream(self.ctx);
                if s.stopped() {
                    return Ok(true);
                }
                if !paused || std::mem::take(s.resumed_mut(d)) {
                    return Ok(false);
                }
                // Only the VM's ticks and http calls can resume it (queue readiness goes to
                // the root context too, but nothing waits for it).
                if !ticking && !pending && in_flight == 0 {
                    return Err(self.plugin_error(
                        "the filter paused the stream with nothing pending that could resume it"
                            .into(),
                    ));
                }
            }
            if tokio::time::timeout_at(deadline, self.vm.woken(&self.wake, changed))
                .await
                .is_err()
            {
                return Err(
                    self.plugin_error(format!("stream stayed paused longer than {MAX_PAUSE:?}"))
                );
            }
        }
    }

    /// Runs body callbacks over `body`; returns the body to forward, or `None` to stop.
    async fn filter_body(
        &mut self,
        mut body: Body,
        d: Direction,
    ) -> Result<Option<BufferedBody>, ProxyError> {
        let (cb, tcb) = (d.body_callback(), d.trailers_callback());
        let limit = self.set.shared.max_body_bytes;
        let too_large = |this: &Self| match d {
            Direction::Request => ProxyError::new(
                ErrorSource::Downstream,
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body exceeds the {limit}-byte buffer limit"),
            ),
            Direction::Response => this.plugin_error(format!(
                "response body exceeds the {limit}-byte buffer limit"
            )),
        };
        let has_body_cb = self.set.has_export(cb);
        let has_trailers_cb = self.set.has_export(tcb);
        let mut forwarded = BytesMut::new();
        let mut trailers: Option<Headers> = None;
        let no_body = body.is_end_stream();
        if has_body_cb && !no_body {
            let mut held = BytesMut::new();
            loop {
                let frame = body.frame().await;
                let (eos, chunk) = match frame {
                    // With trailers the body never ends itself (Envoy): no end-of-stream
                    // body call; what a pause held goes on with the trailers.
                    None if trailers.as_ref().is_some_and(|t| !t.is_empty()) => {
                        forwarded.extend_from_slice(&held);
                        break;
                    }
                    None => (true, Bytes::new()),
                    Some(Err(e)) => return Err(body_failed(d, e)),
                    // As Envoy: when the body is known to end with this chunk (Content-Length
                    // reached, HTTP/2 END_STREAM on the DATA frame), the chunk itself carries
                    // end_of_stream; an empty end call comes only when the end arrives later.
                    Some(Ok(f)) => match f.into_data() {
                        Ok(data) => (body.is_end_stream(), data),
                        Err(f) => {
                            if let Ok(t) = f.into_trailers() {
                                trailers = Some(Headers::from(&t));
                            }
                            continue;
                        }
                    },
                };
                if !eos && chunk.is_empty() {
                    continue;
                }
                held.extend_from_slice(&chunk);
                if forwarded.len() + held.len() > limit {
                    return Err(too_large(self));
                }
                let (paused, stop, calls) = {
                    let mut g = self.guest().await?;
                    let s = g.stream(self.ctx);
                    match d {
                        Direction::Request => s.info.request_size += chunk.len() as u64,
                        Direction::Response => s.info.response_size += chunk.len() as u64,
                    }
                    let size = held.len();
                    *s.body_mut(d) = Some(std::mem::take(&mut held));
                    let args = [self.ctx as i32, size as i32, eos as i32];
                    let r = self.call(&mut g, cb, &args)?;
                    let s = g.stream(self.ctx);
                    held = s.body_mut(d).take().unwrap_or_default();
                    let stop = s.stopped();
                    if eos && !stop {
                        // Keep the buffer visible while the stream is paused.
                        *s.body_mut(d) = Some(std::mem::take(&mut held));
                    }
                    (
                        r.is_some_and(|a| a != action::CONTINUE),
                        stop,
                        g.take_calls(),
                    )
                };
                if stop {
                    spawn_drive(&self.set, &self.vm, calls);
                    return Ok(None);
                }
                // Calls the callback made run now; a pause at the end waits for a resume.
                if eos {
                    if self.settle(calls, paused, d).await? {
                        return Ok(None);
                    }
                    let mut g = self.guest().await?;
                    held = g.stream(self.ctx).body_mut(d).take().unwrap_or_default();
                } else {
                    self.set.drive(&self.vm, calls).await?;
                }
                if !paused || eos {
                    forwarded.extend_from_slice(&held);
                    held.clear();
                }
                if eos {
                    break;
                }
            }
        } else {
            let b = body.buffer(limit).await.map_err(|e| match e {
                BufferError::TooLarge { .. } => too_large(self),
                BufferError::Stream(e) => body_failed(d, e),
            })?;
            forwarded.extend_from_slice(&b.data);
            trailers = b.trailers;
        }
        if let Some(t) = trailers.clone().filter(|t| !t.is_empty()) {
            if has_trailers_cb {
                let n = t.len() as i32;
                // Trailers end the stream: a 3-parameter trailers callback gets end_of_stream = 1.
                if self
                    .callback(tcb, &[n, 1], d, |s| *s.trailers_mut(d) = t)
                    .await?
                {
                    return Ok(None);
                }
                let mut g = self.guest().await?;
                trailers = Some(g.stream(self.ctx).trailers_mut(d).clone());
            }
        }
        Ok(Some(BufferedBody {
            data: forwarded.freeze(),
            trailers,
        }))
    }

    /// Ends the stream's context; the response headers as the filter left them.
    async fn finish(&mut self) -> Result<Option<Headers>, ProxyError> {
        self.open = false;
        end_context(&self.set, &self.vm, self.ctx).await
    }

    /// Turns a stop (local response or close) into the answer.
    async fn stopped(&mut self) -> Result<Response, ProxyError> {
        let (local, closed) = {
            let mut g = self.guest().await?;
            let s = g.stream(self.ctx);
            (s.local_response.take(), s.closed)
        };
        self.finish().await?;
        match local {
            Some(l) => Ok(local_response(l)),
            None if closed => Err(ProxyError::new(
                ErrorSource::Plugin,
                StatusCode::BAD_GATEWAY,
                "the filter closed the stream",
            )),
            None => Err(ProxyError::internal("stream stopped without a reason")),
        }
    }

    /// The stream, phase by phase.
    async fn run(&mut self, req: &mut Request, next: Next<'_>) -> Result<Response, ProxyError> {
        // Request phase.
        let d = Direction::Request;
        let body = std::mem::take(&mut req.body);
        let eos = body.is_end_stream();
        if self.open(req, eos).await? {
            return self.stopped().await;
        }
        // A request without a body (headers said end of stream) passes untouched.
        let has_body_work = !eos
            && (self.set.has_export(d.body_callback())
                || self.set.has_export(d.trailers_callback()));
        let mut next_req = Request {
            method: req.method.clone(),
            uri: req.uri.clone(),
            version: req.version,
            headers: std::mem::take(&mut req.headers),
            body: Body::empty(),
            source_addr: req.source_addr,
            local_addr: req.local_addr,
            extensions: std::mem::take(&mut req.extensions),
        };
        // With body callbacks the body is buffered (and maybe changed): frame it anew.
        let mut framed_len = None;
        if has_body_work {
            match self.filter_body(body, d).await? {
                None => return self.stopped().await,
                Some(b) => {
                    if b.trailers.as_ref().is_none_or(|t| t.is_empty()) {
                        framed_len = Some(b.data.len());
                    }
                    next_req.body = Body::from(b);
                }
            }
        } else {
            next_req.body = body;
        }
        let map = {
            let mut g = self.guest().await?;
            let s = g.stream(self.ctx);
            s.phase = Phase::Upstream;
            s.request_headers.clone()
        };
        apply_request_map(&mut next_req, &map);
        if has_body_work {
            next_req.headers.remove("transfer-encoding");
            match framed_len {
                Some(n) => next_req.headers.set("content-length", n.to_string()),
                None => {
                    next_req.headers.remove("content-length");
                }
            }
        }
        let mut resp = next.run(next_req).await?;

        // Response phase.
        let d = Direction::Response;
        let map = response_map(&resp);
        let n = map.len() as i32;
        let code = resp.status.as_u16();
        let body = std::mem::take(&mut resp.body);
        let eos = body.is_end_stream();
        let prepare = |s: &mut Stream| {
            s.phase = Phase::Response;
            s.info.response_code = Some(code);
            s.response_headers = Some(map);
        };
        if self
            .callback(d.headers_callback(), &[n, eos as i32], d, prepare)
            .await?
        {
            return self.stopped().await;
        }
        // A response without a body (HEAD, 204, 304) keeps its framing headers.
        let has_body_work = !eos
            && (self.set.has_export(d.body_callback())
                || self.set.has_export(d.trailers_callback()));
        if has_body_work {
            match self.filter_body(body, d).await? {
                None => return self.stopped().await,
                Some(b) => resp.body = Body::from(b),
            }
        } else {
            resp.body = body;
        }
        // The context ends now (the filter has nothing left to change): its map is final.
        let map = self.finish().await?.unwrap_or_default();
        apply_response_map(&mut resp, &map);
        if has_body_work {
            resp.headers.remove("content-length");
        }
        Ok(resp)
    }
}
