//! The edge: what a client sent is made trustworthy before the router, any middleware or the
//! upstream sees it. Traefik's entry-point stages, in its order: the path (encoded characters,
//! normalisation, sanitisation), then the headers named in `Connection`, then the forwarded
//! headers.

use std::net::IpAddr;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderValue, Uri};
use ipnet::IpNet;
use wasmgate_abi::headers::names;
use wasmgate_abi::{Headers, Request};

use crate::config::check::trusted_ips;
use crate::config::EntryPointConfig;
use crate::http_convert::{connection_options, HOP_BY_HOP};

/// One entry point's edge settings, parsed once.
#[derive(Debug, Clone)]
pub struct EdgePolicy {
    trusted: Vec<IpNet>,
    insecure: bool,
    /// Decoded bytes whose percent-encoded form in a path is a 400.
    denied_encoded: Vec<u8>,
    sanitize_path: bool,
}

impl EdgePolicy {
    /// The policy of `ep` (its values were checked at load; an unparsable range trusts nobody).
    pub fn new(ep: &EntryPointConfig) -> Self {
        EdgePolicy {
            trusted: trusted_ips(&ep.forwarded_headers.trusted_ips).unwrap_or_default(),
            insecure: ep.forwarded_headers.insecure,
            denied_encoded: ep.http.encoded_characters.denied(),
            sanitize_path: ep.http.sanitize_path,
        }
    }

    /// Whether the forwarded headers of a peer at `ip` are believed.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.insecure || self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The request-target with its path checked, normalised and sanitised; `None` when it
    /// is already clean.
    pub fn clean_target(&self, uri: &Uri) -> Result<Option<Uri>, PathRejected> {
        let path = uri.path();
        // OPTIONS * and the like have no path to clean.
        if !path.starts_with('/') {
            return Ok(None);
        }
        let normalised = normalise_path(path, &self.denied_encoded)?;
        let cleaned = if self.sanitize_path {
            remove_dot_segments(&normalised)
        } else {
            normalised
        };
        if cleaned == path {
            return Ok(None);
        }
        let pq = match uri.query() {
            Some(q) => format!("{cleaned}?{q}"),
            None => cleaned,
        };
        let mut parts = uri.clone().into_parts();
        parts.path_and_query = Some(PathAndQuery::try_from(pq).map_err(|_| PathRejected::Invalid)?);
        Uri::from_parts(parts)
            .map(Some)
            .map_err(|_| PathRejected::Invalid)
    }
}

/// Why a request path is refused (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathRejected {
    /// A `%` that does not start two hex digits.
    #[error("invalid percent-encoding in the request path")]
    Invalid,
    /// A percent-encoded character the entry point refuses (`encodedCharacters`).
    #[error("encoded character %{0:02X} in the request path is not allowed on this entry point")]
    Encoded(u8),
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Refuses bad and denied escapes, decodes unreserved characters and upper-cases the other
/// escapes (RFC 3986 2.3 and 6.2.2.1), so that one resource has one spelling.
fn normalise_path(path: &str, denied: &[u8]) -> Result<String, PathRejected> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            out.push(b as char);
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(PathRejected::Invalid);
        };
        let decoded = hi << 4 | lo;
        if denied.contains(&decoded) {
            return Err(PathRejected::Encoded(decoded));
        }
        if is_unreserved(decoded) {
            out.push(decoded as char);
        } else {
            out.push_str(&format!("%{decoded:02X}"));
        }
        i += 3;
    }
    Ok(out)
}

