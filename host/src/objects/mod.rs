//! The `objects` import (`wit/objects.wit`): the store's records the guest
//! keeps as named objects, and where the host keeps them.
//!
//! One backend per instance, chosen by the host: [`LocalObjects`], the data
//! directory through cap-std (the default, and `blockreg run`'s scratch
//! directory). The S3 backend of issue 11 becomes a second variant of
//! [`Backend`]; the guest does not change.
//!
//! Every key is checked here against the interface's rules
//! ([`valid_key`]) before it reaches a backend, whatever the guest checked:
//! a key is the guest's text, and the host's confinement must not rest on
//! the guest being right.

mod local;

pub(crate) use local::LocalObjects;

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
}

impl Backend {
    /// The key, checked.
    fn checked(key: String) -> Result<String, Error> {
        if valid_key(&key) {
            Ok(key)
        } else {
            Err(Error::InvalidKey(key.chars().take(256).collect()))
        }
    }
}

impl Host for Sandbox {
    async fn stat(&mut self, key: String) -> Result<Option<Info>, Error> {
        let key = Backend::checked(key)?;
        match self.objects() {
            Backend::Local(b) => b.stat(&key),
        }
    }

    async fn read(&mut self, key: String, max: u64) -> Result<Option<Vec<u8>>, Error> {
        let key = Backend::checked(key)?;
        match self.objects() {
            Backend::Local(b) => b.read(&key, max),
        }
    }

    async fn write(&mut self, key: String, bytes: Vec<u8>) -> Result<(), Error> {
        let key = Backend::checked(key)?;
        match self.objects() {
            Backend::Local(b) => b.write(&key, &bytes),
        }
    }

    async fn delete(&mut self, key: String) -> Result<bool, Error> {
        let key = Backend::checked(key)?;
        match self.objects() {
            Backend::Local(b) => b.delete(&key),
        }
    }

    async fn list(&mut self, folder: String) -> Result<Listing, Error> {
        let folder = Backend::checked(folder)?;
        match self.objects() {
            Backend::Local(b) => b.list(&folder),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
