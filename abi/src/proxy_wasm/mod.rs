//! The proxy-wasm host: runs proxy-wasm filters (ABI 0.1.0, 0.2.0, 0.2.1) as middlewares.
//!
//! As in Envoy, a VM carries many streams. One compiled module per plugin declaration; the
//! shared data, shared queues and metrics of its VM id ([`shared::VmShared`]) are shared by
//! every VM of every middleware of every plugin with that VM id. Each middleware has a small, fixed set of VMs (instances): one
//! per tokio runtime worker, or `maxInstances` when the declaration sets it (`poolSize` does
//! not apply to proxy-wasm). Each VM has one root context, created and configured with the
//! VM (`proxy_on_context_create(root, 0)`, `proxy_on_vm_start`, `proxy_on_configure`; a
//! rejected configuration fails the middleware's creation), and each request is one HTTP
//! context on the VM with the fewest live streams, with a context id unique in that VM.
//!
//! Guest calls on a VM are serialised by an async lock held only around the synchronous
//! guest calls of one phase (a callback and what it needs), never across an await: a stream
//! waiting for its upstream, an http call or its body leaves the VM to the others. A trap
//! poisons the VM: every stream on it fails (the waiting ones when they next need it), other
//! VMs go on, and a fresh VM, built off the request path, takes its place for new streams (a
//! stream that finds no VM ready waits up to `poolWait`); the poisoned one is dropped with its
//! last stream. What a failed request gets is the middleware's failure policy (`stream`
//! says which failures count): one 503 naming the middleware (`closed`, `reload`, which also
//! replaces every VM of the middleware) or the request going on without it (`open`). A stream abandoned mid-way (the client
//! went away) has its context ended (`on_done`, `on_log`, `on_delete`) on a task of its own.
//! Root-context events outside a request (ticks at the period each VM's root set, readiness
//! of the queues that VM registered, the responses to its http calls) are delivered by a
//! dispatcher task per VM, as every Envoy worker's VM ticks on its own.
//!
//! Modules, by concern:
//! - [`plugin`]: loading (version detection, export checks, compilation), [`ProxyWasmPlugin`];
//! - `vm`: the VM set of a middleware (creation, choice, poisoning and replacement), guest
//!   calls, and the per-VM dispatcher (ticks, queues);
//! - `stream`: the stream driver, [`ProxyWasmMiddleware`] and its phase machine;
//! - `calls`: sending `proxy_http_call` requests and delivering their responses;
//! - `maps`: header maps between the HTTP model and the filter's view;
//! - `pairs`: a header map as the filter sees it ([`HeaderPairs`](pairs::HeaderPairs));
//! - `state`: what host functions see (per-middleware, per-VM, per-stream);
//! - [`host`]: the host functions, one file per family; [`abi`], [`serial`]: the spec's
//!   constants and header map encoding.

pub mod abi;
mod calls;
pub mod host;
mod maps;
mod pairs;
pub mod plugin;
pub mod serial;
pub mod shared;
mod state;
mod stream;
mod turn_lock;
mod vm;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::middleware::Endpoint;

pub use self::host::functions as host_functions;
pub use self::plugin::{detect_version, ProxyWasmPlugin};
pub use self::stream::ProxyWasmMiddleware;

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

/// The most http calls one context may have out at once (dispatched, response not yet
/// delivered); past it `proxy_http_call` answers INTERNAL_FAILURE, as a host that cannot send.
pub const MAX_CALLS_OUT: usize = 16;
/// Longest an http call may take when the filter gives no timeout.
pub const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a stream may stay paused.
pub const MAX_PAUSE: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests;
