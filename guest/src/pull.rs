//! Serving a blob: the one owner of where a pull's bytes come from.
//!
//! [`Blob::open`] finds a committed blob as it is stored right now — its
//! original (awaiting conversion, or kept when conversion failed) or its
//! recipe — and [`Blob::read`] turns it into a [`BlobReader`] over a byte
//! range: the original as it is, a verbatim recipe straight from its
//! blocks, otherwise the cache of recreated blobs or, on a miss, the blob
//! recreated from its recipe while a whole read fills the cache.
//!
//! A whole blob is verified against its digest as it streams: the reader
//! holds its last batch back until everything before hashed right, so a blob
//! that does not hash to its digest never reaches a client whole — the read
//! fails instead and the transfer is cut off. The damaged source is then
//! dealt with here: an original is set aside (`damaged-original`: the blob
//! becomes unknown, so its next push repairs it), a cache entry dropped.
//! A range cannot be checked against the digest without reading the whole
//! blob. A range rebuilt from blocks checks each block it reads against its
//! SHA-1 instead (and recreation from verified blocks gives the bytes proven
//! when the recipe was committed), so a damaged block fails the read. A
//! range of an original (a blob awaiting conversion, or one that could not
//! be converted) or of a cache entry is served as stored; the next whole
//! read of it verifies it and sets it aside or drops it if damaged.
//!
//! Concurrent whole reads of a blob that is not cached recreate it once:
//! the first fills the cache, the others follow its fill file
//! ([`crate::cache::Cache::miss`]) and recreate the rest themselves only if
//! it gives up.

use std::fs::File;
use std::io::{self, BufReader, ErrorKind, Read, Seek, SeekFrom};
use std::time::Duration;

use crate::cache::{Cache, Fill, Following, Miss};
use crate::oci::{Digest, Hasher};
use crate::rebuild::Rebuild;
use crate::store::{BlobSource, Store};

/// Bytes read from the source at a time, and the most held back.
const BATCH: usize = 256 * 1024;

/// A committed blob, opened for a GET.
#[derive(Debug)]
pub struct Blob {
    digest: Digest,
    size: u64,
    source: BlobSource,
}

impl Blob {
    /// Opens `digest` as stored now; `None` when it is not committed.
    ///
    /// # Errors
    /// I/O errors, `InvalidData` for a recipe that does not parse.
    pub fn open(store: &Store, digest: &Digest) -> io::Result<Option<Self>> {
        Ok(store.blob_source(digest)?.map(|source| {
            let size = match &source {
                BlobSource::Original(_, size) => *size,
                BlobSource::Recipe(r) => r.size,
            };
            Self {
                digest: digest.clone(),
                size,
                source,
            }
        }))
    }

    /// The blob's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// A reader of bytes `start..end` (`end <= size`). `cache_bytes` is
    /// the cache's budget (0: recreated blobs are not cached).
    ///
    /// # Errors
    /// I/O errors opening or seeking the source.
    pub fn read(
        self,
        store: &Store,
        cache_bytes: u64,
        start: u64,
        end: u64,
    ) -> io::Result<BlobReader> {
        let whole = start == 0 && end == self.size;
        let verify = whole.then(|| (Hasher::new(self.digest.algorithm()), self.digest.clone()));
        let (input, damage, fill, served_from): (Box<dyn Read>, Damage, Option<Fill>, _) =
            match self.source {
                BlobSource::Original(mut f, size) => {
                    f.seek(SeekFrom::Start(start))?;
                    let f = Box::new(BufReader::new(f));
                    (f, Damage::Original(size), None, ServedFrom::Original)
                }
                BlobSource::Recipe(recipe) if recipe.is_verbatim() => (
                    Box::new(rebuild(store, recipe, start, end)),
                    Damage::Blocks,
                    None,
                    ServedFrom::Blocks,
                ),
                BlobSource::Recipe(recipe) => {
                    let cache = Cache::new(store.layout(), cache_bytes);
                    if let Some(mut f) = cache.open(&self.digest, recipe.size) {
                        f.seek(SeekFrom::Start(start))?;
                        let f: BufReader<File> = BufReader::new(f);
                        (Box::new(f), Damage::Cached(cache), None, ServedFrom::Cache)
                    } else {
                        let miss = if whole {
                            // A cache that cannot be written only costs the
                            // entry: the blob is still served.
                            cache
                                .miss(&self.digest, recipe.size, FOLLOW_STALL)
                                .unwrap_or(Miss::Uncached)
                        } else {
                            Miss::Uncached
                        };
                        match miss {
                            Miss::Follow(following) => (
                                Box::new(Follow {
                                    following,
                                    store: store.clone(),
                                    digest: self.digest.clone(),
                                    recipe: Some(recipe),
                                    takeover: None,
                                }),
                                Damage::Blocks,
                                None,
                                ServedFrom::Following,
                            ),
                            Miss::Fill(fill) => (
                                Box::new(rebuild(store, recipe, start, end)),
                                Damage::Blocks,
                                Some(*fill),
                                ServedFrom::Recreated,
                            ),
                            Miss::Uncached => (
                                Box::new(rebuild(store, recipe, start, end)),
                                Damage::Blocks,
                                None,
                                ServedFrom::Recreated,
                            ),
                        }
                    }
                }
            };
        Ok(BlobReader {
            served_from,
            range: (start, end),
            store: store.clone(),
            digest: self.digest,
            input,
            left: end - start,
            verify,
            damage,
            fill,
            ready: Vec::new(),
            ready_pos: 0,
            held: Vec::new(),
            done: false,
            mismatched: false,
        })
    }
}

