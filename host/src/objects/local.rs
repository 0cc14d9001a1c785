//! Objects as files under a directory opened with cap-std: a key is a
//! relative path below it and nothing outside it can be reached (cap-std
//! refuses `..` and absolute paths, and symlinks that leave the directory).
//!
//! Writes are what every store file's are (the guest's `write_atomic`): a
//! `.tmp-` sibling written and fsynced, then renamed over the key, so a
//! reader or a crash sees the old object or the new one. Listings skip
//! `.tmp-` names, as the guest's do.

use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use cap_std::fs::{Dir, Metadata};

use crate::bindings::objects::{Error, Info, Listing};

/// The objects of one store directory.
pub(crate) struct LocalObjects {
    dir: Dir,
}

fn error(key: &str, e: std::io::Error) -> Error {
    match e.kind() {
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => Error::Full(format!("{key}: {e}")),
        _ => Error::Other(format!("{key}: {e}")),
    }
}

fn info(name: String, meta: &Metadata) -> Info {
    let modified_ms = meta
        .modified()
        .ok()
        .and_then(|t| t.into_std().duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64);
    Info {
        name,
        size: meta.len(),
        modified_ms,
    }
}

/// The last segment of a key.
fn name_of(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// A name for a temporary file no other writer of this directory uses at
/// the same time: the process id and a counter of this process.
fn temporary_name(name: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        ".tmp-{name}-{:x}-{:x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl LocalObjects {
    /// Opens the directory the store's objects are kept in.
    ///
    /// # Errors
    /// When it cannot be opened.
    pub(crate) fn open(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            dir: Dir::open_ambient_dir(path, cap_std::ambient_authority())?,
        })
    }

    pub(crate) fn stat(&self, key: &str) -> Result<Option<Info>, Error> {
        match self.dir.metadata(key) {
            Ok(m) if m.is_file() => Ok(Some(info(name_of(key).to_string(), &m))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(error(key, e)),
        }
    }

    pub(crate) fn read(&self, key: &str, max: u64) -> Result<Option<Vec<u8>>, Error> {
        let file = match self.dir.open(key) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(error(key, e)),
        };
        let mut bytes = Vec::new();
        // One byte past the bound tells "too large" without reading it all.
        (&file)
            .take(max.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| error(key, e))?;
        if bytes.len() as u64 > max {
            let size = file.metadata().map_or(max + 1, |m| m.len());
            return Err(Error::TooLarge(size));
        }
        Ok(Some(bytes))
    }

    pub(crate) fn read_range(
        &self,
        key: &str,
        offset: u64,
        len: u64,
    ) -> Result<Option<Vec<u8>>, Error> {
        let mut file = match self.dir.open(key) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(error(key, e)),
        };
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.take(len).read_to_end(&mut bytes))
            .map_err(|e| error(key, e))?;
        Ok(Some(bytes))
    }

    pub(crate) fn write(&self, key: &str, bytes: &[u8]) -> Result<(), Error> {
        let (folder, name) = match key.rsplit_once('/') {
            Some((folder, name)) => (Some(folder), name),
            None => (None, key),
        };
        if let Some(folder) = folder {
            self.dir.create_dir_all(folder).map_err(|e| error(key, e))?;
        }
        let tmp = match folder {
            Some(folder) => format!("{folder}/{}", temporary_name(name)),
            None => temporary_name(name),
        };
        let written = (|| {
            let mut f = self.dir.create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            drop(f);
            self.dir.rename(&tmp, &self.dir, key)
        })();
        written.map_err(|e| {
            let _ = self.dir.remove_file(&tmp);
            error(key, e)
        })
    }

    pub(crate) fn delete(&self, key: &str) -> Result<bool, Error> {
        match self.dir.remove_file(key) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(error(key, e)),
        }
    }

    pub(crate) fn list(&self, folder: &str) -> Result<Listing, Error> {
        let entries = match self.dir.read_dir(folder) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Ok(Listing {
                    objects: Vec::new(),
                    folders: Vec::new(),
                })
            }
            Err(e) => return Err(error(folder, e)),
        };
        let mut objects = Vec::new();
        let mut folders = Vec::new();
        for entry in entries {
            // Entries removed while the folder is read are not listed.
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(error(folder, e)),
            };
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.starts_with(".tmp-") {
                continue;
            }
            match entry.metadata() {
                Ok(m) if m.is_dir() => folders.push(name),
                Ok(m) if m.is_file() => objects.push(info(name, &m)),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(error(folder, e)),
            }
        }
        objects.sort_by(|a, b| a.name.cmp(&b.name));
        folders.sort();
        Ok(Listing { objects, folders })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_whole_objects_and_leave_no_temporaries() {
        let tmp = tempfile::tempdir().unwrap();
        let objects = LocalObjects::open(tmp.path()).unwrap();
        objects.write("a/b/x", b"first").unwrap();
        objects.write("a/b/x", b"second").unwrap();
        assert_eq!(objects.read("a/b/x", 6).unwrap().unwrap(), b"second");
        assert!(matches!(objects.read("a/b/x", 5), Err(Error::TooLarge(6))));
        let names: Vec<_> = std::fs::read_dir(tmp.path().join("a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["x"]);
        let listing = objects.list("a").unwrap();
        assert_eq!(listing.folders, ["b"]);
        assert!(listing.objects.is_empty());
        assert_eq!(objects.list("a/b").unwrap().objects[0].size, 6);
        assert!(objects.delete("a/b/x").unwrap());
        assert!(!objects.delete("a/b/x").unwrap());
        assert_eq!(objects.stat("a/b/x").unwrap(), None);
    }

    #[test]
    fn nothing_outside_the_directory_is_reached() {
        let outer = tempfile::tempdir().unwrap();
        std::fs::write(outer.path().join("secret"), b"s").unwrap();
        std::fs::create_dir(outer.path().join("store")).unwrap();
        std::os::unix::fs::symlink("../secret", outer.path().join("store/link")).unwrap();
        let objects = LocalObjects::open(&outer.path().join("store")).unwrap();
        // The interface's rules refuse `..` before this; cap-std refuses it
        // again, and a symlink out as well.
        assert!(objects.read("../secret", 10).is_err());
        assert!(objects.read("link", 10).is_err());
    }
}
