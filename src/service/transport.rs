//! Upstream connections: pooled hyper clients, shared across config reloads.
//!
//! Plain `http://` and `h2c://` servers share two clients per transport. An `https://` server
//! gets clients of its own ([`HttpsServer`]) whose connector always dials that server: the
//! request's URI can then carry the host the upstream should see, which HTTP/2 sends as
//! `:authority` (as Traefik does with `passHostHeader`), while connections still go to the
//! server.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::Authority;
use http::Uri;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use wasmgate_abi::Body;

use crate::config::{ForwardingTimeouts, ServersTransportConfig};

const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_RESPONSE_HEADER_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_IDLE_CONN_TIMEOUT: Duration = Duration::from_secs(90);
/// Traefik's default: with fewer than the client connections, every request opens and closes an
/// upstream connection (thousands of sockets in TIME-WAIT under load).
const DEFAULT_MAX_IDLE_PER_HOST: usize = 200;
const ALPN_H2: &[u8] = b"h2";
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// How requests reach upstreams: a connection pool per protocol and the timeouts that apply.
pub struct Transport {
    http1: Client<HttpConnector, Body>,
    h2c: Client<HttpConnector, Body>,
    /// TLS toward `https://` servers (`None` when no server of its services needs it).
    tls: Option<Arc<UpstreamTls>>,
    /// The clients of each `https://` server, kept with the transport so a reload keeps their
    /// connections.
    https: Mutex<HashMap<Authority, Arc<HttpsServer>>>,
    connector: HttpConnector,
    idle: Duration,
    max_idle: usize,
    /// How long to wait for a response head, once the request is written, before answering 504.
    pub response_header_timeout: Duration,
    /// How long a response body may go without a byte before it is cut (`idleConnTimeout`;
    /// `None` for `0s`).
    pub body_stall_timeout: Option<Duration>,
}

impl Transport {
    fn new(cfg: &ServersTransportConfig, tls: Option<Arc<UpstreamTls>>) -> Self {
        let t = &cfg.forwarding_timeouts;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(t.dial_timeout.unwrap_or(DEFAULT_DIAL_TIMEOUT)));
        connector.set_nodelay(true);
        let idle = t.idle_conn_timeout.unwrap_or(DEFAULT_IDLE_CONN_TIMEOUT);
        let max_idle = cfg
            .max_idle_conns_per_host
            .unwrap_or(DEFAULT_MAX_IDLE_PER_HOST);
        Transport {
            http1: client_builder(idle, max_idle, false).build(connector.clone()),
            h2c: client_builder(idle, max_idle, true).build(connector.clone()),
            tls,
            https: Mutex::default(),
            connector,
            idle,
            max_idle,
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

    /// Its TLS settings, when it has some.
    pub fn tls(&self) -> Option<&Arc<UpstreamTls>> {
        self.tls.as_ref()
    }

    /// The clients of the `https://` server at `authority` (port 443 when it names none),
    /// created on first use.
    pub fn https_server(&self, authority: &Authority) -> Result<Arc<HttpsServer>, String> {
        let Some(tls) = &self.tls else {
            return Err("https server on a transport without TLS settings".into());
        };
        let mut map = self.https.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = map.get(authority) {
            return Ok(s.clone());
        }
        let host = authority.host();
        let port = authority.port_u16().unwrap_or(443);
        let to: Uri = format!("http://{host}:{port}")
            .parse()
            .map_err(|e| format!("cannot dial {authority}: {e}"))?;
        let name = match &tls.server_name {
            Some(n) => n.clone(),
            None => server_name(host)?,
        };
        let resolver = Arc::new(FixedServerNameResolver::new(name));
        let dial = Dial {
            http: self.connector.clone(),
            to,
        };
        let connector = |config: &Arc<ClientConfig>| {
            HttpsConnector::new(dial.clone(), config.clone(), true, resolver.clone())
        };
        let server = Arc::new(HttpsServer {
            auto: client_builder(self.idle, self.max_idle, false).build(connector(&tls.auto)),
            http1: client_builder(self.idle, self.max_idle, false).build(connector(&tls.http1)),
            hosts: RwLock::default(),
        });
        map.insert(authority.clone(), server.clone());
        Ok(server)
    }
}

fn client_builder(
    idle: Duration,
    max_idle: usize,
    h2c: bool,
) -> hyper_util::client::legacy::Builder {
    let mut b = Client::builder(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(idle)
        .pool_max_idle_per_host(max_idle)
        .http2_only(h2c);
    b
}

/// A hyper client toward one `https://` server.
pub type HttpsClient = Client<HttpsConnector<Dial>, Body>;

/// How many hosts other than its own one `https://` server is sent in its requests' URIs.
/// hyper pools connections by the URI's authority, so each such host has connections of its
/// own: past this many, clients choosing hosts at will would open connections at will.
const MAX_HOSTS_PER_SERVER: usize = 64;

/// The clients of one `https://` server.
pub struct HttpsServer {
    /// HTTP/2 or HTTP/1.1, as the server picks by ALPN (HTTP/1.1 only with `disableHTTP2`).
    auto: HttpsClient,
    /// HTTP/1.1 only (ALPN `http/1.1`): upgrades (WebSocket) need it.
    http1: HttpsClient,
    /// Hosts its requests' URIs have carried (each a pool of connections), at most
    /// [`MAX_HOSTS_PER_SERVER`].
    hosts: RwLock<HashSet<Authority>>,
}

impl HttpsServer {
    /// Whether a request may carry `host` in its URI (so that HTTP/2 sends it as `:authority`),
    /// else it goes with the server's authority and a Host header: true for the first
    /// [`MAX_HOSTS_PER_SERVER`] hosts seen.
    pub fn may_carry(&self, host: &Authority) -> bool {
        let known = self.hosts.read().unwrap_or_else(|p| p.into_inner());
        if known.contains(host) {
            return true;
        }
        let full = known.len() >= MAX_HOSTS_PER_SERVER;
        drop(known);
        if full {
            return false;
        }
        let mut known = self.hosts.write().unwrap_or_else(|p| p.into_inner());
        known.insert(host.clone());
        true
    }

    /// The client for a request: the HTTP/1.1 one for an upgrade.
    pub fn client(&self, upgrade: bool) -> &HttpsClient {
        if upgrade {
            &self.http1
        } else {
            &self.auto
        }
    }
}

impl fmt::Debug for HttpsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpsServer").finish_non_exhaustive()
    }
}

