//! A bit-exact replica of klauspost/pgzip's gzip writer (the parallel gzip
//! of containers/image: what podman, buildah and skopeo write when they
//! compress a layer), over klauspost/compress's `flate`.
//!
//! pgzip cuts the input into blocks of 1 MiB and compresses each on its own
//! goroutine with a fresh `flate` writer primed with the previous block's
//! last 16 KiB (`ResetDict`), ending every block with a sync flush (an
//! empty stored block) and the last one, compressed at `Close`, with the
//! final empty stored block. The result does not depend on how many
//! goroutines ran or how the input was split into writes.
//!
//! klauspost/compress's fast levels (1–6; pgzip's default, `-1`, is level
//! 5) and block writer are the encoder Go 1.27 took into its standard
//! library, so each block is compressed by [`crate::goflate`]'s encoder in
//! the variant of the klauspost/compress version that wrote the stream
//! ([`Klauspost`]). Checked byte for byte at every level the replica offers
//! (stored, HuffmanOnly and 1–6; levels 7–9 prime their hash chains
//! differently and are not offered): against pgzip 1.2.5 with
//! klauspost/compress 1.15.12 (Debian 12's skopeo, podman and buildah link
//! these) and against pgzip's framing over Go 1.27.3's `compress/flate`
//! (= klauspost/compress from 1.18.2) in the tests; once by hand against
//! pgzip 1.2.6 with klauspost/compress 1.16.7, 1.17.11, 1.18.0–1.18.2,
//! 1.18.7 and 1.19.1.

use crate::goflate::{self, Klauspost};
use crate::gozip::Deflate;

/// pgzip's block size (`defaultBlockSize`).
pub const BLOCK: usize = 1 << 20;
/// The previous block's tail that primes the next (`tailSize`).
const TAIL: usize = 16 << 10;

/// A level pgzip accepts that this replica does not reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("pgzip replica: level {0} is not reproduced (want -2, -1 or 0..=6)")]
pub struct UnsupportedLevel(pub i32);

/// The `flate` level pgzip compresses at for `level` (`-1` is 5,
/// klauspost's default).
///
/// # Errors
/// [`UnsupportedLevel`] for 7–9 or anything pgzip refuses.
fn flate_level(level: i32) -> Result<i32, UnsupportedLevel> {
    match level {
        -1 => Ok(5),
        -2 | 0..=6 => Ok(level),
        _ => Err(UnsupportedLevel(level)),
    }
}

/// One block of a pgzip stream, which compresses on its own: pgzip's
/// blocks depend on nothing but their content and the previous block's
/// tail, so they may be compressed in any order or all at once (pgzip's
/// goroutines; the host's threads when it recreates such a stream).
#[derive(Debug, Clone)]
pub struct Block {
    /// The last [`TAIL`] bytes of the previous block, if it was longer.
    tail: Vec<u8>,
    /// At most [`BLOCK`] bytes.
    data: Vec<u8>,
    /// Whether the stream ends with it (pgzip's `Close`).
    last: bool,
}

impl Block {
    /// Its content bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether it holds no content (the last block may not).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// pgzip's `compressBlock` over klauspost/compress `version` at
    /// `level`: a fresh `flate` writer primed with the tail, the block, a
    /// sync flush and, for the last block, the final empty stored block;
    /// appended to `out`.
    ///
    /// # Errors
    /// [`UnsupportedLevel`] for a level [`Encoder::new`] refuses.
    pub fn compress(
        &self,
        version: Klauspost,
        level: i32,
        out: &mut Vec<u8>,
    ) -> Result<(), UnsupportedLevel> {
        let mut enc = goflate::Encoder::klauspost(version, flate_level(level)?)
            .map_err(|_| UnsupportedLevel(level))?;
        enc.fill_window(&self.tail);
        enc.write(&self.data, out);
        enc.sync_flush(out);
        if self.last {
            enc.finish(out);
        }
        Ok(())
    }
}

