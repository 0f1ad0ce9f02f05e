//! `loadBalancer`: spreads requests over servers by weight and forwards them.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, StatusCode, Uri};
use wasmgate_abi::{Body, Endpoint, ErrorSource, ProxyError, Request, Response};

use super::health::{self, Checked, Health, HealthCheck};
use super::timed_body::{SignalOnEnd, StallCut};
use super::transport::{self, HttpsServer, Transport};
use crate::http_convert as convert;
use crate::proxy::upgrade::{self, UpgradeAccepted, UpgradeRequested};

/// One upstream server, parsed.
#[derive(Debug, Clone)]
pub struct Server {
    /// The URL as configured, for logs.
    pub url: String,
    scheme: Scheme,
    authority: Authority,
    /// Path the server is mounted at, without a trailing slash ("" for none).
    base_path: String,
    h2c: bool,
    weight: u32,
    /// The clients of an `https://` server (set by [`Server::attach`]).
    https: Option<Arc<HttpsServer>>,
}

impl Server {
    /// Parses `http://host:port[/path]`, `https://host[:port][/path]` or
    /// `h2c://host:port[/path]`.
    pub fn parse(url: &str, weight: u32) -> Result<Server, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("invalid url {url:?}: {e}"))?;
        let (scheme, h2c) = match uri.scheme_str() {
            Some("http") => (Scheme::HTTP, false),
            Some("h2c") => (Scheme::HTTP, true),
            Some("https") => (Scheme::HTTPS, false),
            _ => {
                return Err(format!(
                    "url {url:?} needs a scheme: http://, https:// or h2c://"
                ))
            }
        };
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("url {url:?} has no host"))?;
        Ok(Server {
            url: url.to_string(),
            scheme,
            authority,
            base_path: uri.path().trim_end_matches('/').to_string(),
            h2c,
            weight,
            https: None,
        })
    }

    /// Takes the clients of an `https://` server from `transport` (nothing to do for others).
    pub fn attach(&mut self, transport: &Transport) -> Result<(), String> {
        if self.scheme == Scheme::HTTPS {
            self.https = Some(
                transport
                    .https_server(&self.authority)
                    .map_err(|e| format!("url {:?}: {e}", self.url))?,
            );
        }
        Ok(())
    }

    /// Its scheme (`http` for `h2c://` servers).
    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    /// The URI a request goes to: the server's, or for an `https://` server, `authority` (the
    /// host it should see; its clients dial the server whatever the URI says).
    fn target(&self, authority: &Authority, sent: &Uri) -> Result<Uri, ProxyError> {
        let builder = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(authority.clone());
        let builder = match sent.path_and_query() {
            // The request's own, shared rather than written out and parsed again.
            Some(pq) if self.base_path.is_empty() => builder.path_and_query(pq.clone()),
            pq => {
                let pq = pq.map_or("/", |p| p.as_str());
                builder.path_and_query(format!("{}{pq}", self.base_path))
            }
        };
        builder.build().map_err(|e| {
            ProxyError::bad_request(format!("cannot forward request target: {e}")).with_source(e)
        })
    }
}

/// Smooth weighted round-robin (as nginx does): over any window, each server
/// gets its share, and picks of one server are spread out, not bunched.
struct Wrr {
    current: Vec<i64>,
}

impl Wrr {
    /// The next server among those `up` says are in rotation (a server out of it counts as
    /// weight 0, so the others keep their shares).
    fn pick(&mut self, servers: &[Server], up: impl Fn(usize) -> bool) -> Option<usize> {
        let weight = |i: usize, s: &Server| if up(i) { s.weight as i64 } else { 0 };
        let total: i64 = servers.iter().enumerate().map(|(i, s)| weight(i, s)).sum();
        if total == 0 {
            return None;
        }
        let mut best = None;
        for (i, s) in servers.iter().enumerate() {
            let w = weight(i, s);
            if w == 0 {
                continue;
            }
            self.current[i] += w;
            if best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        let best = best?;
        self.current[best] -= total;
        Some(best)
    }
}

/// The upstream server that answered, put in the response's extensions for the access log.
#[derive(Debug, Clone)]
pub struct UpstreamUsed(pub String);

/// A load-balanced service.
pub struct LoadBalancer {
    servers: Vec<Server>,
    wrr: Mutex<Wrr>,
    pass_host_header: bool,
    transport: Arc<Transport>,
    /// Which servers are in rotation (all, unless health checks took some out).
    health: Health,
}

impl LoadBalancer {
    /// A balancer over `servers`.
    pub fn new(servers: Vec<Server>, pass_host_header: bool, transport: Arc<Transport>) -> Self {
        LoadBalancer {
            wrr: Mutex::new(Wrr {
                current: vec![0; servers.len()],
            }),
            health: Health::all_up(servers.len()),
            servers,
            pass_host_header,
            transport,
        }
    }

