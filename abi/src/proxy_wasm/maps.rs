//! Header maps between the HTTP model and what the filter sees: requests with the
//! `:method`, `:path`, `:authority`, `:scheme` pseudo-headers first, responses with
//! `:status`; and back, once the filter is done with them.

use http::{Method, StatusCode, Uri};
use smol_str::SmolStr;

use super::state::LocalResponse;
use crate::body::Body;
use crate::headers::Headers;
use crate::model::{Request, Response};

/// The request's header map as the filter sees it.
pub(crate) fn request_map(req: &Request) -> Headers {
    let mut h = Headers::with_capacity(req.headers.len() + 4);
    h.append(SmolStr::new_static(":authority"), req.host().to_string());
    h.append(
        SmolStr::new_static(":path"),
        req.path_and_query().to_string(),
    );
    h.append(
        SmolStr::new_static(":method"),
        req.method.as_str().to_string(),
    );
    // HTTP/1.1 requests carry no scheme: the connection says.
    let scheme = match (req.uri.scheme_str(), req.tls()) {
        (Some(s), _) => s,
        (None, Some(_)) => "https",
        (None, None) => "http",
    };
    h.append(SmolStr::new_static(":scheme"), scheme.to_string());
    for (k, v) in req.headers.iter_shared() {
        if !k.eq_ignore_ascii_case("host") {
            h.append(lower_case(k), v.clone());
        }
    }
    h
}

/// `name` in lower case (proxy-wasm's maps are), without a copy when it already is.
fn lower_case(name: &SmolStr) -> SmolStr {
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        SmolStr::new(name.to_ascii_lowercase())
    } else {
        name.clone()
    }
}

/// Applies the filter's request map to the request.
pub(crate) fn apply_request_map(req: &mut Request, map: &Headers) {
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
    let mut h = Headers::with_capacity(map.len());
    for (k, v) in map.iter_shared() {
        if !k.starts_with(':') {
            h.append(k.clone(), v.clone());
        }
    }
    if let Some(a) = authority.filter(|a| !a.is_empty()) {
        if a != req.host() {
            if let (Some(s), Ok(pa)) = (req.uri.scheme_str(), req.path_and_query().parse::<Uri>()) {
                if let Ok(u) = format!("{s}://{a}{}", pa).parse::<Uri>() {
                    req.uri = u;
                }
            }
        }
        h.set("host", a);
    }
    req.headers = h;
}

/// The response's header map as the filter sees it.
pub(crate) fn response_map(resp: &Response) -> Headers {
    let mut h = Headers::with_capacity(resp.headers.len() + 1);
    h.append(
        SmolStr::new_static(":status"),
        resp.status.as_str().to_string(),
    );
    for (k, v) in resp.headers.iter_shared() {
        h.append(lower_case(k), v.clone());
    }
    h
}

/// Applies the filter's response map to the response (`:status` included).
pub(crate) fn apply_response_map(resp: &mut Response, map: &Headers) {
    if let Some(code) = map
        .get_str(":status")
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
    {
        resp.status = code;
    }
    let mut h = Headers::with_capacity(map.len());
    for (k, v) in map.iter_shared() {
        if !k.starts_with(':') {
            h.append(k.clone(), v.clone());
        }
    }
    resp.headers = h;
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
