//! The store's object interface: named byte strings, written whole and
//! atomically, listed by folder. This is the seam the store's records go
//! through so that the code above it does not know where they live. The
//! host keeps them ([`HostObjects`], `wit/objects.wit`): in the local data
//! directory today, in an S3-compatible bucket later (issue 11). A strict
//! in-memory map for tests ([`MemObjects`]) has none of the POSIX
//! properties an object store lacks (no rename, no append, no empty
//! folders, no settable modification time).
//!
//! The interface is what an object store offers without conditional
//! writes (Garage ignores `If-None-Match`, `bench/garage/README.md`):
//! whole reads bounded by a size, atomic durable replace, delete, stat,
//! and a listing of one folder (`ListObjectsV2` with `delimiter=/`).
//! Records that go through it so far: manifests, tags, referrers and
//! repository links (`store.rs`, repositories section), recipes and the
//! conversion records (attempts, failure). Pack frames are read by key
//! through the host's `frames` import (`packs.rs`), which decodes them.
//! Originals, pack writes, the block index, the use stamps, upload sessions
//! and the collection (which still renames blob folders and rewrites
//! recipes as files) use files directly; they move behind this seam one
//! kind at a time.

#[cfg(test)]
use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, ErrorKind};
use std::path::Path;
#[cfg(test)]
use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(test)]
use std::sync::Mutex;

use crate::bindings::blockreg::registry::objects as wit;

/// An object's name: `/`-separated segments relative to the store's root,
/// each non-empty, not starting with `.` (so never a `.tmp-` temporary,
/// `.` or `..`) and made of `[A-Za-z0-9._:+=-]`. Only [`crate::layout`]
/// builds keys, from names, tags and digests already validated, so no
/// request text reaches a path or an object name unchecked.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(String);

/// A key that breaks [`Key`]'s rules.
#[derive(Debug, thiserror::Error)]
#[error("invalid object key {0:?}")]
pub struct InvalidKey(String);

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:+=".contains(&b))
}

impl Key {
    /// Parses a key.
    ///
    /// # Errors
    /// [`InvalidKey`] when a segment breaks the rules.
    pub fn new(s: impl Into<String>) -> Result<Self, InvalidKey> {
        let s = s.into();
        if s.split('/').all(valid_segment) {
            Ok(Self(s))
        } else {
            Err(InvalidKey(s))
        }
    }

    /// This key with `segments` (one or more, `/`-separated) appended.
    ///
    /// # Errors
    /// [`InvalidKey`] when a segment breaks the rules.
    pub fn join(&self, segments: &str) -> Result<Self, InvalidKey> {
        Self::new(format!("{}/{segments}", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last segment.
    pub fn name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a stat or a listing says about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The last segment of its key.
    pub name: String,
    pub size: u64,
    /// When it was last written, in milliseconds since the Unix epoch, by
    /// the store's clock (a file's modification time; an object's
    /// `Last-Modified`).
    pub modified_ms: u64,
}

/// One folder's content, each part sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Objects directly in the folder.
    pub objects: Vec<Info>,
    /// Names of the folders in it that hold objects (a local directory
    /// may also list an empty folder; a bucket has none).
    pub folders: Vec<String>,
}

/// Why an object operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// A bounded read found a bigger object: damage, or a record written
    /// by something else.
    #[error("{key}: {size} bytes, more than the {max} expected")]
    TooLarge { key: Key, size: u64, max: u64 },
    /// The storage did not answer or cannot now (a timeout, a node down):
    /// the same call may succeed later. Requests answer 503.
    #[error("{key}: storage unavailable: {message}")]
    Unavailable { key: Key, message: String },
    /// The backend failed; `source`'s kind says which way (`StorageFull`
    /// for a full disk, which requests answer with 507).
    #[error("{key}: {source}")]
    Io { key: Key, source: io::Error },
}

impl From<ObjectError> for io::Error {
    fn from(e: ObjectError) -> Self {
        let kind = match &e {
            ObjectError::TooLarge { .. } => ErrorKind::InvalidData,
            ObjectError::Unavailable { .. } => ErrorKind::TimedOut,
            ObjectError::Io { source, .. } => source.kind(),
        };
        io::Error::new(kind, e)
    }
}

/// Where the store's records are kept. Every write replaces the whole
/// object atomically and is durable when it returns; a reader sees the old
/// bytes or the new ones, never a mix.
pub trait Objects: fmt::Debug + Send + Sync {
    /// Size and modification time, or `None` for a missing object.
    ///
    /// # Errors
    /// Backend failures.
    fn stat(&self, key: &Key) -> Result<Option<Info>, ObjectError>;

