//! Headers as an ordered list of field lines.
//!
//! Plugins observe header order and repeated fields (http-wasm returns values
//! "in order", proxy-wasm serialises pairs), so the model keeps every field
//! line as received instead of grouping them the way `http::HeaderMap` does.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use smol_str::SmolStr;

/// Most field lines a plugin may leave in one header list (proxy-wasm-cpp-host's limit on a
/// serialized map): past it a guest's add fails instead of growing host memory without bound.
pub const GUEST_MAX_FIELD_LINES: usize = 1024;
/// Most bytes of names and values a plugin may leave in one header list.
pub const GUEST_MAX_HEADER_BYTES: usize = 1 << 20;

/// An ordered multi-value header list. Names compare case-insensitively.
///
/// Names are [`SmolStr`]s: up to 23 bytes (nearly every header name) they are held inline, so
/// building a list or copying one (each plugin of a chain gets its own view) costs no
/// allocation per name; values are shared [`Bytes`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(SmolStr, Bytes)>,
}

/// A header name or value that cannot go on the wire.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidHeader {
    /// The name is empty or holds bytes a field name may not hold.
    #[error("invalid header name {0:?}")]
    Name(String),
    /// The value holds CR, LF, NUL or another forbidden byte.
    #[error("invalid value for header {0:?}")]
    Value(String),
    /// More field lines than an `http::HeaderMap` holds (a guest flooding headers).
    #[error("too many header field lines ({0})")]
    TooMany(usize),
}

impl Headers {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty list with room for `n` field lines.
    pub fn with_capacity(n: usize) -> Self {
        Headers {
            entries: Vec::with_capacity(n),
        }
    }

    /// Number of field lines.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no field lines.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of all names and values.
    pub fn byte_len(&self) -> usize {
        self.entries.iter().map(|(n, v)| n.len() + v.len()).sum()
    }

    /// Whether one more field line of `name` and `value_len` bytes keeps the list within
    /// what a plugin may build ([`GUEST_MAX_FIELD_LINES`], [`GUEST_MAX_HEADER_BYTES`]).
    pub fn fits_one_more(&self, name: &str, value_len: usize) -> bool {
        self.entries.len() < GUEST_MAX_FIELD_LINES
            && self.byte_len() + name.len() + value_len <= GUEST_MAX_HEADER_BYTES
    }

    /// Every field line, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_ref()))
    }

    /// Every field line, in order, values as shared [`Bytes`] (a copy costs a reference
    /// count, not the bytes).
    pub fn iter_shared(&self) -> impl Iterator<Item = (&SmolStr, &Bytes)> {
        self.entries.iter().map(|(n, v)| (n, v))
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }

    /// The first value of `name` as text, if it is valid UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.entries
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }

    /// Whether `name` has at least one value.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Distinct names, lower-cased, in order of first appearance.
    pub fn names(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (n, _) in &self.entries {
            if !out.iter().any(|o| o.eq_ignore_ascii_case(n)) {
                out.push(n.to_ascii_lowercase());
            }
        }
        out
    }

    /// Adds one field line at the end.
    pub fn append(&mut self, name: impl Into<SmolStr>, value: impl Into<Bytes>) {
        self.entries.push((name.into(), value.into()));
    }

    /// Replaces every value of `name` by `value`, keeping the place of the first one.
    pub fn set(&mut self, name: &str, value: impl Into<Bytes>) {
        let value = value.into();
        match self
            .entries
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(first) => {
                self.entries[first].1 = value;
                let mut i = 0;
                self.entries.retain(|(n, _)| {
                    let keep = i <= first || !n.eq_ignore_ascii_case(name);
                    i += 1;
                    keep
                });
            }
            None => self.entries.push((SmolStr::new(name), value)),
        }
    }

    /// Keeps the field lines whose name `keep` accepts, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.entries.retain(|(n, _)| keep(n));
    }

    /// Removes every value of `name`; returns whether there was one.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        before != self.entries.len()
    }

    /// Builds an `http::HeaderMap`, rejecting names and values that cannot go on the wire.
    pub fn to_header_map(&self) -> Result<HeaderMap, InvalidHeader> {
        // `with_capacity` and `append` panic past the map's maximum size: ask, never assume.
        let too_many = |_| InvalidHeader::TooMany(self.entries.len());
        let mut map = HeaderMap::try_with_capacity(self.entries.len()).map_err(too_many)?;
        for (n, v) in &self.entries {
            let name = HeaderName::from_bytes(n.as_bytes())
                .map_err(|_| InvalidHeader::Name(n.to_string()))?;
            let value = HeaderValue::from_maybe_shared(v.clone())
                .map_err(|_| InvalidHeader::Value(n.to_string()))?;
            map.try_append(name, value).map_err(too_many)?;
        }
        Ok(map)
    }
}

