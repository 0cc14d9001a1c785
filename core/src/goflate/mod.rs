//! A bit-exact replica of the DEFLATE encoder in Go 1.27's `compress/flate`
//! (and the gzip framing of `compress/gzip`).
//!
//! Go 1.27 replaced its encoder with one derived from klauspost/compress;
//! preflate cannot model its output, so recreating a layer it compressed
//! would need large correction data. This module re-implements the
//! algorithm — written in Rust from the BSD-licensed Go 1.27.3 sources
//! (`src/compress/flate/{deflate,deflatefast,level1..level6,
//! huffman_bit_writer,huffman_code,token}.go`, `src/compress/gzip/gzip.go`)
//! — so that the plain text alone reproduces the compressed bytes.
//!
//! Output is what `flate.NewWriter(w, level)` followed by any sequence of
//! `Write` calls and `Close` produces: Go fills a fixed-size window before
//! each compression step, so the result does not depend on how the input is
//! split into writes (only `Flush` would change it, and it is not offered).
//!
//! * `-2` HuffmanOnly: 32 KiB windows, literal-only Huffman blocks.
//! * `0`: stored blocks of 65535 bytes.
//! * `1..=6` (and `-1` = 6): one of six "fast" matchers per 65535-byte
//!   window ([`fast`]), with history reaching back into earlier windows.
//! * `7..=9`: hash-chain lazy matching over a sliding window ([`lazy`]).
//!
//! All levels share the block writer ([`huffman`]) that picks stored, fixed
//! or dynamic blocks and may keep one dynamic table open across windows.
//! Memory is bounded (≈1.6 MiB at most), independent of the input size.
//!
//! The replica covers Go's `compress/flate` of 1.27.x only; Go ≤ 1.26
//! used a different encoder.

mod fast;
mod huffman;
mod lazy;

use fast::FastEnc;
use huffman::{BitWriter, Tokens, MAX_STORE_BLOCK_SIZE};
use lazy::{Lazy, Sink};

/// Versions of klauspost/compress whose `flate` encoders differ (at levels
/// `-2..=6`), oldest first. Each reproduces the versions up to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Klauspost {
    /// 1.15 to 1.17 (Debian 12's skopeo, podman and buildah link 1.15.12):
    /// the block writer of 1.18.0, level 4 as below.
    V1_15,
    /// 1.18.0: level 4 compares the next long candidate at its distance
    /// instead of its position, as Go 1.27 does (only level 4 differs).
    V1_18_0,
    /// 1.18.1 on: a non-final block's histogram counts its end-of-block
    /// symbol and its header has only the code lengths it needs — Go 1.27's
    /// `compress/flate` exactly (1.18.1 left the end-of-block symbol out of
    /// the reuse estimate, 1.18.2 made it Go 1.27's; 1.18.1's output was
    /// the same on every input tried).
    V1_18_2,
}

/// A compression level outside Go's accepted range `-2..=9`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("goflate: invalid compression level {0}: want value in range [-2, 9]")]
pub struct InvalidLevel(pub i32);

enum Mode {
    Store,
    Huff,
    Fast(FastEnc),
    Lazy(Box<Lazy>),
}

/// Streaming DEFLATE encoder, byte-for-byte equal to Go 1.27's
/// `flate.Writer` at the same level.
pub struct Encoder {
    w: BitWriter,
    tokens: Tokens,
    /// Input window for stored, Huffman-only and fast levels.
    window: Vec<u8>,
    window_end: usize,
    sync: bool,
    mode: Mode,
}

impl Encoder {
    /// An encoder at Go's `level` (`-2..=9`; `-1` means 6).
    pub fn new(level: i32) -> Result<Self, InvalidLevel> {
        let mut w = BitWriter::new();
        let (mode, window) = match level {
            0 => (Mode::Store, vec![0; MAX_STORE_BLOCK_SIZE]),
            -2 => {
                w.log_new_table_penalty = 10;
                (Mode::Huff, vec![0; 32 << 10])
            }
            -1 | 1..=6 => {
                w.log_new_table_penalty = 7;
                let level = if level == -1 { 6 } else { level };
                (
                    Mode::Fast(FastEnc::new(level)),
                    vec![0; MAX_STORE_BLOCK_SIZE],
                )
            }
            7..=9 => {
                w.log_new_table_penalty = 8;
                (Mode::Lazy(Box::new(Lazy::new(level))), Vec::new())
            }
            _ => return Err(InvalidLevel(level)),
        };
        Ok(Encoder {
            w,
            tokens: Tokens::new(),
            window,
            window_end: 0,
            sync: false,
            mode,
        })
    }

