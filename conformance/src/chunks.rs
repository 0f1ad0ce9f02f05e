//! A body sent in pieces, with a pause before each piece after the first, so the other side
//! reads them as separate chunks (bodies that arrive in several reads, as on a real network).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

/// The pause before each chunk after the first.
pub const GAP: Duration = Duration::from_millis(20);

/// Data chunks, then trailers if any.
pub struct Chunked {
    chunks: std::collections::VecDeque<Bytes>,
    trailers: Option<http::HeaderMap>,
    first: bool,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Chunked {
    /// A body of `chunks` (sent in order) ending with `trailers`.
    pub fn new(chunks: &[String], trailers: Option<http::HeaderMap>) -> Chunked {
        Chunked {
            chunks: chunks.iter().map(|c| Bytes::from(c.clone())).collect(),
            trailers: trailers.filter(|t| !t.is_empty()),
            first: true,
            sleep: None,
        }
    }
}

impl Body for Chunked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.chunks.is_empty() {
            return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))));
        }
        if !self.first {
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(GAP)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.sleep = None;
        }
        self.first = false;
        Poll::Ready(self.chunks.pop_front().map(|c| Ok(Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty() && self.trailers.is_none()
    }
}

/// A body as a case gives it, and what its head needs for the trailers to be sent.
pub struct Framed {
    /// The body: `data` whole, or the chunks apart, then the trailers.
    pub body: BoxBody<Bytes, Infallible>,
    /// The `Trailer` field declaring the trailers (HTTP/1 sends only declared ones).
    pub trailer: Option<String>,
    /// Whole data with trailers has a known length, which HTTP/1 would send as
    /// content-length, leaving no room for trailers: the head must say
    /// `transfer-encoding: chunked` (HTTP/1 only).
    pub needs_chunked: bool,
}

/// `data` whole (or `chunks` apart, when there are any) ending with `trailers`.
pub fn framed(data: Bytes, chunks: &[String], trailers: http::HeaderMap) -> Framed {
    let trailer = (!trailers.is_empty()).then(|| declared(&trailers));
    if !chunks.is_empty() {
        return Framed {
            body: Chunked::new(chunks, Some(trailers)).boxed(),
            trailer,
            needs_chunked: false,
        };
    }
    if trailers.is_empty() {
        return Framed {
            body: Full::new(data).boxed(),
            trailer,
            needs_chunked: false,
        };
    }
    Framed {
        body: Full::new(data)
            .with_trailers(std::future::ready(Some(Ok(trailers))))
            .boxed(),
        trailer,
        needs_chunked: true,
    }
}

/// `[name, value]` pairs as trailer fields.
pub fn trailer_map(pairs: &[(String, String)]) -> anyhow::Result<http::HeaderMap> {
    let mut map = http::HeaderMap::new();
    for (n, v) in pairs {
        map.append(
            http::HeaderName::from_bytes(n.as_bytes())?,
            http::HeaderValue::from_str(v)?,
        );
    }
    Ok(map)
}

/// The value of a `Trailer` field declaring `map`'s names.
pub fn declared(map: &http::HeaderMap) -> String {
    map.keys()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
