//! Headers as the request and the response carry them: one `http::HeaderMap`, the store hyper
//! parsed them into and writes them from, so a route without plugins never copies them.
//!
//! Guests see the map through views made when they ask ([`Headers::names`],
//! [`Headers::get_all`], [`Headers::iter`]): field lines in the map's order, each name's values
//! in the order they came. Names come in order of first appearance until one is removed
//! (the map then moves its last name into the freed place), as in hyper, which parses and
//! writes through the same map: no HTTP semantics hang on the order of different names
//! (RFC 9110 §5.3), only on that of one name's values.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, AsHeaderName, HeaderName, HeaderValue};
use http::HeaderMap;
use smol_str::SmolStr;

/// Most field lines a plugin may leave in one header list (proxy-wasm-cpp-host's limit on a
/// serialized map): past it a guest's add fails instead of growing host memory without bound.
pub const GUEST_MAX_FIELD_LINES: usize = 1024;
/// Most bytes of names and values a plugin may leave in one header list.
pub const GUEST_MAX_HEADER_BYTES: usize = 1 << 20;

/// A multi-value header map. Names compare case-insensitively and are kept lower-cased.
///
/// A name or value that cannot go on the wire is refused where it is written: the map keeps
/// the first such refusal and [`Headers::into_header_map`] reports it, so the message fails
/// where it would have been sent instead of going out without the header. The ABI hosts check
/// what guests write before it gets here and answer the guest themselves.
///
/// A clone shares the map until one of the two writes to it (copy on write): an http-wasm
/// link keeps the request head its guest may read after next while next gets the same head,
/// so a chain copies a request's headers at most once, where something downstream changes
/// them, instead of once per link.
#[derive(Clone, Default)]
pub struct Headers {
    /// Behind a pointer, and absent while empty: a request or a response is moved from link
    /// to link of a chain (and copied into each link's future), so it is kept small.
    inner: Option<Arc<Inner>>,
}

#[derive(Clone, Default)]
struct Inner {
    map: HeaderMap,
    refused: Option<InvalidHeader>,
}

/// What an empty [`Headers`] lends out as its map.
static EMPTY: std::sync::LazyLock<HeaderMap> = std::sync::LazyLock::new(HeaderMap::new);

impl PartialEq for Headers {
    fn eq(&self, other: &Headers) -> bool {
        self.map() == other.map() && self.refused() == other.refused()
    }
}

impl Eq for Headers {}

/// The values of one name, in order ([`Headers::get_all`]).
pub type Values<'a> =
    std::iter::Map<http::header::ValueIter<'a, HeaderValue>, fn(&HeaderValue) -> &[u8]>;

/// A header name or value that cannot go on the wire.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
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

/// What names a header: a [`HeaderName`] as it is, text checked and lower-cased.
pub trait IntoHeaderName {
    /// The name, or why it cannot be one.
    fn into_header_name(self) -> Result<HeaderName, InvalidHeader>;
}

impl IntoHeaderName for HeaderName {
    fn into_header_name(self) -> Result<HeaderName, InvalidHeader> {
        Ok(self)
    }
}

impl IntoHeaderName for &HeaderName {
    fn into_header_name(self) -> Result<HeaderName, InvalidHeader> {
        Ok(self.clone())
    }
}

impl IntoHeaderName for &str {
    fn into_header_name(self) -> Result<HeaderName, InvalidHeader> {
        HeaderName::from_bytes(self.as_bytes()).map_err(|_| InvalidHeader::Name(self.to_string()))
    }
}

impl IntoHeaderName for String {
    fn into_header_name(self) -> Result<HeaderName, InvalidHeader> {
        self.as_str().into_header_name()
    }
}

impl IntoHeaderName for &String {
    fn into_header_name(self) -> Result<HeaderName, InvalidHeader> {
        self.as_str().into_header_name()
    }
}

impl IntoHeaderName for SmolStr {
    fn into_header_name(self) -> Result<HeaderName, InvalidHeader> {
        self.as_str().into_header_name()
    }
}

