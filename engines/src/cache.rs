//! On-disk cache of compiled artifacts.
//!
//! File layout: `MAGIC (8) | key digest (32) | artifact length (u64 LE) |
//! sha256 of the artifact (32) | artifact`. A file whose magic, key, length
//! or checksum does not match is ignored (and later overwritten); only a
//! verified artifact is handed to the engine's unsafe deserializer. Writes go
//! to a temporary file in the same directory, then `rename`.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

const MAGIC: &[u8; 8] = b"WGCACHE1";
const HEADER: usize = 8 + 32 + 8 + 32;

/// A cache entry location plus the key digest it must carry.
pub(crate) struct CacheEntry {
    path: PathBuf,
    key: [u8; 32],
}

impl CacheEntry {
    /// `key` must include everything the artifact depends on: module hash,
    /// engine, engine version and options.
    pub(crate) fn new(dir: &Path, engine: &str, key: &str) -> CacheEntry {
        let key: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        CacheEntry {
            path: dir.join(format!("{engine}-{hex}.wgc")),
            key,
        }
    }

    /// Path of the cache file.
    #[allow(dead_code)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The verified artifact, or `None` if absent, foreign or corrupt.
    pub(crate) fn load(&self) -> Option<Vec<u8>> {
        let mut data = std::fs::read(&self.path).ok()?;
        if data.len() < HEADER || &data[..8] != MAGIC || data[8..40] != self.key {
            return None;
        }
        let len = u64::from_le_bytes(data[40..48].try_into().ok()?);
        if len != (data.len() - HEADER) as u64 {
            return None;
        }
        let sum: [u8; 32] = Sha256::digest(&data[HEADER..]).into();
        if sum[..] != data[48..80] {
            return None;
        }
        data.drain(..HEADER);
        Some(data)
    }

    /// Writes the artifact atomically; errors are reported but harmless.
    pub(crate) fn store(&self, artifact: &[u8]) -> std::io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let tmp = dir.join(format!(
            ".tmp-{}-{}-{}",
            std::process::id(),
            crate::next_instance_id(),
            self.path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("x")
        ));
        let res = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(MAGIC)?;
            f.write_all(&self.key)?;
            f.write_all(&(artifact.len() as u64).to_le_bytes())?;
            let sum: [u8; 32] = Sha256::digest(artifact).into();
            f.write_all(&sum)?;
            f.write_all(artifact)?;
            f.sync_all()?;
            drop(f);
            std::fs::rename(&tmp, &self.path)
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let e = CacheEntry::new(dir.path(), "x", "key1");
        assert!(e.load().is_none());
        e.store(b"artifact bytes").unwrap();
        assert_eq!(e.load().unwrap(), b"artifact bytes");
        // Another key never loads this file even if renamed onto its path.
        let other = CacheEntry::new(dir.path(), "x", "key2");
        std::fs::copy(e.path(), other.path()).unwrap();
        assert!(other.load().is_none());
        // Flip one artifact byte: checksum fails.
        let mut data = std::fs::read(e.path()).unwrap();
        let last = data.len() - 1;
        data[last] ^= 0xff;
        std::fs::write(e.path(), &data).unwrap();
        assert!(e.load().is_none());
        // Truncated file.
        std::fs::write(e.path(), &data[..20]).unwrap();
        assert!(e.load().is_none());
        // No temp files left behind.
        e.store(b"again").unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|d| d.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with(".tmp")), "{names:?}");
    }
}
