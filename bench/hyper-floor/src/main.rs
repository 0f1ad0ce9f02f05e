//! `hyper-floor LISTEN UPSTREAM`: a reverse proxy with nothing but hyper's HTTP/1 server and
//! hyper_util's pooled client (200 idle connections per host, as wasmgate's default), on the
//! same tokio runtime wasmgate uses. No routing, no header rules, no timeouts, no logs: what is
//! left is the stack's own cost, which `bench/run` compares with nginx and with bare wasmgate.

use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: hyper-floor LISTEN_ADDR http://UPSTREAM_HOST:PORT");
        std::process::exit(2);
    };
    let upstream = upstream.trim_end_matches('/').to_string();
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(200)
        .build(connector);
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .unwrap_or_else(|e| panic!("cannot listen on {listen}: {e}"));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (client, upstream) = (client.clone(), upstream.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
                *req.uri_mut() = format!("{upstream}{target}").parse().expect("a valid URI");
                client.request(req)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
