//! One request's path: snapshot, router, chain, service, and the access log line.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderName, StatusCode};
use http_body::Body as _;
use hyper::body::Incoming;
use wasmgate_abi::model::RequestId;
use wasmgate_abi::{Body, Next, ProxyError, Request, Response};

use super::edge;
use super::internal;
use super::server::ConnectionContext;
use super::timeouts::{ClientBody, ResponseBody};
use super::upgrade;
use crate::access_log::AccessEntry;
use crate::http_convert as convert;
use crate::metrics::RequestRecord;
use crate::service::UpstreamUsed;

/// The client-facing response for an error: its status and reason phrase, nothing of the internals.
fn error_response(status: StatusCode) -> Response {
    Response::text(
        status,
        format!("{}\n", status.canonical_reason().unwrap_or("Error")),
    )
}

/// Serves one request, inline in the connection's task: no guest call waits for the body
/// (see the contract on [`wasmgate_abi::Middleware`]), so while a middleware awaits the body,
/// hyper goes on reading it in this same task.
pub async fn serve(
    conn: Arc<ConnectionContext>,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<ResponseBody>, std::convert::Infallible> {
    let has_body = !http_body::Body::is_end_stream(req.body());
    // Held by the response body: the connection is idle once hyper has sent it.
    let in_flight = conn.clock.request_started(req.version(), has_body);
    // Counted here, in the order hyper hands HTTP/1 requests over.
    let smuggles = req.version() < http::Version::HTTP_2 && conn.framing.next_request_smuggles();
    let clock = conn.clock.clone();
    let Ok(mut resp) = handle(conn, req, smuggles).await;
    // Answered with the body dropped unread (a guest that failed, a short-circuit): as Go's
    // server, read what is left of a small one so the connection can carry the next request;
    // past that, hyper closes the connection after this response, and the client is told
    // rather than finding out when its next request on the connection fails.
    if has_body {
        if let Some(rest) = clock.take_abandoned_body() {
            if !drain(rest, MAX_DRAIN_BYTES).await {
                resp.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
        }
    }
    Ok(resp.map(|b| ResponseBody::new(b, in_flight)))
}

/// The most of an abandoned request body read (and thrown away) to keep its connection: Go's
/// `maxPostHandlerReadBytes`.
const MAX_DRAIN_BYTES: u64 = 256 << 10;

/// Reads `body` to its end if it ends within `limit` bytes; false if it does not (or fails).
/// The connection's read deadline bounds the wait for a slow client.
async fn drain(mut body: Incoming, limit: u64) -> bool {
    use http_body_util::BodyExt;
    if body.size_hint().lower() > limit {
        return false;
    }
    let mut read = 0u64;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return false };
        if let Some(data) = frame.data_ref() {
            read += data.len() as u64;
            if read > limit {
                return false;
            }
        }
    }
    true
}

