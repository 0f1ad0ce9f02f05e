//! proxy-wasm constants: ABI versions, statuses and the enums of the spec.

/// The import module of every proxy-wasm host function.
pub const MODULE: &str = "env";

/// The ABI versions this host speaks, in order of introduction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AbiVersion {
    /// `proxy_abi_version_0_1_0` (Rust SDK 0.1.x).
    V0_1_0,
    /// `proxy_abi_version_0_2_0` (Go SDK).
    V0_2_0,
    /// `proxy_abi_version_0_2_1` (Rust SDK 0.2.x, C++ SDK).
    V0_2_1,
}

impl AbiVersion {
    /// Every version, oldest first.
    pub const ALL: [AbiVersion; 3] = [AbiVersion::V0_1_0, AbiVersion::V0_2_0, AbiVersion::V0_2_1];

    /// The marker export naming this version.
    pub fn marker(self) -> &'static str {
        match self {
            AbiVersion::V0_1_0 => "proxy_abi_version_0_1_0",
            AbiVersion::V0_2_0 => "proxy_abi_version_0_2_0",
            AbiVersion::V0_2_1 => "proxy_abi_version_0_2_1",
        }
    }

    /// The version a marker export names.
    pub fn from_marker(name: &str) -> Option<AbiVersion> {
        AbiVersion::ALL.into_iter().find(|v| v.marker() == name)
    }
}

impl std::fmt::Display for AbiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AbiVersion::V0_1_0 => "0.1.0",
            AbiVersion::V0_2_0 => "0.2.0",
            AbiVersion::V0_2_1 => "0.2.1",
        })
    }
}

/// Host function statuses.
pub mod status {
    /// Success.
    pub const OK: i32 = 0;
    /// Not found / not available now.
    pub const NOT_FOUND: i32 = 1;
    /// Bad argument.
    pub const BAD_ARGUMENT: i32 = 2;
    /// Serialization failure.
    pub const SERIALIZATION_FAILURE: i32 = 3;
    /// Parse failure.
    pub const PARSE_FAILURE: i32 = 4;
    /// A guest pointer or length outside linear memory.
    pub const INVALID_MEMORY_ACCESS: i32 = 6;
    /// Empty queue.
    pub const EMPTY: i32 = 7;
    /// Compare-and-swap mismatch.
    pub const CAS_MISMATCH: i32 = 8;
    /// Internal failure.
    pub const INTERNAL_FAILURE: i32 = 10;
    /// Broken connection (failed http call, in `proxy_get_status`).
    pub const BROKEN_CONNECTION: i32 = 11;
    /// Not implemented by this host.
    pub const UNIMPLEMENTED: i32 = 12;
}

/// What a stream callback tells the host.
pub mod action {
    /// Go on.
    pub const CONTINUE: i32 = 0;
    /// Stop until the filter resumes the stream (headers) or more data arrives (body).
    pub const PAUSE: i32 = 1;
}

/// Log levels.
pub mod log_level {
    /// Trace.
    pub const TRACE: i32 = 0;
    /// Debug.
    pub const DEBUG: i32 = 1;
    /// Info.
    pub const INFO: i32 = 2;
    /// Warn.
    pub const WARN: i32 = 3;
    /// Error.
    pub const ERROR: i32 = 4;
    /// Critical.
    pub const CRITICAL: i32 = 5;
}

/// Buffer types.
pub mod buffer {
    /// HTTP request body.
    pub const HTTP_REQUEST_BODY: i32 = 0;
    /// HTTP response body.
    pub const HTTP_RESPONSE_BODY: i32 = 1;
    /// TCP downstream data.
    pub const DOWNSTREAM_DATA: i32 = 2;
    /// TCP upstream data.
    pub const UPSTREAM_DATA: i32 = 3;
    /// Body of an `proxy_http_call` response.
    pub const HTTP_CALL_RESPONSE_BODY: i32 = 4;
    /// gRPC message.
    pub const GRPC_CALL_MESSAGE: i32 = 5;
    /// VM configuration.
    pub const VM_CONFIGURATION: i32 = 6;
    /// Plugin configuration.
    pub const PLUGIN_CONFIGURATION: i32 = 7;
    /// Foreign function arguments.
    pub const FOREIGN_FUNCTION_ARGUMENTS: i32 = 8;
}

/// Header map types.
pub mod map {
    /// Request headers (with pseudo-headers).
    pub const HTTP_REQUEST_HEADERS: i32 = 0;
    /// Request trailers.
    pub const HTTP_REQUEST_TRAILERS: i32 = 1;
    /// Response headers (with `:status`).
    pub const HTTP_RESPONSE_HEADERS: i32 = 2;
    /// Response trailers.
    pub const HTTP_RESPONSE_TRAILERS: i32 = 3;
    /// gRPC initial metadata.
    pub const GRPC_CALL_INITIAL_METADATA: i32 = 4;
    /// gRPC trailing metadata.
    pub const GRPC_CALL_TRAILING_METADATA: i32 = 5;
    /// Headers of an http call response.
    pub const HTTP_CALL_RESPONSE_HEADERS: i32 = 6;
    /// Trailers of an http call response.
    pub const HTTP_CALL_RESPONSE_TRAILERS: i32 = 7;
}

/// Stream types.
pub mod stream {
    /// The HTTP request.
    pub const HTTP_REQUEST: i32 = 0;
    /// The HTTP response.
    pub const HTTP_RESPONSE: i32 = 1;
    /// TCP downstream.
    pub const DOWNSTREAM: i32 = 2;
    /// TCP upstream.
    pub const UPSTREAM: i32 = 3;
}

/// Metric types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// Monotonic counter.
    Counter,
    /// Gauge.
    Gauge,
    /// Histogram.
    Histogram,
}

impl MetricKind {
    /// From the ABI value.
    pub fn from_i32(v: i32) -> Option<MetricKind> {
        match v {
            0 => Some(MetricKind::Counter),
            1 => Some(MetricKind::Gauge),
            2 => Some(MetricKind::Histogram),
            _ => None,
        }
    }
}
