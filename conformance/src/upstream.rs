//! The upstream the suite's proxy forwards to: it echoes the request, or gives the fixed
//! answer a case asked for, and counts the requests of each case.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::case::{body_bytes, UpstreamSpec};
use crate::chunks::{framed, trailer_map};

/// The request header that tells the upstream which case a request belongs to.
pub const CASE_KEY_HEADER: &str = "x-conformance-key";

#[derive(Default)]
struct Shared {
    answers: HashMap<String, UpstreamSpec>,
    calls: HashMap<String, u32>,
}

/// A running upstream; it stops when dropped.
pub struct Upstream {
    /// Its address.
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// Binds `addr` (port 0 for a free one) and serves HTTP/1.1.
    pub async fn start(addr: SocketAddr) -> std::io::Result<Upstream> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| answer(s.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(Upstream { addr, shared, task })
    }

    /// Sets what requests carrying `key` get (an echo when `None`).
    pub fn set_answer(&self, key: &str, answer: Option<UpstreamSpec>) {
        let mut s = self.shared.lock().unwrap();
        match answer {
            Some(a) => s.answers.insert(key.to_string(), a),
            None => s.answers.remove(key),
        };
    }

    /// How many requests carrying `key` arrived.
    pub fn calls(&self, key: &str) -> u32 {
        self.shared
            .lock()
            .unwrap()
            .calls
            .get(key)
            .copied()
            .unwrap_or(0)
    }
}

/// Why the upstream did not answer: a case's `refuse` (hyper then closes the connection
/// without a response).
#[derive(Debug)]
struct Refused;

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("refused as the case asks")
    }
}

impl std::error::Error for Refused {}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Echo format: `METHOD URI VERSION\n`, one `name: value\n` per header line, `\n`, the body;
/// the request's trailers come back as the response's trailers.
async fn answer(
    shared: Arc<Mutex<Shared>>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<BoxBody<Bytes, BoxError>>, Refused> {
    let key = req
        .headers()
        .get(CASE_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let fixed = {
        let mut s = shared.lock().unwrap();
        *s.calls.entry(key.clone()).or_default() += 1;
        s.answers.get(&key).cloned()
    };
    let mut head = format!("{} {} {:?}\n", req.method(), req.uri(), req.version());
    for (n, v) in req.headers() {
        head += &format!("{}: {}\n", n, String::from_utf8_lossy(v.as_bytes()));
    }
    head.push('\n');
    let (body, request_trailers) = match req.into_body().collect().await {
        Ok(c) => {
            let t = c.trailers().cloned();
            (c.to_bytes(), t)
        }
        Err(_) => (Bytes::new(), None),
    };
    let mut resp = hyper::Response::builder();
    if let Some(spec) = &fixed {
        if spec.refuse {
            return Err(Refused);
        }
        if let Some(ms) = spec.delay_ms {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if spec.reset {
            // A head promising more than comes, then an error: hyper drops the connection.
            let body = CutShort {
                part: Some(Bytes::from_static(b"partial")),
                sleep: None,
                done: false,
            };
            return Ok(resp
                .status(spec.status.unwrap_or(200))
                .header("content-length", "1000")
                .body(body.boxed())
                .unwrap_or_else(|e| error_response(e.to_string())));
        }
    }
    let (data, chunks, trailers) = match fixed {
        Some(spec) => {
            resp = resp.status(spec.status.unwrap_or(200));
            for (n, v) in &spec.headers {
                resp = resp.header(n, v);
            }
            let t = trailer_map(&spec.trailers).unwrap_or_default();
            let data = body_bytes(
                &spec.body,
                spec.body_hex.as_deref(),
                None,
                spec.body_repeat.as_ref(),
            )
            .unwrap_or_else(|e| e.to_string().into_bytes());
            (Bytes::from(data), spec.chunks, t)
        }
        None => {
            resp = resp.header("x-upstream", "echo");
            let mut v = head.into_bytes();
            v.extend_from_slice(&body);
            (
                Bytes::from(v),
                Vec::new(),
                request_trailers.unwrap_or_default(),
            )
        }
    };
    let f = framed(data, &chunks, trailers);
    if let Some(t) = f.trailer {
        resp = resp.header("trailer", t);
    }
    if f.needs_chunked {
        resp = resp.header("transfer-encoding", "chunked");
    }
    Ok(resp
        .body(f.body.map_err(|e| match e {}).boxed())
        .unwrap_or_else(|e| error_response(e.to_string())))
}

fn error_response(text: String) -> hyper::Response<BoxBody<Bytes, BoxError>> {
    hyper::Response::new(Full::new(Bytes::from(text)).map_err(|e| match e {}).boxed())
}

/// A body that sends a part, then after a moment fails, which makes hyper drop the
/// connection mid-body.
struct CutShort {
    part: Option<Bytes>,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    done: bool,
}

impl http_body::Body for CutShort {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        use std::future::Future;
        use std::task::Poll;
        if let Some(p) = self.part.take() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(p))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        // Let the part reach the proxy before the connection goes.
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(Duration::from_millis(20))));
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.done = true;
        Poll::Ready(Some(Err("reset as the case asks".into())))
    }
}
