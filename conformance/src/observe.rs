//! What `--target` runs observe of another host besides its responses: its plugin log lines,
//! read from the file it logs to (`--log-file`), and its metrics, scraped from a Prometheus
//! text endpoint (`--metrics-url`). Lines and samples are turned into what an in-process run
//! sees: `LEVEL message` lines and metric values by (plugin, name).
//!
//! Log formats understood, one record per line:
//! - wasmgate's JSON (`--log-format json`): `{"level":"INFO","message":"...","target":"wasmgate::plugin",...}`;
//! - wasmgate's human format: `<time>  INFO wasmgate::plugin: <message> plugin=... middleware=...`;
//! - Envoy's default format: `[<time>][<thread>][info][wasm] [<file:line>] wasm log <plugin> <root> <vm>: <message>`.
//!
//! Lines of other targets and other formats are skipped.

use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use crate::runner::{LogSource, MetricSource};

/// The `tracing` target of wasmgate's plugin log lines.
const WASMGATE_PLUGIN_TARGET: &str = "wasmgate::plugin";

/// The plugin log lines another host writes to a file, from where the current case began.
pub struct LogFile {
    path: PathBuf,
    /// The file's length when the current case began.
    from: Mutex<u64>,
}

impl LogFile {
    /// Follows `path` (it need not exist yet).
    pub fn new(path: PathBuf) -> LogFile {
        LogFile {
            path,
            from: Mutex::new(0),
        }
    }

    fn len(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }
}

impl LogSource for LogFile {
    fn start_case(&self) {
        *self.from.lock().unwrap_or_else(|p| p.into_inner()) = self.len();
    }

    fn lines(&self) -> Vec<String> {
        let from = *self.from.lock().unwrap_or_else(|p| p.into_inner());
        let mut text = Vec::new();
        if let Ok(mut f) = std::fs::File::open(&self.path) {
            // A file that shrank was rotated or truncated: read it all.
            let from = if f.metadata().map(|m| m.len()).unwrap_or(0) < from {
                0
            } else {
                from
            };
            if f.seek(SeekFrom::Start(from)).is_ok() {
                let _ = f.read_to_end(&mut text);
            }
        }
        String::from_utf8_lossy(&text)
            .lines()
            .filter_map(plugin_line)
            .collect()
    }
}

/// A host's log line as `LEVEL message` when it is a plugin's, in any format [this module]
/// reads; `None` for any other line.
pub fn plugin_line(line: &str) -> Option<String> {
    let line = strip_ansi(line.trim_end_matches('\r'));
    let line = line.as_str();
    if line.starts_with('{') {
        return json_line(line);
    }
    if line.starts_with('[') {
        return envoy_line(line);
    }
    human_line(line)
}

/// The text without terminal colour codes (`ESC [ ... m`), which a host writing to a terminal
/// may also write to a file.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip to the end of the sequence: a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn json_line(line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v.get("target")?.as_str()? != WASMGATE_PLUGIN_TARGET {
        return None;
    }
    let level = v.get("level")?.as_str()?;
    // Flattened (`flatten_event`) or under `fields`.
    let message = v
        .get("message")
        .or_else(|| v.get("fields")?.get("message"))?
        .as_str()?;
    Some(format!("{} {message}", level.to_ascii_uppercase()))
}

/// `2026-01-01T00:00:00.000000Z  INFO wasmgate::plugin: message plugin="p" middleware="m"`:
/// the fields wasmgate adds after the message are cut off.
fn human_line(line: &str) -> Option<String> {
    let (head, rest) = line.split_once(&format!(" {WASMGATE_PLUGIN_TARGET}: "))?;
    let level = head.split_whitespace().last()?;
    if !matches!(level, "TRACE" | "DEBUG" | "INFO" | "WARN" | "ERROR") {
        return None;
    }
    // wasmgate's plugin events carry these fields, in this order, after the message.
    let mut message = rest;
    for field in [" plugin=", " middleware=", " request_id="] {
        if let Some(at) = message.find(field) {
            message = &message[..at];
        }
    }
    Some(format!("{level} {message}"))
}

/// Envoy: `[time][thread][level][wasm] [file:line] wasm log <plugin> <root_id> <vm_id>: msg`.
fn envoy_line(line: &str) -> Option<String> {
    let mut rest = line;
    let mut brackets = Vec::new();
    while let Some(r) = rest.strip_prefix('[') {
        let (inside, after) = r.split_once(']')?;
        brackets.push(inside);
        rest = after.trim_start();
    }
    if brackets.len() < 4 || brackets[3] != "wasm" {
        return None;
    }
    let level = match brackets[2] {
        "trace" => "TRACE",
        "debug" => "DEBUG",
        "info" => "INFO",
        "warning" | "warn" => "WARN",
        "error" | "critical" => "ERROR",
        _ => return None,
    };
    let body = rest.strip_prefix("wasm log")?;
    let (_, message) = body.split_once(": ")?;
    Some(format!("{level} {message}"))
}

/// The metrics another host serves as Prometheus text.
pub struct PrometheusScrape {
    addr: SocketAddr,
    host: String,
    path: String,
}

