//! The http-wasm host: runs `http_handler` guests (Traefik's plugins) as middlewares.
//!
//! One compiled module per plugin; per middleware a bounded, pre-warmed pool
//! of instances, each started once (`_start` / `_initialize`) with that
//! middleware's configuration. A request holds one instance from
//! `handle_request` to `handle_response`; an instance that trapped is thrown
//! away and replaced, and the request that hit the trap gets what the middleware's
//! [`FailurePolicy`] says: one 503 (`closed`, the default), the request or response passed on
//! as it came (`open`), or a 503 and fresh instances, with backoff (`reload`).
//!
//! Guest calls never wait for the client: what a guest may read of the request body (or its
//! trailers) during a call is read ahead before an instance is taken, at most `maxBodyBytes`
//! of it (see the [`Middleware`] contract). A body longer than
//! that flows on to next un-read unless the guest reads past the limit: then the request is a
//! 413.

pub mod abi;
mod host;
mod state;

use std::sync::Arc;

use async_trait::async_trait;
use http::StatusCode;
use wasmgate_engines::{
    CompiledModule, Engine, EngineKind, ExportFunc, FuncType, Instance, InstancePool, ModuleInfo,
    PooledInstance, Trap, Val, ValType,
};

use self::abi::feature;
use self::state::{Exchange, HttpWasmState, MiddlewareShared, Phase, RequestBody};
use crate::body::{Body, BufferError, BufferedBody};
use crate::error::{ErrorSource, ProxyError};
use crate::guest::{
    AbiKind, FailurePolicy, Failures, GuestPool, GuestStats, MemoryShare, MiddlewareStats,
    PluginError, PluginOptions, Verdict, PREWARM,
};
use crate::middleware::{ChainFuture, Middleware, Next};
use crate::model::{Request, Response};

pub use self::host::functions as host_functions;
pub use self::host::min_log_level as host_min_log_level;

/// A compiled http-wasm plugin.
pub struct HttpWasmPlugin {
    name: String,
    module: Arc<dyn CompiledModule>,
    opts: PluginOptions,
    /// The guest imports `read_body`: it may read the request body during a call.
    reads_body: bool,
    /// The guest imports a header function: with the trailers feature on from start-up it
    /// may read the request trailers during a call.
    touches_headers: bool,
    /// The guest imports WASI `fd_write` (see [`crate::guest::log::in_call`]).
    writes_stdio: bool,
}

/// Whether the guest imports `name` from `http_handler`.
fn imports(info: &ModuleInfo, name: &str) -> bool {
    info.imports
        .iter()
        .any(|i| i.module == abi::MODULE && i.name == name)
}

/// Whether the guest could touch the request trailers (they come after the body): it
/// imports a header function. It also needs the trailers feature, known once it started.
fn imports_header_functions(info: &ModuleInfo) -> bool {
    [
        "get_header_names",
        "get_header_values",
        "set_header_value",
        "add_header_value",
        "remove_header",
    ]
    .into_iter()
    .any(|f| imports(info, f))
}

fn check_export(info: &ModuleInfo, name: &str, want: FuncType) -> Result<bool, PluginError> {
    match info.export_func(name) {
        None => Ok(false),
        Some(ty) if *ty == want => Ok(true),
        Some(ty) => Err(PluginError::WrongSignature {
            name: name.to_string(),
            found: ty.clone(),
            abi: AbiKind::HttpWasm.to_string(),
            wanted: want.to_string(),
        }),
    }
}

impl HttpWasmPlugin {
    /// Checks the module against the ABI and compiles it with the `http_handler` host functions.
    pub fn load(
        name: &str,
        wasm: &[u8],
        info: &ModuleInfo,
        engine: &dyn Engine,
        opts: PluginOptions,
    ) -> Result<HttpWasmPlugin, PluginError> {
        if !info.has_export("memory") {
            return Err(PluginError::MissingExport {
                abi: AbiKind::HttpWasm,
                name: "memory".into(),
                wanted: "their memory as `memory`".into(),
            });
        }
        let has_request = check_export(info, "handle_request", FuncType::new([], [ValType::I64]))?;
        let has_response = check_export(
            info,
            "handle_response",
            FuncType::new([ValType::I32, ValType::I32], []),
        )?;
        if !has_request && !has_response {
            return Err(PluginError::MissingExport {
                abi: AbiKind::HttpWasm,
                name: "handle_request".into(),
                wanted: "handle_request or handle_response; this one has neither".into(),
            });
        }
        let module = engine.compile(wasm, Arc::new(host::functions(name)), opts.limits.clone())?;
        Ok(HttpWasmPlugin {
            name: name.to_string(),
            module,
            opts,
            reads_body: imports(info, "read_body"),
            touches_headers: imports_header_functions(info),
            writes_stdio: crate::guest::log::writes_stdio(info),
        })
    }