impl From<&HeaderMap> for Headers {
    fn from(map: &HeaderMap) -> Self {
        let entries = map
            .iter()
            .map(|(n, v)| {
                (
                    SmolStr::new(n.as_str()),
                    Bytes::copy_from_slice(v.as_bytes()),
                )
            })
            .collect();
        Headers { entries }
    }
}

impl<N: Into<SmolStr>, V: Into<Bytes>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        Headers {
            entries: iter
                .into_iter()
                .map(|(n, v)| (n.into(), v.into()))
                .collect(),
        }
    }
}

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.entries
                    .iter()
                    .map(|(n, v)| (n, String::from_utf8_lossy(v))),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_repeats() {
        let mut h = Headers::new();
        h.append("Accept", "a");
        h.append("X-B", "1");
        h.append("accept", "b");
        assert_eq!(h.get_all("ACCEPT").collect::<Vec<_>>(), vec![b"a", b"b"]);
        assert_eq!(h.names(), vec!["accept", "x-b"]);
    }

    #[test]
    fn set_replaces_all_in_place_of_first() {
        let mut h: Headers = [("a", "1"), ("b", "2"), ("A", "3")].into_iter().collect();
        h.set("a", "9");
        let lines: Vec<_> = h.iter().map(|(n, v)| (n.to_string(), v.to_vec())).collect();
        assert_eq!(
            lines,
            vec![("a".into(), b"9".to_vec()), ("b".into(), b"2".to_vec())]
        );
        assert!(h.remove("B"));
        assert!(!h.remove("b"));
    }

    #[test]
    fn guest_limits_count_lines_and_bytes() {
        let mut h = Headers::new();
        for i in 0..GUEST_MAX_FIELD_LINES - 1 {
            h.append(format!("x-{i}"), "v");
        }
        assert!(h.fits_one_more("x-last", 1));
        h.append("x-last", "v");
        assert!(!h.fits_one_more("x-more", 1));
        let mut h = Headers::new();
        h.append("big", vec![b'a'; GUEST_MAX_HEADER_BYTES - 10]);
        assert!(h.fits_one_more("x", 6));
        assert!(!h.fits_one_more("x", 7));
    }

    #[test]
    fn a_header_flood_is_an_error_not_a_panic() {
        let h: Headers = (0..40_000).map(|i| (format!("x-{i}"), "v")).collect();
        assert_eq!(h.to_header_map(), Err(InvalidHeader::TooMany(40_000)));
        let h: Headers = (0..40_000).map(|_| ("x-same", "v")).collect();
        assert_eq!(h.to_header_map(), Err(InvalidHeader::TooMany(40_000)));
    }

    #[test]
    fn rejects_crlf_on_the_way_out() {
        let h: Headers = [("x", "a\r\nb")].into_iter().collect();
        assert_eq!(h.to_header_map(), Err(InvalidHeader::Value("x".into())));
        let h: Headers = [("bad name", "v")].into_iter().collect();
        assert!(matches!(h.to_header_map(), Err(InvalidHeader::Name(_))));
    }
}