    /// The encoder of klauspost/compress's `flate` of `version` at `level`
    /// (`-2`, `0..=6`; [`crate::pgzip`] maps its default): the fast
    /// matchers Go 1.27 took in, with the differences of that version.
    ///
    /// # Errors
    /// [`InvalidLevel`] outside `-2..=6`.
    pub fn klauspost(version: Klauspost, level: i32) -> Result<Self, InvalidLevel> {
        if !(-2..=6).contains(&level) || level == -1 {
            return Err(InvalidLevel(level));
        }
        let mut enc = Self::new(level)?;
        if version <= Klauspost::V1_18_0 {
            enc.w.filled_headers = true;
        }
        if version == Klauspost::V1_15 {
            if let Mode::Fast(fast) = &mut enc.mode {
                fast.l4_at_position();
            }
        }
        Ok(enc)
    }

    /// Primes the encoder with `dict` as history (Go's `fillWindow`, as
    /// `NewWriterDict` and `ResetDict` call it): the fast levels compress
    /// its last 32 KiB and discard the tokens, which leaves the matcher's
    /// tables and history pointing into it; stored and Huffman-only levels
    /// ignore it.
    ///
    /// # Panics
    /// At levels 7–9 with a non-empty `dict` (their hash chains would need
    /// Go's window fill, which no caller uses).
    pub fn fill_window(&mut self, dict: &[u8]) {
        match &mut self.mode {
            Mode::Store | Mode::Huff => {}
            Mode::Fast(enc) => {
                let dict = &dict[dict.len().saturating_sub(fast::MAX_MATCH_OFFSET as usize)..];
                enc.encode(&mut self.tokens, dict);
                self.tokens.reset();
            }
            Mode::Lazy(_) => assert!(dict.is_empty(), "goflate: no dictionary at levels 7-9"),
        }
    }

    /// Readies a fast-level (or stored, Huffman-only) encoder for a new
    /// stream after [`Self::sync_flush`], keeping its allocations (Go's
    /// `Writer.Reset`; a pool of writers reused this way writes the same
    /// bytes as fresh ones: the matcher's old entries lie beyond reach).
    ///
    /// # Panics
    /// At levels 7–9 (no caller resets them).
    pub fn reset(&mut self) {
        self.w.reset();
        self.sync = false;
        self.window_end = 0;
        self.tokens.reset();
        match &mut self.mode {
            Mode::Store | Mode::Huff => {}
            Mode::Fast(enc) => enc.reset(),
            Mode::Lazy(_) => panic!("goflate: no reset at levels 7-9"),
        }
    }

    /// Compresses what is buffered and ends the block with an empty stored
    /// block, byte-aligned (Go's `Flush`, zlib's `Z_SYNC_FLUSH`), appending
    /// to `out`.
    pub fn sync_flush(&mut self, out: &mut Vec<u8>) {
        std::mem::swap(&mut self.w.bw.out, out);
        self.sync = true;
        self.step();
        self.w.write_stored_header(0, false);
        self.w.flush();
        self.sync = false;
        std::mem::swap(&mut self.w.bw.out, out);
    }

    fn is_full(&self) -> bool {
        match &self.mode {
            Mode::Lazy(l) => l.is_full(),
            _ => self.window_end == self.window.len(),
        }
    }

    fn fill(&mut self, b: &[u8]) -> usize {
        match &mut self.mode {
            Mode::Lazy(l) => l.fill(b),
            _ => {
                let n = b.len().min(self.window.len() - self.window_end);
                self.window[self.window_end..self.window_end + n].copy_from_slice(&b[..n]);
                self.window_end += n;
                n
            }
        }
    }

