//! The `objects` import (`wit/objects.wit`): the store's records the guest
//! keeps as named objects, and where the host keeps them.
//!
//! One backend per instance, chosen by the host: [`LocalObjects`], the data
//! directory through cap-std (the default, and `blockreg run`'s scratch
//! directory), or [`S3Objects`], a bucket (not selectable yet: blobs do not
//! go through the seam yet). The guest does not know which.
//!
//! Every key is checked here against the interface's rules
//! ([`valid_key`]) before it reaches a backend, whatever the guest checked:
//! a key is the guest's text, and the host's confinement must not rest on
//! the guest being right.

mod local;
mod s3;

pub(crate) use local::LocalObjects;
pub(crate) use s3::S3Objects;
#[cfg(test)]
pub(crate) use s3::S3Settings;

use crate::bindings::objects::{Error, Host, Info, Listing};
use crate::ctx::Sandbox;

/// Whether `key` keeps the interface's rules: `/`-separated segments, each
/// non-empty, not starting with `.` (no `.`, `..` or temporaries) and made
/// of `[A-Za-z0-9._:+=-]`.
pub(crate) fn valid_key(key: &str) -> bool {
    key.split('/').all(|s| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-_:+=".contains(&b))
    })
}

/// Where an instance's objects are.
pub(crate) enum Backend {
    Local(LocalObjects),
    /// Not selectable by the operator yet (see `s3.rs`); tests use it.
    #[cfg_attr(
        not(test),
        allow(
            dead_code,
            reason = "built only by tests until the whole store can live in a bucket"
        )
    )]
    S3(S3Objects),
}

/// The key, checked.
fn checked(key: String) -> Result<String, Error> {
    if valid_key(&key) {
        Ok(key)
    } else {
        Err(Error::InvalidKey(key.chars().take(256).collect()))
    }
}

impl Backend {
    pub(crate) async fn stat(&self, key: String) -> Result<Option<Info>, Error> {
        let key = checked(key)?;
        match self {
            Self::Local(b) => b.stat(&key),
            Self::S3(b) => b.stat(&key).await,
        }
    }

    pub(crate) async fn read(&self, key: String, max: u64) -> Result<Option<Vec<u8>>, Error> {
        let key = checked(key)?;
        match self {
            Self::Local(b) => b.read(&key, max),
            Self::S3(b) => b.read(&key, max).await,
        }
    }

    /// Up to `len` bytes of the object from `offset` (fewer when it ends
    /// before), or none when it does not exist: a pack frame (`frames.rs`).
    pub(crate) async fn read_range(
        &self,
        key: String,
        offset: u64,
        len: u64,
    ) -> Result<Option<Vec<u8>>, Error> {
        let key = checked(key)?;
        match self {
            Self::Local(b) => b.read_range(&key, offset, len),
            Self::S3(b) => b.read_range(&key, offset, len).await,
        }
    }

    /// [`Backend::read_range`] done at once on this thread when the objects
    /// are local files (a blocking read, for a blocking thread); `None` for
    /// a bucket.
    pub(crate) fn read_range_blocking(
        &self,
        key: String,
        offset: u64,
        len: u64,
    ) -> Option<Result<Option<Vec<u8>>, Error>> {
        match self {
            Self::Local(b) => Some(checked(key).and_then(|key| b.read_range(&key, offset, len))),
            Self::S3(_) => None,
        }
    }

    pub(crate) async fn write(&self, key: String, bytes: Vec<u8>) -> Result<(), Error> {
        let key = checked(key)?;
        match self {
            Self::Local(b) => b.write(&key, &bytes),
            Self::S3(b) => b.write(&key, bytes).await,
        }
    }

    pub(crate) async fn delete(&self, key: String) -> Result<bool, Error> {
        let key = checked(key)?;
        match self {
            Self::Local(b) => b.delete(&key),
            Self::S3(b) => b.delete(&key).await,
        }
    }

    pub(crate) async fn list(&self, folder: String) -> Result<Listing, Error> {
        let folder = checked(folder)?;
        match self {
            Self::Local(b) => b.list(&folder),
            Self::S3(b) => b.list(&folder).await,
        }
    }
}

impl Host for Sandbox {
    async fn stat(&mut self, key: String) -> Result<Option<Info>, Error> {
        self.objects().stat(key).await
    }

    async fn read(&mut self, key: String, max: u64) -> Result<Option<Vec<u8>>, Error> {
        self.objects().read(key, max).await
    }

    async fn write(&mut self, key: String, bytes: Vec<u8>) -> Result<(), Error> {
        self.objects().write(key, bytes).await
    }

    async fn delete(&mut self, key: String) -> Result<bool, Error> {
        self.objects().delete(key).await
    }

