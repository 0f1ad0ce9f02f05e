//! Upstream connections: pooled hyper clients, shared across config reloads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use wasmgate_abi::Body;

use crate::config::{ForwardingTimeouts, ServersTransportConfig};

const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_RESPONSE_HEADER_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_IDLE_CONN_TIMEOUT: Duration = Duration::from_secs(90);
/// Traefik's default: with fewer than the client connections, every request opens and closes an
/// upstream connection (thousands of sockets in TIME-WAIT under load).
const DEFAULT_MAX_IDLE_PER_HOST: usize = 200;

/// How requests reach upstreams: a connection pool per protocol and the timeouts that apply.
pub struct Transport {
    http1: Client<HttpConnector, Body>,
    h2c: Client<HttpConnector, Body>,
    /// How long to wait for a response head, once the request is written, before answering 504.
    pub response_header_timeout: Duration,
    /// How long a response body may go without a byte before it is cut (`idleConnTimeout`;
    /// `None` for `0s`).
    pub body_stall_timeout: Option<Duration>,
}

impl Transport {
    fn new(cfg: &ServersTransportConfig) -> Self {
        let t = &cfg.forwarding_timeouts;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(t.dial_timeout.unwrap_or(DEFAULT_DIAL_TIMEOUT)));
        connector.set_nodelay(true);
        let idle = t.idle_conn_timeout.unwrap_or(DEFAULT_IDLE_CONN_TIMEOUT);
        let max_idle = cfg
            .max_idle_conns_per_host
            .unwrap_or(DEFAULT_MAX_IDLE_PER_HOST);
        let build = |h2: bool| {
            let mut b = Client::builder(TokioExecutor::new());
            b.timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(idle)
                .pool_max_idle_per_host(max_idle)
                .http2_only(h2);
            b.build(connector.clone())
        };
        Transport {
            http1: build(false),
            h2c: build(true),
            response_header_timeout: t
                .response_header_timeout
                .unwrap_or(DEFAULT_RESPONSE_HEADER_TIMEOUT),
            body_stall_timeout: (!idle.is_zero()).then_some(idle),
        }
    }

    /// The client for HTTP/1.1 upstreams, or for cleartext HTTP/2 ones.
    pub fn client(&self, h2c: bool) -> &Client<HttpConnector, Body> {
        if h2c {
            &self.h2c
        } else {
            &self.http1
        }
    }
}

/// What makes two transports the same: timeouts and pool size.
type TransportKey = (ForwardingTimeouts, Option<usize>);

/// Transports by settings, so a reload that keeps the settings keeps the pooled connections.
#[derive(Default)]
pub struct TransportCache {
    by_settings: Mutex<HashMap<TransportKey, Arc<Transport>>>,
}

impl TransportCache {
    /// The transport for these settings, created on first use.
    pub fn get(&self, cfg: &ServersTransportConfig) -> Arc<Transport> {
        let key = (cfg.forwarding_timeouts.clone(), cfg.max_idle_conns_per_host);
        let mut map = self.by_settings.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key)
            .or_insert_with(|| Arc::new(Transport::new(cfg)))
            .clone()
    }
}
