//! Message bodies: streamed by default, buffered only when a middleware asks.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;

use crate::headers::Headers;

/// The error a body stream may end with (a reset client, a broken upstream...).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// A request or response body: a stream of data frames, optionally ending in trailers.
pub struct Body {
    inner: Inner,
}

/// Empty and in-memory bodies need no allocation; only real streams are boxed.
enum Inner {
    Empty,
    Full(Option<Bytes>),
    /// Buffered data with trailers known in advance (see [`Body::trailer_names`]).
    Trailed(Box<DataThenTrailers>),
    Stream(BoxBody<Bytes, BodyError>),
}

/// A body read to its end: all data and the trailers, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BufferedBody {
    /// All data frames, concatenated.
    pub data: Bytes,
    /// Trailers, when the stream carried any.
    pub trailers: Option<Headers>,
}

/// Why buffering a body failed.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// The body is larger than the limit the middleware set.
    #[error("body exceeds the {limit}-byte buffer limit")]
    TooLarge {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// The stream itself failed.
    #[error("body stream failed: {0}")]
    Stream(BodyError),
}

impl Body {
    /// A body with no data.
    pub fn empty() -> Self {
        Body {
            inner: Inner::Empty,
        }
    }

    /// A body of one chunk.
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        Body {
            inner: if data.is_empty() {
                Inner::Empty
            } else {
                Inner::Full(Some(data))
            },
        }
    }

    /// Wraps any `http_body::Body` (hyper's `Incoming`, say) without reading it.
    pub fn from_stream<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BodyError>,
    {
        Body {
            inner: Inner::Stream(body.map_err(Into::into).boxed()),
        }
    }

    /// What was read off the front of `rest` put back: `chunks` first, then `trailers` (which
    /// end the body) or else the rest of `rest`. Just `rest` when nothing was read.
    pub fn put_back(
        chunks: impl IntoIterator<Item = Bytes>,
        trailers: Option<http::HeaderMap>,
        rest: Body,
    ) -> Body {
        let chunks: std::collections::VecDeque<Bytes> =
            chunks.into_iter().filter(|c| !c.is_empty()).collect();
        if chunks.is_empty() && trailers.is_none() {
            return rest;
        }
        Body::from_stream(PutBack {
            chunks,
            trailers,
            rest,
        })
    }

    /// The names of the trailers this body will end with, comma-separated, when they are known
    /// before it is sent (a buffered body a middleware put back). HTTP/1 sends only trailers
    /// the head declares in a `Trailer` field, so the edge of the proxy declares these.
    pub fn trailer_names(&self) -> Option<String> {
        let Inner::Trailed(t) = &self.inner else {
            return None;
        };
        let map = t.trailers.as_ref()?;
        let mut names: Vec<&str> = Vec::new();
        for k in map.keys() {
            if !names.contains(&k.as_str()) {
                names.push(k.as_str());
            }
        }
        Some(names.join(", "))
    }

    /// Whether the stream is known to be over (an empty body, say).
    pub fn is_end_stream(&self) -> bool {
        http_body::Body::is_end_stream(self)
    }

    /// Reads the whole body, failing once more than `limit` bytes of data arrive.
    pub async fn buffer(mut self, limit: usize) -> Result<BufferedBody, BufferError> {
        let mut data = BytesMut::new();
        let mut trailers = None;
        while let Some(frame) = self.frame().await {
            let frame = frame.map_err(BufferError::Stream)?;
            match frame.into_data() {
                Ok(chunk) => {
                    if data.len() + chunk.len() > limit {
                        return Err(BufferError::TooLarge { limit });
                    }
                    data.extend_from_slice(&chunk);
                }
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        trailers = Some(Headers::from(t));
                    }
                }
            }
        }
        Ok(BufferedBody {
            data: data.freeze(),
            trailers,
        })
    }
}

