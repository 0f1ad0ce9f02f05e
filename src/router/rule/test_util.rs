//! Test helpers shared by the rule modules' tests: a request to match and error checks.

pub(super) use super::{HeaderLookup, MatchInput, Rule, RuleError};
use std::net::{IpAddr, Ipv4Addr};

/// Headers as (name, value) pairs; names compared case-insensitively.
pub(super) struct Headers(pub(super) Vec<(&'static str, Vec<u8>)>);

impl HeaderLookup for Headers {
    fn any_value(&self, name: &str, f: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        self.0
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .any(|(_, v)| f(v))
    }
}

/// A request to build `MatchInput`s from.
pub(super) struct Req {
    pub(super) host: &'static str,
    pub(super) path: &'static str,
    pub(super) query: &'static str,
    pub(super) method: &'static str,
    pub(super) headers: Headers,
    pub(super) client_ip: IpAddr,
}

impl Req {
    pub(super) fn new() -> Req {
        Req {
            host: "example.com",
            path: "/",
            query: "",
            method: "GET",
            headers: Headers(Vec::new()),
            client_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        }
    }
    pub(super) fn host(mut self, h: &'static str) -> Req {
        self.host = h;
        self
    }
    pub(super) fn path(mut self, p: &'static str) -> Req {
        self.path = p;
        self
    }
    pub(super) fn query(mut self, q: &'static str) -> Req {
        self.query = q;
        self
    }
    pub(super) fn method(mut self, m: &'static str) -> Req {
        self.method = m;
        self
    }
    pub(super) fn header(mut self, n: &'static str, v: &[u8]) -> Req {
        self.headers.0.push((n, v.to_vec()));
        self
    }
    pub(super) fn ip(mut self, ip: &str) -> Req {
        self.client_ip = ip.parse().unwrap();
        self
    }
    pub(super) fn matches(&self, rule: &str) -> bool {
        let rule = Rule::parse(rule).unwrap_or_else(|e| panic!("{rule:?}: {e}"));
        rule.matches(&MatchInput {
            host: self.host,
            path: self.path,
            query: self.query,
            method: self.method,
            headers: &self.headers,
            client_ip: self.client_ip,
        })
    }
}

pub(super) fn err(rule: &str) -> RuleError {
    match Rule::parse(rule) {
        Ok(r) => panic!("{rule:?} parsed: {r:?}"),
        Err(e) => e,
    }
}

/// Asserts `rule` fails at `column` with a message containing `needle`.
pub(super) fn assert_err(rule: &str, column: usize, needle: &str) {
    let e = err(rule);
    assert_eq!(e.column, column, "{rule:?}: {e}");
    assert!(e.message.contains(needle), "{rule:?}: {e}");
}