/// How long a read that follows another's recreation waits for new bytes
/// before it recreates the rest itself. Recreation writes every few
/// milliseconds; a filling read whose client reads slowly can pause longer.
const FOLLOW_STALL: Duration = Duration::from_secs(10);

/// A whole read that follows the recreation another read is doing (its
/// cache fill), and recreates the rest itself if that one gives up. Its
/// bytes are checked against the digest like any whole read's.
struct Follow {
    following: Following,
    store: Store,
    digest: Digest,
    recipe: Option<crate::recipe::Recipe>,
    takeover: Option<Rebuild>,
}

impl Read for Follow {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(r) = &mut self.takeover {
            return r.read(buf);
        }
        if let Some(n) = self.following.read_some(buf)? {
            return Ok(n);
        }
        let Some(recipe) = self.recipe.take() else {
            return Ok(0);
        };
        let pos = self.following.pos();
        eprintln!(
            "blockreg-guest: {}: the read recreating it gave up at byte {pos}; recreating the rest here",
            self.digest
        );
        let r = self
            .takeover
            .insert(Rebuild::new(self.store.layout(), recipe, pos));
        r.read(buf)
    }
}

/// A rebuild of `recipe` for `start..end`; a part of the blob checks its
/// blocks (a whole read is checked against the digest instead).
fn rebuild(store: &Store, recipe: crate::recipe::Recipe, start: u64, end: u64) -> Rebuild {
    let whole = start == 0 && end == recipe.size;
    let r = Rebuild::new(store.layout(), recipe, start);
    if whole {
        r
    } else {
        r.verifying_blocks().until(end)
    }
}

/// What to do with the source when a whole read does not hash right.
enum Damage {
    /// Set the original (of this size) aside.
    Original(u64),
    /// Drop the cache entry.
    Cached(Cache),
    /// Recreated from blocks: nothing to set aside here (the recipe and
    /// packs are checked by the integrity check); the transfer is cut off.
    Blocks,
}

/// Where a read's bytes come from; the route tells the host (for its
/// metrics) in the `blockreg-served-from` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServedFrom {
    /// The blob as pushed, not converted (yet).
    Original,
    /// Its blocks, concatenated (a blob stored verbatim).
    Blocks,
    /// The cache of recreated blobs (a hit).
    Cache,
    /// Recreated from its recipe (a cache miss).
    Recreated,
    /// Read as another read recreates it (a miss while that one fills
    /// the cache).
    Following,
}

impl ServedFrom {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Original => "original",
            Self::Blocks => "blocks",
            Self::Cache => "cache",
            Self::Recreated => "recreated",
            Self::Following => "following",
        }
    }
}

/// Bytes of one blob, verified when whole; see the module doc.
pub struct BlobReader {
    served_from: ServedFrom,
    /// The bytes of the blob this reader yields, `start..end`.
    range: (u64, u64),
    store: Store,
    digest: Digest,
    input: Box<dyn Read>,
    /// Bytes still to read from `input`.
    left: u64,
    verify: Option<(Hasher, Digest)>,
    damage: Damage,
    /// The cache entry a whole recreation fills; committed on drop (it
    /// checks its own digest, so a partial one is discarded).
    fill: Option<Fill>,
    /// Bytes released to the caller, from `ready_pos` on.
    ready: Vec<u8>,
    ready_pos: usize,
    /// The last batch read, held back until the digest matched.
    held: Vec<u8>,
    done: bool,
    /// The whole read did not hash to the digest: every later read fails
    /// too, so a caller that reads on never sees a clean end.
    mismatched: bool,
}

impl BlobReader {
    /// Where this reader's bytes come from.
    pub fn served_from(&self) -> ServedFrom {
        self.served_from
    }
}

impl std::fmt::Debug for BlobReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobReader")
            .field("digest", &self.digest)
            .field("range", &self.range)
            .field("left", &self.left)
            .field("verified", &self.verify.is_some())
            .finish_non_exhaustive()
    }
}