    /// The whole object, or `None` for a missing one.
    ///
    /// # Errors
    /// [`ObjectError::TooLarge`] past `max` bytes; backend failures.
    fn read(&self, key: &Key, max: u64) -> Result<Option<Vec<u8>>, ObjectError>;

    /// Creates or replaces the object.
    ///
    /// # Errors
    /// Backend failures; the old object (or none) is left as it was.
    fn write(&self, key: &Key, bytes: &[u8]) -> Result<(), ObjectError>;

    /// Removes the object. Returns whether it existed (a bucket answers
    /// that with a stat first, so under concurrent deletes two callers may
    /// both see `true`; only the 202-or-404 answer of a DELETE request
    /// depends on it).
    ///
    /// # Errors
    /// Backend failures.
    fn delete(&self, key: &Key) -> Result<bool, ObjectError>;

    /// What is directly in `folder` (a missing folder is empty).
    ///
    /// # Errors
    /// Backend failures.
    fn list(&self, folder: &Key) -> Result<Listing, ObjectError>;
}

/// The objects the host keeps (`wit/objects.wit`): the local data
/// directory or a bucket, whichever the operator configured. A store whose
/// root is below the preopen (the unit tests' `/scratch/<name>`) keeps its
/// objects under that folder's key.
#[derive(Debug, Clone)]
pub struct HostObjects {
    prefix: Option<Key>,
}

impl HostObjects {
    /// The host's objects for a store at `root`: `/data` (the preopen) is
    /// the root of the host's objects, `/data/a/b` their folder `a/b`.
    ///
    /// # Errors
    /// `InvalidInput` for a root that is not an absolute path below a
    /// preopen whose folders are key segments.
    pub fn for_root(root: &Path) -> io::Result<Self> {
        use std::path::Component;
        let invalid = || {
            io::Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "store root {} is not a preopen or a folder in one",
                    root.display()
                ),
            )
        };
        let mut parts = root.components();
        if !matches!(
            (parts.next(), parts.next()),
            (Some(Component::RootDir), Some(Component::Normal(_)))
        ) {
            return Err(invalid());
        }
        let rest: Vec<&str> = parts
            .map(|c| match c {
                Component::Normal(s) => s.to_str().ok_or_else(invalid),
                _ => Err(invalid()),
            })
            .collect::<Result<_, _>>()?;
        let prefix = if rest.is_empty() {
            None
        } else {
            Some(Key::new(rest.join("/")).map_err(|_| invalid())?)
        };
        Ok(Self { prefix })
    }

    /// The host's key of `key` (also what the host's `frames` import
    /// reads).
    pub(crate) fn full(&self, key: &Key) -> String {
        match &self.prefix {
            Some(p) => format!("{p}/{key}"),
            None => key.to_string(),
        }
    }

    fn error(key: &Key, e: wit::Error) -> ObjectError {
        let io = |kind, m: String| ObjectError::Io {
            key: key.clone(),
            source: io::Error::new(kind, m),
        };
        match e {
            // Only `read` is bounded, and it puts its bound in.
            wit::Error::TooLarge(size) => ObjectError::TooLarge {
                key: key.clone(),
                size,
                max: 0,
            },
            wit::Error::Unavailable(message) => ObjectError::Unavailable {
                key: key.clone(),
                message,
            },
            wit::Error::Full(m) => io(ErrorKind::StorageFull, m),
            wit::Error::InvalidKey(m) => io(ErrorKind::InvalidInput, m),
            wit::Error::Other(m) => io(ErrorKind::Other, m),
        }
    }
}

