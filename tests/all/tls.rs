//! TLS termination: certificates chosen by SNI, HTTP/1.1 and HTTP/2 by ALPN, TLS and plain
//! routers on one entry point, options (versions, sniStrict, mTLS), config errors with lines,
//! and certificates reloading with the routing file. Real handshakes over loopback, with
//! certificates generated at test time.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use crate::certs::{CertFiles, TestCa};
use crate::common::*;

/// How a TLS test client connects.
struct Client<'a> {
    ca: &'a TestCa,
    sni: &'a str,
    alpn: &'a [&'a str],
    client_cert: Option<&'a CertFiles>,
    tls12_only: bool,
}

impl<'a> Client<'a> {
    fn new(ca: &'a TestCa, sni: &'a str) -> Self {
        Client {
            ca,
            sni,
            alpn: &["http/1.1"],
            client_cert: None,
            tls12_only: false,
        }
    }

    fn config(&self) -> rustls::ClientConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(self.ca.cert_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let versions: &[&rustls::SupportedProtocolVersion] = if self.tls12_only {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match self.client_cert {
            Some(files) => builder
                .with_client_auth_cert(
                    wasmgate::pem::certificates(&files.cert).unwrap(),
                    wasmgate::pem::private_key(&files.key).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        config
    }

    /// GETs `path` over TLS; the reply, the HTTP version and the certificate the server showed.
    async fn get(&self, addr: SocketAddr, path: &str) -> Result<Fetched, String> {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(self.config()));
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let name = ServerName::try_from(self.sni.to_string()).unwrap();
        let tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
            .await
            .map_err(|_| "handshake hung".to_string())?
            .map_err(|e| format!("handshake: {e}"))?;
        let (_, session) = tls.get_ref();
        let presented = session.peer_certificates().unwrap()[0].clone().into_owned();
        let h2 = session.alpn_protocol() == Some(b"h2");
        let request = hyper::Request::get(path)
            .header("host", self.sni)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let io = TokioIo::new(tls);
        let response = if h2 {
            let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            // HTTP/2 requests carry the authority in the URI.
            let (mut parts, body) = request.into_parts();
            parts.uri = format!("https://{}{path}", self.sni).parse().unwrap();
            parts.headers.remove("host");
            send.send_request(hyper::Request::from_parts(parts, body))
                .await
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            send.send_request(request).await
        };
        let response = tokio::time::timeout(Duration::from_secs(10), async {
            response.map_err(|e| format!("request: {e}"))
        })
        .await
        .map_err(|_| "request hung".to_string())??;
        let version = response.version();
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok(Fetched {
            status,
            version,
            body: String::from_utf8_lossy(&body).into_owned(),
            presented,
        })
    }
}

struct Fetched {
    status: u16,
    version: http::Version,
    body: String,
    presented: CertificateDer<'static>,
}

/// The leaf certificate in a PEM file, to compare with what a server presented.
fn leaf(files: &CertFiles) -> CertificateDer<'static> {
    wasmgate::pem::certificates(&files.cert).unwrap().remove(0)
}

/// Certificates of the tests: `a.test`, `*.b.test` and a default one, signed by one CA.
struct Certs {
    ca: TestCa,
    a: CertFiles,
    wild: CertFiles,
    default: CertFiles,
}

fn certs(dir: &Path) -> Certs {
    let ca = TestCa::new("wasmgate test CA");
    ca.write_ca(dir, "ca.crt");
    Certs {
        a: ca.server(dir, "a", &["a.test"]),
        wild: ca.server(dir, "wild", &["*.b.test"]),
        default: ca.server(dir, "default", &["default.test"]),
        ca,
    }
}

const INSTALL: &str = "entryPoints:\n  web:\n    address: \"127.0.0.1:0\"\nproviders:\n  file:\n    filename: routing.yaml\n";

/// A TLS router and a plain one on the same entry point, marking the request with their name.
const ROUTING: &str = r#"http:
  routers:
    secure:
      rule: "PathPrefix(`/`)"
      middlewares: [mark-secure]
      service: echo@internal
      tls: {}
    plain:
      rule: "PathPrefix(`/`)"
      middlewares: [mark-plain]
      service: echo@internal
  middlewares:
    mark-secure: { headers: { customRequestHeaders: { X-Router: secure } } }
    mark-plain: { headers: { customRequestHeaders: { X-Router: plain } } }
tls:
  certificates:
    - certFile: a.crt
      keyFile: a.key
    - { certFile: wild.crt, keyFile: wild.key, stores: [default] }
  stores:
    default:
      defaultCertificate: { certFile: default.crt, keyFile: default.key }
"#;

async fn start_tls(routing: &str, install: &str) -> (TestServer, Certs) {
    let dir = write_files(&[("wasmgate.yaml", install), ("routing.yaml", routing)]);
    let certs = certs(dir.path());
    (start_in(dir).await, certs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_by_sni_http1_and_h2_and_plain_routers_beside() {
    let (t, c) = start_tls(ROUTING, INSTALL).await;
    // HTTP/1.1 by ALPN, the exact name's certificate.
    let got = Client::new(&c.ca, "a.test")
        .get(t.addr, "/x")
        .await
        .unwrap();
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.version, http::Version::HTTP_11);
    assert_eq!(got.presented, leaf(&c.a));
    assert!(
        got.body.to_lowercase().contains("\nx-router: secure\n"),
        "{}",
        got.body
    );
    assert!(
        got.body
            .to_lowercase()
            .contains("\nx-forwarded-proto: https\n"),
        "{}",
        got.body
    );
    // HTTP/2 by ALPN, a wildcard's certificate.
    let mut h2 = Client::new(&c.ca, "api.b.test");
    h2.alpn = &["h2", "http/1.1"];
    let got = h2.get(t.addr, "/y").await.unwrap();
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.version, http::Version::HTTP_2);
    assert_eq!(got.presented, leaf(&c.wild));
    assert!(
        got.body.to_lowercase().contains("\nx-router: secure\n"),
        "{}",
        got.body
    );
    // A name no certificate has: the default certificate (the client, trusting only the CA,
    // then refuses it for the name: the handshake fails on the client's side).
    let e = Client::new(&c.ca, "other.test")
        .get(t.addr, "/")
        .await
        .err();
    assert!(
        e.as_deref().is_some_and(|e| e.contains("handshake")),
        "{e:?}"
    );
    // The wildcard covers one label only.
    let e = Client::new(&c.ca, "x.y.b.test")
        .get(t.addr, "/")
        .await
        .err();
    assert!(e.is_some());
    // Plain HTTP on the same port reaches the router without tls, never the TLS one.
    let r = send(get(t.url("/z"))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.to_lowercase().contains("\nx-router: plain\n"),
        "{}",
        r.body
    );
    assert!(
        r.body
            .to_lowercase()
            .contains("\nx-forwarded-proto: http\n"),
        "{}",
        r.body
    );
}

/// What the default certificate is: presented for an unknown name unless `sniStrict`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_certificate_and_sni_strict() {
    let (t, c) = start_tls(ROUTING, INSTALL).await;
    let shown = presented_cert(t.addr, "unknown.test").await;
    assert_eq!(shown, Some(leaf(&c.default)));
    let strict = ROUTING.replace(
        "tls:\n  certificates:",
        "tls:\n  options:\n    default: { sniStrict: true }\n  certificates:",
    );
    let (t, c) = start_tls(&strict, INSTALL).await;
    assert_eq!(presented_cert(t.addr, "unknown.test").await, None);
    assert_eq!(presented_cert(t.addr, "a.test").await, Some(leaf(&c.a)));
}

