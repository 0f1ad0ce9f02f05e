//! Per-middleware and per-VM state of the proxy-wasm host: what host functions see.
//!
//! A VM's [`VmState`] is its instance's host data: the root context's state and one
//! [`Stream`] per HTTP context alive on the VM, keyed by context id. Host functions act on
//! the effective context (the callee of the running callback, or what
//! `proxy_set_effective_context` switched to).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use http::Version;
use tokio::sync::Notify;

use super::abi::{buffer, map, stream, AbiVersion};
use super::pairs::HeaderPairs;
use super::shared::{QueueWaiter, VmShared};
use super::ServiceDirectory;
use crate::guest::{Charge, GuestStats, HostBudget, MemoryShare, OverBudget};

/// What one middleware's VMs share.
pub struct MiddlewareShared {
    /// Plugin declaration name (`plugin_name`).
    pub plugin: String,
    /// Middleware name.
    pub middleware: Arc<str>,
    /// `plugin_root_id`.
    pub root_id: String,
    /// VM configuration (buffer 6).
    pub vm_config: Bytes,
    /// Plugin configuration (buffer 7): the middleware's configuration.
    pub plugin_config: Bytes,
    /// The VM's shared data, queues and metrics.
    pub vm: Arc<VmShared>,
    /// Services `proxy_http_call` may reach.
    pub services: Arc<dyn ServiceDirectory>,
    /// The ABI version the module speaks.
    pub version: AbiVersion,
    /// The lowest enabled log level.
    pub log_level: i32,
    /// Body buffering limit.
    pub max_body_bytes: usize,
    /// `maxHostBytes`: the cap of each VM's [`VmState::budget`].
    pub max_host_bytes: usize,
    /// `KEY=VALUE` strings WASI `environ_get` hands out.
    pub env: Vec<String>,
    /// The module imports WASI `fd_write`: its calls are marked for its stdout's log lines.
    pub writes_stdio: bool,
    /// Calls by callback and the VMs' memory, for metrics.
    pub stats: Arc<GuestStats>,
}

/// The callbacks guest calls are counted under (`proxy_on_` left out), by index; anything
/// else counts as the last, `other`.
pub const PHASES: [&str; 16] = [
    "context_create",
    "request_headers",
    "request_body",
    "request_trailers",
    "response_headers",
    "response_body",
    "response_trailers",
    "done",
    "log",
    "delete",
    "http_call_response",
    "tick",
    "queue_ready",
    "vm_start",
    "configure",
    "other",
];

/// The index in [`PHASES`] of a call to export `name`.
pub fn phase_of(name: &str) -> usize {
    name.strip_prefix("proxy_on_")
        .and_then(|n| PHASES.iter().position(|p| *p == n))
        .unwrap_or(PHASES.len() - 1)
}

/// The callback running now (decides what configuration 0.1.0 hands out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Callback {
    /// None / another callback.
    Other,
    /// `proxy_on_vm_start`.
    VmStart,
    /// `proxy_on_configure`.
    Configure,
}

/// Where a stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Request headers/body/trailers callbacks.
    Request,
    /// The request went on; waiting for the response.
    Upstream,
    /// Response callbacks.
    Response,
    /// `on_done` / `on_log` / `on_delete`.
    Done,
}

/// A reply a filter asked for with `proxy_send_local_response`.
#[derive(Debug, Clone)]
pub struct LocalResponse {
    /// Status code.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, http::HeaderValue)>,
    /// Body.
    pub body: Bytes,
}

/// The two directions of a stream: the request goes up, the response comes back.
///
/// Used wherever the host does the same thing for both (callbacks, buffers, maps, resumes)
/// instead of mirrored branches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Downstream to upstream.
    Request,
    /// Upstream to downstream.
    Response,
}

