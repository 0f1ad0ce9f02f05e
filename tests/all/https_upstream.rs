//! `https://` servers: a real TLS upstream (its own CA, certificates made at test time) behind
//! wasmgate, with Traefik's `serversTransports` TLS settings; HTTP/2 or HTTP/1.1 by ALPN, SNI,
//! mTLS, an upgrade over TLS, a bad CA file at load, health checks over https.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wasmgate::service::transport::UpstreamTls;
use wasmgate::service::{LoadBalancer, Server, TransportCache};
use wasmgate_abi::Endpoint;

use crate::certs::{CertFiles, TestCa};
use crate::common::*;

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What the TLS upstream saw of one connection.
#[derive(Clone)]
struct Seen {
    sni: String,
    alpn: String,
    client_cn: String,
}

/// The common name of a certificate's subject: the subject comes after the issuer in the DER,
/// so it is the last CN attribute (OID 2.5.4.3, then a string).
fn subject_cn(der: &[u8]) -> String {
    const CN_OID: &[u8] = &[0x06, 0x03, 0x55, 0x04, 0x03];
    let at = der
        .windows(CN_OID.len())
        .rposition(|w| w == CN_OID)
        .expect("a CN");
    let len = der[at + 6] as usize;
    String::from_utf8_lossy(&der[at + 7..at + 7 + len]).into_owned()
}

/// A TLS upstream with `cert`, offering h2 and http/1.1 by ALPN; with `client_ca`, it requires
/// a client certificate that CA signed. It answers with what it saw (protocol version, SNI,
/// ALPN, client CN, `:authority` and Host); `/health` answers 503 while `sick` holds; a request
/// to `Upgrade: echo` is switched and echoed back.
async fn tls_upstream(cert: &CertFiles, client_ca: Option<&Path>) -> Upstream {
    let chain = wasmgate::pem::certificates(&cert.cert).unwrap();
    let key = wasmgate::pem::private_key(&cert.key).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in wasmgate::pem::certificates(ca).unwrap() {
                roots.add(c).unwrap();
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), ring())
                    .build()
                    .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sick = Arc::new(AtomicBool::new(false));
    let handshakes = Arc::new(AtomicUsize::new(0));
    let (sick2, handshakes2) = (sick.clone(), handshakes.clone());
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (acceptor, sick) = (acceptor.clone(), sick2.clone());
            let handshakes = handshakes2.clone();
            tokio::spawn(async move {
                // A failed handshake is one of the cases under test: nothing to serve.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                handshakes.fetch_add(1, Ordering::SeqCst);
                let conn = tls.get_ref().1;
                let seen = Seen {
                    sni: conn.server_name().unwrap_or("none").to_string(),
                    alpn: conn
                        .alpn_protocol()
                        .map(|p| String::from_utf8_lossy(p).into_owned())
                        .unwrap_or_else(|| "none".into()),
                    client_cn: conn
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c: &CertificateDer| subject_cn(c))
                        .unwrap_or_else(|| "none".into()),
                };
                let svc = hyper::service::service_fn(move |req| {
                    answer(req, seen.clone(), sick.load(Ordering::SeqCst))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Upstream {
        addr,
        sick,
        handshakes,
    }
}

/// A TLS upstream started by [`tls_upstream`].
struct Upstream {
    addr: SocketAddr,
    /// `/health` answers 503 while it holds.
    sick: Arc<AtomicBool>,
    /// TLS handshakes completed.
    handshakes: Arc<AtomicUsize>,
}

async fn answer(
    mut req: hyper::Request<hyper::body::Incoming>,
    seen: Seen,
    sick: bool,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    if req.headers().get("upgrade").is_some_and(|u| u == "echo") {
        let upgraded = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = upgraded.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 64];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let resp = hyper::Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "echo")
            .header("x-version", format!("{:?}", req.version()))
            .body(Full::default())
            .unwrap();
        return Ok(resp);
    }
    if req.uri().path() == "/health" && sick {
        let mut resp = hyper::Response::new(Full::new(Bytes::from_static(b"sick")));
        *resp.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
        return Ok(resp);
    }
    let host = req
        .headers()
        .get("host")
        .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        .unwrap_or_else(|| "none".into());
    let authority = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "none".into());
    let body = format!(
        "version={:?} sni={} alpn={} client={} authority={authority} host={host} path={}",
        req.version(),
        seen.sni,
        seen.alpn,
        seen.client_cn,
        req.uri().path()
    );
    Ok(hyper::Response::new(Full::new(Bytes::from(body))))
}

