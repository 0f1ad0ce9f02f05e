//! HTTP/1.1 upgrades (WebSocket and the like): the upgrade request and the upstream's 101 go
//! through the middlewares like any request and response (plugins see both); then the client's
//! connection and the upstream's are joined and bytes flow both ways until either closes.
//!
//! `Connection` and `Upgrade` are hop-by-hop, so the request carries the protocol asked for in
//! [`UpgradeRequested`] for the load balancer to ask the upstream again, and the response the
//! protocol the upstream accepted in [`UpgradeAccepted`].

use http::header::{CONNECTION, UPGRADE};
use http::HeaderValue;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// In a request's extensions: the client asked to upgrade to this protocol.
#[derive(Debug, Clone)]
pub struct UpgradeRequested(pub HeaderValue);

/// In a response's extensions: the upstream switched to this protocol.
#[derive(Debug, Clone)]
pub struct UpgradeAccepted(pub HeaderValue);

/// The protocol an HTTP/1.1 request asks to upgrade to (`Connection: upgrade` and `Upgrade`).
pub fn requested<B>(req: &hyper::Request<B>) -> Option<HeaderValue> {
    if req.version() != http::Version::HTTP_11 {
        return None;
    }
    let asks = req.headers().get_all(CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
    });
    asks.then(|| req.headers().get(UPGRADE).cloned()).flatten()
}

/// Sets the headers that make `headers` an upgrade to `protocol` (after the hop-by-hop ones
/// were removed).
pub fn set_upgrade_headers(headers: &mut wasmgate_abi::Headers, protocol: &HeaderValue) {
    headers.set(http::header::CONNECTION, "upgrade");
    headers.set(
        "upgrade",
        bytes::Bytes::copy_from_slice(protocol.as_bytes()),
    );
}

/// Joins the client's connection and the upstream's once both have switched, on a task of
/// its own; bytes go both ways until either side closes.
pub fn splice(client: OnUpgrade, upstream: OnUpgrade, peer: std::net::SocketAddr) {
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(client = %peer, "upgrade failed: {e}");
                return;
            }
        };
        let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
        match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            Ok((up, down)) => {
                tracing::debug!(client = %peer, up, down, "upgraded connection closed")
            }
            Err(e) => tracing::debug!(client = %peer, "upgraded connection ended: {e}"),
        }
    });
}
