//! Requests and responses as middlewares see them.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Extensions, Method, StatusCode, Uri, Version};

use crate::body::Body;
use crate::headers::Headers;

/// A request on its way through the chain.
#[derive(Debug)]
pub struct Request {
    /// The method as received.
    pub method: Method,
    /// The request target exactly as received: percent-encoding untouched.
    pub uri: Uri,
    /// The protocol version the client spoke.
    pub version: Version,
    /// Header field lines, in order.
    pub headers: Headers,
    /// The body, streamed unless a middleware buffered it.
    pub body: Body,
    /// The client's address (the TCP peer).
    pub source_addr: SocketAddr,
    /// The address the client connected to.
    pub local_addr: SocketAddr,
    /// Per-request values the proxy passes along (router name, ...).
    pub extensions: Extensions,
    /// The request's id (its `X-Request-Id`), set where the request arrives; plugin log lines
    /// carry it. `None` for requests the host makes itself (proxy-wasm http calls).
    pub request_id: Option<RequestId>,
}

/// A request id: 1 to 128 visible ASCII characters, cloned without copying.
#[derive(Clone, PartialEq, Eq)]
pub struct RequestId(Bytes);

/// What the TLS handshake of the client's connection negotiated; in a request's
/// [`extensions`](Request::extensions) (as `Arc<ConnectionTls>`) when it arrived over TLS.
/// Plugins see it as the scheme `https` and proxy-wasm's `connection.*` properties.
#[derive(Debug, Clone, Default)]
pub struct ConnectionTls {
    /// The name the client asked for (SNI), if any.
    pub server_name: Option<String>,
    /// The protocol ALPN chose, if any.
    pub alpn: Option<Vec<u8>>,
    /// `TLSv1.2` or `TLSv1.3`.
    pub version: &'static str,
    /// The cipher suite, by its IANA name (`TLS_AES_128_GCM_SHA256`).
    pub cipher: &'static str,
    /// The client presented a certificate, and it was verified (mTLS).
    pub peer_certificate: bool,
}

impl Request {
    /// What the connection's TLS handshake negotiated; `None` for a plain connection.
    pub fn tls(&self) -> Option<&ConnectionTls> {
        self.extensions
            .get::<std::sync::Arc<ConnectionTls>>()
            .map(|t| &**t)
    }
}

impl RequestId {
    /// The longest id kept.
    pub const MAX_LEN: usize = 128;

    /// Whether `value` can be a request id: 1 to [`Self::MAX_LEN`] visible ASCII characters
    /// (no spaces, no control characters), so that it goes into a log line as it is.
    pub fn is_valid(value: &[u8]) -> bool {
        (1..=Self::MAX_LEN).contains(&value.len()) && value.iter().all(u8::is_ascii_graphic)
    }

    /// `value` as a request id, if [valid](Self::is_valid).
    pub fn new(value: Bytes) -> Option<RequestId> {
        Self::is_valid(&value).then_some(RequestId(value))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Checked ASCII at construction: this never falls back.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The id's bytes, shared (for a header value).
    pub fn to_bytes(&self) -> Bytes {
        self.0.clone()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RequestId({})", self.as_str())
    }
}

impl Request {
    /// A request with no headers and an empty body; mainly for tests and built-in services.
    pub fn new(method: Method, uri: Uri, source_addr: SocketAddr) -> Self {
        Request {
            method,
            uri,
            version: Version::HTTP_11,
            headers: Headers::new(),
            body: Body::empty(),
            source_addr,
            local_addr: source_addr,
            extensions: Extensions::new(),
            request_id: None,
        }
    }

    /// The path as received, without the query.
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    /// The path and query as received (`/a%2Fb?x=1`); `/` when the target had none.
    pub fn path_and_query(&self) -> &str {
        self.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    }

    /// The host the client asked for: the URI's authority, else the Host header.
    pub fn host(&self) -> &str {
        match self.uri.authority() {
            Some(a) => a.as_str(),
            None => self.headers.get_str(http::header::HOST).unwrap_or(""),
        }
    }
}

/// A response on its way back through the chain.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: StatusCode,
    /// The protocol version the upstream spoke.
    pub version: Version,
    /// Header field lines, in order.
    pub headers: Headers,
    /// The body, streamed unless a middleware buffered it.
    pub body: Body,
    /// Per-response values (which upstream answered, ...).
    pub extensions: Extensions,
}

impl Response {
    /// A response with the given status, no headers and an empty body.
    pub fn new(status: StatusCode) -> Self {
        Response {
            status,
            version: Version::HTTP_11,
            headers: Headers::new(),
            body: Body::empty(),
            extensions: Extensions::new(),
        }
    }

    /// A plain-text response.
    pub fn text(status: StatusCode, text: impl Into<bytes::Bytes>) -> Self {
        let mut r = Response::new(status);
        r.headers
            .append("content-type", "text/plain; charset=utf-8");
        r.body = Body::full(text);
        r
    }
}

/// Names `HTTP/1.0`, `HTTP/1.1`, `HTTP/2.0` the way Go's `Request.Proto` does (http-wasm's convention).
pub fn go_proto(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_short_visible_ascii() {
        let id = RequestId::new(Bytes::from_static(b"abc-123_X")).unwrap();
        assert_eq!(id.as_str(), "abc-123_X");
        assert!(RequestId::new(Bytes::from(vec![b'a'; 128])).is_some());
        for bad in [
            &b""[..],
            &[b'a'; 129],
            b"a b",
            b"a\tb",
            b"caf\xc3\xa9",
            b"a\x7f",
        ] {
            assert!(
                RequestId::new(Bytes::copy_from_slice(bad)).is_none(),
                "{bad:?}"
            );
        }
    }
}
