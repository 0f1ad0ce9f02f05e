//! `stripPrefix`: removes a path prefix so the upstream sees paths relative to its mount point.

use async_trait::async_trait;
use http::Uri;
use wasmgate_abi::{Middleware, Next, ProxyError, Request, Response};

use crate::config::StripPrefixConfig;

/// Traefik's `stripPrefix`: removes the first matching prefix and records it in `X-Forwarded-Prefix`.
pub struct StripPrefixMiddleware {
    prefixes: Vec<String>,
}

impl StripPrefixMiddleware {
    /// Builds it from its config.
    pub fn new(cfg: &StripPrefixConfig) -> Self {
        StripPrefixMiddleware {
            prefixes: cfg.prefixes.clone(),
        }
    }

    /// The new path-and-query and the removed prefix, if a prefix matched.
    fn strip(&self, path: &str, query: Option<&str>) -> Option<(String, String)> {
        let prefix = self
            .prefixes
            .iter()
            .find(|p| path.starts_with(p.as_str()))?;
        let rest = &path[prefix.len()..];
        let mut new = if rest.starts_with('/') {
            rest.to_string()
        } else {
            format!("/{rest}")
        };
        if let Some(q) = query {
            new.push('?');
            new.push_str(q);
        }
        Some((new, prefix.trim_end_matches('/').to_string()))
    }
}

#[async_trait]
impl Middleware for StripPrefixMiddleware {
    async fn handle(&self, mut req: Request, next: Next<'_>) -> Result<Response, ProxyError> {
        if let Some((path_and_query, prefix)) = self.strip(req.uri.path(), req.uri.query()) {
            let mut parts = req.uri.clone().into_parts();
            parts.path_and_query = Some(
                path_and_query
                    .parse()
                    .map_err(|e| ProxyError::internal(format!("stripPrefix: {e}")))?,
            );
            req.uri = Uri::from_parts(parts)
                .map_err(|e| ProxyError::internal(format!("stripPrefix: {e}")))?;
            req.headers.set("x-forwarded-prefix", prefix);
        }
        next.run(req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mw(prefixes: &[&str]) -> StripPrefixMiddleware {
        StripPrefixMiddleware {
            prefixes: prefixes.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn strips_first_matching_prefix_keeping_query_and_encoding() {
        let m = mw(&["/foo", "/api"]);
        assert_eq!(
            m.strip("/api/a%2Fb", Some("x=1")),
            Some(("/a%2Fb?x=1".into(), "/api".into()))
        );
        assert_eq!(m.strip("/api", None), Some(("/".into(), "/api".into())));
        assert_eq!(m.strip("/other", None), None);
        assert_eq!(
            mw(&["/api/"]).strip("/api/v1", None),
            Some(("/v1".into(), "/api".into()))
        );
    }
}
