//! The access log, as Traefik's `accessLog`: one line per request, off unless configured.
//!
//! Lines are formatted on the request's task and handed to a writer thread through a bounded
//! channel (`tracing-appender`'s non-blocking writer), so a slow disk never stalls a request
//! until `bufferingSize` lines are waiting; then requests wait for the writer rather than lose
//! lines.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use http::{Method, StatusCode, Version};
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};

use crate::config::check::parse_status_range;
use crate::config::{AccessLogConfig, AccessLogFormat};

/// Lines kept in memory for the writer when `bufferingSize` is not given.
pub const DEFAULT_BUFFERING_SIZE: usize = 1024;

/// What one request leaves in the access log.
pub struct AccessEntry<'a> {
    /// The entry point's name.
    pub entry_point: &'a str,
    /// The client's address.
    pub client: SocketAddr,
    /// The request method.
    pub method: &'a Method,
    /// The request target as the client sent it.
    pub uri: &'a str,
    /// The request's HTTP version.
    pub version: Version,
    /// `User-Agent`, if any.
    pub user_agent: Option<&'a str>,
    /// `Referer`, if any.
    pub referer: Option<&'a str>,
    /// The router that matched.
    pub router: Option<&'a str>,
    /// The service it chose.
    pub service: Option<&'a str>,
    /// The upstream server that answered.
    pub upstream: Option<&'a str>,
    /// The status sent to the client.
    pub status: StatusCode,
    /// The response's `Content-Length`, when it has one (bodies stream after the line).
    pub size: Option<u64>,
    /// When the request arrived.
    pub start: SystemTime,
    /// How long it took until the response head was ready.
    pub duration: Duration,
    /// The request's id (its `X-Request-Id`), which the plugins' log lines carry too.
    pub request_id: &'a str,
    /// The client connection's TLS, if it came over TLS.
    pub tls: Option<&'a wasmgate_abi::model::ConnectionTls>,
}

/// An open access log.
pub struct AccessLog {
    format: AccessLogFormat,
    /// Traefik's `filters.statusCodes` (`"200"`, `"300-302"`) as inclusive ranges.
    status_codes: Vec<(u16, u16)>,
    min_duration: Duration,
    writer: NonBlocking,
    /// Dropping it writes out what is waiting and stops the writer ([`AccessLog::close`]).
    guard: std::sync::Mutex<Option<WorkerGuard>>,
    /// Requests logged so far (the common format's request counter).
    count: AtomicU64,
}

impl AccessLog {
    /// Opens the log `cfg` describes: `filePath` relative to `base` (appended to), else stdout.
    pub fn open(cfg: &AccessLogConfig, base: &Path) -> std::io::Result<AccessLog> {
        let lines = cfg.buffering_size.unwrap_or(DEFAULT_BUFFERING_SIZE).max(1);
        // Not lossy: past the buffer a request waits for the writer instead of losing its line.
        let builder = NonBlockingBuilder::default()
            .buffered_lines_limit(lines)
            .lossy(false)
            .thread_name("wasmgate-access-log");
        let (writer, guard) = match &cfg.file_path {
            Some(p) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(base.join(p))?;
                builder.finish(file)
            }
            None => builder.finish(std::io::stdout()),
        };
        let filters = cfg.filters.clone().unwrap_or_default();
        Ok(AccessLog {
            format: cfg.format,
            status_codes: filters
                .status_codes
                .iter()
                .filter_map(|s| parse_status_range(s).ok())
                .collect(),
            min_duration: filters.min_duration.unwrap_or_default(),
            writer,
            guard: std::sync::Mutex::new(Some(guard)),
            count: AtomicU64::new(0),
        })
    }

    /// Writes the line for `e`, unless a filter leaves it out.
    pub fn log(&self, e: &AccessEntry<'_>) {
        if !self.keeps(e) {
            return;
        }
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let mut line = match self.format {
            AccessLogFormat::Common => common_line(e, n),
            AccessLogFormat::Json => json_line(e),
        };
        line.push('\n');
        // One write is one message to the writer thread: lines never interleave.
        let _ = self.writer.clone().write_all(line.as_bytes());
    }

    /// Writes out every waiting line and stops the writer (at shutdown: the process may exit
    /// before the log itself is dropped). Lines logged afterwards are lost.
    pub fn close(&self) {
        let guard = self.guard.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(guard);
    }

    /// Traefik's filters: a line is kept when any filter matches (none given: every line).
    fn keeps(&self, e: &AccessEntry<'_>) -> bool {
        let by_status = !self.status_codes.is_empty();
        let by_duration = !self.min_duration.is_zero();
        if !by_status && !by_duration {
            return true;
        }
        let code = e.status.as_u16();
        (by_status
            && self
                .status_codes
                .iter()
                .any(|(lo, hi)| (*lo..=*hi).contains(&code)))
            || (by_duration && e.duration >= self.min_duration)
    }
}

