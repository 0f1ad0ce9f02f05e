//! The expression tree and its evaluation against a request.

use std::borrow::Cow;
use std::cell::OnceCell;

use ipnet::IpNet;
use percent_encoding::percent_decode_str;
use regex::Regex;

use super::query::{query_any, query_decode, query_decoded_eq};
use super::MatchInput;

/// A rule's expression tree.
#[derive(Debug, Clone)]
pub(super) enum Expr {
    Matcher(Matcher),
    Not(Box<Expr>),
    /// Two or more operands (chains are kept flat so long rules stay shallow).
    And(Vec<Expr>),
    /// Two or more operands.
    Or(Vec<Expr>),
}

/// One matcher, its arguments validated and its regex compiled.
#[derive(Debug, Clone)]
pub(super) enum Matcher {
    /// Lower-cased, IPv6 brackets removed.
    Host(String),
    HostRegexp(Regex),
    Path(String),
    PathPrefix(String),
    PathRegexp(Regex),
    /// Upper-cased.
    Method(String),
    Header {
        name: String,
        value: String,
    },
    HeaderRegexp {
        name: String,
        re: Regex,
    },
    /// `value: None` is the one-argument form: the parameter is present.
    Query {
        key: String,
        value: Option<String>,
    },
    QueryRegexp {
        key: String,
        re: Regex,
    },
    ClientIp(IpNet),
}

/// Per-evaluation state: the decoded path is computed at most once, and only
/// if a path matcher is reached.
struct Ctx<'i, 'a> {
    input: &'i MatchInput<'a>,
    path: OnceCell<Cow<'a, str>>,
}

impl Ctx<'_, '_> {
    fn path(&self) -> &str {
        let raw = self.input.path;
        self.path
            .get_or_init(|| percent_decode_str(raw).decode_utf8_lossy())
    }
}

impl Expr {
    /// Whether the request described by `input` satisfies this expression.
    pub(super) fn matches(&self, input: &MatchInput<'_>) -> bool {
        let ctx = Ctx {
            input,
            path: OnceCell::new(),
        };
        self.eval(&ctx)
    }

    /// Appends the hosts of `Host` matchers not under a `Not`.
    pub(super) fn hosts(&self, out: &mut Vec<String>) {
        match self {
            Expr::Matcher(Matcher::Host(h)) => out.push(h.clone()),
            Expr::Matcher(_) | Expr::Not(_) => {}
            Expr::And(list) | Expr::Or(list) => list.iter().for_each(|e| e.hosts(out)),
        }
    }

    fn eval(&self, ctx: &Ctx<'_, '_>) -> bool {
        match self {
            Expr::Matcher(m) => m.eval(ctx),
            Expr::Not(e) => !e.eval(ctx),
            Expr::And(es) => es.iter().all(|e| e.eval(ctx)),
            Expr::Or(es) => es.iter().any(|e| e.eval(ctx)),
        }
    }
}

impl Matcher {
    fn eval(&self, ctx: &Ctx<'_, '_>) -> bool {
        let input = ctx.input;
        match self {
            Matcher::Host(want) => host_matches(want, strip_port(input.host)),
            Matcher::HostRegexp(re) => re.is_match(strip_port(input.host)),
            Matcher::Path(p) => ctx.path() == p,
            Matcher::PathPrefix(p) => ctx.path().starts_with(p.as_str()),
            Matcher::PathRegexp(re) => re.is_match(ctx.path()),
            Matcher::Method(m) => input.method == m,
            Matcher::Header { name, value } => input
                .headers
                .any_value(name, &mut |v| v == value.as_bytes()),
            Matcher::HeaderRegexp { name, re } => input.headers.any_value(name, &mut |v| {
                std::str::from_utf8(v).is_ok_and(|s| re.is_match(s))
            }),
            Matcher::Query { key, value: None } => {
                query_any(input.query, key, |raw| query_decode(raw).is_some())
            }
            Matcher::Query {
                key,
                value: Some(value),
            } => query_any(input.query, key, |raw| {
                query_decoded_eq(raw, value.as_bytes())
            }),
            Matcher::QueryRegexp { key, re } => query_any(input.query, key, |raw| {
                query_decode(raw)
                    .is_some_and(|v| std::str::from_utf8(&v).is_ok_and(|s| re.is_match(s)))
            }),
            Matcher::ClientIp(net) => net.contains(&input.client_ip.to_canonical()),
        }
    }
}

/// Removes a `:port` suffix and IPv6 brackets: `example.com:80` → `example.com`,
/// `[::1]:8080` → `::1`, `[::1]` → `::1`. A bare IPv6 address (several colons,
/// no brackets) is returned unchanged.
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.find(']') {
            Some(end) => &rest[..end],
            None => host,
        };
    }
    match host.rfind(':') {
        Some(i) if !host[..i].contains(':') => &host[..i],
        _ => host,
    }
}

