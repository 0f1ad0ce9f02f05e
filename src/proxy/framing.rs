//! Request smuggling: an HTTP/1 request with both `Content-Length` and `Transfer-Encoding`.
//!
//! hyper reads such a request as chunked and drops `Content-Length` before the handler sees
//! it (RFC 9112 6.3 allows that), so the handler cannot tell. RFC 9112 6.1 also says such a
//! message "ought to be handled as an error", and nginx answers 400: a front proxy that read
//! it the other way would have framed a different request. So the connection's bytes are
//! watched on their way into hyper: each request head is parsed with the same parser hyper
//! uses (`httparse`) and its body skipped by the same framing rules, and the index of the
//! first head that carries both headers is recorded for the handler, which answers that
//! request 400 before any plugin or upstream sees it.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What the handler learns from the watcher of one connection.
#[derive(Debug)]
pub struct FramingWatch {
    /// Index of the first HTTP/1 request whose head had both CL and TE (`u64::MAX`: none).
    smuggling: AtomicU64,
    /// HTTP/1 requests handed to the handler so far.
    served: AtomicU64,
}

impl Default for FramingWatch {
    fn default() -> Self {
        FramingWatch {
            smuggling: AtomicU64::new(u64::MAX),
            served: AtomicU64::new(0),
        }
    }
}

impl FramingWatch {
    /// Counts one HTTP/1 request reaching the handler (hyper hands them over in order, one at
    /// a time) and says whether its head had both `Content-Length` and `Transfer-Encoding`.
    pub fn next_request_smuggles(&self) -> bool {
        let n = self.served.fetch_add(1, Ordering::SeqCst);
        self.smuggling.load(Ordering::SeqCst) == n
    }
}

/// Where the watcher is in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a request head (buffered until complete).
    Head,
    /// Skipping a sized body.
    Sized(u64),
    /// Chunked body: at the start of a chunk-size line (a hex digit is required).
    ChunkStart,
    /// Chunked body: in the size digits.
    ChunkSize(u64),
    /// Chunked body: blanks after the size.
    ChunkSizeLws(u64),
    /// Chunked body: a chunk extension, up to CR.
    ChunkExt(u64),
    /// Chunked body: LF ending the size line.
    ChunkSizeLf(u64),
    /// Chunked body: chunk data.
    ChunkData(u64),
    /// Chunked body: CR after the data.
    ChunkDataCr,
    /// Chunked body: LF after the data.
    ChunkDataLf,
    /// After the last chunk: CR of the final empty line, or the start of a trailer line.
    EndCr,
    /// After the last chunk: LF of the final empty line.
    EndLf,
    /// In a trailer line, up to CR.
    Trailer,
    /// LF ending a trailer line.
    TrailerLf,
    /// Not watching any more: HTTP/2, CONNECT, something hyper refuses, or a request
    /// already flagged (hyper closes the connection after it).
    Off,
}

/// The framing state machine of one connection (see the module documentation).
#[derive(Debug)]
pub struct Tracker {
    state: State,
    head: Vec<u8>,
    heads_seen: u64,
    max_head: usize,
    /// Index of the first request with both CL and TE.
    smuggling: Option<u64>,
}

/// How many header lines a head may have (hyper's default; beyond it hyper answers 431).
const MAX_HEADERS: usize = 100;

impl Tracker {
    /// A tracker for a new connection whose heads hyper bounds at `max_head` bytes.
    pub fn new(max_head: usize) -> Self {
        Tracker {
            state: State::Head,
            head: Vec::new(),
            heads_seen: 0,
            max_head,
            smuggling: None,
        }
    }

    /// The index of the first request whose head had both CL and TE, if any so far.
    pub fn smuggling(&self) -> Option<u64> {
        self.smuggling
    }