    /// The engine running it.
    pub fn engine(&self) -> EngineKind {
        self.module.engine()
    }

    /// A middleware with its own configuration and instance pool; starts its first instances now.
    pub fn middleware(
        &self,
        middleware: &str,
        config: Vec<u8>,
    ) -> Result<HttpWasmMiddleware, PluginError> {
        self.middleware_with_policy(middleware, config, None)
    }

    /// Like [`HttpWasmPlugin::middleware`], under failure policy `policy` (`None`: the plugin
    /// options' `failure_policy`).
    pub fn middleware_with_policy(
        &self,
        middleware: &str,
        config: Vec<u8>,
        policy: Option<FailurePolicy>,
    ) -> Result<HttpWasmMiddleware, PluginError> {
        let policy = policy.unwrap_or(self.opts.failure_policy);
        let shared = Arc::new(MiddlewareShared {
            plugin: self.name.clone(),
            middleware: middleware.into(),
            config,
            min_log_level: host::min_log_level(self.opts.log_level),
            max_body_bytes: self.opts.max_body_bytes,
            max_host_bytes: self.opts.max_host_bytes,
            writes_stdio: self.writes_stdio,
        });
        let stats = Arc::new(GuestStats::new(&PHASES, self.opts.collect_metrics));
        let for_factory = (shared.clone(), stats.clone());
        let pool = GuestPool::new(
            self.module.clone(),
            &self.opts,
            middleware,
            move || {
                Box::new(HttpWasmState::new(
                    for_factory.0.clone(),
                    MemoryShare::new(for_factory.1.clone()),
                ))
            },
            start_instance,
        );
        // Pre-warm: a start-up failure is a configuration error now, not a 500 later.
        let mut warm = pool.prewarm(PREWARM.min(self.opts.pool_size))?;
        let start_features = warm.first_mut().map_or(0, |i| st(i).module_features);
        let buffers_request = start_features & feature::BUFFER_REQUEST != 0;
        // What the guest may read during a call is read before it. Trailers a guest enables
        // only during a call are not waited for: it sees the trailers that have arrived (none
        // before the body ended), as with the reference host, where Go's `Request.Trailer`
        // fills in once the body has been read.
        let reads_ahead =
            self.reads_body || (self.touches_headers && start_features & feature::TRAILERS != 0);
        drop(warm);
        Ok(HttpWasmMiddleware {
            failures: Failures::new(&self.name, middleware, policy),
            stats,
            shared,
            pool,
            buffers_request,
            reads_ahead,
        })
    }
}

/// Runs a new instance's start-up and caches its handler exports.
fn start_instance(inst: &mut dyn Instance) -> Result<(), Trap> {
    // Traefik runs `_start`, then `_initialize`, whichever exist.
    for name in ["_start", "_initialize"] {
        if let Some(f) = inst.export(name) {
            match inst.call(&f, &[], &mut []) {
                Ok(()) => {}
                // TinyGo's `_start` ends in proc_exit(0): that is success.
                Err(t) if t.is_success_exit() => {}
                Err(t) => return Err(t),
            }
        }
    }
    let handlers = Handlers {
        request: inst.export("handle_request"),
        response: inst.export("handle_response"),
    };
    let memory = inst.memory_size();
    if let Some(st) = inst.data().downcast_mut::<HttpWasmState>() {
        st.handlers = Some(Arc::new(handlers));
        if st.memory.wanted() {
            st.memory.update(memory);
        }
    }
    Ok(())
}

/// Cached handles of the guest's handler exports.
#[derive(Clone)]
pub(crate) struct Handlers {
    request: Option<ExportFunc>,
    response: Option<ExportFunc>,
}