fn from_wit(i: wit::Info) -> Info {
    Info {
        name: i.name,
        size: i.size,
        modified_ms: i.modified_ms,
    }
}

impl Objects for HostObjects {
    fn stat(&self, key: &Key) -> Result<Option<Info>, ObjectError> {
        wit::stat(&self.full(key))
            .map(|i| i.map(from_wit))
            .map_err(|e| Self::error(key, e))
    }

    fn read(&self, key: &Key, max: u64) -> Result<Option<Vec<u8>>, ObjectError> {
        wit::read(&self.full(key), max).map_err(|e| match Self::error(key, e) {
            ObjectError::TooLarge { key, size, .. } => ObjectError::TooLarge { key, size, max },
            other => other,
        })
    }

    fn write(&self, key: &Key, bytes: &[u8]) -> Result<(), ObjectError> {
        wit::write(&self.full(key), bytes).map_err(|e| Self::error(key, e))
    }

    fn delete(&self, key: &Key) -> Result<bool, ObjectError> {
        wit::delete(&self.full(key)).map_err(|e| Self::error(key, e))
    }

    fn list(&self, folder: &Key) -> Result<Listing, ObjectError> {
        let l = wit::list(&self.full(folder)).map_err(|e| Self::error(folder, e))?;
        Ok(Listing {
            objects: l.objects.into_iter().map(from_wit).collect(),
            folders: l.folders,
        })
    }
}

/// Objects in memory, as strict as a bucket: keys only, no folders of
/// their own, modification times from a clock the test moves. For tests
/// of the code above the seam.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct MemObjects {
    objects: Mutex<BTreeMap<String, (Vec<u8>, u64)>>,
    /// The clock, in milliseconds; every write advances it by one so that
    /// later writes are later.
    clock_ms: AtomicU64,
}