    /// Feeds bytes as they arrive.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.state {
                State::Off => return,
                State::Head => match self.take_head(bytes) {
                    Some(used) => bytes = &bytes[used..],
                    None => return,
                },
                State::Sized(n) | State::ChunkData(n) => {
                    let take = n.min(bytes.len() as u64);
                    bytes = &bytes[take as usize..];
                    let rest = n - take;
                    self.state = match (self.state, rest) {
                        (State::Sized(_), 0) => State::Head,
                        (State::Sized(_), r) => State::Sized(r),
                        (_, 0) => State::ChunkDataCr,
                        (_, r) => State::ChunkData(r),
                    };
                }
                _ => {
                    self.chunk_byte(bytes[0]);
                    bytes = &bytes[1..];
                }
            }
        }
    }

    /// Reads a request head from `bytes` (after what is buffered) and moves to its body.
    /// Returns how many of `bytes` the head used, or `None` when all were used and more are
    /// needed (or watching stopped). A head that arrives whole is parsed in place; only a
    /// head split across reads is copied.
    fn take_head(&mut self, bytes: &[u8]) -> Option<usize> {
        let buffered = self.head.len();
        // A head ends with an empty line; until one may be there, wait for more. Only the
        // new bytes (and the two before them) are searched: linear time even for a head
        // sent a byte at a time.
        // Stops at the first empty line: with many requests in one read, each search ends
        // at its own head.
        let may_end = |b: &[u8]| {
            b.iter().enumerate().any(|(i, &c)| {
                c == b'\n'
                    && match b.get(i + 1) {
                        Some(b'\n') => true,
                        Some(b'\r') => b.get(i + 2) == Some(&b'\n'),
                        _ => false,
                    }
            })
        };
        let ends = if buffered == 0 {
            may_end(bytes)
        } else {
            self.head.extend_from_slice(bytes);
            may_end(&self.head[buffered.saturating_sub(2)..])
        };
        if !ends {
            self.keep_partial(bytes, buffered);
            return None;
        }
        let parsed = {
            let text: &[u8] = if buffered == 0 { bytes } else { &self.head };
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(text) {
                Ok(httparse::Status::Complete(len)) => Ok((len, framing_of(&req))),
                Ok(httparse::Status::Partial) => Err(true),
                // hyper refuses it too (HTTP/2's preface is one of these) and closes.
                Err(_) => Err(false),
            }
        };
        let (len, (next, smuggles)) = match parsed {
            Ok(p) => p,
            Err(partial) => {
                if partial {
                    self.keep_partial(bytes, buffered);
                } else {
                    self.state = State::Off;
                    self.head = Vec::new();
                }
                return None;
            }
        };
        if smuggles {
            self.smuggling = Some(self.heads_seen);
        }
        self.heads_seen += 1;
        self.state = next;
        // A large head split across reads leaves no large buffer behind it.
        if self.head.capacity() > 16 << 10 {
            self.head = Vec::new();
        } else {
            self.head.clear();
        }
        (next != State::Off).then_some(len - buffered)
    }

    /// Keeps the start of a head until the rest arrives (within hyper's limit).
    fn keep_partial(&mut self, bytes: &[u8], buffered: usize) {
        if buffered == 0 {
            self.head.extend_from_slice(bytes);
        }
        if self.head.len() > self.max_head {
            self.state = State::Off;
            self.head = Vec::new();
        }
    }

    /// One byte of chunked framing outside chunk data, by hyper's rules (CRLF required).
    fn chunk_byte(&mut self, b: u8) {
        use State::*;
        self.state = match (self.state, b) {
            (ChunkStart, b) if hex(b).is_some() => ChunkSize(hex(b).unwrap_or(0)),
            (ChunkSize(n), b) if hex(b).is_some() => match n.checked_mul(16) {
                Some(m) => ChunkSize(m + hex(b).unwrap_or(0)),
                None => Off,
            },
            (ChunkSize(n) | ChunkSizeLws(n), b'\t' | b' ') => ChunkSizeLws(n),
            (ChunkSize(n) | ChunkSizeLws(n) | ChunkExt(n), b'\r') => ChunkSizeLf(n),
            (ChunkSize(n) | ChunkSizeLws(n), b';') => ChunkExt(n),
            (ChunkExt(_), b'\n') => Off,
            (ChunkExt(n), _) => ChunkExt(n),
            (ChunkSizeLf(0), b'\n') => EndCr,
            (ChunkSizeLf(n), b'\n') => ChunkData(n),
            (ChunkDataCr, b'\r') => ChunkDataLf,
            (ChunkDataLf, b'\n') => ChunkStart,
            (EndCr, b'\r') => EndLf,
            (EndCr, _) => Trailer,
            (Trailer, b'\r') => TrailerLf,
            (Trailer, _) => Trailer,
            (TrailerLf, b'\n') => EndCr,
            (EndLf, b'\n') => Head,
            _ => Off,
        };
    }
}

