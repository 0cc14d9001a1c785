//! Fixtures for unit tests, here and in the guest (feature
//! `test-support`): deterministic bytes, tar archives, gzip, and the
//! property-test harness.

/// Deterministic pseudo-random bytes (xorshift), so fixtures are stable.
pub fn seeded_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A POSIX tar archive of `(name, contents, mtime)` regular files, ending
/// with the two zero blocks, as `tar` and docker write them.
pub fn tar_of(files: &[(&str, &[u8], u64)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data, mtime) in files {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
        h[136..148].copy_from_slice(format!("{mtime:011o}\0").as_bytes());
        h[148..156].copy_from_slice(b"        ");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// Gzip of `data` at `level`, as flate2 (zlib-rs) writes it.
pub fn gzip(data: &[u8], level: u32) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Zstd of `data` as ruzstd's encoder writes it at its fastest level (pure
/// Rust: the guest's tests run in wasm, where libzstd is not available).
pub fn zstd_of(data: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
}

/// Mostly-text pseudo-random bytes that compress like real files.
pub fn texty_bytes(seed: u64, len: usize) -> Vec<u8> {
    const WORDS: [&str; 12] = [
        "alpha ",
        "beta ",
        "gamma ",
        "delta\n",
        "registry ",
        "layer ",
        "block ",
        "tar ",
        "{\"k\": 1}\n",
        "fn main() ",
        "0123456789 ",
        "import os\n",
    ];
    let noise = seeded_bytes(seed, len / 4 + 16);
    let mut out = Vec::with_capacity(len + 16);
    let mut i = 0;
    while out.len() < len {
        out.extend_from_slice(WORDS[usize::from(noise[i % noise.len()]) % WORDS.len()].as_bytes());
        if noise[(i * 7) % noise.len()] < 8 {
            out.push(noise[(i * 13) % noise.len()]);
        }
        i += 1;
    }
    out.truncate(len);
    out
}

/// The property-test harness: deterministic runs that print their counts.
pub mod prop {
    use std::fmt::Debug;
    use std::time::Instant;

    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

    /// Deterministic: a fixed seed, no failure file (the guest has no source
    /// tree to write one into), shrinking bounded in time.
    fn config(cases: u32) -> Config {
        Config {
            cases,
            failure_persistence: None,
            rng_seed: RngSeed::Fixed(0x5eed_b10c),
            max_shrink_iters: 4096,
            max_shrink_time: 30_000,
            ..Config::default()
        }
    }

    /// Runs `test` on `cases` inputs drawn from `strategy`; prints the count.
    ///
    /// Returns the failure instead of panicking: the guest is built with
    /// `panic = "abort"` under wasm, so a panic would end the whole test binary
    /// (and a panic inside a parser ends it too, unshrunk: such a property
    /// shows up as the test binary aborting with the parser's panic message).
    pub fn check<S>(
        name: &str,
        cases: u32,
        strategy: S,
        test: impl Fn(S::Value) -> Result<(), TestCaseError>,
    ) -> Result<(), String>
    where
        S: Strategy,
        S::Value: Debug,
    {
        let mut runner = TestRunner::new(config(cases));
        let t = Instant::now();
        runner
            .run(&strategy, test)
            .map_err(|e| format!("property {name} failed: {e}"))?;
        println!(
            "property {name}: {cases} cases passed in {:.2} s",
            t.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Strings that look like digests, and some that nearly do.
    pub fn digestish() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "(sha256|sha512|SHA256|md5|sha256 )?:?[0-9a-fA-F]{0,130}",
            "sha256:[0-9a-f]{63,65}",
            "sha512:[0-9a-f]{127,129}",
            "sha256:[0-9a-f./%]{64}",
            vec(any::<u8>(), 0..32).prop_map(|b| format!("sha256:{}", crate::hex::encode(&b))),
        ]
    }
}

/// A gzip member whose DEFLATE stream no real compressor would write, so no
/// encoder model explains it: an LZ77 parse that takes, at each position,
/// the farthest earlier occurrence of the next 4 bytes in the window or a
/// seeded-random one of the 16 nearest (not the longest), extended as far as
/// it goes, or a literal; on data with long repeats (runs of zeros) the
/// farthest one lies deeper down a hash chain than preflate estimates;
/// fixed-Huffman blocks of seeded-random token counts, with a stored block
/// now and then. Valid (any inflater reads it back to `data`).
///
/// `wild`: most matches are random picks (a worst case: about a quarter of
/// the compressed size in corrections); otherwise most are the nearest
/// occurrence, as a fast real compressor's would be, and one in eight the
/// farthest.
pub fn odd_gzip(data: &[u8], seed: u64, wild: bool) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    out.extend(odd_deflate(data, seed, wild));
    let mut crc = flate2::Crc::new();
    crc.update(data);
    out.extend(crc.sum().to_le_bytes());
    out.extend((data.len() as u32).to_le_bytes());
    out
}

/// The raw DEFLATE stream of [`odd_gzip`].
pub fn odd_deflate(data: &[u8], seed: u64, wild: bool) -> Vec<u8> {
    use std::collections::HashMap;
    let mut rng = seed.max(1);
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    // Tokens: (length, distance), length 0 = the literal `distance as u8`.
    let mut tokens: Vec<(u32, u32)> = Vec::new();
    let mut seen: HashMap<[u8; 4], Vec<usize>> = HashMap::new();
    let mut i = 0;
    while i < data.len() {
        let mut token = (0, u32::from(data[i]));
        if let Some(key) = data.get(i..i + 4) {
            let key: [u8; 4] = key.try_into().unwrap();
            if let Some(list) = seen.get(&key) {
                let first = list.partition_point(|&p| i - p > 32_768);
                let window = &list[first..];
                let pick = next() % 8;
                if !window.is_empty() && pick != 0 {
                    // The farthest occurrence in the window (deeper down
                    // any hash chain than a real compressor searches), or
                    // a random one of the 16 nearest.
                    let p = if pick == 1 {
                        window[0]
                    } else if !wild {
                        window[window.len() - 1]
                    } else {
                        let near = &window[window.len().saturating_sub(16)..];
                        near[(next() % near.len() as u64) as usize]
                    };
                    let len = (0..258.min(data.len() - i))
                        .take_while(|&k| data[p + k] == data[i + k])
                        .count();
                    token = (len as u32, (i - p) as u32);
                }
            }
        }
        let step = if token.0 == 0 { 1 } else { token.0 as usize };
        for k in i..(i + step).min(data.len().saturating_sub(3)) {
            let key: [u8; 4] = data[k..k + 4].try_into().unwrap();
            seen.entry(key).or_default().push(k);
        }
        tokens.push(token);
        i += step;
    }

    let mut w = BitWriter::default();
    let mut at = 0; // tokens written
    let mut pos = 0; // plain bytes written
    loop {
        let left = tokens.len() - at;
        let stored = next() % 5 == 0;
        let count = if stored {
            (1 + next() % 2000) as usize
        } else {
            (1 + next() % 20_000) as usize
        }
        .min(left);
        let last = count == left;
        w.bits(u32::from(last), 1);
        let chunk = &tokens[at..at + count];
        let plain: usize = chunk.iter().map(|t| t.0.max(1) as usize).sum();
        if stored && plain <= 65_535 {
            w.bits(0, 2);
            w.align();
            w.bytes(&(plain as u16).to_le_bytes());
            w.bytes(&(!(plain as u16)).to_le_bytes());
            w.bytes(&data[pos..pos + plain]);
        } else {
            w.bits(1, 2);
            for &(len, dist) in chunk {
                if len == 0 {
                    fixed_literal(&mut w, dist);
                } else {
                    fixed_match(&mut w, len, dist);
                }
            }
            fixed_literal(&mut w, 256);
        }
        at += count;
        pos += plain;
        if last {
            break;
        }
    }
    w.align();
    w.out
}

/// Least-significant-bit-first bit packing, as DEFLATE stores its fields.
#[derive(Default)]
struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl BitWriter {
    fn bits(&mut self, value: u32, count: u32) {
        self.acc |= u64::from(value) << self.n;
        self.n += count;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    /// A Huffman code, which DEFLATE packs most significant bit first.
    fn code(&mut self, code: u32, len: u32) {
        let reversed = code.reverse_bits() >> (32 - len);
        self.bits(reversed, len);
    }

    fn align(&mut self) {
        if self.n > 0 {
            self.bits(0, 8 - self.n);
        }
    }

    fn bytes(&mut self, b: &[u8]) {
        debug_assert_eq!(self.n, 0);
        self.out.extend_from_slice(b);
    }
}

/// RFC 1951 §3.2.6's fixed code of a literal/length symbol.
fn fixed_literal(w: &mut BitWriter, symbol: u32) {
    match symbol {
        0..=143 => w.code(0x30 + symbol, 8),
        144..=255 => w.code(0x190 + symbol - 144, 9),
        256..=279 => w.code(symbol - 256, 7),
        _ => w.code(0xc0 + symbol - 280, 8),
    }
}

fn fixed_match(w: &mut BitWriter, len: u32, dist: u32) {
    const LEN_BASE: [u32; 29] = [
        3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115,
        131, 163, 195, 227, 258,
    ];
    const LEN_EXTRA: [u32; 29] = [
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
    ];
    const DIST_BASE: [u32; 30] = [
        1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
        2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
    ];
    let l = LEN_BASE.iter().rposition(|&b| b <= len).unwrap();
    fixed_literal(w, 257 + l as u32);
    w.bits(len - LEN_BASE[l], LEN_EXTRA[l]);
    let d = DIST_BASE.iter().rposition(|&b| b <= dist).unwrap();
    w.code(d as u32, 5);
    w.bits(dist - DIST_BASE[d], (d as u32 / 2).saturating_sub(1));
}
