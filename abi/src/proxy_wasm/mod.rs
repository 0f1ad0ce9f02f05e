//! The proxy-wasm host: runs proxy-wasm filters (ABI 0.1.0, 0.2.0, 0.2.1) as middlewares.
//!
//! One compiled VM per plugin declaration; its shared data, shared queues and
//! metrics ([`shared::VmShared`]) are shared by every instance of every
//! middleware using it. Each middleware has a bounded pool of instances; every
//! instance runs the start-up functions and its own root context lifecycle
//! (`proxy_on_context_create(root, 0)`, `proxy_on_vm_start`,
//! `proxy_on_configure`) when it is created, so a rejected configuration fails
//! the middleware's creation. A request holds one instance for its whole
//! stream (one HTTP context). Root-context events that happen outside a
//! request (ticks, queue readiness) are delivered by a per-middleware
//! dispatcher task to an idle instance of the middleware.

pub mod abi;
pub mod host;
pub mod serial;
pub mod shared;
mod state;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::{Method, StatusCode, Uri};
use http_body_util::BodyExt;
use tokio::sync::Notify;
use wasmgate_engines::{
    CompiledModule, Engine, EngineKind, FuncType, Instance, InstancePool, ModuleInfo, PoolError,
    PooledInstance, Trap, TrapReason, Val, ValType,
};

use self::abi::{action, status, AbiVersion};
use self::shared::{QueueWaiter, VmShared};
use self::state::{
    CallResponse, Callback, InstanceState, MiddlewareShared, PendingCall, Phase, RequestInfo,
    Stream,
};
use crate::body::{Body, BufferedBody};
use crate::error::{ErrorSource, ProxyError};
use crate::guest::{AbiKind, GuestPool, Lease, PluginError, PluginOptions};
use crate::headers::Headers;
use crate::middleware::{Endpoint, Middleware, Next};
use crate::model::{Request, Response};

pub use self::host::functions as host_functions;

/// Services `proxy_http_call` can reach, by name.
pub trait ServiceDirectory: Send + Sync {
    /// The service called `name`, if there is one.
    fn service(&self, name: &str) -> Option<Arc<dyn Endpoint>>;
}

/// A directory with no services: every `proxy_http_call` gets BAD_ARGUMENT.
pub struct NoServices;

impl ServiceDirectory for NoServices {
    fn service(&self, _name: &str) -> Option<Arc<dyn Endpoint>> {
        None
    }
}

impl ServiceDirectory for HashMap<String, Arc<dyn Endpoint>> {
    fn service(&self, name: &str) -> Option<Arc<dyn Endpoint>> {
        self.get(name).cloned()
    }
}

/// Longest an http call may take when the filter gives no timeout.
pub const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a stream may stay paused.
pub const MAX_PAUSE: Duration = Duration::from_secs(60);

/// The guest callbacks the host calls, each with the shapes accepted (any version).
///
/// Header and trailer callbacks come in two shapes whatever the version marker says: 2
/// parameters (0.1.0 headers, trailers everywhere: what cpp-host calls) or 3 with
/// `end_of_stream` last (0.2.x headers; 2020 TinyGo and C++ SDK filters export it under the
/// 0.1.0 marker, and MOSN's host runs them). Each is called with the arity it exports
/// (`guest_call` cuts the arguments), so the host always passes `end_of_stream` third.
fn callback_types() -> Vec<(&'static str, Vec<FuncType>)> {
    use ValType::I32;
    let f = |p: usize, r: usize| FuncType::new(vec![I32; p], vec![I32; r]);
    let one = |p: usize, r: usize| vec![f(p, r)];
    let two_or_three = || vec![f(2, 1), f(3, 1)];
    vec![
        ("proxy_on_context_create", one(2, 0)),
        ("proxy_on_vm_start", one(2, 1)),
        ("proxy_on_configure", one(2, 1)),
        ("proxy_on_tick", one(1, 0)),
        ("proxy_on_done", one(1, 1)),
        ("proxy_on_log", one(1, 0)),
        ("proxy_on_delete", one(1, 0)),
        ("proxy_on_request_headers", two_or_three()),
        ("proxy_on_response_headers", two_or_three()),
        ("proxy_on_request_body", one(3, 1)),
        ("proxy_on_response_body", one(3, 1)),
        ("proxy_on_request_trailers", two_or_three()),
        ("proxy_on_response_trailers", two_or_three()),
        ("proxy_on_http_call_response", one(5, 0)),
        ("proxy_on_queue_ready", one(2, 0)),
    ]
}

