//! Client connection timeouts (`respondingTimeouts`), with Go's `net/http` meanings, which
//! Traefik's are:
//!
//! - `readTimeout` bounds reading a whole request, head and body: from the connection's
//!   start for its first request, else from the first byte of the request.
//! - `writeTimeout` bounds the response: from the end of the request's head to the last byte
//!   written.
//! - `idleTimeout` bounds the wait for the next request on a keep-alive connection.
//!
//! hyper's `header_read_timeout` covers the head only, and starts as soon as hyper waits for
//! a head, idle keep-alive time included; so on HTTP/1 these deadlines are kept here, on the
//! socket: a read or write past its deadline fails, which closes the connection. On HTTP/2,
//! where streams share the connection, `readTimeout` is a deadline on each request body
//! (the stream fails), and `idleTimeout` applies while no stream is open.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use wasmgate_abi::{Body, BodyError};

use crate::config::EntryPointConfig;

/// Traefik's default `readTimeout`.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Traefik's default `idleTimeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(180);

/// One entry point's client timeouts; `None` is no limit.
#[derive(Debug, Clone, Copy)]
pub struct RespondingLimits {
    read: Option<Duration>,
    write: Option<Duration>,
    idle: Option<Duration>,
}

fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

impl RespondingLimits {
    /// How long a TLS handshake may take: the read timeout, as Go's server does (or the default
    /// read timeout when reads have none: an endless handshake would hold a slot forever).
    pub fn handshake(&self) -> Duration {
        self.read.unwrap_or(DEFAULT_READ_TIMEOUT)
    }

    /// The limits of `ep`, defaults filled in (`0s` is none, as in Traefik).
    pub fn new(ep: &EntryPointConfig) -> Self {
        let t = &ep.transport.responding_timeouts;
        let read = nonzero(t.read_timeout.unwrap_or(DEFAULT_READ_TIMEOUT));
        RespondingLimits {
            read,
            write: t.write_timeout.and_then(nonzero),
            // Go's server: an idle timeout of zero falls back to the read timeout.
            idle: nonzero(t.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT)).or(read),
        }
    }
}

/// Where an HTTP/1 connection is in its request cycle.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Between requests: waiting for the first byte of the next one.
    Waiting,
    /// Reading a request's head or body, until the deadline.
    Reading(Option<Instant>),
    /// The request is read; its response is on its way.
    Handling,
    /// Upgraded (a WebSocket, say): the connection carries another protocol now, which keeps
    /// its own time; no deadline applies any more.
    Upgraded,
}

#[derive(Debug)]
struct ClockState {
    phase: Phase,
    /// Known from its first request; HTTP/2 connections keep no phase.
    http2: bool,
    /// Requests whose responses are not sent yet.
    in_flight: usize,
    idle_since: Instant,
    /// HTTP/1: when writing the current response must be over.
    write_deadline: Option<Instant>,
    /// The connection's reader, waiting with no deadline: woken when one starts to apply.
    reader: Option<Waker>,
    /// HTTP/1: the rest of the current request's body, dropped before its end by whoever
    /// had it (a middleware that answered without it); drained before the response so the
    /// connection can carry the next request (see [`ConnClock::take_abandoned_body`]).
    abandoned: Option<Incoming>,
}

/// The deadlines of one client connection, shared by its socket and its requests.
#[derive(Debug)]
pub struct ConnClock {
    limits: RespondingLimits,
    state: Mutex<ClockState>,
}

fn after(d: Option<Duration>) -> Option<Instant> {
    d.map(|d| Instant::now() + d)
}