/// A middleware running an http-wasm plugin.
pub struct HttpWasmMiddleware {
    shared: Arc<MiddlewareShared>,
    /// Its guest's calls and memory, for metrics.
    stats: Arc<GuestStats>,
    /// Its failure policy, reload backoff and failure log.
    failures: Failures,
    pool: GuestPool,
    /// The guest enables `buffer_request` at start-up (the same on every instance): the body
    /// is then read before an instance is taken, so a slow client holds no instance.
    buffers_request: bool,
    /// The guest may read the request body (or its trailers) during a call: up to
    /// `maxBodyBytes` of it is read ahead, before an instance is taken.
    reads_ahead: bool,
}

impl HttpWasmMiddleware {
    /// The instance pool (for tests and metrics).
    pub fn pool(&self) -> &InstancePool {
        self.pool.instances()
    }

    /// Poisons `inst` and logs the trap: the request gets a 500.
    fn trap_error(&self, inst: &mut PooledInstance, t: &Trap) -> ProxyError {
        crate::guest::trap_error(&self.shared.plugin, &self.shared.middleware, &mut **inst, t)
    }
}

fn st(inst: &mut PooledInstance) -> &mut HttpWasmState {
    inst.data()
        .downcast_mut::<HttpWasmState>()
        .expect("http-wasm instances carry HttpWasmState")
}

/// A body that could not be buffered: too large (413 for a request, 500 for a response), or
/// its stream failed (400 for a request, 502 for a response; the stream's error is the source).
fn buffer_error(e: BufferError, status: StatusCode) -> ProxyError {
    let request = status == StatusCode::PAYLOAD_TOO_LARGE;
    match e {
        BufferError::TooLarge { .. } => ProxyError::new(
            if request {
                ErrorSource::Downstream
            } else {
                ErrorSource::Plugin
            },
            status,
            e.to_string(),
        ),
        BufferError::Stream(cause) => {
            let (source, status) = if request {
                (ErrorSource::Downstream, StatusCode::BAD_REQUEST)
            } else {
                (ErrorSource::Upstream, StatusCode::BAD_GATEWAY)
            };
            // The message repeats the cause: logs that print only the message keep it.
            ProxyError::new(source, status, format!("body stream failed: {cause}"))
                .with_source(cause)
        }
    }
}

/// The phases calls are counted under (see [`GuestStats`]), by index.
const PHASES: [&str; 2] = ["handle_request", "handle_response"];
const REQUEST: usize = 0;
const RESPONSE: usize = 1;

/// Calls a handler (of phase `phase`, an index into [`PHASES`]) with the exchange moved into
/// the instance, and takes it back out.
fn call_with(
    inst: &mut PooledInstance,
    stats: &GuestStats,
    phase: usize,
    ex: Box<Exchange>,
    f: &ExportFunc,
    args: &[Val],
    results: &mut [Val],
) -> (Box<Exchange>, Result<(), Trap>) {
    // Only a guest that can write to stdout needs its calls marked (it costs a little).
    let shared = &st(inst).shared;
    let in_call = shared
        .writes_stdio
        .then(|| crate::guest::log::in_call(&shared.middleware, ex.request.request_id.as_ref()));
    st(inst).exchange = Some(ex);
    let started = stats.start();
    let result = inst.call(f, args, results);
    drop(in_call);
    if started.is_some() {
        stats.record(phase, started);
        let memory = inst.memory_size();
        st(inst).memory.update(memory);
    }
    let ex = st(inst)
        .exchange
        .take()
        .expect("the exchange stays in the instance during the call");
    (ex, result)
}

/// The response a guest built itself (next = 0).
fn guest_response(ex: Box<Exchange>) -> Response {
    let mut resp = Response::new(state::status_code(ex.response.status));
    resp.headers = ex.response.headers;
    // The server frames the body the guest wrote; a guest-set length could disagree with it.
    resp.headers.remove(http::header::CONTENT_LENGTH);
    let data = ex
        .response
        .written
        .map(|(_, w)| w.freeze())
        .unwrap_or_default();
    resp.body = Body::from(BufferedBody {
        data,
        trailers: ex.response.trailers,
    });
    resp
}

/// An instance leased for one request. While the guest waits for `handle_response` (after a
/// `handle_request` that said next), dropping the lease (the client went away, the request
/// future was cancelled) throws the instance away: its guest state expects a response call that
/// will never come.
struct Lease {
    inst: crate::guest::Lease,
    awaiting_response: bool,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.awaiting_response {
            self.inst.poison();
        }
    }
}

