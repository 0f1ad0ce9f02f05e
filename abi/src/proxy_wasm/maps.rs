//! Header maps between the HTTP model and what the filter sees: requests with the
//! `:method`, `:path`, `:authority`, `:scheme` pseudo-headers first, responses with
//! `:status`; and back, once the filter is done with them.

use http::header::HOST;
use http::{HeaderValue, Method, StatusCode, Uri};

use super::pairs::HeaderPairs;
use super::state::LocalResponse;
use crate::body::Body;
use crate::headers::Headers;
use crate::model::{Request, Response};

/// A value the host made from a message that already went through hyper's checks (a
/// method, a path, an authority).
fn value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The request's header map as the filter sees it.
pub(crate) fn request_map(req: &Request) -> HeaderPairs {
    let mut h = HeaderPairs::with_capacity(req.headers.len() + 4);
    // The Host header's own value when the authority is that (no copy).
    let authority = match (req.uri.authority(), req.headers.header_map().get(HOST)) {
        (None, Some(v)) => v.clone(),
        _ => value(req.host()),
    };
    h.append(":authority", authority);
    h.append(":path", value(req.path_and_query()));
    h.append(":method", method_value(&req.method));
    // HTTP/1.1 requests carry no scheme: the connection says.
    let scheme = match (req.uri.scheme_str(), req.tls()) {
        (Some("https"), _) | (None, Some(_)) => HeaderValue::from_static("https"),
        (Some("http"), _) | (None, None) => HeaderValue::from_static("http"),
        (Some(s), _) => value(s),
    };
    h.append(":scheme", scheme);
    for (k, v) in req.headers.iter_fields() {
        if k != HOST {
            h.append(k.as_str(), v.clone());
        }
    }
    h
}

/// A method as a value, without an allocation for the standard ones.
fn method_value(m: &Method) -> HeaderValue {
    const STANDARD: [&str; 9] = [
        "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
    ];
    match STANDARD.iter().find(|s| **s == m.as_str()) {
        Some(s) => HeaderValue::from_static(s),
        None => value(m.as_str()),
    }
}

/// A status code as a value, without an allocation for the common ones.
fn status_value(code: StatusCode) -> HeaderValue {
    const COMMON: [&str; 14] = [
        "200", "201", "204", "206", "301", "302", "304", "400", "401", "403", "404", "500", "502",
        "503",
    ];
    match COMMON.iter().find(|c| **c == code.as_str()) {
        Some(c) => HeaderValue::from_static(c),
        None => HeaderValue::from(code.as_u16()),
    }
}

/// Trailers (or any map without pseudo-headers) as the filter sees them.
pub(crate) fn pairs_of(headers: &Headers) -> HeaderPairs {
    let mut h = HeaderPairs::with_capacity(headers.len());
    for (k, v) in headers.iter_fields() {
        h.append(k.as_str(), v.clone());
    }
    h
}

/// The filter's map without its pseudo-headers, as the message carries it.
pub(crate) fn headers_of(map: &HeaderPairs) -> Headers {
    let mut h = Headers::with_capacity(map.len());
    for (k, v) in map.pairs() {
        if !k.starts_with(':') {
            h.append(k.as_str(), v);
        }
    }
    h
}

/// Applies the filter's request map to the request.
pub(crate) fn apply_request_map(req: &mut Request, map: &HeaderPairs) {
    if let Some(m) = map.get(":method").and_then(|m| Method::from_bytes(m).ok()) {
        req.method = m;
    }
    let authority = map.get_str(":authority").map(str::to_string);
    if let Some(p) = map.get_str(":path") {
        if p != req.path_and_query() {
            let uri = match (req.uri.scheme_str(), req.uri.authority()) {
                (Some(s), Some(a)) => format!("{s}://{a}{p}").parse::<Uri>(),
                _ => p.parse::<Uri>(),
            };
            if let Ok(u) = uri {
                req.uri = u;
            }
        }
    }
    let mut h = headers_of(map);
    if let Some(a) = authority.filter(|a| !a.is_empty()) {
        if a != req.host() {
            if let (Some(s), Ok(pa)) = (req.uri.scheme_str(), req.path_and_query().parse::<Uri>()) {
                if let Ok(u) = format!("{s}://{a}{}", pa).parse::<Uri>() {
                    req.uri = u;
                }
            }
        }
        h.set(HOST, a);
    }
    req.headers = h;
}

/// The response's header map as the filter sees it.
pub(crate) fn response_map(resp: &Response) -> HeaderPairs {
    let mut h = HeaderPairs::with_capacity(resp.headers.len() + 1);
    h.append(":status", status_value(resp.status));
    for (k, v) in resp.headers.iter_fields() {
        h.append(k.as_str(), v.clone());
    }
    h
}

/// Applies the filter's response map to the response (`:status` included).
pub(crate) fn apply_response_map(resp: &mut Response, map: &HeaderPairs) {
    if let Some(code) = map
        .get_str(":status")
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
    {
        resp.status = code;
    }
    resp.headers = headers_of(map);
}

/// The response a filter's `proxy_send_local_response` asked for.
pub(crate) fn local_response(l: LocalResponse) -> Response {
    let mut r =
        Response::new(StatusCode::from_u16(l.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    for (k, v) in l.headers {
        if !k.starts_with(':') && !k.eq_ignore_ascii_case("content-length") {
            r.headers.append(k, v);
        }
    }
    r.body = Body::full(l.body);
    r
}