impl ConnClock {
    /// The clock of a connection accepted now: its first request must be read within
    /// `readTimeout` from now.
    pub fn new(limits: RespondingLimits) -> Arc<Self> {
        Arc::new(ConnClock {
            limits,
            state: Mutex::new(ClockState {
                phase: Phase::Reading(after(limits.read)),
                http2: false,
                in_flight: 0,
                idle_since: Instant::now(),
                write_deadline: None,
                reader: None,
                abandoned: None,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ClockState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read_deadline(&self, s: &ClockState) -> Option<Instant> {
        let idle = || self.limits.idle.map(|d| s.idle_since + d);
        if s.http2 {
            return if s.in_flight == 0 { idle() } else { None };
        }
        match s.phase {
            Phase::Waiting => idle(),
            Phase::Reading(deadline) => deadline,
            Phase::Handling | Phase::Upgraded => None,
        }
    }

    /// A request's head has been read: counts it in flight until the returned guard goes
    /// (with its response body), and starts its write deadline.
    pub fn request_started(self: &Arc<Self>, version: http::Version, has_body: bool) -> InFlight {
        let mut s = self.lock();
        s.in_flight += 1;
        s.abandoned = None;
        if version >= http::Version::HTTP_2 {
            s.http2 = true;
        } else {
            s.phase = match (has_body, s.phase) {
                (false, _) => Phase::Handling,
                (true, Phase::Reading(d)) => Phase::Reading(d),
                // Pipelined: its bytes came while the previous request was handled.
                (true, _) => Phase::Reading(after(self.limits.read)),
            };
            s.write_deadline = after(self.limits.write);
        }
        InFlight(self.clone())
    }

    /// The body of the current HTTP/1 request has been read to its end.
    fn request_body_done(&self) {
        let mut s = self.lock();
        if !s.http2 && matches!(s.phase, Phase::Reading(_)) {
            s.phase = Phase::Handling;
        }
    }

    /// The connection was upgraded (its 101 is on its way): from now on it carries another
    /// protocol, and no read, write or idle deadline applies.
    pub fn upgraded(&self) {
        let mut s = self.lock();
        s.phase = Phase::Upgraded;
        s.write_deadline = None;
        if let Some(w) = s.reader.take() {
            w.wake();
        }
    }

    /// The rest of the current HTTP/1 request's body if it was dropped before its end (a
    /// middleware answered without it). Unless it is read, hyper cannot read the next request
    /// on the connection.
    pub fn take_abandoned_body(&self) -> Option<Incoming> {
        self.lock().abandoned.take()
    }

    fn request_body_dropped(&self, rest: Incoming) {
        let mut s = self.lock();
        if !s.http2 && matches!(s.phase, Phase::Reading(_)) {
            s.abandoned = Some(rest);
        }
    }

    fn bytes_arrived(&self) {
        let mut s = self.lock();
        if !s.http2 && matches!(s.phase, Phase::Waiting) {
            s.phase = Phase::Reading(after(self.limits.read));
        }
    }

    /// The `readTimeout` deadline of a request body that starts now, for HTTP/2 streams.
    pub fn stream_read_deadline(&self) -> Option<Instant> {
        after(self.limits.read)
    }
}

/// A request in flight (see [`ConnClock::request_started`]).
#[derive(Debug)]
pub struct InFlight(Arc<ConnClock>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        if s.in_flight == 0 {
            s.idle_since = Instant::now();
            if !s.http2 && !matches!(s.phase, Phase::Upgraded) {
                s.phase = Phase::Waiting;
                s.write_deadline = None;
            }
            // The idle deadline now applies to a reader that had none.
            if let Some(w) = s.reader.take() {
                w.wake();
            }
        }
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what} timeout"))
}

/// Polls `timer` toward `deadline`: ready once it has passed. A timer set to go off before
/// `deadline` is left as it is, and moved when it goes off: the idle deadline moves with every
/// request, and moving a timer takes the timer wheel's lock.
fn expired(timer: &mut Option<Pin<Box<Sleep>>>, deadline: Instant, cx: &mut Context<'_>) -> bool {
    let t = match timer {
        Some(t) => {
            if t.deadline() > deadline {
                t.as_mut().reset(deadline);
            }
            t
        }
        None => timer.insert(Box::pin(tokio::time::sleep_until(deadline))),
    };
    while t.as_mut().poll(cx).is_ready() {
        if t.deadline() >= deadline {
            return true;
        }
        t.as_mut().reset(deadline);
    }
    false
}

/// A client socket whose reads and writes fail past the connection's deadlines.
pub struct Timed<S> {
    inner: S,
    clock: Arc<ConnClock>,
    read_timer: Option<Pin<Box<Sleep>>>,
    write_timer: Option<Pin<Box<Sleep>>>,
}

impl<S> Timed<S> {
    /// Puts `inner` under `clock`.
    pub fn new(inner: S, clock: Arc<ConnClock>) -> Self {
        Timed {
            inner,
            clock,
            read_timer: None,
            write_timer: None,
        }
    }

    /// `Pending`, or an error once the write deadline has passed.
    fn write_pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let deadline = self.clock.lock().write_deadline;
        match deadline {
            Some(d) if expired(&mut self.write_timer, d, cx) => {
                Poll::Ready(Err(timed_out("write")))
            }
            _ => Poll::Pending,
        }
    }

    fn write_expired(&self) -> bool {
        let deadline = self.clock.lock().write_deadline;
        deadline.is_some_and(|d| Instant::now() >= d)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Timed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.clock.bytes_arrived();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let deadline = {
                    let mut s = this.clock.lock();
                    let d = this.clock.read_deadline(&s);
                    s.reader = d.is_none().then(|| cx.waker().clone());
                    d
                };
                match deadline {
                    Some(d) if expired(&mut this.read_timer, d, cx) => {
                        Poll::Ready(Err(timed_out("read")))
                    }
                    _ => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Timed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // As Go: past the deadline a write fails even if the socket would take it.
        if this.write_expired() {
            return Poll::Ready(Err(timed_out("write")));
        }
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Pending => this.write_pending(cx),
            done => done,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.write_pending(cx),
            done => done,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.write_expired() {
            return Poll::Ready(Err(timed_out("write")));
        }
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.write_pending(cx),
            done => done,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A client's request body: tells the clock when it has been read, and on HTTP/2 fails
/// past the stream's `readTimeout`.
pub struct ClientBody {
    /// Always there but in `drop`, which hands an unfinished one to the clock.
    inner: Option<Incoming>,
    clock: Arc<ConnClock>,
    deadline: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
    done: bool,
}

impl ClientBody {
    /// Wraps the body of a request that arrived in `version` on the connection of `clock`.
    pub fn new(inner: Incoming, clock: Arc<ConnClock>, version: http::Version) -> Self {
        let deadline = if version >= http::Version::HTTP_2 {
            clock.stream_read_deadline()
        } else {
            None
        };
        ClientBody {
            inner: Some(inner),
            clock,
            deadline,
            timer: None,
            done: false,
        }
    }

    fn finish(&mut self) {
        if !self.done {
            self.done = true;
            self.clock.request_body_done();
        }
    }
}

impl Drop for ClientBody {
    fn drop(&mut self) {
        if let Some(rest) = self.inner.take() {
            if !self.done && !http_body::Body::is_end_stream(&rest) {
                self.clock.request_body_dropped(rest);
            }
        }
    }
}

/// Why a client's request body ended early.
#[derive(Debug, thiserror::Error)]
#[error("the client did not send its request within readTimeout")]
pub struct ReadTimedOut;

impl http_body::Body for ClientBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(&mut *inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                if inner.is_end_stream() {
                    this.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Pending => match this.deadline {
                Some(d) if expired(&mut this.timer, d, cx) => {
                    Poll::Ready(Some(Err(ReadTimedOut.into())))
                }
                _ => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

/// A response body that keeps its request in flight until hyper is done with it.
pub struct ResponseBody {
    inner: Body,
    _in_flight: InFlight,
}

impl ResponseBody {
    /// `inner`, holding `in_flight` until it is dropped.
    pub fn new(inner: Body, in_flight: InFlight) -> Self {
        ResponseBody {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One look at `timer` toward `deadline`.
    async fn poll(timer: &mut Option<Pin<Box<Sleep>>>, deadline: Instant) -> bool {
        std::future::poll_fn(|cx| Poll::Ready(expired(timer, deadline, cx))).await
    }

    /// The idle deadline moves later with every request; the timer is not moved each time,
    /// but the deadline still holds: not before it, and at it.
    #[tokio::test(start_paused = true)]
    async fn a_timer_left_early_still_keeps_the_later_deadline() {
        let start = Instant::now();
        let mut timer = None;
        let (first, later) = (
            start + Duration::from_secs(10),
            start + Duration::from_secs(25),
        );
        assert!(!poll(&mut timer, first).await);
        // Moved later: the timer stays where it was.
        assert!(!poll(&mut timer, later).await);
        assert_eq!(timer.as_ref().unwrap().deadline(), first);
        // It goes off at the first deadline: not expired yet, moved to the later one.
        tokio::time::sleep_until(first + Duration::from_millis(1)).await;
        assert!(!poll(&mut timer, later).await);
        assert_eq!(timer.as_ref().unwrap().deadline(), later);
        // Moved sooner: the timer follows at once.
        let sooner = start + Duration::from_secs(20);
        assert!(!poll(&mut timer, sooner).await);
        assert_eq!(timer.as_ref().unwrap().deadline(), sooner);
        tokio::time::sleep_until(sooner).await;
        assert!(poll(&mut timer, sooner).await);
        // And expired: a deadline already gone is at once.
        let mut fresh = None;
        assert!(poll(&mut fresh, start).await);
    }
}