/// What a header's value can be made of: a [`HeaderValue`] as it is, bytes checked (shared,
/// not copied, when they are [`Bytes`], a `String` or a `Vec`).
pub trait IntoHeaderValue {
    /// The value, or `None` when it holds a byte a field value may not hold.
    fn into_header_value(self) -> Option<HeaderValue>;
}

impl IntoHeaderValue for HeaderValue {
    fn into_header_value(self) -> Option<HeaderValue> {
        Some(self)
    }
}

impl IntoHeaderValue for &HeaderValue {
    fn into_header_value(self) -> Option<HeaderValue> {
        Some(self.clone())
    }
}

impl IntoHeaderValue for Bytes {
    fn into_header_value(self) -> Option<HeaderValue> {
        HeaderValue::from_maybe_shared(self).ok()
    }
}

impl IntoHeaderValue for Vec<u8> {
    fn into_header_value(self) -> Option<HeaderValue> {
        HeaderValue::from_maybe_shared(Bytes::from(self)).ok()
    }
}

impl IntoHeaderValue for String {
    fn into_header_value(self) -> Option<HeaderValue> {
        HeaderValue::from_maybe_shared(Bytes::from(self)).ok()
    }
}

impl IntoHeaderValue for &String {
    fn into_header_value(self) -> Option<HeaderValue> {
        HeaderValue::from_str(self).ok()
    }
}

impl IntoHeaderValue for &str {
    fn into_header_value(self) -> Option<HeaderValue> {
        HeaderValue::from_str(self).ok()
    }
}

impl IntoHeaderValue for &[u8] {
    fn into_header_value(self) -> Option<HeaderValue> {
        HeaderValue::from_bytes(self).ok()
    }
}

impl<const N: usize> IntoHeaderValue for &[u8; N] {
    fn into_header_value(self) -> Option<HeaderValue> {
        HeaderValue::from_bytes(self).ok()
    }
}

impl IntoHeaderValue for u64 {
    fn into_header_value(self) -> Option<HeaderValue> {
        Some(HeaderValue::from(self))
    }
}

impl IntoHeaderValue for usize {
    fn into_header_value(self) -> Option<HeaderValue> {
        Some(HeaderValue::from(self))
    }
}

impl Headers {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty map with room for `n` field lines.
    pub fn with_capacity(n: usize) -> Self {
        Headers::from(HeaderMap::try_with_capacity(n).unwrap_or_default())
    }

    /// Number of field lines.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether there are no field lines.
    pub fn is_empty(&self) -> bool {
        self.map().is_empty()
    }