#[cfg(test)]
impl MemObjects {
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock on.
    pub fn advance(&self, ms: u64) {
        self.clock_ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// Every key, sorted (for tests' assertions on what was written).
    pub fn keys(&self) -> Vec<String> {
        self.map().keys().cloned().collect()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (Vec<u8>, u64)>> {
        // A panic while the lock was held leaves a map that is still whole
        // (every change is one insert or remove).
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
impl Objects for MemObjects {
    fn stat(&self, key: &Key) -> Result<Option<Info>, ObjectError> {
        Ok(self.map().get(key.as_str()).map(|(b, t)| Info {
            name: key.name().to_string(),
            size: b.len() as u64,
            modified_ms: *t,
        }))
    }

    fn read(&self, key: &Key, max: u64) -> Result<Option<Vec<u8>>, ObjectError> {
        match self.map().get(key.as_str()) {
            Some((b, _)) if b.len() as u64 > max => Err(ObjectError::TooLarge {
                key: key.clone(),
                size: b.len() as u64,
                max,
            }),
            other => Ok(other.map(|(b, _)| b.clone())),
        }
    }

    fn write(&self, key: &Key, bytes: &[u8]) -> Result<(), ObjectError> {
        let t = self.clock_ms.fetch_add(1, Ordering::SeqCst) + 1;
        self.map()
            .insert(key.as_str().to_string(), (bytes.to_vec(), t));
        Ok(())
    }

    fn delete(&self, key: &Key) -> Result<bool, ObjectError> {
        Ok(self.map().remove(key.as_str()).is_some())
    }

    fn list(&self, folder: &Key) -> Result<Listing, ObjectError> {
        let prefix = format!("{}/", folder.as_str());
        let mut out = Listing::default();
        for (k, (b, t)) in self.map().range(prefix.clone()..) {
            let Some(rest) = k.strip_prefix(&prefix) else {
                break;
            };
            match rest.split_once('/') {
                Some((dir, _)) => {
                    if out.folders.last().map(String::as_str) != Some(dir) {
                        out.folders.push(dir.to_string());
                    }
                }
                None => out.objects.push(Info {
                    name: rest.to_string(),
                    size: b.len() as u64,
                    modified_ms: *t,
                }),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_refuse_empty_hidden_and_foreign_segments() {
        for good in ["manifests/a/b/_tags/v1.0", "layers/sha256:ab/recipe.json"] {
            assert!(Key::new(good).is_ok(), "{good}");
        }
        for bad in [
            "", "/abs", "a//b", "a/", "a/..", "a/./b", "a/.tmp-x", "a b", "a\\b", "a/\u{e9}",
        ] {
            assert!(Key::new(bad).is_err(), "{bad:?}");
        }
        let k = Key::new("a").unwrap();
        assert!(k.join("../b").is_err());
        assert_eq!(k.join("b/c").unwrap().name(), "c");
    }

    /// The contract every backend keeps, checked on both.
    fn backend_contract(objects: &dyn Objects) {
        let key = |s: &str| Key::new(s).unwrap();
        assert_eq!(objects.read(&key("r/x"), 10).unwrap(), None);
        assert_eq!(objects.stat(&key("r/x")).unwrap(), None);
        assert!(!objects.delete(&key("r/x")).unwrap());
        objects.write(&key("r/x"), b"first").unwrap();
        objects.write(&key("r/x"), b"second").unwrap();
        assert_eq!(
            objects.read(&key("r/x"), 6).unwrap().as_deref(),
            Some(&b"second"[..])
        );
        assert!(matches!(
            objects.read(&key("r/x"), 5),
            Err(ObjectError::TooLarge {
                size: 6,
                max: 5,
                ..
            })
        ));
        assert_eq!(objects.stat(&key("r/x")).unwrap().unwrap().size, 6);
        objects.write(&key("r/b/deep/y"), b"").unwrap();
        objects.write(&key("r/a"), b"1").unwrap();
        let l = objects.list(&key("r")).unwrap();
        let names: Vec<&str> = l.objects.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["a", "x"]);
        assert_eq!(l.folders, ["b"]);
        assert_eq!(
            objects.list(&key("nothing/here")).unwrap(),
            Listing::default()
        );
        assert!(objects.delete(&key("r/x")).unwrap());
        assert_eq!(objects.read(&key("r/x"), 10).unwrap(), None);
    }

    #[test]
    fn the_hosts_objects_keep_the_contract_in_the_stores_folder() {
        let root = Path::new("/scratch/objects-host");
        let _ = std::fs::remove_dir_all(root);
        let objects = HostObjects::for_root(root).unwrap();
        backend_contract(&objects);
        // The host's local directory: the store's folder under the preopen.
        assert_eq!(std::fs::read(root.join("r/a")).unwrap(), b"1");
        assert!(root.join("r/b/deep/y").is_file());
    }

    #[test]
    fn a_store_root_must_be_a_preopen_or_a_folder_in_one() {
        assert!(HostObjects::for_root(Path::new("/data"))
            .unwrap()
            .prefix
            .is_none());
        let nested = HostObjects::for_root(Path::new("/scratch/a/b")).unwrap();
        assert_eq!(nested.full(&Key::new("x").unwrap()), "a/b/x");
        for bad in ["/", "data", "/scratch/../x", "/scratch/.hidden"] {
            assert!(HostObjects::for_root(Path::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn memory_keeps_the_object_contract_and_has_no_empty_folders() {
        let mem = MemObjects::new();
        backend_contract(&mem);
        let key = |s: &str| Key::new(s).unwrap();
        mem.delete(&key("r/b/deep/y")).unwrap();
        assert_eq!(mem.list(&key("r")).unwrap().folders, Vec::<String>::new());
        let before = mem.stat(&key("r/a")).unwrap().unwrap().modified_ms;
        mem.advance(5_000);
        mem.write(&key("r/a"), b"2").unwrap();
        assert!(mem.stat(&key("r/a")).unwrap().unwrap().modified_ms >= before + 5_000);
    }
}
