//! The client: one HTTP/1 connection per request, the request target sent exactly as written.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// What came back.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Got {
    /// Status code.
    pub status: u16,
    /// Header lines, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body (lossy UTF-8).
    pub body: String,
}

impl Got {
    /// Every value of header `name`, joined with `, `; `None` when absent.
    pub fn header(&self, name: &str) -> Option<String> {
        let vals: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        (!vals.is_empty()).then(|| vals.join(", "))
    }
}

/// Sends one request to `addr`.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    uri: &str,
    version: &str,
    headers: &[(String, String)],
    body: &str,
) -> anyhow::Result<Got> {
    send_with_trailers(addr, method, uri, version, headers, body, &[]).await
}

/// Sends one request to `addr`; with `trailers` the body goes chunked, the trailer fields
/// declared in a `Trailer` header (hyper sends only declared ones).
pub async fn send_with_trailers(
    addr: SocketAddr,
    method: &str,
    uri: &str,
    version: &str,
    headers: &[(String, String)],
    body: &str,
    trailers: &[(String, String)],
) -> anyhow::Result<Got> {
    let version = match version {
        "HTTP/1.0" => http::Version::HTTP_10,
        "HTTP/1.1" => http::Version::HTTP_11,
        other => anyhow::bail!("unsupported HTTP version {other}"),
    };
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<
        _,
        BoxBody<Bytes, std::convert::Infallible>,
    >(TokioIo::new(stream))
    .await?;
    let driver = tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(uri)
        .version(version)
        .header("host", "conformance.test");
    for (n, v) in headers {
        req = req.header(n, v);
    }
    let full = Full::new(Bytes::from(body.to_string()));
    let req = if trailers.is_empty() {
        req.body(full.boxed())?
    } else {
        let mut map = http::HeaderMap::new();
        let mut names = Vec::new();
        for (n, v) in trailers {
            let name = http::HeaderName::from_bytes(n.as_bytes())?;
            map.append(name.clone(), http::HeaderValue::from_str(v)?);
            if !names.contains(&name) {
                names.push(name);
            }
        }
        let declared: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
        req.header("transfer-encoding", "chunked")
            .header("trailer", declared.join(", "))
            .body(
                full.with_trailers(std::future::ready(Some(Ok(map))))
                    .boxed(),
            )?
    };
    let fut = async {
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok(Got {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    };
    let got = tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within 30 s"))?;
    driver.abort();
    got
}