    fn step(&mut self) {
        match &mut self.mode {
            Mode::Store => {
                if self.window_end > 0 && (self.window_end == MAX_STORE_BLOCK_SIZE || self.sync) {
                    self.w.write_stored_block(&self.window[..self.window_end]);
                    self.window_end = 0;
                }
            }
            Mode::Huff => {
                if (self.window_end < self.window.len() && !self.sync) || self.window_end == 0 {
                    return;
                }
                self.w
                    .write_block_huff(false, &self.window[..self.window_end], self.sync);
                self.window_end = 0;
            }
            Mode::Fast(enc) => {
                let end = self.window_end;
                let window = &self.window[..end];
                if end < self.window.len() {
                    if !self.sync {
                        return;
                    }
                    // Very small final windows.
                    if end < 128 {
                        if end == 0 {
                            return;
                        }
                        if end <= 32 {
                            self.w.write_stored_block(window);
                        } else {
                            self.w.write_block_huff(false, window, true);
                        }
                        self.tokens.reset();
                        self.window_end = 0;
                        enc.reset();
                        return;
                    }
                }
                enc.encode(&mut self.tokens, window);
                let n = self.tokens.n;
                if n == 0 {
                    // No matches: store.
                    self.w.write_stored_block(window);
                } else if n > end - (end >> 4) {
                    // Removed less than 1/16th: Huffman-only.
                    self.w.write_block_huff(false, window, self.sync);
                } else {
                    self.w
                        .write_block_dynamic(&mut self.tokens, false, Some(window), self.sync);
                }
                self.tokens.reset();
                self.window_end = 0;
            }
            Mode::Lazy(l) => l.deflate(&mut Sink {
                w: &mut self.w,
                tokens: &mut self.tokens,
                sync: self.sync,
            }),
        }
    }
}

impl crate::gozip::Deflate for Encoder {
    /// Compresses `data`, appending any finished output to `out`.
    fn write(&mut self, mut data: &[u8], out: &mut Vec<u8>) {
        std::mem::swap(&mut self.w.bw.out, out);
        while !data.is_empty() {
            if self.is_full() || self.sync {
                self.step();
            }
            let n = self.fill(data);
            data = &data[n..];
        }
        std::mem::swap(&mut self.w.bw.out, out);
    }

    /// Flushes the remaining input and writes the final block (Go's
    /// `Close`), appending to `out`.
    fn finish(mut self, out: &mut Vec<u8>) {
        std::mem::swap(&mut self.w.bw.out, out);
        self.sync = true;
        self.step();
        self.w.write_stored_header(0, true);
        self.w.flush();
        std::mem::swap(&mut self.w.bw.out, out);
    }
}

/// The raw DEFLATE stream Go 1.27 writes for `plain` with
/// `flate.NewWriter(w, level)`, `Write(plain)`, `Close()`.
///
/// # Panics
/// If `level` is outside `-2..=9`.
pub fn deflate(level: i32, plain: &[u8]) -> Vec<u8> {
    crate::gozip::raw(
        Encoder::new(level).expect("goflate::deflate: invalid level"),
        plain,
    )
}