/// Serves one request that arrived on a connection; `smuggles` when its head carried both
/// Content-Length and Transfer-Encoding (see [`super::framing`]).
pub async fn handle(
    conn: Arc<ConnectionContext>,
    mut req: hyper::Request<Incoming>,
    smuggles: bool,
) -> Result<hyper::Response<Body>, std::convert::Infallible> {
    let start = Instant::now();
    // Held to the end of the request: a reload does not change what this request runs.
    let snapshot = conn.gateway.snapshot();
    let entry_point = &conn.entry_point;
    let source = conn.peer;
    let version = req.version();
    // An upgrade (WebSocket): the client's side of it is taken now, before the chain owns the
    // request; the request carries the protocol for the upstream (see `upgrade`).
    let asked = upgrade::requested(&req);
    let client_upgrade = asked.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let req = req.map(|b| ClientBody::new(b, conn.clock.clone(), version));
    let mut req = convert::request_from_hyper(req, source, conn.local);
    if let Some(proto) = asked {
        req.extensions.insert(upgrade::UpgradeRequested(proto));
    }
    if let Some(tls) = &conn.tls {
        req.extensions.insert(tls.clone());
    }
    // What the access log needs from the request, taken before the chain owns it.
    let logged = conn.gateway.access_log.as_ref().map(|_| {
        let header = |n: &str| req.headers.get_str(n).map(str::to_string);
        (
            std::time::SystemTime::now(),
            req.method.clone(),
            req.uri.to_string(),
            req.version,
            header("user-agent"),
            header("referer"),
        )
    });
    let method = conn.gateway.metrics.as_ref().map(|_| req.method.clone());
    let refused = arrive(&conn, &mut req, smuggles).err();
    // After the edge, which may have removed the header (a `Connection` option).
    let request_id = assign_request_id(&mut req);
    // The edge first, then the internal endpoints, then the routers.
    let internal = match &refused {
        Some(_) => None,
        None => internal::answer(&conn, &snapshot, &req),
    };
    let found = match (&refused, &internal) {
        (None, None) => snapshot.routes.find(entry_point, conn.tls.is_some(), &req),
        _ => None,
    };
    let (router, service, result) = match (refused, internal, found) {
        (Some(why), _, _) => (None, None, Err(ProxyError::bad_request(why))),
        (None, Some((resp, name)), _) => (Some(name.to_string()), None, Ok(resp)),
        (None, None, None) => (
            None,
            None,
            Ok(Response::text(
                StatusCode::NOT_FOUND,
                "404 page not found\n",
            )),
        ),
        (None, None, Some(route)) => {
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
    let mut resp = match result {
        Ok(resp) => resp,
        Err(e) => {
            log_error(&e, router.as_deref());
            error_response(e.status)
        }
    };
    if resp.status == StatusCode::SWITCHING_PROTOCOLS {
        let upstream = resp.extensions.remove::<hyper::upgrade::OnUpgrade>();
        let accepted = resp.extensions.remove::<upgrade::UpgradeAccepted>();
        match (client_upgrade, upstream, accepted) {
            (Some(client), Some(upstream), Some(upgrade::UpgradeAccepted(proto))) => {
                upgrade::set_upgrade_headers(&mut resp.headers, &proto);
                conn.clock.upgraded();
                upgrade::splice(client, upstream, source);
            }
            // A 101 nothing can follow (a middleware set it, or the request asked for none).
            _ => {
                let e = ProxyError::bad_gateway("a 101 without an upgraded upstream connection");
                log_error(&e, router.as_deref());
                resp = error_response(e.status);
            }
        }
    }
    let upstream = resp.extensions.get::<UpstreamUsed>().map(|u| u.0.clone());
    let resp = match convert::response_to_hyper(resp) {
        Ok(r) => r,
        Err(e) => {
            log_error(&e, router.as_deref());
            convert::response_to_hyper(error_response(e.status)).expect("plain response")
        }
    };
    if let (Some(metrics), Some(method)) = (&conn.gateway.metrics, &method) {
        metrics.request(&RequestRecord {
            entry_point,
            method,
            status: resp.status().as_u16(),
            router: router.as_deref(),
            service: service.as_deref(),
            duration: start.elapsed(),
        });
    }
    if let (Some(log), Some((started, method, uri, version, user_agent, referer))) =
        (&conn.gateway.access_log, &logged)
    {
        log.log(&AccessEntry {
            entry_point,
            client: source,
            method,
            uri,
            version: *version,
            user_agent: user_agent.as_deref(),
            referer: referer.as_deref(),
            router: router.as_deref(),
            service: service.as_deref(),
            upstream: upstream.as_deref(),
            status: resp.status(),
            size: resp
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok()),
            start: *started,
            duration: start.elapsed(),
            request_id: request_id.as_str(),
            tls: conn.tls.as_deref(),
        });
    }
    Ok(resp)
}

/// The edge (see [`edge`]), before the router and any middleware: a request that could be
/// read two ways, or whose path is refused, is an error (400); the path is made canonical;
/// the client's `Connection` options and untrusted forwarded headers go.
fn arrive(conn: &ConnectionContext, req: &mut Request, smuggles: bool) -> Result<(), String> {
    if smuggles {
        return Err("request has both Content-Length and Transfer-Encoding".into());
    }
    if let Some(clean) = conn
        .edge
        .clean_target(&req.uri)
        .map_err(|e| e.to_string())?
    {
        req.uri = clean;
    }
    edge::remove_connection_options(&mut req.headers);
    let trusted = conn.edge.trusts(req.source_addr.ip());
    edge::set_forwarded_headers(req, trusted, conn.tls.is_some(), &conn.client_ip);
    Ok(())
}

/// The request's id: its `X-Request-Id` when the client sent one that is sane (one field line,
/// 1 to 128 visible ASCII characters, see [`RequestId::is_valid`]), otherwise a new one that
/// replaces whatever was sent. It goes upstream in the header and into the model, where plugin
/// log lines find it. Envoy keeps or generates `x-request-id` the same way (with
/// `preserve_external_request_id`).
fn assign_request_id(req: &mut Request) -> RequestId {
    let sent = {
        let mut values = req.headers.get_all(&REQUEST_ID_HEADER);
        match (values.next(), values.next()) {
            (Some(v), None) if RequestId::is_valid(v) => Some(Bytes::copy_from_slice(v)),
            _ => None,
        }
    };
    let id = match sent.and_then(RequestId::new) {
        Some(id) => id,
        None => {
            let id = new_request_id();
            req.headers.set(REQUEST_ID_HEADER, id.to_bytes());
            id
        }
    };
    req.request_id = Some(id.clone());
    id
}

/// The header a request's id travels in.
const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// A new request id, unique in this process and unlikely to repeat across processes: a random
/// 64-bit prefix chosen once per process, then a counter, 32 hex digits in all. No lock, one
/// allocation.
fn new_request_id() -> RequestId {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        // std's per-process random hash keys, mixed with the time and the pid: no RNG crate
        // needed for an id that only has to differ between processes.
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        h.finish()
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut text = [0u8; 32];
    for (i, digit) in text.iter_mut().enumerate() {
        let word = if i < 16 { prefix } else { n };
        let nibble = (word >> (60 - 4 * (i % 16))) & 0xf;
        *digit = b"0123456789abcdef"[nibble as usize];
    }
    RequestId::new(Bytes::copy_from_slice(&text)).expect("32 hex digits are a valid id")
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

#[cfg(test)]
mod tests {
    use super::*;

    fn request(ids: &[&str]) -> Request {
        let mut req = Request::new(
            http::Method::GET,
            http::Uri::from_static("/"),
            "127.0.0.1:1".parse().unwrap(),
        );
        for id in ids {
            req.headers.append(REQUEST_ID_HEADER, id.to_string());
        }
        req
    }

    #[test]
    fn a_sane_client_id_is_kept() {
        let mut req = request(&["client-id-1"]);
        let id = assign_request_id(&mut req);
        assert_eq!(id.as_str(), "client-id-1");
        assert_eq!(req.request_id.as_ref(), Some(&id));
        assert_eq!(req.headers.get_str(&REQUEST_ID_HEADER), Some("client-id-1"));
    }

    #[test]
    fn a_missing_insane_or_repeated_id_is_replaced() {
        let long = "a".repeat(129);
        let mut seen = std::collections::HashSet::new();
        for ids in [
            &[][..],
            &[""],
            &["has space"],
            &[long.as_str()],
            &["a", "b"],
        ] {
            let mut req = request(ids);
            let id = assign_request_id(&mut req);
            assert_eq!(id.as_str().len(), 32, "{ids:?}");
            assert!(id.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
            // One header line, the new id.
            let sent: Vec<_> = req.headers.get_all(&REQUEST_ID_HEADER).collect();
            assert_eq!(sent, vec![id.as_str().as_bytes()], "{ids:?}");
            assert!(seen.insert(id.as_str().to_string()), "ids are unique");
        }
    }

    #[test]
    fn generated_ids_share_the_process_prefix_and_count() {
        let a = new_request_id();
        let b = new_request_id();
        assert_eq!(a.as_str()[..16], b.as_str()[..16]);
        let n = |id: &RequestId| u64::from_str_radix(&id.as_str()[16..], 16).unwrap();
        assert!(n(&b) > n(&a));
    }
}
