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