/// The ABI version a module's marker export names.
pub fn detect_version(info: &ModuleInfo) -> Result<AbiVersion, PluginError> {
    let markers: Vec<&str> = info
        .exports
        .iter()
        .map(|e| e.name.as_str())
        .filter(|n| n.starts_with("proxy_abi_version_"))
        .collect();
    let Some(first) = markers.first() else {
        return Err(PluginError::NoAbiVersion);
    };
    AbiVersion::from_marker(first).ok_or_else(|| PluginError::UnsupportedAbiVersion {
        marker: first.to_string(),
    })
}

/// A compiled proxy-wasm plugin (one VM).
pub struct ProxyWasmPlugin {
    name: String,
    module: Arc<dyn CompiledModule>,
    opts: PluginOptions,
    version: AbiVersion,
    allocator: &'static str,
    vm: Arc<VmShared>,
}

impl ProxyWasmPlugin {
    /// Checks the module against the ABI and compiles it with its version's host functions.
    pub fn load(
        name: &str,
        wasm: &[u8],
        info: &ModuleInfo,
        engine: &dyn Engine,
        opts: PluginOptions,
    ) -> Result<ProxyWasmPlugin, PluginError> {
        let version = detect_version(info)?;
        if !info.has_export("memory") {
            return Err(PluginError::MissingExport {
                abi: AbiKind::ProxyWasm,
                name: "memory".into(),
                wanted: "their memory as `memory`".into(),
            });
        }
        let alloc_ty = FuncType::new([ValType::I32], [ValType::I32]);
        // cpp-host and Kong take malloc first.
        let allocator = ["malloc", "proxy_on_memory_allocate"]
            .into_iter()
            .find(|n| info.export_func(n) == Some(&alloc_ty))
            .ok_or_else(|| PluginError::MissingExport {
                abi: AbiKind::ProxyWasm,
                name: "malloc".into(),
                wanted: "an allocator: `malloc` or `proxy_on_memory_allocate`, (i32) -> i32".into(),
            })?;
        for (cb, accepted) in callback_types() {
            if let Some(ty) = info.export_func(cb) {
                if !accepted.contains(ty) {
                    let shapes: Vec<String> = accepted.iter().map(|t| t.to_string()).collect();
                    return Err(PluginError::WrongSignature {
                        name: cb.to_string(),
                        found: ty.clone(),
                        abi: format!("proxy-wasm {version}"),
                        wanted: shapes.join(" or "),
                    });
                }
            }
        }
        let module = engine.compile(
            wasm,
            Arc::new(host::functions(name, version)),
            opts.limits.clone(),
        )?;
        let vm_id = if opts.vm_id.is_empty() {
            name.to_string()
        } else {
            opts.vm_id.clone()
        };
        Ok(ProxyWasmPlugin {
            name: name.to_string(),
            module,
            version,
            allocator,
            vm: VmShared::new(&vm_id),
            opts,
        })
    }

    /// The engine running it.
    pub fn engine(&self) -> EngineKind {
        self.module.engine()
    }

    /// The ABI version the module speaks.
    pub fn version(&self) -> AbiVersion {
        self.version
    }

    /// The VM's shared data, queues and metrics (metric values are read here).
    pub fn vm(&self) -> &Arc<VmShared> {
        &self.vm
    }

