//! Garbage collection: gives back the space of what no kept manifest
//! reaches, while the store serves pushes and pulls.
//!
//! One collection, in order (`data/FORMAT.md`, "Garbage collection", has
//! the crash-safety order of every step):
//!
//! 1. **Leftovers** of a collection cut off: `gc/trash/` entries judged
//!    dead are removed, the others put back ([`recover_trash`]).
//! 2. **Retention**: tags the repository's rule does not keep are removed
//!    (`retention.rs`).
//! 3. **Mark**: every manifest is read; those no tag reaches are removed
//!    when `delete_untagged` asks for it and they are past the grace
//!    period; the blobs the kept ones name are live.
//! 4. **Sweep**: a blob no kept manifest names and unused for the grace
//!    period is set aside (its folder renamed into `gc/trash/`), its use
//!    stamp read again, and then either put back (it was used meanwhile)
//!    or removed; then repository links to blobs that are gone, and cache
//!    entries of blobs that are gone.
//! 5. **Packs**: the frames the remaining recipes name are live. Packs with
//!    no live frame are removed; packs mostly dead are rewritten (their live
//!    frames copied as they are, compressed, into new packs; recipes and
//!    index records pointed at the copies; the old pack retired and removed
//!    by a collection at least a grace period later, since a pull that read
//!    the old recipe may still stream from it). Index records of removed
//!    frames go.
//!
//! Races, and how each is closed:
//! - *A manifest push naming a blob being swept.* The push stamps each
//!   blob (`Store::touch_blob`) and checks it exists after; the sweep
//!   renames the folder away and reads the stamp after. A stamp written
//!   before the rename is seen (the blob is put back); one written after
//!   fails (the folder is gone), and the push's check fails: it is refused
//!   with `MANIFEST_BLOB_UNKNOWN`, never stored naming a missing blob.
//!   The same holds for child manifests of an index (their modification
//!   time is their stamp).
//! - *A blob pushed during marking.* It is stamped before it becomes
//!   visible (`commit_upload`), so it is within its grace period.
//! - *A manifest pushed during marking.* Its push stamped its blobs at most
//!   a request's lifetime before it was stored, so they are within the
//!   grace period (which must exceed the longest request: the host
//!   enforces it for its background collection).
//! - *A blob pushed again while set aside.* The push makes a new folder;
//!   putting back finds it and drops the set-aside copy. Links are removed
//!   first and re-created when the blob turned out to exist after all.
//! - *Conversion writing packs, or recipes naming blocks of a pack about to
//!   go.* Excluded: the caller holds the store's lock (the host's
//!   `store_lock.rs`) so no conversion runs during a collection.
//! - *A pull streaming from a pack.* A pack with a live frame is not
//!   removed; a rewritten one is retired, not removed, for a grace period.
//!   Only pulls of blobs being collected can lose their source mid-way.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::oci::media::{parse_manifest, ManifestInfo};
use crate::oci::{Digest, RepoName, Tag};
use crate::packs::{Packs, SHARDS};
use crate::recipe::{Codec, Frame};
use crate::retention::{rule_for, Rule};
use crate::store::{last_used, list_dir, unix_secs, write_atomic, Store};

/// A pack is rewritten when more than this share of its bytes is dead...
const REPACK_DEAD_SHARE: f64 = 0.2;
/// ...and the dead bytes are at least this many (a small pack's few dead
/// frames are not worth a rewrite).
const REPACK_MIN_DEAD: u64 = 256 * 1024;
/// New packs written by a rewrite close at this size.
const REPACK_TARGET: u64 = 256 << 20;
/// Suffix of a trash entry judged dead (removed, never put back).
const DEAD: &str = ".dead";

/// Length of a slice of writing work after which the pacer pauses: short
/// enough that a request meeting it waits little, long enough that a
/// pause is not mostly timer overhead.
const PACE_SLICE: Duration = Duration::from_millis(20);

/// How a collection runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seconds of the grace period.
    pub grace: u64,
    pub delete_untagged: bool,
    pub retention: Vec<Rule>,
    pub dry_run: bool,
    /// Percent of the time the writing steps may work (see [`Pacer`]).
    pub io_percent: u8,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            grace: 0,
            delete_untagged: false,
            retention: Vec::new(),
            dry_run: false,
            io_percent: 100,
        }
    }
}

/// What a collection removed (or in a dry run would remove), by name: the
/// report an operator reads before trusting a policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removals {
    /// `repository:tag`.
    pub tags: Vec<String>,
    /// `repository@digest`.
    pub manifests: Vec<String>,
    /// Blob digests.
    pub blobs: Vec<String>,
}

/// Keeps the writing steps to a share of the wall time: each step calls
/// [`Pacer::wrote`] after a write, and once a slice of [`PACE_SLICE`] has
/// run, the pacer sleeps so that work is `percent` of the total. A
/// collection's fsyncs and renames share the disk's journal with the
/// requests' own (a blob commit, a manifest PUT), whose latency it would
/// otherwise multiply while it rewrites thousands of files.
pub struct Pacer {
    percent: u8,
    slice: Cell<Instant>,
    paused: Cell<Duration>,
}

impl Pacer {
    #[must_use]
    pub fn new(percent: u8) -> Self {
        Self {
            percent: percent.clamp(1, 100),
            slice: Cell::new(Instant::now()),
            paused: Cell::new(Duration::ZERO),
        }
    }

    /// Starts a writing step: what ran before (reading) is not counted.
    pub fn start(&self) {
        self.slice.set(Instant::now());
    }

    /// After one write: pauses when the slice is used up.
    pub fn wrote(&self) {
        if self.percent >= 100 {
            return;
        }
        let busy = self.slice.get().elapsed();
        if busy < PACE_SLICE {
            return;
        }
        let rest = busy.mul_f64(f64::from(100 - self.percent) / f64::from(self.percent));
        std::thread::sleep(rest);
        self.paused.set(self.paused.get() + rest);
        self.slice.set(Instant::now());
    }

    /// Time paused so far.
    #[must_use]
    pub fn paused(&self) -> Duration {
        self.paused.get()
    }
}

/// What a collection did; kept in `gc/last-collection.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Collection {
    pub started: u64,
    pub duration_ms: u64,
    pub dry_run: bool,
    pub tags_removed: u64,
    pub manifests_removed: u64,
    pub blobs_removed: u64,
    pub blob_bytes_removed: u64,
    pub blobs_kept_recent: u64,
    pub blobs_kept: u64,
    pub packs_removed: u64,
    pub packs_repacked: u64,
    pub pack_bytes_removed: u64,
    pub pack_bytes_written: u64,
    pub index_records_removed: u64,
    pub cache_bytes_removed: u64,
    pub stored_bytes_before: u64,
    pub stored_bytes_after: u64,
    pub temporaries_removed: u64,
    pub temporary_bytes_removed: u64,
    pub paused_ms: u64,
    /// Not kept in `gc/last-collection.json` (a big collection's lists
    /// would make `stats` read megabytes); the caller gets them.
    #[serde(skip)]
    pub removed: Removals,
}