impl Direction {
    /// The headers callback.
    pub fn headers_callback(self) -> &'static str {
        match self {
            Direction::Request => "proxy_on_request_headers",
            Direction::Response => "proxy_on_response_headers",
        }
    }

    /// The body callback.
    pub fn body_callback(self) -> &'static str {
        match self {
            Direction::Request => "proxy_on_request_body",
            Direction::Response => "proxy_on_response_body",
        }
    }

    /// The trailers callback.
    pub fn trailers_callback(self) -> &'static str {
        match self {
            Direction::Request => "proxy_on_request_trailers",
            Direction::Response => "proxy_on_response_trailers",
        }
    }

    /// The phase in which the filter may change this direction's maps and body.
    pub fn phase(self) -> Phase {
        match self {
            Direction::Request => Phase::Request,
            Direction::Response => Phase::Response,
        }
    }

    /// The direction a body buffer type names (`None` for other buffers).
    pub fn of_buffer(ty: i32) -> Option<Direction> {
        match ty {
            buffer::HTTP_REQUEST_BODY => Some(Direction::Request),
            buffer::HTTP_RESPONSE_BODY => Some(Direction::Response),
            _ => None,
        }
    }

    /// The direction an HTTP stream type names (`None` for TCP streams and unknown types).
    pub fn of_stream(ty: i32) -> Option<Direction> {
        match ty {
            stream::HTTP_REQUEST => Some(Direction::Request),
            stream::HTTP_RESPONSE => Some(Direction::Response),
            _ => None,
        }
    }

    /// The direction and whether it is the trailers, for a stream header map type.
    pub fn of_map(ty: i32) -> Option<(Direction, bool)> {
        match ty {
            map::HTTP_REQUEST_HEADERS => Some((Direction::Request, false)),
            map::HTTP_REQUEST_TRAILERS => Some((Direction::Request, true)),
            map::HTTP_RESPONSE_HEADERS => Some((Direction::Response, false)),
            map::HTTP_RESPONSE_TRAILERS => Some((Direction::Response, true)),
            _ => None,
        }
    }
}

/// One HTTP stream (request and its response) as the filter sees it.
pub struct Stream {
    /// Context id.
    pub ctx: u32,
    /// Where it is.
    pub phase: Phase,
    /// Request headers with `:method`, `:path`, `:authority`, `:scheme` first.
    pub request_headers: HeaderPairs,
    /// Request trailers.
    pub request_trailers: HeaderPairs,
    /// Request body as buffered so far (available in request body callbacks).
    pub request_body: Option<BytesMut>,
    /// Response headers with `:status` first (available once the response arrived).
    pub response_headers: Option<HeaderPairs>,
    /// Response trailers.
    pub response_trailers: HeaderPairs,
    /// The filter wrote to the request header map: only then is it applied back to the
    /// request (most filters only read it, and applying means rebuilding the headers).
    pub request_headers_written: bool,
    /// The filter wrote to the response header map (see `request_headers_written`).
    pub response_headers_written: bool,
    /// Response body as buffered so far.
    pub response_body: Option<BytesMut>,
    /// A local reply asked for.
    pub local_response: Option<LocalResponse>,
    /// `proxy_continue_stream(HTTP_REQUEST)` / `proxy_continue_request` was called.
    pub resume_request: bool,
    /// `proxy_continue_stream(HTTP_RESPONSE)` / `proxy_continue_response` was called.
    pub resume_response: bool,
    /// `proxy_close_stream` was called.
    pub closed: bool,
    /// Properties the filter set.
    pub properties: HashMap<Vec<u8>, Vec<u8>>,
    /// Request facts for properties.
    pub info: RequestInfo,
    /// `on_done` returned false and `proxy_done` was not called yet.
    pub done_pending: bool,
    /// Wakes the stream's driver when it is paused (a resume, a local response, a close).
    pub wake: Arc<Notify>,
    /// What the filter's calls on this stream made the host hold (its header map writes,
    /// body growth, properties, local response), charged to the VM's budget and given back
    /// when the stream ends (with this struct, whatever ends it).
    pub held: Charge,
}

/// Facts about the request the property getters answer from.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// Protocol.
    pub version: Version,
    /// Client address.
    pub source: SocketAddr,
    /// Address the client connected to.
    pub destination: SocketAddr,
    /// When the request reached the filter (its wall-clock time is derived when a filter
    /// asks: one clock read per stream instead of two).
    pub started: Instant,
    /// Request body bytes seen.
    pub request_size: u64,
    /// Response status once known.
    pub response_code: Option<u16>,
    /// Response body bytes seen.
    pub response_size: u64,
    /// A per-process connection id stand-in (the stream id).
    pub connection_id: u64,
    /// The request's id, for the filter's log lines and `request.id`.
    pub request_id: Option<crate::model::RequestId>,
    /// The client connection's TLS, for `connection.*` properties.
    pub tls: Option<crate::model::ConnectionTls>,
}

