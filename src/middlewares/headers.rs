//! `headers`: sets request headers before the rest of the chain and response headers after it.

use async_trait::async_trait;
use wasmgate_abi::{Middleware, Next, ProxyError, Request, Response};

use crate::config::HeadersMiddlewareConfig;

/// Traefik's `headers` middleware: `customRequestHeaders` and `customResponseHeaders`, an empty value removing.
pub struct HeadersMiddleware {
    request: Vec<(String, String)>,
    response: Vec<(String, String)>,
}

impl HeadersMiddleware {
    /// Builds it from its config.
    pub fn new(cfg: &HeadersMiddlewareConfig) -> Self {
        let pairs = |m: &std::collections::BTreeMap<String, String>| {
            m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        HeadersMiddleware {
            request: pairs(&cfg.custom_request_headers),
            response: pairs(&cfg.custom_response_headers),
        }
    }
}

fn apply(headers: &mut wasmgate_abi::Headers, changes: &[(String, String)]) {
    for (name, value) in changes {
        if value.is_empty() {
            headers.remove(name);
        } else {
            headers.set(name, value.clone());
        }
    }
}

#[async_trait]
impl Middleware for HeadersMiddleware {
    async fn handle(&self, mut req: Request, next: Next<'_>) -> Result<Response, ProxyError> {
        apply(&mut req.headers, &self.request);
        let mut resp = next.run(req).await?;
        apply(&mut resp.headers, &self.response);
        Ok(resp)
    }
}