/// What a fail-open middleware needs to pass a request on as it arrived: its head and what
/// was read ahead of its body (the guest's reads may drop that). Saved only under `open`.
struct ArrivedRequest {
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    headers: crate::headers::Headers,
    read_ahead: bytes::Bytes,
}

impl ArrivedRequest {
    /// The request's head; what is read ahead of its body is added once it was read.
    fn head(req: &Request) -> ArrivedRequest {
        ArrivedRequest {
            method: req.method.clone(),
            uri: req.uri.clone(),
            version: req.version,
            headers: req.headers.clone(),
            read_ahead: bytes::Bytes::new(),
        }
    }

    /// The request as it arrived; addresses and extensions come from `now` (the guest cannot
    /// change them), the rest of the body from `body`.
    fn restore(self, now: &mut Request, body: &mut RequestBody) -> Request {
        let mut req = Request::new(self.method, self.uri, now.source_addr);
        req.version = self.version;
        req.headers = self.headers;
        req.local_addr = now.local_addr;
        req.extensions = std::mem::take(&mut now.extensions);
        req.request_id = now.request_id.take();
        req.body = body.original(self.read_ahead);
        req
    }
}

/// Where the guest failed, with what a fail-open middleware passes on from there.
enum Failed {
    /// Before next: the request goes on as it arrived.
    Request {
        error: ProxyError,
        // Boxed: a request is large and this is the rare path (a guest failure under `open`).
        arrived: Option<Box<Request>>,
    },
    /// After next: the client gets next's answer as it came.
    Response {
        error: ProxyError,
        from_next: Option<Result<Response, ProxyError>>,
    },
}

#[async_trait]
impl Middleware for HttpWasmMiddleware {
    fn stats(&self) -> Option<MiddlewareStats> {
        let pool = self.pool.instances();
        Some(MiddlewareStats {
            plugin: self.shared.plugin.clone(),
            phases: self.stats.phases(),
            failures: self.failures.failed_total(),
            refused: self.failures.refused_total(),
            instances_idle: pool.idle() as u64,
            instances_busy: pool.in_use() as u64,
            memory_bytes: self.stats.memory_bytes(),
            custom: Vec::new(),
        })
    }

    // Written out rather than `async fn`: the request goes into its exchange's box before the
    // future is made, so the future (moved into a box of its own, once per link) holds a
    // pointer instead of the request.
    fn handle<'s, 'n, 'f>(&'s self, mut req: Request, next: Next<'n>) -> ChainFuture<'f>
    where
        's: 'f,
        'n: 'f,
        Self: 'f,
    {
        let open = self.failures.policy() == FailurePolicy::Open;
        // Boxed: only `open` needs it, and it would make every exchange's future larger.
        let arrived = open.then(|| Box::new(ArrivedRequest::head(&req)));
        let body = RequestBody::new(std::mem::take(&mut req.body));
        let ex = Exchange::new(req, body, 0);
        Box::pin(self.answer(ex, arrived, next))
    }
}

impl HttpWasmMiddleware {
    /// Runs `ex` through the guest and answers for its failures by the failure policy.
    async fn answer(
        &self,
        ex: Box<Exchange>,
        arrived: Option<Box<ArrivedRequest>>,
        next: Next<'_>,
    ) -> Result<Response, ProxyError> {
        // `reload` in backoff: the guest is not entered.
        if let Some(resp) = self.failures.refused() {
            return Ok(resp);
        }
        match self.exchange(ex, arrived, next).await {
            Ok(Ok(resp)) => {
                self.failures.succeeded();
                Ok(resp)
            }
            // Not the guest's failure (the client's body, an inner middleware, the upstream).
            Ok(Err(e)) => Err(e),
            Err(failed) => {
                let (error, skip) = match failed {
                    Failed::Request { error, arrived } => (error, arrived.map(|r| Ok(*r))),
                    Failed::Response { error, from_next } => (error, from_next.map(Err)),
                };
                match (self.failures.failed(&error, || self.pool.recycle()), skip) {
                    (Verdict::Skip, Some(Ok(req))) => Box::pin(next.run(req)).await,
                    (Verdict::Skip, Some(Err(from_next))) => from_next,
                    (Verdict::Answer(resp), _) => Ok(resp),
                    (Verdict::Skip, None) => unreachable!("open saves what it skips with"),
                }
            }
        }
    }

