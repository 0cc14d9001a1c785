//! A bit-exact replica of the DEFLATE encoder in Go 1.21–1.26's
//! `compress/flate` (and the gzip framing of `compress/gzip`).
//!
//! Until Go 1.27 replaced it (see [`crate::goflate`]), this was the encoder
//! behind docker, containerd, BuildKit and crane, so it wrote most of the
//! gzip layers users push. The encoder files are the same in Go 1.21.13
//! and 1.26.6 (`diff -r` shows only `clear()` refactors, comments and a
//! struct field reordering). This module re-implements the algorithm —
//! written in Rust from the BSD-licensed Go 1.26.6 sources
//! (`src/compress/flate/{deflate,deflatefast,huffman_bit_writer,
//! huffman_code,token}.go`, `src/compress/gzip/gzip.go`) — so that the
//! plain text alone reproduces the compressed bytes.
//!
//! * `-2` HuffmanOnly: 65535-byte windows, literal-only Huffman blocks.
//! * `0`: stored blocks of 65535 bytes.
//! * `1`: Snappy-style matcher per 65535-byte window ([`fast`]).
//! * `2..=9` (and `-1` = 6): hash chains over a sliding 64 KiB window
//!   ([`lazy`]); greedy for 2–3, lazy for 4–9.
//!
//! [`Encoder::write`] follows Go's `Write` call for call (`step` before each
//! window `fill`). Levels -2, 0 and 1 only ever compress full windows, so
//! their output does not depend on how the input is split into writes.
//! Levels 2–9 almost never do either: Go slides its window during `fill`
//! once the matcher is 262 bytes from the end, and whether one more token
//! is produced before the slide can depend on where a write ended; that
//! only changes the output when this token completes a block of 16384
//! tokens which began before the slid-out half *and* that block would be
//! smaller stored. Replaying the same writes always gives Go's bytes.
//! Memory is bounded (≈0.9 MiB at most), independent of the input size.

mod fast;
mod huffman;
mod lazy;

use fast::DeflateFast;
use huffman::{BitWriter, Token, MAX_STORE_BLOCK_SIZE};
use lazy::Lazy;

/// A compression level outside Go's accepted range `-2..=9`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("goflate126: invalid compression level {0}: want value in range [-2, 9]")]
pub struct InvalidLevel(pub i32);

enum Mode {
    /// Level 0 (`store`).
    Store,
    /// Level -2 (`storeHuff`).
    Huff,
    /// Level 1 (`encSpeed`).
    Speed {
        enc: Box<DeflateFast>,
        tokens: Vec<Token>,
    },
    /// Levels 2..=9 (`deflate`).
    Chain(Box<Lazy>),
}

/// Streaming DEFLATE encoder, byte-for-byte equal to Go 1.21–1.26's
/// `flate.Writer` at the same level given the same `Write` calls.
pub struct Encoder {
    w: BitWriter,
    /// Input window of levels -2, 0 and 1 (levels 2..=9 keep their own).
    window: Vec<u8>,
    window_end: usize,
    mode: Mode,
}

impl Encoder {
    /// An encoder at Go's `level` (`-2..=9`; `-1` means 6).
    pub fn new(level: i32) -> Result<Self, InvalidLevel> {
        let store_window = || vec![0; MAX_STORE_BLOCK_SIZE];
        let (mode, window) = match level {
            0 => (Mode::Store, store_window()),
            -2 => (Mode::Huff, store_window()),
            1 => (
                Mode::Speed {
                    enc: Box::new(DeflateFast::new()),
                    tokens: Vec::with_capacity(MAX_STORE_BLOCK_SIZE),
                },
                store_window(),
            ),
            -1 => (Mode::Chain(Box::new(Lazy::new(6))), Vec::new()),
            2..=9 => (Mode::Chain(Box::new(Lazy::new(level))), Vec::new()),
            _ => return Err(InvalidLevel(level)),
        };
        Ok(Encoder {
            w: BitWriter::new(),
            window,
            window_end: 0,
            mode,
        })
    }

    /// Go's `fill` (`fillStore` / `fillDeflate`).
    fn fill(&mut self, b: &[u8]) -> usize {
        if let Mode::Chain(l) = &mut self.mode {
            return l.fill(b);
        }
        let n = b.len().min(self.window.len() - self.window_end);
        self.window[self.window_end..self.window_end + n].copy_from_slice(&b[..n]);
        self.window_end += n;
        n
    }

