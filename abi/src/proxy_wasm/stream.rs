//! The stream driver: [`ProxyWasmMiddleware`] runs each request as one HTTP context on one
//! of its VMs, phase by phase: context creation, request headers, body and trailers, the
//! upstream, response headers, body and trailers, then `on_done`, `on_log`, `on_delete`.
//!
//! Each phase locks the VM for its guest calls only; waiting for the body, the upstream, an
//! http call or a resume happens with the VM free for other streams.
//!
//! # When the guest fails
//!
//! A failure of the middleware ([`Failure::Guest`]) is a trap in any callback the stream
//! runs (its own, and the http-call responses delivered for it), its VM poisoned under it
//! (another stream's trap, a tick's, a `reload` replacing every VM), a pause nothing can
//! resume or one longer than [`MAX_PAUSE`], and no VM to run on (none could be built within
//! `poolWait`). Everything else passes through untouched ([`Failure::Pass`]): the rest of
//! the chain's and the upstream's errors, the client's (a 413, a broken body), a response
//! too large to buffer, and the 502 of a filter that closed the stream on purpose.
//!
//! The middleware's [`FailurePolicy`] decides what the request gets: under `closed` and
//! `reload` one 503 naming the middleware ([`closed_response`]), never the failure's text;
//! under `open` the request goes on as if the middleware were not in the chain. For that
//! the stream keeps, under `open` only, the body chunks it handed the filter, as they came:
//! a failure in the request phase sends the request on with its headers as it arrived and
//! its body replayed (the chunks read, then the rest of the stream); one in the response
//! phase, the end of the context (`on_done`, `on_log`, `on_delete`) included, gives the
//! client the response as the rest of the chain gave it (the filter's edits, applied only
//! once the context ended, are dropped). A trap is recorded with [`Failures`] where it
//! happens (`VmSet::trapped`), so once however many streams it fails; the other failures
//! are recorded by the stream that found them. A stream that fails on a sound VM (a pause)
//! has its context ended properly; the VM goes on with its other streams.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http_body_util::BodyExt;
use tokio::sync::Notify;

use super::abi::action;
use super::maps::{
    apply_request_map, apply_response_map, headers_of, local_response, pairs_of, request_map,
    response_map,
};
use super::pairs::HeaderPairs;
use super::state::{Direction, PendingCall, Phase, RequestInfo, Stream};
use super::vm::{Guest, Vm, VmSet};
use super::MAX_PAUSE;
use crate::body::{Body, BufferError, BufferedBody};
use crate::error::{ErrorSource, ProxyError};
use crate::guest::{
    closed_response, CustomKind, FailurePolicy, Failures, MiddlewareStats, Verdict,
};
use crate::headers::Headers;
use crate::middleware::{ChainFuture, Middleware, Next};
use crate::model::{Request, Response};

/// A middleware running a proxy-wasm filter on a small set of VMs.
pub struct ProxyWasmMiddleware {
    pub(crate) set: Arc<VmSet>,
    /// Its failure policy, reload backoff and failure log (the set records its traps there).
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

    /// What a request that hit guest failure `g` gets.
    fn verdict(&self, g: GuestFailure) -> Verdict {
        if g.unrecorded {
            return self.failures.failed(&g.err, || self.set.recycle_all());
        }
        // Recorded where it happened (the trap, the failure that poisoned this VM): only the
        // policy's answer is left to give.
        match self.failures.policy() {
            FailurePolicy::Open => Verdict::Skip,
            FailurePolicy::Closed | FailurePolicy::Reload => {
                Verdict::Answer(closed_response(self.failures.middleware()))
            }
        }
    }

    /// The guest failed before `req` went on: the policy's answer, or (`open`) the rest of
    /// the chain with the request as it arrived.
    async fn request_failed(
        &self,
        g: GuestFailure,
        req: Request,
        next: Next<'_>,
    ) -> Result<Response, ProxyError> {
        match self.verdict(g) {
            Verdict::Answer(resp) => Ok(resp),
            Verdict::Skip => next.run(req).await,
        }
    }
}

static NEXT_STREAM: AtomicU64 = AtomicU64::new(1);

/// How many times a new stream moves on from a VM found poisoned before it started there.
const MAX_MOVES: usize = 3;

