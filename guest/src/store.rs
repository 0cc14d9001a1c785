//! The on-disk store under the `/data` preopen. All file I/O of the guest is
//! here; everything else is pure logic over it.
//!
//! Layout (see data/FORMAT.md):
//! - `blocks/packs/`, `blocks/index/`: each unique block once, in compressed
//!   frames of pack files (`packs.rs`); format-1 stores also have loose
//!   `blocks/<first 2 hex>/<sha1 hex>` files, still read.
//! - `layers/<digest>/original`: a pushed blob's bytes until the background
//!   conversion has replaced them with `layers/<digest>/recipe.json`, how to
//!   rebuild the blob from blocks (`recipe.rs`).
//! - `cache/<digest>`: recreated blobs kept for fast pulls (`cache.rs`).
//! - `manifests/<repo>/_manifests/<digest>` (bytes, byte-exact) and
//!   `<digest>.type` (media type); `_tags/<tag>` (a digest); `_blobs/<digest>`
//!   (empty: the blob belongs to the repository).
//! - `uploads/<uuid>/repo` and `uploads/<uuid>/data`: sessions in progress.
//!
//! Every committed file is written to a temporary name in its directory,
//! fsynced, then renamed over its final name, so a crash leaves either the
//! old file or the new one, never a torn one. Temporary names start with
//! `.tmp-` and are skipped by every listing. Commit order makes each visible
//! file's dependencies durable first: blocks before the recipe naming them,
//! the media type before the manifest bytes, the manifest before its tag.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use std::sync::Arc;

use crate::layout::Layout;
use crate::objects::{HostObjects, Listing, Objects};
use crate::oci::media::MAX_MANIFEST_BYTES;
use crate::oci::{Digest, RepoName, Tag};
use crate::recipe::Recipe;

/// Conversion attempts of one blob that did not end in a recipe or a
/// recorded failure, kept in `layers/<digest>/conversion-attempts` as
/// `{"count":n,"last":unix_seconds}`. Written before each attempt, so an
/// attempt that kills its instance (a trap, running out of memory, the
/// host's timeout) still counts: the instance cannot report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attempts {
    /// Attempts started.
    pub count: u32,
    /// When the last one started (seconds since the Unix epoch).
    pub last: u64,
}

/// Where a blob is served from.
#[derive(Debug)]
pub enum BlobSource {
    /// The original file and its size.
    Original(File, u64),
    Recipe(Recipe),
}

/// Handle on the store: where its records are ([`Layout`]) and what keeps
/// those that go through the object seam ([`Objects`]).
#[derive(Debug, Clone)]
pub struct Store {
    layout: Layout,
    objects: Arc<dyn Objects>,
}

/// The most a manifest record may hold: the manifest (its size is bounded
/// when it is pushed) and its media type line.
const MAX_MANIFEST_RECORD: u64 = MAX_MANIFEST_BYTES as u64 + 1024;

/// The most a tag, a media type or a conversion record may hold.
const SMALL_RECORD: u64 = 4096;

/// The most a recipe may hold: far above what conversion writes (about 30
/// bytes per content block: 32 MiB for 4 GiB of content in 4 KiB blocks).
const MAX_RECIPE_RECORD: u64 = 256 << 20;

/// A digest written alone in a record (a tag), surrounding white space
/// allowed.
fn parse_digest_record(bytes: &[u8]) -> Option<Digest> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

/// Whether a folder of `manifests/` is a repository: it holds manifests or
/// tags.
fn is_repository(folder: &Listing) -> bool {
    folder
        .folders
        .iter()
        .any(|f| f == "_manifests" || f == "_tags")
}

/// A validated upload session id (a UUID in canonical lowercase form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadId(String);

impl UploadId {
    /// Creates a random id.
    pub fn random() -> Self {
        let mut b = crate::sys::random_bytes(16);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h = crate::hex::encode(&b);
        Self(format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        ))
    }

    /// Accepts only the canonical form, so an id is always a safe path component.
    pub fn parse(s: &str) -> Option<Self> {
        let groups: Vec<&str> = s.split('-').collect();
        let lens = [8, 4, 4, 4, 12];
        let ok = groups.len() == 5
            && groups.iter().zip(lens).all(|(g, n)| {
                g.len() == n && g.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
            });
        ok.then(|| Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An upload session as stored.
#[derive(Debug)]
pub struct Upload {
    pub repo: String,
    pub size: u64,
}

/// Name prefix of a session's bytes while a request holds the session.
const HELD: &str = "held-";

/// The lease in a `held-` file name: until when its holder may use the
/// session, and the size the client was last told — `None` (written `x`)
/// for the instant between taking `data` and reading its length, when
/// every byte of the file is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lease {
    expiry: u64,
    size: Option<u64>,
}

fn unix_now() -> u64 {
    unix_secs(SystemTime::now())
}

/// `t` in Unix seconds (0 for a time before 1970).
pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// When a file was last modified, in Unix seconds (0 when unknown).
fn modified_secs(meta: &fs::Metadata) -> u64 {
    meta.modified().map_or(0, unix_secs)
}

impl Lease {
    fn new(lease: Duration, size: Option<u64>) -> Self {
        Self {
            expiry: unix_now().saturating_add(lease.as_secs().max(1)),
            size,
        }
    }

    /// `held-<expiry>-<size or x>-<nonce>`; the nonce keeps two holders'
    /// names apart even within one second.
    fn file_name(&self) -> String {
        format!(
            "{HELD}{}-{}-{}",
            self.expiry,
            self.size.map_or_else(|| "x".to_string(), |s| s.to_string()),
            crate::hex::encode(&crate::sys::random_bytes(6))
        )
    }

    fn parse(name: &str) -> Option<Self> {
        let mut parts = name.strip_prefix(HELD)?.splitn(3, '-');
        let expiry = parts.next()?.parse().ok()?;
        let size = match parts.next()? {
            "x" => None,
            n => Some(n.parse().ok()?),
        };
        parts.next()?;
        Some(Self { expiry, size })
    }

    /// The acknowledged size of the held file `path`: its length when the
    /// name does not say (see [`Lease::size`]).
    fn acknowledged(&self, path: &Path) -> io::Result<u64> {
        match self.size {
            Some(size) => Ok(size),
            None => Ok(fs::metadata(path)?.len()),
        }
    }

    fn expired(&self) -> bool {
        unix_now() >= self.expiry
    }
}

/// The `held-` file of a session directory, if a request holds it.
fn held_file(dir: &Path) -> io::Result<Option<(String, Lease)>> {
    Ok(list_dir(dir)?
        .into_iter()
        .find_map(|(name, _)| Lease::parse(&name).map(|l| (name, l))))
}

/// Counts (and with `remove`, removes) the `.tmp-` files under `dir`, at
/// any depth, last modified before `before` (Unix seconds; `u64::MAX`:
/// all): `(files, bytes)`.
fn temporaries(dir: &Path, before: u64, remove: bool) -> io::Result<(u64, u64)> {
    let (mut files, mut bytes) = (0, 0);
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if is_not_found(&e) => return Ok((0, 0)),
        Err(e) => return Err(e),
    };
    for entry in rd {
        // An entry removed while the directory is read (the store serves
        // meanwhile) is not listed.
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        // Entries come and go while the store serves: skip vanished ones.
        let ty = match entry.file_type() {
            Ok(ty) => ty,
            Err(e) if is_not_found(&e) => continue,
            Err(e) => return Err(e),
        };
        let path = entry.path();
        if ty.is_dir() {
            let (f, b) = temporaries(&path, before, remove)?;
            files += f;
            bytes += b;
        } else if entry.file_name().to_string_lossy().starts_with(".tmp-") {
            let Ok(meta) = entry.metadata() else {
                continue; // gone since listed: renamed into place or removed
            };
            if before != u64::MAX && modified_secs(&meta) >= before {
                continue; // possibly a write in flight
            }
            files += 1;
            bytes += meta.len();
            if remove {
                remove_existing(&path)?;
            }
        }
    }
    Ok((files, bytes))
}

/// Removes a session directory, its commit point first so that a crash
/// half-way leaves no live session.
fn remove_session(dir: &Path) -> io::Result<()> {
    remove_existing(&dir.join("repo"))?;
    match fs::remove_dir_all(dir) {
        Err(e) if !is_not_found(&e) => Err(e),
        _ => Ok(()),
    }
}

/// What [`Store::purge_uploads`] removed (or would remove).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purge {
    /// Sessions idle for longer than the age, and their bytes.
    pub sessions: u64,
    pub bytes: u64,
    /// Sessions kept: younger, or held by a request at that moment.
    pub kept: u64,
}

/// How long the purge holds one session: enough to look at it and remove
/// it; a purge that dies meanwhile leaves a lease the next request takes
/// over after this.
const PURGE_LEASE: Duration = Duration::from_secs(60);

/// What [`Store::hold_upload`] found.
#[derive(Debug)]
pub enum Hold {
    /// The session is this request's until the hold is dropped.
    Held(HeldUpload),
    /// Another request holds it; `size` is what its client was last told.
    Busy { size: u64 },
    /// No such session: never started, finished or cancelled.
    Unknown,
}

