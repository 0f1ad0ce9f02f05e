//! The case format: one YAML file holds a list of cases.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::sdk::{Sdk, SdkBuild};

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
    /// Its WAT source; a template when the guest has [`Guest::variants`].
    pub wat: &'static str,
    /// The ABI versions the template is built for (empty: the source is plain WAT, one
    /// version). A case of such a guest runs once per version (see [`expand_variants`]).
    pub variants: &'static [&'static str],
    /// For a guest built with a plugin SDK (then `wat` is empty): where it comes from.
    pub sdk: Option<Sdk>,
}

/// The proxy-wasm ABI versions a proxy-wasm guest is built for.
pub const PROXY_WASM_VERSIONS: &[&str] = &["0.1.0", "0.2.0", "0.2.1"];

impl Guest {
    /// The WAT of `variant` (`None` for a guest without variants).
    ///
    /// Template rules, so one source serves every ABI version: a line starting (after
    /// blanks) with `;;@V1,V2 ` keeps its text after that prefix for the listed versions
    /// and is dropped for the others; `{{abi_version}}` becomes the version with `_` for
    /// `.` (`0_2_1`), as in the `proxy_abi_version_0_2_1` marker export.
    pub fn source(&self, variant: Option<&str>) -> String {
        let Some(v) = variant else {
            return self.wat.to_string();
        };
        let mut out = String::with_capacity(self.wat.len());
        for line in self.wat.lines() {
            let trimmed = line.trim_start();
            let line = match trimmed.strip_prefix(";;@") {
                Some(rest) => {
                    let (versions, text) = rest.split_once(' ').unwrap_or((rest, ""));
                    if !versions.split(',').any(|x| x == v) {
                        continue;
                    }
                    text
                }
                None => line,
            };
            out += &line.replace("{{abi_version}}", &v.replace('.', "_"));
            out.push('\n');
        }
        out
    }
}