#[async_trait]
impl Middleware for ProxyWasmMiddleware {
    fn stats(&self) -> Option<MiddlewareStats> {
        use super::abi::MetricKind;
        let sh = &self.set.shared;
        let custom = sh
            .vm
            .metrics()
            .into_iter()
            .map(|m| {
                let (kind, value) = match m.kind {
                    MetricKind::Counter => (CustomKind::Counter, m.value as f64),
                    MetricKind::Gauge => (CustomKind::Gauge, m.value as f64),
                    MetricKind::Histogram => (CustomKind::Histogram, m.value as f64),
                };
                (m.name, kind, value)
            })
            .collect();
        let live = self.set.live() as u64;
        Some(MiddlewareStats {
            plugin: sh.plugin.clone(),
            phases: sh.stats.phases(),
            failures: self.failures.failed_total(),
            refused: self.failures.refused_total(),
            instances_idle: self.set.count() as u64,
            instances_busy: live,
            memory_bytes: sh.stats.memory_bytes(),
            custom,
        })
    }

    // Written out rather than `async fn`: the request is boxed before the future is made, so
    // the future (moved into a box of its own, once per link) holds a pointer instead of it.
    fn handle<'s, 'n, 'f>(&'s self, req: Request, next: Next<'n>) -> ChainFuture<'f>
    where
        's: 'f,
        'n: 'f,
        Self: 'f,
    {
        Box::pin(self.answer(Box::new(req), next))
    }
}

impl ProxyWasmMiddleware {
    /// Runs `req` through a stream on one of the filter's VMs and answers for the guest's
    /// failures by the failure policy.
    async fn answer(&self, req: Box<Request>, next: Next<'_>) -> Result<Response, ProxyError> {
        // `reload` in backoff: the guest is not entered.
        if let Some(resp) = self.failures.refused() {
            return Ok(resp);
        }
        let vm = match self.set.pick().await {
            Ok(vm) => vm,
            // No VM could be built in time: the middleware cannot run, a failure of it.
            Err(err) => {
                let g = GuestFailure {
                    err,
                    unrecorded: true,
                };
                return Box::pin(self.request_failed(g, *req, next)).await;
            }
        };
        let mut run = StreamRun {
            set: self.set.clone(),
            vm,
            ctx: 0,
            wake: Arc::new(Notify::new()),
            open: false,
            keep: self.failures.policy() == FailurePolicy::Open,
            kept: None,
            held_by_pause: false,
        };
        let end = run.run(req, next).await;
        // Still open: the stream stopped outside the guest (a 413) or on a failure that left
        // the VM sound (a pause): end the context properly. A trap there is recorded.
        let mut sound = true;
        if run.open && !run.vm.is_poisoned() {
            sound = run.finish().await.is_ok();
        }
        // The VM's count of live streams drops now, not after an upstream `open` may call.
        drop(run);
        match end {
            End::Done(result) => {
                if sound {
                    self.failures.succeeded();
                }
                result
            }
            End::Request(g, req, next) => Box::pin(self.request_failed(g, *req, next)).await,
            End::Response(g, resp) => match self.verdict(g) {
                Verdict::Answer(answer) => Ok(answer),
                Verdict::Skip => Ok(resp),
            },
        }
    }
}

/// Why a step of a stream did not go on.
enum Failure {
    /// The guest failed: the middleware's policy decides what the request gets.
    Guest(GuestFailure),
    /// Not a failure of this middleware (the client's, the rest of the chain's, a close the
    /// filter asked for): the error goes on untouched.
    Pass(ProxyError),
}

/// A failure of the guest, and whether it still has to be recorded.
struct GuestFailure {
    err: ProxyError,
    /// Found by the stream (a pause nothing resumes, no VM): recorded when the request gets
    /// its verdict. A trap is recorded by `VmSet::trapped`, and a poisoned VM by whatever
    /// poisoned it.
    unrecorded: bool,
}

impl Failure {
    /// A trap, or the VM found poisoned: already recorded.
    fn recorded(err: ProxyError) -> Failure {
        Failure::Guest(GuestFailure {
            err,
            unrecorded: false,
        })
    }

    /// A contract the guest broke, found by the stream.
    fn broken(err: ProxyError) -> Failure {
        Failure::Guest(GuestFailure {
            err,
            unrecorded: true,
        })
    }
}

/// A stream step's result.
type Step<T> = Result<T, Failure>;

/// How a stream ended.
enum End<'a> {
    /// The answer: the response, or an error passed on untouched.
    Done(Result<Response, ProxyError>),
    /// The guest failed before the request went on: the request as it arrived (its body
    /// replayed under `open`), and the rest of the chain, not run yet. Boxed: failures are
    /// rare, and the common variant stays small.
    Request(GuestFailure, Box<Request>, Next<'a>),
    /// The guest failed once the rest of the chain had answered: its response as it came
    /// (the body replayed under `open`).
    Response(GuestFailure, Response),
}