    /// A middleware with its own root contexts (one per instance) configured
    /// with `config`; `services` are what `proxy_http_call` can reach.
    ///
    /// Must be called inside a tokio runtime: the middleware's dispatcher (ticks and queue
    /// readiness outside requests) is spawned on it here, so a tick period set in
    /// `on_vm_start` or `on_configure` fires from the start. Outside one this is an error,
    /// never a middleware that stays silent until its first request.
    pub fn middleware(
        &self,
        middleware: &str,
        config: Vec<u8>,
        services: Arc<dyn ServiceDirectory>,
    ) -> Result<ProxyWasmMiddleware, PluginError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| PluginError::NoRuntime(middleware.to_string()))?;
        let waiter = Arc::new(QueueWaiter {
            ready: std::sync::Mutex::new(Vec::new()),
            notify: Notify::new(),
        });
        let shared = Arc::new(MiddlewareShared {
            plugin: self.name.clone(),
            middleware: middleware.to_string(),
            root_id: self.opts.root_id.clone(),
            vm_config: Bytes::from(self.opts.vm_config.clone()),
            plugin_config: Bytes::from(config),
            vm: self.vm.clone(),
            services,
            version: self.version,
            log_level: host::min_log_level(),
            max_body_bytes: self.opts.max_body_bytes,
            waiter: waiter.clone(),
            env: self
                .opts
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
        });
        let for_factory = shared.clone();
        let allocator = self.allocator;
        let pool = GuestPool::new(
            self.module.clone(),
            &self.opts,
            middleware,
            move || {
                let mut st = InstanceState::new(for_factory.clone());
                st.allocator = allocator;
                Box::new(st)
            },
            start_instance,
        );
        // Pre-warm one instance: a rejected configuration fails the middleware now.
        let mut warm = pool.prewarm(1).map_err(|e| match e {
            PoolError::Instantiate(t)
                if t.export == "proxy_on_vm_start" || t.export == "proxy_on_configure" =>
            {
                PluginError::Configure {
                    plugin: self.name.clone(),
                    trap: t,
                }
            }
            other => PluginError::from(other),
        })?;
        let tick = warm.first_mut().map_or(0, tick_of);
        drop(warm);
        let inner = Arc::new(Inner {
            shared,
            pool,
            tick_ms: AtomicU64::new(tick),
            waiter,
        });
        runtime.spawn(dispatcher(Arc::downgrade(&inner)));
        Ok(ProxyWasmMiddleware { inner })
    }
}

