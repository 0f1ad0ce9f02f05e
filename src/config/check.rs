//! Checks of the install file's values that its types cannot express: addresses, CIDR ranges
//! and limits, so that a value out of range is an error with its line at load, not a panic or
//! a surprise at the first request.

use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;

use super::error::ConfigError;
use super::types::{PluginDecl, StaticConfig};

/// Where an entry point listens, from Traefik's `[host]:port[/tcp]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddress {
    /// The host part; `None` for every interface (`:8080`).
    pub host: Option<String>,
    /// The port (0: any free port).
    pub port: u16,
}

impl ListenAddress {
    /// The addresses to try binding, in order: `[::]` then `0.0.0.0` for every interface
    /// (IPv6 sockets take IPv4 clients too where the system maps them), else `host:port`.
    pub fn bind_candidates(&self) -> Vec<String> {
        match &self.host {
            None => vec![
                format!("[::]:{}", self.port),
                format!("0.0.0.0:{}", self.port),
            ],
            Some(h) => vec![format!("{h}:{}", self.port)],
        }
    }
}

/// Parses an entry point address: `127.0.0.1:8080`, `[::1]:8080`, `localhost:8080`, `:8080`,
/// each optionally followed by `/tcp`.
pub fn listen_address(address: &str) -> Result<ListenAddress, String> {
    let (addr, proto) = match address.rsplit_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (address, None),
    };
    match proto {
        None => {}
        Some(p) if p.eq_ignore_ascii_case("tcp") => {}
        Some(p) if p.eq_ignore_ascii_case("udp") => {
            return Err(format!(
                "address {address:?}: UDP entry points are not supported (HTTP/3 is not yet)"
            ))
        }
        Some(p) => {
            return Err(format!(
                "address {address:?}: unknown protocol {p:?}; write host:port or host:port/tcp"
            ))
        }
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(format!(
            "address {address:?} has no port; write host:port, e.g. \"127.0.0.1:8080\" or \":8080\""
        ));
    };
    let port: u16 = port.parse().map_err(|_| {
        format!("address {address:?}: port {port:?} is not a number from 0 to 65535")
    })?;
    if host.is_empty() {
        return Ok(ListenAddress { host: None, port });
    }
    let bracketed = host.starts_with('[') && host.ends_with(']');
    let valid_host = if bracketed {
        host[1..host.len() - 1]
            .parse::<std::net::Ipv6Addr>()
            .is_ok()
    } else {
        !host.contains(':')
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
    };
    if !valid_host {
        return Err(format!(
            "address {address:?}: {host:?} is not an IP address or host name (IPv6 goes in brackets: \"[::1]:8080\")"
        ));
    }
    Ok(ListenAddress {
        host: Some(host.to_string()),
        port,
    })
}

/// Parses `forwardedHeaders.trustedIPs`: CIDR ranges or single addresses.
pub fn trusted_ips(list: &[String]) -> Result<Vec<IpNet>, (usize, String)> {
    list.iter()
        .enumerate()
        .map(|(i, s)| crate::router::rule::parse_ip_range(s.trim()).map_err(|e| (i, e)))
        .collect()
}

/// The largest `maxHeaderBytes`: 64 MiB (Traefik's default is 1 MiB).
pub const MAX_HEADER_BYTES_LIMIT: usize = 64 << 20;
/// The largest `poolSize` and `maxInstances`.
pub const MAX_POOL_SIZE: usize = 4096;
/// The largest `callTimeout` and `poolWait`.
pub const MAX_PLUGIN_WAIT: Duration = Duration::from_secs(3600);
/// The largest `maxMemoryBytes`: 4 GiB, all a 32-bit WebAssembly memory can address.
pub const MAX_MEMORY_BYTES: u64 = wasmgate_abi::engines::MAX_MEMORY_BYTES;
/// The smallest `maxMemoryBytes`: one WebAssembly page.
pub const MIN_MEMORY_BYTES: u64 = 64 << 10;
/// The largest `maxBodyBytes`: 4 GiB, all a 32-bit guest can address.
pub const MAX_BODY_BYTES: usize = 4 << 30;

