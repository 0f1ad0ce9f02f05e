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
#[async_trait]
pub trait Middleware: Send + Sync {
    /// Handles `req`, passing it on with `next.run(req)` or answering it directly.
    async fn handle(&self, req: Request, next: Next<'_>) -> Result<Response, ProxyError>;
}

/// What a chain ends in: a service that produces the response.
#[async_trait]
pub trait Endpoint: Send + Sync {
    /// Answers the request.
    async fn call(&self, req: Request) -> Result<Response, ProxyError>;
}

/// The rest of the chain after the current middleware.
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
    pub async fn run(self, req: Request) -> Result<Response, ProxyError> {
        match self.rest.split_first() {
            Some((first, rest)) => {
                first
                    .handle(
                        req,
                        Next {
                            rest,
                            endpoint: self.endpoint,
                        },
                    )
                    .await
            }
            None => self.endpoint.call(req).await,
        }
    }
}