/// The certificate a server presents for `sni`, read by a client that accepts any.
async fn presented_cert(addr: SocketAddr, sni: &str) -> Option<CertificateDer<'static>> {
    #[derive(Debug)]
    struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .expect("handshake hung")
        .ok()?;
    Some(tls.get_ref().1.peer_certificates()?[0].clone().into_owned())
}

/// An entry point's `http.tls` makes every router there TLS; its options set versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entry_point_tls_with_minimum_version() {
    let install = INSTALL.replace(
        "    address: \"127.0.0.1:0\"\n",
        "    address: \"127.0.0.1:0\"\n    http:\n      tls:\n        options: modern\n",
    );
    let routing = r#"http:
  routers:
    r: { rule: "PathPrefix(`/`)", service: echo@internal }
tls:
  certificates:
    - { certFile: a.crt, keyFile: a.key }
  options:
    modern: { minVersion: VersionTLS13 }
"#;
    let (t, c) = start_tls(routing, &install).await;
    let got = Client::new(&c.ca, "a.test").get(t.addr, "/").await.unwrap();
    assert_eq!(got.status, 200);
    let mut old = Client::new(&c.ca, "a.test");
    old.tls12_only = true;
    let e = old.get(t.addr, "/").await.err().expect("TLS 1.2 refused");
    assert!(e.contains("handshake"), "{e}");
    // The router is TLS only: plain HTTP finds no router.
    assert_eq!(send(get(t.url("/"))).await.status, 404);
}

