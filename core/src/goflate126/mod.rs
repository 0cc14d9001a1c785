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
//!
//! Checkpoints (levels 4–9): the encoder's state right after some of the
//! blocks it wrote ([`Checkpoint`], a few integers), recorded while a
//! stream is compressed ([`Encoder::checkpoint_every`]). An encoder resumed
//! from one ([`Encoder::resume`]) with the window's plain bytes writes the
//! stream's bytes from there on, so the stretches between checkpoints can
//! be compressed at once, on every core. What the state leaves out is
//! re-derived: the hash chains from the window's last 32 KiB (older
//! entries end every chain walk), the token buffer is empty after a block.

mod fast;
mod huffman;
mod lazy;

use fast::DeflateFast;
use huffman::{BitWriter, Token, MAX_STORE_BLOCK_SIZE};
use lazy::{Checkpoints, Lazy};

/// A compression level outside Go's accepted range `-2..=9`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("goflate126: invalid compression level {0}: want value in range [-2, 9]")]
pub struct InvalidLevel(pub i32);

/// The state of a lazy-level encoder right after it wrote a block, at
/// the top of Go's `deflate` loop: what an encoder needs, beside the
/// window's plain bytes, to write the rest of the stream exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Plain bytes written into the window so far (stream offset of the
    /// window's end).
    pub plain: u64,
    /// Whole bytes of output before this point.
    pub out: u64,
    /// Bytes in the window: it holds `plain - window_end .. plain`.
    pub window_end: u32,
    /// The matcher's position in the window.
    pub index: u32,
    /// Where the next block's input starts in the window.
    pub block_start: u32,
    /// Lazy matching: `window[index - 1]` still needs a token.
    pub byte_available: bool,
    /// The match found at `index - 1`, pending (length 3 when none).
    pub length: i32,
    pub offset: i32,
    /// Added to window positions in the hash chains.
    pub hash_offset: i64,
    /// Output bits not yet whole bytes, and how many (< 48).
    pub bits: u64,
    pub nbits: u32,
}

/// Copies a [`Checkpoint`]-shaped value into another type with the same
/// fields, `checkpoint_as!(c, Type)` (the records that carry it across
/// the host/guest boundary: one list of its fields for both sides).
#[macro_export]
macro_rules! checkpoint_as {
    ($c:expr, $to:path) => {{
        let c = $c;
        $to {
            plain: c.plain,
            out: c.out,
            window_end: c.window_end,
            index: c.index,
            block_start: c.block_start,
            byte_available: c.byte_available,
            length: c.length,
            offset: c.offset,
            hash_offset: c.hash_offset,
            bits: c.bits,
            nbits: c.nbits,
        }
    }};
}

/// A checkpoint no encoder could have recorded (a damaged recipe).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("goflate126: invalid checkpoint: {0}")]
pub struct InvalidCheckpoint(pub String);

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
    /// Output bytes given out by finished `write` calls.
    emitted: u64,
    checkpoints: Option<Checkpoints>,
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
            emitted: 0,
            checkpoints: None,
        })
    }

    /// Records a [`Checkpoint`] after the first block written once
    /// `out_bytes` of output or `plain_bytes` of input passed since the
    /// last one (lazy levels 4–9 only; others record none).
    pub fn checkpoint_every(&mut self, out_bytes: u64, plain_bytes: u64) {
        if matches!(&self.mode, Mode::Chain(_)) {
            self.checkpoints = Some(Checkpoints {
                every_out: out_bytes.max(1),
                every_plain: plain_bytes.max(1),
                emitted: 0,
                start: 0,
                list: Vec::new(),
            });
        }
    }

    /// The checkpoints recorded so far.
    #[must_use]
    pub fn checkpoints(&self) -> &[Checkpoint] {
        self.checkpoints.as_ref().map_or(&[], |c| &c.list)
    }

    /// An encoder at `level` in the state `cp` recorded, its window
    /// holding `window` (the stream's plain bytes
    /// `cp.plain - cp.window_end .. cp.plain`). It first finishes the
    /// `deflate` run the checkpoint was taken in, appending to `out` the
    /// stream's bytes from `cp.out` on; further writes continue the stream
    /// from `cp.plain`, with the writes the original encoder was given.
    ///
    /// # Errors
    /// [`InvalidCheckpoint`] for a level without checkpoints, or values no
    /// encoder records (a damaged recipe); never a panic.
    pub fn resume(
        level: i32,
        cp: &Checkpoint,
        window: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Self, InvalidCheckpoint> {
        let level = if level == -1 { 6 } else { level };
        if cp.nbits >= 48 || (cp.bits >> cp.nbits) != 0 {
            return Err(InvalidCheckpoint("pending bits".into()));
        }
        let mut e = Encoder::new(level).map_err(|e| InvalidCheckpoint(e.to_string()))?;
        e.mode = Mode::Chain(Box::new(Lazy::resume(level, cp, window)?));
        e.w.bw.resume(cp.bits, cp.nbits);
        std::mem::swap(&mut e.w.bw.out, out);
        e.step(false);
        std::mem::swap(&mut e.w.bw.out, out);
        Ok(e)
    }

    /// Runs the step the next `write` would begin with, on what the window
    /// holds: a stretch that ends at a checkpoint reaches it this way (the
    /// encoder that recorded it had its next write's first step running).
    pub fn step_window(&mut self, out: &mut Vec<u8>) {
        std::mem::swap(&mut self.w.bw.out, out);
        self.step(false);
        std::mem::swap(&mut self.w.bw.out, out);
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
            Mode::Chain(l) => l.deflate(&mut self.w, sync, self.checkpoints.as_mut()),
        }
    }
}

