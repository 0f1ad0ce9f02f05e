//! Matcher construction and validation: the names Traefik accepts, argument counts, and each
//! matcher's checks of its arguments.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};
use regex::RegexBuilder;

use super::eval::Matcher;
use super::RuleError;

/// The matcher names a rule may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Host,
    HostRegexp,
    Path,
    PathPrefix,
    PathRegexp,
    Method,
    Header,
    HeaderRegexp,
    Query,
    QueryRegexp,
    ClientIp,
}

const KINDS: [(Kind, &str); 11] = [
    (Kind::Host, "Host"),
    (Kind::HostRegexp, "HostRegexp"),
    (Kind::Path, "Path"),
    (Kind::PathPrefix, "PathPrefix"),
    (Kind::PathRegexp, "PathRegexp"),
    (Kind::Method, "Method"),
    (Kind::Header, "Header"),
    (Kind::HeaderRegexp, "HeaderRegexp"),
    (Kind::Query, "Query"),
    (Kind::QueryRegexp, "QueryRegexp"),
    (Kind::ClientIp, "ClientIP"),
];

fn known_list() -> String {
    KINDS.iter().map(|(_, n)| *n).collect::<Vec<_>>().join(", ")
}

/// The error for a call of `name`, naming the matcher meant when only the case differs.
pub(super) fn unknown_matcher(name: &str) -> String {
    let hint = KINDS
        .iter()
        .find(|(_, n)| n.eq_ignore_ascii_case(name))
        .map(|(_, n)| format!(" (did you mean `{n}`?)"))
        .unwrap_or_default();
    format!(
        "unknown matcher `{name}`{hint}; known matchers are {}",
        known_list()
    )
}

impl Kind {
    /// Accepts the spellings Traefik registers for each matcher: as is, lower
    /// case, upper case and capitalised.
    pub(super) fn lookup(name: &str) -> Option<Kind> {
        KINDS.iter().find_map(|&(kind, canonical)| {
            let lower = canonical.to_ascii_lowercase();
            let mut title = lower.clone();
            title[..1].make_ascii_uppercase();
            let accepted = name == canonical
                || name == lower
                || name == canonical.to_ascii_uppercase()
                || name == title;
            accepted.then_some(kind)
        })
    }

    fn name(self) -> &'static str {
        KINDS
            .iter()
            .find(|(k, _)| *k == self)
            .map(|(_, n)| *n)
            .expect("every kind is listed")
    }

    /// Allowed argument counts, inclusive.
    fn arity(self) -> (usize, usize) {
        match self {
            Kind::Header | Kind::HeaderRegexp => (2, 2),
            Kind::Query | Kind::QueryRegexp => (1, 2),
            _ => (1, 1),
        }
    }

    /// Checks the arguments of a call (columns for errors) and builds the matcher.
    pub(super) fn build(
        self,
        col: usize,
        args: Vec<(String, usize)>,
    ) -> Result<Matcher, RuleError> {
        let name = self.name();
        let (min, max) = self.arity();
        if args.len() < min || args.len() > max {
            let expected = match (min, max) {
                (1, 1) => "1 argument".to_string(),
                (a, b) if a == b => format!("{a} arguments"),
                (a, b) => format!("{a} or {b} arguments"),
            };
            return Err(RuleError::new(
                col,
                format!("`{name}` takes {expected}, got {}", args.len()),
            ));
        }
        for (i, (arg, arg_col)) in args.iter().enumerate() {
            if arg.is_empty() {
                return Err(RuleError::new(
                    *arg_col,
                    format!("argument {} of `{name}` is empty", i + 1),
                ));
            }
        }
        let mut args = args.into_iter();
        let (first, first_col) = args.next().expect("arity checked");
        let second = args.next();
        let err = |c: usize, msg: String| RuleError::new(c, format!("`{name}`: {msg}"));
        let regex = |pattern: &str, c: usize, case_insensitive: bool| {
            RegexBuilder::new(pattern)
                .case_insensitive(case_insensitive)
                .build()
                .map_err(|e| err(c, format!("invalid regular expression: {e}")))
        };
        let require_ascii = |s: &str, c: usize| {
            if s.is_ascii() {
                Ok(())
            } else {
                Err(err(
                    c,
                    format!(
                        "non-ASCII characters are not allowed in `{s}`; use the punycode (xn--) form"
                    ),
                ))
            }
        };
        let require_slash = |s: &str, c: usize| {
            if s.starts_with('/') {
                Ok(())
            } else {
                Err(err(c, format!("path `{s}` does not start with `/`")))
            }
        };
        Ok(match self {
            Kind::Host => {
                require_ascii(&first, first_col)?;
                let mut host = first.to_ascii_lowercase();
                if host.starts_with('[') && host.ends_with(']') && host.len() >= 2 {
                    host = host[1..host.len() - 1].to_string();
                }
                Matcher::Host(host)
            }
            Kind::HostRegexp => {
                require_ascii(&first, first_col)?;
                Matcher::HostRegexp(regex(&first, first_col, true)?)
            }
            Kind::Path => {
                require_slash(&first, first_col)?;
                Matcher::Path(first)
            }
            Kind::PathPrefix => {
                require_slash(&first, first_col)?;
                Matcher::PathPrefix(first)
            }
            Kind::PathRegexp => Matcher::PathRegexp(regex(&first, first_col, false)?),
            Kind::Method => Matcher::Method(first.to_ascii_uppercase()),
            Kind::Header => Matcher::Header {
                name: first,
                value: second.expect("arity checked").0,
            },
            Kind::HeaderRegexp => {
                let (pattern, c) = second.expect("arity checked");
                Matcher::HeaderRegexp {
                    name: first,
                    re: regex(&pattern, c, false)?,
                }
            }
            Kind::Query => Matcher::Query {
                key: first,
                value: second.map(|(v, _)| v),
            },
            Kind::QueryRegexp => match second {
                None => Matcher::Query {
                    key: first,
                    value: None,
                },
                Some((pattern, c)) => Matcher::QueryRegexp {
                    key: first,
                    re: regex(&pattern, c, false)?,
                },
            },
            Kind::ClientIp => {
                Matcher::ClientIp(parse_ip_range(&first).map_err(|msg| err(first_col, msg))?)
            }
        })
    }
}