impl BlobReader {
    /// The bytes of the blob this reader yields, `start..end`.
    #[cfg(test)]
    pub fn range(&self) -> (u64, u64) {
        self.range
    }

    /// Reads the next batch into `ready` (or `held`, when verifying).
    fn refill(&mut self) -> io::Result<()> {
        if self.left == 0 {
            self.done = true;
            self.ready = std::mem::take(&mut self.held);
            self.ready_pos = 0;
            if let Some((hasher, expected)) = self.verify.take() {
                let actual = hasher.finish();
                if actual != expected {
                    self.ready.clear();
                    self.mismatched = true;
                    return Err(self.damaged(&actual));
                }
            }
            return Ok(());
        }
        let want = (self.left as usize).min(BATCH);
        let mut batch = std::mem::take(&mut self.ready);
        batch.resize(want, 0);
        let mut got = 0;
        while got < want {
            match self.input.read(&mut batch[got..]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        ErrorKind::UnexpectedEof,
                        format!("{} ended {} bytes early", self.digest, self.left),
                    ))
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.left -= want as u64;
        if let Some(fill) = &mut self.fill {
            fill.write(&batch);
        }
        match &mut self.verify {
            Some((hasher, _)) => {
                hasher.update(&batch);
                self.ready = std::mem::replace(&mut self.held, batch);
            }
            None => self.ready = batch,
        }
        self.ready_pos = 0;
        Ok(())
    }

    /// Deals with a source found damaged and says so.
    fn damaged(&mut self, actual: &Digest) -> io::Error {
        let digest = &self.digest;
        let what = match &self.damage {
            Damage::Original(size) => {
                if let Err(e) = self.store.quarantine_original(digest, *size) {
                    eprintln!("blockreg-guest: setting {digest} aside: {e}");
                }
                "original set aside"
            }
            Damage::Cached(cache) => {
                let _ = cache.remove(digest);
                "cache entry dropped"
            }
            Damage::Blocks => "recreated from its recipe",
        };
        let message = format!("{digest} reads back as {actual} ({what}): transfer cut off");
        eprintln!("blockreg-guest: {message}");
        io::Error::new(ErrorKind::InvalidData, message)
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.ready_pos == self.ready.len() {
            if self.done {
                if self.mismatched {
                    return Err(io::Error::new(
                        ErrorKind::InvalidData,
                        format!("{} does not match its digest", self.digest),
                    ));
                }
                return Ok(0);
            }
            self.refill()?;
        }
        let n = buf.len().min(self.ready.len() - self.ready_pos);
        buf[..n].copy_from_slice(&self.ready[self.ready_pos..self.ready_pos + n]);
        self.ready_pos += n;
        Ok(n)
    }
}