/// `clientAuth`: a client certificate signed by the CA is required, or checked if given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls() {
    for (kind, anonymous_ok) in [
        ("RequireAndVerifyClientCert", false),
        ("VerifyClientCertIfGiven", true),
    ] {
        let routing = format!(
            "http:\n  routers:\n    r: {{ rule: \"PathPrefix(`/`)\", service: echo@internal, tls: {{ options: mtls }} }}\ntls:\n  certificates:\n    - {{ certFile: a.crt, keyFile: a.key }}\n  options:\n    mtls:\n      clientAuth:\n        caFiles: [ca.crt]\n        clientAuthType: {kind}\n"
        );
        let (t, c) = start_tls(&routing, INSTALL).await;
        let anonymous = Client::new(&c.ca, "a.test").get(t.addr, "/").await;
        assert_eq!(
            anonymous.is_ok(),
            anonymous_ok,
            "{kind}: {:?}",
            anonymous.err()
        );
        let client = c.ca.client(t.dir.path(), "client", "client-one");
        let mut with = Client::new(&c.ca, "a.test");
        with.client_cert = Some(&client);
        let got = with.get(t.addr, "/").await.unwrap();
        assert_eq!(got.status, 200, "{kind}");
        // A certificate from another CA is refused.
        let stranger = TestCa::new("stranger").client(t.dir.path(), "stranger", "x");
        let mut bad = Client::new(&c.ca, "a.test");
        bad.client_cert = Some(&stranger);
        assert!(bad.get(t.addr, "/").await.is_err(), "{kind}");
    }
}

/// A bad key, a key of another certificate, unknown options and unsupported settings are
/// config errors naming the file, the line and the config path.
#[test]
fn bad_tls_configuration_names_file_line_and_path() {
    let dir = write_files(&[("wasmgate.yaml", INSTALL), ("routing.yaml", ROUTING)]);
    let _c = certs(dir.path());
    std::fs::write(dir.path().join("a.key"), "not a key\n").unwrap();
    // The other certificate's key, for the wildcard one.
    std::fs::copy(dir.path().join("default.key"), dir.path().join("wild.key")).unwrap();
    let errors = load(&dir.path().join("wasmgate.yaml"))
        .err()
        .expect("must fail");
    let text = errors.to_string();
    let a = errors
        .0
        .iter()
        .find(|e| e.path == "tls.certificates[0].keyFile")
        .unwrap_or_else(|| panic!("{text}"));
    assert!(a.file.ends_with("routing.yaml"), "{text}");
    assert!(a.message.contains("no usable private key"), "{text}");
    assert_eq!(a.position.map(|p| p.0), Some(18), "{text}");
    let w = errors
        .0
        .iter()
        .find(|e| e.path == "tls.certificates[1].keyFile")
        .unwrap_or_else(|| panic!("{text}"));
    assert!(w.message.contains("is not the key of wild.crt"), "{text}");

    let routing = ROUTING
        .replace("      tls: {}", "      tls: { options: fast }")
        .replace(
            "tls:\n  certificates:",
            "tls:\n  options:\n    slow: { minVersion: VersionTLS10 }\n  certificates:",
        );
    let dir = write_files(&[("wasmgate.yaml", INSTALL), ("routing.yaml", &routing)]);
    let _c = certs(dir.path());
    let errors = load(&dir.path().join("wasmgate.yaml"))
        .err()
        .expect("must fail");
    let text = errors.to_string();
    assert!(
        text.contains("http.routers.secure.tls.options")
            && text.contains("\"fast\" are not defined")
            && text.contains("slow, default"),
        "{text}"
    );
    // A router asking for TLS with no certificate anywhere.
    let routing = "http:\n  routers:\n    r: { rule: \"PathPrefix(`/`)\", service: echo@internal, tls: { certResolver: le } }\n";
    let dir = write_files(&[("wasmgate.yaml", INSTALL), ("routing.yaml", routing)]);
    let errors = load(&dir.path().join("wasmgate.yaml"))
        .err()
        .expect("must fail");
    let text = errors.to_string();
    assert!(text.contains("certResolver needs ACME"), "{text}");
    assert!(text.contains("no certificate is configured"), "{text}");
}

