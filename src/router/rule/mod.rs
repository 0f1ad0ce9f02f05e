//! The Traefik v3 router rule language.
//!
//! A rule is an expression over request matchers, for example
//!
//! ```text
//! Host(`example.com`) && (PathPrefix(`/api`) || Header(`X-Api`, `1`)) && !Method(`DELETE`)
//! ```
//!
//! Matchers take string arguments delimited by backticks (raw, no escapes) or
//! double quotes (Go escapes such as `\"`, `\\`, `\n`, `\x41`, `\u00e9`).
//! The combinators are `!` (prefix), `&&` and `||`, binding in that order, and
//! parentheses group. Matcher names are accepted in the same spellings Traefik
//! accepts: as documented (`PathPrefix`), all lower case (`pathprefix`), all
//! upper case (`PATHPREFIX`) and capitalised (`Pathprefix`).
//!
//! | Matcher | Arguments | Matches when |
//! |---|---|---|
//! | `Host` | host | the request host, port removed, equals it (ASCII case-insensitive; a trailing `.` on either side is ignored) |
//! | `HostRegexp` | regex | the regex, case-insensitive, matches the host with the port removed |
//! | `Path` | path | the percent-decoded path equals it |
//! | `PathPrefix` | path | the percent-decoded path starts with it |
//! | `PathRegexp` | regex | the regex matches the percent-decoded path |
//! | `Method` | method | the method equals it (the argument is upper-cased) |
//! | `Header` | name, value | some value of the header equals the value exactly |
//! | `HeaderRegexp` | name, regex | the regex matches some value of the header |
//! | `Query` | key \[, value\] | some query parameter `key` exists \[with that value\] |
//! | `QueryRegexp` | key \[, regex\] | the regex matches some value of query parameter `key` |
//! | `ClientIP` | IP or CIDR | the client address is that address or within that range |
//!
//! Rules are parsed and validated once ([`Rule::parse`]); matching
//! ([`Rule::matches`]) does not allocate unless the path or a query component
//! it has to look at is percent-encoded.
//!
//! The private modules follow the pipeline: `lexer` (characters to tokens), `parser` (tokens
//! to an expression tree, building each matcher through `matchers`), `eval` (the tree against
//! a request, with `query` for query strings).

mod eval;
mod lexer;
mod matchers;
mod parser;
mod query;
#[cfg(test)]
mod test_util;

use std::net::IpAddr;
use std::str::FromStr;

use self::eval::Expr;
pub use self::matchers::parse_ip_range;

/// A parsed router rule.
#[derive(Debug, Clone)]
pub struct Rule {
    expr: Expr,
}

/// Why a rule did not parse. `column` is 1-based, in characters, pointing at where the problem starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct RuleError {
    /// 1-based column, counted in characters, where the problem starts.
    /// One past the last character when the rule ended too early.
    pub column: usize,
    /// What is wrong, for a human.
    pub message: String,
}

/// What a rule is matched against. All borrowed from the request.
pub struct MatchInput<'a> {
    /// Host header (HTTP/1) or :authority (HTTP/2) as received, possibly with a port.
    pub host: &'a str,
    /// Request path as received on the wire (percent-encoded), without the query.
    pub path: &'a str,
    /// Raw query string without the leading '?', empty if none.
    pub query: &'a str,
    /// Request method as received, e.g. `GET`.
    pub method: &'a str,
    /// Header lookup.
    pub headers: &'a dyn HeaderLookup,
    /// The client's IP address (the TCP peer).
    pub client_ip: IpAddr,
}

/// Header access for matching, so rules do not depend on one header type.
pub trait HeaderLookup {
    /// Calls `f` with each value of header `name` (case-insensitive) in order until `f` returns true; returns whether it did.
    fn any_value(&self, name: &str, f: &mut dyn FnMut(&[u8]) -> bool) -> bool;
}

impl Rule {
    /// Parses and validates a rule, compiling its regular expressions.
    ///
    /// # Errors
    ///
    /// A [`RuleError`] locating the first problem: a syntax error, an unknown
    /// matcher, a wrong number of arguments, an empty argument, or an argument
    /// the matcher rejects (bad regex, bad IP/CIDR, path without a leading `/`,
    /// non-ASCII host).
    pub fn parse(text: &str) -> Result<Rule, RuleError> {
        parser::parse(text).map(|expr| Rule { expr })
    }

    /// Whether the request described by `input` satisfies this rule.
    #[must_use]
    pub fn matches(&self, input: &MatchInput<'_>) -> bool {
        self.expr.matches(input)
    }

    /// The hosts its `Host` matchers name (lower-cased), except under a `!`: the names a TLS
    /// client would send as SNI to reach it (Traefik picks TLS options by them).
    #[must_use]
    pub fn hosts(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.expr.hosts(&mut out);
        out
    }
}

impl FromStr for Rule {
    type Err = RuleError;

