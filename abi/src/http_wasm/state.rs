//! Per-instance state: what the host functions of one instance see.
//!
//! While no request is in flight only the middleware's configuration and the
//! module-wide features exist. During a request an [`Exchange`] holds the
//! request (and later the response) the guest reads and changes; it moves into
//! the instance before each guest call and back out after it.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{StatusCode, Uri};
use http_body_util::BodyExt;

use super::abi::feature;
use crate::body::{Body, BufferError, BufferedBody};
use crate::guest::{HostBudget, OverBudget};
use crate::headers::Headers;
use crate::model::Request;

/// What every instance of one middleware shares.
pub struct MiddlewareShared {
    /// The plugin's declared name.
    pub plugin: String,
    /// The middleware's name.
    pub middleware: Arc<str>,
    /// Bytes `get_config` returns.
    pub config: Vec<u8>,
    /// Lowest http-wasm log level that is enabled (from the `tracing` level in force).
    pub min_log_level: i32,
    /// Largest body the host buffers.
    pub max_body_bytes: usize,
    /// `maxHostBytes`: most bytes the host functions copy from the guest during one request.
    pub max_host_bytes: usize,
    /// The module imports WASI `fd_write`: its calls are marked for its stdout's log lines.
    pub writes_stdio: bool,
}

/// The host data of one http-wasm instance.
pub struct HttpWasmState {
    /// Configuration and names.
    pub shared: Arc<MiddlewareShared>,
    /// Features enabled during start-up: in force for every request of this instance.
    pub module_features: u32,
    /// The request in flight, if any (boxed: it moves in and out of the instance around every
    /// guest call, and moving a pointer is cheaper than moving the exchange).
    pub exchange: Option<Box<Exchange>>,
    /// The guest's handler exports, looked up once at start-up.
    pub handlers: Option<std::sync::Arc<super::Handlers>>,
    /// This instance's share of the middleware's linear memory, for metrics.
    pub memory: crate::guest::MemoryShare,
    /// Where the host functions that return a list or the URI build it before copying it to
    /// the guest: kept across calls, so a call allocates nothing once it has grown.
    pub scratch: Vec<u8>,
}

impl HttpWasmState {
    /// The state of a new instance of the middleware `shared` describes, before start-up.
    pub fn new(shared: Arc<MiddlewareShared>, memory: crate::guest::MemoryShare) -> Self {
        HttpWasmState {
            shared,
            module_features: 0,
            exchange: None,
            handlers: None,
            memory,
            scratch: Vec::new(),
        }
    }
}

/// Which handler is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `handle_request`: before next.
    Request,
    /// `handle_response`: after next.
    Response,
}

/// The request body as the guest sees it: a stream it reads from the front.
///
/// Guest calls never wait for the body: what a guest may read during a call is read ahead
/// before it ([`RequestBody::read_ahead`]), at most `maxBodyBytes`; the rest stays in
/// `stream`, un-read, for next.
#[derive(Default)]
pub struct RequestBody {
    /// What has not arrived yet.
    pub stream: Option<Body>,
    /// Arrived, not yet read by the guest. Growable, so a body arriving in many small
    /// chunks is collected in linear time.
    pub pending: BytesMut,
    /// Read by the guest (replayed to next when `buffer_request` is on).
    pub consumed: BytesMut,
    /// The stream has ended.
    pub eof: bool,
    /// Trailers, once the stream has ended.
    pub trailers: Option<Headers>,
    /// The whole body, once buffered (for reads in `handle_response`).
    pub replay: Option<Bytes>,
    /// Read position in `replay`.
    pub replay_pos: usize,
    /// Body written by the guest in `handle_request`.
    pub written: Option<BytesMut>,
    /// How many bytes the guest has read from the stream.
    pub taken: u64,
    /// The guest asked for more of the body than was read ahead (it is larger than
    /// `maxBodyBytes`): the call was stopped and the request gets a 413.
    pub too_large: bool,
    /// The host read the body ahead of the guest's calls (up to `maxBodyBytes`): what has not
    /// arrived by now is past the limit, not merely late.
    pub read_ahead: bool,
}

