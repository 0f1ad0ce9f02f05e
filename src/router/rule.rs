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

use std::borrow::Cow;
use std::cell::OnceCell;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net};
use percent_encoding::percent_decode_str;
use regex::{Regex, RegexBuilder};

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
        let mut parser = Parser::new(text);
        if parser.peek()?.tok == Tok::End {
            return Err(RuleError::new(1, "empty rule"));
        }
        let expr = parser.parse_or()?;
        let next = parser.next()?;
        match next.tok {
            Tok::End => Ok(Rule { expr }),
            Tok::RParen => Err(RuleError::new(next.col, "unmatched `)`")),
            other => Err(RuleError::new(
                next.col,
                format!(
                    "unexpected {} after a complete expression; expected `&&`, `||` or the end of the rule",
                    other.describe()
                ),
            )),
        }
    }

    /// Whether the request described by `input` satisfies this rule.
    #[must_use]
    pub fn matches(&self, input: &MatchInput<'_>) -> bool {
        let ctx = Ctx {
            input,
            path: OnceCell::new(),
        };
        self.expr.eval(&ctx)
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

// ---------------------------------------------------------------------------
// Expression tree and evaluation
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Expr {
    Matcher(Matcher),
    Not(Box<Expr>),
    /// Two or more operands (chains are kept flat so long rules stay shallow).
    And(Vec<Expr>),
    /// Two or more operands.
    Or(Vec<Expr>),
}

#[derive(Debug, Clone)]
enum Matcher {
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

/// Walks the raw query like Go's `url.ParseQuery`: pairs are separated by `&`,
/// pairs containing `;` or an invalid escape (in key or value) are skipped.
/// Calls `f` with the raw value of each pair whose decoded key is `key`.
fn query_any(query: &str, key: &str, mut f: impl FnMut(&str) -> bool) -> bool {
    query.split('&').any(|pair| {
        if pair.is_empty() || pair.contains(';') {
            return false;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        query_decoded_eq(k, key.as_bytes()) && f(v)
    })
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes the query-component escape starting at `b[i]` (`+` or `%XX` or a
/// literal byte). Returns the byte and the position after it, `None` if the
/// escape is invalid.
fn query_byte(b: &[u8], i: usize) -> Option<(u8, usize)> {
    match b[i] {
        b'+' => Some((b' ', i + 1)),
        b'%' => {
            let hi = hex_val(*b.get(i + 1)?)?;
            let lo = hex_val(*b.get(i + 2)?)?;
            Some(((hi << 4) | lo, i + 3))
        }
        c => Some((c, i + 1)),
    }
}

/// Whether query component `raw` is validly encoded and decodes to `want`,
/// without allocating.
fn query_decoded_eq(raw: &str, want: &[u8]) -> bool {
    let b = raw.as_bytes();
    let (mut i, mut j) = (0, 0);
    while i < b.len() {
        let Some((c, next)) = query_byte(b, i) else {
            return false;
        };
        if want.get(j) != Some(&c) {
            return false;
        }
        i = next;
        j += 1;
    }
    j == want.len()
}

/// Decodes a query component (`+` is a space), `None` if an escape is invalid.
/// Borrows when there is nothing to decode.
fn query_decode(raw: &str) -> Option<Cow<'_, [u8]>> {
    let b = raw.as_bytes();
    if !b.iter().any(|&c| c == b'%' || c == b'+') {
        return Some(Cow::Borrowed(b));
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let (c, next) = query_byte(b, i)?;
        out.push(c);
        i = next;
    }
    Some(Cow::Owned(out))
}

// ---------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Str(String),
    LParen,
    RParen,
    Comma,
    And,
    Or,
    Not,
    End,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Ident(name) => format!("`{name}`"),
            Tok::Str(_) => "a string".to_string(),
            Tok::LParen => "`(`".to_string(),
            Tok::RParen => "`)`".to_string(),
            Tok::Comma => "`,`".to_string(),
            Tok::And => "`&&`".to_string(),
            Tok::Or => "`||`".to_string(),
            Tok::Not => "`!`".to_string(),
            Tok::End => "end of rule".to_string(),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    /// 1-based character column of the token's first character.
    col: usize,
}

const SINGLE_QUOTE: &str =
    "unexpected character `'`; strings are delimited by backticks or double quotes";

/// Deepest nesting of parentheses and `!` accepted, so that parsing,
/// evaluating and dropping a rule cannot overflow the stack.
const MAX_DEPTH: usize = 100;

struct Parser {
    chars: Vec<char>,
    pos: usize,
    peeked: Option<Token>,
    depth: usize,
}

impl Parser {
    fn new(text: &str) -> Parser {
        Parser {
            chars: text.chars().collect(),
            pos: 0,
            peeked: None,
            depth: 0,
        }
    }

    fn peek(&mut self) -> Result<&Token, RuleError> {
        if self.peeked.is_none() {
            let t = self.lex()?;
            self.peeked = Some(t);
        }
        Ok(self.peeked.as_ref().expect("just filled"))
    }

    fn next(&mut self) -> Result<Token, RuleError> {
        match self.peeked.take() {
            Some(t) => Ok(t),
            None => self.lex(),
        }
    }

    fn lex(&mut self) -> Result<Token, RuleError> {
        while self.pos < self.chars.len() && self.chars[self.pos].is_whitespace() {
            self.pos += 1;
        }
        let start = self.pos;
        let col = start + 1;
        let Some(&c) = self.chars.get(start) else {
            return Ok(Token { tok: Tok::End, col });
        };
        let second = self.chars.get(start + 1).copied();
        let tok = match c {
            '(' => {
                self.pos += 1;
                Tok::LParen
            }
            ')' => {
                self.pos += 1;
                Tok::RParen
            }
            ',' => {
                self.pos += 1;
                Tok::Comma
            }
            '!' => {
                self.pos += 1;
                Tok::Not
            }
            '&' if second == Some('&') => {
                self.pos += 2;
                Tok::And
            }
            '|' if second == Some('|') => {
                self.pos += 2;
                Tok::Or
            }
            '&' | '|' => {
                return Err(RuleError::new(
                    col,
                    format!("unexpected character `{c}`; did you mean `{c}{c}`?"),
                ))
            }
            '`' => Tok::Str(self.lex_raw_string()?),
            '"' => Tok::Str(self.lex_quoted_string()?),
            '\'' => return Err(RuleError::new(col, SINGLE_QUOTE)),
            c if c.is_alphabetic() || c == '_' => {
                while self.pos < self.chars.len()
                    && (self.chars[self.pos].is_alphanumeric() || self.chars[self.pos] == '_')
                {
                    self.pos += 1;
                }
                Tok::Ident(self.chars[start..self.pos].iter().collect())
            }
            c => {
                return Err(RuleError::new(
                    col,
                    format!("unexpected character `{}`", c.escape_debug()),
                ))
            }
        };
        Ok(Token { tok, col })
    }

    /// A backtick string: everything up to the next backtick, verbatim.
    fn lex_raw_string(&mut self) -> Result<String, RuleError> {
        let open = self.pos;
        let body = open + 1;
        match self.chars[body..].iter().position(|&c| c == '`') {
            Some(len) => {
                self.pos = body + len + 1;
                Ok(self.chars[body..body + len].iter().collect())
            }
            None => Err(RuleError::new(open + 1, "unterminated string")),
        }
    }

    /// A double-quoted string with Go escapes; it may not span lines.
    fn lex_quoted_string(&mut self) -> Result<String, RuleError> {
        let open = self.pos;
        let unterminated = || RuleError::new(open + 1, "unterminated string");
        let mut bytes: Vec<u8> = Vec::new();
        let mut i = open + 1;
        loop {
            let Some(&c) = self.chars.get(i) else {
                return Err(unterminated());
            };
            match c {
                '"' => break,
                '\n' => return Err(unterminated()),
                '\\' => {
                    i = self.lex_escape(open, i, &mut bytes)?;
                }
                c => {
                    let mut buf = [0u8; 4];
                    bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    i += 1;
                }
            }
        }
        self.pos = i + 1;
        String::from_utf8(bytes).map_err(|_| {
            RuleError::new(
                open + 1,
                "string is not valid UTF-8 after processing its escapes",
            )
        })
    }

    /// Decodes the Go escape starting with the backslash at `at`, inside the
    /// string opened at `open`; returns the position after it.
    fn lex_escape(&self, open: usize, at: usize, out: &mut Vec<u8>) -> Result<usize, RuleError> {
        let col = at + 1;
        let invalid = |what: &str| RuleError::new(col, format!("invalid escape sequence: {what}"));
        let Some(&e) = self.chars.get(at + 1) else {
            return Err(RuleError::new(open + 1, "unterminated string"));
        };
        let simple = match e {
            'a' => Some(0x07),
            'b' => Some(0x08),
            'f' => Some(0x0c),
            'n' => Some(b'\n'),
            'r' => Some(b'\r'),
            't' => Some(b'\t'),
            'v' => Some(0x0b),
            '\\' => Some(b'\\'),
            '"' => Some(b'"'),
            _ => None,
        };
        if let Some(b) = simple {
            out.push(b);
            return Ok(at + 2);
        }
        let (digits, radix) = match e {
            '0'..='7' => (3, 8),
            'x' => (2, 16),
            'u' => (4, 16),
            'U' => (8, 16),
            _ => return Err(invalid(&format!("`\\{}`", e.escape_debug()))),
        };
        let first = if radix == 8 { at + 1 } else { at + 2 };
        let mut value: u32 = 0;
        for k in 0..digits {
            let d = self
                .chars
                .get(first + k)
                .and_then(|c| c.to_digit(radix))
                .ok_or_else(|| {
                    invalid(&format!(
                        "`\\{e}` needs {} {} digits",
                        if radix == 8 { digits - 1 } else { digits },
                        if radix == 8 { "more octal" } else { "hex" }
                    ))
                })?;
            value = value * radix + d;
        }
        match e {
            'u' | 'U' => {
                let ch = char::from_u32(value).ok_or_else(|| {
                    invalid(&format!(
                        "`\\{e}` value {value:#x} is not a Unicode scalar value"
                    ))
                })?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            }
            _ => {
                let b = u8::try_from(value)
                    .map_err(|_| invalid(&format!("octal value {value:#o} is above 0377")))?;
                out.push(b);
            }
        }
        Ok(first + digits)
    }

    // -----------------------------------------------------------------------
    // Grammar:
    //   or      := and ( "||" and )*
    //   and     := unary ( "&&" unary )*
    //   unary   := "!" unary | primary
    //   primary := "(" or ")" | NAME "(" [ STRING ( "," STRING )* [ "," ] ] ")"
    // -----------------------------------------------------------------------

    fn parse_or(&mut self) -> Result<Expr, RuleError> {
        let first = self.parse_and()?;
        let mut items = vec![first];
        while self.peek()?.tok == Tok::Or {
            self.next()?;
            items.push(self.parse_and()?);
        }
        Ok(if items.len() == 1 {
            items.pop().expect("one item")
        } else {
            Expr::Or(items)
        })
    }

    fn parse_and(&mut self) -> Result<Expr, RuleError> {
        let first = self.parse_unary()?;
        let mut items = vec![first];
        while self.peek()?.tok == Tok::And {
            self.next()?;
            items.push(self.parse_unary()?);
        }
        Ok(if items.len() == 1 {
            items.pop().expect("one item")
        } else {
            Expr::And(items)
        })
    }

    fn enter(&mut self, col: usize) -> Result<(), RuleError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(RuleError::new(
                col,
                format!("rule is nested too deeply (more than {MAX_DEPTH} levels of `(` and `!`)"),
            ));
        }
        Ok(())
    }

    fn parse_unary(&mut self) -> Result<Expr, RuleError> {
        if self.peek()?.tok != Tok::Not {
            return self.parse_primary();
        }
        let not = self.next()?;
        self.enter(not.col)?;
        let inner = self.parse_unary()?;
        self.depth -= 1;
        Ok(Expr::Not(Box::new(inner)))
    }

    fn parse_primary(&mut self) -> Result<Expr, RuleError> {
        let t = self.next()?;
        match t.tok {
            Tok::LParen => {
                self.enter(t.col)?;
                let inner = self.parse_or()?;
                self.depth -= 1;
                let close = self.next()?;
                if close.tok != Tok::RParen {
                    return Err(RuleError::new(
                        close.col,
                        format!(
                            "expected `)` to close the `(` at column {}, found {}",
                            t.col,
                            close.tok.describe()
                        ),
                    ));
                }
                Ok(inner)
            }
            Tok::Ident(name) => self.parse_call(&name, t.col),
            Tok::End => Err(RuleError::new(
                t.col,
                "unexpected end of rule; expected a matcher, `!` or `(`",
            )),
            other => Err(RuleError::new(
                t.col,
                format!("expected a matcher, `!` or `(`, found {}", other.describe()),
            )),
        }
    }

    fn parse_call(&mut self, name: &str, col: usize) -> Result<Expr, RuleError> {
        let kind = Kind::lookup(name).ok_or_else(|| RuleError::new(col, unknown_matcher(name)))?;
        let open = self.next()?;
        if open.tok != Tok::LParen {
            return Err(RuleError::new(
                open.col,
                format!("expected `(` after `{name}`, found {}", open.tok.describe()),
            ));
        }
        let mut args: Vec<(String, usize)> = Vec::new();
        loop {
            let t = self.next()?;
            match t.tok {
                Tok::RParen => break,
                Tok::Str(s) => args.push((s, t.col)),
                other => {
                    return Err(RuleError::new(
                        t.col,
                        format!(
                            "expected a string argument or `)` in `{name}(...)`, found {}",
                            other.describe()
                        ),
                    ))
                }
            }
            let sep = self.next()?;
            match sep.tok {
                Tok::Comma => {}
                Tok::RParen => break,
                other => {
                    return Err(RuleError::new(
                        sep.col,
                        format!(
                            "expected `,` or `)` after an argument of `{name}`, found {}",
                            other.describe()
                        ),
                    ))
                }
            }
        }
        Ok(Expr::Matcher(kind.build(col, args)?))
    }
}

// ---------------------------------------------------------------------------
// Matcher construction and validation
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
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

fn unknown_matcher(name: &str) -> String {
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
    fn lookup(name: &str) -> Option<Kind> {
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

    fn build(self, col: usize, args: Vec<(String, usize)>) -> Result<Matcher, RuleError> {
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
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// Headers as (name, value) pairs; names compared case-insensitively.
    struct Headers(Vec<(&'static str, Vec<u8>)>);

    impl HeaderLookup for Headers {
        fn any_value(&self, name: &str, f: &mut dyn FnMut(&[u8]) -> bool) -> bool {
            self.0
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .any(|(_, v)| f(v))
        }
    }

    /// A request to build `MatchInput`s from.
    struct Req {
        host: &'static str,
        path: &'static str,
        query: &'static str,
        method: &'static str,
        headers: Headers,
        client_ip: IpAddr,
    }

    impl Req {
        fn new() -> Req {
            Req {
                host: "example.com",
                path: "/",
                query: "",
                method: "GET",
                headers: Headers(Vec::new()),
                client_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            }
        }
        fn host(mut self, h: &'static str) -> Req {
            self.host = h;
            self
        }
        fn path(mut self, p: &'static str) -> Req {
            self.path = p;
            self
        }
        fn query(mut self, q: &'static str) -> Req {
            self.query = q;
            self
        }
        fn method(mut self, m: &'static str) -> Req {
            self.method = m;
            self
        }
        fn header(mut self, n: &'static str, v: &[u8]) -> Req {
            self.headers.0.push((n, v.to_vec()));
            self
        }
        fn ip(mut self, ip: &str) -> Req {
            self.client_ip = ip.parse().unwrap();
            self
        }
        fn matches(&self, rule: &str) -> bool {
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

    fn err(rule: &str) -> RuleError {
        match Rule::parse(rule) {
            Ok(r) => panic!("{rule:?} parsed: {r:?}"),
            Err(e) => e,
        }
    }

    /// Asserts `rule` fails at `column` with a message containing `needle`.
    fn assert_err(rule: &str, column: usize, needle: &str) {
        let e = err(rule);
        assert_eq!(e.column, column, "{rule:?}: {e}");
        assert!(e.message.contains(needle), "{rule:?}: {e}");
    }

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
    fn query_value() {
        let r = Req::new().query("a=1&b=hello+world&c=x%20y&d=%2B");
        assert!(r.matches("Query(`a`, `1`)"));
        assert!(!r.matches("Query(`a`, `2`)"));
        assert!(r.matches("Query(`b`, `hello world`)"));
        assert!(!r.matches("Query(`b`, `hello+world`)"));
        assert!(r.matches("Query(`c`, `x y`)"));
        assert!(r.matches("Query(`d`, `+`)"));
        assert!(!r.matches("Query(`z`, `1`)"));
        // Keys are decoded too.
        let r = Req::new().query("my+key=v&k%C3%A9=%C3%A9");
        assert!(r.matches("Query(`my key`, `v`)"));
        assert!(r.matches("Query(`ké`, `é`)"));
    }

    #[test]
    fn query_repeated_keys() {
        let r = Req::new().query("tag=a&tag=b&tag=c");
        assert!(r.matches("Query(`tag`, `a`)"));
        assert!(r.matches("Query(`tag`, `b`)"));
        assert!(r.matches("Query(`tag`, `c`)"));
        assert!(!r.matches("Query(`tag`, `d`)"));
    }

    #[test]
    fn query_presence() {
        let r = Req::new().query("flag&empty=&full=1");
        assert!(r.matches("Query(`flag`)"));
        assert!(r.matches("Query(`empty`)"));
        assert!(r.matches("Query(`full`)"));
        assert!(r.matches("query(`full`)"));
        assert!(!r.matches("Query(`absent`)"));
        assert!(!r.matches("Query(`ful`)"));
        assert!(!Req::new().query("").matches("Query(`flag`)"));
    }

    #[test]
    fn query_skips_pairs_go_rejects() {
        // Semicolons and invalid escapes make Go's ParseQuery drop the pair.
        let r = Req::new().query("a=1;b=2&c=%zz&d=%4&e=ok");
        assert!(!r.matches("Query(`a`)"));
        assert!(!r.matches("Query(`b`)"));
        assert!(!r.matches("Query(`c`)"));
        assert!(!r.matches("Query(`d`)"));
        assert!(r.matches("Query(`e`, `ok`)"));
        // Empty pairs are ignored.
        assert!(Req::new().query("&&x=1&").matches("Query(`x`, `1`)"));
    }

    #[test]
    fn query_regexp() {
        let r = Req::new().query("id=123&id=abc&name=a+b");
        assert!(r.matches("QueryRegexp(`id`, `^[a-z]+$`)"));
        assert!(r.matches("QueryRegexp(`id`, `^[0-9]+$`)"));
        assert!(!r.matches("QueryRegexp(`id`, `^[A-Z]+$`)"));
        assert!(r.matches("QueryRegexp(`name`, `^a b$`)"));
        assert!(r.matches("QueryRegexp(`name`)"));
        assert!(!r.matches("QueryRegexp(`nope`, `.*`)"));
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

    #[test]
    fn nested_parentheses_and_whitespace() {
        let r = Req::new().host("a.com").path("/api/x").method("POST");
        assert!(
            r.matches("((Host(`a.com`) && (PathPrefix(`/api`) || Path(`/`))) && !(Method(`GET`)))")
        );
        assert!(!r.matches("((Host(`a.com`)) && ((Method(`GET`))))"));
        assert!(r.matches("  Host ( `a.com` )\n\t&&\r\n(\tMethod(`POST`)||Method(`PUT`) ) "));
        assert!(r.matches("Host(`a.com`,)"));
        assert!(r.matches("HOST(`a.com`) && pathprefix(`/api`) && Method(`post`)"));
    }

    #[test]
    fn double_quoted_arguments() {
        let r = Req::new().host("a.com").path("/p\"q").header("X", b"a\\b");
        assert!(r.matches("Host(\"a.com\")"));
        assert!(r.matches("Host(\"a.com\") && Path(`/p\"q`)"));
        assert!(r.matches(r#"Path("/p\"q")"#));
        assert!(r.matches(r#"Header("X", "a\\b")"#));
        assert!(r.matches(r#"Header("X", `a\b`)"#));
        assert!(r.matches(r#"Host("\x61.com")"#));
        assert!(r.matches(r#"Host("\u0061.c\U0000006Fm")"#));
        assert!(r.matches(r#"Host("\141.com")"#));
        assert!(r.matches(r#"PathRegexp("^/p\"q$")"#));
        assert!(Req::new()
            .path("/v1/x")
            .matches(r#"PathRegexp("^/v\\d+/")"#));
        assert!(Req::new()
            .header("X", "é".as_bytes())
            .matches(r#"Header("X", "\xc3\xa9")"#));
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
    fn error_unterminated_string() {
        assert_err("Host(`a", 6, "unterminated string");
        assert_err("Path(`/`) && Host(\"abc", 19, "unterminated string");
        assert_err("Host(\"a\nb\")", 6, "unterminated string");
        assert_err("Host(\"a\\", 6, "unterminated string");
        assert_err("Host(\"a\\\"", 6, "unterminated string");
    }

    #[test]
    fn error_bad_escape() {
        assert_err(r#"Host("a\qb")"#, 8, "invalid escape sequence");
        assert_err(r#"Host("a\x4")"#, 8, "invalid escape sequence");
        assert_err(r#"Host("\'")"#, 7, "invalid escape sequence");
        assert_err(r#"Host("\uD800")"#, 7, "not a Unicode scalar value");
        assert_err(r#"Host("\xff")"#, 6, "not valid UTF-8");
    }

    #[test]
    fn error_end_of_rule() {
        assert_err("Host(`a`) &&", 13, "unexpected end of rule");
        assert_err("Host(`a`) || ", 14, "unexpected end of rule");
        assert_err("!", 2, "unexpected end of rule");
        assert_err("(Host(`a`)", 11, "expected `)`");
        assert_err("Host(`a`", 9, "expected `,` or `)`");
        assert_err("Host", 5, "expected `(` after `Host`");
    }

    #[test]
    fn error_unexpected_token() {
        assert_err("&& Host(`a`)", 1, "found `&&`");
        assert_err("Host(`a`) && || Path(`/`)", 14, "found `||`");
        assert_err("Host(`a`) & Path(`/`)", 11, "did you mean `&&`?");
        assert_err("Host(`a`) | Path(`/`)", 11, "did you mean `||`?");
        assert_err("Host('a')", 6, "backticks or double quotes");
        assert_err("Host(a)", 6, "expected a string argument");
        assert_err("Host(`a` `b`)", 10, "expected `,` or `)`");
        assert_err("Host `a`", 6, "expected `(` after `Host`");
        assert_err("()", 2, "found `)`");
        assert_err("Host(`a`) && ` `", 14, "found a string");
        assert_err("Host(`a`) # x", 11, "unexpected character `#`");
        assert_err(
            "(Host(`a`) Path(`/`))",
            12,
            "expected `)` to close the `(` at column 1",
        );
    }

    #[test]
    fn error_trailing_input() {
        assert_err("Host(`a`) Path(`/`)", 11, "after a complete expression");
        assert_err("Host(`a`))", 10, "unmatched `)`");
        assert_err("Host(`a`) !Path(`/`)", 11, "after a complete expression");
    }

    #[test]
    fn error_empty_rule() {
        assert_err("", 1, "empty rule");
        assert_err("  \n\t", 1, "empty rule");
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

    #[test]
    fn error_columns_count_characters_not_bytes() {
        // `é` is two bytes but one column.
        assert_err("Path(`/é`) && Foo(`b`)", 15, "unknown matcher `Foo`");
    }

    #[test]
    fn error_nesting_limit() {
        let deep = format!("{}Host(`a`){}", "(".repeat(500), ")".repeat(500));
        assert_err(&deep, MAX_DEPTH + 1, "nested too deeply");
        let nots = format!("{}Host(`a`)", "!".repeat(500));
        assert_err(&nots, MAX_DEPTH + 1, "nested too deeply");
        let ok = format!("{}Host(`a`){}", "(".repeat(50), ")".repeat(50));
        assert!(Req::new().host("a").matches(&ok));
        // Long flat chains are fine.
        let chain = vec!["Host(`a`)"; 5000].join(" && ");
        assert!(Req::new().host("a").matches(&chain));
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