impl PrometheusScrape {
    /// `http://HOST:PORT/PATH` (the path defaults to `/metrics`); HOST must resolve now.
    pub fn new(url: &str) -> anyhow::Result<PrometheusScrape> {
        use std::net::ToSocketAddrs;
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            anyhow::anyhow!("metrics url {url:?}: expected http://HOST:PORT/PATH")
        })?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/metrics"),
        };
        let addr = host
            .to_socket_addrs()
            .map_err(|e| anyhow::anyhow!("metrics url {url:?}: {e}"))?
            .next()
            .ok_or_else(|| anyhow::anyhow!("metrics url {url:?}: {host} has no address"))?;
        Ok(PrometheusScrape {
            addr,
            host: host.to_string(),
            path: path.to_string(),
        })
    }

    /// The exposition text, fetched now (HTTP/1.0, so the body ends with the connection).
    fn fetch(&self) -> Option<String> {
        use std::io::Write;
        let timeout = Duration::from_secs(5);
        let mut s = TcpStream::connect_timeout(&self.addr, timeout).ok()?;
        s.set_read_timeout(Some(timeout)).ok()?;
        write!(
            s,
            "GET {} HTTP/1.0\r\nHost: {}\r\nAccept: text/plain\r\n\r\n",
            self.path, self.host
        )
        .ok()?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).ok()?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200")
            .then(|| body.to_string())
            .or_else(|| head.starts_with("HTTP/1.0 200").then(|| body.to_string()))
    }
}

impl MetricSource for PrometheusScrape {
    fn metric(&self, plugin: &str, name: &str) -> Option<i64> {
        find_metric(&self.fetch()?, plugin, name)
    }
}

/// Prometheus's name rule: anything outside `[a-zA-Z0-9_:]` becomes `_`.
fn sanitize(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

/// The value of a filter's metric `name` of `plugin` in Prometheus text: wasmgate names it
/// `<plugin>_<name>` (a counter with `_total`); other hosts by the name alone, with their own
/// prefix (Envoy: `envoy_<name>`), which is taken when exactly one sample ends so.
pub fn find_metric(text: &str, plugin: &str, name: &str) -> Option<i64> {
    let base = sanitize(name.strip_suffix("_total").unwrap_or(name));
    let ours = sanitize(&format!("{plugin}_{base}"));
    let samples: Vec<(&str, f64)> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let metric = series.split('{').next()?;
            Some((metric, value.trim().parse::<f64>().ok()?))
        })
        .collect();
    let exact = |n: &str| samples.iter().find(|(m, _)| *m == n).map(|(_, v)| *v);
    let value = exact(&ours)
        .or_else(|| exact(&format!("{ours}_total")))
        .or_else(|| {
            let suffixes = [format!("_{base}"), format!("_{base}_total")];
            let mut found = samples
                .iter()
                .filter(|(m, _)| suffixes.iter().any(|s| m.ends_with(s.as_str())));
            match (found.next(), found.next()) {
                (Some((_, v)), None) => Some(*v),
                _ => None,
            }
        })?;
    Some(value as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_of_each_format() {
        assert_eq!(
            plugin_line(r#"{"timestamp":"t","level":"WARN","message":"pw says warn","plugin":"p","middleware":"m5","target":"wasmgate::plugin"}"#).as_deref(),
            Some("WARN pw says warn")
        );
        assert_eq!(
            plugin_line(r#"{"timestamp":"t","level":"INFO","fields":{"message":"x y"},"target":"wasmgate::plugin"}"#).as_deref(),
            Some("INFO x y")
        );
        assert_eq!(
            plugin_line(
                r#"{"level":"INFO","message":"listening","target":"wasmgate::proxy::server"}"#
            ),
            None
        );
        assert_eq!(
            plugin_line(r#"2026-12-02T19:00:00.123456Z  INFO wasmgate::plugin: on_done ctx=2 test=105 plugin="proxy_wasm-0_2_1-wasmtime" middleware="m7""#).as_deref(),
            Some("INFO on_done ctx=2 test=105")
        );
        // Coloured, as written to a terminal.
        assert_eq!(
            plugin_line("\u{1b}[2m2026-12-02T19:25:05.753715Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \u{1b}[2mwasmgate::plugin\u{1b}[0m\u{1b}[2m:\u{1b}[0m pw says info \u{1b}[3mplugin\u{1b}[0m\u{1b}[2m=\u{1b}[0mp").as_deref(),
            Some("INFO pw says info")
        );
        assert_eq!(
            plugin_line("2026-12-02T19:00:00.123456Z  INFO wasmgate::proxy::server: listening entry_point=web"),
            None
        );
        assert_eq!(
            plugin_line("[2024-05-01 10:00:00.000][17][critical][wasm] [source/extensions/common/wasm/context.cc:1192] wasm log m3 root vm: pw says critical").as_deref(),
            Some("ERROR pw says critical")
        );
        assert_eq!(
            plugin_line(
                "[2024-05-01 10:00:00.000][17][info][main] [source/server/server.cc:1] starting"
            ),
            None
        );
    }

    #[test]
    fn metrics_by_wasmgate_names_then_a_unique_suffix() {
        let text = "# HELP x\n# TYPE proxy_wasm_0_2_1_wasmtime_pw_metric_counter counter\n\
                    proxy_wasm_0_2_1_wasmtime_pw_metric_counter_total 7\n\
                    proxy_wasm_0_2_1_wasmer_pw_metric_counter_total 3\n\
                    proxy_wasm_0_2_1_wasmtime_pw_metric_gauge 40.0\n\
                    envoy_wasmcustom_other{a=\"b\"} 5\n";
        let p = "proxy_wasm-0_2_1-wasmtime";
        assert_eq!(find_metric(text, p, "pw_metric_counter"), Some(7));
        assert_eq!(find_metric(text, p, "pw_metric_gauge"), Some(40));
        assert_eq!(find_metric(text, "m1", "other"), Some(5));
        // Two hosts' worth of one name: ambiguous without the plugin's name.
        assert_eq!(find_metric(text, "m1", "pw_metric_counter"), None);
        assert_eq!(find_metric(text, p, "absent"), None);
    }
}
