//! The cache of recreated blobs: `cache/<digest>`, least recently used first
//! out, within a byte budget (the `cache-bytes` setting).
//!
//! Recreating a gzip layer is CPU-bound (preflate-rs), so the first pull of a
//! converted layer fills the cache while it streams and later pulls read the
//! file. An entry is written to a temporary name, its digest checked, fsynced
//! and renamed: a cached file is always the exact blob. A hit refreshes the
//! file's modification time, which orders eviction.
//!
//! One recreation per blob however many clients ask at once: the first
//! whole read that misses creates the blob's fill file exclusively; the
//! others read that file as it grows ([`Following`]) instead of recreating
//! the blob on their own, and take over (recreate from where they got to)
//! only if the filling read gives up or stalls.

use std::fs::{self, File};
use std::io::{self, BufWriter, ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

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

    /// What a whole read of `digest` (`size` bytes) that missed the cache
    /// does: fill the entry while it recreates the blob, or follow the
    /// fill another read already started (so concurrent cold pulls of one
    /// blob recreate it once), or neither when the budget leaves no room.
    ///
    /// One fill per blob: its file, `.tmp-fill-<hex>`, is created
    /// exclusively. A fill file not written to for `stall` is a dead
    /// reader's: it is removed and this read fills instead.
    ///
    /// # Errors
    /// I/O errors creating or opening the fill file.
    pub fn miss(&self, digest: &Digest, size: u64, stall: Duration) -> io::Result<Miss> {
        if size > self.budget {
            return Ok(Miss::Uncached);
        }
        fs::create_dir_all(&self.dir)?;
        let tmp = self.dir.join(format!(".tmp-fill-{}", digest.hex()));
        for _ in 0..2 {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
            {
                Ok(file) => {
                    return Ok(Miss::Fill(Box::new(Fill {
                        cache: self.clone(),
                        tmp,
                        out: Some(BufWriter::with_capacity(256 * 1024, file)),
                        hasher: Some(Hasher::new(digest.algorithm())),
                        digest: digest.clone(),
                    })))
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            let written = fs::metadata(&tmp).and_then(|m| m.modified());
            let stale = match written {
                Ok(t) => t.elapsed().is_ok_and(|age| age > stall),
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if stale {
                match fs::remove_file(&tmp) {
                    Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
                    _ => continue,
                }
            }
            return match File::open(&tmp) {
                Ok(file) => Ok(Miss::Follow(Following {
                    file,
                    tmp,
                    entry: self.path(digest),
                    pos: 0,
                    size,
                    stall,
                    last_growth: Instant::now(),
                })),
                // Committed or dropped just now: recreate, without a fill.
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(Miss::Uncached),
                Err(e) => Err(e),
            };
        }
        Ok(Miss::Uncached)
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

/// What a whole read that missed the cache does; see [`Cache::miss`].
pub enum Miss {
    /// Recreate the blob and fill its entry (boxed: its hasher is large).
    Fill(Box<Fill>),
    /// Read the entry another read is filling.
    Follow(Following),
    /// Recreate the blob; no entry.
    Uncached,
}

/// The fill file of another read, read as it grows.
#[derive(Debug)]
pub struct Following {
    /// The fill file, or once committed the entry, open at `pos`.
    file: File,
    tmp: PathBuf,
    entry: PathBuf,
    pos: u64,
    size: u64,
    stall: Duration,
    last_growth: Instant,
}

/// How long a follower sleeps when it has caught up with the fill.
const FOLLOW_POLL: Duration = Duration::from_millis(10);

/// What one look at the fill found; see [`Following::poll`].
#[derive(Debug, PartialEq, Eq)]
pub enum Poll {
    /// This many new bytes (0: the blob's end).
    Data(usize),
    /// Nothing new yet; the fill goes on.
    Pending,
    /// The fill was dropped: nothing more will come.
    Gone,
}

impl Following {
    /// Bytes read so far.
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// Reads the next bytes the filling read has written, waiting for them
    /// while it goes on. `Ok(None)` when it will not deliver the rest: it
    /// dropped its fill (its client went away, its bytes did not hash
    /// right) or wrote nothing for the stall time; the caller then
    /// recreates the blob from [`Self::pos`] itself. Never reads past the
    /// blob's size.
    ///
    /// # Errors
    /// I/O errors reading the file.
    pub fn read_some(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            match self.poll(buf)? {
                Poll::Data(n) => return Ok(Some(n)),
                Poll::Gone => return Ok(None),
                Poll::Pending if self.last_growth.elapsed() > self.stall => return Ok(None),
                Poll::Pending => std::thread::sleep(FOLLOW_POLL),
            }
        }
    }

    /// One look at the fill, without waiting.
    ///
    /// A read at the end of a file that is still growing is not retried on
    /// the same descriptor: under WASI preview 2 a file is read through a
    /// stream that, once it reported the end, reports it for good (the
    /// bytes the fill writes later would never be seen). The file is
    /// opened again at `pos` instead: the fill file while it exists, else
    /// the committed entry (any committed entry of the blob holds its
    /// exact bytes).
    ///
    /// # Errors
    /// I/O errors reading the file.
    pub fn poll(&mut self, buf: &mut [u8]) -> io::Result<Poll> {
        let want = buf
            .len()
            .min(usize::try_from(self.size - self.pos).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(Poll::Data(0));
        }
        let n = self.file.read(&mut buf[..want])?;
        if n > 0 {
            return Ok(self.advance(n));
        }
        let pending = match File::open(&self.tmp) {
            Ok(f) => {
                self.file = f;
                true
            }
            Err(e) if e.kind() == ErrorKind::NotFound => match File::open(&self.entry) {
                // The fill renamed its file once every byte was written.
                Ok(f) => {
                    self.file = f;
                    false
                }
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Poll::Gone),
                Err(e) => return Err(e),
            },
            Err(e) => return Err(e),
        };
        self.file.seek(SeekFrom::Start(self.pos))?;
        let n = self.file.read(&mut buf[..want])?;
        if n > 0 {
            Ok(self.advance(n))
        } else if pending {
            Ok(Poll::Pending)
        } else {
            // The committed entry ends before the blob does: not ours.
            Ok(Poll::Gone)
        }
    }

    fn advance(&mut self, n: usize) -> Poll {
        self.pos += n as u64;
        self.last_growth = Instant::now();
        Poll::Data(n)
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
    use crate::test_support::{scratch_store, seeded_bytes};

    const STALL: Duration = Duration::from_secs(10);

    fn fill(cache: &Cache, d: &Digest, size: u64) -> Fill {
        match cache.miss(d, size, STALL).unwrap() {
            Miss::Fill(f) => *f,
            _ => panic!("expected to fill {d}"),
        }
    }

    fn follow(cache: &Cache, d: &Digest, size: u64, stall: Duration) -> Following {
        match cache.miss(d, size, stall).unwrap() {
            Miss::Follow(f) => f,
            _ => panic!("expected to follow the fill of {d}"),
        }
    }

    /// Everything the follower reads, and whether it got to the end
    /// (else it was told to recreate the rest).
    fn read_all(f: &mut Following) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let mut buf = vec![0; 100_000];
        loop {
            match f.read_some(&mut buf).unwrap() {
                Some(0) => return (out, true),
                Some(n) => out.extend_from_slice(&buf[..n]),
                None => return (out, false),
            }
        }
    }

    #[test]
    fn a_second_miss_reads_the_fill_in_progress_instead_of_recreating() {
        let store = scratch_store("cache-follow");
        let cache = Cache::new(store.layout(), 10 << 20);
        let blob = seeded_bytes(5, 700_000);
        let d = Digest::of(Algorithm::Sha256, &blob);
        let mut first = fill(&cache, &d, blob.len() as u64);
        first.write(&blob[..100_000]);
        let mut second = follow(&cache, &d, blob.len() as u64, STALL);
        first.write(&blob[100_000..]);
        first.commit().unwrap();
        assert_eq!(read_all(&mut second), (blob.clone(), true));
        assert!(cache.open(&d, blob.len() as u64).is_some());
    }

    /// Under WASI preview 2 a read that reached the end of a growing file
    /// saw the end for good on that descriptor: a follower that caught up
    /// with the fill once never saw another byte (every concurrent pull
    /// ended up recreating the blob itself). It must see what comes after.
    #[test]
    fn a_follower_that_caught_up_sees_the_bytes_written_after() {
        let store = scratch_store("cache-follow-caught-up");
        let cache = Cache::new(store.layout(), 10 << 20);
        let blob = seeded_bytes(8, 900_000);
        let d = Digest::of(Algorithm::Sha256, &blob);
        let mut first = fill(&cache, &d, blob.len() as u64);
        let mut second = follow(&cache, &d, blob.len() as u64, STALL);
        let mut buf = vec![0; 1 << 20];
        assert_eq!(
            second.poll(&mut buf).unwrap(),
            Poll::Pending,
            "nothing flushed yet"
        );
        first.write(&blob[..300_000]); // at least 256 KiB reach the file
        let mut got = Vec::new();
        loop {
            match second.poll(&mut buf).unwrap() {
                Poll::Data(k) if k > 0 => got.extend_from_slice(&buf[..k]),
                Poll::Pending => break,
                other => panic!("{other:?} while the fill goes on"),
            }
        }
        assert!(
            got.len() >= 256 * 1024,
            "the bytes written after the end was seen: {}",
            got.len()
        );
        assert_eq!(got, blob[..got.len()]);
        first.write(&blob[300_000..]);
        first.commit().unwrap(); // renamed: the rest is read from the entry
        loop {
            match second.poll(&mut buf).unwrap() {
                Poll::Data(0) => break,
                Poll::Data(k) => got.extend_from_slice(&buf[..k]),
                other => panic!("{other:?} after the commit"),
            }
        }
        assert_eq!(got, blob);
    }

    #[test]
    fn a_follower_is_told_to_recreate_when_the_fill_is_dropped() {
        let store = scratch_store("cache-follow-dropped");
        let cache = Cache::new(store.layout(), 10 << 20);
        let blob = seeded_bytes(6, 700_000);
        let d = Digest::of(Algorithm::Sha256, &blob);
        let mut first = fill(&cache, &d, blob.len() as u64);
        let mut second = follow(&cache, &d, blob.len() as u64, STALL);
        first.write(&blob[..300_000]); // 256 KiB of it reach the file
        drop(first); // its client went away
        let (got, finished) = read_all(&mut second);
        assert!(!finished, "a dropped fill cannot finish");
        assert!(
            got.len() >= 256 * 1024 && got.len() <= 300_000,
            "{}",
            got.len()
        );
        assert_eq!(got, blob[..got.len()]);
        assert_eq!(second.pos(), got.len() as u64);
        // The next miss fills afresh.
        drop(fill(&cache, &d, blob.len() as u64));
    }

    #[test]
    fn a_stalled_fill_is_followed_no_longer_than_the_stall_time_then_replaced() {
        let store = scratch_store("cache-follow-stalled");
        let cache = Cache::new(store.layout(), 10 << 20);
        let d = Digest::of(Algorithm::Sha256, b"stalled");
        let first = fill(&cache, &d, 7);
        let mut second = follow(&cache, &d, 7, Duration::from_millis(50));
        let started = Instant::now();
        assert_eq!(read_all(&mut second), (Vec::new(), false));
        assert!(started.elapsed() < Duration::from_secs(5));
        // A reader that died without removing its fill file (a killed
        // instance) blocks no one past the stall time.
        std::mem::forget(first);
        std::thread::sleep(Duration::from_millis(60));
        let mut again = match cache.miss(&d, 7, Duration::from_millis(50)).unwrap() {
            Miss::Fill(f) => *f,
            _ => panic!("a stale fill file must be replaced"),
        };
        again.write(b"stalled");
        again.commit().unwrap();
        assert!(cache.open(&d, 7).is_some());
    }

    #[test]
    fn entries_are_kept_only_when_their_digest_matches() {
        let store = scratch_store("cache-digest");
        let cache = Cache::new(store.layout(), 1 << 20);
        let d = Digest::of(Algorithm::Sha256, b"hello");
        let mut f = fill(&cache, &d, 5);
        f.write(b"hel");
        f.write(b"lo");
        f.commit().unwrap();
        assert!(cache.open(&d, 5).is_some());
        assert!(cache.open(&d, 6).is_none(), "wrong size is a miss");
        let other = Digest::of(Algorithm::Sha256, b"other");
        let mut f = fill(&cache, &other, 5);
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
            let mut f = fill(&cache, d, 100);
            f.write(b);
            f.commit().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Touch the first, so the second is the least recently used.
        assert!(cache.open(&digests[0], 100).is_some());
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut f = fill(&cache, &digests[2], 100);
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
        assert!(matches!(cache.miss(&d, 11, STALL).unwrap(), Miss::Uncached));
    }
}