/// The guests of the suite, compiled from WAT when the suite runs.
pub const GUESTS: &[Guest] = &[
    Guest {
        name: "http_wasm",
        abi: Abi::HttpWasm,
        wat: include_str!("../guests/http_wasm.wat"),
        variants: &[],
        sdk: None,
    },
    Guest {
        name: "proxy_wasm",
        abi: Abi::ProxyWasm,
        wat: include_str!("../guests/proxy_wasm.wat"),
        variants: PROXY_WASM_VERSIONS,
        sdk: None,
    },
    Guest {
        name: "proxy_wasm_calls",
        abi: Abi::ProxyWasm,
        wat: include_str!("../guests/proxy_wasm_calls.wat"),
        variants: PROXY_WASM_VERSIONS,
        sdk: None,
    },
    Guest {
        name: "proxy_wasm_arity",
        abi: Abi::ProxyWasm,
        wat: include_str!("../guests/proxy_wasm_arity.wat"),
        variants: PROXY_WASM_VERSIONS,
        sdk: None,
    },
    // Start sections that call host functions, and WASI stdio; cases in cases/start_section.yaml.
    Guest {
        name: "http_wasm_start",
        abi: Abi::HttpWasm,
        wat: include_str!("../guests/http_wasm_start.wat"),
        variants: &[],
        sdk: None,
    },
    Guest {
        name: "proxy_wasm_start",
        abi: Abi::ProxyWasm,
        wat: include_str!("../guests/proxy_wasm_start.wat"),
        variants: PROXY_WASM_VERSIONS,
        sdk: None,
    },
    Guest {
        name: "wasi_stdio",
        abi: Abi::HttpWasm,
        wat: include_str!("../guests/wasi_stdio.wat"),
        variants: &[],
        sdk: None,
    },
    // Modules that must not load: no ABI version marker, an unknown one (cases/b_markers.yaml).
    Guest {
        name: "proxy_wasm_no_marker",
        abi: Abi::ProxyWasm,
        wat: include_str!("../guests/proxy_wasm_no_marker.wat"),
        variants: &[],
        sdk: None,
    },
    Guest {
        name: "proxy_wasm_unknown_marker",
        abi: Abi::ProxyWasm,
        wat: include_str!("../guests/proxy_wasm_unknown_marker.wat"),
        variants: &[],
        sdk: None,
    },
    // Plugins of one chain sharing a VM id, or not (cases in cases/c_vm_id.yaml).
    Guest {
        name: "proxy_wasm_vm",
        abi: Abi::ProxyWasm,
        wat: include_str!("../guests/proxy_wasm_vm.wat"),
        variants: PROXY_WASM_VERSIONS,
        sdk: None,
    },
    // Part 2 behaviours of issue 17 (cases in cases/b_*.yaml).
    Guest {
        name: "proxy_wasm_trace",
        abi: Abi::ProxyWasm,
        wat: include_str!("../guests/proxy_wasm_trace.wat"),
        variants: PROXY_WASM_VERSIONS,
        sdk: None,
    },
    Guest {
        name: "http_wasm_start_fn",
        abi: Abi::HttpWasm,
        wat: include_str!("../guests/http_wasm_start_fn.wat"),
        variants: &[],
        sdk: None,
    },
    // A body-size change after the response headers were continued (cases/d_body_after_headers.yaml).
    Guest {
        name: "proxy_wasm_cite",
        abi: Abi::ProxyWasm,
        wat: include_str!("../guests/proxy_wasm_cite.wat"),
        variants: PROXY_WASM_VERSIONS,
        sdk: None,
    },
    // Built with the plugin SDKs from examples/ (see src/sdk.rs); cases in cases/sdk.yaml.
    sdk_guest(
        "sdk_http_wasm_add_headers",
        Abi::HttpWasm,
        "examples/plugins",
        WASIP1,
        "add-headers.wasm",
        "http_handler",
        None,
    ),
    sdk_guest(
        "sdk_http_wasm_deny_path",
        Abi::HttpWasm,
        "examples/plugins",
        WASIP1,
        "deny-path.wasm",
        "http_handler",
        None,
    ),
    sdk_guest(
        "sdk_http_wasm_rewrite_body",
        Abi::HttpWasm,
        "examples/plugins",
        WASIP1,
        "rewrite-body.wasm",
        "http_handler",
        None,
    ),
    sdk_guest(
        "sdk_proxy_wasm_rust",
        Abi::ProxyWasm,
        "examples/proxy-wasm",
        WASIP1,
        "header_filter.wasm",
        "0.2.1",
        None,
    ),
    sdk_guest(
        "sdk_proxy_wasm_rust_unknown",
        Abi::ProxyWasm,
        "examples/proxy-wasm",
        SdkBuild::Cargo {
            target: "wasm32-unknown-unknown",
        },
        "header_filter.wasm",
        "0.2.1",
        None,
    ),
    sdk_guest(
        "sdk_proxy_wasm_assemblyscript",
        Abi::ProxyWasm,
        "examples/proxy-wasm-as",
        SdkBuild::Npm,
        "build/add_header.wasm",
        "0.2.0",
        Some("add_header"),
    ),
];

const WASIP1: SdkBuild = SdkBuild::Cargo {
    target: "wasm32-wasip1",
};

const fn sdk_guest(
    name: &'static str,
    abi: Abi,
    dir: &'static str,
    build: SdkBuild,
    artifact: &'static str,
    version: &'static str,
    root_id: Option<&'static str>,
) -> Guest {
    Guest {
        name,
        abi,
        wat: "",
        variants: &[],
        sdk: Some(Sdk {
            dir,
            build,
            artifact,
            version,
            root_id,
        }),
    }
}

/// The guest called `name`: a plain guest name, or `guest@variant` for one ABI version of
/// a guest with variants.
pub fn guest(name: &str) -> Option<&'static Guest> {
    guest_variant(name).map(|(g, _)| g)
}

/// The guest and variant `name` names (`proxy_wasm@0.1.0` → proxy_wasm, `0.1.0`).
pub fn guest_variant(name: &str) -> Option<(&'static Guest, Option<&str>)> {
    let (base, variant) = match name.split_once('@') {
        Some((b, v)) => (b, Some(v)),
        None => (name, None),
    };
    let g = GUESTS.iter().find(|g| g.name == base)?;
    match variant {
        Some(v) if !g.variants.contains(&v) => None,
        None if !g.variants.is_empty() => None,
        _ => Some((g, variant)),
    }
}

/// The WAT of the guest (or guest variant) called `name`.
pub fn guest_source(name: &str) -> Option<String> {
    guest_variant(name).map(|(g, v)| g.source(v))
}