/// Runs one collection at time `now` (Unix seconds).
///
/// # Errors
/// I/O errors; `InvalidData` when a manifest or recipe does not parse
/// (what it names cannot be known, so nothing is collected rather than
/// something live): the error names the file.
pub fn collect(store: &Store, options: &Options, now: u64) -> io::Result<Collection> {
    let clock = Instant::now();
    let mut c = Collection {
        started: now,
        dry_run: options.dry_run,
        stored_bytes_before: store.stored_bytes()?,
        ..Collection::default()
    };
    // Kept when used after this moment (a use in this very second counts
    // as after, so a grace period of 0 keeps nothing but what is in use).
    let cutoff = now.saturating_sub(options.grace);
    let pace = Pacer::new(options.io_percent);
    if !options.dry_run {
        recover_trash(store)?;
        resume_rewrite(store, now, &pace)?;
    }
    let tagged = apply_retention(store, options, now, &mut c)?;
    let live = mark(store, options, now, &tagged, &pace, &mut c)?;
    let doomed = sweep_blobs(store, &live, cutoff, options.dry_run, &pace, &mut c)?;
    if !options.dry_run {
        c.cache_bytes_removed = drop_orphans(store)?;
    }
    collect_packs(store, cutoff, now, options.dry_run, &doomed, &pace, &mut c)?;
    // Leftovers of writes a crash cut off while the server kept serving
    // (the start-up recovery removes the rest): a write in flight is
    // younger than any request, so younger than the grace period.
    (c.temporaries_removed, c.temporary_bytes_removed) =
        store.remove_stale_temporaries(cutoff, !options.dry_run)?;
    c.stored_bytes_after = store.stored_bytes()?;
    c.duration_ms = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
    c.paused_ms = u64::try_from(pace.paused().as_millis()).unwrap_or(u64::MAX);
    if !options.dry_run {
        let json = serde_json::to_vec(&c).expect("a collection always serializes");
        write_atomic(&store.layout().last_collection(), &json)?;
    }
    Ok(c)
}

/// The last collection that finished, if any (a damaged record reads as
/// none).
///
/// # Errors
/// I/O errors reading it.
pub fn last_collection(store: &Store) -> io::Result<Option<Collection>> {
    match fs::read(store.layout().last_collection()) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn modified(path: &Path) -> io::Result<Option<u64>> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some(unix_secs(m.modified()?))),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn nonce() -> String {
    crate::hex::encode(&crate::sys::random_bytes(6))
}

fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotADirectory => fs::remove_file(path),
        other => other,
    }
}

/// Committed blobs no manifest names, and their sizes (`stats`).
///
/// # Errors
/// I/O errors; `InvalidData` for a manifest that does not parse.
pub fn unreferenced(store: &Store) -> io::Result<(u64, u64)> {
    let mut c = Collection::default();
    let live = mark(
        store,
        &Options::default(),
        0,
        &HashMap::new(),
        &Pacer::new(100),
        &mut c,
    )?;
    let (mut blobs, mut bytes) = (0, 0);
    for (name, ty) in list_dir(&store.layout().layers())? {
        let Ok(digest) = name.parse::<Digest>() else {
            continue;
        };
        if ty.is_dir() && !live.contains(&digest) {
            if let Some(size) = store.blob_size(&digest)? {
                blobs += 1;
                bytes += size;
            }
        }
    }
    Ok((blobs, bytes))
}

// --- 1. leftovers -------------------------------------------------------

/// Blobs and manifests set aside by a collection that was cut off:
/// `(put back, removed)`. Entries judged dead (`.dead`) are removed; the
/// others were not judged yet, so they go back where they were (unless
/// pushed again meanwhile), for the next collection to judge.
///
/// # Errors
/// I/O errors.
pub fn recover_trash(store: &Store) -> io::Result<(u64, u64)> {
    let trash = store.layout().trash();
    let (mut restored, mut removed) = (0, 0);
    for (name, _) in list_dir(&trash)? {
        let path = trash.join(&name);
        if name.ends_with(DEAD) {
            remove_tree(&path)?;
            removed += 1;
            continue;
        }
        let back = match name.split_once('.') {
            Some(("b", rest)) => rest
                .rsplit_once('.')
                .and_then(|(d, _)| d.parse::<Digest>().ok())
                .map(|d| (path.clone(), store.layout().layer(&d))),
            Some(("m", _)) => set_aside_manifest(&path)?
                .map(|(repo, d)| (path.join(d.to_string()), store.layout().manifest(&repo, &d))),
            _ => None,
        };
        if let Some((from, to)) = back {
            if put_back(&from, &to)? {
                restored += 1;
            } else {
                removed += 1;
            }
        }
        remove_tree(&path)?;
    }
    Ok((restored, removed))
}