/// Options that rustls cannot honour are refused with the key that names them.
#[test]
fn unsupported_options_are_refused() {
    for (option, expected) in [
        (
            "{ minVersion: VersionTLS10 }",
            "tls.options.default.minVersion",
        ),
        (
            "{ cipherSuites: [TLS_RSA_WITH_AES_128_CBC_SHA] }",
            "tls.options.default.cipherSuites[0]",
        ),
        (
            "{ curvePreferences: [CurveP521] }",
            "tls.options.default.curvePreferences[0]",
        ),
        (
            "{ clientAuth: { clientAuthType: RequireAnyClientCert } }",
            "tls.options.default.clientAuth.clientAuthType",
        ),
        (
            "{ clientAuth: { clientAuthType: RequireAndVerifyClientCert } }",
            "tls.options.default.clientAuth.caFiles",
        ),
    ] {
        let routing = ROUTING.replace(
            "tls:\n  certificates:",
            &format!("tls:\n  options:\n    default: {option}\n  certificates:"),
        );
        let dir = write_files(&[("wasmgate.yaml", INSTALL), ("routing.yaml", &routing)]);
        let _c = certs(dir.path());
        let errors = load(&dir.path().join("wasmgate.yaml"))
            .err()
            .expect("must fail");
        let e = errors.0.iter().find(|e| e.path == expected);
        assert!(
            e.is_some_and(|e| e.position.is_some()),
            "{option}: {errors}"
        );
    }
    // Supported ones load.
    let routing = ROUTING.replace(
        "tls:\n  certificates:",
        "tls:\n  options:\n    default:\n      maxVersion: VersionTLS12\n      cipherSuites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]\n      curvePreferences: [X25519, CurveP256]\n      alpnProtocols: [http/1.1]\n  certificates:",
    );
    let dir = write_files(&[("wasmgate.yaml", INSTALL), ("routing.yaml", &routing)]);
    let _c = certs(dir.path());
    if let Err(e) = load(&dir.path().join("wasmgate.yaml")) {
        panic!("{e}");
    }
}

/// New certificate files are served once the routing configuration reloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_with_the_routing_file() {
    let (t, c) = start_tls(ROUTING, INSTALL).await;
    let before = Client::new(&c.ca, "a.test").get(t.addr, "/").await.unwrap();
    assert_eq!(before.presented, leaf(&c.a));
    // Another CA issues a.test now; the files are replaced, then the routing reloads.
    let ca2 = TestCa::new("second CA");
    let renewed = ca2.server(t.dir.path(), "a", &["a.test"]);
    let reloaded = {
        let gw = t.gateway.clone();
        tokio::task::spawn_blocking(move || gw.reload_routing())
            .await
            .unwrap()
    };
    reloaded.unwrap_or_else(|e| panic!("{e}"));
    let after = Client::new(&ca2, "a.test").get(t.addr, "/").await.unwrap();
    assert_eq!(after.presented, leaf(&renewed));
    assert_ne!(after.presented, before.presented);
}