/// Cuts a stream's content into pgzip's blocks (`compressCurrent`).
#[derive(Debug, Default)]
pub struct Cutter {
    /// The block being filled.
    block: Vec<u8>,
    /// The tail the next block is primed with.
    tail: Vec<u8>,
}

impl Cutter {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next `data`; returns the blocks it completed, in order.
    pub fn push(&mut self, mut data: &[u8]) -> Vec<Block> {
        let mut done = Vec::new();
        while !data.is_empty() {
            let n = data.len().min(BLOCK - self.block.len());
            self.block.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.block.len() == BLOCK {
                done.push(self.cut(false));
            }
        }
        done
    }

    /// The last block, possibly empty: the stream ends with it.
    pub fn finish(&mut self) -> Block {
        self.cut(true)
    }

    fn cut(&mut self, last: bool) -> Block {
        let data = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK));
        let tail = std::mem::take(&mut self.tail);
        if data.len() > TAIL {
            self.tail.extend_from_slice(&data[data.len() - TAIL..]);
        }
        Block { tail, data, last }
    }
}

/// Streaming raw DEFLATE output of pgzip at one level (the gzip framing is
/// Go's: [`crate::gozip::GzipEncoder`]): [`Cutter`]'s blocks compressed one
/// after the other.
pub struct Encoder {
    version: Klauspost,
    level: i32,
    cutter: Cutter,
}

impl Encoder {
    /// pgzip over klauspost/compress `version` at `level` (`-2`, `-1` = 5,
    /// `0..=6`).
    ///
    /// # Errors
    /// [`UnsupportedLevel`] for 7–9 or anything pgzip refuses.
    pub fn new(version: Klauspost, level: i32) -> Result<Self, UnsupportedLevel> {
        flate_level(level)?;
        Ok(Self {
            version,
            level,
            cutter: Cutter::new(),
        })
    }

    fn compress(&self, block: &Block, out: &mut Vec<u8>) {
        block
            .compress(self.version, self.level, out)
            .expect("levels are checked in new");
    }
}

impl crate::gozip::Deflate for Encoder {
    /// Compresses `data`, appending finished blocks to `out`.
    fn write(&mut self, data: &[u8], out: &mut Vec<u8>) {
        for block in self.cutter.push(data) {
            self.compress(&block, out);
        }
    }

    /// Compresses the last (possibly empty) block and ends the stream
    /// (pgzip's `Close`).
    fn finish(mut self, out: &mut Vec<u8>) {
        let last = self.cutter.finish();
        self.compress(&last, out);
    }
}

/// The whole gzip member `pgzip.NewWriterLevel(w, level)` + `Write(plain)`
/// + `Close()` writes over klauspost/compress `version`.
///
/// # Panics
/// If `level` is not one [`Encoder::new`] accepts.
pub fn gzip_member(version: Klauspost, level: i32, plain: &[u8]) -> Vec<u8> {
    let enc = Encoder::new(version, level).expect("pgzip::gzip_member: unsupported level");
    let mut member = crate::gozip::member(enc, level, plain);
    member[4..8].copy_from_slice(&MTIME);
    member
}