    /// Starts health checks of its servers (stopped when it is dropped).
    pub fn check_health(self: &Arc<Self>, name: &str, check: HealthCheck) {
        let targets = self
            .servers
            .iter()
            .map(|s| (s.url.clone(), s.scheme.clone(), s.authority.clone()))
            .collect();
        health::spawn(name, self, targets, check, self.transport.tls().cloned());
    }
}

impl Checked for LoadBalancer {
    fn health(&self) -> &Health {
        &self.health
    }
}

#[async_trait]
impl Endpoint for LoadBalancer {
    async fn call(&self, mut req: Request) -> Result<Response, ProxyError> {
        let picked = self
            .wrr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pick(&self.servers, |i| self.health.is_up(i));
        let Some(server) = picked.map(|i| &self.servers[i]) else {
            return Err(ProxyError::new(
                ErrorSource::Upstream,
                StatusCode::SERVICE_UNAVAILABLE,
                "no server available (every server is out of rotation, or weighs 0)",
            ));
        };
        let trailers = convert::accepts_trailers(&req.headers);
        let upgrading = req
            .extensions
            .get::<UpgradeRequested>()
            .map(|u| u.0.clone());
        convert::strip_hop_by_hop(&mut req.headers);
        if let Some(proto) = &upgrading {
            if server.h2c {
                return Err(ProxyError::bad_gateway(format!(
                    "{}: an upgrade ({proto:?}) needs an HTTP/1.1 upstream, not h2c",
                    server.url
                )));
            }
            upgrade::set_upgrade_headers(&mut req.headers, proto);
        }
        if trailers {
            // As Envoy: TE is hop by hop, but the client's `trailers` is kept, or the upstream
            // would not send the trailers the client asked for.
            req.headers
                .set(http::header::TE, HeaderValue::from_static("trailers"));
        }
        if self.pass_host_header {
            // HTTP/2 clients send :authority instead of Host; an HTTP/1 upstream needs Host.
            if !req.headers.contains(http::header::HOST) {
                if let Some(a) = req.uri.authority() {
                    req.headers.set(http::header::HOST, a.as_str());
                }
            }
        } else {
            req.headers
                .set("host", server.authority.as_str().to_string());
        }
        if server.h2c {
            // HTTP/2 carries the host as :authority, taken from the target URI.
            req.headers.remove(http::header::HOST);
        }
        let mut authority = &server.authority;
        let passed;
        if let Some(https) = &server.https {
            // The host goes in the URI: HTTP/2 sends it as :authority (as Traefik; a Host
            // header beside a different :authority is refused by some servers), HTTP/1.1 as
            // Host. The server is dialled all the same. Past the hosts a server may be sent
            // that way, the Host header goes as it is.
            let host = req.headers.get(http::header::HOST).map(Authority::try_from);
            if let Some(Ok(host)) = host {
                if host == server.authority || https.may_carry(&host) {
                    passed = host;
                    authority = &passed;
                    req.headers.remove(http::header::HOST);
                }
            }
        }
        let target = server.target(authority, &req.uri)?;
        let upstream_req = convert::request_to_hyper(req, target)?;
        // As Go's net/http, responseHeaderTimeout starts once the request is written, body
        // included: a slow upload does not count against it.
        let (upstream_req, written) = if upstream_req.body().is_end_stream() {
            (upstream_req, None)
        } else {
            let (parts, body) = upstream_req.into_parts();
            let (body, written) = SignalOnEnd::new(body);
            (
                hyper::Request::from_parts(parts, Body::from_stream(body)),
                Some(written),
            )
        };
        let header_timeout = self.transport.response_header_timeout;
        let waited = async move {
            if let Some(written) = written {
                // An error: the body was dropped unfinished and the request is failing anyway.
                let _ = written.await;
            }
            tokio::time::sleep(header_timeout).await;
        };
        let sent = tokio::select! {
            sent = match &server.https {
                // Upgrades need HTTP/1.1: its client offers only that in ALPN.
                Some(https) => https.client(upgrading.is_some()).request(upstream_req),
                None => self.transport.client(server.h2c).request(upstream_req),
            } => Ok(sent),
            () = waited => Err(()),
        };
        let resp = match sent {
            Err(()) => {
                return Err(ProxyError::gateway_timeout(format!(
                    "{} did not answer within {:?}",
                    server.url, header_timeout
                )))
            }
            Ok(Err(e)) => {
                let what = if e.is_connect() {
                    "cannot connect to"
                } else {
                    "failed talking to"
                };
                let cause = transport::tls_failure(&e).unwrap_or_else(|| {
                    std::error::Error::source(&e)
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| e.to_string())
                });
                return Err(
                    ProxyError::bad_gateway(format!("{what} {}: {cause}", server.url))
                        .with_source(e),
                );
            }
            Ok(Ok(resp)) => resp,
        };
        let accepted = (resp.status() == StatusCode::SWITCHING_PROTOCOLS)
            .then(|| resp.headers().get(http::header::UPGRADE).cloned())
            .flatten();
        let mut resp = match self.transport.body_stall_timeout {
            Some(limit) => convert::response_from_hyper(resp.map(|b| StallCut::new(b, limit))),
            None => convert::response_from_hyper(resp),
        };
        convert::strip_arriving_hop_by_hop(&mut resp.headers);
        if let (Some(proto), true) = (accepted, upgrading.is_some()) {
            // hyper keeps the upstream's side of the upgrade in the extensions.
            resp.extensions.insert(UpgradeAccepted(proto));
        }
        resp.extensions.insert(UpstreamUsed(server.url.clone()));
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_round_robin_spreads_by_weight() {
        let servers: Vec<Server> = [("http://a:1", 3), ("http://b:1", 1), ("http://c:1", 0)]
            .iter()
            .map(|(u, w)| Server::parse(u, *w).unwrap())
            .collect();
        let mut wrr = Wrr {
            current: vec![0; 3],
        };
        let picks: Vec<usize> = (0..8)
            .map(|_| wrr.pick(&servers, |_| true).unwrap())
            .collect();
        assert_eq!(picks.iter().filter(|&&i| i == 0).count(), 6);
        assert_eq!(picks.iter().filter(|&&i| i == 1).count(), 2);
        assert!(!picks.contains(&2));
        // Smooth: b is not picked twice in a row.
        assert!(picks.windows(2).all(|w| !(w[0] == 1 && w[1] == 1)));
        // A server out of rotation is skipped; with none in rotation, none is picked.
        let picks: Vec<usize> = (0..4)
            .map(|_| wrr.pick(&servers, |i| i != 0).unwrap())
            .collect();
        assert_eq!(picks, [1, 1, 1, 1]);
        assert_eq!(wrr.pick(&servers, |_| false), None);
    }