    /// Go's `step` (`store` / `storeHuff` / `encSpeed` / `deflate`);
    /// `sync` is set only by `Close`.
    fn step(&mut self, sync: bool) {
        let end = self.window_end;
        let full = end == self.window.len();
        let window = &self.window[..end];
        match &mut self.mode {
            Mode::Store => {
                if end > 0 && (full || sync) {
                    self.w.write_stored_block(window);
                    self.window_end = 0;
                }
            }
            Mode::Huff => {
                if (!full && !sync) || end == 0 {
                    return;
                }
                self.w.write_block_huff(false, window);
                self.window_end = 0;
            }
            Mode::Speed { enc, tokens } => {
                if !full {
                    if !sync {
                        return;
                    }
                    // Small final windows.
                    if end < 128 {
                        match end {
                            0 => return,
                            1..=16 => self.w.write_stored_block(window),
                            _ => self.w.write_block_huff(false, window),
                        }
                        self.window_end = 0;
                        enc.reset();
                        return;
                    }
                }
                tokens.clear();
                enc.encode(tokens, window);
                // Removed less than 1/16th: Huffman-only.
                if tokens.len() > end - (end >> 4) {
                    self.w.write_block_huff(false, window);
                } else {
                    self.w.write_block_dynamic(tokens, false, Some(window));
                }
                self.window_end = 0;
            }
            Mode::Chain(l) => l.deflate(&mut self.w, sync),
        }
    }
}

impl crate::gozip::Deflate for Encoder {
    /// Compresses `data` as one Go `Write` call, appending any finished
    /// output to `out`.
    fn write(&mut self, mut data: &[u8], out: &mut Vec<u8>) {
        std::mem::swap(&mut self.w.bw.out, out);
        while !data.is_empty() {
            self.step(false);
            let n = self.fill(data);
            data = &data[n..];
        }
        std::mem::swap(&mut self.w.bw.out, out);
    }

    /// Compresses the remaining input and ends the stream with an empty
    /// final stored block (Go's `Close`), appending to `out`.
    fn finish(mut self, out: &mut Vec<u8>) {
        std::mem::swap(&mut self.w.bw.out, out);
        self.step(true);
        self.w.write_stored_header(0, true);
        self.w.flush();
        std::mem::swap(&mut self.w.bw.out, out);
    }
}

/// The raw DEFLATE stream Go 1.21–1.26 writes for `plain` with
/// `flate.NewWriter(w, level)`, `Write(plain)`, `Close()`.
///
/// # Panics
/// If `level` is outside `-2..=9`.
pub fn deflate(level: i32, plain: &[u8]) -> Vec<u8> {
    crate::gozip::raw(
        Encoder::new(level).expect("goflate126::deflate: invalid level"),
        plain,
    )
}