/// The module of the guest (or guest variant) called `name`: compiled from its WAT, or built
/// with its SDK.
pub fn guest_wasm(name: &str) -> anyhow::Result<Vec<u8>> {
    let (g, v) = guest_variant(name).with_context(|| format!("unknown guest {name}"))?;
    match &g.sdk {
        Some(sdk) => {
            let path = crate::sdk::build(sdk)?;
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
        }
        None => wat::parse_str(g.source(v)).with_context(|| format!("guest {name}")),
    }
}

/// The case files shipped with the suite: (file name, text).
pub const CASE_FILES: &[(&str, &str)] = &[
    ("http_wasm.yaml", include_str!("../cases/http_wasm.yaml")),
    ("proxy_wasm.yaml", include_str!("../cases/proxy_wasm.yaml")),
    (
        "proxy_wasm_stream.yaml",
        include_str!("../cases/proxy_wasm_stream.yaml"),
    ),
    (
        "proxy_wasm_calls.yaml",
        include_str!("../cases/proxy_wasm_calls.yaml"),
    ),
    (
        "proxy_wasm_arity.yaml",
        include_str!("../cases/proxy_wasm_arity.yaml"),
    ),
    (
        "start_section.yaml",
        include_str!("../cases/start_section.yaml"),
    ),
    (
        "b_http_wasm.yaml",
        include_str!("../cases/b_http_wasm.yaml"),
    ),
    (
        "b_proxy_wasm_trace.yaml",
        include_str!("../cases/b_proxy_wasm_trace.yaml"),
    ),
    ("b_start.yaml", include_str!("../cases/b_start.yaml")),
    ("b_markers.yaml", include_str!("../cases/b_markers.yaml")),
    ("a_format.yaml", include_str!("../cases/a_format.yaml")),
    (
        "a_proxy_wasm_calls.yaml",
        include_str!("../cases/a_proxy_wasm_calls.yaml"),
    ),
    (
        "d_body_after_headers.yaml",
        include_str!("../cases/d_body_after_headers.yaml"),
    ),
    ("c_vm_id.yaml", include_str!("../cases/c_vm_id.yaml")),
    // Last: slot numbers of the cases above do not depend on whether SDK cases run.
    ("sdk.yaml", include_str!("../cases/sdk.yaml")),
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
    /// For a guest with ABI-version variants: the versions to run on (all when empty).
    /// The case is expanded into one case per version, named `name@version`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<String>,
    /// The middleware configuration handed to the guest (`{}` when absent).
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    /// The request to send.
    #[serde(default)]
    pub request: RequestSpec,
    /// What the upstream answers; it echoes the request when absent.
    #[serde(default)]
    pub upstream: Option<UpstreamSpec>,
    /// Settings of the plugin declaration the case runs on (root id, VM configuration, log
    /// level, limits); a case with settings gets a plugin declaration of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginSettings>,
    /// Several plugins in one router, in order, instead of the one the case's `guest`,
    /// `config` and `plugin` describe (a case with a chain has neither `config` nor `plugin`).
    /// Every plugin sees the same request headers (one `x-test-id`), so the guests of a chain
    /// tell their roles apart by their configuration.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<Link>,
    /// What must come back: the spec's answer, or wasmgate's documented choice where the
    /// spec is silent. In process only this counts.
    pub expect: Expect,
    /// Other hosts' answers where they differ from `expect`, by host name (`envoy`, `kong`,
    /// `http-wasm-host-go`): a `--target --profile NAME` run reports a case that gives NAME's
    /// answer as "behaves as NAME" instead of failing it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub profiles: BTreeMap<String, Profile>,
}

/// A reference host's answer to a case, where it differs from the case's `expect`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// What that host gives (checked as `expect` is).
    pub expect: Expect,
    /// Where that behaviour comes from: a URL, or a source file and function of the host.
    pub cite: String,
}

