//! Turning a finished upload into blocks and a recipe.
//!
//! One pass over the uploaded bytes hashes them for the client's digest and
//! cuts them into blocks. Blocks are content-addressed, so writing them
//! before the digest is verified commits nothing: a blob exists only once
//! its recipe is written, and that happens only after the digest matched.

use std::io::Read;

use crate::block::BlockId;
use crate::chunker::{Chunker, FixedChunker};
use crate::oci::{Digest, ErrorCode, Hasher, RegistryError, Result};
use crate::recipe::{BlockRef, Recipe};
use crate::store::Store;

/// What ingesting one blob did.
#[derive(Debug)]
pub struct Ingested {
    pub recipe: Recipe,
    pub new_blocks: u64,
}

/// Chunks and hashes `data`; commits its recipe if it matches `expected`.
///
/// # Errors
/// `DIGEST_INVALID` if the bytes do not hash to `expected` (nothing is
/// committed), `BLOB_UPLOAD_INVALID` for a block carrying a SHA-1 collision
/// attack, `UNKNOWN` for storage failures.
pub fn ingest(store: &Store, data: &mut dyn Read, expected: &Digest) -> Result<Ingested> {
    let mut hasher = Hasher::new(expected.algorithm());
    let mut chunker = FixedChunker::default();
    let mut blocks = Vec::new();
    let mut new_blocks = 0u64;
    let mut size = 0u64;
    let mut emit = |b: &[u8]| -> Result<()> {
        let id = BlockId::compute(b)
            .map_err(|e| RegistryError::new(ErrorCode::BlobUploadInvalid, e.to_string()))?;
        if store
            .put_block(&id, b)
            .map_err(|e| RegistryError::storage("writing a block", &e))?
        {
            new_blocks += 1;
        }
        blocks.push(BlockRef {
            id,
            len: b.len() as u32,
        });
        Ok(())
    };
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = data
            .read(&mut buf)
            .map_err(|e| RegistryError::storage("reading upload", &e))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
        chunker.feed(&buf[..n], &mut emit)?;
    }
    chunker.finish(&mut emit)?;
    let actual = hasher.finish();
    if &actual != expected {
        return Err(RegistryError::new(
            ErrorCode::DigestInvalid,
            "the uploaded content does not match the digest",
        )
        .with_detail(
            serde_json::json!({"expected": expected.to_string(), "actual": actual.to_string()}),
        ));
    }
    let recipe = Recipe {
        digest: actual,
        size,
        chunker: chunker.name(),
        blocks,
    };
    if !store.has_blob(&recipe.digest) {
        store
            .put_recipe(&recipe)
            .map_err(|e| RegistryError::storage("writing a recipe", &e))?;
    }
    Ok(Ingested { recipe, new_blocks })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Algorithm;
    use crate::test_support::{scratch_store, seeded_bytes};

    fn rebuild(store: &Store, r: &Recipe) -> Vec<u8> {
        r.blocks
            .iter()
            .flat_map(|b| store.read_block(&b.id).unwrap())
            .collect()
    }

    #[test]
    fn ingested_blob_rebuilds_to_its_digest() {
        let store = scratch_store("ingest-roundtrip");
        let data = seeded_bytes(1, 3 * 4096 + 17);
        let d = Digest::of(Algorithm::Sha256, &data);
        let got = ingest(&store, &mut data.as_slice(), &d).unwrap();
        assert_eq!(got.recipe.size, data.len() as u64);
        assert_eq!(got.new_blocks, 4);
        let back = store.recipe(&d).unwrap().unwrap();
        assert_eq!(rebuild(&store, &back), data);
    }

    #[test]
    fn shared_blocks_are_stored_once() {
        let store = scratch_store("ingest-dedup");
        let a = seeded_bytes(2, 8 * 4096);
        let mut b = a.clone();
        b.extend_from_slice(b"tail");
        ingest(
            &store,
            &mut a.as_slice(),
            &Digest::of(Algorithm::Sha256, &a),
        )
        .unwrap();
        let second = ingest(
            &store,
            &mut b.as_slice(),
            &Digest::of(Algorithm::Sha256, &b),
        )
        .unwrap();
        assert_eq!(second.new_blocks, 1, "only the tail block is new");
        assert_eq!(store.usage().unwrap().blocks, 9);
    }

    #[test]
    fn wrong_digest_commits_nothing() {
        let store = scratch_store("ingest-wrong");
        let data = seeded_bytes(3, 5000);
        let wrong = Digest::of(Algorithm::Sha256, b"something else");
        let err = ingest(&store, &mut data.as_slice(), &wrong).unwrap_err();
        assert_eq!(err.code, ErrorCode::DigestInvalid);
        assert!(!store.has_blob(&wrong));
        assert!(!store.has_blob(&Digest::of(Algorithm::Sha256, &data)));
    }

    #[test]
    fn empty_blob_has_an_empty_recipe() {
        let store = scratch_store("ingest-empty");
        let d = Digest::of(Algorithm::Sha256, b"");
        let got = ingest(&store, &mut &b""[..], &d).unwrap();
        assert!(got.recipe.blocks.is_empty());
        assert!(store.has_blob(&d));
    }

    #[test]
    fn sha512_blobs_are_verified_with_sha512() {
        let store = scratch_store("ingest-sha512");
        let data = seeded_bytes(4, 10_000);
        let d = Digest::of(Algorithm::Sha512, &data);
        ingest(&store, &mut data.as_slice(), &d).unwrap();
        assert!(store.has_blob(&d));
    }
}