/// `want` is lower case. Like Traefik, a trailing dot on either side is ignored.
fn host_matches(want: &str, host: &str) -> bool {
    if host.is_empty() {
        return false;
    }
    if host.eq_ignore_ascii_case(want) {
        return true;
    }
    if let Some(w) = want.strip_suffix('.') {
        if host.eq_ignore_ascii_case(w) {
            return true;
        }
    }
    if let Some(h) = host.strip_suffix('.') {
        if h.eq_ignore_ascii_case(want) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    #[test]
    fn host() {
        let r = Req::new().host("example.com");
        assert!(r.matches("Host(`example.com`)"));
        assert!(!r.matches("Host(`example.org`)"));
        assert!(!r.matches("Host(`sub.example.com`)"));
        assert!(!r.matches("Host(`example.co`)"));
    }

    #[test]
    fn host_with_port_and_case() {
        let r = Req::new().host("Example.COM:8080");
        assert!(r.matches("Host(`example.com`)"));
        assert!(r.matches("Host(`EXAMPLE.com`)"));
        assert!(!r.matches("Host(`example.com:8080`)"));
        assert!(!r.matches("Host(`other.com`)"));
        assert!(Req::new()
            .host("example.com:")
            .matches("Host(`example.com`)"));
    }

    #[test]
    fn host_trailing_dot() {
        assert!(Req::new()
            .host("example.com.")
            .matches("Host(`example.com`)"));
        assert!(Req::new()
            .host("example.com")
            .matches("Host(`example.com.`)"));
        assert!(!Req::new()
            .host("example.com..")
            .matches("Host(`example.com`)"));
    }

    #[test]
    fn host_ipv6() {
        let r = Req::new().host("[::1]:8080");
        assert!(r.matches("Host(`::1`)"));
        assert!(r.matches("Host(`[::1]`)"));
        assert!(!r.matches("Host(`::2`)"));
        let r = Req::new().host("[2001:DB8::1]");
        assert!(r.matches("Host(`2001:db8::1`)"));
        assert!(Req::new().host("::1").matches("Host(`::1`)"));
        assert!(Req::new().host("127.0.0.1:80").matches("Host(`127.0.0.1`)"));
    }

    #[test]
    fn host_empty_never_matches() {
        let r = Req::new().host("");
        assert!(!r.matches("Host(`example.com`)"));
        assert!(!r.matches("Host(`.`)"));
    }

    #[test]
    fn host_regexp() {
        let rule = r"HostRegexp(`^.+\.example\.com$`)";
        assert!(Req::new().host("api.example.com").matches(rule));
        assert!(Req::new().host("API.Example.COM:443").matches(rule));
        assert!(!Req::new().host("example.com").matches(rule));
        assert!(!Req::new().host("api.example.org").matches(rule));
        // Unanchored patterns search, like Go's MatchString.
        assert!(Req::new().host("a.b.c").matches("HostRegexp(`b`)"));
        assert!(Req::new().host("[::1]:80").matches("HostRegexp(`^::1$`)"));
    }

    #[test]
    fn path() {
        let r = Req::new().path("/products");
        assert!(r.matches("Path(`/products`)"));
        assert!(!r.matches("Path(`/products/`)"));
        assert!(!r.matches("Path(`/product`)"));
        assert!(!Req::new().path("/products/1").matches("Path(`/products`)"));
    }

    #[test]
    fn path_is_percent_decoded() {
        let r = Req::new().path("/foo%20bar/%C3%A9");
        assert!(r.matches("Path(`/foo bar/é`)"));
        assert!(!r.matches("Path(`/foo%20bar/%C3%A9`)"));
        assert!(r.matches("PathPrefix(`/foo b`)"));
        assert!(r.matches("PathRegexp(`^/foo bar/é$`)"));
        // `+` is not a space in a path.
        assert!(Req::new().path("/a+b").matches("Path(`/a+b`)"));
        // Invalid escapes stay as they are; invalid UTF-8 becomes U+FFFD.
        assert!(Req::new().path("/%zz").matches("Path(`/%zz`)"));
        assert!(Req::new().path("/%FF").matches("Path(`/\u{FFFD}`)"));
    }

    #[test]
    fn path_prefix() {
        let r = Req::new().path("/api/v1/users");
        assert!(r.matches("PathPrefix(`/api`)"));
        assert!(r.matches("PathPrefix(`/`)"));
        assert!(r.matches("PathPrefix(`/api/v1/users`)"));
        // A plain string prefix, not a segment prefix.
        assert!(Req::new().path("/apiary").matches("PathPrefix(`/api`)"));
        assert!(!r.matches("PathPrefix(`/v1`)"));
        assert!(!Req::new().path("/ap").matches("PathPrefix(`/api`)"));
    }

    #[test]
    fn path_regexp() {
        let rule = "PathRegexp(`^/v[0-9]+/`)";
        assert!(Req::new().path("/v12/items").matches(rule));
        assert!(!Req::new().path("/vx/items").matches(rule));
        assert!(!Req::new().path("/v1").matches(rule));
        assert!(Req::new().path("/a/b.css").matches(r"PathRegexp(`\.css$`)"));
    }

    #[test]
    fn method() {
        let r = Req::new().method("GET");
        assert!(r.matches("Method(`GET`)"));
        assert!(!r.matches("Method(`POST`)"));
        // The argument is upper-cased, as Traefik does; the request method is not.
        assert!(r.matches("Method(`get`)"));
        assert!(!Req::new().method("get").matches("Method(`GET`)"));
    }

    #[test]
    fn header() {
        let r = Req::new()
            .header("X-Key", b"one")
            .header("x-key", b"two")
            .header("Other", b"value");
        assert!(r.matches("Header(`X-Key`, `one`)"));
        assert!(r.matches("Header(`X-Key`, `two`)"));
        assert!(r.matches("Header(`x-KEY`, `two`)"));
        assert!(!r.matches("Header(`X-Key`, `One`)"));
        assert!(!r.matches("Header(`X-Key`, `on`)"));
        assert!(!r.matches("Header(`X-Key`, `value`)"));
        assert!(!r.matches("Header(`X-Missing`, `one`)"));
    }

    #[test]
    fn header_regexp() {
        let r = Req::new().header("X-Key", b"v7").header("X-Bin", b"v1\xff");
        assert!(r.matches("HeaderRegexp(`X-Key`, `^v[0-9]$`)"));
        assert!(r.matches("HeaderRegexp(`x-key`, `^v[0-9]$`)"));
        assert!(!r.matches("HeaderRegexp(`X-Key`, `^v[0-6]$`)"));
        assert!(!r.matches("HeaderRegexp(`X-None`, `.*`)"));
        // Header values that are not UTF-8 never match.
        assert!(!r.matches("HeaderRegexp(`X-Bin`, `^v1`)"));
        assert!(!r.matches("HeaderRegexp(`X-Bin`, `.*`)"));
        assert!(!r.matches("Header(`X-Bin`, `v1\u{FFFD}`)"));
    }

    #[test]
    fn client_ip() {
        let r = Req::new().ip("10.1.2.3");
        assert!(r.matches("ClientIP(`10.0.0.0/8`)"));
        assert!(!r.matches("ClientIP(`192.168.0.0/16`)"));
        assert!(r.matches("ClientIP(`10.1.2.3`)"));
        assert!(!r.matches("ClientIP(`10.1.2.4`)"));
        assert!(r.matches("ClientIP(`10.1.2.3/32`)"));
        // Host bits in the CIDR are ignored, as Go does.
        assert!(r.matches("ClientIP(`10.9.9.9/8`)"));
        assert!(!r.matches("ClientIP(`::/0`)"));
    }

    #[test]
    fn client_ip_v6() {
        let r = Req::new().ip("2001:db8::42");
        assert!(r.matches("ClientIP(`2001:db8::/32`)"));
        assert!(!r.matches("ClientIP(`2001:db9::/32`)"));
        assert!(r.matches("ClientIP(`2001:db8::42`)"));
        assert!(r.matches("ClientIP(`2001:DB8:0::42`)"));
        assert!(!r.matches("ClientIP(`2001:db8::43`)"));
        assert!(!r.matches("ClientIP(`0.0.0.0/0`)"));
    }

    #[test]
    fn client_ip_v4_mapped() {
        // A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d.
        let r = Req {
            client_ip: IpAddr::V6(Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped()),
            ..Req::new()
        };
        assert!(r.matches("ClientIP(`10.0.0.0/8`)"));
        assert!(r.matches("ClientIP(`10.1.2.3`)"));
        let r = Req::new().ip("10.1.2.3");
        assert!(r.matches("ClientIP(`::ffff:10.1.2.3`)"));
        assert!(r.matches("ClientIP(`::ffff:10.0.0.0/104`)"));
        let r = Req {
            client_ip: IpAddr::V6(Ipv6Addr::LOCALHOST),
            ..Req::new()
        };
        assert!(r.matches("ClientIP(`::1`)"));
    }

    #[test]
    fn combinators_and_precedence() {
        let r = Req::new().host("a.com").path("/x").method("GET");
        let (t, f) = ("Host(`a.com`)", "Host(`b.com`)");
        assert!(r.matches(&format!("{t} && {t}")));
        assert!(!r.matches(&format!("{t} && {f}")));
        assert!(r.matches(&format!("{f} || {t}")));
        assert!(!r.matches(&format!("{f} || {f}")));
        assert!(!r.matches(&format!("!{t}")));
        assert!(r.matches(&format!("!{f}")));
        assert!(r.matches(&format!("!!{t}")));
        // `a || b && c` is `a || (b && c)`.
        assert!(r.matches(&format!("{t} || {f} && {f}")));
        assert!(!r.matches(&format!("({t} || {f}) && {f}")));
        // `b && c || a` is `(b && c) || a`.
        assert!(r.matches(&format!("{f} && {f} || {t}")));
        // `!a && b` is `(!a) && b`.
        assert!(!r.matches(&format!("!{t} && {f}")));
        assert!(r.matches(&format!("!({t} && {f})")));
        assert!(r.matches(&format!("!{f} && {t}")));
    }
}
