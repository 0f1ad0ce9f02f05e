//! Plugin modules fetched by digest: a declaration's `url` + `sha256` (Envoy's `remote` data
//! source, `http_uri` + `sha256`).
//!
//! A module is downloaded once, checked against its digest, and kept in the cache directory as
//! `<cache dir>/modules/sha256-<hex>.wasm`; later starts read it from there without touching
//! the network. The digest is checked again at every read, so a cached file that was damaged
//! or replaced is thrown away and fetched again, and bytes that do not match are never
//! returned (so never compiled or run) and never kept.
//!
//! [`PluginCatalog::load`](super::PluginCatalog::load) is synchronous and runs inside the
//! gateway's tokio runtime, where blocking on a future of that runtime is not allowed: each
//! download runs on a helper thread with a current-thread runtime of its own, and the caller
//! waits for that thread.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest as _, Sha256};

/// How long one download attempt may take when the declaration gives no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest module downloaded: far above any real plugin, low enough that a wrong URL
/// (a disk image, an endless stream) cannot fill memory.
pub const MAX_MODULE_BYTES: u64 = 256 << 20;
/// Attempts per download (Envoy's `retry_policy.num_retries` is 1 by default; three rides out
/// a restarting server).
pub const ATTEMPTS: u32 = 3;
/// The wait before the second attempt; doubled before each next one.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Redirects followed per attempt (release assets are usually behind one).
const MAX_REDIRECTS: usize = 5;

/// A module's SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// Parses 64 hex digits (either case).
    pub fn parse(text: &str) -> Result<Sha256Digest, String> {
        let bad = || {
            format!(
                "{text:?} is not a SHA-256 digest: 64 hex digits expected (`sha256sum plugin.wasm`)"
            )
        };
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Sha256Digest(out))
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Sha256Digest {
        Sha256Digest(Sha256::digest(bytes).into())
    }
}

impl std::fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Checks a declaration's `url`: absolute, `http` or `https`, with a host.
pub fn parse_url(text: &str) -> Result<Uri, String> {
    let uri: Uri = text
        .parse()
        .map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => {
            return Err(format!(
                "{text:?}: plugins are downloaded over http:// or https:// only"
            ))
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{text:?} has no host"));
    }
    Ok(uri)
}

/// Why a module could not be had.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The download's bytes are not the module the declaration names: never run, never kept.
    #[error("{url}: the downloaded module's sha256 is {actual}, the declaration expects {expected}; it is not used")]
    Mismatch {
        /// Where it came from.
        url: String,
        /// The declaration's digest.
        expected: Sha256Digest,
        /// The download's digest.
        actual: Sha256Digest,
    },
    /// Every attempt failed; the last failure is given.
    #[error("downloading {url} failed after {attempts} attempt(s): {last}")]
    Download {
        /// Where it came from.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last attempt's failure.
        last: String,
    },
    /// The helper thread or its runtime could not be started.
    #[error("downloading {url}: {message}")]
    Internal {
        /// Where it came from.
        url: String,
        /// What failed.
        message: String,
    },
}

/// One remote module to have: where it is, what it must hash to, how long one attempt may take.
#[derive(Debug, Clone)]
pub struct Remote {
    /// The URL (checked by [`parse_url`]).
    pub url: Uri,
    /// What the module must hash to.
    pub sha256: Sha256Digest,
    /// The deadline of one attempt (connect, headers and body).
    pub timeout: Duration,
}

/// Where the module of digest `sha256` is kept under the cache directory `dir`.
pub fn cached_path(dir: &Path, sha256: &Sha256Digest) -> PathBuf {
    dir.join("modules").join(format!("sha256-{sha256}.wasm"))
}