    /// Bytes of all names and values.
    pub fn byte_len(&self) -> usize {
        self.map()
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len())
            .sum()
    }

    /// Whether one more field line of `name` and `value_len` bytes keeps the map within
    /// what a plugin may build ([`GUEST_MAX_FIELD_LINES`], [`GUEST_MAX_HEADER_BYTES`]).
    pub fn fits_one_more(&self, name: &str, value_len: usize) -> bool {
        self.map().len() < GUEST_MAX_FIELD_LINES
            && self.byte_len() + name.len() + value_len <= GUEST_MAX_HEADER_BYTES
    }

    /// Every field line, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.map().iter().map(|(n, v)| (n.as_str(), v.as_bytes()))
    }

    /// Every field line, in order, as the map holds it (a copy of a value costs a reference
    /// count, not the bytes).
    pub fn iter_fields(&self) -> http::header::Iter<'_, HeaderValue> {
        self.map().iter()
    }

    /// The first value of `name` (a `&str` or a [`HeaderName`]).
    pub fn get(&self, name: impl AsHeaderName) -> Option<&[u8]> {
        self.map().get(name).map(HeaderValue::as_bytes)
    }

    /// The first value of `name` as text, if it is valid UTF-8.
    pub fn get_str(&self, name: impl AsHeaderName) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every value of `name`, in order. A `&str` that is not a name finds nothing.
    pub fn get_all(&self, name: impl AsHeaderName) -> Values<'_> {
        self.map()
            .get_all(name)
            .into_iter()
            .map(HeaderValue::as_bytes as fn(&HeaderValue) -> &[u8])
    }

    /// Whether `name` has at least one value.
    pub fn contains(&self, name: impl AsHeaderName) -> bool {
        self.map().contains_key(name)
    }

    /// Distinct names, lower-cased, in the map's order.
    pub fn names(&self) -> Vec<String> {
        self.map().keys().map(|n| n.as_str().to_string()).collect()
    }

    /// Adds one field line after the other values of its name.
    pub fn append(&mut self, name: impl IntoHeaderName, value: impl IntoHeaderValue) {
        if let Some((name, value)) = self.checked(name, value) {
            if self.map_mut().try_append(name, value).is_err() {
                self.refuse(InvalidHeader::TooMany(self.len() + 1));
            }
        }
    }

    /// Replaces every value of `name` by `value`, keeping the place of the first one.
    pub fn set(&mut self, name: impl IntoHeaderName, value: impl IntoHeaderValue) {
        if let Some((name, value)) = self.checked(name, value) {
            if self.map_mut().try_insert(name, value).is_err() {
                self.refuse(InvalidHeader::TooMany(self.len() + 1));
            }
        }
    }

    /// Keeps the names `keep` accepts, with all their values, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        let gone: Vec<HeaderName> = self
            .map()
            .keys()
            .filter(|n| !keep(n.as_str()))
            .cloned()
            .collect();
        for n in gone {
            self.map_mut().remove(n);
        }
    }

    /// Removes every value of `name`; returns whether there was one.
    pub fn remove<N: AsHeaderName + Clone>(&mut self, name: N) -> bool {
        // A shared map is copied only when there is something to remove.
        self.contains(name.clone()) && self.map_mut().remove(name).is_some()
    }

    /// The map itself.
    pub fn header_map(&self) -> &HeaderMap {
        self.map()
    }

    /// The map, for what this type does not say (typed names, entries).
    pub fn header_map_mut(&mut self) -> &mut HeaderMap {
        self.map_mut()
    }

    fn map(&self) -> &HeaderMap {
        match &self.inner {
            Some(inner) => &inner.map,
            None => &EMPTY,
        }
    }

    fn map_mut(&mut self) -> &mut HeaderMap {
        &mut Arc::make_mut(self.inner.get_or_insert_with(Arc::default)).map
    }

    fn refused(&self) -> Option<&InvalidHeader> {
        self.inner.as_ref().and_then(|i| i.refused.as_ref())
    }

    /// The map to send, or the first name or value that was refused on the way.
    pub fn into_header_map(self) -> Result<HeaderMap, InvalidHeader> {
        let Some(inner) = self.inner else {
            return Ok(HeaderMap::new());
        };
        let inner = Arc::try_unwrap(inner).unwrap_or_else(|shared| (*shared).clone());
        match inner.refused {
            Some(e) => Err(e),
            None => Ok(inner.map),
        }
    }

    /// A copy of [`Headers::into_header_map`].
    pub fn to_header_map(&self) -> Result<HeaderMap, InvalidHeader> {
        self.clone().into_header_map()
    }

    fn checked(
        &mut self,
        name: impl IntoHeaderName,
        value: impl IntoHeaderValue,
    ) -> Option<(HeaderName, HeaderValue)> {
        let name = match name.into_header_name() {
            Ok(n) => n,
            Err(e) => {
                self.refuse(e);
                return None;
            }
        };
        match value.into_header_value() {
            Some(v) => Some((name, v)),
            None => {
                self.refuse(InvalidHeader::Value(name.as_str().to_string()));
                None
            }
        }
    }

    fn refuse(&mut self, e: InvalidHeader) {
        let inner = Arc::make_mut(self.inner.get_or_insert_with(Arc::default));
        inner.refused.get_or_insert(e);
    }
}

impl From<HeaderMap> for Headers {
    fn from(map: HeaderMap) -> Self {
        let inner = (map.capacity() > 0).then(|| Arc::new(Inner { map, refused: None }));
        Headers { inner }
    }
}

impl From<&HeaderMap> for Headers {
    fn from(map: &HeaderMap) -> Self {
        Headers::from(map.clone())
    }
}