/// Why appending a request body to a session failed. The session is cut
/// back to its size before the request either way.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Reading the request body failed: the client went away or sent a
    /// broken body.
    #[error("reading the request body: {0}")]
    Body(io::Error),
    /// The body's length differs from what the request announced.
    #[error("the body has {got}{} bytes, the request announced {expected}", if *.more { "+" } else { "" })]
    Length { expected: u64, got: u64, more: bool },
    /// Writing to the store failed (a full disk, an I/O error).
    #[error("writing the upload: {0}")]
    Store(io::Error),
}

/// An upload session held by one request (see [`Store::hold_upload`]).
/// Dropping it releases the session at its acknowledged size.
#[derive(Debug)]
pub struct HeldUpload {
    dir: PathBuf,
    /// The session's bytes, under this holder's `held-` name.
    path: PathBuf,
    /// The repository the session belongs to.
    pub repo: String,
    /// Bytes acknowledged to the client (or appended by this request).
    size: u64,
    /// Committed or cancelled: nothing to release.
    done: bool,
}

impl HeldUpload {
    /// The session's size, including what this request appended.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends the whole of `body`; `expected` is the length the request
    /// announced. On failure the session is cut back to its size before.
    ///
    /// # Errors
    /// See [`AppendError`].
    pub fn append(
        &mut self,
        body: &mut dyn Read,
        expected: Option<u64>,
    ) -> Result<u64, AppendError> {
        let mut f = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(AppendError::Store)?;
        let before = self.size;
        let mut buf = vec![0u8; 256 * 1024];
        let mut n = 0u64;
        let result = loop {
            let k = match body.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(k) => k,
                Err(e) => break Err(AppendError::Body(e)),
            };
            if let Err(e) = f.write_all(&buf[..k]) {
                break Err(AppendError::Store(e));
            }
            n += k as u64;
            if expected.is_some_and(|e| n > e) {
                break Ok(());
            }
        };
        let result = result.and_then(|()| match expected {
            Some(e) if e != n => Err(AppendError::Length {
                expected: e,
                got: n,
                more: n > e,
            }),
            _ => Ok(n),
        });
        match &result {
            Ok(n) => self.size = before + n,
            Err(_) => {
                let _ = f.set_len(before);
            }
        }
        result
    }

    /// Opens the held bytes for reading (to verify them).
    ///
    /// # Errors
    /// I/O errors.
    pub fn open(&self) -> io::Result<File> {
        File::open(&self.path)
    }

    /// Cancels the session: its bytes and the session are removed.
    ///
    /// # Errors
    /// I/O errors.
    pub fn cancel(mut self) -> io::Result<()> {
        self.done = true;
        remove_session(&self.dir)
    }

    /// Gives the session back for the next request, at its current size.
    ///
    /// # Errors
    /// I/O errors; `NotFound` when the lease had expired and another
    /// request took the session over.
    pub fn release(mut self) -> io::Result<()> {
        self.done = true;
        self.give_back()
    }

    fn give_back(&self) -> io::Result<()> {
        // Bytes past the acknowledged size belong to no answered request.
        if let Ok(f) = OpenOptions::new().write(true).open(&self.path) {
            if f.metadata().is_ok_and(|m| m.len() > self.size) {
                f.set_len(self.size)?;
            }
        }
        fs::rename(&self.path, self.dir.join("data"))
    }
}

impl Drop for HeldUpload {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.give_back();
        }
    }
}

fn is_not_found(e: &io::Error) -> bool {
    e.kind() == ErrorKind::NotFound
}

