//! Constants of the http-wasm `http_handler` ABI (http-wasm.io, http-handler ABI).

/// The import module name.
pub const MODULE: &str = "http_handler";

/// Feature bits for `enable_features`.
pub mod feature {
    /// Keep the request body readable after the guest read it, and readable in `handle_response`.
    pub const BUFFER_REQUEST: u32 = 1;
    /// Buffer the response so `handle_response` can read and change it.
    pub const BUFFER_RESPONSE: u32 = 2;
    /// Trailer access.
    pub const TRAILERS: u32 = 4;
    /// Every feature this host supports.
    pub const SUPPORTED: u32 = BUFFER_REQUEST | BUFFER_RESPONSE | TRAILERS;
}

/// `header_kind` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderKind {
    /// Request headers (0).
    Request,
    /// Response headers (1).
    Response,
    /// Request trailers (2).
    RequestTrailers,
    /// Response trailers (3).
    ResponseTrailers,
}

impl HeaderKind {
    /// Decodes a guest-supplied kind.
    pub fn from_i32(v: i32) -> Option<HeaderKind> {
        Some(match v {
            0 => HeaderKind::Request,
            1 => HeaderKind::Response,
            2 => HeaderKind::RequestTrailers,
            3 => HeaderKind::ResponseTrailers,
            _ => return None,
        })
    }

    /// Whether it belongs to the request side.
    pub fn is_request(self) -> bool {
        matches!(self, HeaderKind::Request | HeaderKind::RequestTrailers)
    }

    /// Whether it names trailers.
    pub fn is_trailers(self) -> bool {
        matches!(
            self,
            HeaderKind::RequestTrailers | HeaderKind::ResponseTrailers
        )
    }
}

/// `body_kind` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// The request body (0).
    Request,
    /// The response body (1).
    Response,
}

impl BodyKind {
    /// Decodes a guest-supplied kind.
    pub fn from_i32(v: i32) -> Option<BodyKind> {
        match v {
            0 => Some(BodyKind::Request),
            1 => Some(BodyKind::Response),
            _ => None,
        }
    }
}

/// Log levels (signed).
pub mod log_level {
    /// Debug.
    pub const DEBUG: i32 = -1;
    /// Info.
    pub const INFO: i32 = 0;
    /// Warn.
    pub const WARN: i32 = 1;
    /// Error.
    pub const ERROR: i32 = 2;
    /// None: nothing is logged.
    pub const NONE: i32 = 3;
}

/// Packs a list result: `(count << 32) | byte_length`.
pub fn count_len(count: usize, len: usize) -> i64 {
    ((count as i64) << 32) | (len as i64 & 0xffff_ffff)
}

/// Packs a `read_body` result: `(eof << 32) | n`.
pub fn eof_len(eof: bool, n: usize) -> i64 {
    ((eof as i64) << 32) | (n as i64 & 0xffff_ffff)
}
