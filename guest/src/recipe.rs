//! Recipes: the ordered list of blocks that rebuilds one blob, stored as
//! `layers/<digest>/recipe.json`. Pure code; the store reads and writes them.
//!
//! Format (version 1):
//! `{"version":1,"digest":"sha256:…","size":N,"chunker":"fixed-4096","blocks":[["<sha1 hex>",len],…]}`.
//! Every block carries its length, so a reader needs no knowledge of the
//! chunker that wrote the recipe: any guest can rebuild any blob.

use serde::{Deserialize, Serialize};

use crate::block::BlockId;
use crate::oci::Digest;

/// The recipe format version this guest writes and reads.
pub const RECIPE_VERSION: u32 = 1;

/// One block of a blob, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRef {
    pub id: BlockId,
    pub len: u32,
}

/// How to rebuild one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    pub digest: Digest,
    pub size: u64,
    pub chunker: String,
    pub blocks: Vec<BlockRef>,
}

#[derive(Serialize, Deserialize)]
struct RawRecipe {
    version: u32,
    digest: String,
    size: u64,
    chunker: String,
    blocks: Vec<(String, u32)>,
}

/// Why a recipe file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("recipe is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported recipe version {0}")]
    Version(u32),
    #[error("recipe is inconsistent: {0}")]
    Inconsistent(String),
}

impl Recipe {
    /// Serializes to the on-disk JSON form.
    pub fn to_json(&self) -> Vec<u8> {
        let raw = RawRecipe {
            version: RECIPE_VERSION,
            digest: self.digest.to_string(),
            size: self.size,
            chunker: self.chunker.clone(),
            blocks: self.blocks.iter().map(|b| (b.id.to_hex(), b.len)).collect(),
        };
        serde_json::to_vec(&raw).expect("a recipe always serializes")
    }

    /// Parses and checks the on-disk form.
    ///
    /// # Errors
    /// A [`RecipeError`] when the JSON is malformed, of another version, or
    /// its block lengths do not add up to its size.
    pub fn from_json(bytes: &[u8]) -> Result<Self, RecipeError> {
        let raw: RawRecipe = serde_json::from_slice(bytes)?;
        if raw.version != RECIPE_VERSION {
            return Err(RecipeError::Version(raw.version));
        }
        let digest = raw
            .digest
            .parse()
            .map_err(|_| RecipeError::Inconsistent(format!("bad digest {:?}", raw.digest)))?;
        let blocks = raw
            .blocks
            .into_iter()
            .map(|(id, len)| {
                Ok(BlockRef {
                    id: id.parse().map_err(RecipeError::Inconsistent)?,
                    len,
                })
            })
            .collect::<Result<Vec<_>, RecipeError>>()?;
        let total: u64 = blocks.iter().map(|b| u64::from(b.len)).sum();
        if total != raw.size {
            return Err(RecipeError::Inconsistent(format!(
                "blocks add up to {total} bytes, recipe says {}",
                raw.size
            )));
        }
        Ok(Self {
            digest,
            size: raw.size,
            chunker: raw.chunker,
            blocks,
        })
    }

    /// The blocks covering bytes `start..end` (end exclusive), each with the
    /// part of it that falls in the range: `(block, skip, take)`.
    pub fn slice(&self, start: u64, end: u64) -> Vec<(BlockRef, usize, usize)> {
        let mut out = Vec::new();
        let mut pos = 0u64;
        for b in &self.blocks {
            let len = u64::from(b.len);
            let (lo, hi) = (pos, pos + len);
            pos = hi;
            if hi <= start {
                continue;
            }
            if lo >= end {
                break;
            }
            let skip = start.saturating_sub(lo);
            let take = end.min(hi) - lo - skip;
            out.push((*b, skip as usize, take as usize));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Algorithm;

    fn sample() -> Recipe {
        let blocks = [b"aaaa".as_slice(), b"bbbb", b"cc"]
            .iter()
            .map(|b| BlockRef {
                id: BlockId::compute(b).unwrap(),
                len: b.len() as u32,
            })
            .collect();
        Recipe {
            digest: Digest::of(Algorithm::Sha256, b"aaaabbbbcc"),
            size: 10,
            chunker: "fixed-4".into(),
            blocks,
        }
    }

    #[test]
    fn recipe_round_trips_through_json() {
        let r = sample();
        assert_eq!(Recipe::from_json(&r.to_json()).unwrap(), r);
    }

    #[test]
    fn recipe_whose_blocks_do_not_add_up_is_refused() {
        let mut v: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
        v["size"] = 11.into();
        let err = Recipe::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(matches!(err, RecipeError::Inconsistent(_)));
        v["size"] = 10.into();
        v["version"] = 9.into();
        let err = Recipe::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(matches!(err, RecipeError::Version(9)));
    }

    #[test]
    fn slice_picks_the_blocks_of_a_range() {
        let r = sample();
        let parts: Vec<(usize, usize)> = r.slice(2, 9).iter().map(|p| (p.1, p.2)).collect();
        assert_eq!(parts, [(2, 2), (0, 4), (0, 1)]);
        assert_eq!(r.slice(0, 10).len(), 3);
        assert_eq!(r.slice(4, 8).len(), 1);
        assert!(r.slice(10, 10).is_empty());
    }
}