    fn from_str(text: &str) -> Result<Rule, RuleError> {
        Rule::parse(text)
    }
}

impl RuleError {
    fn new(column: usize, message: impl Into<String>) -> RuleError {
        RuleError {
            column,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    #[test]
    fn hosts_named_outside_negations() {
        let hosts = |r: &str| r.parse::<Rule>().unwrap().hosts();
        assert_eq!(
            hosts("(Host(`A.test`) || Host(`b.test`)) && PathPrefix(`/x`)"),
            ["a.test", "b.test"]
        );
        assert!(hosts("!Host(`a.test`) && Path(`/`)").is_empty());
        assert!(hosts("HostRegexp(`.+`)").is_empty());
    }

    #[test]
    fn rule_is_clone_send_sync_and_from_str() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<Rule>();
        let rule: Rule = "Path(`/a`)".parse().unwrap();
        let copy = rule.clone();
        let headers = Headers(Vec::new());
        let input = MatchInput {
            host: "h",
            path: "/a",
            query: "",
            method: "GET",
            headers: &headers,
            client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        assert!(copy.matches(&input));
        assert!("Path(`a`)".parse::<Rule>().is_err());
    }

    #[test]
    fn error_display() {
        let e = err("Host(`a`) && Foo(`b`)");
        assert_eq!(e.to_string(), format!("column 14: {}", e.message));
    }

    /// Deterministic fuzzing (xorshift): parsing arbitrary input never panics,
    /// errors point inside the rule (or just past its end), and whatever
    /// parses can be matched.
    #[test]
    fn parse_never_panics() {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut rand = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        const PIECES: &[&str] = &[
            "Host",
            "HostRegexp",
            "Path",
            "PathPrefix",
            "PathRegexp",
            "Method",
            "Header",
            "HeaderRegexp",
            "Query",
            "QueryRegexp",
            "ClientIP",
            "Foo",
            "(",
            ")",
            ",",
            "&&",
            "||",
            "&",
            "|",
            "!",
            "`",
            "\"",
            "\\",
            " ",
            "\n",
            "`a`",
            "`/`",
            "`/x`",
            "`.*`",
            "`(`",
            "`10.0.0.0/8`",
            "`::1`",
            "\"\\x41\"",
            "\"\\u00e9\"",
            "\"\\7\"",
            "é",
            "\u{0}",
            "'",
            "#",
            "[",
            "]",
            "?",
            "*",
            "{",
            "}",
            "0",
            "_",
        ];
        let headers = Headers(vec![("X", b"v".to_vec())]);
        let input = MatchInput {
            host: "[::1]:80",
            path: "/a%20b/%FF",
            query: "a=1&b&c=%zz&%",
            method: "GET",
            headers: &headers,
            client_ip: IpAddr::V6(Ipv6Addr::LOCALHOST),
        };
        const SEEDS: &[&str] = &[
            "Host(`a.com`) && (PathPrefix(`/api`) || !Method(`GET`))",
            "HostRegexp(`^.+\\.a\\.com$`) || Header(`X`, \"v\") && ClientIP(`::1`)",
            "!(Query(`a`, `1`) || QueryRegexp(`b`, `^x`)) && PathRegexp(\"^/v\\\\d\")",
            "((Path(`/é`)) && HeaderRegexp(`X`, `.`)) || ClientIP(`10.0.0.0/8`, )",
        ];
        let mut parsed = 0;
        for _ in 0..20_000 {
            let mut text = String::new();
            if rand() % 2 == 0 {
                let len = (rand() % 16) as usize;
                for _ in 0..len {
                    text.push_str(PIECES[(rand() as usize) % PIECES.len()]);
                }
            } else {
                // Mutate a valid rule: delete, insert or replace a few characters.
                let mut chars: Vec<char> = SEEDS[(rand() as usize) % SEEDS.len()].chars().collect();
                for _ in 0..rand() % 4 {
                    let at = (rand() as usize) % (chars.len() + 1);
                    match rand() % 3 {
                        0 if at < chars.len() => {
                            chars.remove(at);
                        }
                        1 => {
                            let piece = PIECES[(rand() as usize) % PIECES.len()];
                            chars.splice(at..at, piece.chars());
                        }
                        _ => {
                            // An arbitrary character, including multi-byte ones.
                            let c =
                                char::from_u32((rand() % 0x3_0000) as u32).unwrap_or('\u{FFFD}');
                            chars.insert(at, c);
                        }
                    }
                }
                text = chars.into_iter().collect();
            }
            match Rule::parse(&text) {
                Ok(rule) => {
                    parsed += 1;
                    let _ = rule.matches(&input);
                }
                Err(e) => {
                    let n = text.chars().count();
                    assert!(
                        e.column >= 1 && e.column <= n + 1,
                        "{text:?}: {e} (rule has {n} characters)"
                    );
                }
            }
        }
        assert!(
            parsed > 1000,
            "the fuzzer produced only {parsed} valid rules"
        );
    }
}
