//! Committing a finished upload at stream speed.
//!
//! One pass hashes the uploaded bytes; if they match the client's digest the
//! upload's file is fsynced and renamed to the blob's `original`, and the push
//! is answered. Cutting the blob into blocks — slow for compressed layers,
//! whose compression is analysed so it can be recreated bit for bit — happens
//! later, in the background (`convert.rs`). A blob exists from the moment its
//! original is renamed in; nothing is visible before its digest matched.

use std::io::Read;

use crate::oci::{Digest, ErrorCode, Hasher, RegistryError, Result};
use crate::store::{HeldUpload, Store};

/// Hashes everything `data` yields.
///
/// # Errors
/// `UNKNOWN` when reading fails.
pub fn hash_all(data: &mut dyn Read, expected: &Digest) -> Result<(Digest, u64)> {
    Hasher::digest_reader(expected.algorithm(), data)
        .map_err(|e| RegistryError::storage("reading upload", &e))
}

/// Verifies a held upload session's bytes against `expected` and commits
/// them as that blob, removing the session. Returns the blob's size. Bytes
/// that do not match are dropped with the session: they can never commit.
///
/// # Errors
/// `DIGEST_INVALID` if the bytes do not hash to `expected` (nothing is
/// committed), `UNKNOWN` for storage failures (the session is kept).
pub fn commit_upload(store: &Store, held: HeldUpload, expected: &Digest) -> Result<u64> {
    let mut data = held
        .open()
        .map_err(|e| RegistryError::storage("opening upload data", &e))?;
    let (actual, size) = hash_all(&mut data, expected)?;
    drop(data);
    if &actual != expected {
        let _ = held.cancel();
        return Err(RegistryError::new(
            ErrorCode::DigestInvalid,
            "the uploaded content does not match the digest",
        )
        .with_detail(
            serde_json::json!({"expected": expected.to_string(), "actual": actual.to_string()}),
        ));
    }
    store
        .commit_upload(held, expected)
        .map_err(|e| RegistryError::storage("committing a blob", &e))?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Algorithm;
    use crate::test_support::{scratch_store, seeded_bytes};

    fn upload(store: &Store, data: &[u8]) -> HeldUpload {
        let id = store.create_upload(&"t/r".parse().unwrap()).unwrap();
        let mut held = crate::test_support::hold(store, &id);
        held.append(&mut &data[..], None).unwrap();
        held
    }

    #[test]
    fn committed_blob_is_its_original_until_converted() {
        let store = scratch_store("ingest-commit");
        let data = seeded_bytes(1, 3 * 4096 + 17);
        let d = Digest::of(Algorithm::Sha256, &data);
        let id = upload(&store, &data);
        assert_eq!(commit_upload(&store, id, &d).unwrap(), data.len() as u64);
        assert!(store.has_blob(&d));
        assert_eq!(store.blob_size(&d).unwrap(), Some(data.len() as u64));
        assert_eq!(std::fs::read(store.original_path(&d)).unwrap(), data);
        assert_eq!(store.pending_blobs().unwrap(), vec![d]);
    }

    #[test]
    fn wrong_digest_commits_nothing() {
        let store = scratch_store("ingest-wrong");
        let data = seeded_bytes(3, 5000);
        let wrong = Digest::of(Algorithm::Sha256, b"something else");
        let id = upload(&store, &data);
        let err = commit_upload(&store, id, &wrong).unwrap_err();
        assert_eq!(err.code, ErrorCode::DigestInvalid);
        assert!(!store.has_blob(&wrong));
        assert!(!store.has_blob(&Digest::of(Algorithm::Sha256, &data)));
    }

    #[test]
    fn sha512_blobs_are_verified_with_sha512() {
        let store = scratch_store("ingest-sha512");
        let data = seeded_bytes(4, 10_000);
        let d = Digest::of(Algorithm::Sha512, &data);
        let id = upload(&store, &data);
        commit_upload(&store, id, &d).unwrap();
        assert!(store.has_blob(&d));
    }
}
