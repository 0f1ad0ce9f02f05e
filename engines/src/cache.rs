//! On-disk cache of compiled artifacts.
//!
//! File layout: `MAGIC (8) | key digest (32) | artifact length (u64 LE) |
//! sha256 of the artifact (32) | artifact`. A file whose magic, key, length
//! or checksum does not match is ignored (and later overwritten). Writes go
//! to a temporary file in the same directory, then `rename`.
//!
//! The checksum only catches corruption: whoever can write the directory can
//! write a matching file, and a loaded artifact is native code run without
//! further checks. So the directory is trusted only when this user alone can
//! write it: [`Cache::open`] creates it with mode 0700 and refuses an
//! existing one that another user owns or that group or others may write;
//! files in it that another user owns are never loaded. After each store,
//! artifacts beyond the size cap are removed, oldest (by modification time)
//! first.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

const MAGIC: &[u8; 8] = b"WGCACHE1";
const HEADER: usize = 8 + 32 + 8 + 32;
/// Extension of artifact files.
const EXTENSION: &str = "wgc";
/// Prefix of temporary files (written, then renamed to an artifact).
const TMP_PREFIX: &str = ".tmp-";
/// A temporary file older than this was left by a process that died while
/// writing it; eviction removes it.
const STALE_TMP: Duration = Duration::from_secs(3600);

/// Why a cache directory is not used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    /// It could not be created or inspected.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Another user could write (or replace) what the engine would load.
    #[error("{0}")]
    Untrusted(String),
}

/// A cache directory that only the current user can write.
#[derive(Debug)]
pub(crate) struct Cache {
    dir: PathBuf,
    max_bytes: u64,
}

impl Cache {
    /// Creates `dir` with mode 0700 if it does not exist, then checks that
    /// the current user owns it and that neither group nor others can write
    /// it. `max_bytes` caps the artifacts kept in it.
    pub(crate) fn open(dir: &Path, max_bytes: u64) -> Result<Cache, Refused> {
        create_private_dir(dir)?;
        let meta = std::fs::metadata(dir)?;
        check_dir(&meta, current_uid())?;
        Ok(Cache {
            dir: dir.to_path_buf(),
            max_bytes,
        })
    }