impl RequestBody {
    /// The guest's view of `body`, nothing read yet.
    pub fn new(body: Body) -> RequestBody {
        let eof = body.is_end_stream();
        RequestBody {
            stream: (!eof).then_some(body),
            eof,
            ..RequestBody::default()
        }
    }

    /// Reads the body ahead of a guest call, up to `limit` bytes: to its end if it fits, so
    /// the trailers are known too. Of a longer body exactly `limit` bytes are read ahead; the
    /// rest (from the first byte past the limit) stays in the stream, un-read.
    pub async fn read_ahead(&mut self, limit: usize) -> Result<(), BufferError> {
        self.read_ahead = true;
        // `<=`: at exactly `limit` bytes one more pull tells a body that ends there (eof)
        // from a longer one.
        while !self.eof && self.consumed.len() + self.pending.len() <= limit {
            self.pull().await?;
        }
        let keep = limit.saturating_sub(self.consumed.len());
        if self.pending.len() > keep {
            let excess = self.pending.split_off(keep).freeze();
            let rest = self.stream.take().unwrap_or_default();
            self.stream = Some(Body::put_back([excess], None, rest));
        }
        Ok(())
    }

    /// Pulls the next frame from the stream (async). Returns false at the end.
    pub async fn pull(&mut self) -> Result<bool, BufferError> {
        let Some(stream) = self.stream.as_mut() else {
            self.eof = true;
            return Ok(false);
        };
        match stream.frame().await {
            None => {
                self.stream = None;
                self.eof = true;
                Ok(false)
            }
            Some(Err(e)) => Err(BufferError::Stream(e)),
            Some(Ok(frame)) => {
                match frame.into_data() {
                    Ok(data) => self.pending.extend_from_slice(&data),
                    Err(frame) => {
                        if let Ok(t) = frame.into_trailers() {
                            self.trailers = Some(Headers::from(t));
                        }
                    }
                }
                Ok(true)
            }
        }
    }

    /// Reads the rest of the stream into `pending`, within `limit` bytes in all.
    pub async fn buffer_rest(&mut self, limit: usize) -> Result<(), BufferError> {
        while !self.eof {
            self.pull().await?;
            if self.consumed.len() + self.pending.len() > limit {
                return Err(BufferError::TooLarge { limit });
            }
        }
        Ok(())
    }

    /// Moves up to `max` unread bytes to the guest's side, remembering them.
    pub fn take_pending(&mut self, max: usize) -> Bytes {
        let n = max.min(self.pending.len());
        let chunk = self.pending.split_to(n).freeze();
        self.taken += chunk.len() as u64;
        self.consumed.extend_from_slice(&chunk);
        chunk
    }

    /// Everything the stream carried: what was read plus what was not (needs the stream at its end).
    pub fn whole(&self) -> Bytes {
        let mut all = self.consumed.clone();
        all.extend_from_slice(&self.pending);
        all.freeze()
    }

    /// The body as it arrived, for a middleware that fails open: `read_ahead` (what was read
    /// ahead before the guest's call, saved then, since reads may have dropped it) followed by
    /// the rest of the stream, or by the trailers when it ended.
    pub fn original(&mut self, read_ahead: Bytes) -> Body {
        match self.stream.take() {
            Some(rest) if read_ahead.is_empty() => rest,
            Some(rest) => Body::put_back([read_ahead], None, rest),
            None => Body::from(BufferedBody {
                data: read_ahead,
                trailers: self.trailers.clone(),
            }),
        }
    }

    /// Reads from the buffered copy (in `handle_response`).
    pub fn read_replay(&mut self, max: usize) -> (Bytes, bool) {
        let data = self.replay.clone().unwrap_or_default();
        let start = self.replay_pos.min(data.len());
        let end = (start + max).min(data.len());
        self.replay_pos = end;
        (data.slice(start..end), end == data.len())
    }
}