impl From<BufferedBody> for Body {
    fn from(b: BufferedBody) -> Self {
        let Some(trailers) = b.trailers.filter(|t| !t.is_empty()) else {
            return Body::full(b.data);
        };
        // Invalid trailer bytes were put there by a middleware; drop them rather than fail the stream.
        let map = trailers.into_header_map().unwrap_or_default();
        Body {
            inner: Inner::Trailed(Box::new(DataThenTrailers {
                data: Some(b.data).filter(|d| !d.is_empty()),
                trailers: Some(map),
            })),
        }
    }
}

impl Default for Body {
    fn default() -> Self {
        Body::empty()
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body")
            .field("size_hint", &http_body::Body::size_hint(self))
            .finish()
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.inner {
            Inner::Empty => Poll::Ready(None),
            Inner::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Inner::Trailed(t) => Poll::Ready(t.next_frame().map(Ok)),
            Inner::Stream(s) => Pin::new(s).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Empty => true,
            Inner::Full(data) => data.is_none(),
            Inner::Trailed(t) => t.data.is_none() && t.trailers.is_none(),
            Inner::Stream(s) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Empty => SizeHint::with_exact(0),
            Inner::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Inner::Trailed(t) => {
                // Not exact: with a known length HTTP/1 sends content-length, which has no
                // room for trailers; this way it sends the body chunked.
                let mut h = SizeHint::new();
                h.set_lower(t.data.as_ref().map_or(0, |d| d.len() as u64));
                h
            }
            Inner::Stream(s) => s.size_hint(),
        }
    }
}

/// A buffered body that still carries trailers: one data frame, then the trailers.
struct DataThenTrailers {
    data: Option<Bytes>,
    trailers: Option<http::HeaderMap>,
}

impl DataThenTrailers {
    fn next_frame(&mut self) -> Option<Frame<Bytes>> {
        if let Some(d) = self.data.take() {
            return Some(Frame::data(d));
        }
        self.trailers.take().map(Frame::trailers)
    }
}

/// See [`Body::put_back`].
struct PutBack {
    chunks: std::collections::VecDeque<Bytes>,
    trailers: Option<http::HeaderMap>,
    rest: Body,
}

impl http_body::Body for PutBack {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Some(c) = self.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(c))));
        }
        // Trailers end a stream: once read, the rest has nothing left.
        if let Some(t) = self.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(t))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    // Passes the end of the stream on, so a proxy-wasm filter later in the chain gets
    // end_of_stream with the last chunk (as Envoy) rather than in a separate empty call.
    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty() && self.trailers.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let kept: u64 = self.chunks.iter().map(|c| c.len() as u64).sum();
        let rest = http_body::Body::size_hint(&self.rest);
        let mut h = SizeHint::new();
        h.set_lower(rest.lower() + kept);
        if let Some(upper) = rest.upper() {
            h.set_upper(upper + kept);
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn buffers_data_and_trailers() {
        let trailers: Headers = [("grpc-status", "0")].into_iter().collect();
        let body = Body::from(BufferedBody {
            data: Bytes::from_static(b"hello"),
            trailers: Some(trailers.clone()),
        });
        let got = body.buffer(1024).await.unwrap();
        assert_eq!(got.data, Bytes::from_static(b"hello"));
        assert_eq!(got.trailers, Some(trailers));
    }

    #[tokio::test]
    async fn in_memory_bodies_report_exact_sizes_and_end() {
        use http_body::Body as _;
        let empty = Body::empty();
        assert!(empty.is_end_stream());
        assert_eq!(empty.size_hint().exact(), Some(0));
        let mut full = Body::full("abc");
        assert!(!full.is_end_stream());
        assert_eq!(full.size_hint().exact(), Some(3));
        let frame = full.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), Bytes::from_static(b"abc"));
        assert!(full.is_end_stream());
        assert!(full.frame().await.is_none());
        assert!(Body::full("").is_end_stream());
    }

    #[tokio::test]
    async fn buffer_limit_is_enforced() {
        let err = Body::full("0123456789").buffer(9).await.unwrap_err();
        assert!(matches!(err, BufferError::TooLarge { limit: 9 }));
        assert_eq!(
            Body::full("0123456789")
                .buffer(10)
                .await
                .unwrap()
                .data
                .len(),
            10
        );
    }
}