impl RequestInfo {
    /// The wall-clock time the request reached the filter (`request.time`).
    pub fn start_time(&self) -> SystemTime {
        SystemTime::now()
            .checked_sub(self.started.elapsed())
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

impl Stream {
    /// A fresh stream.
    pub fn new(ctx: u32, request_headers: HeaderPairs, info: RequestInfo) -> Stream {
        Stream {
            ctx,
            phase: Phase::Request,
            request_headers,
            request_trailers: HeaderPairs::new(),
            request_body: None,
            response_headers: None,
            response_trailers: HeaderPairs::new(),
            request_headers_written: false,
            response_headers_written: false,
            response_body: None,
            local_response: None,
            resume_request: false,
            resume_response: false,
            closed: false,
            properties: HashMap::new(),
            info,
            done_pending: false,
            wake: Arc::new(Notify::new()),
            held: Charge::default(),
        }
    }

    /// The body buffered so far in direction `d`.
    pub fn body_mut(&mut self, d: Direction) -> &mut Option<BytesMut> {
        match d {
            Direction::Request => &mut self.request_body,
            Direction::Response => &mut self.response_body,
        }
    }

    /// The trailers of direction `d`.
    pub fn trailers_mut(&mut self, d: Direction) -> &mut HeaderPairs {
        match d {
            Direction::Request => &mut self.request_trailers,
            Direction::Response => &mut self.response_trailers,
        }
    }

    /// Whether the filter resumed direction `d` since it last paused it.
    pub fn resumed_mut(&mut self, d: Direction) -> &mut bool {
        match d {
            Direction::Request => &mut self.resume_request,
            Direction::Response => &mut self.resume_response,
        }
    }

    /// Resumes direction `d` and wakes the stream's driver.
    pub fn resume(&mut self, d: Direction) {
        *self.resumed_mut(d) = true;
        self.wake.notify_one();
    }

    /// True once the filter stopped the stream (a local response or a close).
    pub fn stopped(&self) -> bool {
        self.local_response.is_some() || self.closed
    }
}

/// An `proxy_http_call` waiting to be sent.
#[derive(Debug)]
pub struct PendingCall {
    /// Token handed to the guest.
    pub token: u32,
    /// The context that dispatched it.
    pub ctx: u32,
    /// Service name.
    pub service: String,
    /// Headers with pseudo-headers.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// Body.
    pub body: Bytes,
    /// Trailers.
    pub trailers: Vec<(Vec<u8>, Vec<u8>)>,
    /// Timeout (`None`: the host's maximum).
    pub timeout: Option<Duration>,
    /// Its service name, headers, body and trailers, charged to the VM's budget until the
    /// call is done (dropped once its response was delivered, or never sent).
    pub _held: Charge,
}

/// The response an http call got, visible during `proxy_on_http_call_response`.
#[derive(Debug, Clone, Default)]
pub struct CallResponse {
    /// Headers with `:status`.
    pub headers: HeaderPairs,
    /// Body.
    pub body: Bytes,
    /// Trailers.
    pub trailers: HeaderPairs,
}

/// Hashes context ids (small integers, unique in a VM) as themselves: the stream map is
/// looked up in every host call.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n);
    }
}