impl Drop for BlobReader {
    /// Commits the cache entry even when the client went away: one that
    /// closes as soon as it has every byte makes the last write fail.
    fn drop(&mut self) {
        if let Some(fill) = self.fill.take() {
            if let Err(e) = fill.commit() {
                eprintln!("blockreg-guest: caching {}: {e}", self.digest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{commit_blob, scratch_store, seeded_bytes};

    fn read_all(r: &mut BlobReader) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 100_000];
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn a_range_of_an_original_is_served_as_stored() {
        let store = scratch_store("pull-range");
        let data = seeded_bytes(1, 700_000);
        let d = commit_blob(&store, &data);
        let blob = Blob::open(&store, &d).unwrap().unwrap();
        assert_eq!(blob.size(), data.len() as u64);
        let mut r = blob.read(&store, 0, 1000, 600_000).unwrap();
        assert_eq!(read_all(&mut r).unwrap(), data[1000..600_000]);
    }

    #[test]
    fn a_damaged_original_never_reaches_the_reader_whole_and_is_set_aside() {
        let store = scratch_store("pull-damaged");
        let data = seeded_bytes(2, 3 * BATCH + 17);
        let d = commit_blob(&store, &data);
        let mut damaged = data.clone();
        damaged[5] ^= 1;
        std::fs::write(store.original_path(&d), &damaged).unwrap();
        let blob = Blob::open(&store, &d).unwrap().unwrap();
        let mut r = blob.read(&store, 0, 0, data.len() as u64).unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 4096];
        let err = loop {
            match r.read(&mut buf) {
                Ok(0) => panic!("a damaged blob was read to its end"),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert_eq!(
            r.read(&mut buf).unwrap_err().kind(),
            ErrorKind::InvalidData,
            "the failure is sticky, never a clean end"
        );
        assert_eq!(
            got.len(),
            3 * BATCH,
            "everything but the last batch is released, never the whole"
        );
        assert!(!store.has_blob(&d), "set aside: unknown until pushed again");
    }

    #[test]
    fn a_range_rebuilt_from_a_damaged_block_fails_and_other_ranges_are_served() {
        let store = scratch_store("pull-range-damaged-block");
        // Incompressible: the pack's one frame holds the blocks as they are,
        // in order, so pack offset = blob offset.
        let data = seeded_bytes(3, 100_000);
        let d = commit_blob(&store, &data);
        crate::convert::convert(&store, &crate::test_support::settings(), &d).unwrap();
        let pack = std::fs::read_dir(store.layout().packs())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "pack"))
            .expect("one pack");
        let mut bytes = std::fs::read(&pack).unwrap();
        assert_eq!(bytes.len(), data.len(), "stored as it is");
        bytes[50_000] ^= 1;
        std::fs::write(&pack, &bytes).unwrap();
        let read = |start, end| {
            let blob = Blob::open(&store, &d).unwrap().unwrap();
            read_all(&mut blob.read(&store, 0, start, end).unwrap())
        };
        let err = read(40_000, 60_000).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
        assert_eq!(read(0, 10_000).unwrap(), data[..10_000]);
        assert_eq!(read(70_000, 100_000).unwrap(), data[70_000..]);
    }

    #[test]
    fn each_read_says_where_its_bytes_come_from() {
        use crate::test_support::{gzip, settings, tar_of, texty_bytes};
        let store = scratch_store("pull-served-from");
        let whole = |d: &Digest| {
            let blob = Blob::open(&store, d).unwrap().unwrap();
            let size = blob.size();
            let mut r = blob.read(&store, 1 << 30, 0, size).unwrap();
            read_all(&mut r).unwrap();
            r.served_from()
        };
        let raw = commit_blob(&store, &seeded_bytes(4, 50_000));
        assert_eq!(whole(&raw), ServedFrom::Original);
        crate::convert::convert(&store, &settings(), &raw).unwrap();
        assert_eq!(whole(&raw), ServedFrom::Blocks);

        let text = texty_bytes(5, 200_000);
        let layer = gzip(&tar_of(&[("a.txt", &text, 0)]), 6);
        let gz = commit_blob(&store, &layer);
        crate::convert::convert(&store, &settings(), &gz).unwrap();
        assert_eq!(whole(&gz), ServedFrom::Recreated, "a cache miss");
        assert_eq!(whole(&gz), ServedFrom::Cache, "filled by the first read");
    }

    /// Concurrent cold pulls: the second whole read of a blob that is
    /// being recreated reads the first's cache fill, and recreates the
    /// rest itself when the first gives up (its client went away).
    #[test]
    fn a_read_during_a_recreation_follows_it_and_takes_over_when_it_stops() {
        use crate::test_support::{gzip, settings, tar_of, texty_bytes};
        let store = scratch_store("pull-follow");
        let text = texty_bytes(6, 1_000_000);
        let bin = seeded_bytes(7, 1_200_000);
        let layer = gzip(&tar_of(&[("a.txt", &text, 0), ("b.bin", &bin, 0)]), 6);
        assert!(layer.len() > 4 * BATCH);
        let d = commit_blob(&store, &layer);
        crate::convert::convert(&store, &settings(), &d).unwrap();
        let open = || {
            let blob = Blob::open(&store, &d).unwrap().unwrap();
            let size = blob.size();
            blob.read(&store, 1 << 30, 0, size).unwrap()
        };
        let read_some = |r: &mut BlobReader, n: usize| {
            let mut buf = vec![0u8; n];
            r.read_exact(&mut buf).unwrap();
            buf
        };

        // The first finishes: the second reads its fill to the end.
        let mut first = open();
        let head = read_some(&mut first, 2 * BATCH);
        let mut second = open();
        assert_eq!(first.served_from(), ServedFrom::Recreated);
        assert_eq!(second.served_from(), ServedFrom::Following);
        let mut rest = Vec::new();
        first.read_to_end(&mut rest).unwrap();
        assert_eq!([head, rest].concat(), layer);
        drop(first); // commits the entry
        assert_eq!(read_all(&mut second).unwrap(), layer);
        drop(second);
        Cache::new(store.layout(), 1 << 30).remove(&d).unwrap();

        // The first stops half way: the second recreates the rest.
        let mut first = open();
        read_some(&mut first, 3 * BATCH);
        let mut second = open();
        assert_eq!(second.served_from(), ServedFrom::Following);
        drop(first);
        assert_eq!(read_all(&mut second).unwrap(), layer);
    }

    #[test]
    fn an_empty_blob_reads_as_nothing() {
        let store = scratch_store("pull-empty");
        let d = commit_blob(&store, b"");
        let blob = Blob::open(&store, &d).unwrap().unwrap();
        let mut r = blob.read(&store, 0, 0, 0).unwrap();
        assert!(read_all(&mut r).unwrap().is_empty());
    }
}
