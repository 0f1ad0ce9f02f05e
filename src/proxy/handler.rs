//! One request's path: snapshot, router, chain, service, and the access log line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::StatusCode;
use hyper::body::Incoming;
use wasmgate_abi::{Body, Next, ProxyError, Request, Response};

use super::convert;
use crate::gateway::Gateway;
use crate::service::UpstreamUsed;

/// The client-facing response for an error: its status and reason phrase, nothing of the internals.
fn error_response(status: StatusCode) -> Response {
    Response::text(
        status,
        format!("{}\n", status.canonical_reason().unwrap_or("Error")),
    )
}

/// Adds the `X-Forwarded-*` headers Traefik adds, before any middleware runs.
fn add_forwarded_headers(req: &mut Request) {
    let ip = req.source_addr.ip().to_string();
    let xff = match req.headers.get_str("x-forwarded-for") {
        Some(prev) => format!("{prev}, {ip}"),
        None => ip.clone(),
    };
    req.headers.set("x-forwarded-for", xff);
    if !req.headers.contains("x-forwarded-proto") {
        req.headers.set("x-forwarded-proto", "http");
    }
    let host = req.host().to_string();
    if !host.is_empty() && !req.headers.contains("x-forwarded-host") {
        req.headers.set("x-forwarded-host", host);
    }
    req.headers
        .set("x-forwarded-port", req.local_addr.port().to_string());
    req.headers.set("x-real-ip", ip);
}

/// Serves one request; one with a body runs on a task of its own, so the connection's task
/// goes on reading that body: an http-wasm guest reading it waits from inside a synchronous
/// guest call, blocking its thread, while hyper reads the body in the connection's task. A
/// request without a body runs inline (a task costs some 5% of throughput, measured with
/// wrk). The request's task is aborted if the connection drops first, as it would be inline.
pub async fn handle_in_task(
    gateway: Arc<Gateway>,
    entry_point: Arc<str>,
    req: hyper::Request<Incoming>,
    source: SocketAddr,
    local: SocketAddr,
) -> Result<hyper::Response<Body>, std::convert::Infallible> {
    struct AbortOnDrop(tokio::task::JoinHandle<hyper::Response<Body>>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    if http_body::Body::is_end_stream(req.body()) {
        return handle(gateway, entry_point, req, source, local).await;
    }
    let fut = handle(gateway, entry_point, req, source, local);
    let mut task = AbortOnDrop(tokio::spawn(async move {
        let Ok(resp) = fut.await;
        resp
    }));
    match (&mut task.0).await {
        Ok(resp) => Ok(resp),
        Err(e) => {
            tracing::error!("request task failed: {e}");
            let mut resp = hyper::Response::new(Body::full("Internal Server Error\n"));
            *resp.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
            Ok(resp)
        }
    }
}

/// Serves one request that arrived on `entry_point`.
pub async fn handle(
    gateway: Arc<Gateway>,
    entry_point: Arc<str>,
    req: hyper::Request<Incoming>,
    source: SocketAddr,
    local: SocketAddr,
) -> Result<hyper::Response<Body>, std::convert::Infallible> {
    let start = Instant::now();
    // Held to the end of the request: a reload does not change what this request runs.
    let snapshot = gateway.snapshot();
    let mut req = convert::request_from_hyper(req, source, local);
    add_forwarded_headers(&mut req);
    let method = req.method.clone();
    let uri = req.uri.to_string();
    let (router, service, result) = match snapshot.routes.find(&entry_point, &req) {
        None => (
            None,
            None,
            Ok(Response::text(
                StatusCode::NOT_FOUND,
                "404 page not found\n",
            )),
        ),
        Some(route) => {
            let result = Next::new(&route.chain, route.service.as_ref())
                .run(req)
                .await;
            (
                Some(route.name.clone()),
                Some(route.service_name.clone()),
                result,
            )
        }
    };
    let resp = match result {
        Ok(resp) => resp,
        Err(e) => {
            log_error(&e, router.as_deref());
            error_response(e.status)
        }
    };
    let upstream = resp.extensions.get::<UpstreamUsed>().map(|u| u.0.clone());
    let resp = match convert::response_to_hyper(resp) {
        Ok(r) => r,
        Err(e) => {
            log_error(&e, router.as_deref());
            convert::response_to_hyper(error_response(e.status)).expect("plain response")
        }
    };
    tracing::info!(
        target: "wasmgate::access",
        entry_point = &*entry_point,
        client = %source,
        method = %method,
        uri = %uri,
        router = router.as_deref().unwrap_or("-"),
        service = service.as_deref().unwrap_or("-"),
        upstream = upstream.as_deref().unwrap_or("-"),
        status = resp.status().as_u16(),
        duration_us = start.elapsed().as_micros() as u64,
        "request"
    );
    Ok(resp)
}

fn log_error(e: &ProxyError, router: Option<&str>) {
    tracing::warn!(
        source = %e.source_kind,
        status = e.status.as_u16(),
        router = router.unwrap_or("-"),
        "{}",
        e.message
    );
}