fn tick_of(inst: &mut PooledInstance) -> u64 {
    st(inst)
        .tick_period
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn st(inst: &mut PooledInstance) -> &mut InstanceState {
    st_dyn(&mut **inst)
}

fn st_dyn(inst: &mut dyn Instance) -> &mut InstanceState {
    inst.data()
        .downcast_mut::<InstanceState>()
        .expect("proxy-wasm instances carry InstanceState")
}

/// Calls guest callback `name` with `args` (cut to its arity) after making
/// `ctx` the effective context. `Ok(None)`: not exported.
fn guest_call(
    inst: &mut dyn Instance,
    name: &str,
    ctx: u32,
    args: &[i32],
) -> Result<Option<i32>, Trap> {
    let Some(f) = inst.export(name) else {
        return Ok(None);
    };
    let n = f.ty().params.len().min(args.len());
    let args: Vec<Val> = args[..n].iter().map(|a| Val::I32(*a)).collect();
    let mut results = vec![Val::I32(0); f.ty().results.len()];
    st_dyn(inst).effective_ctx = ctx;
    let r = inst.call(&f, &args, &mut results);
    st_dyn(inst).callback = Callback::Other;
    r?;
    Ok(Some(results.first().and_then(Val::i32).unwrap_or(0)))
}

/// Start-up and root context lifecycle of a new instance.
fn start_instance(inst: &mut dyn Instance) -> Result<(), Trap> {
    let engine = inst.engine();
    let ok_exit = |r: Result<(), Trap>| match r {
        Err(t) if !t.is_success_exit() => Err(t),
        _ => Ok(()),
    };
    if let Some(f) = inst.export("_initialize") {
        ok_exit(inst.call(&f, &[], &mut []))?;
        for main in ["main", "__main_void"] {
            if let Some(f) = inst.export(main) {
                let args = vec![Val::I32(0); f.ty().params.len()];
                let mut res: Vec<Val> = f
                    .ty()
                    .results
                    .iter()
                    .map(|t| Val::default_for(*t))
                    .collect();
                if f.ty().params.iter().all(|t| *t == ValType::I32) {
                    ok_exit(inst.call(&f, &args, &mut res))?;
                }
                break;
            }
        }
    } else if let Some(f) = inst.export("_start") {
        ok_exit(inst.call(&f, &[], &mut []))?;
    }
    let (root, vm_len, cfg_len) = {
        let s = st_dyn(inst);
        (
            s.root_ctx,
            s.shared.vm_config.len() as i32,
            s.shared.plugin_config.len() as i32,
        )
    };
    guest_call(inst, "proxy_on_context_create", root, &[root as i32, 0])?;
    st_dyn(inst).callback = Callback::VmStart;
    // cpp-host passes the root id to on_vm_start (the Rust SDK expects it).
    if guest_call(inst, "proxy_on_vm_start", root, &[root as i32, vm_len])? == Some(0) {
        return Err(Trap::new(
            engine,
            "proxy_on_vm_start",
            TrapReason::Other("returned false: the VM configuration was rejected".into()),
        ));
    }
    st_dyn(inst).callback = Callback::Configure;
    if guest_call(inst, "proxy_on_configure", root, &[root as i32, cfg_len])? == Some(0) {
        return Err(Trap::new(
            engine,
            "proxy_on_configure",
            TrapReason::Other("returned false: the plugin configuration was rejected".into()),
        ));
    }
    Ok(())
}

struct Inner {
    shared: Arc<MiddlewareShared>,
    pool: GuestPool,
    tick_ms: AtomicU64,
    waiter: Arc<QueueWaiter>,
}

/// A middleware running a proxy-wasm filter.
pub struct ProxyWasmMiddleware {
    inner: Arc<Inner>,
}

impl ProxyWasmMiddleware {
    /// The instance pool (for tests).
    pub fn pool(&self) -> &InstancePool {
        self.inner.pool.instances()
    }
}

/// Delivers ticks and queue readiness to idle instances, and runs the http calls they make.
async fn dispatcher(weak: Weak<Inner>) {
    loop {
        let (waiter, tick_ms) = match weak.upgrade() {
            Some(i) => (i.waiter.clone(), i.tick_ms.load(Ordering::Relaxed)),
            None => return,
        };
        let wait = if tick_ms > 0 {
            Duration::from_millis(tick_ms)
        } else {
            Duration::from_millis(500)
        };
        let _ = tokio::time::timeout(wait, waiter.notify.notified()).await;
        let Some(inner) = weak.upgrade() else { return };
        let ready: Vec<u32> =
            std::mem::take(&mut *waiter.ready.lock().unwrap_or_else(|p| p.into_inner()));
        if ready.is_empty() && inner.tick_ms.load(Ordering::Relaxed) == 0 {
            continue;
        }
        let Some(acquired) = inner.pool.try_acquire_now() else {
            // Every instance is busy: try again next round.
            if !ready.is_empty() {
                let mut r = waiter.ready.lock().unwrap_or_else(|p| p.into_inner());
                r.extend(ready);
                waiter.notify.notify_one();
            }
            continue;
        };
        let Ok(inst) = acquired else {
            continue;
        };
        let mut run = Run { mw: &inner, inst };
        let root = st(&mut run.inst).root_ctx;
        let mut result = Ok(());
        for q in ready {
            result = run
                .call("proxy_on_queue_ready", root, &[root as i32, q as i32])
                .map(|_| ());
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            result = run.tick_if_due().await;
        }
        if result.is_ok() {
            result = run.drive().await;
        }
        if let Err(e) = result {
            tracing::error!(target: "wasmgate::plugin", plugin = %inner.shared.plugin,
                middleware = %inner.shared.middleware, "root context callback failed: {e}");
        }
        let t = tick_of(&mut run.inst);
        inner.tick_ms.store(t, Ordering::Relaxed);
    }
}

/// One acquired instance working for a request or the dispatcher.
struct Run<'a> {
    mw: &'a Inner,
    inst: Lease,
}

impl Drop for Run<'_> {
    fn drop(&mut self) {
        // A stream still in flight here was abandoned (the request future was dropped, say):
        // its context never ended, so the instance must not serve another request.
        if !self.inst.is_poisoned() && self.state().stream.is_some() {
            self.inst.poison();
        }
    }
}