/// Removes `.` and `..` segments (RFC 3986 5.2.4) and empty segments (duplicate slashes); a
/// `..` above the root stays at the root. A path ending in `/`, `.` or `..` keeps its final
/// slash. An encoded slash (`%2F`) is data, not a separator.
fn remove_dot_segments(path: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for seg in path.split('/').skip(1) {
        trailing_slash = matches!(seg, "" | "." | "..");
        match seg {
            "" | "." => {}
            ".." => {
                kept.pop();
            }
            s => kept.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for seg in &kept {
        out.push('/');
        out.push_str(seg);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    out
}

/// The forwarded headers wasmgate manages. Those from an untrusted peer are removed, with
/// their underscore spellings (`X_Forwarded_For`), which some upstreams (CGI, WSGI) read as
/// the same header.
const FORWARDED: &[&str] = &[
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-server",
    "x-forwarded-uri",
    "x-forwarded-method",
    "x-forwarded-prefix",
    "x-forwarded-scheme",
    "x-forwarded-tls-client-cert",
    "x-forwarded-tls-client-cert-info",
    "x-scheme",
    "x-real-ip",
];

fn is_forwarded_header(name: &str) -> bool {
    FORWARDED.iter().any(|f| {
        f.len() == name.len()
            && f.bytes()
                .zip(name.bytes())
                .all(|(a, b)| a == b.to_ascii_lowercase() || (a == b'-' && b == b'_'))
    })
}

/// Removes the headers the client named in `Connection` (they were for its hop only) and
/// `Connection` itself. Not removed: the forwarded headers (whether they are believed is
/// `forwardedHeaders`' call, as in Traefik) and the fixed hop-by-hop headers, which the
/// forwarding step handles (it keeps `TE: trailers`).
pub fn remove_connection_options(headers: &mut Headers) {
    for name in connection_options(headers) {
        if !is_forwarded_header(&name) && !HOP_BY_HOP.iter().any(|h| h == name.as_str()) {
            headers.remove(&name);
        }
    }
    headers.remove(http::header::CONNECTION);
}

/// Sets `X-Forwarded-For`, `-Proto`, `-Host`, `-Port` and `X-Real-Ip` as Traefik does: from
/// an untrusted peer, the client's are first removed; then the peer's address is appended to
/// `X-Forwarded-For` and the others are set where missing.
/// `tls`: the client connected over TLS (`X-Forwarded-Proto: https`, port 443 by default).
pub fn set_forwarded_headers(req: &mut Request, trusted: bool, tls: bool, client_ip: &Bytes) {
    if !trusted {
        req.headers.retain(|name| !is_forwarded_header(name));
    }
    // From an untrusted peer none is left: no need to look for them one by one.
    let absent = |req: &Request, name| !trusted || !req.headers.contains(name);
    let xff = {
        let mut sent = req.headers.get_all(names::X_FORWARDED_FOR).peekable();
        match sent.peek() {
            None => client_ip.clone(),
            Some(_) => {
                let mut joined = Vec::new();
                for v in sent {
                    joined.extend_from_slice(v);
                    joined.extend_from_slice(b", ");
                }
                joined.extend_from_slice(client_ip);
                Bytes::from(joined)
            }
        }
    };
    req.headers.set(names::X_FORWARDED_FOR, xff);
    if absent(req, names::X_REAL_IP) {
        req.headers.set(names::X_REAL_IP, client_ip.clone());
    }
    if absent(req, names::X_FORWARDED_PROTO) {
        let proto = HeaderValue::from_static(if tls { "https" } else { "http" });
        req.headers.set(names::X_FORWARDED_PROTO, proto);
    }
    let host = req.host();
    let port = if !absent(req, names::X_FORWARDED_PORT) {
        None
    } else {
        // The port the client asked for (behind a port mapping, not the one wasmgate
        // listens on), else the scheme's.
        let default = if tls { "443" } else { "80" };
        Some(HeaderValue::from_str(host_port(host).unwrap_or(default)))
    };
    let host = (!host.is_empty() && absent(req, names::X_FORWARDED_HOST))
        .then(|| HeaderValue::from_str(host));
    if let Some(Ok(port)) = port {
        req.headers.set(names::X_FORWARDED_PORT, port);
    }
    if let Some(Ok(host)) = host {
        req.headers.set(names::X_FORWARDED_HOST, host);
    }
}

/// The client's IP as the forwarded headers carry it (an IPv4-mapped IPv6 address as IPv4).
pub fn client_ip(peer: std::net::SocketAddr) -> Bytes {
    Bytes::from(peer.ip().to_canonical().to_string())
}

/// The port of a `host[:port]` authority, if it has one.
fn host_port(host: &str) -> Option<&str> {
    let (_, port) = host.rsplit_once(':')?;
    // `[::1]` has colons but no port.
    (!port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())).then_some(port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_decodes_unreserved_and_uppercases_the_rest() {
        let deny_all = crate::config::EncodedCharactersConfig::default().denied();
        assert_eq!(
            normalise_path("/%61%2d%7e/%3c%C3%A9", &deny_all).unwrap(),
            "/a-~/%3C%C3%A9"
        );
        assert_eq!(
            normalise_path("/a%2fb", &deny_all),
            Err(PathRejected::Encoded(b'/'))
        );
        assert_eq!(normalise_path("/a%2fb", &[]).unwrap(), "/a%2Fb");
        for bad in ["/%", "/%4", "/%g0", "/%0g"] {
            assert_eq!(
                normalise_path(bad, &[]),
                Err(PathRejected::Invalid),
                "{bad}"
            );
        }
    }

    #[test]
    fn dot_segments_and_duplicate_slashes_go() {
        for (input, want) in [
            ("/", "/"),
            ("//", "/"),
            ("/a/b", "/a/b"),
            ("/a/b/", "/a/b/"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/../../a", "/a"),
            ("/a/..", "/"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("//a///b", "/a/b"),
            ("/a/..b/.c", "/a/..b/.c"),
            ("/a%2F..%2Fb", "/a%2F..%2Fb"),
        ] {
            assert_eq!(remove_dot_segments(input), want, "{input}");
        }
    }

    #[test]
    fn clean_target_keeps_query_and_authority() {
        let p = EdgePolicy {
            trusted: vec![],
            insecure: false,
            denied_encoded: vec![],
            sanitize_path: true,
        };
        let u: Uri = "http://h:1/a/../b?x=/../".parse().unwrap();
        assert_eq!(
            p.clean_target(&u).unwrap().unwrap().to_string(),
            "http://h:1/b?x=/../"
        );
        assert_eq!(p.clean_target(&"/b?x".parse().unwrap()).unwrap(), None);
        assert_eq!(p.clean_target(&"*".parse().unwrap()).unwrap(), None);
    }

    #[test]
    fn forwarded_header_spellings() {
        assert!(is_forwarded_header("X-Forwarded-For"));
        assert!(is_forwarded_header("x_forwarded_for"));
        assert!(is_forwarded_header("X-Real-Ip"));
        assert!(!is_forwarded_header("X-Forwarded-Fox"));
        assert!(!is_forwarded_header("x-auth"));
    }

    #[test]
    fn connection_options_spare_forwarded_and_hop_by_hop_headers() {
        let mut h: Headers = [
            ("connection", "keep-alive, X-Forwarded-For, X-Secret, TE"),
            ("x-secret", "1"),
            ("x-forwarded-for", "1.2.3.4"),
            ("te", "trailers"),
            ("x-kept", "yes"),
        ]
        .into_iter()
        .collect();
        remove_connection_options(&mut h);
        let mut names = h.names();
        names.sort();
        assert_eq!(names, vec!["te", "x-forwarded-for", "x-kept"]);
    }

    #[test]
    fn forwarded_port_comes_from_the_host() {
        assert_eq!(host_port("a.example:8443"), Some("8443"));
        assert_eq!(host_port("a.example"), None);
        assert_eq!(host_port("[::1]"), None);
        assert_eq!(host_port("[::1]:81"), Some("81"));
    }
}