/// What the request phase hands on, or the answer the filter gave.
enum Forward {
    /// The request goes on: its body, its framing, and the headers as the filter left them
    /// (`None`: the filter wrote none, the request's own stand).
    On {
        body: Body,
        framing: Framing,
        map: Option<HeaderPairs>,
    },
    /// The filter answered (a local response).
    Answer(Response),
}

/// What the response phase gives.
enum Back {
    /// The response goes back: its body, whether the filter buffered it, and the headers as
    /// the filter left them (`None`: it wrote none).
    On {
        body: Body,
        buffered: bool,
        map: Option<HeaderPairs>,
    },
    /// The filter answered instead.
    Answer(Response),
}

/// How a request body that went through the filter is framed anew.
enum Framing {
    /// Untouched (the filter did not see the body).
    AsItCame,
    /// Buffered, no trailers: `content-length`.
    Length(usize),
    /// Buffered, with trailers: no length (chunked).
    Chunked,
}

/// How the turn that opened a stream ended.
enum Opened {
    /// The filter stopped the stream (a local response or a close).
    Stopped,
    /// The request phase goes on (a body to filter, a pause, calls to send).
    Continue,
    /// The request phase ended in the same turn: the request headers as the filter left
    /// them (`None`: it wrote none).
    Through(Option<HeaderPairs>),
}

/// The request goes upstream: the filter's request maps are read-only from here. The map
/// to apply to the request, if the filter wrote to it.
fn upstream_turn(s: &mut Stream) -> Option<HeaderPairs> {
    s.phase = Phase::Upstream;
    s.request_headers_written.then(|| s.request_headers.clone())
}

/// Under `open`: the body chunks the filter was handed, as they came, and the trailers.
#[derive(Default)]
struct Kept {
    chunks: Vec<Bytes>,
    trailers: Option<Headers>,
}

/// The body a header callback's pause held: read while the stream waited for its resume.
#[derive(Default)]
struct Held {
    chunks: Vec<Bytes>,
    trailers: Option<http::HeaderMap>,
    bytes: usize,
    /// The body ended (its end or its trailers were read).
    ended: bool,
    failed: Option<crate::body::BodyError>,
}

impl Held {
    /// Whether to read on: not over, not failed, not past the buffer limit (the filter would
    /// refuse it anyway; what is left waits in the connection).
    fn reading(&self, limit: usize) -> bool {
        !self.ended && self.failed.is_none() && self.bytes <= limit
    }

    fn push(&mut self, f: Option<Result<http_body::Frame<Bytes>, crate::body::BodyError>>) {
        match f {
            None => self.ended = true,
            Some(Err(e)) => self.failed = Some(e),
            Some(Ok(f)) => match f.into_data() {
                Ok(data) => {
                    self.bytes += data.len();
                    self.chunks.push(data);
                }
                Err(f) => {
                    if let Ok(t) = f.into_trailers() {
                        self.trailers = Some(t);
                        self.ended = true;
                    }
                }
            },
        }
    }

    /// Puts what was read back in front of `body`; the error the body failed with, if any.
    fn put_back(self, body: &mut Body) -> Option<crate::body::BodyError> {
        if self.failed.is_some() {
            return self.failed;
        }
        if !self.chunks.is_empty() || self.trailers.is_some() || self.ended {
            let rest = if self.ended {
                Body::empty()
            } else {
                std::mem::take(body)
            };
            *body = Body::put_back(self.chunks, self.trailers, rest);
        }
        None
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
    /// The policy is `open`: each phase keeps the body it hands the filter.
    keep: bool,
    /// What the current phase kept (`keep` only).
    kept: Option<Kept>,
    /// The last headers callback paused: the body that arrived meanwhile was held, and the
    /// first body call gets all of it.
    held_by_pause: bool,
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
) -> Result<Option<HeaderPairs>, ProxyError> {
    let mut g = vm.lock().await?;
    let (map, calls) = end_context_locked(set, &mut g, ctx)?;
    drop(g);
    spawn_drive(set, vm, calls);
    Ok(map)
}

/// [`end_context`] on a VM already locked; also the calls the end callbacks made, to send
/// once the VM is free.
fn end_context_locked(
    set: &Arc<VmSet>,
    g: &mut Guest<'_>,
    ctx: u32,
) -> Result<(Option<HeaderPairs>, Vec<PendingCall>), ProxyError> {
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
        return Err(set.trapped(g, &t));
    }
    let st = g.state();
    let stream = st.streams.remove(&ctx);
    st.calls_out.remove(&ctx);
    st.effective_ctx = st.root_ctx;
    let calls = g.take_calls();
    // Only a map the filter wrote to goes back to the response.
    let map = stream
        .filter(|s| s.response_headers_written)
        .and_then(|s| s.response_headers);
    Ok((map, calls))
}

