//! blockreg's pure logic, shared by the guest and testable natively: no
//! I/O, no WASI, no host imports. Bytes and values go in, values and
//! callbacks come out; the guest does the reading and writing.
//!
//! Where to look: `oci/` (digests, names, media types, error codes),
//! `chunker.rs` (fixed-size blocks), `tarchunk.rs` (cuts at tar members),
//! `deflate.rs` (gzip analysis and bit-exact recreation), `zstd.rs` (the same
//! for zstd), `varint.rs`, `recipe.rs` (how a
//! blob is rebuilt from blocks), `block.rs` (block ids) and `hex.rs`.

pub mod block;
pub mod chunker;
pub mod deflate;
pub mod goflate;
pub mod goflate126;
pub mod gozip;
pub mod hex;
pub mod oci;
pub mod pgzip;
#[cfg(test)]
mod proptests;
pub mod recipe;
pub mod replica;
mod rfc1951;
pub mod tarchunk;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
pub mod varint;
pub mod zstd;
