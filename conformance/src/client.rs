//! The client: one connection per request (HTTP/1, or HTTP/2 with prior knowledge), the
//! request target sent exactly as written.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::case::RequestSpec;
use crate::chunks::{framed, trailer_map};

/// What came back.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Got {
    /// Status code.
    pub status: u16,
    /// Header lines, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body (lossy UTF-8).
    pub body: String,
    /// The body's length in bytes, as received.
    #[serde(skip)]
    pub body_len: usize,
    /// Trailer fields, names lower-cased.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trailers: Vec<(String, String)>,
}

impl Got {
    /// Every value of header `name`, joined with `, `; `None` when absent.
    pub fn header(&self, name: &str) -> Option<String> {
        joined(&self.headers, name)
    }

    /// Every value of trailer `name`, joined with `, `; `None` when absent.
    pub fn trailer(&self, name: &str) -> Option<String> {
        joined(&self.trailers, name)
    }
}

/// Sends one request to `addr`; with `trailers` the body carries them (HTTP/1: chunked), the
/// fields declared in a `Trailer` header (hyper sends only declared ones).
///
/// `headers` come first (the suite's own), then the spec's.
pub async fn send(
    addr: SocketAddr,
    spec: &RequestSpec,
    headers: &[(String, String)],
) -> anyhow::Result<Got> {
    let version = spec.version.as_str();
    let req = request(spec, headers)?;
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let io = TokioIo::new(stream);
    let (mut sender, driver) = if version == "HTTP/2" {
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        (
            Sender::H2(sender),
            tokio::spawn(async { conn.await.map(|_| ()).unwrap_or(()) }),
        )
    } else {
        // Names go out in title case (`X-Mixed-Case`), as most clients write them: a host must
        // show them to guests lower-cased, and a case checking that can only fail if the
        // names arrive with upper-case letters.
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .title_case_headers(true)
            .handshake(io)
            .await?;
        (
            Sender::H1(sender),
            tokio::spawn(async { conn.await.map(|_| ()).unwrap_or(()) }),
        )
    };
    // Dropping this future (a client that gives up) must close the connection too.
    let _driver = AbortOnDrop(driver);
    let fut = async {
        let resp = match &mut sender {
            Sender::H1(s) => s.send_request(req).await?,
            Sender::H2(s) => s.send_request(req).await?,
        };
        let status = resp.status().as_u16();
        let headers = fields(resp.headers());
        let collected = resp.into_body().collect().await?;
        let trailers = collected.trailers().map(fields).unwrap_or_default();
        let body = collected.to_bytes();
        anyhow::Ok(Got {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            body_len: body.len(),
            trailers,
        })
    };
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within 30 s"))?
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type ReqBody = BoxBody<Bytes, std::convert::Infallible>;

fn joined(fields: &[(String, String)], name: &str) -> Option<String> {
    let vals: Vec<&str> = fields
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect();
    (!vals.is_empty()).then(|| vals.join(", "))
}

fn fields(map: &http::HeaderMap) -> Vec<(String, String)> {
    map.iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<ReqBody>),
    H2(hyper::client::conn::http2::SendRequest<ReqBody>),
}

/// The request; HTTP/2 carries scheme and authority as pseudo-headers, so its target is made
/// absolute (path and query still exactly as written) and it has no Host header.
fn request(
    spec: &RequestSpec,
    headers: &[(String, String)],
) -> anyhow::Result<hyper::Request<ReqBody>> {
    let (uri, version) = (spec.uri.as_str(), spec.version.as_str());
    let mut req = hyper::Request::builder().method(spec.method.as_str());
    req = match version {
        "HTTP/2" if uri.starts_with('/') => req
            .uri(format!("http://{HOST}{uri}"))
            .version(http::Version::HTTP_2),
        "HTTP/2" => req.uri(uri).version(http::Version::HTTP_2),
        "HTTP/1.0" => req
            .uri(uri)
            .version(http::Version::HTTP_10)
            .header("host", HOST),
        "HTTP/1.1" => req
            .uri(uri)
            .version(http::Version::HTTP_11)
            .header("host", HOST),
        other => anyhow::bail!("unsupported HTTP version {other}"),
    };
    for (n, v) in headers.iter().chain(&spec.headers) {
        req = req.header(n, v);
    }
    let f = framed(
        Bytes::from(spec.body_bytes()?),
        &spec.chunks,
        trailer_map(&spec.trailers)?,
    );
    if let Some(t) = f.trailer {
        req = req.header("trailer", t);
    }
    if f.needs_chunked && version != "HTTP/2" {
        req = req.header("transfer-encoding", "chunked");
    }
    Ok(req.body(f.body)?)
}

/// The host name every request names.
const HOST: &str = "conformance.test";