/// `Ok(None)` for a missing file, the bytes otherwise.
fn read_optional(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The `size` of a recipe without building its block list: HEAD and stats
/// need only that, and a large layer's recipe lists thousands of blocks.
/// A recipe's blob size, and whether it is stored decoded (`"encoding":
/// "gzip"`; format 1 recipes have no encoding and are verbatim).
fn recipe_size(bytes: &[u8], what: &str) -> io::Result<(u64, Option<String>)> {
    #[derive(serde::Deserialize)]
    struct SizeOnly {
        size: u64,
        #[serde(default)]
        encoding: Option<String>,
    }
    serde_json::from_slice::<SizeOnly>(bytes)
        .map(|s| (s.size, s.encoding))
        .map_err(|e| io::Error::new(ErrorKind::InvalidData, format!("{what}: {e}")))
}

/// Removes a file; `Ok(false)` if it was not there.
fn remove_existing(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Lists the visible entries of a directory (temporaries and entries
/// removed while it is read left out); a missing directory is empty.
pub(crate) fn list_dir(path: &Path) -> io::Result<Vec<(String, fs::FileType)>> {
    let rd = match fs::read_dir(path) {
        Ok(rd) => rd,
        Err(e) if is_not_found(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in rd {
        // An entry removed while the directory is read (the store serves
        // meanwhile) is not listed.
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with(".tmp-") {
            continue;
        }
        // An entry removed since the directory was read (a concurrent
        // delete) is simply not listed.
        match entry.file_type() {
            Ok(ty) => out.push((name, ty)),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Writes `bytes` to `path` atomically: temp file, fsync, rename (the
/// folder is created when missing).
///
/// # Errors
/// Any I/O error; the temporary file is removed on failure.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace_file(path, bytes, true)
}

/// Replaces `path` with `bytes` (temp file, rename) without fsync and
/// without creating its folder: for records whose loss in a power cut
/// loses nothing (a use stamp: the operation that wrote it dies with the
/// machine too). A missing folder is `NotFound`, which is the point for a
/// stamp inside a blob's folder: a blob set aside meanwhile is not
/// brought back as an empty folder.
///
/// # Errors
/// Any I/O error; the temporary file is removed on failure.
fn replace_unsynced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace_file(path, bytes, false)
}

/// The one way a whole file is replaced: a `.tmp-` sibling is written
/// (and with `durable`, its folder made when missing and the file
/// fsynced), then renamed over `path`.
fn replace_file(path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    let dir = path.parent().expect("store paths always have a parent");
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .expect("store paths are utf-8");
    let tmp = dir.join(format!(
        ".tmp-{name}-{}",
        crate::hex::encode(&crate::sys::random_bytes(6))
    ));
    let write = |tmp: &Path| -> io::Result<()> {
        let mut f = match File::create(tmp) {
            Err(e) if durable && is_not_found(&e) => {
                fs::create_dir_all(dir)?;
                File::create(tmp)?
            }
            other => other?,
        };
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
        drop(f);
        fs::rename(tmp, path)
    };
    write(&tmp).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

/// When the blob in folder `layer` was last used, in Unix seconds: its
/// use stamp, or for a blob of a store older than stamps (or one whose
/// stamp is damaged) the newest modification time of its files, or for a
/// folder with no file yet (a commit making it) the folder's own. `None`
/// for a folder that is gone.
///
/// # Errors
/// I/O errors reading the folder.
pub(crate) fn last_used(layer: &Path) -> io::Result<Option<u64>> {
    if let Some(bytes) = read_optional(&Layout::touched_in(layer))? {
        if let Some(t) = std::str::from_utf8(&bytes)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return Ok(Some(t));
        }
    }
    if !layer.is_dir() {
        return Ok(None);
    }
    let mut newest = None;
    for (name, _) in list_dir(layer)? {
        if let Ok(t) = fs::metadata(layer.join(name)).and_then(|m| m.modified()) {
            let secs = unix_secs(t);
            newest = Some(newest.map_or(secs, |n: u64| n.max(secs)));
        }
    }
    match newest {
        Some(t) => Ok(Some(t)),
        None => match fs::metadata(layer).and_then(|m| m.modified()) {
            Ok(t) => Ok(Some(unix_secs(t))),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        },
    }
}

impl Store {
    /// Opens (and creates the top-level directories of) the store at `root`.
    ///
    /// # Errors
    /// When the directories cannot be created.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let layout = Layout::new(root);
        // Every request opens the store: one stat once it is laid out, the
        // folders only when missing (a new store, a fresh test directory).
        if !layout.is_laid_out() {
            for d in layout.folders() {
                fs::create_dir_all(d)?;
            }
        }
        let objects = Arc::new(HostObjects::for_root(layout.root())?);
        Ok(Self { layout, objects })
    }

    /// The store at `root` with the records that go through the object
    /// seam kept by `objects` instead of `root`'s files (tests run the
    /// same checks on [`crate::objects::MemObjects`]).
    ///
    /// # Errors
    /// When the directories cannot be created.
    #[cfg(test)]
    pub fn with_objects(root: impl Into<PathBuf>, objects: Arc<dyn Objects>) -> io::Result<Self> {
        Ok(Self {
            objects,
            ..Self::open(root)?
        })
    }

    /// Where everything is in the store.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    // --- blobs: originals awaiting conversion, and recipes ---

    /// The original bytes of a blob whose conversion to blocks is pending.
    pub fn original_path(&self, digest: &Digest) -> PathBuf {
        self.layout.original(digest)
    }

    /// Whether a blob with this digest is committed (as its original bytes
    /// awaiting conversion, or as a recipe).
    pub fn has_blob(&self, digest: &Digest) -> bool {
        // The original first: conversion commits the recipe before it
        // removes the original, so a blob converted meanwhile is seen by
        // one of the two checks (the other order can miss it).
        self.original_path(digest).is_file()
            || matches!(
                self.objects.stat(&self.layout.recipe_key(digest)),
                Ok(Some(_))
            )
    }

    /// Records that a committed blob is being used now (its push was asked
    /// about, it is mounted, a manifest naming it is being pushed), so a
    /// garbage collection keeps it for its grace period. Returns whether
    /// the blob is committed after the stamp was written: a caller that
    /// then relies on the blob must stamp first and check second (a
    /// collection sets a blob's folder aside, then reads its stamp; see
    /// `gc.rs`).
    ///
    /// # Errors
    /// I/O errors other than the blob being absent.
    pub fn touch_blob(&self, digest: &Digest) -> io::Result<bool> {
        let stamp = unix_now().to_string();
        match replace_unsynced(&self.layout.touched(digest), stamp.as_bytes()) {
            Ok(()) => Ok(self.has_blob(digest)),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Records that a stored manifest is being used now (a manifest naming
    /// it as a child is being pushed): its modification time is the
    /// grace period's clock when untagged manifests are collected. Returns
    /// whether it exists after that.
    ///
    /// # Errors
    /// I/O errors other than the manifest being absent.
    pub fn touch_manifest(&self, repo: &RepoName, digest: &Digest) -> io::Result<bool> {
        let path = self.layout.manifest(repo, digest);
        let touched = fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        match touched {
            Ok(()) => Ok(self.has_manifest(repo, digest)),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Bytes on disk of everything that holds blob data (`stats`'
    /// `stored-bytes`, see [`Usage::stored_bytes`]).
    ///
    /// # Errors
    /// I/O errors walking the store.
    pub fn stored_bytes(&self) -> io::Result<u64> {
        let packs = crate::packs::Packs::new(&self.layout);
        let (_, pack_bytes) = packs.pack_totals()?;
        Ok(self
            .usage()?
            .stored_bytes(pack_bytes, packs.totals()?.blocks))
    }

    /// Reads a committed blob's recipe; `None` if there is none (yet).
    ///
    /// # Errors
    /// I/O errors, or `InvalidData` for a recipe that does not parse.
    pub fn recipe(&self, digest: &Digest) -> io::Result<Option<Recipe>> {
        let Some(bytes) = self
            .objects
            .read(&self.layout.recipe_key(digest), MAX_RECIPE_RECORD)?
        else {
            return Ok(None);
        };
        Recipe::from_json(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(ErrorKind::InvalidData, format!("{digest}: {e}")))
    }

    /// Where a blob's bytes come from right now: its original file while
    /// conversion is pending (the fast path), else its recipe.
    ///
    /// # Errors
    /// I/O errors, or `InvalidData` for a recipe that does not parse.
    pub fn blob_source(&self, digest: &Digest) -> io::Result<Option<BlobSource>> {
        match File::open(self.original_path(digest)) {
            Ok(f) => {
                let size = f.metadata()?.len();
                return Ok(Some(BlobSource::Original(f, size)));
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e),
        }
        Ok(self.recipe(digest)?.map(BlobSource::Recipe))
    }

    /// A committed blob's size, read cheaply; `None` if there is none.
    ///
    /// # Errors
    /// I/O errors, or `InvalidData` for a recipe that does not parse.
    pub fn blob_size(&self, digest: &Digest) -> io::Result<Option<u64>> {
        // The original first, for the reason `has_blob` gives.
        match fs::metadata(self.original_path(digest)) {
            Ok(m) => return Ok(Some(m.len())),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e),
        }
        let key = self.layout.recipe_key(digest);
        match self.objects.read(&key, MAX_RECIPE_RECORD)? {
            Some(bytes) => recipe_size(&bytes, &digest.to_string()).map(|(size, _)| Some(size)),
            None => Ok(None),
        }
    }

    /// Sets aside an original found not to hash to its digest (store
    /// damage), as `damaged-original`: the blob is then unknown, so the
    /// next push of it is accepted and repairs it. `size` is the size of
    /// the file found damaged; an original of another size was replaced
    /// meanwhile (by such a push) and is left alone.
    ///
    /// # Errors
    /// I/O errors.
    pub fn quarantine_original(&self, digest: &Digest, size: u64) -> io::Result<()> {
        let path = self.original_path(digest);
        match fs::metadata(&path) {
            Ok(m) if m.len() == size => fs::rename(&path, self.layout.damaged_original(digest)),
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Blobs whose original still exists (conversion pending, or its
    /// recipe committed but the original not yet removed), oldest first,
    /// skipping those whose conversion failed for good.
    ///
    /// # Errors
    /// I/O errors listing `layers/`.
    #[cfg(test)]
    pub fn pending_blobs(&self) -> io::Result<Vec<Digest>> {
        Ok(self
            .pending_blob_sizes()?
            .into_iter()
            .map(|(d, _)| d)
            .collect())
    }

    /// [`Store::pending_blobs`] with the size of each original.
    ///
    /// # Errors
    /// I/O errors listing the store.
    pub fn pending_blob_sizes(&self) -> io::Result<Vec<(Digest, u64)>> {
        let mut out = Vec::new();
        for (name, ty) in list_dir(&self.layout.layers())? {
            if !ty.is_dir() {
                continue;
            }
            let dir = self.layout.layers().join(&name);
            let Ok(meta) = fs::metadata(Layout::original_in(&dir)) else {
                continue;
            };
            if Layout::conversion_failed_in(&dir).exists() {
                continue;
            }
            if let Ok(d) = name.parse::<Digest>() {
                out.push((meta.modified().ok(), d, meta.len()));
            }
        }
        out.sort_by_key(|(t, _, _)| *t);
        Ok(out.into_iter().map(|(_, d, size)| (d, size)).collect())
    }

    /// Records that a blob cannot be converted (it stays served from its
    /// original); the reason is kept for the operator.
    ///
    /// # Errors
    /// I/O errors.
    pub fn mark_conversion_failed(&self, digest: &Digest, why: &str) -> io::Result<()> {
        let key = self.layout.conversion_failed_key(digest);
        Ok(self.objects.write(&key, why.as_bytes())?)
    }

    /// The unfinished conversion attempts of a blob; `None` when there are
    /// none. A record that does not parse counts as one attempt long ago.
    ///
    /// # Errors
    /// I/O errors.
    pub fn conversion_attempts(&self, digest: &Digest) -> io::Result<Option<Attempts>> {
        let key = self.layout.conversion_attempts_key(digest);
        Ok(self
            .objects
            .read(&key, SMALL_RECORD)?
            .map(|bytes| serde_json::from_slice(&bytes).unwrap_or(Attempts { count: 1, last: 0 })))
    }

    /// Records (atomically) that a conversion of `digest` starts at `now`;
    /// returns the updated record.
    ///
    /// # Errors
    /// I/O errors.
    pub fn begin_conversion_attempt(&self, digest: &Digest, now: u64) -> io::Result<Attempts> {
        let count = self
            .conversion_attempts(digest)?
            .map_or(0, |a| a.count)
            .saturating_add(1);
        let a = Attempts { count, last: now };
        let bytes = serde_json::to_vec(&a).expect("attempts always serialize");
        let key = self.layout.conversion_attempts_key(digest);
        self.objects.write(&key, &bytes)?;
        Ok(a)
    }

    /// Forgets a blob's conversion attempts (it converted, or is marked
    /// failed).
    ///
    /// # Errors
    /// I/O errors other than the record being gone already.
    pub fn clear_conversion_attempts(&self, digest: &Digest) -> io::Result<()> {
        let key = self.layout.conversion_attempts_key(digest);
        self.objects.delete(&key)?;
        Ok(())
    }

    /// Removes a converted blob's original (its recipe is committed).
    ///
    /// # Errors
    /// I/O errors other than it being gone already.
    pub fn remove_original(&self, digest: &Digest) -> io::Result<()> {
        remove_existing(&self.original_path(digest)).map(|_| ())
    }

    /// Commits a recipe. Its blocks must already be stored.
    ///
    /// # Errors
    /// I/O errors.
    pub fn put_recipe(&self, recipe: &Recipe) -> io::Result<()> {
        let key = self.layout.recipe_key(&recipe.digest);
        Ok(self.objects.write(&key, &recipe.to_json())?)
    }

    // --- repositories: through the object seam (`objects.rs`) ---

    /// Records that `digest` belongs to `repo` (push or mount).
    ///
    /// # Errors
    /// I/O errors.
    pub fn link_blob(&self, repo: &RepoName, digest: &Digest) -> io::Result<()> {
        let key = self.layout.blob_link_key(repo, digest);
        if self.objects.stat(&key)?.is_some() {
            return Ok(());
        }
        Ok(self.objects.write(&key, b"")?)
    }

    /// Whether `digest` is a committed blob of `repo` (a store that cannot
    /// be read answers no).
    pub fn blob_in_repo(&self, repo: &RepoName, digest: &Digest) -> bool {
        let linked = self.objects.stat(&self.layout.blob_link_key(repo, digest));
        matches!(linked, Ok(Some(_))) && self.has_blob(digest)
    }

    /// Stores a manifest byte-exact with its media type, in one object (the
    /// media type on the first line, then the bytes), so a manifest is
    /// either there whole or not at all whatever races with it. The media
    /// type must be valid ([`crate::oci::media::is_valid_media_type`]): it
    /// has no line break.
    ///
    /// # Errors
    /// I/O errors.
    pub fn put_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        media_type: &str,
        bytes: &[u8],
    ) -> io::Result<()> {
        debug_assert!(crate::oci::media::is_valid_media_type(media_type));
        let mut file = Vec::with_capacity(media_type.len() + 1 + bytes.len());
        file.extend_from_slice(media_type.as_bytes());
        file.push(b'\n');
        file.extend_from_slice(bytes);
        Ok(self
            .objects
            .write(&self.layout.manifest_key(repo, digest), &file)?)
    }

    /// A stored manifest: `(media type, bytes)`.
    ///
    /// # Errors
    /// I/O errors, `InvalidData` for a damaged record.
    pub fn manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> io::Result<Option<(String, Vec<u8>)>> {
        let name = digest.to_string();
        let key = self.layout.manifest_key(repo, digest);
        let Some(mut bytes) = self.objects.read(&key, MAX_MANIFEST_RECORD)? else {
            return Ok(None);
        };
        let corrupt =
            |what: &str| io::Error::new(ErrorKind::InvalidData, format!("{name}: {what}"));
        // A manifest is JSON, so it starts with `{` or white space; a media
        // type starts with a letter or digit.
        if bytes.first().is_some_and(u8::is_ascii_alphanumeric) {
            let nl = bytes
                .iter()
                .position(|&b| b == b'\n')
                .ok_or_else(|| corrupt("no media type line"))?;
            let media_type = std::str::from_utf8(&bytes[..nl])
                .ok()
                .filter(|t| crate::oci::media::is_valid_media_type(t))
                .ok_or_else(|| corrupt("invalid media type"))?
                .to_string();
            bytes.drain(..=nl);
            return Ok(Some((media_type, bytes)));
        }
        // Data format 2: the media type in a `.type` record beside the bytes.
        let media_type = self
            .objects
            .read(
                &self.layout.legacy_media_type_key(repo, digest),
                SMALL_RECORD,
            )?
            .and_then(|t| String::from_utf8(t).ok())
            .ok_or_else(|| corrupt("no media type"))?;
        Ok(Some((media_type, bytes)))
    }

    /// Whether the manifest is stored (a store that cannot be read answers
    /// no).
    pub fn has_manifest(&self, repo: &RepoName, digest: &Digest) -> bool {
        matches!(
            self.objects.stat(&self.layout.manifest_key(repo, digest)),
            Ok(Some(_))
        )
    }

    /// Points `tag` at `digest`.
    ///
    /// # Errors
    /// I/O errors.
    pub fn put_tag(&self, repo: &RepoName, tag: &Tag, digest: &Digest) -> io::Result<()> {
        Ok(self.objects.write(
            &self.layout.tag_key(repo, tag),
            digest.to_string().as_bytes(),
        )?)
    }

    /// The digest a tag points at.
    ///
    /// # Errors
    /// I/O errors, `InvalidData` for a corrupt tag record.
    pub fn tag(&self, repo: &RepoName, tag: &Tag) -> io::Result<Option<Digest>> {
        let Some(bytes) = self
            .objects
            .read(&self.layout.tag_key(repo, tag), SMALL_RECORD)?
        else {
            return Ok(None);
        };
        parse_digest_record(&bytes)
            .map(Some)
            .ok_or_else(|| io::Error::new(ErrorKind::InvalidData, format!("corrupt tag {tag}")))
    }

    /// Whether the repository has any manifest or tag (a store that cannot
    /// be read answers no).
    pub fn repo_exists(&self, repo: &RepoName) -> bool {
        self.objects
            .list(&self.layout.repository_key(repo))
            .is_ok_and(|l| is_repository(&l))
    }

    /// The repository's tags, sorted; `None` if the repository does not exist.
    ///
    /// # Errors
    /// I/O errors.
    pub fn tags(&self, repo: &RepoName) -> io::Result<Option<Vec<String>>> {
        if !self.repo_exists(repo) {
            return Ok(None);
        }
        let listing = self.objects.list(&self.layout.tags_key(repo))?;
        Ok(Some(listing.objects.into_iter().map(|i| i.name).collect()))
    }

    /// All repositories with a manifest or tag, sorted, and their manifest counts.
    ///
    /// # Errors
    /// I/O errors.
    pub fn repositories(&self) -> io::Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        // Depth first over the folders of `manifests/`; a folder whose name
        // is not a key segment was not made by the store and is skipped.
        let mut stack = vec![(self.layout.repositories_key(), String::new())];
        while let Some((folder, name)) = stack.pop() {
            let listing = self.objects.list(&folder)?;
            if is_repository(&listing) {
                let manifests = self
                    .objects
                    .list(&Layout::manifests_key_in(&folder))?
                    .objects
                    .iter()
                    .filter(|i| !i.name.ends_with(".type"))
                    .count() as u64;
                // A repository whose manifests and tags were all deleted is
                // gone from the catalog.
                if manifests > 0
                    || !self
                        .objects
                        .list(&Layout::tags_key_in(&folder))?
                        .objects
                        .is_empty()
                {
                    out.push((name.clone(), manifests));
                }
            }
            for sub in listing.folders.iter().filter(|f| !f.starts_with('_')) {
                if let Ok(key) = folder.join(sub) {
                    let path = if name.is_empty() {
                        sub.clone()
                    } else {
                        format!("{name}/{sub}")
                    };
                    stack.push((key, path));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes a tag. Returns whether it existed.
    ///
    /// # Errors
    /// I/O errors.
    pub fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> io::Result<bool> {
        Ok(self.objects.delete(&self.layout.tag_key(repo, tag))?)
    }

    /// Removes a manifest and every tag pointing at it. Returns whether it existed.
    ///
    /// # Errors
    /// I/O errors.
    pub fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> io::Result<bool> {
        // Tags first: a crash part-way leaves a manifest without tags, never
        // a tag naming a missing manifest. Tags again after the manifest is
        // gone: a PUT racing this one may have tagged it in between (that
        // PUT then finds the manifest gone and writes it again, see
        // `routes/manifests.rs`), so no tag outlives it.
        self.untag(repo, digest)?;
        let existed = self
            .objects
            .delete(&self.layout.manifest_key(repo, digest))?;
        self.objects
            .delete(&self.layout.legacy_media_type_key(repo, digest))?;
        self.untag(repo, digest)?;
        Ok(existed)
    }

    /// Removes every tag of `repo` that points at `digest`.
    fn untag(&self, repo: &RepoName, digest: &Digest) -> io::Result<()> {
        let tags = self.layout.tags_key(repo);
        for info in self.objects.list(&tags)?.objects {
            // A listed name that is no key segment was not written by the
            // store: not a tag.
            let Ok(key) = tags.join(&info.name) else {
                continue;
            };
            let points_here = self
                .objects
                .read(&key, SMALL_RECORD)?
                .is_some_and(|b| parse_digest_record(&b).as_ref() == Some(digest));
            if points_here {
                self.objects.delete(&key)?;
            }
        }
        Ok(())
    }

    /// Removes a blob from a repository (the blocks stay for other users).
    /// Returns whether it was linked.
    ///
    /// # Errors
    /// I/O errors.
    pub fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> io::Result<bool> {
        Ok(self
            .objects
            .delete(&self.layout.blob_link_key(repo, digest))?)
    }

    /// Records that manifest `digest` refers to `subject`, with the
    /// descriptor the referrers API returns for it.
    ///
    /// # Errors
    /// I/O errors.
    pub fn put_referrer(
        &self,
        repo: &RepoName,
        subject: &Digest,
        digest: &Digest,
        descriptor: &serde_json::Value,
    ) -> io::Result<()> {
        let bytes = serde_json::to_vec(descriptor).expect("a json value always serializes");
        Ok(self
            .objects
            .write(&self.layout.referrer_key(repo, subject, digest), &bytes)?)
    }

    /// Forgets that `digest` refers to `subject`.
    ///
    /// # Errors
    /// I/O errors.
    pub fn delete_referrer(
        &self,
        repo: &RepoName,
        subject: &Digest,
        digest: &Digest,
    ) -> io::Result<()> {
        self.objects
            .delete(&self.layout.referrer_key(repo, subject, digest))?;
        Ok(())
    }

    /// The descriptors of the manifests referring to `subject`, sorted by digest.
    ///
    /// # Errors
    /// I/O errors, `InvalidData` for a corrupt entry.
    pub fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> io::Result<Vec<serde_json::Value>> {
        let folder = self.layout.referrers_key(repo, subject);
        let mut out = Vec::new();
        for info in self.objects.list(&folder)?.objects {
            let Ok(key) = folder.join(&info.name) else {
                continue;
            };
            // Removed since the listing: not listed.
            let Some(bytes) = self.objects.read(&key, MAX_MANIFEST_RECORD)? else {
                continue;
            };
            out.push(serde_json::from_slice(&bytes).map_err(|e| {
                io::Error::new(
                    ErrorKind::InvalidData,
                    format!("referrer {}: {e}", info.name),
                )
            })?);
        }
        Ok(out)
    }

    // --- uploads ---
    //
    // A session is `uploads/<id>/repo` (its commit point) and its bytes. The
    // bytes are `data` while no request uses the session; a request that
    // appends, commits or cancels first *holds* it by renaming `data` to
    // `held-<lease expiry>-x-<nonce>`, a name only it knows, then, having
    // read the file's length, to `held-<lease expiry>-<acknowledged
    // size>-<nonce>`. (Reading the length before the rename would race: a
    // holder releasing more bytes in between would make the name understate
    // them, and a takeover would cut acknowledged bytes.) An `x` file holds
    // only acknowledged bytes. Rename is atomic, so one request at a time holds a session, and
    // no other request has the file open for writing when its holder
    // commits it as a blob or removes it. A holder that died (its instance
    // dropped at the request timeout, or a crash) leaves its `held-` file
    // behind; once its lease has expired the next request takes it over,
    // cutting it back to the acknowledged size, and `recover` (at start)
    // releases every `held-` file the same way.

    /// Starts an upload session for `repo`.
    ///
    /// # Errors
    /// I/O errors.
    pub fn create_upload(&self, repo: &RepoName) -> io::Result<UploadId> {
        let id = UploadId::random();
        let dir = self.layout.upload(id.as_str());
        fs::create_dir_all(&dir)?;
        File::create(dir.join("data"))?;
        // The repo file is the session's commit point: without it the session does not exist.
        write_atomic(&dir.join("repo"), repo.as_str().as_bytes())?;
        Ok(id)
    }

    /// A session's repository and acknowledged size (what the client was
    /// told it has, not bytes of a request still in flight); `None` if
    /// unknown.
    ///
    /// # Errors
    /// I/O errors.
    pub fn upload(&self, id: &UploadId) -> io::Result<Option<Upload>> {
        let dir = self.layout.upload(id.as_str());
        for _ in 0..3 {
            let Some(repo) = read_optional(&dir.join("repo"))? else {
                return Ok(None);
            };
            let repo = String::from_utf8_lossy(&repo).into_owned();
            match fs::metadata(dir.join("data")) {
                Ok(m) => {
                    return Ok(Some(Upload {
                        repo,
                        size: m.len(),
                    }))
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e),
            }
            if let Some((name, lease)) = held_file(&dir)? {
                match lease.acknowledged(&dir.join(name)) {
                    Ok(size) => return Ok(Some(Upload { repo, size })),
                    Err(e) if is_not_found(&e) => continue,
                    Err(e) => return Err(e),
                }
            }
            // Released or committed between the two looks: look again.
        }
        Ok(None)
    }

    /// Holds session `id` for this request (see the section comment),
    /// waiting up to `wait` while another request holds it. The hold
    /// expires `lease` from now, which must outlast the request.
    ///
    /// # Errors
    /// I/O errors.
    pub fn hold_upload(&self, id: &UploadId, lease: Duration, wait: Duration) -> io::Result<Hold> {
        let deadline = Instant::now() + wait;
        loop {
            match self.try_hold(id, lease)? {
                Hold::Busy { .. } if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => return Ok(other),
            }
        }
    }

    fn try_hold(&self, id: &UploadId, lease: Duration) -> io::Result<Hold> {
        let dir = self.layout.upload(id.as_str());
        for _ in 0..3 {
            let Some(repo) = read_optional(&dir.join("repo"))? else {
                return Ok(Hold::Unknown);
            };
            let repo = String::from_utf8_lossy(&repo).into_owned();
            let held = |size: u64| HeldUpload {
                path: dir.join(Lease::new(lease, Some(size)).file_name()),
                dir: dir.clone(),
                repo: repo.clone(),
                size,
                done: false,
            };
            let claim = dir.join(Lease::new(lease, None).file_name());
            match fs::rename(dir.join("data"), &claim) {
                Ok(()) => {
                    let named = fs::metadata(&claim)
                        .map(|m| held(m.len()))
                        .and_then(|h| fs::rename(&claim, &h.path).map(|()| h));
                    return match named {
                        Ok(h) => Ok(Hold::Held(h)),
                        Err(e) => {
                            let _ = fs::rename(&claim, dir.join("data"));
                            Err(e)
                        }
                    };
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e),
            }
            match held_file(&dir)? {
                Some((name, old)) if old.expired() => {
                    // Its holder is gone: take over, dropping the bytes it
                    // never acknowledged.
                    let size = match old.acknowledged(&dir.join(&name)) {
                        Ok(size) => size,
                        Err(e) if is_not_found(&e) => continue,
                        Err(e) => return Err(e),
                    };
                    let h = held(size);
                    match fs::rename(dir.join(name), &h.path) {
                        Ok(()) => {
                            OpenOptions::new()
                                .write(true)
                                .open(&h.path)?
                                .set_len(size)?;
                            return Ok(Hold::Held(h));
                        }
                        Err(e) if is_not_found(&e) => continue,
                        Err(e) => return Err(e),
                    }
                }
                Some((name, lease)) => {
                    return Ok(Hold::Busy {
                        size: lease.acknowledged(&dir.join(name)).unwrap_or(0),
                    })
                }
                // Released, committed or cancelled between the two looks.
                None => continue,
            }
        }
        Ok(if dir.join("repo").is_file() {
            Hold::Busy { size: 0 }
        } else {
            Hold::Unknown
        })
    }

    /// Commits a held session whose bytes were verified to hash to
    /// `digest`: they become the blob's original (fsync, then rename) and
    /// the session is removed. A blob already converted keeps its proven
    /// recipe; an unconverted original is replaced by these verified bytes,
    /// which repairs one that was damaged.
    ///
    /// # Errors
    /// I/O errors; the session is then released as it was.
    pub fn commit_upload(&self, mut held: HeldUpload, digest: &Digest) -> io::Result<()> {
        let dir = self.layout.layer(digest);
        let (mut synced, mut done) = (false, false);
        // A garbage collection may set the blob's folder aside at any
        // moment (gc.rs): a write into it then fails with NotFound, and the
        // commit starts over into a new folder (the collection then finds
        // the blob back and drops its set-aside copy, or judges that copy
        // alone). Twice in a row would take two collections judging this
        // very blob within microseconds; a third failure is an error.
        for attempt in 0..3 {
            if Layout::recipe_in(&dir).is_file() {
                // Converted already, and pushed again: a use like any
                // other. Gone by the time it is stamped: commit these bytes.
                done = self.touch_blob(digest)?;
                if done {
                    break;
                }
                continue;
            }
            if !synced {
                File::open(&held.path)?.sync_all()?;
                synced = true;
            }
            fs::create_dir_all(&dir)
                .map_err(|e| io::Error::new(e.kind(), format!("making {}: {e}", dir.display())))?;
            // Stamped before it is visible, so a collection never finds
            // it unstamped and judges it by the age of its bytes.
            let committed =
                replace_unsynced(&Layout::touched_in(&dir), unix_now().to_string().as_bytes())
                    .and_then(|()| fs::rename(&held.path, Layout::original_in(&dir)));
            match committed {
                Ok(()) => {}
                Err(e) if is_not_found(&e) && attempt < 2 && held.path.is_file() => continue,
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("moving the upload into {}: {e}", dir.display()),
                    ))
                }
            }
            // New verified bytes: whatever made conversion give up on the
            // old ones, or set them aside as damaged, is gone.
            remove_existing(&Layout::conversion_failed_in(&dir))?;
            remove_existing(&Layout::damaged_original_in(&dir))?;
            done = true;
            break;
        }
        if !done {
            // The session is released as it was: the client may retry.
            return Err(io::Error::other(
                "the blob was being collected at every attempt to commit it",
            ));
        }
        held.done = true;
        remove_session(&held.dir)
    }

    // --- recovery ---

    /// Finishes what a crash cut off. Must run while nothing else uses the
    /// store (the host calls it at start, before it serves): it removes
    /// every temporary file (a write that never reached its rename),
    /// removes upload folders without their commit point (a session half
    /// created or half removed), and releases sessions held by requests
    /// that never finished, cut back to the size their clients were told.
    ///
    /// # Errors
    /// I/O errors.
    pub fn recover(&self) -> io::Result<Recovery> {
        let mut r = Recovery::default();
        (r.temporaries, r.temporary_bytes) = temporaries(self.layout.root(), u64::MAX, true)?;
        let uploads = self.layout.uploads();
        for (name, ty) in list_dir(&uploads)? {
            let dir = uploads.join(&name);
            if !ty.is_dir() {
                remove_existing(&dir)?;
                r.sessions_removed += 1;
                continue;
            }
            if !dir.join("repo").is_file() {
                remove_session(&dir)?;
                r.sessions_removed += 1;
                continue;
            }
            for (file, _) in list_dir(&dir)? {
                let Some(lease) = Lease::parse(&file) else {
                    continue;
                };
                let released = HeldUpload {
                    dir: dir.clone(),
                    path: dir.join(&file),
                    repo: String::new(),
                    // An `x` file holds only acknowledged bytes: keep them all.
                    size: lease.size.unwrap_or(u64::MAX),
                    done: true,
                };
                if dir.join("data").exists() {
                    // Cannot happen with one holder at a time; keep `data`.
                    remove_existing(&released.path)?;
                } else {
                    released.give_back()?;
                }
                r.sessions_released += 1;
            }
        }
        Ok(r)
    }

    // --- expiry ---

    /// Removes the upload sessions that no request has touched for `age`
    /// (registry:2's upload purging): their bytes and the session go, and
    /// their clients get 404 `BLOB_UPLOAD_UNKNOWN` from then on. Each
    /// session is first held like a request holds it, so one being written
    /// to is skipped and a request arriving meanwhile waits for the hold
    /// (milliseconds); it is judged by the modification time of its bytes
    /// (the last byte appended; renames keep it), then removed — its
    /// `repo` file first, so a crash half-way leaves no live session — or
    /// given back untouched. With `dry_run` nothing is removed and the
    /// report says what would have been.
    ///
    /// # Errors
    /// I/O errors other than a session vanishing meanwhile.
    pub fn purge_uploads(&self, age: Duration, dry_run: bool) -> io::Result<Purge> {
        let mut p = Purge::default();
        let now = std::time::SystemTime::now();
        for (name, ty) in list_dir(&self.layout.uploads())? {
            let Some(id) = UploadId::parse(&name).filter(|_| ty.is_dir()) else {
                continue;
            };
            let held = match self.try_hold(&id, PURGE_LEASE)? {
                Hold::Held(held) => held,
                Hold::Busy { .. } => {
                    p.kept += 1;
                    continue;
                }
                Hold::Unknown => continue,
            };
            let touched = fs::metadata(&held.path)?.modified()?;
            // A clock set back makes sessions look new, never old.
            let idle = now.duration_since(touched).unwrap_or_default();
            if idle < age {
                p.kept += 1;
                continue; // dropped: given back as it was
            }
            p.sessions += 1;
            p.bytes += held.size();
            if dry_run {
                held.release()?;
            } else {
                held.cancel()?;
            }
        }
        Ok(p)
    }

    /// Temporary files under the store and their bytes (writes in flight,
    /// or cut off by a crash until the next start removes them).
    ///
    /// # Errors
    /// I/O errors.
    pub fn temporaries(&self) -> io::Result<(u64, u64)> {
        temporaries(self.layout.root(), u64::MAX, false)
    }

    /// Removes (with `remove`; else only counts) the temporary files last
    /// written before `before` (Unix seconds): leftovers of writes that a
    /// crash cut off, found while the store serves. A write in flight
    /// touches its file more often than any grace period allows.
    ///
    /// # Errors
    /// I/O errors.
    pub fn remove_stale_temporaries(&self, before: u64, remove: bool) -> io::Result<(u64, u64)> {
        temporaries(self.layout.root(), before, remove)
    }

    // --- stats ---

    /// Blob counts and bytes (see [`Usage`]).
    ///
    /// # Errors
    /// I/O errors, or a recipe that does not parse.
    pub fn usage(&self) -> io::Result<Usage> {
        let mut u = Usage::default();
        for (name, _) in list_dir(&self.layout.layers())? {
            let dir = self.layout.layers().join(&name);
            if let Some(bytes) = read_optional(&Layout::recipe_in(&dir))? {
                let (size, encoding) = recipe_size(&bytes, &name)?;
                u.blobs += 1;
                u.logical_bytes += size;
                if encoding.as_deref() == Some("gzip") {
                    u.gzip_blobs += 1;
                } else if encoding.as_deref() == Some("zstd") {
                    u.zstd_blobs += 1;
                } else {
                    u.raw_blobs += 1;
                    u.raw_bytes += size;
                }
                u.recipe_bytes += bytes.len() as u64;
                if let Ok(m) = fs::metadata(Layout::original_in(&dir)) {
                    u.pending += 1;
                    u.original_bytes += m.len();
                }
            } else if let Ok(m) = fs::metadata(Layout::original_in(&dir)) {
                u.blobs += 1;
                u.logical_bytes += m.len();
                u.original_bytes += m.len();
                if Layout::conversion_failed_in(&dir).exists() {
                    u.failed += 1;
                } else {
                    u.pending += 1;
                }
            }
        }
        for (shard, ty) in list_dir(&self.layout.blocks())? {
            if !ty.is_dir() || shard.len() != 2 {
                continue;
            }
            let dir = self.layout.blocks().join(&shard);
            for (name, _) in list_dir(&dir)? {
                u.loose_blocks += 1;
                u.loose_bytes += fs::metadata(dir.join(name))?.len();
            }
        }
        u.uploads = list_dir(&self.layout.uploads())?.len() as u64;
        Ok(u)
    }
}

/// What [`Store::recover`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Temporary files removed, and their bytes.
    pub temporaries: u64,
    pub temporary_bytes: u64,
    /// Upload sessions released from a request that never finished.
    pub sessions_released: u64,
    /// Upload folders without a commit point, removed.
    pub sessions_removed: u64,
}

/// Totals computed by [`Store::usage`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Committed blobs, converted or not.
    pub blobs: u64,
    /// Sum of their sizes: what a layer-level store keeps.
    pub logical_bytes: u64,
    /// Blobs whose original awaits conversion (failed ones excluded).
    pub pending: u64,
    /// Blobs whose conversion failed for good (served from their original).
    pub failed: u64,
    /// Converted blobs stored decoded (gzip, zstd), and stored as their own
    /// bytes, with the sizes of the latter.
    pub gzip_blobs: u64,
    pub zstd_blobs: u64,
    pub raw_blobs: u64,
    pub raw_bytes: u64,
    /// Bytes of originals still on disk.
    pub original_bytes: u64,
    /// Bytes of recipe files.
    pub recipe_bytes: u64,
    /// Format-1 loose block files and their bytes.
    pub loose_blocks: u64,
    pub loose_bytes: u64,
    pub uploads: u64,
}

impl Usage {
    /// Bytes on disk of everything that holds blob data: packs (given),
    /// the block index (`index_blocks` records), recipes, loose blocks
    /// and originals; not manifests, uploads or the cache.
    pub fn stored_bytes(&self, pack_bytes: u64, index_blocks: u64) -> u64 {
        pack_bytes
            + index_blocks * crate::packs::RECORD_LEN as u64
            + self.recipe_bytes
            + self.loose_bytes
            + self.original_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::media::{OCI_INDEX, OCI_MANIFEST};
    use crate::oci::Algorithm;
    use crate::test_support::scratch_store;

    fn name(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    #[test]
    fn upload_ids_are_canonical_uuids_and_nothing_else_parses() {
        let id = UploadId::random();
        assert_eq!(UploadId::parse(id.as_str()), Some(id.clone()));
        for bad in [
            "",
            "..",
            "../x",
            "ABCDEF01-0000-4000-8000-000000000000",
            "1234",
        ] {
            assert!(UploadId::parse(bad).is_none(), "{bad}");
        }
    }

    fn held(store: &Store, id: &UploadId) -> HeldUpload {
        crate::test_support::hold(store, id)
    }

    #[test]
    fn a_failed_append_leaves_the_upload_as_it_was() {
        let store = scratch_store("store-append");
        let id = store.create_upload(&name("a")).unwrap();
        let mut h = held(&store, &id);
        h.append(&mut &b"12345"[..], Some(5)).unwrap();
        // Content-Length promised 10 bytes, the body had 3: nothing is kept.
        let err = h.append(&mut &b"678"[..], Some(10)).unwrap_err();
        assert!(matches!(
            err,
            AppendError::Length {
                expected: 10,
                got: 3,
                ..
            }
        ));
        assert_eq!(h.size(), 5);
        // A body longer than promised is refused too.
        assert!(h.append(&mut &b"6789"[..], Some(2)).is_err());
        h.release().unwrap();
        assert_eq!(store.upload(&id).unwrap().unwrap().size, 5);
        held(&store, &id).cancel().unwrap();
        assert!(store.upload(&id).unwrap().is_none());
    }

    /// A body that yields some bytes, then fails as a vanished client does.
    struct BrokenBody(bool);

    impl Read for BrokenBody {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if std::mem::replace(&mut self.0, true) {
                Err(io::Error::new(ErrorKind::ConnectionAborted, "gone"))
            } else {
                buf[..3].copy_from_slice(b"abc");
                Ok(3)
            }
        }
    }

    #[test]
    fn a_broken_body_is_a_body_error_and_keeps_nothing() {
        let store = scratch_store("store-broken-body");
        let id = store.create_upload(&name("a")).unwrap();
        let mut h = held(&store, &id);
        let err = h.append(&mut BrokenBody(false), None).unwrap_err();
        assert!(matches!(err, AppendError::Body(_)), "{err:?}");
        drop(h);
        assert_eq!(store.upload(&id).unwrap().unwrap().size, 0);
    }

    /// Sets the last-append time of session `id`'s bytes to `ago` before now.
    fn age_session(store: &Store, id: &UploadId, ago: Duration) {
        let data = store.layout.upload(id.as_str()).join("data");
        let when = std::time::SystemTime::now() - ago;
        File::options()
            .write(true)
            .open(data)
            .unwrap()
            .set_modified(when)
            .unwrap();
    }

    #[test]
    fn purging_removes_idle_sessions_only_and_a_dry_run_nothing() {
        let store = scratch_store("store-purge");
        let hour = Duration::from_secs(3600);
        let idle = store.create_upload(&name("a")).unwrap();
        let mut h = held(&store, &idle);
        h.append(&mut &b"12345"[..], None).unwrap();
        h.release().unwrap();
        age_session(&store, &idle, 3 * hour);
        let fresh = store.create_upload(&name("a")).unwrap();
        let busy = store.create_upload(&name("a")).unwrap();
        age_session(&store, &busy, 3 * hour);
        let holder = held(&store, &busy);

        let dry = store.purge_uploads(2 * hour, true).unwrap();
        assert_eq!((dry.sessions, dry.bytes, dry.kept), (1, 5, 2));
        assert_eq!(store.upload(&idle).unwrap().unwrap().size, 5);

        let done = store.purge_uploads(2 * hour, false).unwrap();
        assert_eq!(done, dry);
        assert!(store.upload(&idle).unwrap().is_none());
        assert!(!store.layout.upload(idle.as_str()).exists());
        assert!(store.upload(&fresh).unwrap().is_some());
        // The session a request holds is never judged, however old.
        drop(holder);
        assert!(store.upload(&busy).unwrap().is_some());
        // Holding and giving back did not make the old one look fresh.
        let again = store.purge_uploads(2 * hour, false).unwrap();
        assert_eq!((again.sessions, again.kept), (1, 1));
    }

    #[test]
    fn one_request_at_a_time_holds_a_session() {
        let store = scratch_store("store-hold");
        let id = store.create_upload(&name("a")).unwrap();
        let lease = Duration::from_secs(60);
        let mut first = held(&store, &id);
        first.append(&mut &b"12345"[..], None).unwrap();
        // While held, others are told it is busy, with the size acknowledged so far.
        match store.hold_upload(&id, lease, Duration::ZERO).unwrap() {
            Hold::Busy { size: 0 } => {}
            other => panic!("expected busy, got {other:?}"),
        }
        assert_eq!(store.upload(&id).unwrap().unwrap().size, 0);
        first.release().unwrap();
        assert_eq!(store.upload(&id).unwrap().unwrap().size, 5);
        // Dropping a hold gives the session back too.
        drop(held(&store, &id));
        assert_eq!(held(&store, &id).size(), 5);
    }

    #[test]
    fn a_committed_session_is_gone_for_every_other_request() {
        let store = scratch_store("store-commit-takes");
        let id = store.create_upload(&name("a")).unwrap();
        let mut h = held(&store, &id);
        h.append(&mut &b"layer"[..], None).unwrap();
        let d = Digest::of(Algorithm::Sha256, b"layer");
        store.commit_upload(h, &d).unwrap();
        let lease = Duration::from_secs(60);
        assert!(matches!(
            store.hold_upload(&id, lease, Duration::ZERO).unwrap(),
            Hold::Unknown
        ));
        assert!(store.upload(&id).unwrap().is_none());
        assert_eq!(fs::read(store.original_path(&d)).unwrap(), b"layer");
    }

    #[test]
    fn a_session_caught_between_its_two_hold_renames_keeps_every_byte() {
        // A crash (or a holder that died) right after `data` was taken and
        // before its length was read leaves an `x` file: all of it was
        // acknowledged, so neither a takeover nor `recover` may cut it.
        let store = scratch_store("store-claim");
        for recover in [false, true] {
            let id = store.create_upload(&name("a")).unwrap();
            let mut h = held(&store, &id);
            h.append(&mut &b"acknowledged"[..], None).unwrap();
            h.release().unwrap();
            let dir = store.layout().upload(id.as_str());
            let claim = Lease {
                expiry: unix_now() - 1,
                size: None,
            };
            fs::rename(dir.join("data"), dir.join(claim.file_name())).unwrap();
            assert_eq!(store.upload(&id).unwrap().unwrap().size, 12);
            if recover {
                assert_eq!(store.recover().unwrap().sessions_released, 1);
                assert_eq!(fs::read(dir.join("data")).unwrap(), b"acknowledged");
            } else {
                let h = held(&store, &id);
                assert_eq!(h.size(), 12, "taken over whole");
                h.release().unwrap();
            }
            assert_eq!(store.upload(&id).unwrap().unwrap().size, 12);
        }
    }

    #[test]
    fn an_expired_hold_is_taken_over_without_its_unacknowledged_bytes() {
        let store = scratch_store("store-expired");
        let id = store.create_upload(&name("a")).unwrap();
        let mut h = held(&store, &id);
        h.append(&mut &b"12345"[..], None).unwrap();
        h.release().unwrap();
        // A holder whose lease ran out mid-chunk (its instance was dropped).
        let dir = store.layout().upload(id.as_str());
        let stale = Lease {
            expiry: unix_now() - 1,
            size: Some(5),
        };
        fs::rename(dir.join("data"), dir.join(stale.file_name())).unwrap();
        let path = dir.join(held_file(&dir).unwrap().unwrap().0);
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"partial")
            .unwrap();
        let next = held(&store, &id);
        assert_eq!(next.size(), 5);
        assert_eq!(fs::read(&next.path).unwrap(), b"12345");
    }

    #[test]
    fn recovery_releases_held_sessions_and_removes_leftovers() {
        let store = scratch_store("store-recover");
        let id = store.create_upload(&name("a")).unwrap();
        let mut h = held(&store, &id);
        h.append(&mut &b"12345"[..], None).unwrap();
        let path = h.path.clone();
        // A crash: the hold is never released, and more bytes came in.
        std::mem::forget(h);
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"xx")
            .unwrap();
        // A session half created, and temporaries of writes cut off.
        fs::create_dir_all(
            store
                .layout()
                .upload("0c0c0c0c-0000-4000-8000-000000000000"),
        )
        .unwrap();
        fs::write(store.layout().root().join("manifests/.tmp-x-1"), b"123").unwrap();
        fs::create_dir_all(store.layout().root().join("cache")).unwrap();
        fs::write(store.layout().root().join("cache/.tmp-y-2"), b"4567").unwrap();
        assert_eq!(store.temporaries().unwrap(), (2, 7));
        let r = store.recover().unwrap();
        assert_eq!(
            r,
            Recovery {
                temporaries: 2,
                temporary_bytes: 7,
                sessions_released: 1,
                sessions_removed: 1,
            }
        );
        assert_eq!(store.temporaries().unwrap(), (0, 0));
        // Released at the size its client was told when the crashed
        // request took it (none of that request's bytes were answered),
        // and holdable again.
        assert_eq!(store.upload(&id).unwrap().unwrap().size, 0);
        assert_eq!(held(&store, &id).size(), 0);
        assert_eq!(
            list_dir(&store.layout().root().join("uploads"))
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn a_push_of_a_blob_replaces_an_original_set_aside_as_damaged() {
        let store = scratch_store("store-repair");
        let d = crate::test_support::commit_blob(&store, b"good bytes");
        // Damage found while serving it: set aside, the blob is unknown.
        fs::write(store.original_path(&d), b"bad bytes!").unwrap();
        store.quarantine_original(&d, 10).unwrap();
        assert!(!store.has_blob(&d));
        // The next push is committed and repairs it.
        assert_eq!(crate::test_support::commit_blob(&store, b"good bytes"), d);
        assert_eq!(fs::read(store.original_path(&d)).unwrap(), b"good bytes");
        assert!(!store.layout().damaged_original(&d).exists());
    }

    #[test]
    fn a_manifest_is_one_file_and_the_old_two_file_form_is_still_read() {
        let store = scratch_store("store-manifest-file");
        let repo = name("r");
        let d = Digest::of(Algorithm::Sha256, b"{}");
        store.put_manifest(&repo, &d, OCI_INDEX, b"{}").unwrap();
        let dir = store.layout().manifests(&repo);
        assert_eq!(list_dir(&dir).unwrap().len(), 1, "no .type file");
        assert_eq!(
            store.manifest(&repo, &d).unwrap().unwrap(),
            (OCI_INDEX.to_string(), b"{}".to_vec())
        );
        // Data format 2: the bytes alone, the media type beside them.
        let old = Digest::of(Algorithm::Sha256, b" {\"a\":1}");
        fs::write(dir.join(old.to_string()), b" {\"a\":1}").unwrap();
        fs::write(dir.join(format!("{old}.type")), OCI_MANIFEST).unwrap();
        assert_eq!(
            store.manifest(&repo, &old).unwrap().unwrap(),
            (OCI_MANIFEST.to_string(), b" {\"a\":1}".to_vec())
        );
        assert!(store.delete_manifest(&repo, &old).unwrap());
        assert!(list_dir(&dir)
            .unwrap()
            .iter()
            .all(|(n, _)| !n.starts_with(&old.to_string())));
    }

    /// Runs `check` on a store of each backend of the object seam: the
    /// local directory and the strict in-memory one.
    fn on_each_backend(name: &str, check: impl Fn(&Store)) {
        check(&scratch_store(name));
        check(&crate::test_support::mem_store(&format!("{name}-mem")).0);
    }

    #[test]
    fn tags_and_repositories_are_listed_sorted() {
        on_each_backend("store-tags", |store| {
            let d = Digest::of(Algorithm::Sha256, b"{}");
            for repo in ["b/c", "a", "b", "x/y/z"] {
                store
                    .put_manifest(&name(repo), &d, OCI_INDEX, b"{}")
                    .unwrap();
            }
            for tag in ["v2", "latest", "v10"] {
                store
                    .put_tag(&name("a"), &tag.parse().unwrap(), &d)
                    .unwrap();
            }
            assert_eq!(
                store.tags(&name("a")).unwrap().unwrap(),
                ["latest", "v10", "v2"]
            );
            assert_eq!(
                store.tags(&name("b")).unwrap().unwrap(),
                Vec::<String>::new()
            );
            assert!(store.tags(&name("nope")).unwrap().is_none());
            assert!(
                store.tags(&name("x/y")).unwrap().is_none(),
                "a parent folder is no repository"
            );
            assert_eq!(
                store.repositories().unwrap(),
                [
                    ("a".into(), 1),
                    ("b".into(), 1),
                    ("b/c".into(), 1),
                    ("x/y/z".into(), 1)
                ]
            );
        });
    }

    #[test]
    fn deleting_a_manifest_removes_its_tags_but_not_other_tags() {
        on_each_backend("store-delete", |store| {
            let a = Digest::of(Algorithm::Sha256, b"{\"a\":1}");
            let b = Digest::of(Algorithm::Sha256, b"{\"b\":1}");
            let repo = name("r");
            store
                .put_manifest(&repo, &a, OCI_MANIFEST, b"{\"a\":1}")
                .unwrap();
            store
                .put_manifest(&repo, &b, OCI_MANIFEST, b"{\"b\":1}")
                .unwrap();
            store.put_tag(&repo, &"one".parse().unwrap(), &a).unwrap();
            store.put_tag(&repo, &"two".parse().unwrap(), &a).unwrap();
            store.put_tag(&repo, &"other".parse().unwrap(), &b).unwrap();
            assert!(store.has_manifest(&repo, &a));
            assert!(store.delete_manifest(&repo, &a).unwrap());
            assert!(!store.delete_manifest(&repo, &a).unwrap());
            assert!(!store.has_manifest(&repo, &a));
            assert_eq!(store.tags(&repo).unwrap().unwrap(), ["other"]);
            assert_eq!(
                store.tag(&repo, &"other".parse().unwrap()).unwrap(),
                Some(b.clone())
            );
            assert!(store.manifest(&repo, &a).unwrap().is_none());
            assert_eq!(store.repositories().unwrap().len(), 1);
            assert!(store.delete_tag(&repo, &"other".parse().unwrap()).unwrap());
            assert!(!store.delete_tag(&repo, &"other".parse().unwrap()).unwrap());
            store.delete_manifest(&repo, &b).unwrap();
            assert!(
                store.repositories().unwrap().is_empty(),
                "an emptied repository leaves the catalog"
            );
        });
    }

    #[test]
    fn referrers_are_listed_by_subject() {
        on_each_backend("store-referrers", |store| {
            let repo = name("r");
            let subject = Digest::of(Algorithm::Sha256, b"s");
            let other = Digest::of(Algorithm::Sha256, b"o");
            let sigs: Vec<Digest> = (0..3u8)
                .map(|i| Digest::of(Algorithm::Sha256, &[i]))
                .collect();
            for s in sigs.iter().rev() {
                store
                    .put_referrer(
                        &repo,
                        &subject,
                        s,
                        &serde_json::json!({"digest": s.to_string()}),
                    )
                    .unwrap();
            }
            let mut want: Vec<String> = sigs.iter().map(Digest::to_string).collect();
            want.sort();
            let listed: Vec<String> = store
                .referrers(&repo, &subject)
                .unwrap()
                .iter()
                .map(|d| d["digest"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(listed, want, "sorted by digest");
            assert!(store.referrers(&repo, &other).unwrap().is_empty());
            for s in &sigs {
                store.delete_referrer(&repo, &subject, s).unwrap();
            }
            assert!(store.referrers(&repo, &subject).unwrap().is_empty());
        });
    }

    #[test]
    fn recipes_and_conversion_records_go_through_the_object_seam() {
        on_each_backend("store-recipes", |store| {
            let d = Digest::of(Algorithm::Sha256, b"blob");
            assert!(store.recipe(&d).unwrap().is_none());
            assert!(!store.has_blob(&d));
            let r = Recipe::raw(d.clone(), "fixed-4".into(), Vec::new(), Vec::new());
            store.put_recipe(&r).unwrap();
            assert_eq!(store.recipe(&d).unwrap(), Some(r));
            assert!(store.has_blob(&d));
            assert_eq!(store.blob_size(&d).unwrap(), Some(0));
            assert!(store.conversion_attempts(&d).unwrap().is_none());
            store.begin_conversion_attempt(&d, 10).unwrap();
            let a = store.begin_conversion_attempt(&d, 20).unwrap();
            assert_eq!((a.count, a.last), (2, 20));
            assert_eq!(store.conversion_attempts(&d).unwrap(), Some(a));
            store.clear_conversion_attempts(&d).unwrap();
            store.clear_conversion_attempts(&d).unwrap();
            assert!(store.conversion_attempts(&d).unwrap().is_none());
        });
        let (store, objects) = crate::test_support::mem_store("store-recipes-seam");
        let d = Digest::of(Algorithm::Sha256, b"other");
        store.mark_conversion_failed(&d, "why").unwrap();
        store
            .put_recipe(&Recipe::raw(
                d.clone(),
                "fixed-4".into(),
                Vec::new(),
                Vec::new(),
            ))
            .unwrap();
        assert_eq!(
            objects.keys(),
            [
                format!("layers/{d}/conversion-failed"),
                format!("layers/{d}/recipe.json"),
            ]
        );
        assert!(!store.layout().layer(&d).exists(), "nothing of it on disk");
    }

    #[test]
    fn damaged_repository_records_are_errors_not_answers() {
        let (store, objects) = crate::test_support::mem_store("store-damaged-records");
        let repo = name("r");
        let d = Digest::of(Algorithm::Sha256, b"{}");
        let layout = store.layout();
        objects
            .write(
                &layout.tag_key(&repo, &"t".parse().unwrap()),
                b"not a digest",
            )
            .unwrap();
        let err = store.tag(&repo, &"t".parse().unwrap()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        // A record far larger than any manifest is refused unread.
        objects
            .write(
                &layout.manifest_key(&repo, &d),
                &vec![b' '; MAX_MANIFEST_RECORD as usize + 1],
            )
            .unwrap();
        assert_eq!(
            store.manifest(&repo, &d).unwrap_err().kind(),
            ErrorKind::InvalidData
        );
        objects
            .write(&layout.manifest_key(&repo, &d), b"no-line-break")
            .unwrap();
        assert_eq!(
            store.manifest(&repo, &d).unwrap_err().kind(),
            ErrorKind::InvalidData
        );
    }

    #[test]
    fn repository_records_go_through_the_object_seam_only() {
        let (store, objects) = crate::test_support::mem_store("store-seam");
        let repo = name("team/app");
        let d = crate::test_support::commit_blob(&store, b"layer");
        let m = Digest::of(Algorithm::Sha256, b"{}");
        store.link_blob(&repo, &d).unwrap();
        store.put_manifest(&repo, &m, OCI_MANIFEST, b"{}").unwrap();
        store.put_tag(&repo, &"v1".parse().unwrap(), &m).unwrap();
        store
            .put_referrer(&repo, &d, &m, &serde_json::json!({"digest": m.to_string()}))
            .unwrap();
        assert_eq!(
            objects.keys(),
            [
                format!("manifests/team/app/_blobs/{d}"),
                format!("manifests/team/app/_manifests/{m}"),
                format!("manifests/team/app/_referrers/{d}/{m}"),
                "manifests/team/app/_tags/v1".to_string(),
            ]
        );
        assert!(
            list_dir(&store.layout().repositories()).unwrap().is_empty(),
            "nothing of the repository on disk"
        );
        assert!(store.blob_in_repo(&repo, &d));
        assert!(!store.blob_in_repo(&name("team/other"), &d));
        assert!(store.unlink_blob(&repo, &d).unwrap());
        assert!(!store.blob_in_repo(&repo, &d));
    }

    #[test]
    fn atomic_write_replaces_whole_files_and_leaves_no_temporaries() {
        let store = scratch_store("store-atomic");
        let path = store.layout().root().join("manifests").join("x");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        let names: Vec<String> = fs::read_dir(store.layout().root().join("manifests"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["x"]);
    }

    #[test]
    fn blobs_are_visible_only_in_repositories_they_are_linked_to() {
        let store = scratch_store("store-links");
        let d = Digest::of(Algorithm::Sha256, b"layer");
        let id = store.create_upload(&name("a")).unwrap();
        let mut h = held(&store, &id);
        h.append(&mut &b"layer"[..], None).unwrap();
        crate::ingest::commit_upload(&store, h, &d).unwrap();
        assert!(store.has_blob(&d));
        store.link_blob(&name("a"), &d).unwrap();
        assert!(store.blob_in_repo(&name("a"), &d));
        assert!(!store.blob_in_repo(&name("b"), &d));
    }
}