fn version_text(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// Traefik's common format: `<client> - - [<time>] "<method> <target> <proto>" <status>
/// <size> "<referer>" "<user agent>" <count> "<router>" "<server URL>" <duration>ms`, then
/// wasmgate's own field, `"<request id>"` (appended, as Traefik appends its fields to CLF's).
fn common_line(e: &AccessEntry<'_>, n: u64) -> String {
    let quote = |s: Option<&str>| format!("\"{}\"", s.unwrap_or("-").replace('"', "\\\""));
    let when = time::OffsetDateTime::from(e.start);
    let stamp = when
        .format(time::macros::format_description!(
            "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
        ))
        .unwrap_or_default();
    format!(
        "{} - - [{stamp}] \"{} {} {}\" {} {} {} {} {n} {} {} {}ms {}",
        e.client.ip(),
        e.method,
        e.uri,
        version_text(e.version),
        e.status.as_u16(),
        e.size.map_or("-".to_string(), |s| s.to_string()),
        quote(e.referer),
        quote(e.user_agent),
        quote(e.router),
        quote(e.upstream),
        e.duration.as_millis(),
        // Visible ASCII, but it may hold a quote.
        quote(Some(e.request_id)),
    )
}

/// Traefik's JSON format, with its field names (the ones wasmgate knows). Traefik has no field
/// of its own for a request id; the id is the request's `X-Request-Id`, under the name Traefik
/// gives a kept request header (`request_<Header-Name>`, as `request_User-Agent`).
fn json_line(e: &AccessEntry<'_>) -> String {
    let start = time::OffsetDateTime::from(e.start)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut line = serde_json::json!({
        "ClientAddr": e.client.to_string(),
        "ClientHost": e.client.ip().to_string(),
        "ClientPort": e.client.port().to_string(),
        "DownstreamContentSize": e.size,
        "DownstreamStatus": e.status.as_u16(),
        "Duration": e.duration.as_nanos() as u64,
        "entryPointName": e.entry_point,
        "RequestMethod": e.method.as_str(),
        "RequestPath": e.uri,
        "RequestProtocol": version_text(e.version),
        "RouterName": e.router,
        "ServiceName": e.service,
        "ServiceURL": e.upstream,
        "StartUTC": start,
        "request_User-Agent": e.user_agent,
        "request_Referer": e.referer,
        "request_X-Request-Id": e.request_id,
    });
    // Traefik's TLS fields, on TLS requests only: `TLSVersion` as Go writes it (`1.3`).
    if let (Some(tls), Some(o)) = (e.tls, line.as_object_mut()) {
        let version = tls.version.strip_prefix("TLSv").unwrap_or(tls.version);
        o.insert("TLSVersion".into(), version.into());
        o.insert("TLSCipher".into(), tls.cipher.into());
    }
    line.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(status: u16, ms: u64) -> AccessEntry<'static> {
        AccessEntry {
            entry_point: "web",
            client: "10.0.0.1:5555".parse().unwrap(),
            method: &Method::GET,
            uri: "/a?b=1",
            version: Version::HTTP_11,
            user_agent: Some("curl/8"),
            referer: None,
            router: Some("r"),
            service: Some("s"),
            upstream: Some("http://127.0.0.1:9000"),
            status: StatusCode::from_u16(status).unwrap(),
            size: Some(12),
            start: SystemTime::UNIX_EPOCH + Duration::from_secs(86_400 * 365),
            duration: Duration::from_millis(ms),
            request_id: "4f2a\"x",
            tls: None,
        }
    }

    #[test]
    fn common_format_is_traefiks() {
        assert_eq!(
            common_line(&entry(200, 7), 3),
            "10.0.0.1 - - [01/Jan/1971:00:00:00 +0000] \"GET /a?b=1 HTTP/1.1\" 200 12 \"-\" \
             \"curl/8\" 3 \"r\" \"http://127.0.0.1:9000\" 7ms \"4f2a\\\"x\""
        );
    }

    #[test]
    fn json_format_uses_traefiks_names() {
        let v: serde_json::Value = serde_json::from_str(&json_line(&entry(404, 2))).unwrap();
        assert_eq!(v["DownstreamStatus"], 404);
        assert_eq!(v["RouterName"], "r");
        assert_eq!(v["ServiceURL"], "http://127.0.0.1:9000");
        assert_eq!(v["Duration"], 2_000_000);
        assert_eq!(v["StartUTC"], "1971-01-01T00:00:00Z");
        assert_eq!(v["request_X-Request-Id"], "4f2a\"x");
        assert!(v.get("TLSVersion").is_none());
        let tls = wasmgate_abi::model::ConnectionTls {
            version: "TLSv1.3",
            cipher: "TLS_AES_128_GCM_SHA256",
            ..Default::default()
        };
        let mut e = entry(200, 1);
        e.tls = Some(&tls);
        let v: serde_json::Value = serde_json::from_str(&json_line(&e)).unwrap();
        assert_eq!(v["TLSVersion"], "1.3");
        assert_eq!(v["TLSCipher"], "TLS_AES_128_GCM_SHA256");
    }
}
