//! Upstream body timing: when a request body has been written (so that
//! `responseHeaderTimeout` starts then, as in Go's `net/http`), and a response body that
//! stops sending (cut after `idleConnTimeout` without a byte).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};
use wasmgate_abi::{Body, BodyError};

/// A request body that says when it has been read to its end, i.e. handed to the upstream
/// connection whole.
pub struct SignalOnEnd {
    inner: Body,
    written: Option<oneshot::Sender<()>>,
}

impl SignalOnEnd {
    /// Wraps `inner`; the receiver hears once it is over (or errs if it is dropped first).
    pub fn new(inner: Body) -> (Self, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (
            SignalOnEnd {
                inner,
                written: Some(tx),
            },
            rx,
        )
    }

    fn signal(&mut self) {
        if let Some(tx) = self.written.take() {
            let _ = tx.send(());
        }
    }
}

impl http_body::Body for SignalOnEnd {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.signal(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.signal(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Why an upstream's response body was cut.
#[derive(Debug, thiserror::Error)]
#[error("the upstream sent no byte of its response body for {0:?} (idleConnTimeout)")]
pub struct UpstreamStalled(pub Duration);

/// An upstream response body that fails when the upstream sends nothing for `limit`. Only
/// time spent waiting on the upstream counts: a slow reader downstream does not.
pub struct StallCut<B> {
    inner: B,
    limit: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether the timer runs for the current wait (reset by each frame).
    waiting: bool,
}

impl<B> StallCut<B> {
    /// Wraps `inner`, cut after `limit` without a frame.
    pub fn new(inner: B, limit: Duration) -> Self {
        StallCut {
            inner,
            limit,
            timer: None,
            waiting: false,
        }
    }
}

impl<B> http_body::Body for StallCut<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BodyError>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                if !this.waiting {
                    this.waiting = true;
                    let deadline = Instant::now() + this.limit;
                    match &mut this.timer {
                        Some(t) => t.as_mut().reset(deadline),
                        None => this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                }
                match this.timer.as_mut().map(|t| t.as_mut().poll(cx)) {
                    Some(Poll::Ready(())) => {
                        Poll::Ready(Some(Err(UpstreamStalled(this.limit).into())))
                    }
                    _ => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