/// The response as the guest sees it.
pub struct ResponseSide {
    /// Status; 200 until next or the guest sets another.
    pub status: u16,
    /// Headers: those the guest set before next, then the merged ones.
    pub headers: Headers,
    /// Trailers (buffered or guest-set).
    pub trailers: Option<Headers>,
    /// The buffered body of next's response (with `buffer_response`).
    pub buffered: Option<Bytes>,
    /// Read position in `buffered`.
    pub read_pos: usize,
    /// Body written by the guest and the phase of its first write.
    pub written: Option<(Phase, BytesMut)>,
    /// next's response is available to the guest (after next, unless next failed).
    pub available: bool,
    /// The guest set or added `content-length` (and did not remove it since): with
    /// `buffer_response` a body it did not write is cut to that length.
    pub length_set: bool,
}

/// One request in flight through one instance.
pub struct Exchange {
    /// Which handler runs.
    pub phase: Phase,
    /// Features in force for this request (module-wide ones included).
    pub features: u32,
    /// The request; its body lives in `body`.
    pub request: Request,
    /// The request body.
    pub body: RequestBody,
    /// Request trailers set by the guest.
    pub request_trailers: Option<Headers>,
    /// The guest set or added the request's `content-length` (and did not remove it since):
    /// with `buffer_request` a body it did not write is cut to that length for next.
    pub request_length_set: bool,
    /// The response side.
    pub response: ResponseSide,
    /// What host functions have copied from the guest during this request (`maxHostBytes`);
    /// made at the first charge, gone with the request.
    pub budget: Option<HostBudget>,
}

impl Exchange {
    /// Starts an exchange for `request`, whose body the guest sees as `body` (its own body
    /// is ignored: it was taken, and maybe read ahead, before).
    pub fn new(mut request: Request, body: RequestBody, module_features: u32) -> Box<Exchange> {
        // HTTP/2 requests carry the host as :authority; guests look for a Host header.
        if !request.headers.contains(http::header::HOST) {
            if let Some(a) = request.uri.authority() {
                request
                    .headers
                    .append(http::header::HOST, a.as_str().to_string());
            }
        }
        Box::new(Exchange {
            phase: Phase::Request,
            features: module_features,
            request,
            body,
            request_trailers: None,
            request_length_set: false,
            response: ResponseSide {
                status: 200,
                headers: Headers::new(),
                trailers: None,
                buffered: None,
                read_pos: 0,
                written: None,
                available: false,
                length_set: false,
            },
            budget: None,
        })
    }

    /// Charges `bytes` a host function is about to copy from the guest to this request's
    /// budget of `cap` bytes (`maxHostBytes`).
    pub fn charge(&mut self, cap: usize, bytes: usize) -> Result<(), OverBudget> {
        self.budget
            .get_or_insert_with(|| HostBudget::new(cap))
            .charge(bytes)
    }

    /// Gives back `bytes` the host no longer holds (a written body replaced by another).
    pub fn release(&mut self, bytes: usize) {
        if let Some(b) = &self.budget {
            b.release(bytes);
        }
    }

    /// Whether `bit` is enabled for this request.
    pub fn has(&self, bit: u32) -> bool {
        self.features & bit != 0
    }

    /// The request target as path and query, exactly as received (no scheme or authority).
    pub fn uri_text(&self) -> &str {
        match self.request.uri.path_and_query() {
            Some(pq) if !pq.as_str().is_empty() => pq.as_str(),
            _ => "/",
        }
    }

    /// Replaces path and query, keeping scheme and authority; the bytes are already encoded.
    pub fn set_uri(&mut self, text: &[u8]) -> Result<(), String> {
        let text = if text.is_empty() { &b"/"[..] } else { text };
        let pq = http::uri::PathAndQuery::try_from(text).map_err(|e| {
            format!(
                "set_uri: invalid URI {:?}: {e}",
                String::from_utf8_lossy(text)
            )
        })?;
        let mut parts = self.request.uri.clone().into_parts();
        parts.path_and_query = Some(pq);
        self.request.uri = Uri::from_parts(parts).map_err(|e| format!("set_uri: {e}"))?;
        Ok(())
    }