/// The MTIME field of every pgzip header: `uint32(time.Time{}.Unix())`, the
/// zero `time.Time` (year 1) in seconds since 1970, truncated — pgzip does
/// not special-case an unset modification time as Go's gzip does.
pub const MTIME: [u8; 4] = 0x886e_0900_u32.to_le_bytes();

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gozip::testing::*;

    /// Every level the replica offers (`-1` is pgzip's default).
    const LEVELS: &[i32] = &[-1, 1, 2, 3, 4, 5, 6, 0, -2];

    /// Inputs around pgzip's block and tail sizes, and content that takes
    /// each block kind (stored, Huffman-only, dynamic).
    fn fixtures() -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<(String, Vec<u8>)> = [
            0,
            1,
            100,
            TAIL,
            TAIL + 1,
            BLOCK - 1,
            BLOCK,
            BLOCK + 1,
            BLOCK + TAIL,
            2 * BLOCK + TAIL + 1,
        ]
        .into_iter()
        .map(|n| (format!("mixed_{n}"), mixed(n as u64, n)))
        .collect();
        v.push((
            "text_3.5mib".into(),
            text(&mut Rng(2), 3 * BLOCK + BLOCK / 2),
        ));
        v.push(("random_1.5mib".into(), Rng(3).bytes(BLOCK + BLOCK / 2)));
        v.push((
            "barely_compressible_2.2mib".into(),
            barely_compressible(4, 2 * BLOCK + 200_000),
        ));
        v.push(("zeros_1.2mib".into(), vec![0; BLOCK + BLOCK / 5]));
        v
    }

    const VERSIONS: [Klauspost; 3] = [Klauspost::V1_15, Klauspost::V1_18_0, Klauspost::V1_18_2];

    #[test]
    fn pgzip_of_klauspost_1_15_every_level_bit_exact() {
        // Debian 12's pgzip 1.2.5 over klauspost/compress 1.15.12.
        compare_with_filter(
            "BLOCKREG_PGZIP_GZIP",
            "pgzip",
            LEVELS,
            fixtures(),
            |level, data| gzip_member(Klauspost::V1_15, level, data),
        );
    }

    #[test]
    fn pgzip_of_klauspost_1_18_2_every_level_bit_exact() {
        // pgzip's framing over Go 1.27.3's compress/flate, which is
        // klauspost/compress's from 1.18.2 (tests/e2e/go_gzip.py).
        compare_with_filter(
            "BLOCKREG_PGZIP_GO127_GZIP",
            "pgzip-go1.27.3",
            LEVELS,
            fixtures(),
            |level, data| gzip_member(Klauspost::V1_18_2, level, data),
        );
    }

    #[test]
    fn klauspost_1_18_0_differs_from_1_15_at_level_4_only() {
        let data = mixed(12, BLOCK + BLOCK / 2);
        for &level in LEVELS {
            let old = gzip_member(Klauspost::V1_15, level, &data);
            let new = gzip_member(Klauspost::V1_18_0, level, &data);
            assert_eq!(old == new, level != 4, "level {level}");
        }
    }

    #[test]
    fn output_independent_of_write_boundaries() {
        let data = mixed(9, 2 * BLOCK + 12_345);
        for version in VERSIONS {
            let whole = crate::gozip::raw(Encoder::new(version, -1).unwrap(), &data);
            let mut rng = Rng(10);
            let out = raw_in_pieces(Encoder::new(version, -1).unwrap(), &data, || {
                1 + rng.below(300_000) as usize
            });
            assert_eq!(first_diff(&out, &whole), None, "{version:?}");
        }
    }

    #[test]
    fn every_level_inflates_to_its_input() {
        for (name, data) in fixtures() {
            for (&level, version) in LEVELS.iter().flat_map(|l| VERSIONS.map(|v| (l, v))) {
                let member = gzip_member(version, level, &data);
                assert_eq!(member[4..8], MTIME, "{name}");
                let mut plain = Vec::new();
                std::io::Read::read_to_end(
                    &mut flate2::read::GzDecoder::new(&member[..]),
                    &mut plain,
                )
                .unwrap();
                assert!(plain == data, "{name} level {level} {version:?}");
            }
        }
    }

    #[test]
    fn levels_seven_to_nine_are_refused() {
        for level in [7, 8, 9, 10, -3] {
            assert_eq!(
                Encoder::new(Klauspost::V1_15, level).err(),
                Some(UnsupportedLevel(level)),
                "{level}"
            );
        }
    }

    #[test]
    fn each_block_ends_with_a_sync_flush() {
        // pgzip's readers (and ours) rely on nothing of the sort, but the
        // empty stored block after each 1 MiB is what marks a pgzip stream.
        let member = gzip_member(Klauspost::V1_15, -1, &text(&mut Rng(5), 2 * BLOCK + 10));
        let marks = member
            .windows(4)
            .filter(|w| *w == [0, 0, 0xff, 0xff])
            .count();
        assert!(marks >= 3, "{marks} sync markers");
    }
}
