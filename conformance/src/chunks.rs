//! A body sent in pieces, with a pause before each piece after the first, so the other side
//! reads them as separate chunks (bodies that arrive in several reads, as on a real network).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};

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