/// The smallest `maxHostBytes`: 64 KiB.
pub const MIN_HOST_BYTES: usize = 64 << 10;
/// The largest `maxHostBytes`: 64 GiB.
pub const MAX_HOST_BYTES: usize = 64 << 30;

/// Parses `"200"` or `"300-302"`: an entry of the access log's `filters.statusCodes`.
pub fn parse_status_range(text: &str) -> Result<(u16, u16), String> {
    let bad = || format!("invalid status code range {text:?} (e.g. \"404\" or \"500-599\")");
    let code = |s: &str| {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=999).contains(c))
            .ok_or_else(bad)
    };
    let (lo, hi) = match text.split_once('-') {
        Some((a, b)) => (code(a)?, code(b)?),
        None => (code(text)?, code(text)?),
    };
    if lo > hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

/// Every value of the install file that parses but cannot be used, each at its config path
/// (positions are filled in by the caller).
pub fn check_static(file: &Path, config: &StaticConfig) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let mut error = |path: String, message: String| {
        errors.push(ConfigError::at(file, path, message));
    };
    for (name, ep) in &config.entry_points {
        let here = format!("entryPoints.{name}");
        if let Err(e) = listen_address(&ep.address) {
            error(format!("{here}.address"), e);
        }
        if let Err((i, e)) = trusted_ips(&ep.forwarded_headers.trusted_ips) {
            error(format!("{here}.forwardedHeaders.trustedIPs[{i}]"), e);
        }
        if ep.http2.max_concurrent_streams == Some(0) {
            error(
                format!("{here}.http2.maxConcurrentStreams"),
                "0 is out of range: at least 1 stream (default 250)".into(),
            );
        }
        if let Some(n) = ep.http.max_header_bytes {
            if n == 0 || n > MAX_HEADER_BYTES_LIMIT {
                error(
                    format!("{here}.http.maxHeaderBytes"),
                    format!("{n} is out of range: 1 to {MAX_HEADER_BYTES_LIMIT} (64 MiB)"),
                );
            }
        }
    }
    // The internal entry point is added when not declared; any other must exist.
    let named = [
        (
            "ping.entryPoint",
            config.ping.as_ref().and_then(|p| p.entry_point.as_ref()),
        ),
        (
            "metrics.prometheus.entryPoint",
            config
                .metrics
                .as_ref()
                .and_then(|m| m.prometheus.as_ref())
                .and_then(|p| p.entry_point.as_ref()),
        ),
    ];
    for (path, name) in named {
        if let Some(name) = name {
            if name != super::INTERNAL_ENTRY_POINT && !config.entry_points.contains_key(name) {
                error(
                    path.to_string(),
                    crate::config::error::missing("entry point", name, config.entry_points.keys()),
                );
            }
        }
    }
    if config.api.as_ref().and_then(|a| a.dashboard) == Some(true) {
        error(
            "api.dashboard".into(),
            "wasmgate has no dashboard; `api` serves /api/rawdata (set dashboard: false)".into(),
        );
    }
    if let Some(code) = config.ping.as_ref().and_then(|p| p.terminating_status_code) {
        if !(100..=599).contains(&code) {
            error(
                "ping.terminatingStatusCode".into(),
                format!("{code} is not an HTTP status (100 to 599)"),
            );
        }
    }
    if let Some(buckets) = config
        .metrics
        .as_ref()
        .and_then(|m| m.prometheus.as_ref())
        .and_then(|p| p.buckets.as_ref())
    {
        if buckets.is_empty()
            || buckets.windows(2).any(|w| w[0] >= w[1])
            || buckets.iter().any(|b| !b.is_finite())
        {
            error(
                "metrics.prometheus.buckets".into(),
                "buckets must be finite numbers in increasing order".into(),
            );
        }
    }
    if let Some(filters) = config.access_log.as_ref().and_then(|a| a.filters.as_ref()) {
        for (i, range) in filters.status_codes.iter().enumerate() {
            if let Err(e) = parse_status_range(range) {
                error(format!("accessLog.filters.statusCodes[{i}]"), e);
            }
        }
    }
    for (name, d) in &config.plugins {
        let here = format!("plugins.{name}");
        check_module_source(&here, d, &mut error);
        for (field, value) in [("poolSize", d.pool_size), ("maxInstances", d.max_instances)] {
            let Some(n) = value else { continue };
            if !(1..=MAX_POOL_SIZE).contains(&n) {
                error(
                    format!("{here}.{field}"),
                    format!("{n} is out of range: 1 to {MAX_POOL_SIZE} instances"),
                );
            }
        }
        for (field, value) in [("poolWait", d.pool_wait), ("callTimeout", d.call_timeout)] {
            let Some(v) = value else { continue };
            if v > MAX_PLUGIN_WAIT || (field == "callTimeout" && v.is_zero()) {
                let low = if field == "callTimeout" {
                    "more than 0s"
                } else {
                    "0s or more"
                };
                error(
                    format!("{here}.{field}"),
                    format!("{v:?} is out of range: {low}, at most 1h"),
                );
            }
        }
        if let Some(n) = d.max_memory_bytes {
            if !(MIN_MEMORY_BYTES..=MAX_MEMORY_BYTES).contains(&n) {
                error(
                    format!("{here}.maxMemoryBytes"),
                    format!(
                        "{n} is out of range: {MIN_MEMORY_BYTES} (one 64 KiB page) to {MAX_MEMORY_BYTES} (4 GiB)"
                    ),
                );
            }
        }
        if let Some(n) = d.max_body_bytes {
            if n > MAX_BODY_BYTES {
                error(
                    format!("{here}.maxBodyBytes"),
                    format!("{n} is out of range: 0 to {MAX_BODY_BYTES} (4 GiB)"),
                );
            }
        }
        if let Some(n) = d.max_host_bytes {
            let body = d
                .max_body_bytes
                .unwrap_or(wasmgate_abi::PluginOptions::default().max_body_bytes);
            if !(MIN_HOST_BYTES..=MAX_HOST_BYTES).contains(&n) {
                error(
                    format!("{here}.maxHostBytes"),
                    format!(
                        "{n} is out of range: {MIN_HOST_BYTES} (64 KiB) to {MAX_HOST_BYTES} (64 GiB)"
                    ),
                );
            } else if n < body {
                // The budget counts the bodies a plugin writes: below maxBodyBytes the body
                // limit could never be reached.
                error(
                    format!("{here}.maxHostBytes"),
                    format!(
                        "{n} is less than maxBodyBytes ({body}): a plugin could not write the \
                         bodies maxBodyBytes allows; raise maxHostBytes or lower maxBodyBytes"
                    ),
                );
            }
        }
    }
    errors
}

