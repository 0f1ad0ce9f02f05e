//! The middleware chain as seen from one link.
//!
//! A middleware gets the request and the rest of the chain ([`Next`]). Calling
//! `next.run(req)` runs the following middlewares and the service, and gives
//! back their response: code before the call is the request phase, code after
//! it the response phase, so the response phase naturally runs in reverse
//! order. Not calling it answers the request here (a short-circuit) and skips
//! the rest of the chain and the upstream. Per-request state (a plugin
//! instance pinned to the request, say) simply lives across the call.

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::ProxyError;
use crate::model::{Request, Response};

/// One link of a middleware chain.
///
/// # Contract
///
/// Every middleware runs on the tokio runtime that serves the connections, so one that
/// blocks stalls every request on its worker. What a middleware may assume, and must
/// guarantee:
///
/// - **It may assume** `handle` is polled by a tokio runtime of either flavour (one
///   current-thread runtime included): nothing may need another worker to make progress.
/// - **Guest calls are CPU work, never I/O.** A call into a WebAssembly guest is
///   synchronous; it is bounded by the plugin's `callTimeout` and never waits for the network,
///   a timer or another task. Whatever a guest may read during a call (for http-wasm: the
///   request body and its trailers, when the module imports what reads them) is read
///   *before* the call, asynchronously, bounded by `maxBodyBytes`; a guest that asks for more
///   than was read ahead gets an error (413 for a request body), not a wait. No
///   `block_in_place` or `block_on` on a request path.
/// - **Waiting happens before an instance is taken.** A middleware that leases an instance
///   to one request reads what it must wait for (a client's body, read ahead or buffered
///   whole) before it takes the instance, so a slow client holds none. An instance leased to
///   a request (http-wasm pins one from `handle_request` to `handle_response`) may be held
///   across `next.run`; a *lock* on an instance or a VM (a `Mutex` guard) is never held
///   across an `.await`.
/// - **Start-up stays off the request path.** Creating an instance (instantiate and the
///   guest's `_start`, which may take long) runs on the blocking pool
///   (`tokio::task::spawn_blocking`), or ahead of time when the middleware is built.
/// - **Cancellation is safe.** The request future may be dropped at any `.await` (the
///   client went away): state that would outlive it half-done (an instance expecting a
///   response call that will never come) is thrown away, not reused.
/// - **Errors say whose fault they are** ([`ProxyError`] carries the source and status) and
///   keep the error they wrap as their `source()`.
#[async_trait]
pub trait Middleware: Send + Sync {
    /// Handles `req`, passing it on with `next.run(req)` or answering it directly.
    async fn handle(&self, req: Request, next: Next<'_>) -> Result<Response, ProxyError>;

    /// What a plugin middleware's guest has done, for metrics; `None` (the default) for a
    /// middleware that runs no guest.
    fn stats(&self) -> Option<crate::guest::MiddlewareStats> {
        None
    }
}

/// What a chain ends in: a service that produces the response.
#[async_trait]
pub trait Endpoint: Send + Sync {
    /// Answers the request.
    async fn call(&self, req: Request) -> Result<Response, ProxyError>;
}

/// What the rest of a chain answers with, once awaited ([`Next::run`]).
pub type ChainFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response, ProxyError>> + Send + 'a>>;

/// The rest of the chain after the current middleware.
///
/// `Copy`: a middleware that fails open runs the rest of the chain itself after its guest
/// failed, with the same `Next` it would have run it with.
#[derive(Clone, Copy)]
pub struct Next<'a> {
    rest: &'a [Arc<dyn Middleware>],
    endpoint: &'a dyn Endpoint,
}

impl<'a> Next<'a> {
    /// The whole chain `middlewares`, ending in `endpoint`.
    pub fn new(middlewares: &'a [Arc<dyn Middleware>], endpoint: &'a dyn Endpoint) -> Self {
        Next {
            rest: middlewares,
            endpoint,
        }
    }

    /// Runs the rest of the chain and the endpoint.
    ///
    /// Not an `async fn`: it hands back the next link's own (boxed) future, so a caller's
    /// future holds a pointer across `next.run(req).await` instead of a state with the
    /// request in it, and the request is not copied once more on its way down.
    pub fn run(self, req: Request) -> ChainFuture<'a> {
        match self.rest.split_first() {
            Some((first, rest)) => first.handle(
                req,
                Next {
                    rest,
                    endpoint: self.endpoint,
                },
            ),
            None => self.endpoint.call(req),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::{Method, StatusCode};

    use super::*;

    /// Records its position in the request and response phases.
    struct Tag(&'static str, Arc<std::sync::Mutex<Vec<String>>>);

    #[async_trait]
    impl Middleware for Tag {
        async fn handle(&self, req: Request, next: Next<'_>) -> Result<Response, ProxyError> {
            self.1.lock().unwrap().push(format!("req {}", self.0));
            let resp = next.run(req).await;
            self.1.lock().unwrap().push(format!("resp {}", self.0));
            resp
        }
    }

    /// Answers 403 itself.
    struct Deny;

    #[async_trait]
    impl Middleware for Deny {
        async fn handle(&self, _req: Request, _next: Next<'_>) -> Result<Response, ProxyError> {
            Ok(Response::new(StatusCode::FORBIDDEN))
        }
    }

    struct Counting(AtomicUsize);

    #[async_trait]
    impl Endpoint for Counting {
        async fn call(&self, _req: Request) -> Result<Response, ProxyError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(Response::new(StatusCode::OK))
        }
    }

    fn request() -> Request {
        Request::new(
            Method::GET,
            "/".parse().unwrap(),
            "127.0.0.1:1".parse().unwrap(),
        )
    }

    #[tokio::test]
    async fn phases_run_forward_then_reverse_and_short_circuit_skips_the_rest() {
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let endpoint = Counting(AtomicUsize::new(0));
        let chain: Vec<Arc<dyn Middleware>> = vec![
            Arc::new(Tag("a", log.clone())),
            Arc::new(Tag("b", log.clone())),
        ];
        let resp = Next::new(&chain, &endpoint).run(request()).await.unwrap();
        assert_eq!(resp.status, StatusCode::OK);
        assert_eq!(*log.lock().unwrap(), ["req a", "req b", "resp b", "resp a"]);
        assert_eq!(endpoint.0.load(Ordering::SeqCst), 1);

        log.lock().unwrap().clear();
        let chain: Vec<Arc<dyn Middleware>> = vec![
            Arc::new(Tag("a", log.clone())),
            Arc::new(Deny),
            Arc::new(Tag("c", log.clone())),
        ];
        let resp = Next::new(&chain, &endpoint).run(request()).await.unwrap();
        assert_eq!(resp.status, StatusCode::FORBIDDEN);
        // `c` and the endpoint never ran; `a` still saw the response.
        assert_eq!(*log.lock().unwrap(), ["req a", "resp a"]);
        assert_eq!(endpoint.0.load(Ordering::SeqCst), 1);
    }
}
