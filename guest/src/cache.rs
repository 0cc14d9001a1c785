//! The cache of recreated blobs: `cache/<digest>`, least recently used first
//! out, within a byte budget (the `cache-bytes` setting).
//!
//! Recreating a gzip layer is CPU-bound (preflate-rs), so the first pull of a
//! converted layer fills the cache while it streams and later pulls read the
//! file. An entry is written to a temporary name, its digest checked, fsynced
//! and renamed: a cached file is always the exact blob. A hit refreshes the
//! file's modification time, which orders eviction.

use std::fs::{self, File};
use std::io::{self, BufWriter, ErrorKind, Write};
use std::path::PathBuf;
use std::time::SystemTime;

use crate::layout::Layout;
use crate::oci::{Digest, Hasher};
use crate::store::list_dir;

/// The cache directory of a store.
#[derive(Debug, Clone)]
pub struct Cache {
    layout: Layout,
    dir: PathBuf,
    budget: u64,
}

impl Cache {
    pub fn new(layout: &Layout, budget: u64) -> Self {
        Self {
            layout: layout.clone(),
            dir: layout.cache(),
            budget,
        }
    }

    fn path(&self, digest: &Digest) -> PathBuf {
        self.layout.cached(digest)
    }

    /// Opens a cached blob of the expected size, refreshing its place in
    /// the LRU order; `None` on a miss.
    pub fn open(&self, digest: &Digest, size: u64) -> Option<File> {
        let f = File::open(self.path(digest)).ok()?;
        if f.metadata().ok()?.len() != size {
            return None;
        }
        if let Ok(w) = fs::OpenOptions::new().write(true).open(self.path(digest)) {
            let _ = w.set_modified(SystemTime::now());
        }
        Some(f)
    }

    /// Drops an entry (one that turned out damaged).
    ///
    /// # Errors
    /// I/O errors other than the entry being gone already.
    pub fn remove(&self, digest: &Digest) -> io::Result<()> {
        match fs::remove_file(self.path(digest)) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Starts filling an entry, if the budget allows one of `size` bytes.
    ///
    /// # Errors
    /// I/O errors creating the temporary file.
    pub fn fill(&self, digest: &Digest, size: u64) -> io::Result<Option<Fill>> {
        if size > self.budget {
            return Ok(None);
        }
        fs::create_dir_all(&self.dir)?;
        let tmp = self.dir.join(format!(
            ".tmp-{}-{}",
            digest.hex(),
            crate::hex::encode(&crate::sys::random_bytes(6))
        ));
        let out = BufWriter::with_capacity(256 * 1024, File::create(&tmp)?);
        Ok(Some(Fill {
            cache: self.clone(),
            tmp,
            out: Some(out),
            hasher: Some(Hasher::new(digest.algorithm())),
            digest: digest.clone(),
        }))
    }

    /// Entries and their bytes (temporaries included: they use disk too).
    ///
    /// # Errors
    /// I/O errors listing the directory.
    pub fn usage(&self) -> io::Result<(u64, u64)> {
        let (mut n, mut bytes) = (0, 0);
        for (_, len, _) in self.entries()? {
            n += 1;
            bytes += len;
        }
        Ok((n, bytes))
    }

    fn entries(&self) -> io::Result<Vec<(PathBuf, u64, SystemTime)>> {
        // Fills in progress are temporaries, not entries (stats counts them
        // apart): the listing leaves them out. An entry evicted since the
        // listing is gone.
        let mut out = Vec::new();
        for (name, _) in list_dir(&self.dir)? {
            let path = self.dir.join(name);
            let meta = match fs::metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if meta.is_file() {
                let t = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                out.push((path, meta.len(), t));
            }
        }
        Ok(out)
    }

    /// Removes least recently used entries until the cache fits its budget.
    ///
    /// # Errors
    /// I/O errors listing or removing entries.
    pub fn evict(&self) -> io::Result<()> {
        let mut entries = self.entries()?;
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        entries.sort_by_key(|e| e.2);
        for (path, len, _) in entries {
            if total <= self.budget {
                break;
            }
            match fs::remove_file(&path) {
                Ok(()) => total -= len,
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// An entry being written while its blob streams to a client.
pub struct Fill {
    cache: Cache,
    tmp: PathBuf,
    out: Option<BufWriter<File>>,
    hasher: Option<Hasher>,
    digest: Digest,
}

impl Fill {
    /// Appends bytes; a write error only drops the entry.
    pub fn write(&mut self, bytes: &[u8]) {
        if let (Some(out), Some(h)) = (&mut self.out, &mut self.hasher) {
            h.update(bytes);
            if out.write_all(bytes).is_err() {
                self.out = None;
            }
        }
    }

    /// Commits the entry if its bytes hash to the digest, then evicts.
    ///
    /// # Errors
    /// I/O errors; the temporary is removed.
    pub fn commit(mut self) -> io::Result<()> {
        let (Some(out), Some(h)) = (self.out.take(), self.hasher.take()) else {
            return Ok(());
        };
        if h.finish() != self.digest {
            return Ok(());
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&self.tmp, self.cache.path(&self.digest))?;
        self.cache.evict()
    }
}

impl Drop for Fill {
    fn drop(&mut self) {
        // Committed entries were renamed away; anything else is dropped.
        let _ = fs::remove_file(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Algorithm;
    use crate::test_support::scratch_store;

    #[test]
    fn entries_are_kept_only_when_their_digest_matches() {
        let store = scratch_store("cache-digest");
        let cache = Cache::new(store.layout(), 1 << 20);
        let d = Digest::of(Algorithm::Sha256, b"hello");
        let mut f = cache.fill(&d, 5).unwrap().unwrap();
        f.write(b"hel");
        f.write(b"lo");
        f.commit().unwrap();
        assert!(cache.open(&d, 5).is_some());
        assert!(cache.open(&d, 6).is_none(), "wrong size is a miss");
        let other = Digest::of(Algorithm::Sha256, b"other");
        let mut f = cache.fill(&other, 5).unwrap().unwrap();
        f.write(b"wrong");
        f.commit().unwrap();
        assert!(cache.open(&other, 5).is_none());
        assert_eq!(cache.usage().unwrap(), (1, 5));
    }

    #[test]
    fn least_recently_used_entries_leave_first() {
        let store = scratch_store("cache-lru");
        let cache = Cache::new(store.layout(), 250);
        let blobs: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 100]).collect();
        let digests: Vec<Digest> = blobs
            .iter()
            .map(|b| Digest::of(Algorithm::Sha256, b))
            .collect();
        for (b, d) in blobs.iter().zip(&digests).take(2) {
            let mut f = cache.fill(d, 100).unwrap().unwrap();
            f.write(b);
            f.commit().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Touch the first, so the second is the least recently used.
        assert!(cache.open(&digests[0], 100).is_some());
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut f = cache.fill(&digests[2], 100).unwrap().unwrap();
        f.write(&blobs[2]);
        f.commit().unwrap();
        assert!(cache.open(&digests[0], 100).is_some());
        assert!(cache.open(&digests[1], 100).is_none());
        assert!(cache.open(&digests[2], 100).is_some());
        assert!(cache.usage().unwrap().1 <= 250);
    }

    #[test]
    fn blobs_over_the_budget_are_not_cached() {
        let store = scratch_store("cache-budget");
        let cache = Cache::new(store.layout(), 10);
        let d = Digest::of(Algorithm::Sha256, b"x");
        assert!(cache.fill(&d, 11).unwrap().is_none());
    }
}