impl Run<'_> {
    fn trap_error(&mut self, t: &Trap) -> ProxyError {
        let sh = &self.mw.shared;
        crate::guest::trap_error(&sh.plugin, &sh.middleware, &mut **self.inst, t)
    }

    fn call(&mut self, name: &str, ctx: u32, args: &[i32]) -> Result<Option<i32>, ProxyError> {
        match guest_call(&mut **self.inst, name, ctx, args) {
            Ok(r) => Ok(r),
            Err(t) => Err(self.trap_error(&t)),
        }
    }

    fn state(&mut self) -> &mut InstanceState {
        st(&mut self.inst)
    }

    fn stream(&mut self) -> &mut Stream {
        self.state().stream.as_mut().expect("a stream is in flight")
    }

    /// Calls `proxy_on_tick` if the root context's period has passed.
    async fn tick_if_due(&mut self) -> Result<(), ProxyError> {
        let s = self.state();
        let Some(p) = s.tick_period else {
            return Ok(());
        };
        if s.last_tick.elapsed() < p {
            return Ok(());
        }
        s.last_tick = Instant::now();
        let root = s.root_ctx;
        self.call("proxy_on_tick", root, &[root as i32])?;
        self.drive().await
    }

    /// Sends every pending http call and delivers its response to the root context.
    async fn drive(&mut self) -> Result<(), ProxyError> {
        loop {
            let calls = std::mem::take(&mut self.state().pending_calls);
            if calls.is_empty() {
                return Ok(());
            }
            for call in calls {
                let result = execute(&self.mw.shared, &call).await;
                let root = self.state().root_ctx;
                let args = match result {
                    Ok(resp) => {
                        let a = [
                            root as i32,
                            call.token as i32,
                            resp.headers.len() as i32,
                            resp.body.len() as i32,
                            resp.trailers.len() as i32,
                        ];
                        let s = self.state();
                        s.call_response = Some(resp);
                        s.last_status = (status::OK as u32, String::new());
                        a
                    }
                    Err(msg) => {
                        let s = self.state();
                        s.call_response = None;
                        s.last_status = (status::BROKEN_CONNECTION as u32, msg);
                        [root as i32, call.token as i32, 0, 0, 0]
                    }
                };
                let r = self.call("proxy_on_http_call_response", root, &args);
                self.state().call_response = None;
                r?;
            }
        }
    }

    /// After a stream callback: runs the calls it made; then, if it paused, waits for a resume.
    async fn settle(&mut self, paused: bool, response: bool) -> Result<(), ProxyError> {
        self.drive().await?;
        if !paused {
            return Ok(());
        }
        let started = Instant::now();
        loop {
            let s = self.stream();
            if s.local_response.is_some() || s.closed {
                return Ok(());
            }
            let resumed = if response {
                std::mem::take(&mut s.resume_response)
            } else {
                std::mem::take(&mut s.resume_request)
            };
            if resumed {
                return Ok(());
            }
            if started.elapsed() > MAX_PAUSE {
                return Err(
                    self.plugin_error(format!("stream stayed paused longer than {MAX_PAUSE:?}"))
                );
            }
            if !self.state().pending_calls.is_empty() {
                self.drive().await?;
                continue;
            }
            match self.state().tick_period {
                Some(p) => {
                    let due = self.state().last_tick + p;
                    tokio::time::sleep_until(due.into()).await;
                    self.tick_if_due().await?;
                }
                None => {
                    return Err(self.plugin_error(
                        "the filter paused the stream with nothing pending that could resume it"
                            .into(),
                    ))
                }
            }
        }
    }

    fn plugin_error(&self, msg: String) -> ProxyError {
        ProxyError::plugin(format!(
            "plugin {} (middleware {}): {msg}",
            self.mw.shared.plugin, self.mw.shared.middleware
        ))
    }

    /// Runs a stream callback and everything it started; `Ok(true)`: the stream must stop here
    /// (a local response or a close).
    async fn stream_callback(
        &mut self,
        name: &str,
        args: &[i32],
        response: bool,
    ) -> Result<bool, ProxyError> {
        let ctx = self.stream().ctx;
        {
            let s = self.stream();
            if response {
                s.resume_response = false;
            } else {
                s.resume_request = false;
            }
        }
        let mut full = vec![ctx as i32];
        full.extend_from_slice(args);
        let r = self.call(name, ctx, &full)?;
        let paused = r.is_some_and(|a| a != action::CONTINUE);
        let s = self.stream();
        if s.local_response.is_some() || s.closed {
            return Ok(true);
        }
        self.settle(paused, response).await?;
        let s = self.stream();
        Ok(s.local_response.is_some() || s.closed)
    }

    /// Runs body callbacks over `body`; returns the body to forward, or `None` to stop.
    async fn filter_body(
        &mut self,
        mut body: Body,
        response: bool,
    ) -> Result<Option<BufferedBody>, ProxyError> {
        let (cb, tcb) = if response {
            ("proxy_on_response_body", "proxy_on_response_trailers")
        } else {
            ("proxy_on_request_body", "proxy_on_request_trailers")
        };
        let limit = self.mw.shared.max_body_bytes;
        let too_large = |this: &Self| {
            if response {
                this.plugin_error(format!(
                    "response body exceeds the {limit}-byte buffer limit"
                ))
            } else {
                ProxyError::new(
                    ErrorSource::Downstream,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body exceeds the {limit}-byte buffer limit"),
                )
            }
        };
        let has_body_cb = self.inst.export(cb).is_some();
        let has_trailers_cb = self.inst.export(tcb).is_some();
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
                    Some(Err(e)) => {
                        return Err(if response {
                            ProxyError::bad_gateway(format!("response body failed: {e}"))
                        } else {
                            ProxyError::bad_request(format!("request body failed: {e}"))
                        })
                    }
                    // As Envoy: when the body is known to end with this chunk (Content-Length
                    // reached, HTTP/2 END_STREAM on the DATA frame), the chunk itself carries
                    // end_of_stream; an empty end call comes only when the end arrives later.
                    Some(Ok(f)) => match f.into_data() {
                        Ok(d) => (body.is_end_stream(), d),
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
                {
                    let s = self.stream();
                    if response {
                        s.info.response_size += chunk.len() as u64;
                        s.response_body = Some(std::mem::take(&mut held));
                    } else {
                        s.info.request_size += chunk.len() as u64;
                        s.request_body = Some(std::mem::take(&mut held));
                    }
                }
                let size = {
                    let s = self.stream();
                    let b = if response {
                        &s.response_body
                    } else {
                        &s.request_body
                    };
                    b.as_ref().map(|b| b.len()).unwrap_or(0)
                };
                let ctx = self.stream().ctx;
                let r = self.call(cb, ctx, &[ctx as i32, size as i32, eos as i32])?;
                let paused = r.is_some_and(|a| a != action::CONTINUE);
                held = {
                    let s = self.stream();
                    let b = if response {
                        &mut s.response_body
                    } else {
                        &mut s.request_body
                    };
                    b.take().unwrap_or_default()
                };
                {
                    let s = self.stream();
                    if s.local_response.is_some() || s.closed {
                        return Ok(None);
                    }
                }
                // Calls the callback made run now; a pause at the end waits for a resume.
                if eos {
                    // Keep the buffer visible while the stream is paused.
                    {
                        let s = self.stream();
                        let b = if response {
                            &mut s.response_body
                        } else {
                            &mut s.request_body
                        };
                        *b = Some(std::mem::take(&mut held));
                    }
                    self.settle(paused, response).await?;
                    let s = self.stream();
                    if s.local_response.is_some() || s.closed {
                        return Ok(None);
                    }
                    let b = if response {
                        &mut s.response_body
                    } else {
                        &mut s.request_body
                    };
                    held = b.take().unwrap_or_default();
                } else {
                    self.drive().await?;
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
                crate::body::BufferError::TooLarge { .. } => too_large(self),
                crate::body::BufferError::Stream(e) => {
                    if response {
                        ProxyError::bad_gateway(format!("response body failed: {e}"))
                    } else {
                        ProxyError::bad_request(format!("request body failed: {e}"))
                    }
                }
            })?;
            forwarded.extend_from_slice(&b.data);
            trailers = b.trailers;
        }
        if let Some(t) = trailers.as_ref().filter(|t| !t.is_empty()) {
            if has_trailers_cb {
                let n = t.len() as i32;
                {
                    let s = self.stream();
                    if response {
                        s.response_trailers = t.clone();
                    } else {
                        s.request_trailers = t.clone();
                    }
                }
                // Trailers end the stream: a 3-parameter trailers callback gets end_of_stream = 1.
                if self.stream_callback(tcb, &[n, 1], response).await? {
                    return Ok(None);
                }
                let s = self.stream();
                trailers = Some(if response {
                    s.response_trailers.clone()
                } else {
                    s.request_trailers.clone()
                });
            }
        }
        Ok(Some(BufferedBody {
            data: forwarded.freeze(),
            trailers,
        }))
    }

    /// `on_done`, `on_log`, `on_delete`, in the spec's order.
    fn finish(&mut self) -> Result<(), ProxyError> {
        let ctx = self.stream().ctx;
        self.stream().phase = Phase::Done;
        if self.call("proxy_on_done", ctx, &[ctx as i32])? == Some(0) {
            self.stream().done_pending = true;
        }
        self.call("proxy_on_log", ctx, &[ctx as i32])?;
        self.call("proxy_on_delete", ctx, &[ctx as i32])?;
        self.state().stream = None;
        let root = self.state().root_ctx;
        self.state().effective_ctx = root;
        Ok(())
    }

    /// Turns a stop (local response or close) into the answer.
    fn stopped(&mut self) -> Result<Response, ProxyError> {
        let s = self.stream();
        let local = s.local_response.take();
        let closed = s.closed;
        self.finish()?;
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
}

