//! Between hyper's types and the common model, at the edges of the chain only, and the
//! hop-by-hop header rules that go with them. Used by both [`crate::proxy`] (clients) and
//! [`crate::service`] (upstreams), which is why it belongs to neither.

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::Uri;
use wasmgate_abi::{Body, BodyError, Headers, ProxyError, Request, Response};

/// Hop-by-hop headers: they describe one connection and are never forwarded (RFC 9110 §7.6.1).
/// `Trailer` is end to end (RFC 9110 §6.6.2): HTTP/1 needs it to send the trailers at all.
pub const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes the fixed hop-by-hop headers. A request's `Connection` options were removed when
/// it arrived (see [`crate::proxy::edge`]), so what a middleware added since goes through even if
/// the client named it.
pub fn strip_hop_by_hop(headers: &mut Headers) {
    // Most messages carry none: one look at the names they do carry costs less than a lookup
    // (a hash) per hop-by-hop name.
    if headers.header_map().keys().any(|n| HOP_BY_HOP.contains(n)) {
        for name in HOP_BY_HOP {
            headers.remove(name);
        }
    }
}

/// Removes the hop-by-hop headers of a message that just arrived from a peer: the fixed ones
/// and those its `Connection` header names.
pub fn strip_arriving_hop_by_hop(headers: &mut Headers) {
    for name in connection_options(headers) {
        headers.remove(&name);
    }
    strip_hop_by_hop(headers);
}

/// The header names listed in `Connection`, lower-cased.
pub fn connection_options(headers: &Headers) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .flat_map(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// Whether the TE header says the client accepts trailer fields (RFC 9110 §10.1.4).
pub fn accepts_trailers(headers: &Headers) -> bool {
    headers.get_all(http::header::TE).any(|v| {
        String::from_utf8_lossy(v).split(',').any(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("trailers")
        })
    })
}

/// A request from a client, as the chain sees it.
pub fn request_from_hyper<B>(
    req: hyper::Request<B>,
    source_addr: SocketAddr,
    local_addr: SocketAddr,
) -> Request
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BodyError>,
{
    let (parts, body) = req.into_parts();
    Request {
        method: parts.method,
        uri: parts.uri,
        version: parts.version,
        headers: Headers::from(parts.headers),
        body: Body::from_stream(body),
        source_addr,
        local_addr,
        extensions: parts.extensions,
        // Set by the handler, after the edge.
        request_id: None,
    }
}

/// Declares the trailers a buffered body will end with (see [`Body::trailer_names`]).
fn declare_trailers(headers: &mut Headers, body: &Body) {
    if let Some(names) = body.trailer_names() {
        headers.set(http::header::TRAILER, names);
    }
}

/// A response from the chain, ready for hyper to send.
pub fn response_to_hyper(mut resp: Response) -> Result<hyper::Response<Body>, ProxyError> {
    declare_trailers(&mut resp.headers, &resp.body);
    let headers = std::mem::take(&mut resp.headers)
        .into_header_map()
        .map_err(|e| ProxyError::plugin(format!("response header rejected: {e}")))?;
    let mut out = hyper::Response::new(resp.body);
    *out.status_mut() = resp.status;
    *out.headers_mut() = headers;
    *out.extensions_mut() = resp.extensions;
    Ok(out)
}

/// A request for an upstream at `uri` (absolute form).
pub fn request_to_hyper(mut req: Request, uri: Uri) -> Result<hyper::Request<Body>, ProxyError> {
    declare_trailers(&mut req.headers, &req.body);
    let headers = std::mem::take(&mut req.headers)
        .into_header_map()
        .map_err(|e| ProxyError::plugin(format!("request header rejected: {e}")))?;
    let mut out = hyper::Request::new(req.body);
    *out.method_mut() = req.method;
    *out.uri_mut() = uri;
    *out.headers_mut() = headers;
    Ok(out)
}

/// A response from an upstream, as the chain sees it.
pub fn response_from_hyper<B>(resp: hyper::Response<B>) -> Response
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BodyError>,
{
    let (parts, body) = resp.into_parts();
    Response {
        status: parts.status,
        version: parts.version,
        headers: Headers::from(parts.headers),
        body: Body::from_stream(body),
        extensions: parts.extensions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_listed_headers_go() {
        let mut h: Headers = [
            ("connection", "keep-alive, X-Secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("x-kept", "yes"),
        ]
        .into_iter()
        .collect();
        strip_arriving_hop_by_hop(&mut h);
        assert_eq!(h.names(), vec!["x-kept"]);
    }

    #[test]
    fn te_trailers_is_found_among_other_codings() {
        let h = |v: &'static str| -> Headers { [("te", v)].into_iter().collect() };
        assert!(accepts_trailers(&h("trailers")));
        assert!(accepts_trailers(&h("gzip;q=0.5, Trailers")));
        assert!(!accepts_trailers(&h("gzip")));
        assert!(!accepts_trailers(&Headers::default()));
    }
}