/// A connector that dials one server, whatever the URI it is asked for: the URI of a request to
/// an `https://` server names the host the server should see.
#[derive(Clone)]
pub struct Dial {
    http: HttpConnector,
    to: Uri,
}

impl tower_service::Service<Uri> for Dial {
    type Response = <HttpConnector as tower_service::Service<Uri>>::Response;
    type Error = <HttpConnector as tower_service::Service<Uri>>::Error;
    type Future = <HttpConnector as tower_service::Service<Uri>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx)
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        self.http.call(self.to.clone())
    }
}

/// The name asked for (SNI) and verified, from a URL's host (brackets of IPv6 dropped).
fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(bare.to_string())
        .map_err(|e| format!("{host:?} cannot be a TLS server name: {e}"))
}

/// A servers transport's TLS settings, with the files they name read.
pub struct UpstreamTls {
    /// ALPN `h2` and `http/1.1` (only `http/1.1` with `disableHTTP2`).
    auto: Arc<ClientConfig>,
    /// ALPN `http/1.1`.
    http1: Arc<ClientConfig>,
    /// `serverName`, when given.
    server_name: Option<ServerName<'static>>,
    insecure: bool,
    /// What makes two the same: the settings and the bytes of the files they name.
    digest: [u8; 32],
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .field("insecure", &self.insecure)
            .finish_non_exhaustive()
    }
}

