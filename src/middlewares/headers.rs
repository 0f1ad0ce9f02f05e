//! `headers`: sets request headers before the rest of the chain and response headers after it.

use async_trait::async_trait;
use http::{HeaderName, HeaderValue};
use wasmgate_abi::{Middleware, Next, ProxyError, Request, Response};

use crate::config::HeadersMiddlewareConfig;

/// Traefik's `headers` middleware: `customRequestHeaders` and `customResponseHeaders`, an empty value removing.
pub struct HeadersMiddleware {
    request: Vec<Change>,
    response: Vec<Change>,
}

/// One header to set (`Some`) or remove (`None`), parsed once when the middleware is built.
type Change = (HeaderName, Option<HeaderValue>);

impl HeadersMiddleware {
    /// Builds it from its config.
    pub fn new(cfg: &HeadersMiddlewareConfig) -> Self {
        // What cannot go on the wire was refused when the configuration was checked
        // (`invalid_fields`).
        let pairs = |m: &std::collections::BTreeMap<String, String>| {
            m.iter()
                .filter_map(|(k, v)| {
                    let name = HeaderName::from_bytes(k.as_bytes()).ok()?;
                    if v.is_empty() {
                        return Some((name, None));
                    }
                    Some((name, Some(HeaderValue::from_str(v).ok()?)))
                })
                .collect()
        };
        HeadersMiddleware {
            request: pairs(&cfg.custom_request_headers),
            response: pairs(&cfg.custom_response_headers),
        }
    }
}

impl HeadersMiddleware {
    /// Names and values that could not go on the wire, as (field, header name, why): a
    /// configuration error at load rather than a 500 on every request.
    pub fn invalid_fields(cfg: &HeadersMiddlewareConfig) -> Vec<(&'static str, String, String)> {
        let mut out = Vec::new();
        for (field, map) in [
            ("customRequestHeaders", &cfg.custom_request_headers),
            ("customResponseHeaders", &cfg.custom_response_headers),
        ] {
            for (name, value) in map {
                if HeaderName::from_bytes(name.as_bytes()).is_err() {
                    out.push((
                        field,
                        name.clone(),
                        format!(
                            "{name:?} is not a valid header name (RFC 9110 token characters only)"
                        ),
                    ));
                } else if HeaderValue::from_bytes(value.as_bytes()).is_err() {
                    out.push((
                        field,
                        name.clone(),
                        format!("the value of {name:?} holds a control character (CR, LF, NUL...), which a header value may not"),
                    ));
                }
            }
        }
        out
    }
}

fn apply(headers: &mut wasmgate_abi::Headers, changes: &[Change]) {
    for (name, value) in changes {
        match value {
            None => {
                headers.remove(name.as_str());
            }
            Some(v) => headers.set(name, v),
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
