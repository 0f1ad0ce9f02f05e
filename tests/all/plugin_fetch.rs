//! Plugins fetched by digest (`url` + `sha256`): a real HTTP server on 127.0.0.1 serves an
//! example plugin's module and counts the downloads; wasmgate loads it, checks it, keeps it in
//! the cache directory and starts from there with the server gone.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::common::*;

/// A server of one module at `/p.wasm`; the first `failures` requests get a 503.
struct ModuleServer {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl ModuleServer {
    async fn start(wasm: Vec<u8>, failures: usize) -> ModuleServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let wasm = Bytes::from(wasm);
        let count = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (count, wasm) = (count.clone(), wasm.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
                        let n = count.fetch_add(1, Ordering::SeqCst);
                        let status = if req.uri().path() != "/p.wasm" {
                            404
                        } else if n < failures {
                            503
                        } else {
                            200
                        };
                        let body = if status == 200 {
                            wasm.clone()
                        } else {
                            Bytes::new()
                        };
                        let mut resp = hyper::Response::new(Full::new(body));
                        *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        async move { Ok::<_, std::convert::Infallible>(resp) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        ModuleServer {
            addr,
            requests,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Stops accepting: later connections are refused.
    async fn stop(self) -> usize {
        self.task.abort();
        let _ = self.task.await;
        self.requests.load(Ordering::SeqCst)
    }
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn add_headers() -> Vec<u8> {
    std::fs::read(example_plugin("add-headers")).unwrap()
}

/// An install file running the plugin at `url` (digest `sha256`) on `engine` in front of
/// `upstream`, adding `Foo: Bar`; the cache in `cache/`.
fn install(url: &str, sha256: &str, engine: &str, upstream: SocketAddr) -> String {
    format!(
        r#"entryPoints:
  web:
    address: "127.0.0.1:0"
cache:
  dir: cache
plugins:
  fetched:
    url: "{url}"
    sha256: {sha256}
    timeout: 5s
    engine: {engine}
http:
  routers:
    r: {{ rule: "PathPrefix(`/`)", middlewares: [demo], service: up }}
  middlewares:
    demo:
      plugin:
        fetched: {{ headers: {{ Foo: Bar }} }}
  services:
    up:
      loadBalancer: {{ servers: [ {{ url: "http://{upstream}" }} ] }}
"#
    )
}

fn cached(dir: &Path, sha256: &str) -> PathBuf {
    dir.join("cache/modules")
        .join(format!("sha256-{sha256}.wasm"))
}

/// A real request goes through the plugin (at `url`): its header reaches the upstream.
async fn plugin_works(url: String) {
    let r = send(get(url)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("\nfoo: Bar\n"), "{}", r.body);
}

async fn a_module_fetched_by_digest_runs_and_later_starts_need_no_network(engine: &str) {
    let wasm = add_headers();
    let digest = hex(&wasm);
    let server = ModuleServer::start(wasm.clone(), 0).await;
    let up = echo_upstream("up").await;
    let t = start(&[(
        "wasmgate.yaml",
        &install(&server.url("/p.wasm"), &digest, engine, up),
    )])
    .await;
    plugin_works(t.url("/hello")).await;
    assert_eq!(server.requests(), 1);
    let kept = cached(t.dir.path(), &digest);
    assert_eq!(std::fs::read(&kept).unwrap(), wasm);

    // The server is gone: a second start (same install file, same cache) runs from the cache.
    let downloads = server.stop().await;
    let again = load(&t.path("wasmgate.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let again = wasmgate::proxy::start(again).await.unwrap();
    plugin_works(format!("http://{}/hello", again.addrs["web"])).await;
    assert_eq!(downloads, 1, "the second start downloaded nothing");
}
parity!(async a_module_fetched_by_digest_runs_and_later_starts_need_no_network);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_digest_refuses_the_module_and_keeps_nothing() {
    let wasm = add_headers();
    let server = ModuleServer::start(wasm.clone(), 0).await;
    let wrong = hex(b"another module");
    let up = echo_upstream("up").await;
    let url = server.url("/p.wasm");
    let dir = write_files(&[("wasmgate.yaml", &install(&url, &wrong, "wasmtime", up))]);
    let e = load(&dir.path().join("wasmgate.yaml"))
        .err()
        .unwrap()
        .to_string();
    for expected in [
        "wasmgate.yaml:8:5: plugins.fetched.url: ",
        &url,
        &format!("the downloaded module's sha256 is {}", hex(&wasm)),
        &format!("the declaration expects {wrong}"),
    ] {
        assert!(e.contains(expected), "expected {expected:?} in:\n{e}");
    }
    // Not retried (the same bytes would come back), and not kept under either digest.
    assert_eq!(server.requests(), 1);
    assert!(!cached(dir.path(), &wrong).exists());
    assert!(!cached(dir.path(), &hex(&wasm)).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_cached_module_is_fetched_again() {
    let wasm = add_headers();
    let digest = hex(&wasm);
    let server = ModuleServer::start(wasm.clone(), 0).await;
    let up = echo_upstream("up").await;
    let dir = write_files(&[(
        "wasmgate.yaml",
        &install(&server.url("/p.wasm"), &digest, "wasmtime", up),
    )]);
    let install_file = dir.path().join("wasmgate.yaml");
    load(&install_file).unwrap();
    assert_eq!(server.requests(), 1);
    let kept = cached(dir.path(), &digest);
    // One flipped byte: the digest no longer matches.
    let mut damaged = wasm.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 0xff;
    std::fs::write(&kept, &damaged).unwrap();
    load(&install_file).unwrap();
    assert_eq!(server.requests(), 2, "fetched again");
    assert_eq!(std::fs::read(&kept).unwrap(), wasm, "and kept again");
    // Now good: the next load reads it.
    load(&install_file).unwrap();
    assert_eq!(server.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_server_is_tried_again_and_a_missing_module_is_not() {
    let wasm = add_headers();
    let digest = hex(&wasm);
    // Two 503s, then the module: the third attempt gets it.
    let server = ModuleServer::start(wasm.clone(), 2).await;
    let up = echo_upstream("up").await;
    let dir = write_files(&[(
        "wasmgate.yaml",
        &install(&server.url("/p.wasm"), &digest, "wasmtime", up),
    )]);
    load(&dir.path().join("wasmgate.yaml")).unwrap();
    assert_eq!(server.requests(), 3);

    // A 404 is an answer, not an outage: one attempt, then the error.
    let dir = write_files(&[(
        "wasmgate.yaml",
        &install(&server.url("/missing.wasm"), &digest, "wasmtime", up),
    )]);
    let e = load(&dir.path().join("wasmgate.yaml"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("failed after 1 attempt(s): the server answered 404 Not Found"),
        "{e}"
    );
    assert_eq!(server.requests(), 4);

    // Nobody listening: every attempt fails, and the error says so.
    let url = server.url("/p.wasm");
    let gone = server.stop().await;
    let dir = write_files(&[("wasmgate.yaml", &install(&url, &digest, "wasmtime", up))]);
    let e = load(&dir.path().join("wasmgate.yaml"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("failed after 3 attempt(s)"), "{e}");
    assert_eq!(gone, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_server_the_system_does_not_trust_is_refused() {
    // A TLS server with a certificate from a test CA, which is not among the system's roots.
    let dir = write_files(&[]);
    let ca = crate::certs::TestCa::new("untrusted test CA");
    let files = ca.server(dir.path(), "localhost", &["localhost", "127.0.0.1"]);
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        wasmgate::pem::certificates(&files.cert).unwrap(),
        wasmgate::pem::private_key(&files.key).unwrap(),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let seen = handshakes.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            seen.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            // The client gives up during the handshake: nothing is served.
            tokio::spawn(async move { acceptor.accept(stream).await.is_ok() });
        }
    });
    let wasm = add_headers();
    let up = echo_upstream("up").await;
    let url = format!("https://{addr}/p.wasm");
    std::fs::write(
        dir.path().join("wasmgate.yaml"),
        install(&url, &hex(&wasm), "wasmtime", up),
    )
    .unwrap();
    let e = load(&dir.path().join("wasmgate.yaml"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains(&format!("downloading {url} failed")) && e.contains("UnknownIssuer"),
        "{e}"
    );
    assert!(handshakes.load(Ordering::SeqCst) >= 1, "TLS was attempted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_announced_larger_than_the_cap_is_not_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A server announcing 300 MiB (past the 256 MiB cap): refused from the head, not retried.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = requests.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            seen.fetch_add(1, Ordering::SeqCst);
            let mut head = [0u8; 1024];
            let _ = stream.read(&mut head).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 314572800\r\n\r\n\0asm")
                .await;
        }
    });
    let up = echo_upstream("up").await;
    let url = format!("http://{addr}/p.wasm");
    let dir = write_files(&[(
        "wasmgate.yaml",
        &install(&url, &hex(b"big"), "wasmtime", up),
    )]);
    let e = load(&dir.path().join("wasmgate.yaml"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("failed after 1 attempt(s): the module is larger than 268435456 bytes"),
        "{e}"
    );
    assert_eq!(requests.load(Ordering::SeqCst), 1);
}
