//! Block identifiers: the SHA-1 of a block's bytes, computed with collision
//! detection (the counter-cryptanalysis git has used since 2017). A block
//! whose hash shows a collision attack is refused, never stored, so a crafted
//! pair of blocks cannot make one layer rebuild with another's bytes.

use std::fmt;
use std::str::FromStr;

use sha1_checked::{CollisionResult, Sha1};

/// A block's SHA-1, as 20 bytes; its hex form names the block's file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockId([u8; 20]);

/// The block's bytes carry a SHA-1 collision attack.
#[derive(Debug, thiserror::Error)]
#[error("SHA-1 collision attack detected in a block; refusing to store it")]
pub struct CollisionDetected;

impl BlockId {
    /// Hashes `data`.
    ///
    /// # Errors
    /// [`CollisionDetected`] when the input is a SHA-1 collision attempt.
    pub fn compute(data: &[u8]) -> Result<Self, CollisionDetected> {
        match Sha1::try_digest(data) {
            CollisionResult::Ok(out) => Ok(Self(out.into())),
            CollisionResult::Mitigated(_) | CollisionResult::Collision(_) => Err(CollisionDetected),
        }
    }

    /// The 20 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }

    /// From 20 raw bytes (as stored in index records).
    pub fn from_bytes(bytes: [u8; 20]) -> Self {
        Self(bytes)
    }

    pub fn to_hex(&self) -> String {
        crate::hex::encode(&self.0)
    }
}

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl FromStr for BlockId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = crate::hex::decode(s).ok_or_else(|| format!("block id is not hex: {s:?}"))?;
        let arr: [u8; 20] = bytes
            .try_into()
            .map_err(|_| format!("block id is not 40 hex digits: {s:?}"))?;
        Ok(Self(arr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha1::Digest as _;

    #[test]
    fn block_id_is_plain_sha1_for_ordinary_data() {
        assert_eq!(
            BlockId::compute(b"abc").unwrap().to_hex(),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let plain = crate::hex::encode(&sha1::Sha1::digest(&data));
        assert_eq!(BlockId::compute(&data).unwrap().to_hex(), plain);
    }

    #[test]
    fn block_id_parses_only_40_lowercase_hex() {
        let id = BlockId::compute(b"x").unwrap();
        assert_eq!(id.to_hex().parse::<BlockId>().unwrap(), id);
        assert!("abc".parse::<BlockId>().is_err());
        assert!("../../../../etc/passwd".parse::<BlockId>().is_err());
    }
}
