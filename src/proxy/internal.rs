//! The internal entry point's own answers, ahead of the routers on their entry point:
//! `/ping` (Traefik's `ping@internal`), `/metrics` (`prometheus@internal`) and
//! `/api/rawdata` (`api@internal`).

use std::sync::atomic::Ordering;

use http::{Method, StatusCode};
use wasmgate_abi::{Request, Response};

use super::server::ConnectionContext;
use crate::config::INTERNAL_ENTRY_POINT;
use crate::snapshot::Snapshot;

/// The internal router's name for `/ping`, as the access log and metrics show it.
pub const PING_ROUTER: &str = "ping@internal";
/// The internal router's name for `/metrics`.
pub const PROMETHEUS_ROUTER: &str = "prometheus@internal";
/// The internal router's name for `/api/...`.
pub const API_ROUTER: &str = "api@internal";

/// The answer to `req` if it is for one of the internal endpoints on this entry point, with
/// the internal router's name; `None` lets the routers have it. `snapshot` is the one the
/// request is served from (what `/metrics` and `/api/rawdata` report).
pub fn answer(
    conn: &ConnectionContext,
    snapshot: &Snapshot,
    req: &Request,
) -> Option<(Response, &'static str)> {
    if req.method != Method::GET && req.method != Method::HEAD {
        return None;
    }
    let config = &conn.gateway.loaded.config;
    let on_this = |named: Option<&String>| {
        named.map_or(INTERNAL_ENTRY_POINT, String::as_str) == &*conn.entry_point
    };
    match req.uri.path() {
        "/ping" => {
            let ping = config.ping.as_ref()?;
            if !on_this(ping.entry_point.as_ref()) {
                return None;
            }
            // While shutting down: the terminating status, so a load balancer stops sending.
            let (status, text) = if conn.gateway.draining.load(Ordering::Relaxed) {
                let code = ping.terminating_status_code.unwrap_or(503);
                (
                    StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                    "Terminating",
                )
            } else {
                (StatusCode::OK, "OK")
            };
            Some((Response::text(status, text), PING_ROUTER))
        }
        "/metrics" => {
            let prometheus = config.metrics.as_ref()?.prometheus.as_ref()?;
            if !on_this(prometheus.entry_point.as_ref()) {
                return None;
            }
            let metrics = conn.gateway.metrics.as_ref()?;
            let text = metrics.encode(&snapshot.plugin_middlewares);
            let mut resp = Response::text(StatusCode::OK, text);
            resp.headers.set(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            );
            Some((resp, PROMETHEUS_ROUTER))
        }
        "/api/rawdata" => {
            config.api.as_ref()?;
            if &*conn.entry_point != INTERNAL_ENTRY_POINT {
                return None;
            }
            let text =
                crate::rawdata::build(&snapshot.routing_text, snapshot.generation).to_string();
            let mut resp = Response::text(StatusCode::OK, text);
            resp.headers
                .set(http::header::CONTENT_TYPE, "application/json");
            Some((resp, API_ROUTER))
        }
        _ => None,
    }
}