impl<N: IntoHeaderName, V: IntoHeaderValue> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut h = Headers::new();
        for (n, v) in iter {
            h.append(n, v);
        }
        h
    }
}

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut l = f.debug_list();
        l.entries(
            self.map()
                .iter()
                .map(|(n, v)| (n.as_str(), String::from_utf8_lossy(v.as_bytes()))),
        );
        if let Some(e) = self.refused() {
            l.entry(&format_args!("refused: {e}"));
        }
        l.finish()
    }
}

/// Names the data path writes on every request, made once (a name not among `http`'s
/// standard ones is otherwise parsed and copied each time).
pub mod names {
    use super::HeaderName;

    /// `x-forwarded-for`.
    pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    /// `x-forwarded-proto`.
    pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    /// `x-forwarded-host`.
    pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
    /// `x-forwarded-port`.
    pub const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
    /// `x-forwarded-server`.
    pub const X_FORWARDED_SERVER: HeaderName = HeaderName::from_static("x-forwarded-server");
    /// `x-real-ip`.
    pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
    /// `x-request-id`.
    pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    pub use super::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clone_shares_the_map_until_one_side_writes() {
        let mut a = Headers::new();
        a.append("x-a", "1");
        let mut b = a.clone();
        let shared = |a: &Headers, b: &Headers| {
            Arc::ptr_eq(a.inner.as_ref().unwrap(), b.inner.as_ref().unwrap())
        };
        assert!(shared(&a, &b));
        // Removing a name that is not there copies nothing.
        assert!(!b.remove("x-missing"));
        assert!(shared(&a, &b));
        b.set("x-a", "2");
        assert!(!shared(&a, &b));
        assert_eq!(a.get("x-a"), Some(&b"1"[..]));
        assert_eq!(b.get("x-a"), Some(&b"2"[..]));
        // Sent while the other side still holds it: the sender gets its own copy.
        let c = a.clone();
        let sent = c.into_header_map().unwrap();
        assert_eq!(sent.get("x-a").unwrap(), "1");
        assert_eq!(a.get("x-a"), Some(&b"1"[..]));
    }

    #[test]
    fn keeps_each_names_values_in_order() {
        let mut h = Headers::new();
        h.append("Accept", "a");
        h.append("X-B", "1");
        h.append("accept", "b");
        assert_eq!(h.get_all("ACCEPT").collect::<Vec<_>>(), vec![b"a", b"b"]);
        assert_eq!(h.names(), vec!["accept", "x-b"]);
        let lines: Vec<_> = h.iter().map(|(n, v)| (n, v.to_vec())).collect();
        assert_eq!(
            lines,
            vec![
                ("accept", b"a".to_vec()),
                ("accept", b"b".to_vec()),
                ("x-b", b"1".to_vec())
            ]
        );
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
        assert!(!h.remove("not a name"));
        assert_eq!(h.get_all("not a name").count(), 0);
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
        // `http::HeaderMap` holds at most 32768 names.
        let h: Headers = (0..40_000).map(|i| (format!("x-{i}"), "v")).collect();
        assert!(matches!(
            h.into_header_map(),
            Err(InvalidHeader::TooMany(_))
        ));
        let mut h: Headers = (0..40_000).map(|i| (format!("x-{i}"), "v")).collect();
        h.set("x-more", "v");
        assert!(matches!(
            h.into_header_map(),
            Err(InvalidHeader::TooMany(_))
        ));
    }

    #[test]
    fn refuses_crlf_and_bad_names_where_they_are_written() {
        let mut h: Headers = [("x", "a\r\nb")].into_iter().collect();
        assert!(!h.contains("x"));
        h.append("bad name", "v");
        h.append("y", "fine");
        assert_eq!(h.get("y"), Some(&b"fine"[..]));
        // The first refusal is the one reported.
        assert_eq!(h.into_header_map(), Err(InvalidHeader::Value("x".into())));
        let h: Headers = [("bad name", "v")].into_iter().collect();
        assert!(matches!(h.into_header_map(), Err(InvalidHeader::Name(_))));
    }

    #[test]
    fn a_map_from_hyper_is_kept_as_it_is() {
        let mut m = HeaderMap::new();
        m.append("x-a", HeaderValue::from_static("1"));
        m.append("x-a", HeaderValue::from_static("2"));
        let h = Headers::from(m.clone());
        assert_eq!(h.into_header_map(), Ok(m));
    }
}