impl crate::gozip::Deflate for Encoder {
    /// Compresses `data` as one Go `Write` call, appending any finished
    /// output to `out`.
    fn write(&mut self, mut data: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        if let Some(c) = &mut self.checkpoints {
            c.emitted = self.emitted;
            c.start = start;
        }
        std::mem::swap(&mut self.w.bw.out, out);
        while !data.is_empty() {
            self.step(false);
            let n = self.fill(data);
            data = &data[n..];
        }
        std::mem::swap(&mut self.w.bw.out, out);
        self.emitted += (out.len() - start) as u64;
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
    use crate::gozip::Deflate;
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

    /// The stream in `piece`-byte writes with checkpoints taken, then each
    /// stretch between checkpoints written again from its checkpoint alone
    /// (with the same writes): every stretch must be the stream's bytes.
    fn check_segments(level: i32, data: &[u8], every_out: u64, every_plain: u64) -> usize {
        const PIECE: usize = 256 << 10;
        let mut e = Encoder::new(level).unwrap();
        e.checkpoint_every(every_out, every_plain);
        let mut whole = Vec::new();
        for p in data.chunks(PIECE) {
            e.write(p, &mut whole);
        }
        let cps = e.checkpoints().to_vec();
        e.finish(&mut whole);
        assert_eq!(whole, deflate(level, data), "checkpoints change nothing");
        for (k, cp) in cps.iter().enumerate() {
            let start = cp.plain as usize;
            let window = &data[start - cp.window_end as usize..start];
            let mut out = Vec::new();
            let mut r = Encoder::resume(level, cp, window, &mut out).unwrap();
            let stop = cps.get(k + 1).map_or(data.len(), |n| n.plain as usize);
            let mut pos = start;
            while pos < stop {
                let next = ((pos / PIECE + 1) * PIECE).min(stop);
                r.write(&data[pos..next], &mut out);
                pos = next;
            }
            let expected = match cps.get(k + 1) {
                Some(n) => {
                    r.step_window(&mut out);
                    assert!(
                        out.len() as u64 >= n.out - cp.out,
                        "level {level} #{k}: short"
                    );
                    out.truncate((n.out - cp.out) as usize);
                    &whole[cp.out as usize..n.out as usize]
                }
                None => {
                    r.finish(&mut out);
                    &whole[cp.out as usize..]
                }
            };
            assert!(out == expected, "level {level}: segment {k} differs");
        }
        cps.len()
    }

    #[test]
    fn stretches_between_checkpoints_are_recreated_from_the_checkpoint_alone() {
        let mut data = mixed(21, 3 << 20);
        data.extend(barely_compressible(22, 1 << 20));
        data.extend(vec![0u8; 6 << 20]);
        data.extend(text(&mut Rng(23), 2 << 20));
        for level in [4, 5, 6, 7, 9, -1] {
            let n = check_segments(level, &data, 64 << 10, 1 << 20);
            assert!(n > 10, "level {level}: only {n} checkpoints");
        }
        // Levels without checkpoints record none.
        for level in [1, 2, 3, 0, -2] {
            assert_eq!(check_segments(level, &data, 64 << 10, 1 << 20), 0);
        }
    }

    #[test]
    fn checkpoints_past_the_hash_rebase_still_recreate() {
        // Hash chains rebase after 16 MiB: a checkpoint after it holds the
        // rebased offset.
        let mut data = mixed(31, 12 << 20);
        data.extend(text(&mut Rng(32), 10 << 20));
        let n = check_segments(6, &data, 2 << 20, 4 << 20);
        assert!(n > 4, "only {n} checkpoints");
    }

    #[test]
    fn damaged_checkpoints_are_refused_never_a_panic() {
        let data = mixed(41, 2 << 20);
        let mut e = Encoder::new(6).unwrap();
        e.checkpoint_every(64 << 10, 1 << 20);
        let mut out = Vec::new();
        e.write(&data, &mut out);
        let cp = e.checkpoints()[1];
        let window = &data[(cp.plain - u64::from(cp.window_end)) as usize..cp.plain as usize];
        assert!(Encoder::resume(6, &cp, window, &mut Vec::new()).is_ok());
        let damaged = [
            Checkpoint {
                window_end: cp.window_end + 1,
                ..cp
            },
            Checkpoint {
                index: cp.window_end,
                ..cp
            },
            Checkpoint {
                block_start: cp.index + 1,
                ..cp
            },
            Checkpoint { length: 300, ..cp },
            Checkpoint {
                length: 10,
                offset: 0,
                byte_available: true,
                ..cp
            },
            Checkpoint { offset: -1, ..cp },
            Checkpoint {
                hash_offset: 0,
                ..cp
            },
            Checkpoint { nbits: 48, ..cp },
            Checkpoint {
                bits: u64::MAX,
                ..cp
            },
            Checkpoint { plain: 1, ..cp },
        ];
        for bad in damaged {
            let w = window.len().min(bad.window_end as usize);
            let r = Encoder::resume(6, &bad, &window[..w], &mut Vec::new());
            assert!(r.is_err(), "{bad:?} accepted");
        }
        assert!(Encoder::resume(2, &cp, window, &mut Vec::new()).is_err());
        assert!(Encoder::resume(1, &cp, window, &mut Vec::new()).is_err());
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