/// The repository and digest of a manifest set aside in `dir`.
fn set_aside_manifest(dir: &Path) -> io::Result<Option<(RepoName, Digest)>> {
    let repo = match fs::read_to_string(dir.join("repo")) {
        Ok(s) => s.parse::<RepoName>().ok(),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let digest = list_dir(dir)?
        .into_iter()
        .find_map(|(n, _)| n.parse::<Digest>().ok());
    Ok(repo.zip(digest))
}

/// Renames `from` back to `to` unless something is there again; `false`
/// when it was not put back (the caller removes it).
fn put_back(from: &Path, to: &Path) -> io::Result<bool> {
    if !from.exists() || to.exists() {
        return Ok(false);
    }
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    match fs::rename(from, to) {
        Ok(()) => Ok(true),
        // Pushed again between the check and the rename.
        Err(_) if to.exists() => Ok(false),
        Err(e) => Err(e),
    }
}

// --- 2. retention -------------------------------------------------------

/// Applies the retention rules; returns, per repository, the digests its
/// remaining tags point at (in a dry run: the tags that would remain).
fn apply_retention(
    store: &Store,
    options: &Options,
    now: u64,
    c: &mut Collection,
) -> io::Result<HashMap<String, HashSet<Digest>>> {
    let mut tagged = HashMap::new();
    for (repo, _) in store.repositories()? {
        let Ok(name) = repo.parse::<RepoName>() else {
            continue;
        };
        let dir = store.layout().tags(&name);
        let mut tags = Vec::new();
        for (tag, _) in list_dir(&dir)? {
            if let Some(at) = modified(&dir.join(&tag))? {
                tags.push((tag, at));
            }
        }
        let kept: Option<HashSet<&str>> =
            rule_for(&options.retention, &repo).map(|rule| rule.kept(&tags, now));
        let mut digests = HashSet::new();
        for (tag, at) in &tags {
            let Ok(t) = tag.parse::<Tag>() else { continue };
            if kept.as_ref().is_some_and(|k| !k.contains(tag.as_str())) {
                if options.dry_run {
                    c.tags_removed += 1;
                    c.removed.tags.push(format!("{repo}:{tag}"));
                    continue;
                }
                // Written again since it was listed: a new push, newest of
                // all, which the rule would keep.
                if modified(&dir.join(tag))? == Some(*at) {
                    store.delete_tag(&name, &t)?;
                    c.tags_removed += 1;
                    c.removed.tags.push(format!("{repo}:{tag}"));
                    continue;
                }
            }
            if let Some(d) = store.tag(&name, &t)? {
                digests.insert(d);
            }
        }
        tagged.insert(repo, digests);
    }
    Ok(tagged)
}

// --- 3. mark ------------------------------------------------------------

/// Reads every manifest, removes the untagged ones when asked to (by
/// `delete_untagged` past the grace period, or by the repository's
/// retention rule past its `delete_untagged_after`), and returns the
/// blobs the kept ones name.
fn mark(
    store: &Store,
    options: &Options,
    now: u64,
    tagged: &HashMap<String, HashSet<Digest>>,
    pace: &Pacer,
    c: &mut Collection,
) -> io::Result<HashSet<Digest>> {
    let grace_cutoff = now.saturating_sub(options.grace);
    let mut live = HashSet::new();
    for (repo, _) in store.repositories()? {
        let Ok(name) = repo.parse::<RepoName>() else {
            continue;
        };
        let manifests = read_manifests(store, &name)?;
        let mut removed = HashSet::new();
        // Untagged manifests unused since this moment go, if any.
        let untagged_cutoff =
            match rule_for(&options.retention, &repo).and_then(Rule::delete_untagged_after) {
                Some(after) => Some(grace_cutoff.min(now.saturating_sub(after))),
                None => options.delete_untagged.then_some(grace_cutoff),
            };
        if let Some(cutoff) = untagged_cutoff {
            // Roots: what tags name, and every manifest written or used
            // within the grace period (a child pushed before its index,
            // an index pushed by digest), with all they reach.
            let mut roots = tagged.get(&repo).cloned().unwrap_or_default();
            roots.extend(
                manifests
                    .iter()
                    .filter(|(_, (_, at))| *at > cutoff)
                    .map(|(d, _)| d.clone()),
            );
            let reached = reachable(&manifests, roots);
            pace.start();
            for (digest, (info, _)) in &manifests {
                if reached.contains(digest) {
                    continue;
                }
                if options.dry_run || remove_manifest(store, &name, digest, info, cutoff)? {
                    c.manifests_removed += 1;
                    c.removed.manifests.push(format!("{repo}@{digest}"));
                    removed.insert(digest.clone());
                }
                pace.wrote();
            }
        }
        // Every manifest still there keeps what it names (one put back
        // because it was used meanwhile included).
        for (digest, (info, _)) in &manifests {
            if !removed.contains(digest) {
                live.extend(info.blobs.iter().cloned());
                live.extend(info.foreign.iter().cloned());
            }
        }
    }
    Ok(live)
}

/// A repository's manifests with what they name and when each was last
/// written or used.
fn read_manifests(
    store: &Store,
    name: &RepoName,
) -> io::Result<HashMap<Digest, (ManifestInfo, u64)>> {
    let dir = store.layout().manifests(name);
    let mut out = HashMap::new();
    for (file, ty) in list_dir(&dir)? {
        let Ok(digest) = file.parse::<Digest>() else {
            continue; // `.type` files of data format 2
        };
        if !ty.is_file() {
            continue;
        }
        let Some(at) = modified(&dir.join(&file))? else {
            continue; // deleted since the listing
        };
        let Some((media_type, bytes)) = store.manifest(name, &digest)? else {
            continue;
        };
        let info = parse_manifest(&bytes, Some(&media_type)).map_err(|e| {
            io::Error::new(
                ErrorKind::InvalidData,
                format!(
                    "manifest {name}@{digest} does not parse ({}); nothing collected",
                    e.message
                ),
            )
        })?;
        out.insert(digest, (info, at));
    }
    Ok(out)
}

/// The manifests reachable from `roots`: children of kept indexes, and
/// manifests whose subject is kept (referrers: signatures, SBOMs).
fn reachable(
    manifests: &HashMap<Digest, (ManifestInfo, u64)>,
    roots: HashSet<Digest>,
) -> HashSet<Digest> {
    let mut reached = roots;
    loop {
        let before = reached.len();
        for (digest, (info, _)) in manifests {
            if reached.contains(digest) {
                let children: Vec<Digest> = info.manifests.clone();
                reached.extend(children);
            } else if info.subject.as_ref().is_some_and(|s| reached.contains(s)) {
                reached.insert(digest.clone());
            }
        }
        if reached.len() == before {
            return reached;
        }
    }
}

/// Sets an untagged manifest aside, reads its modification time again
/// (an index push naming it as a child touches it first), and removes it
/// or puts it back. Returns whether it was removed.
fn remove_manifest(
    store: &Store,
    repo: &RepoName,
    digest: &Digest,
    info: &ManifestInfo,
    cutoff: u64,
) -> io::Result<bool> {
    let layout = store.layout();
    let dir = layout.trash().join(format!("m.{}", nonce()));
    write_atomic(&dir.join("repo"), repo.as_str().as_bytes())?;
    let path = layout.manifest(repo, digest);
    let aside = dir.join(digest.to_string());
    match fs::rename(&path, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {
            remove_tree(&dir)?;
            return Ok(false);
        }
        Err(e) => return Err(e),
    }
    if modified(&aside)?.is_some_and(|at| at > cutoff) {
        put_back(&aside, &path)?;
        remove_tree(&dir)?;
        return Ok(false);
    }
    let dead = PathBuf::from(format!("{}{DEAD}", dir.display()));
    fs::rename(&dir, &dead)?;
    if !store.has_manifest(repo, digest) {
        if let Some(subject) = &info.subject {
            store.delete_referrer(repo, subject, digest)?;
        }
        let _ = fs::remove_file(layout.path(&layout.legacy_media_type_key(repo, digest)));
    }
    remove_tree(&dead)?;
    Ok(true)
}

// --- 4. sweep -----------------------------------------------------------

/// Removes the blobs no kept manifest names that were not used within
/// the grace period, then the links to blobs that are gone. In a dry run,
/// returns the blobs it would have removed.
fn sweep_blobs(
    store: &Store,
    live: &HashSet<Digest>,
    cutoff: u64,
    dry_run: bool,
    pace: &Pacer,
    c: &mut Collection,
) -> io::Result<HashSet<Digest>> {
    let mut doomed = HashSet::new();
    pace.start();
    let layers = store.layout().layers();
    for (name, ty) in list_dir(&layers)? {
        if !ty.is_dir() {
            continue;
        }
        // Folders not named by a digest are not the store's; left alone.
        let Ok(digest) = name.parse::<Digest>() else {
            continue;
        };
        if live.contains(&digest) {
            c.blobs_kept += 1;
            continue;
        }
        let dir = layers.join(&name);
        match last_used(&dir)? {
            None => continue,
            Some(at) if at > cutoff => {
                c.blobs_kept += 1;
                c.blobs_kept_recent += 1;
                continue;
            }
            Some(_) => {}
        }
        // A folder holding only conversion records or a damaged original
        // is no blob (size 0), but it goes the same way.
        let size = store.blob_size(&digest).ok().flatten().unwrap_or(0);
        if dry_run {
            c.blobs_removed += 1;
            c.blob_bytes_removed += size;
            c.removed.blobs.push(name);
            doomed.insert(digest);
            continue;
        }
        let removed = remove_blob(store, &dir, &name, cutoff)?;
        pace.wrote();
        if removed {
            c.blobs_removed += 1;
            c.blob_bytes_removed += size;
            c.removed.blobs.push(name);
        } else {
            c.blobs_kept += 1;
            c.blobs_kept_recent += 1;
        }
    }
    if !dry_run {
        unlink_missing(store, pace)?;
    }
    Ok(doomed)
}

/// Sets a blob's folder aside, reads its stamp again, and removes it or
/// puts it back. Returns whether it was removed.
fn remove_blob(store: &Store, dir: &Path, name: &str, cutoff: u64) -> io::Result<bool> {
    let trash = store.layout().trash();
    fs::create_dir_all(&trash)?;
    let aside = trash.join(format!("b.{name}.{}", nonce()));
    match fs::rename(dir, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    }
    // From here no stamp can reach the folder (its path is gone), so this
    // reading is final. A folder with no file holds no blob (a commit
    // making it starts over in a new one when its write fails): it goes
    // whatever its own time, which the rename may have changed.
    let empty = list_dir(&aside)?.is_empty();
    if !empty && last_used(&aside)?.is_some_and(|at| at > cutoff) {
        if !put_back(&aside, dir)? {
            remove_tree(&aside)?;
        }
        return Ok(false);
    }
    let dead = trash.join(format!("b.{name}.{}{DEAD}", nonce()));
    fs::rename(&aside, &dead)?;
    remove_tree(&dead)?;
    Ok(true)
}

/// Removes repository links to blobs that no longer exist. Each link is
/// removed first and written again if the blob exists after that: a push
/// committing the blob meanwhile links it after committing, so either the
/// check sees the blob or the push's link comes after the removal.
fn unlink_missing(store: &Store, pace: &Pacer) -> io::Result<()> {
    fn walk(store: &Store, dir: &Path, pace: &Pacer) -> io::Result<()> {
        for (name, ty) in list_dir(dir)? {
            if !ty.is_dir() {
                continue;
            }
            let path = dir.join(&name);
            if name == "_blobs" {
                for (link, _) in list_dir(&path)? {
                    let Ok(digest) = link.parse::<Digest>() else {
                        continue;
                    };
                    if store.has_blob(&digest) {
                        continue;
                    }
                    let file = path.join(&link);
                    match fs::remove_file(&file) {
                        Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
                        _ => {}
                    }
                    if store.has_blob(&digest) {
                        write_atomic(&file, b"")?;
                    }
                    pace.wrote();
                }
            } else if !name.starts_with('_') {
                walk(store, &path, pace)?;
            }
        }
        Ok(())
    }
    pace.start();
    walk(store, &store.layout().repositories(), pace)
}

/// Removes cache entries of blobs that are gone; returns their bytes.
fn drop_orphans(store: &Store) -> io::Result<u64> {
    let dir = store.layout().cache();
    let mut bytes = 0;
    for (name, ty) in list_dir(&dir)? {
        let Ok(digest) = name.parse::<Digest>() else {
            continue;
        };
        if !ty.is_file() || store.has_blob(&digest) {
            continue;
        }
        let path = dir.join(&name);
        let size = fs::metadata(&path).map_or(0, |m| m.len());
        match fs::remove_file(&path) {
            Ok(()) => bytes += size,
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(bytes)
}

// --- 5. packs -----------------------------------------------------------

/// The frames remaining recipes name, by pack: frame offset → stored
/// length (a few bytes per MiB of stored content).
type LiveFrames = HashMap<u64, BTreeMap<u64, u32>>;

/// Calls `each` with every remaining blob's recipe, `doomed` left out.
///
/// # Errors
/// I/O errors, or a recipe that does not parse (named in the error).
fn for_each_recipe(
    store: &Store,
    doomed: &HashSet<Digest>,
    mut each: impl FnMut(crate::recipe::Recipe) -> io::Result<()>,
) -> io::Result<()> {
    for (name, ty) in list_dir(&store.layout().layers())? {
        let Ok(digest) = name.parse::<Digest>() else {
            continue;
        };
        if !ty.is_dir() || doomed.contains(&digest) {
            continue;
        }
        let recipe = store.recipe(&digest).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("recipe of {digest}: {e}; no pack collected"),
            )
        })?;
        if let Some(recipe) = recipe {
            each(recipe)?;
        }
    }
    Ok(())
}