fn ring() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl UpstreamTls {
    /// Reads `cfg`'s TLS settings and files (relative paths against `base`). Errors are
    /// (config path under the transport, message), e.g. `("rootCAs[0]", "...")`.
    pub fn load(
        cfg: &ServersTransportConfig,
        base: &Path,
    ) -> Result<UpstreamTls, Vec<(String, String)>> {
        let mut errors = Vec::new();
        let mut digest = Sha256::new();
        let mut feed = |tag: &str, bytes: &[u8]| {
            digest.update(tag.as_bytes());
            digest.update((bytes.len() as u64).to_le_bytes());
            digest.update(bytes);
        };
        if cfg.peer_cert_uri.is_some() {
            errors.push((
                "peerCertURI".to_string(),
                "not supported by wasmgate (use serverName, or rootCAs of a CA that signs only \
                 this upstream)"
                    .to_string(),
            ));
        }
        let server_name = match &cfg.server_name {
            None => None,
            Some(n) => match server_name(n) {
                Ok(n) => Some(n),
                Err(e) => {
                    errors.push(("serverName".to_string(), e));
                    None
                }
            },
        };
        feed(
            "serverName",
            cfg.server_name.as_deref().unwrap_or("").as_bytes(),
        );
        feed("insecure", &[cfg.insecure_skip_verify as u8]);
        feed("disableHTTP2", &[cfg.disable_http2 as u8]);
        let provider = ring();
        let roots = if cfg.root_cas.is_empty() {
            feed("system roots", &[]);
            system_roots()
        } else {
            let mut roots = RootCertStore::empty();
            for (i, ca) in cfg.root_cas.iter().enumerate() {
                let added = crate::pem::certificates_of(ca, base).and_then(|certs| {
                    certs.into_iter().try_for_each(|c| {
                        feed("root", &c);
                        roots.add(c).map_err(|e| {
                            format!("bad CA certificate in {}: {e}", crate::pem::shown(ca))
                        })
                    })
                });
                if let Err(e) = added {
                    errors.push((format!("rootCAs[{i}]"), e));
                }
            }
            Arc::new(roots)
        };
        let mut keys = Vec::new();
        for (i, c) in cfg.certificates.iter().enumerate() {
            let here = format!("certificates[{i}]");
            let chain = crate::pem::certificates_of(&c.cert_file, base)
                .map_err(|e| errors.push((format!("{here}.certFile"), e)));
            let key = crate::pem::private_key_of(&c.key_file, base)
                .map_err(|e| errors.push((format!("{here}.keyFile"), e)));
            let (Ok(chain), Ok(key)) = (chain, key) else {
                continue;
            };
            chain.iter().for_each(|c| feed("client cert", c));
            feed("client key", key.secret_der());
            match CertifiedKey::from_der(chain, key, &provider) {
                Ok(k) => keys.push(Arc::new(k)),
                Err(e) => errors.push((
                    format!("{here}.keyFile"),
                    format!(
                        "{} does not go with {}: {e}",
                        crate::pem::shown(&c.key_file),
                        crate::pem::shown(&c.cert_file)
                    ),
                )),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let config = |alpn: &[&[u8]]| -> Result<Arc<ClientConfig>, String> {
            let builder = ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS versions: {e}"))?;
            let builder = if cfg.insecure_skip_verify {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(NoVerification(provider.clone())))
            } else {
                builder.with_root_certificates(roots.clone())
            };
            let mut config = if keys.is_empty() {
                builder.with_no_client_auth()
            } else {
                builder.with_client_cert_resolver(Arc::new(ClientCerts(keys.clone())))
            };
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(Arc::new(config))
        };
        let auto_alpn: &[&[u8]] = if cfg.disable_http2 {
            &[ALPN_HTTP1]
        } else {
            &[ALPN_H2, ALPN_HTTP1]
        };
        let (auto, http1) = match (config(auto_alpn), config(&[ALPN_HTTP1])) {
            (Ok(a), Ok(h)) => (a, h),
            (Err(e), _) | (_, Err(e)) => return Err(vec![(String::new(), e)]),
        };
        Ok(UpstreamTls {
            auto,
            http1,
            server_name,
            insecure: cfg.insecure_skip_verify,
            digest: digest.finalize().into(),
        })
    }
}

/// A connector for health checks: `http://` URIs go in clear, `https://` ones with `tls`'s
/// settings (SNI: `serverName`, or the URI's host). Without `tls` (no server or check of the
/// service is https) it trusts no certificate.
pub fn check_connector(
    tls: Option<&UpstreamTls>,
    mut http: HttpConnector,
) -> HttpsConnector<HttpConnector> {
    // The TLS connector hands it `https://` URIs to dial.
    http.enforce_http(false);
    let Some(tls) = tls else {
        let config = ClientConfig::builder_with_provider(ring())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth();
        return HttpsConnector::from((http, config));
    };
    match &tls.server_name {
        Some(n) => HttpsConnector::new(
            http,
            tls.auto.clone(),
            false,
            Arc::new(FixedServerNameResolver::new(n.clone())),
        ),
        None => HttpsConnector::from((http, tls.auto.clone())),
    }
}

/// The system's trusted roots, read once per process. None found is not an error here: servers
/// then fail verification (502) and the log says why.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!("reading the system's root certificates: {e}");
            }
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                tracing::warn!(
                    "no system root certificates found: https servers of a serversTransport \
                     without rootCAs will fail certificate verification (502)"
                );
            }
            Arc::new(roots)
        })
        .clone()
}

/// `insecureSkipVerify`: any certificate for any name. Handshake signatures are still checked,
/// so the peer holds the key of the certificate it sent.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `certificates`: as Go's TLS client, the first one whose key can sign with a scheme the
/// server accepts.
#[derive(Debug)]
struct ClientCerts(Vec<Arc<CertifiedKey>>);

impl rustls::client::ResolvesClientCert for ClientCerts {
    fn resolve(&self, _: &[&[u8]], sigschemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0
            .iter()
            .find(|k| k.key.choose_scheme(sigschemes).is_some())
            .cloned()
    }

    fn has_certs(&self) -> bool {
        !self.0.is_empty()
    }
}

/// Says what went wrong when a TLS handshake with an upstream failed (`None` for other errors):
/// rustls's error sits inside `io::Error`s (wrapped twice over) somewhere down `e`'s sources.
pub fn tls_failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(match tls {
                rustls::Error::InvalidCertificate(_) => {
                    format!("certificate verification failed: {tls}")
                }
                _ => format!("TLS failed: {tls}"),
            });
        }
        // An io::Error's source() skips the error it wraps: go into it instead.
        next = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

