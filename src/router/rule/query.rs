//! Query matching without allocating, as Go's `url.ParseQuery` reads a query.

use std::borrow::Cow;

/// Walks the raw query like Go's `url.ParseQuery`: pairs are separated by `&`,
/// pairs containing `;` or an invalid escape (in key or value) are skipped.
/// Calls `f` with the raw value of each pair whose decoded key is `key`.
pub(super) fn query_any(query: &str, key: &str, mut f: impl FnMut(&str) -> bool) -> bool {
    query.split('&').any(|pair| {
        if pair.is_empty() || pair.contains(';') {
            return false;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        query_decoded_eq(k, key.as_bytes()) && f(v)
    })
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes the query-component escape starting at `b[i]` (`+` or `%XX` or a
/// literal byte). Returns the byte and the position after it, `None` if the
/// escape is invalid.
fn query_byte(b: &[u8], i: usize) -> Option<(u8, usize)> {
    match b[i] {
        b'+' => Some((b' ', i + 1)),
        b'%' => {
            let hi = hex_val(*b.get(i + 1)?)?;
            let lo = hex_val(*b.get(i + 2)?)?;
            Some(((hi << 4) | lo, i + 3))
        }
        c => Some((c, i + 1)),
    }
}

/// Whether query component `raw` is validly encoded and decodes to `want`,
/// without allocating.
pub(super) fn query_decoded_eq(raw: &str, want: &[u8]) -> bool {
    let b = raw.as_bytes();
    let (mut i, mut j) = (0, 0);
    while i < b.len() {
        let Some((c, next)) = query_byte(b, i) else {
            return false;
        };
        if want.get(j) != Some(&c) {
            return false;
        }
        i = next;
        j += 1;
    }
    j == want.len()
}

/// Decodes a query component (`+` is a space), `None` if an escape is invalid.
/// Borrows when there is nothing to decode.
pub(super) fn query_decode(raw: &str) -> Option<Cow<'_, [u8]>> {
    let b = raw.as_bytes();
    if !b.iter().any(|&c| c == b'%' || c == b'+') {
        return Some(Cow::Borrowed(b));
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let (c, next) = query_byte(b, i)?;
        out.push(c);
        i = next;
    }
    Some(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;

    #[test]
    fn query_value() {
        let r = Req::new().query("a=1&b=hello+world&c=x%20y&d=%2B");
        assert!(r.matches("Query(`a`, `1`)"));
        assert!(!r.matches("Query(`a`, `2`)"));
        assert!(r.matches("Query(`b`, `hello world`)"));
        assert!(!r.matches("Query(`b`, `hello+world`)"));
        assert!(r.matches("Query(`c`, `x y`)"));
        assert!(r.matches("Query(`d`, `+`)"));
        assert!(!r.matches("Query(`z`, `1`)"));
        // Keys are decoded too.
        let r = Req::new().query("my+key=v&k%C3%A9=%C3%A9");
        assert!(r.matches("Query(`my key`, `v`)"));
        assert!(r.matches("Query(`ké`, `é`)"));
    }

    #[test]
    fn query_repeated_keys() {
        let r = Req::new().query("tag=a&tag=b&tag=c");
        assert!(r.matches("Query(`tag`, `a`)"));
        assert!(r.matches("Query(`tag`, `b`)"));
        assert!(r.matches("Query(`tag`, `c`)"));
        assert!(!r.matches("Query(`tag`, `d`)"));
    }

    #[test]
    fn query_presence() {
        let r = Req::new().query("flag&empty=&full=1");
        assert!(r.matches("Query(`flag`)"));
        assert!(r.matches("Query(`empty`)"));
        assert!(r.matches("Query(`full`)"));
        assert!(r.matches("query(`full`)"));
        assert!(!r.matches("Query(`absent`)"));
        assert!(!r.matches("Query(`ful`)"));
        assert!(!Req::new().query("").matches("Query(`flag`)"));
    }

    #[test]
    fn query_skips_pairs_go_rejects() {
        // Semicolons and invalid escapes make Go's ParseQuery drop the pair.
        let r = Req::new().query("a=1;b=2&c=%zz&d=%4&e=ok");
        assert!(!r.matches("Query(`a`)"));
        assert!(!r.matches("Query(`b`)"));
        assert!(!r.matches("Query(`c`)"));
        assert!(!r.matches("Query(`d`)"));
        assert!(r.matches("Query(`e`, `ok`)"));
        // Empty pairs are ignored.
        assert!(Req::new().query("&&x=1&").matches("Query(`x`, `1`)"));
    }

    #[test]
    fn query_regexp() {
        let r = Req::new().query("id=123&id=abc&name=a+b");
        assert!(r.matches("QueryRegexp(`id`, `^[a-z]+$`)"));
        assert!(r.matches("QueryRegexp(`id`, `^[0-9]+$`)"));
        assert!(!r.matches("QueryRegexp(`id`, `^[A-Z]+$`)"));
        assert!(r.matches("QueryRegexp(`name`, `^a b$`)"));
        assert!(r.matches("QueryRegexp(`name`)"));
        assert!(!r.matches("QueryRegexp(`nope`, `.*`)"));
    }
}