/// Settings of the plugin declaration a case runs on. They are part of the slot key: cases
/// with different settings get different declarations (and so different VMs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSettings {
    /// proxy-wasm: the VM configuration (`vmConfig`, buffer 6 in `proxy_on_vm_start`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_config: Option<String>,
    /// proxy-wasm: the root id (`rootId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_id: Option<String>,
    /// proxy-wasm: the VM id (`vmId`): plugins with one VM id share data, queues and metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_id: Option<String>,
    /// The most verbose level the plugin logs at (`logLevel`: trace, debug, info, warn,
    /// error, off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// Other declaration fields as wasmgate names them (`maxBodyBytes`, `callTimeout`,
    /// `maxInstances`...), copied into the declaration as they are.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub limits: serde_json::Map<String, serde_json::Value>,
}

/// One plugin of a case's chain.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// The guest (default: the case's); a guest with versions runs at the case's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<String>,
    /// Its middleware configuration (`{}` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    /// Its plugin declaration's settings, as a case's `plugin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginSettings>,
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
    /// The body in pieces, sent one after the other with a short pause between them (instead
    /// of `body`), so the proxy reads them as separate chunks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<String>,
    /// Trailer fields as `[name, value]` pairs; when given the body is sent with them
    /// (chunked on HTTP/1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trailers: Vec<(String, String)>,
    /// How many times to send it, one after the other (default 1); the last answer is the
    /// one compared, `upstream_calls` counts them all. For instance-reuse cases.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub repeat: u32,
    /// `HTTP/1.1` (default), `HTTP/1.0` or `HTTP/2` (cleartext, prior knowledge).
    #[serde(default = "default_version")]
    pub version: String,
    /// The body as hexadecimal (instead of `body`), for bytes that are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_hex: Option<String>,
    /// The body as standard base64 (instead of `body`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
    /// The body as a text repeated (instead of `body`), for large bodies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_repeat: Option<Repeat>,
    /// How many copies of the request go at once, each on its own connection; every answer
    /// is compared (default 1).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub concurrent: u32,
    /// The client gives up this many milliseconds after sending the head (closing the
    /// connection); the case then checks only what does not need an answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_after_ms: Option<u64>,
}

/// A text repeated, for large bodies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repeat {
    /// The text.
    pub text: String,
    /// How many times.
    pub times: usize,
}

impl RequestSpec {
    /// The body bytes: `body_hex`, `body_base64`, `body_repeat` or `body`, whichever is given.
    pub fn body_bytes(&self) -> anyhow::Result<Vec<u8>> {
        body_bytes(
            &self.body,
            self.body_hex.as_deref(),
            self.body_base64.as_deref(),
            self.body_repeat.as_ref(),
        )
    }
}

/// The bytes of a body given as text, hex, base64 or a repeated text (at most one of the last
/// three).
pub fn body_bytes(
    text: &str,
    hex: Option<&str>,
    base64: Option<&str>,
    repeat: Option<&Repeat>,
) -> anyhow::Result<Vec<u8>> {
    let given = [hex.is_some(), base64.is_some(), repeat.is_some()];
    if given.iter().filter(|g| **g).count() > 1 || (given.contains(&true) && !text.is_empty()) {
        anyhow::bail!("give one of body, body_hex, body_base64, body_repeat");
    }
    if let Some(h) = hex {
        return decode_hex(h);
    }
    if let Some(b) = base64 {
        return decode_base64(b);
    }
    if let Some(r) = repeat {
        return Ok(r.text.repeat(r.times).into_bytes());
    }
    Ok(text.as_bytes().to_vec())
}

fn decode_hex(h: &str) -> anyhow::Result<Vec<u8>> {
    let h: Vec<u8> = h.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if h.len() % 2 != 0 {
        anyhow::bail!("body_hex: odd number of digits");
    }
    h.chunks(2)
        .map(|p| {
            let s = std::str::from_utf8(p)?;
            u8::from_str_radix(s, 16).with_context(|| format!("body_hex: {s:?} is not hex"))
        })
        .collect()
}

fn decode_base64(b: &str) -> anyhow::Result<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in b.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        let v = ALPHABET
            .iter()
            .position(|a| *a == c)
            .with_context(|| format!("body_base64: {:?} is not base64", c as char))?;
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

impl Default for RequestSpec {
    fn default() -> Self {
        RequestSpec {
            method: default_method(),
            uri: default_uri(),
            headers: Vec::new(),
            body: String::new(),
            chunks: Vec::new(),
            trailers: Vec::new(),
            repeat: 1,
            version: default_version(),
            body_hex: None,
            body_base64: None,
            body_repeat: None,
            concurrent: 1,
            abort_after_ms: None,
        }
    }
}