/// A whole gzip member as Go 1.21–1.26's `gzip.NewWriterLevel(w, level)` +
/// `Write(plain)` + `Close()` writes it.
///
/// # Panics
/// If `level` is outside `-2..=9`.
pub fn gzip_member(level: i32, plain: &[u8]) -> Vec<u8> {
    let enc = Encoder::new(level).expect("goflate126::gzip_member: invalid level");
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
            "BLOCKREG_GO126_GZIP",
            "go1.26.6",
            levels,
            fixtures(),
            gzip_member,
        );
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
    fn go_levels_2_3_greedy_bit_exact() {
        compare_with_go(&[2, 3]);
    }

    #[test]
    fn go_levels_4_5_lazy_bit_exact() {
        compare_with_go(&[4, 5]);
    }

    #[test]
    fn go_levels_7_to_9_lazy_bit_exact() {
        compare_with_go(&[7, 8, 9]);
    }

    #[test]
    fn go_huffman_only_and_stored_bit_exact() {
        compare_with_go(&[-2, 0]);
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
        for level in [6, 1, 2, 9, -2, 0] {
            let gz = gzip_member(level, &data);
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data, "level {level}");
        }
    }

    #[test]
    fn empty_input_is_empty_final_stored_block() {
        // Close always ends with an empty final stored block.
        assert_eq!(deflate(6, b""), [0x01, 0x00, 0x00, 0xff, 0xff]);
        let gz = gzip_member(6, b"");
        assert_eq!(&gz[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
        assert_eq!(gz.len(), 23);
    }

    #[test]
    fn gzip_header_xfl_follows_level() {
        assert_eq!(gzip_member(1, b"a")[8], 4);
        assert_eq!(gzip_member(9, b"a")[8], 2);
        assert_eq!(gzip_member(-1, b"a")[8], 0);
        assert_eq!(gzip_member(6, b"a")[8], 0);
    }

    #[test]
    fn default_level_is_level_6() {
        let data = mixed(4, 300_000);
        assert_eq!(deflate(-1, &data), deflate(6, &data));
    }

    #[test]
    fn invalid_levels_are_rejected() {
        assert!(Encoder::new(10).is_err());
        assert!(Encoder::new(-3).is_err());
    }

    #[test]
    fn output_independent_of_write_boundaries() {
        // Exact for -2, 0 and 1 by construction; for 2..=9 a difference
        // would need a block of 16384 tokens to end exactly at a window
        // slide and be stored (see the module documentation).
        let inputs = [
            mixed(9, 400_000),
            barely_compressible(5, 300_000),
            text(&mut Rng(8), 200_000),
        ];
        for data in &inputs {
            for level in [6, 1, 2, 3, 4, 9, -2, 0] {
                let whole = deflate(level, data);
                let mut rng = Rng((level + 100) as u64);
                let random = raw_in_pieces(Encoder::new(level).unwrap(), data, || {
                    1 + rng.below(100_000) as usize
                });
                assert_eq!(random, whole, "level {level}, random pieces");
                let small = raw_in_pieces(Encoder::new(level).unwrap(), data, || {
                    1 + rng.below(700) as usize
                });
                assert_eq!(small, whole, "level {level}, small pieces");
                let copy = raw_in_pieces(Encoder::new(level).unwrap(), data, || 32 << 10);
                assert_eq!(copy, whole, "level {level}, io.Copy pieces");
            }
        }
    }

    #[test]
    fn go_small_inputs_every_size_bit_exact() {
        // Every size up to 1100 crosses the thresholds of the final
        // window: stored (<= 16) and Huffman-only (< 128) at level 1,
        // the 262-byte lookahead of levels 2-9, the 1/16 rules.
        let filter = match go_filter("BLOCKREG_GO126_GZIP", "go1.26.6") {
            Ok(f) => f,
            Err(why) => {
                println!("goflate126: skipped small-input comparison with Go 1.26.6 ({why})");
                return;
            }
        };
        let corpus = text(&mut Rng(5), 1100);
        let sizes: Vec<usize> = (0..=1100).collect();
        let failures = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for part in sizes.chunks(sizes.len().div_ceil(3)) {
                let (filter, corpus, failures) = (&filter, &corpus, &failures);
                s.spawn(move || {
                    for &n in part {
                        let levels: &[i32] = if n % 10 == 0 {
                            LEVELS
                        } else {
                            &[1, 2, 4, 6, 9, -2]
                        };
                        for &level in levels {
                            let want = run_go(filter, level, &corpus[..n]);
                            if gzip_member(level, &corpus[..n]) != want {
                                failures
                                    .lock()
                                    .unwrap()
                                    .push(format!("size {n} level {level}"));
                            }
                        }
                    }
                });
            }
        });
        let failures = failures.into_inner().unwrap();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn go_hash_chain_rebase_after_16_mib_bit_exact() {
        // Levels 2-9 rebase their hash chains once 16 MiB have passed.
        let filter = match go_filter("BLOCKREG_GO126_GZIP", "go1.26.6") {
            Ok(f) => f,
            Err(why) => {
                println!("goflate126: skipped long-stream comparison with Go 1.26.6 ({why})");
                return;
            }
        };
        compare_long_stream(&filter, 4, 40 << 20, Encoder::new(4).unwrap(), 32 << 10);
        compare_long_stream(&filter, 6, 40 << 20, Encoder::new(6).unwrap(), 32 << 10);
    }

    /// Level 1 rebases its match table after ~2.1 GB of input; slow
    /// (minutes), so run with `--ignored`.
    #[test]
    #[ignore]
    fn go_best_speed_offset_rebase_after_2_gib_bit_exact() {
        let filter = match go_filter("BLOCKREG_GO126_GZIP", "go1.26.6") {
            Ok(f) => f,
            Err(why) => {
                println!("goflate126: skipped long-stream comparison with Go 1.26.6 ({why})");
                return;
            }
        };
        compare_long_stream(
            &filter,
            1,
            2_300_000_000,
            Encoder::new(1).unwrap(),
            32 << 10,
        );
        compare_long_stream(&filter, 9, 100_000_000, Encoder::new(9).unwrap(), 32 << 10);
    }
}