    async fn list(&mut self, folder: String) -> Result<Listing, Error> {
        self.objects().list(folder).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What every backend keeps, as the guest relies on it.
    async fn contract(b: &Backend, what: &str) {
        let k = |s: &str| s.to_string();
        assert_eq!(b.read(k("r/x"), 10).await.unwrap(), None, "{what}");
        assert_eq!(b.stat(k("r/x")).await.unwrap(), None, "{what}");
        assert!(!b.delete(k("r/x")).await.unwrap(), "{what}");
        b.write(k("r/x"), b"first".to_vec()).await.unwrap();
        b.write(k("r/x"), b"second".to_vec()).await.unwrap();
        assert_eq!(
            b.read(k("r/x"), 6).await.unwrap().as_deref(),
            Some(&b"second"[..]),
            "{what}: the last write wins, whole"
        );
        assert!(
            matches!(b.read(k("r/x"), 5).await, Err(Error::TooLarge(6))),
            "{what}: a bounded read refuses a bigger object"
        );
        assert_eq!(
            b.read_range(k("r/x"), 1, 3).await.unwrap().as_deref(),
            Some(&b"eco"[..]),
            "{what}: a range of the object"
        );
        assert_eq!(
            b.read_range(k("r/x"), 4, 10).await.unwrap().as_deref(),
            Some(&b"nd"[..]),
            "{what}: a range past the end is cut at the end"
        );
        assert_eq!(
            b.read_range(k("r/none"), 0, 4).await.unwrap(),
            None,
            "{what}"
        );
        let info = b.stat(k("r/x")).await.unwrap().unwrap();
        assert_eq!((info.name.as_str(), info.size), ("x", 6), "{what}");
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(
            info.modified_ms.abs_diff(now_ms) < 120_000,
            "{what}: modified {} vs now {now_ms}",
            info.modified_ms
        );
        b.write(k("r/b/deep/y"), Vec::new()).await.unwrap();
        b.write(k("r/a"), b"1".to_vec()).await.unwrap();
        b.write(k("r/sha256:ab"), b"digest-named".to_vec())
            .await
            .unwrap();
        let l = b.list(k("r")).await.unwrap();
        let names: Vec<&str> = l.objects.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["a", "sha256:ab", "x"], "{what}");
        assert_eq!(l.folders, ["b"], "{what}");
        let empty = b.list(k("nothing/here")).await.unwrap();
        assert!(
            empty.objects.is_empty() && empty.folders.is_empty(),
            "{what}"
        );
        assert!(b.delete(k("r/x")).await.unwrap(), "{what}");
        assert_eq!(b.read(k("r/x"), 10).await.unwrap(), None, "{what}");
        assert!(
            matches!(b.read(k("r/../x"), 10).await, Err(Error::InvalidKey(_))),
            "{what}: keys are checked before any backend"
        );
        for key in ["r/a", "r/sha256:ab", "r/b/deep/y"] {
            b.delete(k(key)).await.unwrap();
        }
    }

    #[tokio::test]
    async fn the_data_directory_keeps_the_contract() {
        let tmp = tempfile::tempdir().unwrap();
        contract(
            &Backend::Local(LocalObjects::open(tmp.path()).unwrap()),
            "local",
        )
        .await;
    }

    /// The S3 engines the test command started (`tests/run-all.sh`): a
    /// file of `S3_*` variables per engine, in `BLOCKREG_TEST_S3_ENVS`
    /// (space separated). Each run works under a fresh root directory.
    #[tokio::test]
    async fn real_s3_engines_keep_the_contract() {
        let Ok(envs) = std::env::var("BLOCKREG_TEST_S3_ENVS") else {
            eprintln!("skipped: BLOCKREG_TEST_S3_ENVS names no S3 engine (tests/run-all.sh starts Garage and Ceph)");
            return;
        };
        for file in envs.split_whitespace() {
            let vars: std::collections::HashMap<String, String> = std::fs::read_to_string(file)
                .unwrap()
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| {
                    (
                        k.trim_start_matches("export ").to_string(),
                        v.trim_matches(['\'', '"']).to_string(),
                    )
                })
                .collect();
            let var = |name: &str| {
                vars.get(name)
                    .cloned()
                    .unwrap_or_else(|| panic!("{file}: no {name}"))
            };
            let settings = S3Settings {
                endpoint: var("S3_ENDPOINT"),
                region: var("S3_REGION"),
                bucket: var("S3_BUCKET"),
                root: Some(format!("contract-{}-{}", std::process::id(), now_nanos())),
                access_key: var("S3_ACCESS_KEY"),
                secret_key: var("S3_SECRET_KEY"),
                path_style: true,
            };
            let backend = Backend::S3(S3Objects::new(&settings).unwrap());
            contract(&backend, &settings.endpoint).await;
            eprintln!("s3 contract held on {}", settings.endpoint);
        }
    }

    fn now_nanos() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    }

    #[test]
    fn keys_with_empty_hidden_or_foreign_segments_are_refused() {
        for good in [
            "manifests/a/b/_tags/v1.0",
            "layers/sha256:ab/recipe.json",
            "x",
        ] {
            assert!(valid_key(good), "{good}");
        }
        for bad in [
            "", "/abs", "a//b", "a/", "a/..", "..", "a/.tmp-x", "a b", "a\\b", "\u{e9}",
        ] {
            assert!(!valid_key(bad), "{bad:?}");
        }
    }
}