/// An http-wasm plugin serves requests arriving over TLS and HTTP/2 as any other.
async fn plugin_over_tls_and_h2(engine: &str) {
    let plugin = example_plugin("add-headers");
    let install = format!(
        "{INSTALL}cache:\n  enabled: false\nplugins:\n  example:\n    path: \"{}\"\n    engine: {engine}\n",
        plugin.display()
    );
    let routing = ROUTING
        .replace(
            "      middlewares: [mark-secure]",
            "      middlewares: [mark-secure, demo]",
        )
        .replace(
            "  middlewares:\n",
            "  middlewares:\n    demo: { plugin: { example: { headers: { X-Plugin: seen } } } }\n",
        );
    let (t, c) = start_tls(&routing, &install).await;
    let mut h2 = Client::new(&c.ca, "a.test");
    h2.alpn = &["h2"];
    let got = h2.get(t.addr, "/p").await.unwrap();
    assert_eq!(got.status, 200, "{engine}: {}", got.body);
    assert_eq!(got.version, http::Version::HTTP_2);
    assert!(
        got.body.to_lowercase().contains("\nx-plugin: seen\n"),
        "{engine}: {}",
        got.body
    );
}
parity!(async plugin_over_tls_and_h2);

/// `certFile` and `keyFile` may hold the PEM text itself, as in Traefik.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_given_inline() {
    let dir = write_files(&[("wasmgate.yaml", INSTALL)]);
    let c = certs(dir.path());
    let indent = |path: &Path| {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| format!("          {l}\n"))
            .collect::<String>()
    };
    let routing = format!(
        "http:\n  routers:\n    r: {{ rule: \"PathPrefix(`/`)\", service: echo@internal, tls: {{}} }}\ntls:\n  certificates:\n    - certFile: |\n{}      keyFile: |\n{}",
        indent(&c.a.cert),
        indent(&c.a.key)
    );
    std::fs::write(dir.path().join("routing.yaml"), routing).unwrap();
    let t = start_in(dir).await;
    let got = Client::new(&c.ca, "a.test").get(t.addr, "/").await.unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(got.presented, leaf(&c.a));
}

/// Options are chosen by SNI, as in Traefik: a router whose `Host` is the name the client
/// asks for brings its options; other names get the default ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_chosen_by_the_sni_of_a_routers_host() {
    let routing = r#"http:
  routers:
    a: { rule: "Host(`a.test`)", service: echo@internal, tls: { options: modern } }
    b: { rule: "Host(`api.b.test`)", service: echo@internal, tls: {} }
tls:
  certificates:
    - { certFile: a.crt, keyFile: a.key }
    - { certFile: wild.crt, keyFile: wild.key }
  options:
    modern: { minVersion: VersionTLS13 }
"#;
    let (t, c) = start_tls(routing, INSTALL).await;
    let mut old_a = Client::new(&c.ca, "a.test");
    old_a.tls12_only = true;
    assert!(old_a.get(t.addr, "/").await.is_err());
    assert_eq!(
        Client::new(&c.ca, "a.test")
            .get(t.addr, "/")
            .await
            .unwrap()
            .status,
        200
    );
    let mut old_b = Client::new(&c.ca, "api.b.test");
    old_b.tls12_only = true;
    assert_eq!(old_b.get(t.addr, "/").await.unwrap().status, 200);

    // One host, two sets of options: refused, naming both.
    let conflict = routing.replace(
        "b: { rule: \"Host(`api.b.test`)\"",
        "b: { rule: \"Host(`a.test`) && Path(`/b`)\"",
    );
    let dir = write_files(&[("wasmgate.yaml", INSTALL), ("routing.yaml", &conflict)]);
    let _c = certs(dir.path());
    let e = load(&dir.path().join("wasmgate.yaml"))
        .err()
        .expect("must fail")
        .to_string();
    assert!(
        e.contains("host \"a.test\"") && e.contains("one host, one set of options"),
        "{e}"
    );
}