/// An install file (routing inline) with one service `up` on `url`, using servers transport
/// `t` with `transport` (YAML lines under `t:`, indented 6).
fn install(url: &str, transport: &str) -> String {
    inline_config(&format!(
        "http:\n  routers:\n    r: {{ rule: \"PathPrefix(`/`)\", service: up }}\n  services:\n    up:\n      loadBalancer:\n        serversTransport: t\n        servers: [{{ url: \"{url}\" }}]\n  serversTransports:\n    t:\n      forwardingTimeouts: {{ dialTimeout: 5s }}\n{transport}"
    ))
}

/// A fresh dir holding the test CA as `ca.pem` and an upstream certificate for `names`.
fn certs(names: &[&str]) -> (tempfile::TempDir, TestCa, CertFiles) {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("wasmgate test CA");
    ca.write_ca(dir.path(), "ca.pem");
    let cert = ca.server(dir.path(), "upstream", names);
    (dir, ca, cert)
}

/// Starts wasmgate in `dir` with `install` as its install file.
async fn start_with(dir: tempfile::TempDir, install: &str) -> TestServer {
    std::fs::write(dir.path().join("wasmgate.yaml"), install).unwrap();
    start_in(dir).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_with_its_ca_speaks_h2_by_alpn_unless_disabled() {
    let (dir, _ca, cert) = certs(&["127.0.0.1"]);
    let up = tls_upstream(&cert, None).await.addr;
    // A relative rootCAs path: against the directory of the file holding the routing.
    let t = start_with(
        dir,
        &install(&format!("https://{up}"), "      rootCAs: [ca.pem]\n"),
    )
    .await;
    let r = send(get(t.url("/x")).header("host", "app.test")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // HTTP/2 chosen by ALPN; the client's Host (passHostHeader) is the :authority, and no
    // Host header goes beside it.
    assert!(r.body.starts_with("version=HTTP/2.0 "), "{}", r.body);
    assert!(r.body.contains("alpn=h2"), "{}", r.body);
    assert!(
        r.body.contains("authority=app.test host=none"),
        "{}",
        r.body
    );
    // An IP address is not sent as SNI.
    assert!(r.body.contains("sni=none"), "{}", r.body);
    // An HTTP/2 client too.
    let r = send_with(get(t.url("/x")).header("host", "app.test"), true).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("authority=app.test"), "{}", r.body);

    let (dir, _ca, cert) = certs(&["127.0.0.1"]);
    let up = tls_upstream(&cert, None).await.addr;
    let t = start_with(
        dir,
        &install(
            &format!("https://{up}"),
            "      rootCAs: [ca.pem]\n      disableHTTP2: true\n",
        ),
    )
    .await;
    let r = send(get(t.url("/x")).header("host", "app.test")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.starts_with("version=HTTP/1.1 "), "{}", r.body);
    assert!(r.body.contains("alpn=http/1.1"), "{}", r.body);
    assert!(r.body.contains("host=app.test"), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_ca_fails_verification_unless_verification_is_skipped() {
    let (dir, _ca, cert) = certs(&["127.0.0.1"]);
    let up = tls_upstream(&cert, None).await.addr;
    // No TLS settings: the system's roots, which do not know the test CA.
    let t = start_with(dir, &install(&format!("https://{up}"), "")).await;
    let r = send(get(t.url("/"))).await;
    assert_eq!(r.status, 502, "{}", r.body);

    // What the 502 says (logged; the client gets only the status).
    let cfg = wasmgate::config::ServersTransportConfig::default();
    let tls = UpstreamTls::load(&cfg, Path::new(".")).unwrap();
    let transport = TransportCache::default().get(&cfg, Some(Arc::new(tls)));
    let mut server = Server::parse(&format!("https://{up}"), 1).unwrap();
    server.attach(&transport).unwrap();
    let lb = LoadBalancer::new(vec![server], true, transport);
    let req = wasmgate_abi::Request::new(
        http::Method::GET,
        "/".parse().unwrap(),
        "127.0.0.1:1".parse().unwrap(),
    );
    let err = lb.call(req).await.expect_err("a failure");
    assert_eq!(err.status, 502, "{err}");
    assert!(
        err.to_string().contains("certificate verification failed"),
        "{err}"
    );

    let (dir, _ca, cert) = certs(&["127.0.0.1"]);
    let up = tls_upstream(&cert, None).await.addr;
    let t = start_with(
        dir,
        &install(&format!("https://{up}"), "      insecureSkipVerify: true\n"),
    )
    .await;
    let r = send(get(t.url("/"))).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_name_is_the_name_asked_for_and_verified() {
    let (dir, _ca, cert) = certs(&["upstream.test"]);
    let up = tls_upstream(&cert, None).await.addr;
    let t = start_with(
        dir,
        &install(
            &format!("https://{up}"),
            "      rootCAs: [ca.pem]\n      serverName: upstream.test\n",
        ),
    )
    .await;
    let r = send(get(t.url("/"))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("sni=upstream.test"), "{}", r.body);

    // Without it, the certificate is checked against 127.0.0.1, which it does not name.
    let (dir, _ca, cert) = certs(&["upstream.test"]);
    let up = tls_upstream(&cert, None).await.addr;
    let t = start_with(
        dir,
        &install(&format!("https://{up}"), "      rootCAs: [ca.pem]\n"),
    )
    .await;
    let r = send(get(t.url("/"))).await;
    assert_eq!(r.status, 502, "{}", r.body);
}

/// wasmgate in front of an upstream that requires a client certificate of its CA, with
/// `certificates` of the transport as given (YAML lines, or none); the client certificates
/// `gateway` (of that CA) and `stranger` (of another) are in the directory.
async fn behind_mtls(certificates: &str) -> TestServer {
    let (dir, ca, cert) = certs(&["127.0.0.1"]);
    ca.client(dir.path(), "gateway", "gateway-client");
    TestCa::new("another CA").client(dir.path(), "stranger", "stranger");
    let up = tls_upstream(&cert, Some(&dir.path().join("ca.pem")))
        .await
        .addr;
    let transport = format!("      rootCAs: [ca.pem]\n{certificates}");
    start_with(dir, &install(&format!("https://{up}"), &transport)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_requires_a_client_certificate_gets_it() {
    let t = behind_mtls("").await;
    let r = send(get(t.url("/"))).await;
    assert_eq!(r.status, 502, "no client certificate: {}", r.body);

    let t = behind_mtls(
        "      certificates:\n        - { certFile: gateway.crt, keyFile: gateway.key }\n",
    )
    .await;
    for h2 in [false, true] {
        let r = send_with(get(t.url("/")), h2).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.body.contains("client=gateway-client"), "{}", r.body);
    }

    let t = behind_mtls(
        "      certificates:\n        - { certFile: stranger.crt, keyFile: stranger.key }\n",
    )
    .await;
    let r = send(get(t.url("/"))).await;
    assert_eq!(r.status, 502, "a certificate of another CA: {}", r.body);
}

#[test]
fn a_bad_tls_file_is_a_load_error_at_its_line() {
    let (dir, ca, _cert) = certs(&["127.0.0.1"]);
    std::fs::write(dir.path().join("bad.pem"), "not a certificate\n").unwrap();
    let client = ca.client(dir.path(), "gateway", "gateway-client");
    // A key that does not go with the certificate.
    let wrong_key = ca.client(dir.path(), "other", "other").key;
    let text = install(
        "https://127.0.0.1:1",
        &format!(
            "      rootCAs:\n        - ca.pem\n        - bad.pem\n      certificates:\n        - certFile: {}\n          keyFile: {}\n      peerCertURI: spiffe://x\n",
            client.cert.display(),
            wrong_key.display()
        ),
    );
    let file = dir.path().join("wasmgate.yaml");
    std::fs::write(&file, &text).unwrap();
    let err = load(&file).err().expect("a load error").to_string();
    let line_of = |needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let at = format!(
        "wasmgate.yaml:{}:{}: http.serversTransports.t.rootCAs[1]: ",
        line_of("- bad.pem"),
        11
    );
    assert!(err.contains(&at), "want {at:?} in:\n{err}");
    assert!(err.contains("bad.pem holds no PEM certificate"), "{err}");
    let at = format!(
        "wasmgate.yaml:{}:11: http.serversTransports.t.certificates[0].keyFile: ",
        line_of("keyFile:")
    );
    assert!(err.contains(&at), "want {at:?} in:\n{err}");
    assert!(err.contains("does not go with"), "{err}");
    assert!(
        err.contains("http.serversTransports.t.peerCertURI: not supported"),
        "{err}"
    );
    assert!(!err.contains("rootCAs[0]"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_to_an_https_upstream_goes_over_http1() {
    let (dir, _ca, cert) = certs(&["127.0.0.1"]);
    let up = tls_upstream(&cert, None).await.addr;
    // h2 is offered by default: the upgrade still goes over HTTP/1.1.
    let t = start_with(
        dir,
        &install(&format!("https://{up}"), "      rootCAs: [ca.pem]\n"),
    )
    .await;
    let mut s = TcpStream::connect(t.addr).await.unwrap();
    s.write_all(b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte))
            .await
            .expect("a head")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("x-version: http/1.1"), "{head}");
    s.write_all(b"over tls").await.unwrap();
    let mut back = [0u8; 8];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
        .await
        .expect("echoed")
        .unwrap();
    assert_eq!(&back, b"over tls");
    // A plain request to the same upstream still gets HTTP/2.
    let r = send(get(t.url("/"))).await;
    assert!(r.body.starts_with("version=HTTP/2.0 "), "{}", r.body);
}

/// Which servers (base paths) answer 10 requests: the statuses and paths seen.
async fn answering(t: &TestServer) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..10 {
        let r = send(get(t.url("/"))).await;
        let path = r
            .body
            .split(' ')
            .find(|w| w.starts_with("path="))
            .unwrap_or("");
        seen.push(format!("{} {path}", r.status));
    }
    seen.sort();
    seen.dedup();
    seen
}

/// Waits (5 s at most) until `want` answer.
async fn until_answering(t: &TestServer, want: &[&str]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let seen = answering(t).await;
        if seen == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {seen:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_go_over_https() {
    let (dir, _ca, cert) = certs(&["upstream.test"]);
    let a = tls_upstream(&cert, None).await.addr;
    let b_up = tls_upstream(&cert, None).await;
    let (b, b_sick) = (b_up.addr, b_up.sick);
    let text = inline_config(&format!(
        "http:\n  routers:\n    r: {{ rule: \"PathPrefix(`/`)\", service: up }}\n  services:\n    up:\n      loadBalancer:\n        serversTransport: t\n        servers: [{{ url: \"https://{a}/a\" }}, {{ url: \"https://{b}/b\" }}]\n        healthCheck: {{ path: /health, interval: 100ms, timeout: 2s, scheme: https }}\n  serversTransports:\n    t:\n      rootCAs: [ca.pem]\n      serverName: upstream.test\n"
    ));
    let t = start_with(dir, &text).await;
    until_answering(&t, &["200 path=/a/", "200 path=/b/"]).await;
    // b's check fails: out of rotation. a's checks keep passing over TLS (were they failing,
    // the answer would be 503).
    b_sick.store(true, Ordering::SeqCst);
    until_answering(&t, &["200 path=/a/"]).await;
    b_sick.store(false, Ordering::SeqCst);
    until_answering(&t, &["200 path=/a/", "200 path=/b/"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_of_https_servers_fail_on_an_unknown_ca() {
    // No scheme: the servers' own (https). No rootCAs: the system's, which do not know the
    // test CA, so every check fails and the service answers 503.
    let (dir, _ca, cert) = certs(&["127.0.0.1"]);
    let a = tls_upstream(&cert, None).await.addr;
    let text = inline_config(&format!(
        "http:\n  routers:\n    r: {{ rule: \"PathPrefix(`/`)\", service: up }}\n  services:\n    up:\n      loadBalancer:\n        servers: [{{ url: \"https://{a}/a\" }}]\n        healthCheck: {{ path: /health, interval: 100ms, timeout: 2s }}\n"
    ));
    let t = start_with(dir, &text).await;
    until_answering(&t, &["503 "]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_files_are_read_again_at_reload() {
    let (dir, _ca, _) = certs(&[]);
    // The upstream's certificate is of another CA than ca.pem.
    let other = TestCa::new("the upstream's CA");
    let up = tls_upstream(&other.server(dir.path(), "up", &["127.0.0.1"]), None).await;
    let t = start_with(
        dir,
        &install(&format!("https://{}", up.addr), "      rootCAs: [ca.pem]\n"),
    )
    .await;
    assert_eq!(send(get(t.url("/"))).await.status, 502);
    other.write_ca(t.dir.path(), "ca.pem");
    t.gateway.reload_routing().unwrap();
    assert_eq!(send(get(t.url("/"))).await.status, 200);
    assert_eq!(up.handshakes.load(Ordering::SeqCst), 1);
    // A reload with the same files keeps the transport, and its pooled connection.
    t.gateway.reload_routing().unwrap();
    let r = send(get(t.url("/"))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(up.handshakes.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_a_server_is_sent_as_authority_are_bounded() {
    let (dir, _ca, cert) = certs(&["127.0.0.1"]);
    let up = tls_upstream(&cert, None).await;
    let t = start_with(
        dir,
        &install(&format!("https://{}", up.addr), "      rootCAs: [ca.pem]\n"),
    )
    .await;
    // Each host sent as :authority has an HTTP/2 connection of its own (hyper pools by the
    // URI's authority): 64 such hosts, then the server's own connection, with a Host header.
    for i in 0..70 {
        let host = format!("h{i}.test");
        let r = send(get(t.url("/")).header("host", &host)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let want = if i < 64 {
            format!("authority={host} host=none")
        } else {
            format!("authority={} host={host}", up.addr)
        };
        assert!(r.body.contains(&want), "{i}: want {want:?} in {}", r.body);
    }
    assert_eq!(up.handshakes.load(Ordering::SeqCst), 65);
}