/// How the body of a parsed head is framed, by hyper's rules (RFC 9112 6.3), and whether the
/// head carries both `Content-Length` and `Transfer-Encoding`. `Off` where hyper refuses the
/// request or leaves HTTP/1 (CONNECT), or after a request that smuggles (hyper closes the
/// connection after it).
fn framing_of(req: &httparse::Request<'_, '_>) -> (State, bool) {
    let mut te: Option<&[u8]> = None;
    let mut lengths = Vec::new();
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("content-length") {
            lengths.push(h.value);
        }
    }
    if te.is_some() && !lengths.is_empty() {
        return (State::Off, true);
    }
    let state = if req.method == Some("CONNECT") {
        State::Off
    } else if let Some(te) = te {
        if last_coding_is_chunked(te) {
            State::ChunkStart
        } else {
            State::Off
        }
    } else if lengths.is_empty() {
        State::Head
    } else {
        match one_length(&lengths) {
            Some(0) => State::Head,
            Some(n) => State::Sized(n),
            None => State::Off,
        }
    };
    (state, false)
}

fn hex(b: u8) -> Option<u64> {
    (b as char).to_digit(16).map(u64::from)
}

/// hyper's rule: chunked when the last coding of the (last) Transfer-Encoding is `chunked`.
fn last_coding_is_chunked(value: &[u8]) -> bool {
    let text = String::from_utf8_lossy(value);
    text.rsplit(',')
        .next()
        .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"))
}

/// The one length all Content-Length fields agree on (digits only, as hyper), else `None`.
fn one_length(values: &[&[u8]]) -> Option<u64> {
    let mut found = None;
    for v in values {
        if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n: u64 = std::str::from_utf8(v).ok()?.parse().ok()?;
        if found.is_some_and(|f| f != n) {
            return None;
        }
        found = Some(n);
    }
    found
}

/// A connection whose incoming bytes pass through a [`Tracker`] on their way to hyper.
pub struct Watched<S> {
    inner: S,
    tracker: Tracker,
    watch: Arc<FramingWatch>,
}

impl<S> Watched<S> {
    /// Watches `inner`; the handler reads the findings from `watch`.
    pub fn new(inner: S, max_head: usize, watch: Arc<FramingWatch>) -> Self {
        Watched {
            inner,
            tracker: Tracker::new(max_head),
            watch,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.tracker.feed(&buf.filled()[before..]);
            if let Some(i) = this.tracker.smuggling() {
                this.watch.smuggling.store(i, Ordering::SeqCst);
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` in pieces of `step` and returns (heads seen, smuggling index, state).
    fn run(bytes: &[u8], step: usize) -> (u64, Option<u64>, State) {
        let mut t = Tracker::new(1 << 20);
        for piece in bytes.chunks(step) {
            t.feed(piece);
        }
        (t.heads_seen, t.smuggling, t.state)
    }

    #[test]
    fn follows_sized_and_chunked_bodies_in_any_split() {
        let stream: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\
            POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
            POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
            a;x=\"y\"\r\n0123456789\r\n1 \r\nZ\r\n0\r\nT: 1\r\nU: 2\r\n\r\n\
            \r\nGET /next HTTP/1.1\r\n\r\n";
        for step in [1, 2, 3, 7, 64, stream.len()] {
            assert_eq!(run(stream, step), (4, None, State::Head), "step {step}");
        }
    }

    #[test]
    fn flags_the_request_with_both_headers_not_a_body_that_looks_like_one() {
        let decoy = b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut stream =
            format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", decoy.len()).into_bytes();
        stream.extend_from_slice(decoy);
        for step in [1, 5, stream.len()] {
            assert_eq!(run(&stream, step), (1, None, State::Head), "step {step}");
        }
        stream.extend_from_slice(
            b"POST / HTTP/1.1\r\ncontent-length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        );
        for step in [1, 5, stream.len()] {
            assert_eq!(run(&stream, step), (2, Some(1), State::Off), "step {step}");
        }
    }

    #[test]
    fn many_pipelined_requests_in_one_read() {
        let stream = b"GET / HTTP/1.1\r\n\r\n".repeat(100_000);
        assert_eq!(run(&stream, stream.len()), (100_000, None, State::Head));
    }

    #[test]
    fn stops_watching_what_hyper_refuses() {
        assert_eq!(run(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 4).2, State::Off);
        assert_eq!(
            run(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 100).2,
            State::Off
        );
        assert_eq!(
            run(
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                100
            )
            .2,
            State::Off
        );
        assert_eq!(
            run(
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello",
                100
            )
            .2,
            State::Off
        );
        assert_eq!(
            run(b"CONNECT a:1 HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 100).1,
            None
        );
    }
}