    #[test]
    fn server_urls() {
        let s = Server::parse("http://127.0.0.1:5000/base/", 1).unwrap();
        assert_eq!(
            s.target(&s.authority, &Uri::from_static("/a%2Fb?x=1"))
                .unwrap()
                .to_string(),
            "http://127.0.0.1:5000/base/a%2Fb?x=1"
        );
        // Without a base path the request's own path and query go as they are, whatever form
        // its target had.
        let s = Server::parse("http://127.0.0.1:5000", 1).unwrap();
        for (sent, to) in [
            ("/a%2Fb?x=1", "http://127.0.0.1:5000/a%2Fb?x=1"),
            ("http://client.test/p?q", "http://127.0.0.1:5000/p?q"),
            ("http://client.test", "http://127.0.0.1:5000/"),
        ] {
            let target = s.target(&s.authority, &Uri::from_static(sent)).unwrap();
            assert_eq!(target.to_string(), to, "{sent}");
        }
        assert!(Server::parse("h2c://127.0.0.1:5000", 1).unwrap().h2c);
        assert!(Server::parse("127.0.0.1:5000", 1).is_err());
        let s = Server::parse("https://x.test/b", 1).unwrap();
        assert_eq!(s.scheme(), &Scheme::HTTPS);
        assert_eq!(
            s.target(&"y.test:8443".parse().unwrap(), &Uri::from_static("/p"))
                .unwrap()
                .to_string(),
            "https://y.test:8443/b/p"
        );
        assert!(Server::parse("ftp://x", 1)
            .unwrap_err()
            .contains("https://"));
    }
}