/// Parses `10.0.0.0/8`, `2001:db8::/32` or a bare address (a range of one).
/// IPv4-mapped IPv6 forms are turned into IPv4, as Go's `net` package treats
/// them, so they match IPv4 clients.
pub fn parse_ip_range(s: &str) -> Result<IpNet, String> {
    if s.contains('/') {
        let net: IpNet = s
            .parse()
            .map_err(|e| format!("`{s}` is not a valid CIDR range ({e})"))?;
        if let IpNet::V6(v6) = net {
            if let Some(v4) = v6.network().to_ipv4_mapped() {
                if v6.prefix_len() >= 96 {
                    let v4 = Ipv4Net::new(v4, v6.prefix_len() - 96).expect("prefix in range");
                    return Ok(IpNet::V4(v4));
                }
            }
        }
        Ok(net.trunc())
    } else {
        let ip: IpAddr = s
            .parse()
            .map_err(|e| format!("`{s}` is not a valid IP address or CIDR range ({e})"))?;
        Ok(IpNet::from(ip.to_canonical()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use regex::Regex;

    #[test]
    fn error_unknown_matcher() {
        let e = err("Host(`a`) && Foo(`b`)");
        assert_eq!(e.column, 14);
        assert!(e.message.contains("unknown matcher `Foo`"), "{e}");
        for known in [
            "Host",
            "HostRegexp",
            "Path",
            "PathPrefix",
            "PathRegexp",
            "Method",
            "Header",
            "HeaderRegexp",
            "Query",
            "ClientIP",
        ] {
            assert!(e.message.contains(known), "{e}");
        }
        assert_err("pathPrefix(`/`)", 1, "did you mean `PathPrefix`?");
        assert_err("Headers(`a`, `b`)", 1, "unknown matcher `Headers`");
        assert_err("!HostSNI(`a`)", 2, "unknown matcher `HostSNI`");
    }

    #[test]
    fn error_wrong_argument_count() {
        assert_err("Host(`a`, `b`)", 1, "`Host` takes 1 argument, got 2");
        assert_err("Path()", 1, "`Path` takes 1 argument, got 0");
        assert_err(
            "Method(`GET`) && Header(`X`)",
            18,
            "`Header` takes 2 arguments, got 1",
        );
        assert_err(
            "Query(`a`, `b`, `c`)",
            1,
            "`Query` takes 1 or 2 arguments, got 3",
        );
    }

    #[test]
    fn error_empty_argument() {
        assert_err("Host(``)", 6, "argument 1 of `Host` is empty");
        assert_err("Header(`X`, \"\")", 13, "argument 2 of `Header` is empty");
        assert_err("Query(``)", 7, "empty");
    }

    #[test]
    fn error_bad_regex() {
        let e = err("PathRegexp(`^/(a`)");
        assert_eq!(e.column, 12, "{e}");
        assert!(e.message.contains("invalid regular expression"), "{e}");
        // regex's own message is included.
        let pattern = String::from("^/(a");
        let re_msg = Regex::new(&pattern).unwrap_err().to_string();
        assert!(e.message.contains(&re_msg), "{e}");
        assert_err("HostRegexp(`[`)", 12, "invalid regular expression");
        assert_err(
            "Host(`a`) && HeaderRegexp(`X`, `a{2,1}`)",
            32,
            "invalid regular expression",
        );
        assert_err("QueryRegexp(`k`, `(?P<`)", 18, "invalid regular expression");
    }

    #[test]
    fn error_bad_cidr() {
        assert_err("ClientIP(`10.0.0.0/33`)", 10, "not a valid CIDR range");
        assert_err("ClientIP(`10.0.0/8`)", 10, "not a valid CIDR range");
        assert_err("ClientIP(`10.0.0.256`)", 10, "not a valid IP address");
        assert_err("ClientIP(`example.com`)", 10, "not a valid IP address");
        assert_err("ClientIP(`::1/129`)", 10, "not a valid CIDR range");
        assert_err("ClientIP(` 10.0.0.1`)", 10, "not a valid IP address");
    }

    #[test]
    fn error_path_without_slash() {
        assert_err("Path(`api`)", 6, "does not start with `/`");
        assert_err("PathPrefix(\"api\")", 12, "does not start with `/`");
    }

    #[test]
    fn error_non_ascii_host() {
        assert_err("Host(`bücher.de`)", 6, "non-ASCII");
        assert_err("HostRegexp(`ü`)", 12, "non-ASCII");
    }
}