/// The module `remote` names, with where it is kept (`None`: not kept, no cache directory).
/// From the cache directory `cache` when a file there matches the digest (no network), else
/// downloaded, checked, and stored there.
pub fn module(
    remote: &Remote,
    cache: Option<&Path>,
) -> Result<(Vec<u8>, Option<PathBuf>), FetchError> {
    let url = remote.url.to_string();
    let kept = cache.map(|dir| cached_path(dir, &remote.sha256));
    if let Some(path) = &kept {
        match std::fs::read(path) {
            Ok(bytes) if Sha256Digest::of(&bytes) == remote.sha256 => {
                tracing::debug!(url = %url, path = %path.display(), "plugin module read from the cache");
                return Ok((bytes, kept));
            }
            Ok(_) => {
                // Damaged or replaced: the digest says it is not this module.
                tracing::warn!(path = %path.display(), "cached plugin module does not match its digest; fetching it again");
                let _ = std::fs::remove_file(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the cached plugin module; fetching it again");
            }
        }
    }
    let bytes = download_on_helper_thread(remote)?;
    let actual = Sha256Digest::of(&bytes);
    if actual != remote.sha256 {
        return Err(FetchError::Mismatch {
            url,
            expected: remote.sha256,
            actual,
        });
    }
    tracing::info!(url = %url, bytes = bytes.len(), "plugin module downloaded");
    let kept = kept.and_then(|path| match store(&path, &bytes) {
        Ok(()) => Some(path),
        Err(e) => {
            // The module is good: it runs now, and is downloaded again at the next start.
            tracing::warn!(path = %path.display(), error = %e, "cannot keep the downloaded plugin module");
            None
        }
    });
    Ok((bytes, kept))
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, then a rename,
/// so a reader never sees half a module (and a crash leaves at most a stray temporary file).
fn store(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    // As private as the compile cache it sits in (which is created 0700).
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Runs [`download`] on a thread of its own with a current-thread runtime, and waits for it.
fn download_on_helper_thread(remote: &Remote) -> Result<Vec<u8>, FetchError> {
    let internal = |message: String| FetchError::Internal {
        url: remote.url.to_string(),
        message,
    };
    let task = remote.clone();
    let thread = std::thread::Builder::new()
        .name("wasmgate-fetch".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| FetchError::Internal {
                    url: task.url.to_string(),
                    message: format!("cannot start a runtime: {e}"),
                })?;
            rt.block_on(download(&task))
        })
        .map_err(|e| internal(format!("cannot start a thread: {e}")))?;
    thread
        .join()
        .map_err(|_| internal("the download thread panicked".into()))?
}

/// Downloads `remote.url`, up to [`ATTEMPTS`] times with a doubling backoff; the digest is the
/// caller's to check. A client error (4xx) is not retried: asking again gets the same answer.
async fn download(remote: &Remote) -> Result<Vec<u8>, FetchError> {
    let client = client().map_err(|message| FetchError::Internal {
        url: remote.url.to_string(),
        message,
    })?;
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = match tokio::time::timeout(remote.timeout, get(&client, &remote.url)).await {
            Ok(r) => r,
            Err(_) => Err(Attempt::retry(format!(
                "no complete answer within {:?} (timeout)",
                remote.timeout
            ))),
        };
        match result {
            Ok(bytes) => return Ok(bytes),
            Err(failed) if !failed.retry || attempt >= ATTEMPTS => {
                return Err(FetchError::Download {
                    url: remote.url.to_string(),
                    attempts: attempt,
                    last: failed.message,
                })
            }
            Err(failed) => {
                tracing::warn!(url = %remote.url, attempt, error = %failed.message, "plugin download failed; trying again in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
    }
}

/// A failed attempt, and whether another may do better.
struct Attempt {
    message: String,
    retry: bool,
}

impl Attempt {
    fn retry(message: String) -> Attempt {
        Attempt {
            message,
            retry: true,
        }
    }

    fn fail(message: String) -> Attempt {
        Attempt {
            message,
            retry: false,
        }
    }
}

type HttpsClient = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Empty<Bytes>,
>;

/// An HTTP and HTTPS client trusting the system's roots (ring as the TLS provider).
fn client() -> Result<HttpsClient, String> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    // Unreadable certificates among good ones are skipped, as browsers do; none at all is only
    // fatal to https:// downloads, which then fail to verify.
    roots.add_parsable_certificates(found.certs);
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS setup: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

/// One attempt: GET, following redirects, reading at most [`MAX_MODULE_BYTES`].
async fn get(client: &HttpsClient, url: &Uri) -> Result<Vec<u8>, Attempt> {
    let mut url = url.clone();
    for _ in 0..=MAX_REDIRECTS {
        let req = hyper::Request::get(url.clone())
            .header(
                http::header::USER_AGENT,
                concat!("wasmgate/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::new())
            .map_err(|e| Attempt::fail(e.to_string()))?;
        let resp = client
            .request(req)
            .await
            .map_err(|e| Attempt::retry(error_chain(&e)))?;
        let status = resp.status();
        if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
            let location = resp
                .headers()
                .get(http::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| Attempt::fail(format!("{status} without a Location")))?;
            url = redirect(&url, location).map_err(Attempt::fail)?;
            continue;
        }
        if !status.is_success() {
            let message = format!("the server answered {status}");
            // 408 and 429 say "later"; other client errors will not change.
            return Err(
                if status.is_server_error()
                    || status == StatusCode::REQUEST_TIMEOUT
                    || status == StatusCode::TOO_MANY_REQUESTS
                {
                    Attempt::retry(message)
                } else {
                    Attempt::fail(message)
                },
            );
        }
        let too_large = || format!("the module is larger than {MAX_MODULE_BYTES} bytes");
        let declared = resp
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_MODULE_BYTES) {
            return Err(Attempt::fail(too_large()));
        }
        let mut body = resp.into_body();
        let mut bytes = Vec::with_capacity(declared.unwrap_or(0) as usize);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Attempt::retry(error_chain(&e)))?;
            if let Some(data) = frame.data_ref() {
                if (bytes.len() + data.len()) as u64 > MAX_MODULE_BYTES {
                    return Err(Attempt::fail(too_large()));
                }
                bytes.extend_from_slice(data);
            }
        }
        return Ok(bytes);
    }
    Err(Attempt::fail(format!(
        "more than {MAX_REDIRECTS} redirects"
    )))
}

/// Where a redirect's `Location` points, from the URL that answered it: absolute, or an
/// absolute path on the same origin.
fn redirect(from: &Uri, location: &str) -> Result<Uri, String> {
    let bad = |e: String| format!("redirect to {location:?}: {e}");
    if location.starts_with('/') && !location.starts_with("//") {
        let mut parts = from.clone().into_parts();
        parts.path_and_query = Some(location.parse().map_err(|e| bad(format!("{e}")))?);
        return Uri::from_parts(parts).map_err(|e| bad(e.to_string()));
    }
    parse_url(location).map_err(bad)
}

/// An error and its causes, one line: hyper's client errors say little at the top.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_parse_and_print() {
        let hex = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
        let d = Sha256Digest::parse(hex).unwrap();
        // The digest of nothing, printed in lower case.
        assert_eq!(d, Sha256Digest::of(b""));
        assert_eq!(d.to_string(), hex.to_ascii_lowercase());
        for bad in [
            "",
            "abc",
            &hex[1..],
            &format!("{hex}0"),
            &hex.replace('E', "g"),
        ] {
            assert!(Sha256Digest::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn urls_are_http_or_https_with_a_host() {
        assert!(parse_url("https://example.com/p.wasm").is_ok());
        assert!(parse_url("http://127.0.0.1:8080/p.wasm").is_ok());
        for bad in [
            "ftp://example.com/p.wasm",
            "/p.wasm",
            "example.com/p.wasm",
            "https://",
        ] {
            assert!(parse_url(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn redirects_resolve_against_the_origin() {
        let from: Uri = "https://a.example/x/p.wasm?v=1".parse().unwrap();
        assert_eq!(
            redirect(&from, "/y/q.wasm").unwrap().to_string(),
            "https://a.example/y/q.wasm"
        );
        assert_eq!(
            redirect(&from, "https://b.example/z").unwrap().to_string(),
            "https://b.example/z"
        );
        assert!(redirect(&from, "file:///etc/passwd").is_err());
    }

    #[test]
    fn a_stored_module_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let d = Sha256Digest::of(b"\0asm");
        let path = cached_path(dir.path(), &d);
        store(&path, b"\0asm").unwrap();
        store(&path, b"\0asm").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"\0asm");
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