/// A proxy-wasm (0.2.1) filter that copies what it sees of the connection into request
/// headers: `connection.mtls` (`x-mtls`), `connection.requested_server_name` (`x-sni`),
/// `request.id` (`x-rid`) and the `:scheme` of its header map (`x-scheme`).
const CONNECTION_PROBE: &str = r#"(module
  (import "env" "proxy_get_property" (func $prop (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "connection\00mtls")
  (data (i32.const 48) "connection\00requested_server_name")
  (data (i32.const 96) "request\00id")
  (data (i32.const 112) ":scheme")
  (data (i32.const 128) "x-mtls")
  (data (i32.const 144) "x-sni")
  (data (i32.const 160) "x-rid")
  (data (i32.const 176) "x-scheme")
  (data (i32.const 192) "01")
  (global $heap (mut i32) (i32.const 16384))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (local.get $p) (i32.and (i32.add (local.get $size) (i32.const 7)) (i32.const -8))))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func $copy (param $path i32) (param $len i32) (param $name i32) (param $nlen i32)
    (if (i32.eqz (call $prop (local.get $path) (local.get $len) (i32.const 1000) (i32.const 1004)))
      (then (drop (call $add (i32.const 0) (local.get $name) (local.get $nlen)
        (i32.load (i32.const 1000)) (i32.load (i32.const 1004)))))))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (global.set $heap (i32.const 16384))
    (if (i32.eqz (call $prop (i32.const 16) (i32.const 15) (i32.const 1000) (i32.const 1004)))
      (then (drop (call $add (i32.const 0) (i32.const 128) (i32.const 6)
        (i32.add (i32.const 192) (i32.load8_u (i32.load (i32.const 1000)))) (i32.const 1)))))
    (call $copy (i32.const 48) (i32.const 32) (i32.const 144) (i32.const 5))
    (call $copy (i32.const 96) (i32.const 10) (i32.const 160) (i32.const 5))
    (if (i32.eqz (call $get (i32.const 0) (i32.const 112) (i32.const 7) (i32.const 1000) (i32.const 1004)))
      (then (drop (call $add (i32.const 0) (i32.const 176) (i32.const 8)
        (i32.load (i32.const 1000)) (i32.load (i32.const 1004))))))
    (i32.const 0)))"#;

/// proxy-wasm filters see the connection's TLS as Envoy shows it: `:scheme` https (HTTP/1.1
/// too), `connection.mtls` for a verified client certificate, the SNI, and `request.id`.
async fn proxy_wasm_sees_the_connections_tls(engine: &str) {
    let install = format!(
        "{INSTALL}cache:\n  enabled: false\nplugins:\n  probe:\n    path: probe.wasm\n    engine: {engine}\n    abi: proxy-wasm\n"
    );
    let routing = r#"http:
  routers:
    secure: { rule: "PathPrefix(`/`)", middlewares: [probe], service: echo@internal, tls: { options: mtls } }
    plain: { rule: "PathPrefix(`/`)", middlewares: [probe], service: echo@internal }
  middlewares:
    probe: { plugin: { probe: {} } }
tls:
  certificates:
    - { certFile: a.crt, keyFile: a.key }
  options:
    mtls: { clientAuth: { caFiles: [ca.crt], clientAuthType: VerifyClientCertIfGiven } }
"#;
    let dir = write_files(&[("wasmgate.yaml", &install), ("routing.yaml", routing)]);
    std::fs::write(
        dir.path().join("probe.wasm"),
        wat::parse_str(CONNECTION_PROBE).unwrap(),
    )
    .unwrap();
    let c = certs(dir.path());
    let client = c.ca.client(dir.path(), "client", "client-one");
    let t = start_in(dir).await;
    let header = |body: &str, name: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .map(str::to_string)
    };
    let mut with = Client::new(&c.ca, "a.test");
    with.client_cert = Some(&client);
    let got = with.get(t.addr, "/m").await.unwrap();
    let body = got.body.to_lowercase();
    assert_eq!(
        header(&body, "x-mtls").as_deref(),
        Some("1"),
        "{engine}: {body}"
    );
    assert_eq!(
        header(&body, "x-sni").as_deref(),
        Some("a.test"),
        "{engine}: {body}"
    );
    assert_eq!(
        header(&body, "x-scheme").as_deref(),
        Some("https"),
        "{engine}: {body}"
    );
    let rid = header(&body, "x-rid").unwrap_or_default();
    assert_eq!(
        header(&body, "x-request-id"),
        Some(rid.clone()),
        "{engine}: {body}"
    );
    assert_eq!(rid.len(), 32, "{engine}: {body}");

    let got = Client::new(&c.ca, "a.test")
        .get(t.addr, "/n")
        .await
        .unwrap();
    let body = got.body.to_lowercase();
    assert_eq!(
        header(&body, "x-mtls").as_deref(),
        Some("0"),
        "{engine}: {body}"
    );
    assert_eq!(
        header(&body, "x-scheme").as_deref(),
        Some("https"),
        "{engine}: {body}"
    );

    let r = send(get(t.url("/p"))).await;
    let body = r.body.to_lowercase();
    assert_eq!(
        header(&body, "x-mtls").as_deref(),
        Some("0"),
        "{engine}: {body}"
    );
    assert_eq!(
        header(&body, "x-scheme").as_deref(),
        Some("http"),
        "{engine}: {body}"
    );
    assert_eq!(header(&body, "x-sni"), None, "{engine}: {body}");
}
parity!(async proxy_wasm_sees_the_connections_tls);