fn local_response(l: state::LocalResponse) -> Response {
    let mut r =
        Response::new(StatusCode::from_u16(l.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    for (k, v) in l.headers {
        if !k.starts_with(':') && !k.eq_ignore_ascii_case("content-length") {
            r.headers.append(k, v);
        }
    }
    r.body = Body::full(l.body);
    r
}

/// Sends one http call to its service.
async fn execute(shared: &MiddlewareShared, call: &PendingCall) -> Result<CallResponse, String> {
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
    req.headers.append("host", get(b":authority"));
    for (k, v) in &call.headers {
        if !k.starts_with(b":") && !k.eq_ignore_ascii_case(b"host") {
            req.headers.append(
                String::from_utf8_lossy(k).into_owned(),
                Bytes::from(v.clone()),
            );
        }
    }
    if !call.body.is_empty() {
        req.headers
            .set("content-length", call.body.len().to_string());
    }
    let mut trailers = Headers::new();
    for (k, v) in &call.trailers {
        trailers.append(
            String::from_utf8_lossy(k).into_owned(),
            Bytes::from(v.clone()),
        );
    }
    req.body = Body::from(BufferedBody {
        data: call.body.clone(),
        trailers: Some(trailers),
    });
    let limit = shared.max_body_bytes;
    let timeout = call
        .timeout
        .unwrap_or(MAX_CALL_TIMEOUT)
        .min(MAX_CALL_TIMEOUT);
    let fut = async move {
        let resp = endpoint.call(req).await.map_err(|e| e.message.clone())?;
        let b = resp.body.buffer(limit).await.map_err(|e| e.to_string())?;
        let mut headers = Headers::new();
        headers.append(":status", resp.status.as_u16().to_string());
        for (k, v) in resp.headers.iter() {
            headers.append(k.to_ascii_lowercase(), Bytes::copy_from_slice(v));
        }
        Ok::<_, String>(CallResponse {
            headers,
            body: b.data,
            trailers: b.trailers.unwrap_or_default(),
        })
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err("timeout".into()),
    }
}

static NEXT_STREAM: AtomicU64 = AtomicU64::new(1);

fn request_map(req: &Request) -> Headers {
    let mut h = Headers::new();
    h.append(":authority", req.host().to_string());
    h.append(":path", req.path_and_query().to_string());
    h.append(":method", req.method.as_str().to_string());
    h.append(
        ":scheme",
        req.uri.scheme_str().unwrap_or("http").to_string(),
    );
    for (k, v) in req.headers.iter() {
        if !k.eq_ignore_ascii_case("host") {
            h.append(k.to_ascii_lowercase(), Bytes::copy_from_slice(v));
        }
    }
    h
}

/// Applies the filter's request map to the request.
fn apply_request_map(req: &mut Request, map: &Headers) {
    if let Some(m) = map.get(":method").and_then(|m| Method::from_bytes(m).ok()) {
        req.method = m;
    }
    let authority = map.get_str(":authority").map(str::to_string);
    if let Some(p) = map.get_str(":path") {
        if p != req.path_and_query() {
            let uri = match (req.uri.scheme_str(), req.uri.authority()) {
                (Some(s), Some(a)) => format!("{s}://{a}{p}").parse::<Uri>(),
                _ => p.parse::<Uri>(),
            };
            if let Ok(u) = uri {
                req.uri = u;
            }
        }
    }
    let mut h = Headers::new();
    for (k, v) in map.iter() {
        if !k.starts_with(':') {
            h.append(k.to_string(), Bytes::copy_from_slice(v));
        }
    }
    if let Some(a) = authority.filter(|a| !a.is_empty()) {
        if a != req.host() {
            if let (Some(s), Ok(pa)) = (req.uri.scheme_str(), req.path_and_query().parse::<Uri>()) {
                if let Ok(u) = format!("{s}://{a}{}", pa).parse::<Uri>() {
                    req.uri = u;
                }
            }
        }
        h.set("host", a);
    }
    req.headers = h;
}

#[async_trait]
impl Middleware for ProxyWasmMiddleware {
    async fn handle(&self, mut req: Request, next: Next<'_>) -> Result<Response, ProxyError> {
        let mw = &*self.inner;
        let inst = mw.pool.acquire().await?;
        let mut run = Run { mw, inst };
        let result = run_stream(&mut run, &mut req, next).await;
        let t = tick_of(&mut run.inst);
        if t != 0 {
            mw.tick_ms.store(t, Ordering::Relaxed);
        }
        if result.is_err() && run.state().stream.is_some() && !run.inst.is_poisoned() {
            // The stream failed outside the guest (a 413, say): end the context properly.
            if run.finish().is_err() {
                run.inst.poison();
            }
        }
        result
    }
}

async fn run_stream(
    run: &mut Run<'_>,
    req: &mut Request,
    next: Next<'_>,
) -> Result<Response, ProxyError> {
    // Pending calls a root callback left behind (e.g. in on_configure) go out first.
    run.drive().await?;
    let (ctx, root) = {
        let s = run.state();
        let ctx = s.next_ctx;
        s.next_ctx += 1;
        (ctx, s.root_ctx)
    };
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
    run.state().stream = Some(Stream::new(ctx, request_map(req), info));
    run.call("proxy_on_context_create", ctx, &[ctx as i32, root as i32])?;

    // Request phase.
    let body = std::mem::take(&mut req.body);
    let eos = body.is_end_stream();
    let n = run.stream().request_headers.len() as i32;
    if run
        .stream_callback("proxy_on_request_headers", &[n, eos as i32], false)
        .await?
    {
        return run.stopped();
    }
    // A request without a body (headers said end of stream) passes untouched.
    let has_body_work = !eos
        && (run.inst.export("proxy_on_request_body").is_some()
            || run.inst.export("proxy_on_request_trailers").is_some());
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
        match run.filter_body(body, false).await? {
            None => return run.stopped(),
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
    let map = run.stream().request_headers.clone();
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
    run.stream().phase = Phase::Upstream;
    let resp = next.run(next_req).await?;

    // Response phase.
    let mut resp = resp;
    {
        let s = run.stream();
        s.phase = Phase::Response;
        s.info.response_code = Some(resp.status.as_u16());
        let mut h = Headers::new();
        h.append(":status", resp.status.as_u16().to_string());
        for (k, v) in resp.headers.iter() {
            h.append(k.to_ascii_lowercase(), Bytes::copy_from_slice(v));
        }
        s.response_headers = Some(h);
    }
    let body = std::mem::take(&mut resp.body);
    let eos = body.is_end_stream();
    let n = run
        .stream()
        .response_headers
        .as_ref()
        .map(|h| h.len())
        .unwrap_or(0) as i32;
    if run
        .stream_callback("proxy_on_response_headers", &[n, eos as i32], true)
        .await?
    {
        return run.stopped();
    }
    // A response without a body (HEAD, 204, 304) keeps its framing headers.
    let has_body_work = !eos
        && (run.inst.export("proxy_on_response_body").is_some()
            || run.inst.export("proxy_on_response_trailers").is_some());
    if has_body_work {
        match run.filter_body(body, true).await? {
            None => return run.stopped(),
            Some(b) => {
                resp.headers.remove("content-length");
                resp.body = Body::from(b);
            }
        }
    } else {
        resp.body = body;
    }
    let map = run.stream().response_headers.clone().unwrap_or_default();
    if let Some(code) = map
        .get_str(":status")
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
    {
        resp.status = code;
    }
    let mut h = Headers::new();
    for (k, v) in map.iter() {
        if !k.starts_with(':') {
            h.append(k.to_string(), Bytes::copy_from_slice(v));
        }
    }
    if has_body_work {
        h.remove("content-length");
    }
    resp.headers = h;
    run.finish()?;
    Ok(resp)
}

#[cfg(test)]
mod tests;
