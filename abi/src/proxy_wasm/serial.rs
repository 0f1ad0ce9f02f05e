//! The proxy-wasm header map serialization:
//! LE u32 count N; N × (u32 key_len, u32 value_len); then per pair key, `00`, value, `00`.

/// At most this many pairs in one map a guest hands over.
pub const MAX_PAIRS: usize = 1024;
/// At most this many bytes in one serialized map a guest hands over.
pub const MAX_BYTES: usize = 1 << 20;

/// Serializes pairs. An empty list serializes to no bytes at all (the host then
/// hands the guest ptr 0 / size 0, which every SDK reads as an empty map).
pub fn serialize<'a>(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Vec<u8> {
    let pairs: Vec<_> = pairs.into_iter().collect();
    if pairs.is_empty() {
        return Vec::new();
    }
    let data: usize = pairs.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    let mut out = Vec::with_capacity(4 + pairs.len() * 8 + data);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in &pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in &pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// Deserialized pairs, in order.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Why a serialized map was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// Fewer bytes than the header announces.
    #[error("truncated header map")]
    Truncated,
    /// Bytes left over, a missing NUL, or too many pairs / bytes.
    #[error("malformed header map: {0}")]
    Malformed(&'static str),
}

fn u32_at(b: &[u8], at: usize) -> Result<usize, MapError> {
    let s = b.get(at..at + 4).ok_or(MapError::Truncated)?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
}

/// Parses a serialized map strictly. Size 0 (and a zero count) is the empty map.
pub fn deserialize(b: &[u8]) -> Result<Pairs, MapError> {
    if b.is_empty() {
        return Ok(Vec::new());
    }
    if b.len() > MAX_BYTES {
        return Err(MapError::Malformed("larger than 1 MiB"));
    }
    let n = u32_at(b, 0)?;
    if n > MAX_PAIRS {
        return Err(MapError::Malformed("more than 1024 pairs"));
    }
    let mut sizes = Vec::with_capacity(n);
    for i in 0..n {
        sizes.push((u32_at(b, 4 + i * 8)?, u32_at(b, 8 + i * 8)?));
    }
    let mut at = 4 + n * 8;
    let mut out = Vec::with_capacity(n);
    for (kl, vl) in sizes {
        let key = b.get(at..at + kl).ok_or(MapError::Truncated)?;
        at += kl;
        if *b.get(at).ok_or(MapError::Truncated)? != 0 {
            return Err(MapError::Malformed("key not followed by NUL"));
        }
        at += 1;
        let value = b.get(at..at + vl).ok_or(MapError::Truncated)?;
        at += vl;
        if *b.get(at).ok_or(MapError::Truncated)? != 0 {
            return Err(MapError::Malformed("value not followed by NUL"));
        }
        at += 1;
        out.push((key.to_vec(), value.to_vec()));
    }
    if at != b.len() {
        return Err(MapError::Malformed("bytes after the last pair"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fact_sheet_example() {
        let b = serialize([(&b"a"[..], &b"1"[..]), (&b"b"[..], &b"22"[..])]);
        assert_eq!(
            b,
            [
                2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0x61, 0, 0x31, 0, 0x62,
                0, 0x32, 0x32, 0
            ]
        );
        assert_eq!(
            deserialize(&b).unwrap(),
            vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"22".to_vec())
            ]
        );
        assert_eq!(deserialize(&[]).unwrap(), vec![]);
        assert_eq!(deserialize(&[0, 0, 0, 0]).unwrap(), vec![]);
        assert_eq!(deserialize(&[0]), Err(MapError::Truncated));
    }

    proptest! {
        #[test]
        fn round_trip(pairs in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..20), proptest::collection::vec(any::<u8>(), 0..20)),
            0..12,
        )) {
            let b = serialize(pairs.iter().map(|(k, v)| (&k[..], &v[..])));
            prop_assert_eq!(deserialize(&b).unwrap(), pairs.clone());
            // Every strict prefix is rejected, never a panic.
            for cut in 1..b.len() {
                prop_assert!(deserialize(&b[..cut]).is_err());
            }
            // A byte too many is rejected.
            if !b.is_empty() {
                let mut longer = b.clone();
                longer.push(0);
                prop_assert!(deserialize(&longer).is_err());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = deserialize(&b);
        }
    }
}