    /// Finishes the request phase: the request next receives.
    pub async fn request_for_next(&mut self, limit: usize) -> Result<Request, BufferError> {
        let keep = self.has(feature::BUFFER_REQUEST) || self.request_trailers.is_some();
        if keep {
            // The guest may read the whole body again in handle_response: buffer it all.
            // Before the request is built, so that no request is held across the wait.
            Box::pin(self.body.buffer_rest(limit)).await?;
        }
        Ok(self.next_request(keep))
    }

    /// The request next receives; `keep`: the body was buffered whole, and is kept for a
    /// second reading in handle_response.
    fn next_request(&mut self, keep: bool) -> Request {
        let mut req = Request::new(
            self.request.method.clone(),
            self.request.uri.clone(),
            self.request.source_addr,
        );
        req.version = self.request.version;
        req.headers = self.request.headers.clone();
        req.local_addr = self.request.local_addr;
        req.extensions = std::mem::take(&mut self.request.extensions);
        // Cloned, not moved: handle_response's log lines carry it too.
        req.request_id = self.request.request_id.clone();
        if keep {
            let whole = self.body.whole();
            self.body.replay = Some(whole.clone());
            let data = match &self.body.written {
                Some(w) => w.clone().freeze(),
                None if self.request_length_set => honour_declared_length(&mut req.headers, whole),
                None => whole,
            };
            let trailers = self.request_trailers.clone().or(self.body.trailers.clone());
            fix_content_length(&mut req.headers, Some(data.len() as u64));
            req.body = Body::from(BufferedBody { data, trailers });
        } else if let Some(w) = &self.body.written {
            fix_content_length(&mut req.headers, Some(w.len() as u64));
            req.body = Body::full(w.clone().freeze());
        } else {
            // What the guest read is gone; next gets the rest of the stream.
            if self.body.taken > 0 {
                let rest =
                    content_length(&req.headers).and_then(|n| n.checked_sub(self.body.taken));
                fix_content_length(&mut req.headers, rest);
            }
            let pending = std::mem::take(&mut self.body.pending).freeze();
            req.body = match self.body.stream.take() {
                Some(rest) if pending.is_empty() => rest,
                Some(rest) => Body::put_back([pending], None, rest),
                // Read to its end (the guest asked for the trailers): keep them for next.
                None => Body::from(BufferedBody {
                    data: pending,
                    trailers: self.body.trailers.clone(),
                }),
            };
        }
        req
    }
}

fn content_length(headers: &Headers) -> Option<u64> {
    let v = headers.get_all(http::header::CONTENT_LENGTH).next()?;
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// A buffered body the guest did not write, under a `content-length` the guest set: cut to
/// that length, as the reference host (net/http refuses to write past a declared length), so
/// `content-length: 0` sends no body. The header is then made true to what is sent: a length
/// larger than the body becomes the body's length (net/http would send the short body and
/// break the connection; wasmgate never sends more than the guest declared, and never a
/// length it cannot fill). Of several values the smallest counts; a header with no valid
/// value is dropped (net/http drops an invalid one) and the body kept whole.
pub fn honour_declared_length(headers: &mut Headers, body: Bytes) -> Bytes {
    let declared = headers
        .get_all("content-length")
        .filter_map(|v| std::str::from_utf8(v).ok()?.trim().parse::<u64>().ok())
        .min();
    match declared {
        Some(n) => {
            let keep = usize::try_from(n).unwrap_or(usize::MAX).min(body.len());
            headers.set(http::header::CONTENT_LENGTH, keep.to_string());
            body.slice(..keep)
        }
        None => {
            headers.remove(http::header::CONTENT_LENGTH);
            body
        }
    }
}

/// Keeps a `content-length` the request already had true to the body next gets: `len`,
/// or no `content-length` at all when the length is not known.
fn fix_content_length(headers: &mut Headers, len: Option<u64>) {
    if !headers.contains(http::header::CONTENT_LENGTH) {
        return;
    }
    match len {
        Some(n) => headers.set(http::header::CONTENT_LENGTH, n.to_string()),
        None => {
            headers.remove(http::header::CONTENT_LENGTH);
        }
    }
}

/// The status of a guest-built response: what it set, if valid.
pub fn status_code(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