/// A client that starts a handshake and stalls is cut at the entry point's `readTimeout`; one
/// that sends garbage after the first byte is closed at once; others are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_broken_handshakes_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let install = INSTALL.replace(
        "    address: \"127.0.0.1:0\"\n",
        "    address: \"127.0.0.1:0\"\n    transport:\n      respondingTimeouts:\n        readTimeout: 1s\n",
    );
    let (t, c) = start_tls(ROUTING, &install).await;
    let mut stalled = TcpStream::connect(t.addr).await.unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let mut broken = TcpStream::connect(t.addr).await.unwrap();
    broken
        .write_all(&[0x16, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    // The broken one: an alert or nothing, then the end, well before the read timeout.
    let closed = tokio::time::timeout(Duration::from_millis(900), async {
        loop {
            match broken.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a broken handshake was left open");
    // Served meanwhile.
    let got = Client::new(&c.ca, "a.test").get(t.addr, "/").await.unwrap();
    assert_eq!(got.status, 200);
    // The stalled one: closed after about a second, not left open.
    let cut = tokio::time::timeout(Duration::from_secs(10), stalled.read(&mut buf)).await;
    assert!(
        matches!(cut, Ok(Ok(0)) | Ok(Err(_))),
        "a stalled handshake was not cut: {cut:?}"
    );
}

/// The JSON access log gives Traefik's `TLSVersion` and `TLSCipher` for TLS requests only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_names_the_tls_version_and_cipher() {
    let install = format!("{INSTALL}accessLog:\n  filePath: access.log\n  format: json\n");
    let (t, c) = start_tls(ROUTING, &install).await;
    let mut tls12 = Client::new(&c.ca, "a.test");
    tls12.tls12_only = true;
    assert_eq!(tls12.get(t.addr, "/one").await.unwrap().status, 200);
    assert_eq!(send(get(t.url("/two"))).await.status, 200);
    let lines = access_lines(&t.path("access.log"), 2).await;
    let one = lines
        .iter()
        .find(|l| l["RequestPath"] == "/one")
        .expect("the TLS line");
    assert_eq!(one["TLSVersion"], "1.2", "{one}");
    assert!(
        one["TLSCipher"]
            .as_str()
            .is_some_and(|c| c.starts_with("TLS_ECDHE_")),
        "{one}"
    );
    let two = lines
        .iter()
        .find(|l| l["RequestPath"] == "/two")
        .expect("the plain line");
    assert!(two.get("TLSVersion").is_none(), "{two}");
}
