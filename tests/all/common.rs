//! Test helpers: config files in a temp dir, a real server on 127.0.0.1, real upstreams, a client.

#![allow(dead_code)]

/// Generates one test per engine, `NAME::wasmtime` and `NAME::wasmer`, for a case
/// `fn NAME(engine: &str)` (`parity!(async NAME)` for an `async fn`), so that each engine
/// passes or fails on its own under the same expectations.
macro_rules! parity {
    ($name:ident) => {
        mod $name {
            #[test]
            fn wasmtime() {
                super::$name("wasmtime");
            }
            #[test]
            fn wasmer() {
                super::$name("wasmer");
            }
        }
    };
    (async $name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn wasmtime() {
                super::$name("wasmtime").await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn wasmer() {
                super::$name("wasmer").await;
            }
        }
    };
}

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use wasmgate::config::ConfigErrors;
use wasmgate::gateway::Gateway;
use wasmgate::proxy::RunningServer;
use wasmgate_conformance::sdk::{build_dir, SdkBuild};

/// A response as the test client saw it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Writes `files` into a fresh temp dir; returns it (kept alive by the caller).
pub fn write_files(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let p = dir.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir
}

/// Replaces `path` atomically, the way a careful deploy does.
pub fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// An install file with one entry point `web` on a free port, routing inline.
pub fn inline_config(http: &str) -> String {
    format!("entryPoints:\n  web:\n    address: \"127.0.0.1:0\"\n{http}")
}

/// A started server and the directory its config lives in.
pub struct TestServer {
    pub server: Option<RunningServer>,
    pub gateway: Arc<Gateway>,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

/// Loads a gateway for the test's runtime, or, in a plain `#[test]`, for one shared runtime
/// kept for the whole process (proxy-wasm middlewares need one when they are created).
pub fn load(install: &Path) -> Result<Arc<Gateway>, ConfigErrors> {
    static SHARED: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let handle = tokio::runtime::Handle::try_current().unwrap_or_else(|_| {
        SHARED
            .get_or_init(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .expect("a runtime for plain tests")
            })
            .handle()
            .clone()
    });
    Gateway::load(install, &handle)
}

/// Starts wasmgate on `files` (the install file is `wasmgate.yaml`).
pub async fn start(files: &[(&str, &str)]) -> TestServer {
    start_in(write_files(files)).await
}

/// Starts wasmgate on `dir/wasmgate.yaml`, for files [`write_files`] cannot write (.wasm).
pub async fn start_in(dir: tempfile::TempDir) -> TestServer {
    let gateway = load(&dir.path().join("wasmgate.yaml"))
        .unwrap_or_else(|e| panic!("config did not load:\n{e}"));
    let server = wasmgate::proxy::start(gateway.clone()).await.unwrap();
    let addr = server.addrs["web"];
    TestServer {
        server: Some(server),
        gateway,
        addr,
        dir,
    }
}

/// A real upstream: the echo service on its own port.
pub async fn echo_upstream(name: &str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(wasmgate::service::serve_echo(listener, name.to_string()));
    addr
}

/// Requests an upstream has seen, and a way to wait for them.
#[derive(Default)]
pub struct Counter {
    count: AtomicUsize,
    changed: tokio::sync::Notify,
}

impl Counter {
    /// Requests seen so far.
    pub fn get(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    fn add(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Waits until `n` requests have arrived (20 s at most: that is the failure).
    pub async fn wait_for(&self, n: usize) {
        let arrived = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                // Registered before the check, so an arrival in between is not missed.
                let changed = self.changed.notified();
                if self.get() >= n {
                    return;
                }
                changed.await;
            }
        })
        .await;
        assert!(arrived.is_ok(), "{} of {n} requests arrived", self.get());
    }
}

/// An upstream that counts requests and answers 200 "counted", after `delay`.
pub async fn counting_upstream(delay: Duration) -> (SocketAddr, Arc<Counter>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(Counter::default());
    let c = count.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let c = c.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let c = c.clone();
                    async move {
                        c.add();
                        tokio::time::sleep(delay).await;
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from_static(b"counted"),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, count)
}

/// A request to send.
pub struct Req<'a> {
    pub method: &'a str,
    pub url: String,
    pub headers: Vec<(&'a str, &'a str)>,
    pub body: &'a str,
}

pub fn get(url: String) -> Req<'static> {
    Req {
        method: "GET",
        url,
        headers: vec![],
        body: "",
    }
}

impl<'a> Req<'a> {
    pub fn header(mut self, n: &'a str, v: &'a str) -> Self {
        self.headers.push((n, v));
        self
    }
}

/// Sends a request over HTTP/1.1 (or h2c with `h2`) on a fresh client.
pub async fn send_with(req: Req<'_>, h2: bool) -> Reply {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(h2)
        .build_http();
    let mut b = hyper::Request::builder()
        .method(req.method)
        .uri(req.url.as_str());
    for (n, v) in &req.headers {
        b = b.header(*n, *v);
    }
    let request = b
        .body(Full::new(Bytes::copy_from_slice(req.body.as_bytes())))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(request))
        .await
        .expect("request hung")
        .expect("request failed");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

pub async fn send(req: Req<'_>) -> Reply {
    send_with(req, false).await
}

/// Builds the SDK example plugins (once per test process) and returns the path of `name`.wasm.
pub fn example_plugin(name: &str) -> PathBuf {
    let target = SdkBuild::Cargo {
        target: "wasm32-wasip1",
    };
    build_dir("examples/plugins", target)
        .expect("building examples/plugins")
        .join(format!("{name}.wasm"))
}

/// Builds the proxy-wasm SDK example filters (once per target and test process) for
/// `wasm32-wasip1` or `wasm32-unknown-unknown` and returns the path of `name`.wasm.
pub fn proxy_wasm_example(name: &str, target: &'static str) -> PathBuf {
    build_dir("examples/proxy-wasm", SdkBuild::Cargo { target })
        .expect("building examples/proxy-wasm")
        .join(format!("{}.wasm", name.replace('-', "_")))
}

/// Builds the AssemblyScript proxy-wasm example (once per test process) with npm and returns
/// the .wasm path. Needs node and npm (CI installs them, see .ci/run).
pub fn assemblyscript_example() -> PathBuf {
    build_dir("examples/proxy-wasm-as", SdkBuild::Npm)
        .expect("building examples/proxy-wasm-as")
        .join("build/add_header.wasm")
}

/// The access log's JSON lines, once there are `n` (the writer thread writes them shortly
/// after each response).
pub async fn access_lines(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    for _ in 0..200 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<_> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= n {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} access log lines in {}", path.display());
}
