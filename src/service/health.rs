//! Active health checks (`loadBalancer.healthCheck`): each server of a service is asked for the
//! check path every `interval`; one that fails (no answer within `timeout`, or a status other
//! than the expected one) leaves the rotation, and comes back when a check passes. Each change
//! is logged once. Checks of `https://` servers (or with `scheme: https`) use the TLS settings
//! of the service's servers transport.
//!
//! The checks belong to the service they check: they stop when it is dropped (a reload that
//! replaced it), so a reload never leaves checks of old services running.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::uri::Scheme;
use http::{Method, Request, Uri};
use http_body_util::Empty;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::transport::{self, UpstreamTls};
use crate::config::HealthCheckConfig;

/// The checks' client: `http://` in clear, `https://` with the service's TLS settings.
type CheckClient = Client<HttpsConnector<HttpConnector>, Empty<bytes::Bytes>>;

const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A health check, parsed from its configuration.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    path: String,
    interval: Duration,
    timeout: Duration,
    scheme: Option<String>,
    hostname: Option<String>,
    port: Option<u16>,
    headers: Vec<(HeaderName, HeaderValue)>,
    method: Method,
    status: Option<u16>,
}

impl HealthCheck {
    /// Checks `cfg`; the error names the field.
    pub fn parse(cfg: &HealthCheckConfig) -> Result<HealthCheck, (&'static str, String)> {
        if !cfg.path.starts_with('/') {
            return Err(("path", format!("{:?} must start with /", cfg.path)));
        }
        let interval = cfg.interval.unwrap_or(DEFAULT_INTERVAL);
        let timeout = cfg.timeout.unwrap_or(DEFAULT_TIMEOUT);
        if interval.is_zero() {
            return Err(("interval", "must be above 0s".into()));
        }
        if timeout.is_zero() {
            return Err(("timeout", "must be above 0s".into()));
        }
        if let Some(s) = cfg
            .scheme
            .as_deref()
            .filter(|s| !matches!(*s, "http" | "https"))
        {
            return Err(("scheme", format!("{s:?}: checks go over http or https")));
        }
        let method = match cfg.method.as_deref() {
            None => Method::GET,
            Some(m) => Method::from_bytes(m.as_bytes())
                .map_err(|_| ("method", format!("{m:?} is not an HTTP method")))?,
        };
        if let Some(s) = cfg.status.filter(|s| !(100..=599).contains(s)) {
            return Err(("status", format!("{s} is not an HTTP status")));
        }
        let mut headers = Vec::new();
        for (n, v) in &cfg.headers {
            let name = HeaderName::from_bytes(n.as_bytes())
                .map_err(|_| ("headers", format!("{n:?} is not a header name")))?;
            let value = HeaderValue::from_str(v).map_err(|_| {
                (
                    "headers",
                    format!("the value of {n:?} is not a header value"),
                )
            })?;
            headers.push((name, value));
        }
        Ok(HealthCheck {
            path: cfg.path.clone(),
            interval,
            timeout,
            scheme: cfg.scheme.clone(),
            hostname: cfg.hostname.clone(),
            port: cfg.port,
            headers,
            method,
            status: cfg.status,
        })
    }

    /// Whether the checks go over https (`scheme: https`; without `scheme`, servers are checked
    /// with their own).
    pub fn wants_https(&self) -> bool {
        self.scheme.as_deref() == Some("https")
    }
}

/// Whether each server of a service is in rotation (all are, until a check fails).
pub struct Health {
    up: Box<[AtomicBool]>,
}

impl Health {
    /// `n` servers, all up.
    pub fn all_up(n: usize) -> Health {
        Health {
            up: (0..n).map(|_| AtomicBool::new(true)).collect(),
        }
    }

    /// Whether server `i` is in rotation.
    pub fn is_up(&self, i: usize) -> bool {
        self.up.get(i).is_none_or(|u| u.load(Ordering::Relaxed))
    }
}

/// What a service exposes to its checks.
pub trait Checked: Send + Sync + 'static {
    /// The health of its servers.
    fn health(&self) -> &Health;
}

/// Starts checking the servers at `targets` (URL as configured, its scheme and `authority`)
/// of `service` (named `name`), on the current tokio runtime, with the TLS settings of the
/// service's transport for https; the checks stop once `service` is dropped.
pub fn spawn<S: Checked>(
    name: &str,
    service: &Arc<S>,
    targets: Vec<(String, Scheme, http::uri::Authority)>,
    check: HealthCheck,
    tls: Option<Arc<UpstreamTls>>,
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(check.timeout));
    let client: CheckClient = Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .build(transport::check_connector(tls.as_deref(), connector));
    let check = Arc::new(check);
    for (i, (url, scheme, authority)) in targets.into_iter().enumerate() {
        let weak: Weak<S> = Arc::downgrade(service);
        let (check, client, service_name) = (check.clone(), client.clone(), name.to_string());
        runtime.spawn(async move {
            let target = match target(&check, &scheme, &authority) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(service = %service_name, server = %url, "health check: {e}");
                    return;
                }
            };
            let mut ticker = tokio::time::interval(check.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                if weak.strong_count() == 0 {
                    return;
                }
                let verdict = probe(&client, &check, &target).await;
                let Some(svc) = weak.upgrade() else { return };
                let up = verdict.is_ok();
                let Some(flag) = svc.health().up.get(i) else {
                    return;
                };
                if flag.swap(up, Ordering::Relaxed) != up {
                    match &verdict {
                        Ok(()) => tracing::info!(service = %service_name, server = %url,
                            "health check passed: server back in rotation"),
                        Err(why) => tracing::warn!(service = %service_name, server = %url,
                            "health check failed: server out of rotation: {why}"),
                    }
                }
            }
        });
    }
}

/// The URI checks of the server at `authority` go to.
fn target(
    check: &HealthCheck,
    server_scheme: &Scheme,
    authority: &http::uri::Authority,
) -> Result<Uri, String> {
    let host = authority.host();
    let port = check.port.or(authority.port_u16());
    let authority = match port {
        Some(p) if host.contains(':') => format!("[{host}]:{p}"),
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let scheme = check.scheme.as_deref().unwrap_or(server_scheme.as_str());
    format!("{scheme}://{authority}{}", check.path)
        .parse()
        .map_err(|e| format!("cannot build the check URL: {e}"))
}

/// One check: `Ok` when the server answered as a healthy one, else why not.
async fn probe(client: &CheckClient, check: &HealthCheck, target: &Uri) -> Result<(), String> {
    let mut req = Request::builder()
        .method(check.method.clone())
        .uri(target.clone());
    if let Some(h) = &check.hostname {
        req = req.header(http::header::HOST, h.as_str());
    }
    for (n, v) in &check.headers {
        req = req.header(n, v);
    }
    let req = req
        .body(Empty::new())
        .map_err(|e| format!("cannot build the check: {e}"))?;
    let resp = match tokio::time::timeout(check.timeout, client.request(req)).await {
        Err(_) => return Err(format!("no answer within {:?}", check.timeout)),
        Ok(Err(e)) => {
            let cause = transport::tls_failure(&e).unwrap_or_else(|| {
                std::error::Error::source(&e)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| e.to_string())
            });
            return Err(cause);
        }
        Ok(Ok(r)) => r,
    };
    let status = resp.status().as_u16();
    let healthy = match check.status {
        Some(want) => status == want,
        None => (200..400).contains(&status),
    };
    if healthy {
        Ok(())
    } else {
        Err(format!("status {status}"))
    }
}
