//! Deliberately broken host functions, for showing that the conformance suite catches them.
//!
//! Compiled only with the `fault-injection` feature, which the workspace enables for tests
//! alone; without it the checks at the points of use do not exist. A fault is process-wide:
//! inject it only in a test process of its own.

use std::sync::atomic::{AtomicU32, Ordering};

/// A way a host function can be made to misbehave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Fault {
    /// http-wasm `get_uri` percent-decodes the URI before writing it (the spec keeps it encoded).
    HttpWasmGetUriDecoded = 1 << 0,
    /// proxy-wasm `proxy_get_header_map_value` returns the last value of a repeated header
    /// instead of the first.
    ProxyWasmHeaderValueLastNotFirst = 1 << 1,
}

static ACTIVE: AtomicU32 = AtomicU32::new(0);

/// Makes `fault` happen from now on, in every plugin of the process.
pub fn inject(fault: Fault) {
    ACTIVE.fetch_or(fault as u32, Ordering::Relaxed);
}

/// Removes every injected fault.
pub fn clear() {
    ACTIVE.store(0, Ordering::Relaxed);
}

/// Whether `fault` is injected; one relaxed load, checked where the host function runs.
pub fn active(fault: Fault) -> bool {
    ACTIVE.load(Ordering::Relaxed) & fault as u32 != 0
}

/// `%XX` escapes decoded (others kept as they are); `+` stays, as a URI decoder would leave it.
pub(crate) fn percent_decode(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).and_then(|c| hex(*c)),
            b.get(i + 2).and_then(|c| hex(*c)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_only() {
        assert_eq!(
            percent_decode("/a%20b?x=k+f%2Bp%zz%4"),
            b"/a b?x=k+f+p%zz%4"
        );
    }
}