/// The largest `timeout` of a plugin download.
pub const MAX_DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(3600);

/// Where a plugin's module comes from: exactly one of `path` and `url`; `url` with a valid
/// `sha256` (and optionally `timeout`), which mean nothing without it.
fn check_module_source(here: &str, d: &PluginDecl, error: &mut impl FnMut(String, String)) {
    use crate::plugins::fetch::{parse_url, Sha256Digest};
    match (&d.path, &d.url) {
        (Some(_), Some(_)) => error(
            format!("{here}.url"),
            "give either path (a local .wasm file) or url (a download), not both".into(),
        ),
        (None, None) => error(
            here.to_string(),
            "no module: give path (a local .wasm file) or url and sha256 (a download)".into(),
        ),
        _ => {}
    }
    match &d.url {
        Some(url) => {
            if let Err(e) = parse_url(url) {
                error(format!("{here}.url"), e);
            }
            match &d.sha256 {
                None => error(
                    format!("{here}.url"),
                    "a downloaded module needs its sha256 (64 hex digits): it is never run \
                     unless it matches"
                        .into(),
                ),
                Some(hex) => {
                    if let Err(e) = Sha256Digest::parse(hex) {
                        error(format!("{here}.sha256"), e);
                    }
                }
            }
            if let Some(t) = d.timeout {
                if t.is_zero() || t > MAX_DOWNLOAD_TIMEOUT {
                    error(
                        format!("{here}.timeout"),
                        format!("{t:?} is out of range: more than 0s, at most 1h"),
                    );
                }
            }
        }
        None => {
            for (field, given) in [
                ("sha256", d.sha256.is_some()),
                ("timeout", d.timeout.is_some()),
            ] {
                if given {
                    error(
                        format!("{here}.{field}"),
                        format!("{field} applies to a downloaded module: it goes with url"),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traefik_address_forms() {
        let any = |port| ListenAddress { host: None, port };
        let host = |h: &str, port| ListenAddress {
            host: Some(h.to_string()),
            port,
        };
        assert_eq!(listen_address(":8080"), Ok(any(8080)));
        assert_eq!(listen_address(":8080/tcp"), Ok(any(8080)));
        assert_eq!(listen_address("127.0.0.1:0"), Ok(host("127.0.0.1", 0)));
        assert_eq!(listen_address("[::1]:443"), Ok(host("[::1]", 443)));
        assert_eq!(listen_address("localhost:80"), Ok(host("localhost", 80)));
        for bad in [
            "localhost",
            ":99999",
            ":http",
            ":8080/udp",
            ":8080/sctp",
            "::1:80",
            "[zz]:80",
            "a b:80",
        ] {
            assert!(listen_address(bad).is_err(), "{bad}");
        }
        assert_eq!(any(80).bind_candidates(), vec!["[::]:80", "0.0.0.0:80"]);
    }

    /// The errors `check_static` finds in `text`, as `line: path: message`.
    fn static_errors(text: &str) -> Vec<String> {
        let file = Path::new("c.yaml");
        let config: StaticConfig = crate::config::parse_yaml(file, text).unwrap();
        let mut errors = check_static(file, &config);
        crate::config::locate::Locator::new(text).fill(&mut errors);
        errors
            .iter()
            .map(|e| {
                let line = e.position.map_or(0, |p| p.0);
                format!("{line}: {}: {}", e.path, e.message)
            })
            .collect()
    }

    #[test]
    fn a_plugin_module_comes_from_path_or_url_with_a_digest() {
        let digest = "ab".repeat(32);
        let ok = format!(
            "plugins:\n  a:\n    path: a.wasm\n  b:\n    url: https://example.com/b.wasm\n    sha256: {digest}\n    timeout: 10s\n"
        );
        assert_eq!(static_errors(&ok), Vec::<String>::new());
        let cases: [(String, &str); 7] = [
            (
                format!("plugins:\n  p:\n    path: p.wasm\n    url: https://x/p.wasm\n    sha256: {digest}\n"),
                "4: plugins.p.url: give either path (a local .wasm file) or url (a download), not both",
            ),
            (
                "plugins:\n  p:\n    engine: wasmer\n".into(),
                "2: plugins.p: no module: give path (a local .wasm file) or url and sha256",
            ),
            (
                "plugins:\n  p:\n    url: https://x/p.wasm\n".into(),
                "3: plugins.p.url: a downloaded module needs its sha256",
            ),
            (
                "plugins:\n  p:\n    url: https://x/p.wasm\n    sha256: abc123\n".into(),
                "4: plugins.p.sha256: \"abc123\" is not a SHA-256 digest: 64 hex digits expected",
            ),
            (
                format!("plugins:\n  p:\n    url: ftp://x/p.wasm\n    sha256: {digest}\n"),
                "3: plugins.p.url: \"ftp://x/p.wasm\": plugins are downloaded over http:// or https:// only",
            ),
            (
                format!("plugins:\n  p:\n    path: p.wasm\n    sha256: {digest}\n"),
                "4: plugins.p.sha256: sha256 applies to a downloaded module: it goes with url",
            ),
            (
                format!("plugins:\n  p:\n    url: http://x/p.wasm\n    sha256: {digest}\n    timeout: 0s\n"),
                "5: plugins.p.timeout: 0ns is out of range: more than 0s, at most 1h",
            ),
        ];
        for (text, expected) in cases {
            let errors = static_errors(&text);
            assert!(
                errors.len() == 1 && errors[0].starts_with(expected),
                "expected {expected:?}, got {errors:#?}"
            );
        }
    }

    #[test]
    fn status_ranges() {
        assert_eq!(parse_status_range("404"), Ok((404, 404)));
        assert_eq!(parse_status_range("500-599"), Ok((500, 599)));
        assert!(parse_status_range("599-500").is_err());
        assert!(parse_status_range("abc").is_err());
        assert!(parse_status_range("42").is_err());
    }
}