fn live_frames(store: &Store, doomed: &HashSet<Digest>) -> io::Result<LiveFrames> {
    let mut live = LiveFrames::new();
    for_each_recipe(store, doomed, |recipe| {
        for f in &recipe.frames {
            live.entry(f.pack)
                .or_default()
                .insert(f.offset, f.stored_len);
        }
        Ok(())
    })?;
    Ok(live)
}

/// Packs retired by earlier rewrites, and when.
fn retired(store: &Store) -> io::Result<HashMap<u64, u64>> {
    let dir = store.layout().retired_packs();
    let mut out = HashMap::new();
    for (name, _) in list_dir(&dir)? {
        let Ok(id) = u64::from_str_radix(&name, 16) else {
            continue;
        };
        let at = fs::read_to_string(dir.join(&name))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        out.insert(id, at);
    }
    Ok(out)
}

fn collect_packs(
    store: &Store,
    cutoff: u64,
    now: u64,
    dry_run: bool,
    doomed: &HashSet<Digest>,
    pace: &Pacer,
    c: &mut Collection,
) -> io::Result<()> {
    let live = live_frames(store, doomed)?;
    let present = Packs::new(store.layout()).present()?;
    let retired = retired(store)?;
    // Packs no recipe names: removed, unless retired too recently (a pull
    // may still read the recipe that named it).
    let dead: BTreeMap<u64, u64> = present
        .iter()
        .filter(|(id, _)| !live.contains_key(id))
        .filter(|(id, _)| retired.get(id).is_none_or(|&at| at <= cutoff))
        .map(|(&id, &size)| (id, size))
        .collect();
    let rewrite: Vec<u64> = live
        .iter()
        .filter_map(|(&id, frames)| {
            let size = *present.get(&id)?;
            let used: u64 = frames.values().map(|&l| u64::from(l)).sum();
            let unused = size.saturating_sub(used);
            (unused >= REPACK_MIN_DEAD && unused as f64 > size as f64 * REPACK_DEAD_SHARE)
                .then_some(id)
        })
        .collect();
    if dry_run {
        c.packs_removed = dead.len() as u64;
        c.pack_bytes_removed = dead.values().sum();
        c.packs_repacked = rewrite.len() as u64;
        for id in &rewrite {
            c.pack_bytes_removed += present[id];
            c.pack_bytes_written += live[id].values().map(|&l| u64::from(l)).sum::<u64>();
        }
        return Ok(());
    }
    // Copies first; then a journal of where each frame went, so that a
    // cut-off rewrite is finished rather than undone (undoing it would
    // leave index records pointing at copies no recipe names, which the
    // next collection would drop with them); then the index, the
    // retirement records (before any recipe stops naming the old pack, so
    // it never becomes dead without its grace), the recipes.
    pace.start();
    let moved = copy_frames(store, &rewrite, &live, pace, c)?;
    if !moved.is_empty() {
        let journal = Journal {
            retired: rewrite.clone(),
            moved: moved
                .iter()
                .flat_map(|(&old, frames)| {
                    frames
                        .iter()
                        .map(move |(&off, to)| [old, off, to.pack, to.offset])
                })
                .collect(),
        };
        write_atomic(
            &store.layout().rewrite_journal(),
            &serde_json::to_vec(&journal).expect("a journal always serializes"),
        )?;
    }
    c.index_records_removed = rewrite_index(store, &dead, &moved, pace)?;
    if !moved.is_empty() {
        finish_rewrite(store, &rewrite, &moved, now, pace)?;
    }
    c.packs_repacked = rewrite.len() as u64;
    for (&id, &size) in &dead {
        match fs::remove_file(store.layout().pack(id)) {
            Ok(()) => {
                c.packs_removed += 1;
                c.pack_bytes_removed += size;
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let _ = fs::remove_file(store.layout().retired_pack(id));
        pace.wrote();
    }
    // Rewritten in this very collection with a grace of 0: nothing may be
    // reading them, by the operator's word.
    if cutoff >= now {
        for &id in &rewrite {
            if let Some(&size) = present.get(&id) {
                fs::remove_file(store.layout().pack(id))?;
                let _ = fs::remove_file(store.layout().retired_pack(id));
                c.pack_bytes_removed += size;
            }
        }
    }
    Ok(())
}

/// Old frame → new frame, by old pack and offset.
type Moved = HashMap<u64, HashMap<u64, Frame>>;

/// `gc/rewrite.json`: the packs being rewritten and where each of their
/// live frames went (`[old pack, old offset, new pack, new offset]`).
#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    retired: Vec<u64>,
    moved: Vec<[u64; 4]>,
}

impl Journal {
    fn moved(&self) -> Moved {
        let mut moved: Moved = HashMap::new();
        for &[old, off, pack, offset] in &self.moved {
            moved.entry(old).or_default().insert(
                off,
                Frame {
                    pack,
                    offset,
                    stored_len: 0,
                    len: 0,
                    codec: Codec::Stored,
                },
            );
        }
        moved
    }
}

/// The steps of a rewrite after its journal: retirement records, recipes,
/// then the journal goes. Each step is idempotent, so a rewrite cut off
/// anywhere is finished by running them again (with the index step first:
/// [`resume_rewrite`]).
fn finish_rewrite(
    store: &Store,
    retired: &[u64],
    moved: &Moved,
    now: u64,
    pace: &Pacer,
) -> io::Result<()> {
    for &id in retired {
        write_atomic(&store.layout().retired_pack(id), now.to_string().as_bytes())?;
        pace.wrote();
    }
    // A second pass over the recipes rather than a list of each pack's
    // users kept from the first: memory stays a few bytes per frame.
    for_each_recipe(store, &HashSet::new(), |recipe| {
        repoint_recipe(store, recipe, moved, pace)
    })?;
    match fs::remove_file(store.layout().rewrite_journal()) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Finishes a rewrite a collection was cut off in, if any.
fn resume_rewrite(store: &Store, now: u64, pace: &Pacer) -> io::Result<()> {
    let bytes = match fs::read(store.layout().rewrite_journal()) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let journal: Journal = serde_json::from_slice(&bytes)
        .map_err(|e| io::Error::new(ErrorKind::InvalidData, format!("gc/rewrite.json: {e}")))?;
    let moved = journal.moved();
    // Records still on the old packs move; those already moved stay
    // (their packs are not keys of `moved`).
    let present = Packs::new(store.layout()).present()?;
    let moved: Moved = moved
        .into_iter()
        .filter(|(_, frames)| frames.values().all(|f| present.contains_key(&f.pack)))
        .collect();
    pace.start();
    rewrite_index(store, &BTreeMap::new(), &moved, pace)?;
    finish_rewrite(store, &journal.retired, &moved, now, pace)
}

/// Copies the live frames of `packs`, as stored, into new packs (each
/// written as a temporary, fsynced, renamed).
fn copy_frames(
    store: &Store,
    packs: &[u64],
    live: &LiveFrames,
    pace: &Pacer,
    c: &mut Collection,
) -> io::Result<Moved> {
    let layout = store.layout();
    let mut moved: Moved = HashMap::new();
    let mut out: Option<(u64, PathBuf, File, u64)> = None;
    let finish = |out: Option<(u64, PathBuf, File, u64)>, c: &mut Collection| -> io::Result<()> {
        if let Some((id, tmp, f, written)) = out {
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, layout.pack(id))?;
            c.pack_bytes_written += written;
        }
        Ok(())
    };
    let mut buf = Vec::new();
    for &old in packs {
        let mut src = File::open(layout.pack(old))?;
        for (&offset, &stored_len) in &live[&old] {
            if out.as_ref().is_some_and(|o| o.3 >= REPACK_TARGET) {
                finish(out.take(), c)?;
            }
            if out.is_none() {
                let id = u64::from_le_bytes(
                    crate::sys::random_bytes(8)
                        .try_into()
                        .expect("8 random bytes"),
                );
                fs::create_dir_all(layout.packs())?;
                let tmp = layout.pack_temporary(id);
                out = Some((id, tmp.clone(), File::create(&tmp)?, 0));
            }
            let (id, _, f, written) = out.as_mut().expect("opened above");
            buf.resize(stored_len as usize, 0);
            src.seek(SeekFrom::Start(offset))?;
            src.read_exact(&mut buf)?;
            f.write_all(&buf)?;
            // The frame's other fields (lengths, codec) are the recipe's
            // and the index's own; only pack and offset change.
            moved.entry(old).or_default().insert(
                offset,
                Frame {
                    pack: *id,
                    offset: *written,
                    stored_len,
                    len: 0,
                    codec: Codec::Stored,
                },
            );
            *written += u64::from(stored_len);
            pace.wrote();
        }
    }
    finish(out, c)?;
    Ok(moved)
}

/// Where a frame went, keeping its own lengths and codec.
fn relocate(frame: &Frame, moved: &Moved) -> Option<Frame> {
    let to = moved.get(&frame.pack)?.get(&frame.offset)?;
    Some(Frame {
        pack: to.pack,
        offset: to.offset,
        ..*frame
    })
}

/// Drops index records in `dead` packs and in frames of rewritten packs
/// that were not copied; points records of copied frames at the copies.
/// Returns the records dropped.
fn rewrite_index(
    store: &Store,
    dead: &BTreeMap<u64, u64>,
    moved: &Moved,
    pace: &Pacer,
) -> io::Result<u64> {
    let packs = Packs::new(store.layout());
    let mut dropped = 0;
    for shard in 0..SHARDS {
        let (records, _) = packs.shard_records(shard)?;
        let mut changed = false;
        let mut kept = Vec::with_capacity(records.len());
        for (id, mut at) in records {
            if dead.contains_key(&at.frame.pack) {
                changed = true;
                dropped += 1;
                continue;
            }
            if moved.contains_key(&at.frame.pack) {
                changed = true;
                match relocate(&at.frame, moved) {
                    Some(f) => at.frame = f,
                    None => {
                        dropped += 1;
                        continue;
                    }
                }
            }
            kept.push((id, at));
        }
        if changed {
            packs.replace_shard(shard, &kept)?;
            pace.wrote();
        }
    }
    Ok(dropped)
}

/// Points a recipe's frames at their copies (one atomic write), if it
/// names any.
fn repoint_recipe(
    store: &Store,
    mut recipe: crate::recipe::Recipe,
    moved: &Moved,
    pace: &Pacer,
) -> io::Result<()> {
    let mut changed = false;
    for f in &mut recipe.frames {
        if let Some(to) = relocate(f, moved) {
            *f = to;
            changed = true;
        }
    }
    if changed {
        store.put_recipe(&recipe)?;
        pace.wrote();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::check;
    use crate::convert::{convert, convert_next, now_secs, Queue};
    use crate::test_support::{
        commit_blob, gzip, put_image, scratch_store, seeded_bytes, settings, tar_of,
    };

    fn options(grace: u64) -> Options {
        Options {
            grace,
            ..Options::default()
        }
    }

    fn run(store: &Store, options: &Options) -> Collection {
        collect(store, options, now_secs()).unwrap()
    }

    /// A gzip layer of one file of `seed`'s bytes.
    fn layer(store: &Store, seed: u64) -> Digest {
        let tar = tar_of(&[("f.bin", &seeded_bytes(seed, 300_000), 1_700_000_000)]);
        let d = commit_blob(store, &gzip(&tar, 6));
        convert(store, &settings(), &d).unwrap();
        d
    }

    fn assert_clean(store: &Store) {
        let r = check(store, true).unwrap();
        assert!(
            r.bad_blocks == 0 && r.bad_blobs == 0 && r.bad_manifests == 0,
            "{r:?}"
        );
        assert_eq!(r.unindexed_packs, 0, "every pack left is indexed: {r:?}");
    }

    #[test]
    fn a_deleted_images_own_blobs_and_packs_go_and_the_rest_reads_back() {
        let store = scratch_store("gc-delete");
        let (shared, own, kept) = (layer(&store, 1), layer(&store, 2), layer(&store, 3));
        let config_a = commit_blob(&store, b"{\"a\":1}");
        let config_b = commit_blob(&store, b"{\"b\":1}");
        let a = put_image(&store, "team/a", &config_a, &[&shared, &own]);
        put_image(&store, "team/b", &config_b, &[&shared, &kept]);
        let before = store.stored_bytes().unwrap();
        assert!(store
            .delete_manifest(&"team/a".parse().unwrap(), &a)
            .unwrap());

        let c = run(&store, &options(0));
        assert_eq!((c.blobs_removed, c.blobs_kept), (2, 3), "{c:?}");
        assert!(!store.has_blob(&own) && !store.has_blob(&config_a));
        assert!(store.has_blob(&shared) && store.has_blob(&kept) && store.has_blob(&config_b));
        assert!(
            !store.unlink_blob(&"team/a".parse().unwrap(), &own).unwrap(),
            "links to removed blobs go"
        );
        assert_eq!(c.packs_removed, 1, "the deleted layer's own pack: {c:?}");
        assert!(c.index_records_removed > 50, "{c:?}");
        assert_eq!(c.stored_bytes_before, before);
        assert!(
            c.stored_bytes_after < before * 3 / 4,
            "{} of {before} bytes left",
            c.stored_bytes_after
        );
        assert_eq!(c.stored_bytes_after, store.stored_bytes().unwrap());
        assert_clean(&store);
        assert_eq!(c.removed.blobs.len(), 2);
        assert_eq!(
            last_collection(&store).unwrap(),
            Some(Collection {
                removed: Removals::default(),
                ..c
            }),
            "kept without the lists"
        );

        // A second collection finds nothing more.
        let again = run(&store, &options(0));
        assert_eq!((again.blobs_removed, again.packs_removed), (0, 0));
    }

    #[test]
    fn unreferenced_blobs_used_within_the_grace_period_are_kept() {
        let store = scratch_store("gc-grace");
        let pushed = layer(&store, 4);
        let c = run(&store, &options(3600));
        assert_eq!((c.blobs_removed, c.blobs_kept_recent), (0, 1));
        assert!(store.has_blob(&pushed));
        assert_eq!(c.packs_removed, 0);
        assert_eq!(unreferenced(&store).unwrap().0, 1);
    }

    #[test]
    fn a_dry_run_counts_and_changes_nothing() {
        let store = scratch_store("gc-dry");
        let d = layer(&store, 5);
        let before = store.stored_bytes().unwrap();
        let c = run(
            &store,
            &Options {
                dry_run: true,
                ..options(0)
            },
        );
        assert_eq!((c.blobs_removed, c.packs_removed), (1, 1), "{c:?}");
        assert_eq!(c.removed.blobs, [d.to_string()], "named");
        assert!(store.has_blob(&d));
        assert_eq!(store.stored_bytes().unwrap(), before);
        assert_eq!(
            last_collection(&store).unwrap(),
            None,
            "dry runs are not recorded"
        );
    }

    #[test]
    fn temporaries_older_than_the_grace_period_go_and_younger_ones_stay() {
        let store = scratch_store("gc-tmp");
        let now = now_secs();
        let root = store.layout().root().to_path_buf();
        let old = root.join("layers/.tmp-crashed-1");
        let young = root.join("manifests/.tmp-in-flight-2");
        fs::create_dir_all(old.parent().unwrap()).unwrap();
        fs::create_dir_all(young.parent().unwrap()).unwrap();
        fs::write(&old, b"12345").unwrap();
        fs::write(&young, b"6").unwrap();
        set_written(&old, now - 7200);
        let dry = run(
            &store,
            &Options {
                dry_run: true,
                ..options(3600)
            },
        );
        assert_eq!(
            (dry.temporaries_removed, dry.temporary_bytes_removed),
            (1, 5)
        );
        assert!(old.exists(), "a dry run removes nothing");
        let c = run(&store, &options(3600));
        assert_eq!((c.temporaries_removed, c.temporary_bytes_removed), (1, 5));
        assert!(!old.exists());
        assert!(young.exists(), "a write in flight is left alone");
    }

    #[test]
    fn the_pacer_pauses_in_proportion_to_the_work_and_not_at_100_percent() {
        let busy = |pace: &Pacer| {
            pace.start();
            let t = Instant::now();
            while t.elapsed() < PACE_SLICE + Duration::from_millis(5) {
                std::hint::spin_loop();
            }
            let before = Instant::now();
            pace.wrote();
            before.elapsed()
        };
        let half = Pacer::new(50);
        let slept = busy(&half);
        assert!(slept >= PACE_SLICE, "slept {slept:?}");
        assert!(half.paused() >= PACE_SLICE);
        let quarter = Pacer::new(25);
        assert!(busy(&quarter) >= PACE_SLICE * 3, "three times the work");
        let flat_out = Pacer::new(100);
        assert!(busy(&flat_out) < PACE_SLICE);
        assert_eq!(flat_out.paused(), Duration::ZERO);
        // Reading before a step is not work: no pause for it.
        let fresh = Pacer::new(50);
        std::thread::sleep(PACE_SLICE * 2);
        fresh.start();
        fresh.wrote();
        assert_eq!(fresh.paused(), Duration::ZERO);
    }

    #[test]
    fn a_blob_set_aside_cannot_be_stamped_and_a_cut_off_collection_puts_it_back() {
        let store = scratch_store("gc-aside");
        let d = commit_blob(&store, &seeded_bytes(6, 1000));
        let dead = commit_blob(&store, &seeded_bytes(7, 1000));
        let trash = store.layout().trash();
        fs::create_dir_all(&trash).unwrap();
        // Cut off after the rename: not judged yet.
        fs::rename(store.layout().layer(&d), trash.join(format!("b.{d}.0a0b"))).unwrap();
        assert!(!store.touch_blob(&d).unwrap(), "a stamp cannot reach it");
        assert!(
            !store.layout().layer(&d).exists(),
            "stamping does not bring back an empty folder"
        );
        // Cut off after it was judged dead.
        fs::rename(
            store.layout().layer(&dead),
            trash.join(format!("b.{dead}.0c0d{DEAD}")),
        )
        .unwrap();
        assert_eq!(recover_trash(&store).unwrap(), (1, 1));
        assert!(store.has_blob(&d) && !store.has_blob(&dead));
        assert!(list_dir(&trash).unwrap().is_empty());
    }

    #[test]
    fn a_stamp_newer_than_the_cutoff_keeps_a_blob_being_swept() {
        let store = scratch_store("gc-stamp");
        let d = commit_blob(&store, &seeded_bytes(8, 1000));
        let dir = store.layout().layer(&d);
        let now = now_secs();
        // Used after the collection began (cutoff = now - 10).
        assert!(!remove_blob(&store, &dir, &d.to_string(), now - 10).unwrap());
        assert!(store.has_blob(&d), "put back");
        fs::write(store.layout().touched(&d), "1000").unwrap();
        assert!(remove_blob(&store, &dir, &d.to_string(), now - 10).unwrap());
        assert!(!store.has_blob(&d));
        assert!(list_dir(&store.layout().trash()).unwrap().is_empty());
    }

    fn set_written(path: &Path, secs: u64) {
        let t = std::time::UNIX_EPOCH + Duration::from_secs(secs);
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    #[test]
    fn retention_removes_old_tags_and_untagged_manifests_then_their_blobs() {
        let store = scratch_store("gc-retention");
        let repo: RepoName = "ci/app".parse().unwrap();
        let now = now_secs();
        let mut images = Vec::new();
        for i in 0..5u64 {
            let config = commit_blob(&store, format!("{{\"n\":{i}}}").as_bytes());
            let m = put_image(&store, "ci/app", &config, &[]);
            let tag: Tag = format!("build-{i}").parse().unwrap();
            store.put_tag(&repo, &tag, &m).unwrap();
            set_written(
                &store.layout().path(&store.layout().tag_key(&repo, &tag)),
                now - 1000 + i * 10,
            );
            set_written(&store.layout().manifest(&repo, &m), now - 1000);
            images.push((config, m));
        }
        let options = Options {
            grace: 60,
            delete_untagged: true,
            retention: vec![Rule::new(vec!["ci/*".into()], Some(2), None, &[], None).unwrap()],
            ..Options::default()
        };
        // A dry run names what would go, and removes none of it.
        let dry = Options {
            dry_run: true,
            ..options.clone()
        };
        let mut seen = collect(&store, &dry, now).unwrap().removed;
        seen.tags.sort();
        seen.manifests.sort();
        let mut want_manifests: Vec<String> = images[..3]
            .iter()
            .map(|(_, m)| format!("ci/app@{m}"))
            .collect();
        want_manifests.sort();
        assert_eq!(
            seen.tags,
            ["ci/app:build-0", "ci/app:build-1", "ci/app:build-2"]
        );
        assert_eq!(seen.manifests, want_manifests);
        assert_eq!(store.tags(&repo).unwrap().unwrap().len(), 5);
        // Blobs were stamped just now: within the grace period, kept.
        let c = collect(&store, &options, now).unwrap();
        let mut removed = c.removed.manifests.clone();
        removed.sort();
        assert_eq!(removed, want_manifests, "the real run names the same");
        assert_eq!((c.tags_removed, c.manifests_removed), (3, 3), "{c:?}");
        assert_eq!(store.tags(&repo).unwrap().unwrap(), ["build-3", "build-4"]);
        assert_eq!(c.blobs_removed, 0);
        assert_eq!(c.blobs_kept_recent, 3);
        // An hour later their grace is over.
        let c = collect(&store, &options, now + 3600).unwrap();
        assert_eq!(c.blobs_removed, 3, "{c:?}");
        let mut blobs = c.removed.blobs.clone();
        blobs.sort();
        let mut want: Vec<String> = images[..3].iter().map(|(b, _)| b.to_string()).collect();
        want.sort();
        assert_eq!(blobs, want);
        for (i, (config, m)) in images.iter().enumerate() {
            assert_eq!(store.has_blob(config), i >= 3);
            assert_eq!(store.has_manifest(&repo, m), i >= 3);
        }
    }

    #[test]
    fn a_rule_removes_untagged_manifests_of_its_repositories_past_its_age() {
        let store = scratch_store("gc-untagged-after");
        let now = now_secs();
        let day = 86_400;
        // (repository, age of its untagged manifest, removed?)
        let cases = [
            ("ci/app", 2 * day, true),
            ("ci/app", 3600, false),
            ("prod/app", 2 * day, false),
        ];
        let mut made = Vec::new();
        for (i, (repo, age, _)) in cases.iter().enumerate() {
            let config = commit_blob(&store, format!("{{\"u\":{i}}}").as_bytes());
            let m = put_image(&store, repo, &config, &[]);
            let name: RepoName = repo.parse().unwrap();
            set_written(&store.layout().manifest(&name, &m), now - age);
            made.push((name, m));
        }
        // Tagged, and old: stays (the rule keeps every tag).
        let tagged_config = commit_blob(&store, b"{\"tagged\":1}");
        let tagged = put_image(&store, "ci/app", &tagged_config, &[]);
        let ci: RepoName = "ci/app".parse().unwrap();
        store.put_tag(&ci, &"v1".parse().unwrap(), &tagged).unwrap();
        set_written(&store.layout().manifest(&ci, &tagged), now - 9 * day);
        let options = Options {
            grace: 60,
            retention: vec![Rule::new(vec!["ci/**".into()], None, None, &[], Some(day)).unwrap()],
            ..Options::default()
        };
        let c = collect(&store, &options, now).unwrap();
        assert_eq!((c.tags_removed, c.manifests_removed), (0, 1), "{c:?}");
        assert_eq!(c.removed.manifests, [format!("ci/app@{}", made[0].1)]);
        for ((name, m), (_, _, removed)) in made.iter().zip(cases) {
            assert_eq!(store.has_manifest(name, m), !removed, "{name}@{m}");
        }
        assert!(store.has_manifest(&ci, &tagged));
        assert_eq!(store.tags(&ci).unwrap().unwrap(), ["v1"]);
    }

    #[test]
    fn untagged_children_of_a_kept_index_and_referrers_of_kept_manifests_stay() {
        use crate::oci::media::OCI_INDEX;
        let store = scratch_store("gc-untagged");
        let repo: RepoName = "multi/arch".parse().unwrap();
        let config = commit_blob(&store, b"{}");
        let child = put_image(&store, "multi/arch", &config, &[]);
        let orphan_config = commit_blob(&store, b"{\"x\":1}");
        let orphan = put_image(&store, "multi/arch", &orphan_config, &[]);
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": crate::oci::media::OCI_MANIFEST, "digest": child.to_string(), "size": 1}],
        }))
        .unwrap();
        let index_digest = Digest::of(crate::oci::Algorithm::Sha256, &index);
        store
            .put_manifest(&repo, &index_digest, OCI_INDEX, &index)
            .unwrap();
        store
            .put_tag(&repo, &"v1".parse().unwrap(), &index_digest)
            .unwrap();
        // A signature whose subject is the child.
        let sig = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": crate::oci::media::OCI_MANIFEST,
            "artifactType": "application/vnd.example.sig",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config.to_string(), "size": 2},
            "layers": [],
            "subject": {"mediaType": crate::oci::media::OCI_MANIFEST, "digest": child.to_string(), "size": 1},
        }))
        .unwrap();
        let sig_digest = Digest::of(crate::oci::Algorithm::Sha256, &sig);
        store
            .put_manifest(&repo, &sig_digest, crate::oci::media::OCI_MANIFEST, &sig)
            .unwrap();
        let options = Options {
            grace: 0,
            delete_untagged: true,
            ..Options::default()
        };
        let c = collect(&store, &options, now_secs() + 5).unwrap();
        assert_eq!(c.manifests_removed, 1, "{c:?}");
        assert!(!store.has_manifest(&repo, &orphan));
        for kept in [&index_digest, &child, &sig_digest] {
            assert!(store.has_manifest(&repo, kept));
        }
        assert!(store.has_blob(&config) && !store.has_blob(&orphan_config));
        assert_clean(&store);
    }

    /// Eight small raw blobs converted together (sharing one pack), two
    /// of them named by a manifest: the pack is mostly dead once the six
    /// others are swept. Returns the store, the kept blobs and the pack.
    fn mostly_dead_pack(name: &str) -> (Store, Vec<Digest>, u64) {
        let store = scratch_store(name);
        let blobs: Vec<Digest> = (0..8)
            .map(|i| commit_blob(&store, &seeded_bytes(100 + i, 900_000)))
            .collect();
        let done = convert_next(&store, &settings(), now_secs(), Queue::Small).unwrap();
        assert_eq!(done.len(), 8);
        let shared: Vec<u64> = Packs::new(store.layout())
            .present()
            .unwrap()
            .into_keys()
            .collect();
        assert_eq!(shared.len(), 1);
        let keep = vec![blobs[0].clone(), blobs[7].clone()];
        let config = commit_blob(&store, b"{}");
        convert(&store, &settings(), &config).unwrap();
        put_image(&store, "r/keep", &config, &[&keep[0], &keep[1]]);
        (store, keep, shared[0])
    }

    #[test]
    fn mostly_dead_packs_are_rewritten_and_what_lives_reads_back() {
        let (store, keep, shared) = mostly_dead_pack("gc-repack");
        let c = collect(&store, &options(0), now_secs() + 5).unwrap();
        assert_eq!(c.blobs_removed, 6, "{c:?}");
        assert_eq!(c.packs_repacked, 1, "{c:?}");
        assert!(c.pack_bytes_written < 4_000_000, "{c:?}");
        assert!(c.stored_bytes_after < c.stored_bytes_before / 2, "{c:?}");
        // Grace 0: the rewritten pack is gone at once.
        assert!(!Packs::new(store.layout())
            .present()
            .unwrap()
            .contains_key(&shared));
        assert!(list_dir(&store.layout().retired_packs())
            .unwrap()
            .is_empty());
        assert_clean(&store);
        for d in &keep {
            assert!(store.has_blob(d));
        }
    }

    #[test]
    fn a_rewritten_pack_stays_for_the_grace_period() {
        let (store, _, shared) = mostly_dead_pack("gc-retire");
        let now = now_secs() + 5;
        // The six others are past their grace an hour from now.
        let later = now + 3600;
        let c = collect(&store, &options(600), later).unwrap();
        assert_eq!((c.blobs_removed, c.packs_repacked), (6, 1), "{c:?}");
        assert!(
            Packs::new(store.layout())
                .present()
                .unwrap()
                .contains_key(&shared),
            "retired, not removed"
        );
        assert_clean_but_unindexed(&store, 1);
        let c = collect(&store, &options(600), later + 60).unwrap();
        assert_eq!(c.packs_removed, 0, "still within its grace: {c:?}");
        let c = collect(&store, &options(600), later + 601).unwrap();
        assert_eq!(c.packs_removed, 1, "{c:?}");
        assert_clean(&store);
    }

    fn assert_clean_but_unindexed(store: &Store, unindexed: u64) {
        let r = check(store, true).unwrap();
        assert!(
            r.bad_blocks == 0 && r.bad_blobs == 0 && r.bad_manifests == 0,
            "{r:?}"
        );
        assert_eq!(r.unindexed_packs, unindexed, "{r:?}");
    }

    #[test]
    fn a_rewrite_cut_off_after_any_step_leaves_a_store_the_next_collection_finishes() {
        for step in 1..=4 {
            let (store, keep, shared) = mostly_dead_pack(&format!("gc-cut-{step}"));
            // What the collection does before the pack phase, then the
            // pack phase's steps up to `step`, then a crash.
            let mut c = Collection::default();
            let pace = Pacer::new(100);
            let live = mark(&store, &options(0), 0, &HashMap::new(), &pace, &mut c).unwrap();
            let now = now_secs() + 5;
            sweep_blobs(&store, &live, now, false, &pace, &mut c).unwrap();
            let frames = live_frames(&store, &HashSet::new()).unwrap();
            let moved = copy_frames(&store, &[shared], &frames, &pace, &mut c).unwrap();
            if step >= 2 {
                let journal = Journal {
                    retired: vec![shared],
                    moved: moved
                        .iter()
                        .flat_map(|(&o, f)| {
                            f.iter().map(move |(&off, to)| [o, off, to.pack, to.offset])
                        })
                        .collect(),
                };
                write_atomic(
                    &store.layout().rewrite_journal(),
                    &serde_json::to_vec(&journal).unwrap(),
                )
                .unwrap();
            }
            if step >= 3 {
                rewrite_index(&store, &BTreeMap::new(), &moved, &pace).unwrap();
            }
            if step >= 4 {
                write_atomic(&store.layout().retired_pack(shared), b"0").unwrap();
                for_each_recipe(&store, &HashSet::new(), |r| {
                    repoint_recipe(&store, r, &moved, &pace)
                })
                .unwrap();
            }
            // Every blob still reads back at each of these points.
            let r = check(&store, true).unwrap();
            assert!(
                r.bad_blocks == 0 && r.bad_blobs == 0 && r.bad_manifests == 0,
                "step {step}: {r:?}"
            );
            let c = collect(&store, &options(0), now + 5).unwrap();
            assert!(c.packs_removed >= 1, "step {step}: {c:?}");
            assert_clean(&store);
            assert_eq!(
                Packs::new(store.layout()).present().unwrap().len(),
                2,
                "step {step}: the config's pack and one with the kept frames"
            );
            for d in &keep {
                assert!(store.has_blob(d));
            }
        }
    }
}