/// The host data of one VM (instance): its root context and its streams.
pub struct VmState {
    /// Shared middleware facts.
    pub shared: Arc<MiddlewareShared>,
    /// The allocator export (`malloc` or `proxy_on_memory_allocate`).
    pub allocator: &'static str,
    /// Root context id (1).
    pub root_ctx: u32,
    /// Next context id to hand out.
    pub next_ctx: u32,
    /// The context host calls act on (reset to the callee of each callback).
    pub effective_ctx: u32,
    /// The callback running now.
    pub callback: Callback,
    /// The streams alive on this VM, by context id.
    pub streams: HashMap<u32, Stream, BuildHasherDefault<IdHasher>>,
    /// Tick period of the root context.
    pub tick_period: Option<Duration>,
    /// When the root context last ticked.
    pub last_tick: Instant,
    /// Calls dispatched and not yet sent.
    pub pending_calls: Vec<PendingCall>,
    /// Calls each context dispatched whose response it has not been given yet (at most
    /// [`super::MAX_CALLS_OUT`] each).
    pub calls_out: HashMap<u32, usize, BuildHasherDefault<IdHasher>>,
    /// Next http call token.
    pub next_token: u32,
    /// The call response being delivered.
    pub call_response: Option<CallResponse>,
    /// `proxy_get_status` answer.
    pub last_status: (u32, String),
    /// Properties set on the root context.
    pub root_properties: HashMap<Vec<u8>, Vec<u8>>,
    /// Wakes this VM's dispatcher: queue items, and a tick period the filter changed.
    pub waiter: Arc<QueueWaiter>,
    /// What the host holds for this VM's guest (`maxHostBytes`): its streams' and calls'
    /// charges while they last, and the root context's properties while they are set.
    pub budget: HostBudget,
    /// This VM's share of the middleware's linear memory, for metrics.
    pub memory: MemoryShare,
    /// The callbacks' export handles (see [`CallbackExports`]).
    pub exports: CallbackExports,
}

/// The export handles of the callbacks a VM was called with, by the address of the callback's
/// name: a callback runs several times per stream, and looking an export up by name hashes and
/// compares the name every time. Names are `'static` (the host's own list), so an address
/// stands for one name for the life of the process; a name at another address (the same text
/// elsewhere) gets its own entry, at most one per place in the host that names a callback.
#[derive(Default)]
pub struct CallbackExports {
    /// Address of the name, and the handle (`None`: the guest does not export it). A handle
    /// is out of its slot while its call runs.
    slots: Vec<(usize, Option<wasmgate_engines::ExportFunc>)>,
}

impl CallbackExports {
    /// The slot of `name`, if it was resolved before.
    pub fn slot(
        &mut self,
        name: &'static str,
    ) -> Option<&mut Option<wasmgate_engines::ExportFunc>> {
        let key = name.as_ptr() as usize;
        self.slots
            .iter_mut()
            .find(|(k, _)| *k == key)
            .map(|(_, f)| f)
    }

    /// Records what `name` resolved to.
    pub fn insert(&mut self, name: &'static str, f: Option<wasmgate_engines::ExportFunc>) {
        self.slots.push((name.as_ptr() as usize, f));
    }
}

impl VmState {
    /// State for a new VM.
    pub fn new(shared: Arc<MiddlewareShared>) -> VmState {
        VmState {
            budget: HostBudget::new(shared.max_host_bytes),
            memory: MemoryShare::new(shared.stats.clone()),
            shared,
            allocator: "malloc",
            root_ctx: 1,
            next_ctx: 2,
            effective_ctx: 1,
            callback: Callback::Other,
            exports: CallbackExports::default(),
            streams: HashMap::default(),
            tick_period: None,
            last_tick: Instant::now(),
            pending_calls: Vec::new(),
            calls_out: HashMap::default(),
            next_token: 1,
            call_response: None,
            last_status: (0, String::new()),
            root_properties: HashMap::new(),
            waiter: Arc::new(QueueWaiter {
                ready: std::sync::Mutex::new(Vec::new()),
                notify: Notify::new(),
            }),
        }
    }

    /// The stream the effective context is, if it is one.
    pub fn active_stream(&mut self) -> Option<&mut Stream> {
        self.streams.get_mut(&self.effective_ctx)
    }

    /// Charges `bytes` the filter hands the host to the effective stream, until the stream
    /// ends; nothing when the effective context is not a stream.
    pub fn charge_stream(&mut self, bytes: usize) -> Result<(), OverBudget> {
        match self.streams.get_mut(&self.effective_ctx) {
            Some(s) => s.held.add(&self.budget, bytes),
            None => Ok(()),
        }
    }

    /// Gives back `bytes` charged to the effective stream by a call that then did not keep them.
    pub fn release_stream(&mut self, bytes: usize) {
        if let Some(s) = self.streams.get_mut(&self.effective_ctx) {
            s.held.release(bytes);
        }
    }

    /// Whether `ctx` names a context of this VM (the root or a live stream).
    pub fn has_context(&self, ctx: u32) -> bool {
        ctx == self.root_ctx || self.streams.contains_key(&ctx)
    }
}