    /// The entry for `key`, which must include everything the artifact
    /// depends on: module hash, engine, engine version and options.
    pub(crate) fn entry(&self, engine: &str, key: &str) -> CacheEntry {
        let key: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        CacheEntry {
            path: self.dir.join(format!("{engine}-{hex}.{EXTENSION}")),
            key,
            max_bytes: self.max_bytes,
        }
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.exists() {
        return Ok(());
    }
    // Missing parents get 0700 too (as XDG asks of `~/.cache`).
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(unix)]
fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Accepts a directory the user `uid` owns that group and others cannot write.
#[cfg(unix)]
fn check_dir(meta: &std::fs::Metadata, uid: u32) -> Result<(), Refused> {
    use std::os::unix::fs::MetadataExt;
    if !meta.is_dir() {
        return Err(Refused::Untrusted("not a directory".into()));
    }
    if meta.uid() != uid {
        return Err(Refused::Untrusted(format!(
            "owned by uid {}, not by the current user (uid {uid})",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(Refused::Untrusted(format!(
            "writable by group or others (mode {:o}); `chmod go-w` it",
            meta.mode() & 0o777
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn current_uid() -> u32 {
    0
}

#[cfg(not(unix))]
fn check_dir(_: &std::fs::Metadata, _: u32) -> Result<(), Refused> {
    Err(Refused::Untrusted(
        "directory ownership cannot be checked on this platform".into(),
    ))
}

/// True for a regular file the current user owns.
#[cfg(unix)]
fn owned_file(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    meta.is_file() && meta.uid() == current_uid()
}

#[cfg(not(unix))]
fn owned_file(_: &std::fs::Metadata) -> bool {
    false
}

/// A cache entry location plus the key digest it must carry.
pub(crate) struct CacheEntry {
    path: PathBuf,
    key: [u8; 32],
    max_bytes: u64,
}

impl CacheEntry {
    /// Path of the cache file.
    #[allow(dead_code)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The verified artifact, or `None` if absent, foreign, corrupt, owned by
    /// another user or larger than the cap.
    pub(crate) fn load(&self) -> Option<Vec<u8>> {
        let mut f = File::open(&self.path).ok()?;
        // Checked on the open file, so it is the file that is then read.
        let meta = f.metadata().ok()?;
        if !owned_file(&meta) || meta.len() > self.max_bytes {
            return None;
        }
        let mut data = Vec::with_capacity(meta.len() as usize);
        f.read_to_end(&mut data).ok()?;
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

    /// Writes the artifact atomically, then evicts beyond the cap; errors
    /// are reported but harmless. An artifact larger than the cap is not kept.
    pub(crate) fn store(&self, artifact: &[u8]) -> std::io::Result<()> {
        if (HEADER + artifact.len()) as u64 > self.max_bytes {
            return Ok(());
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let tmp = dir.join(format!(
            "{TMP_PREFIX}{}-{}-{}",
            std::process::id(),
            crate::next_instance_id(),
            self.path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("x")
        ));
        let res = (|| {
            let mut f = create_private_file(&tmp)?;
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
        res?;
        evict(dir, self.max_bytes, &self.path);
        Ok(())
    }
}

/// A compiled module an engine can write to and read back from the cache.
pub(crate) trait Artifact: Sized {
    /// The engine (configuration) the artifact is compiled for.
    type Engine;
    /// The engine's serialized form of the compiled module.
    fn serialize(&self) -> Option<Vec<u8>>;
    /// Loads what [`Artifact::serialize`] wrote; `None` if the engine refuses it.
    ///
    /// # Safety
    ///
    /// The engine maps `bytes` as native code and runs it unchecked: they
    /// must be the output of [`Artifact::serialize`] of the same engine
    /// version and compile-relevant configuration (see [`load_or_compile`]).
    unsafe fn deserialize(engine: &Self::Engine, bytes: Vec<u8>) -> Option<Self>;
}

/// The module from the cache entry of `key` when there is a valid one,
/// otherwise from `compile` (then stored in the cache, best effort). The
/// flag says whether it came from the cache. `key` must name everything the
/// artifact depends on: the module's hash, the engine, its version and every
/// compile-relevant option.
pub(crate) fn load_or_compile<M: Artifact>(
    cache: Option<&Cache>,
    engine: &M::Engine,
    engine_name: &str,
    key: &str,
    compile: impl FnOnce() -> Result<M, crate::EngineError>,
) -> Result<(M, bool), crate::EngineError> {
    let entry = cache.map(|c| c.entry(engine_name, key));
    // SAFETY: the bytes are an artifact that this engine version, with this
    // configuration, serialized:
    // * `Cache::open` only accepted a directory the effective user owns and
    //   that group and others cannot write (created 0700 when missing), so
    //   only this user's processes (and root) can create or rename files in
    //   it; `CacheEntry::load` checks, on the open file, that it is a regular
    //   file this user owns. This assumes the directory itself cannot be
    //   swapped by another user, i.e. its parents are not theirs to write.
    // * The header carries the digest of `key` (module hash, engine name and
    //   version, architecture, every compile-relevant option: the backends'
    //   `fingerprint`s), checked on load, so an artifact of another module,
    //   version or configuration is refused even if renamed onto this name.
    // * The length and SHA-256 in the header rule out a torn or corrupted
    //   write (the writer also writes a private temporary file, then renames).
    // So anyone able to plant bytes here could already run code as this user.
    // wasmtime additionally checks its own version and configuration header.
    let cached = entry
        .as_ref()
        .and_then(|e| e.load())
        .and_then(|bytes| unsafe { M::deserialize(engine, bytes) });
    if let Some(m) = cached {
        return Ok((m, true));
    }
    let m = compile()?;
    if let Some(e) = &entry {
        if let Some(bytes) = m.serialize() {
            // A failed store only costs a compile at the next start.
            let _ = e.store(&bytes);
        }
    }
    Ok((m, false))
}

#[cfg(unix)]
fn create_private_file(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn create_private_file(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

/// Removes the user's artifacts in `dir`, oldest first by modification time,
/// until they take at most `max_bytes`, never `keep` (just written). Files
/// other users own are neither counted nor touched; temporary files count
/// (another process may be writing them) and are removed once stale.
fn evict(dir: &Path, max_bytes: u64, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    let mut total = 0u64;
    let mut artifacts = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let tmp = name.starts_with(TMP_PREFIX);
        if !tmp && path.extension().is_none_or(|e| e != EXTENSION) {
            continue;
        }
        // `DirEntry::metadata` does not follow symlinks: a link is not a file.
        let Ok(meta) = entry.metadata() else { continue };
        if !owned_file(&meta) {
            continue;
        }
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        if tmp {
            let age = now.duration_since(modified).unwrap_or_default();
            if age > STALE_TMP && std::fs::remove_file(&path).is_ok() {
                continue;
            }
        } else if path != keep {
            artifacts.push((modified, path, meta.len()));
        }
        total = total.saturating_add(meta.len());
    }
    if total <= max_bytes {
        return;
    }
    artifacts.sort();
    for (_, path, len) in artifacts {
        if total <= max_bytes {
            break;
        }
        // Another process may have removed it first: then it is gone anyway.
        if std::fs::remove_file(&path).is_ok() || !path.exists() {
            total = total.saturating_sub(len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn cache(dir: &Path, max_bytes: u64) -> Cache {
        Cache::open(dir, max_bytes).unwrap()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|d| d.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn roundtrip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let c = cache(dir.path(), 1 << 20);
        let e = c.entry("x", "key1");
        assert!(e.load().is_none());
        e.store(b"artifact bytes").unwrap();
        assert_eq!(e.load().unwrap(), b"artifact bytes");
        // Another key never loads this file even if renamed onto its path.
        let other = c.entry("x", "key2");
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
        assert!(
            names(dir.path()).iter().all(|n| !n.starts_with(".tmp")),
            "{:?}",
            names(dir.path())
        );
        let mode = std::fs::metadata(e.path()).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
    }

    #[test]
    fn creates_the_directory_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b/cache");
        cache(&dir, 1 << 20);
        for d in [root.path().join("a"), dir] {
            let mode = std::fs::metadata(&d).unwrap().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}: {mode:o}", d.display());
        }
    }

    #[test]
    fn refuses_a_directory_others_can_write() {
        for mode in [0o770, 0o707, 0o777, 0o1777] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
            let err = Cache::open(dir.path(), 1 << 20).unwrap_err();
            assert!(
                err.to_string().contains("writable by group or others"),
                "{err}"
            );
        }
        // Readable by others is fine: only writing matters.
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        Cache::open(dir.path(), 1 << 20).unwrap();
        // A file is not a cache directory.
        let file = dir.path().join("f");
        std::fs::write(&file, b"").unwrap();
        assert!(Cache::open(&file, 1 << 20).is_err());
    }

    /// Another user's directory and files: checked for real when the tests
    /// run as root (they can `chown`), else through the same check with
    /// another uid.
    #[test]
    fn refuses_what_another_user_owns() {
        let dir = tempfile::tempdir().unwrap();
        let meta = std::fs::metadata(dir.path()).unwrap();
        let err = check_dir(&meta, meta.uid() + 1).unwrap_err();
        assert!(err.to_string().contains("not by the current user"), "{err}");
        if current_uid() != 0 {
            eprintln!("not root: chown-based checks skipped");
            return;
        }
        let c = cache(dir.path(), 1 << 20);
        let e = c.entry("x", "key");
        e.store(b"artifact").unwrap();
        assert!(e.load().is_some());
        // A file another user owns is never loaded.
        std::os::unix::fs::chown(e.path(), Some(65534), Some(65534)).unwrap();
        assert!(e.load().is_none());
        // Nor counted or evicted: two empty artifacts over a cap of one
        // evict the first, not the older foreign file.
        let small = cache(dir.path(), HEADER as u64);
        let first = small.entry("x", "first");
        first.store(b"").unwrap();
        small.entry("x", "second").store(b"").unwrap();
        assert!(!first.path().exists());
        assert!(e.path().exists());
        // A directory another user owns is not used.
        std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
        let err = Cache::open(dir.path(), 1 << 20).unwrap_err();
        assert!(err.to_string().contains("uid 65534"), "{err}");
    }

    #[test]
    fn evicts_oldest_first_beyond_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let artifact = [7u8; 1000];
        let size = (HEADER + artifact.len()) as u64;
        let c = cache(dir.path(), 3 * size);
        let base = SystemTime::now() - Duration::from_secs(1000);
        // Stored in one order, aged in another: age decides.
        for (name, age) in [("b", 30), ("a", 10), ("c", 20)] {
            let e = c.entry("x", name);
            e.store(&artifact).unwrap();
            let f = File::options().write(true).open(e.path()).unwrap();
            f.set_modified(base - Duration::from_secs(age)).unwrap();
        }
        let kept = |keys: &[&str]| {
            let mut v: Vec<_> = keys
                .iter()
                .map(|k| {
                    c.entry("x", k)
                        .path()
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                        .into_owned()
                })
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(dir.path()), kept(&["a", "b", "c"]), "within the cap");
        // A fourth: the oldest (b) goes.
        c.entry("x", "d").store(&artifact).unwrap();
        assert_eq!(names(dir.path()), kept(&["a", "c", "d"]));
        // A smaller cap on the next store: oldest first (c, then a) until it fits.
        let small = cache(dir.path(), 2 * size);
        small.entry("x", "e").store(&artifact).unwrap();
        assert_eq!(names(dir.path()), kept(&["d", "e"]));
        assert!(small.entry("x", "e").load().is_some());
        // An artifact larger than the cap is not kept, and a stale temp file
        // left by a crash is removed.
        let tmp = dir.path().join(".tmp-1-1-x");
        std::fs::write(&tmp, b"half").unwrap();
        let f = File::options().write(true).open(&tmp).unwrap();
        f.set_modified(base - STALE_TMP).unwrap();
        let tiny = cache(dir.path(), size - 1);
        tiny.entry("x", "f").store(&artifact).unwrap();
        assert!(tiny.entry("x", "f").load().is_none());
        tiny.entry("x", "g").store(b"").unwrap();
        assert!(!tmp.exists());
        // Other files in the directory are left alone.
        std::fs::write(dir.path().join("README"), vec![0; 10_000]).unwrap();
        tiny.entry("x", "h").store(b"").unwrap();
        assert!(dir.path().join("README").exists());
    }
}