    /// One request through the guest: `Err` when the guest failed (the failure policy decides
    /// the answer), `Ok(Err)` for errors that are not the guest's.
    async fn exchange(
        &self,
        mut ex: Box<Exchange>,
        mut arrived: Option<Box<ArrivedRequest>>,
        next: Next<'_>,
    ) -> Result<Result<Response, ProxyError>, Failed> {
        let limit = self.shared.max_body_bytes;
        // Saved under `open` only.
        let open = arrived.is_some();
        // What the guest may read during its calls is read now, before an instance is taken:
        // a guest call never waits for the client, and no instance waits on a slow one.
        let body = &mut ex.body;
        if !body.eof {
            // Boxed, as every wait below that a request without a body never takes: their
            // state would otherwise make every exchange's future larger, and it is moved.
            let read = if self.buffers_request {
                // Buffered whole for next and handle_response: larger than the limit is 413.
                Box::pin(body.buffer_rest(limit)).await
            } else if self.reads_ahead {
                Box::pin(body.read_ahead(limit)).await
            } else {
                Ok(())
            };
            if let Err(e) = read {
                return Ok(Err(buffer_error(e, StatusCode::PAYLOAD_TOO_LARGE)));
            }
        }
        if let Some(a) = &mut arrived {
            a.read_ahead = bytes::Bytes::copy_from_slice(&ex.body.pending);
        }
        let inst = match self.pool.acquire().await {
            Ok(inst) => inst,
            Err(error) if crate::guest::is_start_failure(&error) => {
                let arrived = arrived.map(|a| Box::new(a.restore(&mut ex.request, &mut ex.body)));
                return Err(Failed::Request { error, arrived });
            }
            Err(e) => return Ok(Err(e)),
        };
        let mut lease = Lease {
            inst,
            awaiting_response: false,
        };
        let inst = &mut lease.inst;
        let handlers = st(inst)
            .handlers
            .clone()
            .expect("handlers are cached at start-up");
        ex.features = st(inst).module_features;
        if ex.has(feature::BUFFER_REQUEST) && !ex.body.eof {
            // Start-up features are the same on every instance, so `buffers_request` read it
            // all already; kept in case an instance ever differs.
            if let Err(e) = Box::pin(ex.body.buffer_rest(limit)).await {
                return Ok(Err(buffer_error(e, StatusCode::PAYLOAD_TOO_LARGE)));
            }
        }

        // Request phase.
        let (ctx, go_next) = match &handlers.request {
            Some(f) => {
                let mut out = [Val::I64(0)];
                let (back, result) = call_with(inst, &self.stats, REQUEST, ex, f, &[], &mut out);
                ex = back;
                if ex.body.too_large {
                    // Stopped mid-call: the guest's state is unknown, so the instance goes.
                    inst.poison();
                    let e = ProxyError::new(
                        ErrorSource::Downstream,
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!(
                            "middleware {}: the plugin read past the first {limit} bytes of \
                             the request body (maxBodyBytes)",
                            self.shared.middleware
                        ),
                    );
                    return Ok(Err(match result {
                        Err(t) => e.with_source(t),
                        Ok(()) => e,
                    }));
                }
                if let Err(t) = result {
                    let error = self.trap_error(inst, &t);
                    drop(lease);
                    let arrived =
                        arrived.map(|a| Box::new(a.restore(&mut ex.request, &mut ex.body)));
                    return Err(Failed::Request { error, arrived });
                }
                let packed = out[0].i64().unwrap_or(0);
                // Only the low 32 bits say "next" (the reference host's pool leak came from using all 64).
                ((packed >> 32) as i32, packed as u32 != 0)
            }
            None => (0, true),
        };
        if !go_next {
            return Ok(Ok(guest_response(ex)));
        }
        lease.awaiting_response = handlers.response.is_some();
        let next_req = match ex.request_for_next(limit).await {
            Ok(r) => r,
            Err(e) => return Ok(Err(buffer_error(e, StatusCode::PAYLOAD_TOO_LARGE))),
        };
        let result = next.run(next_req).await;

        // Response phase.
        ex.phase = Phase::Response;
        ex.body.replay_pos = 0;
        ex.response.read_pos = 0;
        let guest_set = std::mem::take(&mut ex.response.headers);
        let mut stream_body = None;
        let mut extensions = http::Extensions::new();
        let is_error = result.is_err();
        let mut upstream_error = None;
        match result {
            Ok(mut resp) => {
                // Headers the guest set before next are merged into next's response.
                for name in guest_set.header_map().keys() {
                    resp.headers.remove(name.as_str());
                    for v in guest_set.header_map().get_all(name) {
                        resp.headers.append(name, v);
                    }
                }
                ex.response.status = resp.status.as_u16();
                ex.response.headers = resp.headers;
                ex.response.available = true;
                extensions = resp.extensions;
                if ex.has(feature::BUFFER_RESPONSE) {
                    match Box::pin(resp.body.buffer(limit)).await {
                        Ok(buffered) => {
                            ex.response.buffered = Some(buffered.data);
                            ex.response.trailers = buffered.trailers;
                        }
                        Err(e) => {
                            return Ok(Err(buffer_error(e, StatusCode::INTERNAL_SERVER_ERROR)))
                        }
                    }
                } else {
                    stream_body = Some(resp.body);
                }
            }
            Err(e) => {
                ex.response.status = e.status.as_u16();
                upstream_error = Some(e);
            }
        }
        if let Some(f) = &handlers.response {
            // Under `open`, next's answer as the guest got it, to pass on if the guest fails.
            let as_it_came = open.then(|| {
                (
                    ex.response.status,
                    ex.response.headers.clone(),
                    ex.response.trailers.clone(),
                )
            });
            let (back, result) = call_with(
                &mut lease.inst,
                &self.stats,
                RESPONSE,
                ex,
                f,
                &[Val::I32(ctx), Val::I32(is_error as i32)],
                &mut [],
            );
            ex = back;
            lease.awaiting_response = false;
            if let Err(t) = result {
                let error = self.trap_error(&mut lease.inst, &t);
                let from_next =
                    as_it_came.map(|(status, headers, trailers)| match upstream_error {
                        Some(e) => Err(e),
                        None => {
                            let mut resp = Response::new(state::status_code(status));
                            resp.headers = headers;
                            resp.extensions = extensions;
                            resp.body = match stream_body {
                                Some(b) => b,
                                None => Body::from(BufferedBody {
                                    data: ex.response.buffered.take().unwrap_or_default(),
                                    trailers,
                                }),
                            };
                            Ok(resp)
                        }
                    });
                return Err(Failed::Response { error, from_next });
            }
        }
        drop(lease);
        if let Some(e) = upstream_error {
            return Ok(Err(e));
        }
        let buffered_response = ex.has(feature::BUFFER_RESPONSE);
        let mut resp = Response::new(state::status_code(ex.response.status));
        resp.headers = ex.response.headers;
        resp.extensions = extensions;
        // A length the guest declared on a body it did not write is honoured (a WAF blocks
        // with 403 and `content-length: 0`); a body it wrote wins and is framed anew.
        let mut declared = false;
        resp.body = match (ex.response.written, stream_body) {
            // Bytes written before next, then next's streamed body: the reference host writes
            // both to the client, in that order. Next's length grows by the guest's bytes.
            (Some((Phase::Request, w)), Some(stream)) => {
                let extra = w.len();
                let total = resp
                    .headers
                    .get_str(http::header::CONTENT_LENGTH)
                    .and_then(|v| v.trim().parse::<usize>().ok());
                match total {
                    Some(n) => resp
                        .headers
                        .set(http::header::CONTENT_LENGTH, (n + extra).to_string()),
                    None => {
                        resp.headers.remove(http::header::CONTENT_LENGTH);
                    }
                }
                Body::put_back([w.freeze()], None, stream)
            }
            (Some((_, w)), _) => Body::from(BufferedBody {
                data: w.freeze(),
                trailers: ex.response.trailers,
            }),
            (None, Some(stream)) => stream,
            (None, None) => {
                let mut data = ex.response.buffered.unwrap_or_default();
                if buffered_response && ex.response.length_set {
                    data = state::honour_declared_length(&mut resp.headers, data);
                    declared = true;
                }
                Body::from(BufferedBody {
                    data,
                    trailers: ex.response.trailers,
                })
            }
        };
        if buffered_response && !declared {
            // The guest may have changed the body's length; the server frames it anew.
            resp.headers.remove(http::header::CONTENT_LENGTH);
        }
        Ok(Ok(resp))
    }
}

#[cfg(test)]
mod tests;