/// What makes two transports the same: timeouts, pool size and TLS settings with their files.
type TransportKey = (ForwardingTimeouts, Option<usize>, Option<[u8; 32]>);

/// Transports by settings, so a reload that keeps the settings keeps the pooled connections.
/// TLS files are read at every snapshot build; a transport is kept only while their bytes are
/// the same (a renewed certificate gets new connections). Held weakly: a transport no snapshot
/// uses any more goes, with its connections (a reload builds while the old snapshot still
/// holds its transports, so those it keeps are found here).
#[derive(Default)]
pub struct TransportCache {
    by_settings: Mutex<HashMap<TransportKey, Weak<Transport>>>,
}

impl TransportCache {
    /// The transport for these settings (and TLS settings, when `https://` servers need them),
    /// created on first use.
    pub fn get(
        &self,
        cfg: &ServersTransportConfig,
        tls: Option<Arc<UpstreamTls>>,
    ) -> Arc<Transport> {
        let key = (
            cfg.forwarding_timeouts.clone(),
            cfg.max_idle_conns_per_host,
            tls.as_ref().map(|t| t.digest),
        );
        let mut map = self.by_settings.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = map.get(&key).and_then(Weak::upgrade) {
            return t;
        }
        map.retain(|_, t| t.strong_count() > 0);
        if tls.as_ref().is_some_and(|t| t.insecure) {
            tracing::warn!("insecureSkipVerify: certificates of https servers are not verified");
        }
        let transport = Arc::new(Transport::new(cfg, tls));
        map.insert(key, Arc::downgrade(&transport));
        transport
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CertificateFiles;

    fn ca_pem(name: &str) -> (String, rcgen::KeyPair, rcgen::CertificateParams) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key, params)
    }

    fn errors_of(cfg: &ServersTransportConfig, base: &Path) -> Vec<(String, String)> {
        UpstreamTls::load(cfg, base).expect_err("errors")
    }

    #[test]
    fn tls_settings_are_keyed_by_the_bytes_of_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _, _) = ca_pem("a");
        std::fs::write(dir.path().join("ca.pem"), &a).unwrap();
        let cfg = ServersTransportConfig {
            root_cas: vec!["ca.pem".into()],
            ..Default::default()
        };
        let first = UpstreamTls::load(&cfg, dir.path()).unwrap().digest;
        assert_eq!(UpstreamTls::load(&cfg, dir.path()).unwrap().digest, first);
        // The same CA as inline PEM (as Traefik allows): the same contents, the same key.
        let inline = ServersTransportConfig {
            root_cas: vec![a.clone()],
            ..Default::default()
        };
        assert_eq!(
            UpstreamTls::load(&inline, dir.path()).unwrap().digest,
            first
        );
        // New file contents, or other settings: another key.
        let (b, _, _) = ca_pem("b");
        std::fs::write(dir.path().join("ca.pem"), &b).unwrap();
        assert_ne!(UpstreamTls::load(&cfg, dir.path()).unwrap().digest, first);
        let h1 = ServersTransportConfig {
            disable_http2: true,
            ..inline
        };
        assert_ne!(UpstreamTls::load(&h1, dir.path()).unwrap().digest, first);
    }

    #[test]
    fn bad_settings_are_reported_at_their_paths() {
        let dir = tempfile::tempdir().unwrap();
        let (_, ca_key, ca_params) = ca_pem("a");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf = |name: &str| {
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(vec![name.to_string()])
                .unwrap()
                .signed_by(&key, &issuer)
                .unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (cert, _) = leaf("c.test");
        let (_, other_key) = leaf("d.test");
        std::fs::write(dir.path().join("c.crt"), &cert).unwrap();
        let cfg = ServersTransportConfig {
            server_name: Some("not a name!".into()),
            root_cas: vec!["missing.pem".into()],
            certificates: vec![
                CertificateFiles {
                    cert_file: "c.crt".into(),
                    key_file: other_key,
                },
                CertificateFiles {
                    cert_file: "-----BEGIN NOTHING-----\nAAAA\n-----END NOTHING-----\n".into(),
                    key_file: "nokey.pem".into(),
                },
            ],
            ..Default::default()
        };
        let errors = errors_of(&cfg, dir.path());
        let paths: Vec<&str> = errors.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "serverName",
                "rootCAs[0]",
                "certificates[0].keyFile",
                "certificates[1].certFile",
                "certificates[1].keyFile"
            ],
            "{errors:?}"
        );
        assert!(errors[1].1.contains("missing.pem"), "{errors:?}");
        assert!(
            errors[2]
                .1
                .contains("the inline PEM does not go with c.crt"),
            "{errors:?}"
        );
    }
}