/// A whole gzip member as Go 1.27's `gzip.NewWriterLevel(w, level)` +
/// `Write(plain)` + `Close()` writes it.
///
/// # Panics
/// If `level` is outside `-2..=9`.
pub fn gzip_member(level: i32, plain: &[u8]) -> Vec<u8> {
    let enc = Encoder::new(level).expect("goflate::gzip_member: invalid level");
    crate::gozip::member(enc, level, plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gozip::testing::*;
    use std::io::Read;

    const LEVELS: &[i32] = &[6, 1, 2, 3, 4, 5, 7, 8, 9, -2, 0, -1];

    /// Compares every fixture at `levels` with the Go filter, byte for byte.
    fn compare_with_go(levels: &[i32]) {
        compare_with_filter(
            "BLOCKREG_GO127_GZIP",
            "go1.27.3",
            levels,
            fixtures(),
            gzip_member,
        );
    }

    #[test]
    fn roundtrip_all_levels_inflates_to_input() {
        for (name, data) in fixtures() {
            if data.len() > (1 << 20) + 1 {
                continue;
            }
            for &level in LEVELS {
                let raw = deflate(level, &data);
                assert_eq!(inflate(&raw), data, "{name} level {level}");
            }
        }
    }

    #[test]
    fn roundtrip_gzip_member_mixed() {
        let data = mixed(3, 1 << 20);
        for level in [6, 1, 9, -2] {
            let gz = gzip_member(level, &data);
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data, "level {level}");
        }
    }

    #[test]
    fn empty_input_is_go_empty_stream() {
        // Close with no data: an empty final fixed block (10 bits).
        assert_eq!(deflate(6, b""), [0x03, 0x00]);
        let gz = gzip_member(6, b"");
        assert_eq!(&gz[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
        assert_eq!(gz.len(), 20);
    }

    #[test]
    fn gzip_header_xfl_follows_level() {
        assert_eq!(gzip_member(1, b"a")[8], 4);
        assert_eq!(gzip_member(9, b"a")[8], 2);
        assert_eq!(gzip_member(-1, b"a")[8], 0);
        assert_eq!(gzip_member(6, b"a")[8], 0);
    }

    #[test]
    fn invalid_levels_are_rejected() {
        assert!(Encoder::new(10).is_err());
        assert!(Encoder::new(-3).is_err());
    }

    #[test]
    fn output_independent_of_write_boundaries() {
        let data = mixed(9, 400_000);
        for level in [6, 1, 4, 9, -2, 0] {
            let whole = deflate(level, &data);
            let mut rng = Rng((level + 100) as u64);
            let out = raw_in_pieces(Encoder::new(level).unwrap(), &data, || {
                1 + rng.below(100_000) as usize
            });
            assert_eq!(out, whole, "level {level}");
        }
    }

    #[test]
    fn go_level6_default_compression_bit_exact() {
        compare_with_go(&[6, -1]);
    }

    #[test]
    fn go_level1_best_speed_bit_exact() {
        compare_with_go(&[1]);
    }

    #[test]
    fn go_levels_2_to_5_bit_exact() {
        compare_with_go(&[2, 3, 4, 5]);
    }

    #[test]
    fn go_levels_7_to_9_bit_exact() {
        compare_with_go(&[7, 8, 9]);
    }

    #[test]
    fn go_huffman_only_and_stored_bit_exact() {
        compare_with_go(&[-2, 0]);
    }

    #[test]
    fn go_small_inputs_every_level_bit_exact() {
        // Sizes around the stored (<=32), Huffman-only (<128) and
        // minimum-matcher thresholds of the final window.
        let filter = match go_filter("BLOCKREG_GO127_GZIP", "go1.27.3") {
            Ok(f) => f,
            Err(why) => {
                println!("goflate: skipped small-input comparison with Go 1.27.3 ({why})");
                return;
            }
        };
        let mut rng = Rng(5);
        for n in [2usize, 12, 13, 31, 32, 33, 127, 128, 129, 300, 1025] {
            let data = text(&mut rng, n);
            for &level in LEVELS {
                let want = run_go(&filter, level, &data);
                assert_eq!(gzip_member(level, &data), want, "size {n} level {level}");
            }
        }
    }

    /// Fast levels rebase their tables after ~2.1 GB of input and levels
    /// 7-9 after 256 MiB; slow (minutes), so run with `--ignored`.
    #[test]
    #[ignore]
    fn go_long_streams_across_table_rebase_bit_exact() {
        let filter = match go_filter("BLOCKREG_GO127_GZIP", "go1.27.3") {
            Ok(f) => f,
            Err(why) => {
                println!("goflate: skipped long-stream comparison with Go 1.27.3 ({why})");
                return;
            }
        };
        for level in [1, 6] {
            compare_long_stream(
                &filter,
                level,
                2_300_000_000,
                Encoder::new(level).unwrap(),
                1 << 20,
            );
        }
        compare_long_stream(&filter, 9, 300_000_000, Encoder::new(9).unwrap(), 1 << 20);
    }
}
