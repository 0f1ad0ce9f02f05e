//! Errors tagged with where they came from, so the proxy can answer with the
//! right status and the logs say whose fault it was.

use http::StatusCode;

/// Who caused an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// The client: a malformed or oversized request.
    Downstream,
    /// The upstream server: refused, reset, timed out.
    Upstream,
    /// A middleware or plugin: a trap, a broken guest response.
    Plugin,
    /// wasmgate itself.
    Internal,
}

impl std::fmt::Display for ErrorSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorSource::Downstream => "downstream",
            ErrorSource::Upstream => "upstream",
            ErrorSource::Plugin => "plugin",
            ErrorSource::Internal => "internal",
        })
    }
}

/// The error an error was caused by, kept so the logs can print the whole chain.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An error that ends a request, with the status the client gets for it.
///
/// The message is for the logs; the client sees only the status and its reason phrase.
/// The error it wraps, if any, is its [`std::error::Error::source`] (see
/// [`ProxyError::with_source`]).
#[derive(Debug, thiserror::Error)]
#[error("{source_kind} error: {message}")]
pub struct ProxyError {
    /// Who caused it.
    pub source_kind: ErrorSource,
    /// The status the client receives.
    pub status: StatusCode,
    /// What happened, for the logs.
    pub message: String,
    /// The underlying error (an I/O error, a trap, a body stream failure).
    #[source]
    cause: Option<BoxError>,
}

impl ProxyError {
    /// An error with an explicit source and status.
    pub fn new(source_kind: ErrorSource, status: StatusCode, message: impl Into<String>) -> Self {
        ProxyError {
            source_kind,
            status,
            message: message.into(),
            cause: None,
        }
    }

    /// The same error, caused by `source` (returned by [`std::error::Error::source`]).
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.cause = Some(source.into());
        self
    }

    /// The error and every error it was caused by, joined by `: ` (for a log line).
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut next = std::error::Error::source(self);
        while let Some(e) = next {
            out.push_str(": ");
            out.push_str(&e.to_string());
            next = e.source();
        }
        out
    }

    /// The upstream could not be reached or broke the exchange: 502.
    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Self::new(ErrorSource::Upstream, StatusCode::BAD_GATEWAY, message)
    }

    /// The upstream did not answer in time: 504.
    pub fn gateway_timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorSource::Upstream, StatusCode::GATEWAY_TIMEOUT, message)
    }

    /// The client sent something unusable: 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorSource::Downstream, StatusCode::BAD_REQUEST, message)
    }

    /// A middleware or plugin failed: 500.
    pub fn plugin(message: impl Into<String>) -> Self {
        Self::new(
            ErrorSource::Plugin,
            StatusCode::INTERNAL_SERVER_ERROR,
            message,
        )
    }

    /// wasmgate failed: 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            ErrorSource::Internal,
            StatusCode::INTERNAL_SERVER_ERROR,
            message,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_chain_is_kept() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let e = ProxyError::bad_gateway("upstream broke the exchange").with_source(io);
        let source = std::error::Error::source(&e).expect("a source");
        assert_eq!(source.to_string(), "reset by peer");
        assert_eq!(
            e.chain(),
            "upstream error: upstream broke the exchange: reset by peer"
        );
        // Without one, there is none.
        assert!(std::error::Error::source(&ProxyError::internal("x")).is_none());
    }
}
