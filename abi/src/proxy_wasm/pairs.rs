//! A proxy-wasm header map as the filter sees it: ordered pairs, pseudo-headers (`:path`,
//! `:status`, ...) included, names lower-cased. `http::HeaderMap` cannot hold a
//! pseudo-header, so a map is made from the message when a callback needs it and applied
//! back only if the filter wrote to it (see [`super::maps`]).

use http::HeaderValue;
use smol_str::SmolStr;

use crate::headers::{GUEST_MAX_FIELD_LINES, GUEST_MAX_HEADER_BYTES};

/// Ordered header pairs. Names are inline [`SmolStr`]s and values shared [`HeaderValue`]s, so
/// making a map from a message costs no allocation per field line.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HeaderPairs {
    entries: Vec<(SmolStr, HeaderValue)>,
}

impl HeaderPairs {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty map with room for `n` pairs.
    pub fn with_capacity(n: usize) -> Self {
        HeaderPairs {
            entries: Vec::with_capacity(n),
        }
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of all names and values.
    pub fn byte_len(&self) -> usize {
        self.entries.iter().map(|(n, v)| n.len() + v.len()).sum()
    }

    /// Whether one more pair of `name` and `value_len` bytes keeps the map within what a
    /// serialized map may hold ([`GUEST_MAX_FIELD_LINES`], [`GUEST_MAX_HEADER_BYTES`]).
    pub fn fits_one_more(&self, name: &str, value_len: usize) -> bool {
        self.entries.len() < GUEST_MAX_FIELD_LINES
            && self.byte_len() + name.len() + value_len <= GUEST_MAX_HEADER_BYTES
    }

    /// Every pair, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_bytes()))
    }

    /// Every pair, in order, as held (a copy of a value costs a reference count).
    pub fn pairs(&self) -> impl Iterator<Item = (&SmolStr, &HeaderValue)> {
        self.entries.iter().map(|(n, v)| (n, v))
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_bytes())
    }

    /// The first value of `name` as text, if it is valid UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every value of `name`, in order.
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.entries
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_bytes())
    }

    /// Adds one pair at the end.
    pub fn append(&mut self, name: impl Into<SmolStr>, value: HeaderValue) {
        self.entries.push((name.into(), value));
    }

    /// Replaces every value of `name` by `value`, keeping the place of the first one.
    pub fn set(&mut self, name: &str, value: HeaderValue) {
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

    /// Removes every value of `name`; returns whether there was one.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        before != self.entries.len()
    }
}

impl std::fmt::Debug for HeaderPairs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.entries
                    .iter()
                    .map(|(n, v)| (n, String::from_utf8_lossy(v.as_bytes()))),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_repeats_and_pseudo_headers() {
        let mut h = HeaderPairs::new();
        h.append(":path", HeaderValue::from_static("/"));
        h.append("accept", HeaderValue::from_static("a"));
        h.append("x-b", HeaderValue::from_static("1"));
        h.append("accept", HeaderValue::from_static("b"));
        assert_eq!(h.get("ACCEPT"), Some(&b"a"[..]));
        assert_eq!(h.get(":path"), Some(&b"/"[..]));
        h.set("accept", HeaderValue::from_static("c"));
        let names: Vec<_> = h.iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec![":path", "accept", "x-b"]);
        assert!(h.remove("X-B"));
        assert!(!h.remove("x-b"));
    }
}
