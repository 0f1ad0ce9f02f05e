//! `echo@internal`: a built-in service that answers with what it received,
//! so the quick start and the tests need no outside server.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{BufMut, BytesMut};
use http::StatusCode;
use wasmgate_abi::model::go_proto;
use wasmgate_abi::{Endpoint, ProxyError, Request, Response};

/// The name routers use for it.
pub const ECHO_SERVICE: &str = "echo@internal";

/// Largest body echoed back; larger gets 413.
const MAX_ECHO_BODY: usize = 16 * 1024 * 1024;

/// Answers `200` with a text description of the request, like Traefik's `whoami`:
///
/// ```text
/// Name: echo@internal
/// RemoteAddr: 127.0.0.1:53412
/// GET /path?q=1 HTTP/1.1
/// host: demo.localhost
/// x-foo: bar
///
/// <the request body>
/// ```
pub struct EchoService {
    name: String,
}

impl EchoService {
    /// An echo service that reports `name` on its first line and in `x-echo-name`.
    pub fn new(name: impl Into<String>) -> Self {
        EchoService { name: name.into() }
    }
}

#[async_trait]
impl Endpoint for EchoService {
    async fn call(&self, req: Request) -> Result<Response, ProxyError> {
        let mut out = BytesMut::new();
        out.put_slice(format!("Name: {}\n", self.name).as_bytes());
        out.put_slice(format!("RemoteAddr: {}\n", req.source_addr).as_bytes());
        out.put_slice(format!("{} {} {}\n", req.method, req.uri, go_proto(req.version)).as_bytes());
        for (n, v) in req.headers.iter() {
            out.put_slice(n.as_bytes());
            out.put_slice(b": ");
            out.put_slice(v);
            out.put_u8(b'\n');
        }
        out.put_u8(b'\n');
        let body = req.body.buffer(MAX_ECHO_BODY).await.map_err(|e| {
            ProxyError::new(
                wasmgate_abi::ErrorSource::Downstream,
                StatusCode::PAYLOAD_TOO_LARGE,
                e.to_string(),
            )
            .with_source(e)
        })?;
        out.put_slice(&body.data);
        let mut resp = Response::text(StatusCode::OK, out.freeze());
        resp.headers.append("x-echo-name", self.name.clone());
        Ok(resp)
    }
}

/// Serves an echo service named `name` on `listener` over HTTP/1.1 and h2c until the task is dropped.
///
/// Tests and the conformance runner use it as a real upstream on 127.0.0.1.
pub async fn serve_echo(listener: tokio::net::TcpListener, name: impl Into<String>) {
    let service = Arc::new(EchoService::new(name));
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let local: SocketAddr = stream.local_addr().unwrap_or(peer);
        let service = service.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let service = service.clone();
                async move {
                    let req = crate::http_convert::request_from_hyper(req, peer, local);
                    let resp = match service.call(req).await {
                        Ok(r) => r,
                        Err(e) => Response::text(e.status, e.status.to_string()),
                    };
                    crate::http_convert::response_to_hyper(resp)
                }
            });
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
        });
    }
}
