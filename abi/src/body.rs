//! Message bodies: streamed by default, buffered only when a middleware asks.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};

use crate::headers::Headers;

/// The error a body stream may end with (a reset client, a broken upstream...).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// A request or response body: a stream of data frames, optionally ending in trailers.
pub struct Body {
    inner: BoxBody<Bytes, BodyError>,
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
            inner: Empty::new().map_err(|never| match never {}).boxed(),
        }
    }

    /// A body of one chunk.
    pub fn full(data: impl Into<Bytes>) -> Self {
        Body {
            inner: Full::new(data.into())
                .map_err(|never| match never {})
                .boxed(),
        }
    }

    /// Wraps any `http_body::Body` (hyper's `Incoming`, say) without reading it.
    pub fn from_stream<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BodyError>,
    {
        Body {
            inner: body.map_err(Into::into).boxed(),
        }
    }

    /// Whether the stream is known to be over (an empty body, say).
    pub fn is_end_stream(&self) -> bool {
        http_body::Body::is_end_stream(&self.inner)
    }

    /// Reads the whole body, failing once more than `limit` bytes of data arrive.
    pub async fn buffer(mut self, limit: usize) -> Result<BufferedBody, BufferError> {
        let mut data = BytesMut::new();
        let mut trailers = None;
        while let Some(frame) = self.inner.frame().await {
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
                        trailers = Some(Headers::from(&t));
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
        let map = trailers.to_header_map().unwrap_or_default();
        Body::from_stream(DataThenTrailers {
            data: Some(b.data).filter(|d| !d.is_empty()),
            trailers: Some(map),
        })
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
            .field("size_hint", &http_body::Body::size_hint(&self.inner))
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
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A buffered body that still carries trailers: one data frame, then the trailers.
struct DataThenTrailers {
    data: Option<Bytes>,
    trailers: Option<http::HeaderMap>,
}

impl http_body::Body for DataThenTrailers {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(d) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
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
