//! The case format: one YAML file holds a list of cases.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Which ABI a guest speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Abi {
    /// http-wasm `http_handler`.
    HttpWasm,
    /// proxy-wasm 0.2.1.
    ProxyWasm,
}

impl Abi {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Abi::HttpWasm => "http-wasm",
            Abi::ProxyWasm => "proxy-wasm",
        }
    }

    /// Parses `http-wasm` or `proxy-wasm`.
    pub fn parse(s: &str) -> Option<Abi> {
        match s {
            "http-wasm" => Some(Abi::HttpWasm),
            "proxy-wasm" => Some(Abi::ProxyWasm),
            _ => None,
        }
    }
}

/// A guest module shipped with the suite.
pub struct Guest {
    /// The name cases use.
    pub name: &'static str,
    /// Its ABI.
    pub abi: Abi,
    /// Its WAT source.
    pub wat: &'static str,
}

/// The guests of the suite, compiled from WAT when the suite runs.
pub const GUESTS: &[Guest] = &[
    Guest {
        name: "http_wasm",
        abi: Abi::HttpWasm,
        wat: include_str!("../guests/http_wasm.wat"),
    },
    Guest {
        name: "proxy_wasm",
        abi: Abi::ProxyWasm,
        wat: include_str!("../guests/proxy_wasm.wat"),
    },
];

/// The guest called `name`.
pub fn guest(name: &str) -> Option<&'static Guest> {
    GUESTS.iter().find(|g| g.name == name)
}

/// The case files shipped with the suite: (file name, text).
pub const CASE_FILES: &[(&str, &str)] = &[
    ("http_wasm.yaml", include_str!("../cases/http_wasm.yaml")),
    ("proxy_wasm.yaml", include_str!("../cases/proxy_wasm.yaml")),
];

/// One case: a request through one guest and what must come back.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Unique name.
    pub name: String,
    /// The spec section it checks, e.g. `http-handler-abi#get_uri`.
    pub spec: String,
    /// The guest (see [`GUESTS`]).
    pub guest: String,
    /// The value of the `x-test-id` header: which behaviour of the guest runs.
    pub test: u32,
    /// The middleware configuration handed to the guest (`{}` when absent).
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    /// The request to send.
    #[serde(default)]
    pub request: RequestSpec,
    /// What the upstream answers; it echoes the request when absent.
    #[serde(default)]
    pub upstream: Option<UpstreamSpec>,
    /// What must come back.
    pub expect: Expect,
}

/// The request a case sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// Method.
    #[serde(default = "default_method")]
    pub method: String,
    /// Request target, sent exactly as written.
    #[serde(default = "default_uri")]
    pub uri: String,
    /// Header lines as `[name, value]` pairs, in order; a name may repeat.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Body.
    #[serde(default)]
    pub body: String,
    /// `HTTP/1.1` (default), `HTTP/1.0` or `HTTP/2` (cleartext, prior knowledge).
    #[serde(default = "default_version")]
    pub version: String,
}

impl Default for RequestSpec {
    fn default() -> Self {
        RequestSpec {
            method: default_method(),
            uri: default_uri(),
            headers: Vec::new(),
            body: String::new(),
            version: default_version(),
        }
    }
}

fn default_method() -> String {
    "GET".into()
}
fn default_uri() -> String {
    "/".into()
}
fn default_version() -> String {
    "HTTP/1.1".into()
}

/// A fixed upstream answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSpec {
    /// Status (200 when absent).
    #[serde(default)]
    pub status: Option<u16>,
    /// Response headers.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Response body.
    #[serde(default)]
    pub body: String,
}

/// What must come back. Every field present is checked.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Status code.
    #[serde(default)]
    pub status: Option<u16>,
    /// Response headers: a value the header must have, or `null` for "absent".
    #[serde(default)]
    pub headers: BTreeMap<String, Option<String>>,
    /// The exact body.
    #[serde(default)]
    pub body: Option<String>,
    /// Texts the body must contain.
    #[serde(default)]
    pub body_contains: Vec<String>,
    /// Texts the body must not contain.
    #[serde(default)]
    pub body_not_contains: Vec<String>,
    /// A regular expression the whole body must match.
    #[serde(default)]
    pub body_matches: Option<String>,
    /// How many requests of this case the upstream must have seen.
    #[serde(default)]
    pub upstream_calls: Option<u32>,
}

/// Parses one case file.
pub fn parse_cases(file: &str, text: &str) -> anyhow::Result<Vec<Case>> {
    let cases: Vec<Case> =
        serde_yaml::from_str(text).with_context(|| format!("case file {file}"))?;
    for c in &cases {
        guest(&c.guest)
            .with_context(|| format!("{file}: case {}: unknown guest {:?}", c.name, c.guest))?;
        if c.spec.is_empty() {
            anyhow::bail!("{file}: case {}: no spec section", c.name);
        }
    }
    Ok(cases)
}

/// The cases shipped with the suite.
pub fn builtin_cases() -> anyhow::Result<Vec<Case>> {
    let mut all = Vec::new();
    for (file, text) in CASE_FILES {
        all.extend(parse_cases(file, text)?);
    }
    check_unique(&all)?;
    Ok(all)
}

/// Every `*.yaml` case file in `dir`.
pub fn load_dir(dir: &Path) -> anyhow::Result<Vec<Case>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut all = Vec::new();
    for p in files {
        let text = std::fs::read_to_string(&p)?;
        all.extend(parse_cases(&p.display().to_string(), &text)?);
    }
    check_unique(&all)?;
    Ok(all)
}

fn check_unique(cases: &[Case]) -> anyhow::Result<()> {
    let mut seen = std::collections::HashSet::new();
    for c in cases {
        if !seen.insert(&c.name) {
            anyhow::bail!("two cases are named {}", c.name);
        }
    }
    Ok(())
}

impl Case {
    /// The ABI of the case's guest.
    pub fn abi(&self) -> Abi {
        guest(&self.guest).map(|g| g.abi).unwrap_or(Abi::HttpWasm)
    }
}

/// Keeps the cases whose ABI is `abi` (if given) and whose name matches `pattern` (if given):
/// a glob with `*` and `?` when it has either, a substring otherwise.
pub fn filter(cases: Vec<Case>, abi: Option<Abi>, pattern: Option<&str>) -> Vec<Case> {
    cases
        .into_iter()
        .filter(|c| abi.is_none_or(|a| c.abi() == a))
        .filter(|c| pattern.is_none_or(|p| name_matches(p, &c.name)))
        .collect()
}

/// Substring match, or glob match when `pattern` has `*` or `?`.
pub fn name_matches(pattern: &str, name: &str) -> bool {
    if pattern.contains(['*', '?']) {
        glob(pattern.as_bytes(), name.as_bytes())
    } else {
        name.contains(pattern)
    }
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| glob(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && glob(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && glob(rest, &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_substrings() {
        assert!(name_matches("uri", "get_uri_encoded"));
        assert!(!name_matches("url", "get_uri_encoded"));
        assert!(name_matches("get_*_encoded", "get_uri_encoded"));
        assert!(!name_matches("get_*", "set_uri"));
        assert!(name_matches("?et_uri", "set_uri"));
    }
}