/// Sends calls whose dispatcher does not wait for them (a stream that stopped or ended).
fn spawn_drive(set: &Arc<VmSet>, vm: &Arc<Vm>, calls: Vec<PendingCall>) {
    if calls.is_empty() {
        return;
    }
    let (set, vm) = (set.clone(), vm.clone());
    tokio::spawn(async move {
        // A trap there was recorded (and logged) by `VmSet::trapped`; any other error is the
        // VM poisoned meanwhile.
        if let Err(e) = set.drive(&vm, calls).await {
            tracing::debug!(target: "wasmgate::plugin", plugin = %set.shared.plugin,
                middleware = %set.shared.middleware, "http call response not delivered: {e}");
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
    /// Locks the VM; poisoned, it is a failure recorded by whatever poisoned it.
    async fn guest(&self) -> Step<Guest<'_>> {
        self.vm.lock().await.map_err(Failure::recorded)
    }

    /// Calls `name` on this stream's context; a trap poisons the VM (and is recorded there).
    fn call(&self, g: &mut Guest<'_>, name: &'static str, args: &[i32]) -> Step<Option<i32>> {
        g.call(name, self.ctx, args)
            .map_err(|t| Failure::recorded(self.set.trapped(g, &t)))
    }

    /// Sends `calls` the stream's callback made, delivering their responses (a trap there is
    /// recorded where it happens).
    async fn drive(&self, calls: Vec<PendingCall>) -> Step<()> {
        self.set
            .drive(&self.vm, calls)
            .await
            .map_err(Failure::recorded)
    }

    fn plugin_error(&self, msg: String) -> ProxyError {
        ProxyError::plugin(format!(
            "plugin {} (middleware {}): {msg}",
            self.set.shared.plugin, self.set.shared.middleware
        ))
    }

    /// A new phase starts: under `open`, it keeps what it hands the filter.
    fn start_keeping(&mut self) {
        self.kept = self.keep.then(Kept::default);
    }

    /// The body as it came: what the phase kept, then `rest` (just `rest` when not `open`).
    fn replay(&mut self, rest: Body) -> Body {
        match self.kept.take() {
            // The trailers came as a HeaderMap, so they convert back.
            Some(kept) => Body::put_back(
                kept.chunks,
                kept.trailers
                    .map(|t| t.into_header_map().unwrap_or_default()),
                rest,
            ),
            None => rest,
        }
    }

    /// Creates the stream's context and runs the request headers callback, in one turn on
    /// the VM. `ends_phase`: no body callbacks will run, so when the callback neither paused,
    /// stopped nor made calls the request phase ends in the same turn.
    async fn open(&mut self, req: &Request, body: &mut Body, ends_phase: bool) -> Step<Opened> {
        let eos = body.is_end_stream();
        let info = RequestInfo {
            version: req.version,
            source: req.source_addr,
            destination: req.local_addr,
            started: Instant::now(),
            request_size: 0,
            response_code: None,
            response_size: 0,
            connection_id: NEXT_STREAM.fetch_add(1, Ordering::Relaxed),
            request_id: req.request_id.clone(),
            tls: req.tls().cloned(),
        };
        let map = request_map(req);
        let n = map.len() as i32;
        let d = Direction::Request;
        // A VM poisoned while this stream waited for it holds nothing of the stream yet: the
        // stream moves to a sound one instead of failing with the streams that were on it.
        let mut moves = 0;
        let (paused, stop, calls) = loop {
            let vm = self.vm.clone();
            // The turn is taken in a block of its own: the move to another VM awaits, and the
            // lock's guard (not `Send`) must be out of scope there.
            let poisoned = match vm.lock().await {
                Err(e) => e,
                Ok(mut g) => {
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
                    let r = self.run_callback(&mut g, d.headers_callback(), &args, d, |_| {})?;
                    if ends_phase && !r.0 && !r.1 && r.2.is_empty() {
                        self.held_by_pause = false;
                        return Ok(Opened::Through(upstream_turn(g.stream(ctx))));
                    }
                    break r;
                }
            };
            if moves == MAX_MOVES {
                return Err(Failure::recorded(poisoned));
            }
            moves += 1;
            let fresh = self.set.pick().await.map_err(Failure::broken)?;
            self.vm.live.fetch_sub(1, Ordering::Relaxed);
            self.vm = fresh;
        };
        let stopped = self
            .after_callback(paused, stop, calls, d, Some(body))
            .await?;
        Ok(if stopped {
            Opened::Stopped
        } else {
            Opened::Continue
        })
    }

    /// Runs a stream callback (after `prepare` on the stream) and everything it started;
    /// `Ok(true)`: the stream must stop here (a local response or a close). `body`: the body
    /// still to come, read into the host while the callback's pause lasts.
    async fn callback(
        &mut self,
        name: &'static str,
        args: &[i32],
        d: Direction,
        prepare: impl FnOnce(&mut Stream),
        body: Option<&mut Body>,
    ) -> Step<bool> {
        let (paused, stop, calls) = {
            let mut g = self.guest().await?;
            self.run_callback(&mut g, name, args, d, prepare)?
        };
        self.after_callback(paused, stop, calls, d, body).await
    }

    /// The guest side of a stream callback: whether it paused, whether the filter stopped
    /// the stream, and the http calls it made.
    fn run_callback(
        &self,
        g: &mut Guest<'_>,
        name: &'static str,
        args: &[i32],
        d: Direction,
        prepare: impl FnOnce(&mut Stream),
    ) -> Step<(bool, bool, Vec<PendingCall>)> {
        let s = g.stream(self.ctx);
        prepare(s);
        *s.resumed_mut(d) = false;
        // The context first, then the callback's own arguments (at most 2 for a stream).
        let mut full = [0i32; 4];
        let n = args.len().min(full.len() - 1);
        full[0] = self.ctx as i32;
        full[1..=n].copy_from_slice(&args[..n]);
        let r = self.call(g, name, &full[..=n])?;
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
        body: Option<&mut Body>,
    ) -> Step<bool> {
        if stop {
            spawn_drive(&self.set, &self.vm, calls);
            return Ok(true);
        }
        self.held_by_pause = paused;
        self.settle(calls, paused, d, body).await
    }

    /// After a stream callback: sends the calls it made; then, if it paused, waits for a
    /// resume with the VM free. `Ok(true)`: the filter stopped the stream. A pause nothing
    /// can resume, or one past [`MAX_PAUSE`], is the guest's failure.
    ///
    /// While a header callback's pause lasts, the host reads the body (`body`) and holds it
    /// (cpp-host's StopAllIterationAndWatermark, up to the buffer limit), so the first body
    /// call after the resume gets all that arrived.
    async fn settle(
        &mut self,
        calls: Vec<PendingCall>,
        paused: bool,
        d: Direction,
        mut body: Option<&mut Body>,
    ) -> Step<bool> {
        // Nothing ran since the callback, which did not stop the stream: nothing to look at.
        if calls.is_empty() && !paused {
            return Ok(false);
        }
        let mut held = Held::default();
        // Boxed: the wait is rare (calls or a pause), and its state would otherwise make the
        // future of every callback, hence of every stream, larger (moved on each poll).
        let r = Box::pin(self.wait_resume(calls, paused, d, body.as_deref_mut(), &mut held)).await;
        if let Some(b) = body {
            if let Some(e) = held.put_back(b) {
                return Err(Failure::Pass(body_failed(d, e)));
            }
        }
        r
    }

    /// [`StreamRun::settle`]'s wait, reading `body` into `held` meanwhile.
    async fn wait_resume(
        &mut self,
        calls: Vec<PendingCall>,
        paused: bool,
        d: Direction,
        mut body: Option<&mut Body>,
        held: &mut Held,
    ) -> Step<bool> {
        let limit = self.set.shared.max_body_bytes;
        self.drive(calls).await?;
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
                    return Err(Failure::broken(self.plugin_error(
                        "the filter paused the stream with nothing pending that could resume it"
                            .into(),
                    )));
                }
            }
            let woken = tokio::time::timeout_at(deadline, self.vm.woken(&self.wake, changed));
            let woke = match body.as_deref_mut() {
                Some(b) if held.reading(limit) => {
                    let mut woken = std::pin::pin!(woken);
                    // Whichever comes first: the wake-up, or a frame of the body.
                    let first = std::future::poll_fn(|cx| {
                        if let Poll::Ready(r) = woken.as_mut().poll(cx) {
                            return Poll::Ready(Ok(r));
                        }
                        http_body::Body::poll_frame(std::pin::Pin::new(&mut *b), cx).map(Err)
                    })
                    .await;
                    match first {
                        Ok(r) => r,
                        Err(f) => {
                            held.push(f);
                            continue;
                        }
                    }
                }
                _ => woken.await,
            };
            if woke.is_err() {
                return Err(Failure::broken(self.plugin_error(format!(
                    "stream stayed paused longer than {MAX_PAUSE:?}"
                ))));
            }
        }
    }

    /// Runs body callbacks over `body` (left with what was not read); returns the body to
    /// forward, or `None` to stop. Under `open` the chunks read are kept as they came.
    async fn filter_body(&mut self, body: &mut Body, d: Direction) -> Step<Option<BufferedBody>> {
        let (cb, tcb) = (d.body_callback(), d.trailers_callback());
        let limit = self.set.shared.max_body_bytes;
        // Not the guest's failure: the client sent too much, or the upstream answered more
        // than the filter may buffer.
        let too_large = |this: &Self| {
            Failure::Pass(match d {
                Direction::Request => ProxyError::new(
                    ErrorSource::Downstream,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body exceeds the {limit}-byte buffer limit"),
                ),
                Direction::Response => this.plugin_error(format!(
                    "response body exceeds the {limit}-byte buffer limit"
                )),
            })
        };
        let has_body_cb = self.set.has_export(cb);
        let has_trailers_cb = self.set.has_export(tcb);
        let mut forwarded = BytesMut::new();
        let mut trailers: Option<Headers> = None;
        // Trailers the filter added in the end-of-stream body call, none having arrived.
        let mut added = false;
        let mut coalesce = std::mem::take(&mut self.held_by_pause);
        let no_body = body.is_end_stream();
        if has_body_cb && !no_body {
            let mut held = BytesMut::new();
            loop {
                let frame = body.frame().await;
                let (mut eos, mut chunk) = match frame {
                    // With trailers the body never ends itself (Envoy): no end-of-stream
                    // body call; what a pause held goes on with the trailers.
                    None if trailers.as_ref().is_some_and(|t| !t.is_empty()) => {
                        forwarded.extend_from_slice(&held);
                        break;
                    }
                    None => (true, Bytes::new()),
                    Some(Err(e)) => return Err(Failure::Pass(body_failed(d, e))),
                    // As Envoy: when the body is known to end with this chunk (Content-Length
                    // reached, HTTP/2 END_STREAM on the DATA frame), the chunk itself carries
                    // end_of_stream; an empty end call comes only when the end arrives later.
                    Some(Ok(f)) => match f.into_data() {
                        Ok(data) => (body.is_end_stream(), data),
                        Err(f) => {
                            if let Ok(t) = f.into_trailers() {
                                trailers = Some(Headers::from(t));
                                if let Some(k) = &mut self.kept {
                                    k.trailers = trailers.clone();
                                }
                            }
                            continue;
                        }
                    },
                };
                if !chunk.is_empty() {
                    if let Some(k) = &mut self.kept {
                        k.chunks.push(chunk.clone());
                    }
                }
                // The headers callback paused: as cpp-host (StopAllIterationAndWatermark), the
                // host held the body meanwhile, and what arrived comes in this one call.
                if std::mem::take(&mut coalesce) && !eos {
                    let mut joined = BytesMut::from(&chunk[..]);
                    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                    loop {
                        let polled = std::pin::pin!(body.frame()).poll(&mut cx);
                        match polled {
                            Poll::Ready(Some(Ok(f))) => match f.into_data() {
                                Ok(data) => {
                                    if let Some(k) = &mut self.kept {
                                        k.chunks.push(data.clone());
                                    }
                                    joined.extend_from_slice(&data);
                                    if body.is_end_stream() {
                                        eos = true;
                                        break;
                                    }
                                }
                                Err(f) => {
                                    if let Ok(t) = f.into_trailers() {
                                        trailers = Some(Headers::from(t));
                                        if let Some(k) = &mut self.kept {
                                            k.trailers = trailers.clone();
                                        }
                                    }
                                    break;
                                }
                            },
                            Poll::Ready(None) => {
                                eos = true;
                                break;
                            }
                            Poll::Ready(Some(Err(e))) => {
                                return Err(Failure::Pass(body_failed(d, e)))
                            }
                            Poll::Pending => break,
                        }
                    }
                    chunk = joined.freeze();
                }
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
                    if self.settle(calls, paused, d, None).await? {
                        return Ok(None);
                    }
                    let mut g = self.guest().await?;
                    let s = g.stream(self.ctx);
                    held = s.body_mut(d).take().unwrap_or_default();
                    // The trailer map is writable in the end-of-stream call (cpp-host's
                    // addRequestTrailers): trailers added there go on, with no trailers call.
                    if !s.trailers_mut(d).is_empty() {
                        trailers = Some(headers_of(s.trailers_mut(d)));
                        added = true;
                    }
                } else {
                    self.drive(calls).await?;
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
            let b = std::mem::take(body)
                .buffer(limit)
                .await
                .map_err(|e| match e {
                    BufferError::TooLarge { .. } => too_large(self),
                    BufferError::Stream(e) => Failure::Pass(body_failed(d, e)),
                })?;
            if let Some(k) = &mut self.kept {
                k.chunks.push(b.data.clone());
                k.trailers = b.trailers.clone();
            }
            forwarded.extend_from_slice(&b.data);
            trailers = b.trailers;
        }
        if let Some(t) = trailers.clone().filter(|t| !t.is_empty()) {
            if has_trailers_cb && !added {
                let n = t.len() as i32;
                // Trailers end the stream: a 3-parameter trailers callback gets end_of_stream = 1.
                if self
                    .callback(tcb, &[n, 1], d, |s| *s.trailers_mut(d) = pairs_of(&t), None)
                    .await?
                {
                    return Ok(None);
                }
                let mut g = self.guest().await?;
                trailers = Some(headers_of(g.stream(self.ctx).trailers_mut(d)));
            }
        }
        Ok(Some(BufferedBody {
            data: forwarded.freeze(),
            trailers,
        }))
    }

    /// Ends the stream's context; the response headers as the filter left them.
    async fn finish(&mut self) -> Step<Option<HeaderPairs>> {
        self.open = false;
        end_context(&self.set, &self.vm, self.ctx)
            .await
            .map_err(Failure::recorded)
    }

    /// Turns a stop (local response or close) into the answer.
    async fn stopped(&mut self) -> Step<Response> {
        let (local, closed) = {
            let mut g = self.guest().await?;
            let s = g.stream(self.ctx);
            let local = s.local_response.take().map(local_response);
            // The local reply is the response the end callbacks see (on_log reads its
            // `:status`), as Envoy runs it through the response path.
            if let Some(answer) = &local {
                s.response_headers = Some(response_map(answer));
                s.info.response_code = Some(answer.status.as_u16());
            }
            (local, s.closed)
        };
        self.finish().await?;
        match local {
            Some(answer) => Ok(answer),
            // The filter's own choice, not a failure: its 502 goes out as it is.
            None if closed => Err(Failure::Pass(ProxyError::new(
                ErrorSource::Plugin,
                StatusCode::BAD_GATEWAY,
                "the filter closed the stream",
            ))),
            None => Err(Failure::Pass(ProxyError::internal(
                "stream stopped without a reason",
            ))),
        }
    }

    /// The request phase: context creation, request headers, body and trailers.
    async fn request_phase(&mut self, req: &Request, body: &mut Body) -> Step<Forward> {
        let d = Direction::Request;
        let eos = body.is_end_stream();
        // A request without a body (headers said end of stream) passes untouched.
        let has_body_work = !eos
            && (self.set.has_export(d.body_callback())
                || self.set.has_export(d.trailers_callback()));
        match self.open(req, body, !has_body_work).await? {
            Opened::Stopped => return Box::pin(self.stopped()).await.map(Forward::Answer),
            Opened::Through(map) => {
                return Ok(Forward::On {
                    body: std::mem::take(body),
                    framing: Framing::AsItCame,
                    map,
                })
            }
            Opened::Continue => {}
        }
        // With body callbacks the body is buffered (and maybe changed): frame it anew.
        let (fwd, framing) = if has_body_work {
            match Box::pin(self.filter_body(body, d)).await? {
                None => return Box::pin(self.stopped()).await.map(Forward::Answer),
                Some(b) => {
                    let framing = if b.trailers.as_ref().is_none_or(|t| t.is_empty()) {
                        Framing::Length(b.data.len())
                    } else {
                        Framing::Chunked
                    };
                    (Body::from(b), framing)
                }
            }
        } else {
            (Body::empty(), Framing::AsItCame)
        };
        let map = upstream_turn(self.guest().await?.stream(self.ctx));
        // An untouched body is taken only now: had the step above failed, `open` passes it on.
        let fwd = if has_body_work {
            fwd
        } else {
            std::mem::take(body)
        };
        Ok(Forward::On {
            body: fwd,
            framing,
            map,
        })
    }

    /// The response phase: response headers, body and trailers, then the end of the context
    /// (the filter has nothing left to change after it: its header map is final).
    async fn response_phase(&mut self, resp: &Response, body: &mut Body) -> Step<Back> {
        let d = Direction::Response;
        let map = response_map(resp);
        let n = map.len() as i32;
        let code = resp.status.as_u16();
        let eos = body.is_end_stream();
        let prepare = |s: &mut Stream| {
            s.phase = Phase::Response;
            s.info.response_code = Some(code);
            s.response_headers = Some(map);
        };
        // A response without a body (HEAD, 204, 304) keeps its framing headers.
        let has_body_work = !eos
            && (self.set.has_export(d.body_callback())
                || self.set.has_export(d.trailers_callback()));
        let (paused, stop, calls) = {
            let vm = self.vm.clone();
            let mut g = vm.lock().await.map_err(Failure::recorded)?;
            let args = [n, eos as i32];
            let r = self.run_callback(&mut g, d.headers_callback(), &args, d, prepare)?;
            // Nothing to wait for and no body to filter: the context ends in the same turn.
            if !has_body_work && !r.0 && !r.1 && r.2.is_empty() {
                self.open = false;
                let (map, calls) =
                    end_context_locked(&self.set, &mut g, self.ctx).map_err(Failure::recorded)?;
                drop(g);
                spawn_drive(&self.set, &self.vm, calls);
                return Ok(Back::On {
                    body: std::mem::take(body),
                    buffered: false,
                    map,
                });
            }
            r
        };
        if self
            .after_callback(paused, stop, calls, d, Some(body))
            .await?
        {
            return Box::pin(self.stopped()).await.map(Back::Answer);
        }
        let out = if has_body_work {
            match Box::pin(self.filter_body(body, d)).await? {
                None => return Box::pin(self.stopped()).await.map(Back::Answer),
                Some(b) => Some(Body::from(b)),
            }
        } else {
            None
        };
        let map = self.finish().await?;
        // An untouched body is taken only now: had the end of the context failed, `open`
        // passes it on.
        let out = out.unwrap_or_else(|| std::mem::take(body));
        Ok(Back::On {
            body: out,
            buffered: has_body_work,
            map,
        })
    }

    /// The stream, phase by phase. The request and the response are edited only once their
    /// phase went through, so a failure finds them as they came (but for the body, which
    /// [`StreamRun::replay`] gives back under `open`).
    async fn run<'a>(&mut self, mut req: Box<Request>, next: Next<'a>) -> End<'a> {
        self.start_keeping();
        let mut body = std::mem::take(&mut req.body);
        let (fwd, framing, map) = match self.request_phase(&req, &mut body).await {
            Ok(Forward::On { body, framing, map }) => (body, framing, map),
            Ok(Forward::Answer(resp)) => return End::Done(Ok(resp)),
            Err(Failure::Pass(e)) => return End::Done(Err(e)),
            Err(Failure::Guest(g)) => {
                req.body = self.replay(body);
                return End::Request(g, req, next);
            }
        };
        // What the request phase kept is not needed any more.
        self.kept = None;
        let mut next_req = req;
        next_req.body = fwd;
        if let Some(map) = map {
            apply_request_map(&mut next_req, &map);
        }
        match framing {
            Framing::AsItCame => {}
            Framing::Length(n) => {
                next_req.headers.remove(http::header::TRANSFER_ENCODING);
                next_req
                    .headers
                    .set(http::header::CONTENT_LENGTH, n.to_string());
            }
            Framing::Chunked => {
                next_req.headers.remove(http::header::TRANSFER_ENCODING);
                next_req.headers.remove(http::header::CONTENT_LENGTH);
            }
        }
        // The rest of the chain's errors pass through: not this guest's failure.
        let mut resp = match next.run(*next_req).await {
            Ok(resp) => resp,
            Err(e) => return End::Done(Err(e)),
        };

        self.start_keeping();
        let mut body = std::mem::take(&mut resp.body);
        match self.response_phase(&resp, &mut body).await {
            Ok(Back::On {
                body,
                buffered,
                map,
            }) => {
                resp.body = body;
                if let Some(map) = map {
                    apply_response_map(&mut resp, &map);
                }
                if buffered {
                    resp.headers.remove(http::header::CONTENT_LENGTH);
                }
                End::Done(Ok(resp))
            }
            Ok(Back::Answer(answer)) => End::Done(Ok(answer)),
            Err(Failure::Pass(e)) => End::Done(Err(e)),
            Err(Failure::Guest(g)) => {
                resp.body = self.replay(body);
                End::Response(g, resp)
            }
        }
    }
}