fn default_method() -> String {
    "GET".into()
}
fn default_uri() -> String {
    "/".into()
}
fn one() -> u32 {
    1
}
fn is_one(n: &u32) -> bool {
    *n == 1
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
    /// The response body in pieces with a short pause between them (instead of `body`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<String>,
    /// Response trailers (sent when the request asked for them with `te: trailers`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trailers: Vec<(String, String)>,
    /// The body as hexadecimal (instead of `body`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_hex: Option<String>,
    /// The body as a text repeated (instead of `body`), for large bodies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_repeat: Option<Repeat>,
    /// Milliseconds the upstream waits before answering (after reading the request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// The upstream closes the connection without reading or answering (as a refused or
    /// dead server looks to the proxy once connected).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refuse: bool,
    /// The upstream sends the head and part of the body, then drops the connection.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
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
    /// Response trailers: a value the trailer must have, or `null` for "absent".
    #[serde(default)]
    pub trailers: BTreeMap<String, Option<String>>,
    /// The exact body.
    #[serde(default)]
    pub body: Option<String>,
    /// The body's length in bytes (for large and binary bodies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_len: Option<usize>,
    /// Texts the body must contain.
    #[serde(default)]
    pub body_contains: Vec<String>,
    /// Texts the body must not contain.
    #[serde(default)]
    pub body_not_contains: Vec<String>,
    /// A regular expression the whole body must match.
    #[serde(default)]
    pub body_matches: Option<String>,
    /// The body is a guest's list, `N|item,item,` (each item ended by `,`), whose count `N`
    /// must match its items: `1` for a list of names, `2` for a map (`key,value,` per entry).
    /// For lists whose items vary by host.
    #[serde(default)]
    pub list_count: Option<usize>,
    /// How many requests of this case the upstream must have seen.
    #[serde(default)]
    pub upstream_calls: Option<u32>,
    /// Regular expressions each of which must match (anywhere in) one plugin log line emitted
    /// while the case ran, the line written `LEVEL message`, e.g. `INFO hello`.
    #[serde(default)]
    pub logs: Vec<String>,
    /// Regular expressions no plugin log line of the case may match.
    #[serde(default)]
    pub logs_absent: Vec<String>,
    /// proxy-wasm metrics of the case's plugin and the values they must have after the case.
    #[serde(default)]
    pub metrics: BTreeMap<String, i64>,
    /// `true`: the stream is reset, or the connection closed, without a response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset: Option<bool>,
    /// Exact response header lines, in order, of the names listed (other names ignored):
    /// `[[x-a, "1"], [x-a, "2"]]` is two `x-a` lines, in that order, and no other.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub header_lines: Vec<(String, String)>,
    /// `fail`: the plugin must fail to load (the case sends nothing; see `load_error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadExpect>,
    /// With `load: fail`: a regular expression the load error must match (anywhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_error: Option<String>,
}

/// What loading the plugin must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadExpect {
    /// Loading fails.
    Fail,
}

/// Parses one case file; cases of guests with variants come back expanded.
pub fn parse_cases(file: &str, text: &str) -> anyhow::Result<Vec<Case>> {
    let cases: Vec<Case> =
        serde_yaml::from_str(text).with_context(|| format!("case file {file}"))?;
    let mut out = Vec::new();
    for c in cases {
        if c.spec.is_empty() {
            anyhow::bail!("{file}: case {}: no spec section", c.name);
        }
        if !c.chain.is_empty() && (c.config.is_some() || c.plugin.is_some()) {
            anyhow::bail!(
                "{file}: case {}: a case with a chain gives config and plugin per link",
                c.name
            );
        }
        out.extend(expand_variants(c).with_context(|| format!("case file {file}"))?);
    }
    Ok(out)
}

/// One case per ABI version of its guest: `name@version`, guest `guest@version`, and in
/// `spec` the text `{version}` replaced by the version. Cases of plain guests pass as they are.
pub fn expand_variants(case: Case) -> anyhow::Result<Vec<Case>> {
    let g = GUESTS
        .iter()
        .find(|g| g.name == case.guest)
        .with_context(|| format!("case {}: unknown guest {:?}", case.name, case.guest))?;
    for link in &case.chain {
        let Some(name) = &link.guest else { continue };
        let lg = GUESTS
            .iter()
            .find(|x| x.name == name)
            .with_context(|| format!("case {}: unknown chain guest {name:?}", case.name))?;
        if lg.abi != g.abi || lg.variants != g.variants {
            anyhow::bail!(
                "case {}: chain guest {name} has another ABI or other versions than {}",
                case.name,
                g.name
            );
        }
    }
    if g.variants.is_empty() {
        if !case.versions.is_empty() {
            anyhow::bail!("case {}: guest {} has no versions", case.name, g.name);
        }
        return Ok(vec![case]);
    }
    for v in &case.versions {
        if !g.variants.contains(&v.as_str()) {
            anyhow::bail!(
                "case {}: guest {} has no version {v} (it has {})",
                case.name,
                g.name,
                g.variants.join(", ")
            );
        }
    }
    let versions: Vec<&str> = if case.versions.is_empty() {
        g.variants.to_vec()
    } else {
        case.versions.iter().map(String::as_str).collect()
    };
    Ok(versions
        .into_iter()
        .map(|v| Case {
            name: format!("{}@{v}", case.name),
            spec: case.spec.replace("{version}", v),
            guest: format!("{}@{v}", case.guest),
            versions: vec![v.to_string()],
            chain: case
                .chain
                .iter()
                .map(|l| Link {
                    guest: l.guest.as_ref().map(|g| format!("{g}@{v}")),
                    ..l.clone()
                })
                .collect(),
            ..case.clone()
        })
        .collect())
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
    /// Whether the case's plugin must fail to load (`expect.load: fail`).
    pub fn load_fails(&self) -> bool {
        self.expect.load == Some(LoadExpect::Fail)
    }

    /// Whether the case's guest is built with an SDK (and so needs the source tree and the
    /// SDK's toolchain).
    pub fn is_sdk(&self) -> bool {
        guest(&self.guest).is_some_and(|g| g.sdk.is_some())
    }

    /// The plugins the case's router runs, in order, as (guest, config, settings): its chain,
    /// or its one guest.
    pub fn links(&self) -> Vec<(String, serde_json::Value, Option<PluginSettings>)> {
        let config =
            |c: &Option<serde_json::Value>| c.clone().unwrap_or_else(|| serde_json::json!({}));
        if self.chain.is_empty() {
            return vec![(
                self.guest.clone(),
                config(&self.config),
                self.plugin.clone(),
            )];
        }
        self.chain
            .iter()
            .map(|l| {
                let guest = l.guest.clone().unwrap_or_else(|| self.guest.clone());
                (guest, config(&l.config), l.plugin.clone())
            })
            .collect()
    }

    /// The ABI of the case's guest.
    pub fn abi(&self) -> Abi {
        guest(&self.guest).map(|g| g.abi).unwrap_or(Abi::HttpWasm)
    }

    /// The ABI version the case runs on: its guest's variant, or the ABI's only version.
    pub fn abi_version(&self) -> String {
        if let Some(sdk) = guest(&self.guest).and_then(|g| g.sdk.as_ref()) {
            return sdk.version.to_string();
        }
        match self.guest.split_once('@') {
            Some((_, v)) => v.to_string(),
            None => match self.abi() {
                Abi::HttpWasm => "http_handler".to_string(),
                Abi::ProxyWasm => "0.2.1".to_string(),
            },
        }
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

    #[test]
    fn variant_templates_keep_only_their_lines() {
        let g = Guest {
            name: "t",
            abi: Abi::ProxyWasm,
            wat: "a\n  ;;@0.1.0 old\n;;@0.2.0,0.2.1 new {{abi_version}}\nz",
            variants: PROXY_WASM_VERSIONS,
            sdk: None,
        };
        assert_eq!(g.source(Some("0.1.0")), "a\nold\nz\n");
        assert_eq!(g.source(Some("0.2.1")), "a\nnew 0_2_1\nz\n");
    }

    #[test]
    fn cases_of_versioned_guests_expand_per_version() {
        let cases = parse_cases(
            "t.yaml",
            "- { name: a, spec: \"proxy-wasm-abi-{version}#x\", guest: proxy_wasm, test: 1, expect: {} }\n\
             - { name: b, spec: s, guest: proxy_wasm, test: 1, versions: [0.1.0], expect: {} }\n\
             - { name: c, spec: s, guest: http_wasm, test: 1, expect: {} }\n",
        )
        .unwrap();
        let names: Vec<_> = cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a@0.1.0", "a@0.2.0", "a@0.2.1", "b@0.1.0", "c"]);
        assert_eq!(cases[1].spec, "proxy-wasm-abi-0.2.0#x");
        assert_eq!(cases[1].guest, "proxy_wasm@0.2.0");
        assert_eq!(cases[3].abi_version(), "0.1.0");
        assert_eq!(cases[4].abi_version(), "http_handler");
        let err = parse_cases(
            "t.yaml",
            "- { name: d, spec: s, guest: proxy_wasm, test: 1, versions: [9.9], expect: {} }",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("has no version 9.9"), "{err:#}");
    }

    #[test]
    fn bodies_as_hex_base64_and_repeats() {
        let r: RequestSpec = serde_yaml::from_str("{ body_hex: \"00 ff 0a\" }").unwrap();
        assert_eq!(r.body_bytes().unwrap(), [0, 255, 10]);
        let r: RequestSpec = serde_yaml::from_str("{ body_base64: \"AP8K\" }").unwrap();
        assert_eq!(r.body_bytes().unwrap(), [0, 255, 10]);
        let r: RequestSpec = serde_yaml::from_str("{ body_base64: \"aGk=\" }").unwrap();
        assert_eq!(r.body_bytes().unwrap(), b"hi");
        let r: RequestSpec =
            serde_yaml::from_str("{ body_repeat: { text: ab, times: 3 } }").unwrap();
        assert_eq!(r.body_bytes().unwrap(), b"ababab");
        let r: RequestSpec = serde_yaml::from_str("{ body: x, body_hex: \"00\" }").unwrap();
        assert!(r.body_bytes().is_err());
        let r: RequestSpec = serde_yaml::from_str("{ body_hex: \"0g\" }").unwrap();
        assert!(r.body_bytes().is_err());
    }

    #[test]
    fn chains_expand_per_version_with_their_links() {
        let cases = parse_cases(
            "t.yaml",
            "- name: c\n  spec: s\n  guest: proxy_wasm_vm\n  test: 1\n  versions: [0.2.1]\n  chain:\n    - { config: r, plugin: { vm_id: a } }\n    - { guest: proxy_wasm_vm, config: e a }\n  expect: {}\n",
        )
        .unwrap();
        let links = cases[0].links();
        assert_eq!(links.len(), 2);
        assert_eq!(links[0].0, "proxy_wasm_vm@0.2.1");
        assert_eq!(links[0].1, serde_json::json!("r"));
        assert_eq!(links[0].2.as_ref().unwrap().vm_id.as_deref(), Some("a"));
        assert_eq!(links[1].0, "proxy_wasm_vm@0.2.1");
        assert_eq!(links[1].2, None);
        let err = parse_cases(
            "t.yaml",
            "- { name: d, spec: s, guest: proxy_wasm_vm, test: 1, config: x, chain: [{}], expect: {} }",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("per link"), "{err:#}");
        let err = parse_cases(
            "t.yaml",
            "- { name: e, spec: s, guest: proxy_wasm_vm, test: 1, chain: [{ guest: http_wasm }], expect: {} }",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("another ABI"), "{err:#}");
    }

    #[test]
    fn profiles_settings_and_load_expectations_parse() {
        let cases = parse_cases(
            "t.yaml",
            "- name: a\n  spec: s\n  guest: http_wasm\n  test: 1\n  plugin: { log_level: warn, limits: { maxBodyBytes: 10 } }\n  expect: { load: fail, load_error: boom }\n  profiles:\n    envoy: { expect: { status: 500 }, cite: somewhere }\n",
        )
        .unwrap();
        let c = &cases[0];
        assert!(c.load_fails());
        assert_eq!(c.profiles["envoy"].expect.status, Some(500));
        assert_eq!(c.plugin.as_ref().unwrap().limits["maxBodyBytes"], 10);
        let err = parse_cases(
            "t.yaml",
            "- { name: b, spec: s, guest: http_wasm, test: 1, expect: {}, profiles: { envoy: { expect: {} } } }",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("cite"), "{err:#}");
    }
}
