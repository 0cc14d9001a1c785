//! Go's `compress/gzip` framing around a replica of its DEFLATE encoder
//! ([`crate::goflate126`], [`crate::goflate`]): the 10-byte header Go writes
//! for an empty `gzip.Header` (no name, comment, extra field or
//! modification time; OS 255; XFL 4 for level 1, 2 for level 9, else 0),
//! then the stream, then the CRC-32 and ISIZE trailer.

use flate2::Crc;

/// A streaming DEFLATE encoder: what both replicas are.
pub trait Deflate {
    /// Compresses `data`, appending any finished output to `out`.
    fn write(&mut self, data: &[u8], out: &mut Vec<u8>);
    /// Ends the stream (Go's `Close`), appending the rest to `out`.
    fn finish(self, out: &mut Vec<u8>);
}

/// A streaming gzip member as Go's `gzip.NewWriterLevel` writes it.
pub struct GzipEncoder<E> {
    inner: E,
    header: Option<[u8; 10]>,
    crc: Crc,
}

impl<E: Deflate> GzipEncoder<E> {
    /// Frames `inner`, which compresses at `level` (Go puts a hint of it in
    /// the header).
    pub fn new(inner: E, level: i32) -> Self {
        let xfl = match level {
            9 => 2,
            1 => 4,
            _ => 0,
        };
        Self {
            inner,
            header: Some([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255]),
            crc: Crc::new(),
        }
    }

    fn header(&mut self, out: &mut Vec<u8>) {
        if let Some(h) = self.header.take() {
            out.extend_from_slice(&h);
        }
    }

    pub fn write(&mut self, data: &[u8], out: &mut Vec<u8>) {
        self.header(out);
        self.crc.update(data);
        self.inner.write(data, out);
    }

    /// The final block and the CRC-32/ISIZE trailer.
    pub fn finish(mut self, out: &mut Vec<u8>) {
        self.header(out);
        self.inner.finish(out);
        out.extend_from_slice(&self.crc.sum().to_le_bytes());
        out.extend_from_slice(&self.crc.amount().to_le_bytes());
    }
}

/// The whole gzip member `inner` (at `level`) makes of `plain`.
pub fn member<E: Deflate>(inner: E, level: i32, plain: &[u8]) -> Vec<u8> {
    let mut enc = GzipEncoder::new(inner, level);
    let mut out = Vec::with_capacity(plain.len() / 2 + 64);
    enc.write(plain, &mut out);
    enc.finish(&mut out);
    out
}

/// The raw DEFLATE stream `inner` makes of `plain`.
pub fn raw<E: Deflate>(mut inner: E, plain: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(plain.len() / 2 + 64);
    inner.write(plain, &mut out);
    inner.finish(&mut out);
    out
}

/// Fixtures and the real Go filters, for the replicas' tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::io::{Read, Write};
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};

    /// SplitMix64: deterministic fixtures without extra dependencies.
    pub(crate) struct Rng(pub(crate) u64);
    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        pub(crate) fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    pub(crate) const WORDS: &[&str] = &[
        "the",
        "layer",
        "registry",
        "blob",
        "manifest",
        "digest",
        "sha256",
        "usr",
        "lib",
        "bin",
        "etc",
        "/",
        "\n",
        "config",
        "json",
        "tar",
        "gzip",
        "index",
        "container",
        "image",
        "{\"a\":1}",
        "0000644",
        "root",
        "ustar",
        "  ",
        "\t",
        "error",
        "value",
    ];

    pub(crate) fn text(rng: &mut Rng, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 16);
        while v.len() < n {
            v.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes());
            if rng.below(3) == 0 {
                v.push(b' ');
            }
        }
        v.truncate(n);
        v
    }

    /// Text, random binary, zero runs and repeats of earlier data, in
    /// pieces of varying size (a crude tar-like mix).
    pub(crate) fn mixed(seed: u64, n: usize) -> Vec<u8> {
        let mut rng = Rng(seed);
        let mut v = Vec::with_capacity(n + 70_000);
        while v.len() < n {
            let len = 1 + rng.below(40_000) as usize;
            match rng.below(5) {
                0 => v.extend(text(&mut rng, len)),
                1 => v.extend(rng.bytes(len)),
                2 => v.extend(std::iter::repeat_n(0u8, len)),
                3 if v.len() > 1000 => {
                    let dist = 1 + rng.below(v.len().min(40_000) as u64) as usize;
                    for _ in 0..len {
                        v.push(v[v.len() - dist]);
                    }
                }
                _ => {
                    // Low-entropy binary (small alphabet).
                    for _ in 0..len {
                        v.push(b"\x00\x01\x02\xffAB"[rng.below(6) as usize]);
                    }
                }
            }
        }
        v.truncate(n);
        v
    }

    /// Mostly random bytes with short repeats at long distances: blocks of
    /// 16384 tokens that a stored block beats (exercises the stored choice
    /// of `writeBlock` and the window slide while a block is open).
    pub(crate) fn barely_compressible(seed: u64, n: usize) -> Vec<u8> {
        let mut rng = Rng(seed);
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            if v.len() > 40_000 && rng.below(8) == 0 {
                let dist = 20_000 + rng.below(12_000) as usize;
                for _ in 0..4 + rng.below(3) {
                    v.push(v[v.len() - dist]);
                }
            } else {
                let n = 1 + rng.below(12) as usize;
                v.extend(rng.bytes(n));
            }
        }
        v.truncate(n);
        v
    }

    /// A gzip filter `tests/e2e/go_gzip.py` builds (`name`: `go1.27.3` for
    /// Go 1.27.3's `compress/gzip`, `pgzip` for klauspost's pgzip), or why
    /// it is not available: the path in `var` (the test command names it,
    /// and the comparisons must then run, not be skipped), else the bench
    /// cache's.
    pub(crate) fn go_filter(var: &str, name: &str) -> Result<PathBuf, String> {
        if let Some(p) = std::env::var_os(var) {
            let p = PathBuf::from(p);
            assert!(p.exists(), "{var}={} does not exist", p.display());
            return Ok(p);
        }
        let home = std::env::var_os("HOME").ok_or(format!("{var} and HOME unset"))?;
        let p = PathBuf::from(home).join(format!(".cache/blockreg-bench/go/gzipfilter-{name}"));
        if p.exists() {
            Ok(p)
        } else {
            Err(format!("{var} unset and {} does not exist", p.display()))
        }
    }

    /// Runs `filter` at `level` on `chunks` (fed from another thread),
    /// handing its output to `sink` as it comes.
    pub(crate) fn run_filter<I>(filter: &Path, level: i32, chunks: I, mut sink: impl FnMut(&[u8]))
    where
        I: IntoIterator<Item = Vec<u8>>,
        I::IntoIter: Send + 'static,
    {
        let mut child = Command::new(filter)
            .arg(level.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn gzip filter");
        let mut stdin = child.stdin.take().unwrap();
        let feed = chunks.into_iter();
        let feeder = std::thread::spawn(move || {
            for c in feed {
                stdin.write_all(&c)?;
            }
            Ok::<_, std::io::Error>(())
        });
        let mut stdout = child.stdout.take().unwrap();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = stdout.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            sink(&buf[..n]);
        }
        feeder.join().unwrap().unwrap();
        assert!(child.wait().unwrap().success());
    }

    pub(crate) fn run_go(filter: &Path, level: i32, plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        run_filter(filter, level, [plain.to_vec()], |b| {
            out.extend_from_slice(b)
        });
        out
    }

    /// Inputs every replica is compared on: the edges of Go's windows and
    /// blocks, runs, repeats, noise.
    pub(crate) fn fixtures() -> Vec<(&'static str, Vec<u8>)> {
        let mut rng = Rng(42);
        let mut runs = Vec::new();
        for i in 0..200_000u32 {
            runs.push(if (i / 1000) % 3 == 0 {
                b'a'
            } else {
                (i / 7000) as u8
            });
        }
        let mut periodic = Vec::new();
        let unit = rng.bytes(40_000);
        while periodic.len() < 300_000 {
            periodic.extend_from_slice(&unit);
        }
        vec![
            ("empty", Vec::new()),
            ("one_byte", vec![b'x']),
            ("short_text", b"hello, hello, hello world\n".to_vec()),
            ("text_100", text(&mut rng, 100)),
            ("text_200", text(&mut rng, 200)),
            ("text_4k", text(&mut rng, 4096)),
            ("random_1mib", Rng(7).bytes(1 << 20)),
            ("zeros_300k", vec![0; 300_000]),
            ("runs", runs),
            ("periodic_40k", periodic),
            ("text_window_edges", text(&mut rng, 65535 * 2 + 1)),
            ("text_65536", text(&mut rng, 65536)),
            ("text_32768_plus", text(&mut rng, 32768 + 300)),
            ("barely_compressible", barely_compressible(3, 1 << 20)),
            ("mixed_5mib", mixed(1, 5 << 20)),
        ]
    }

    /// Compares `member(level, data)` byte for byte with the filter `name`
    /// (see [`go_filter`]) for every fixture and level; prints why and
    /// returns when the filter is not there and `var` is unset.
    pub(crate) fn compare_with_filter(
        var: &str,
        name: &str,
        levels: &[i32],
        fixtures: Vec<(impl std::fmt::Display, Vec<u8>)>,
        member: impl Fn(i32, &[u8]) -> Vec<u8>,
    ) {
        let filter = match go_filter(var, name) {
            Ok(f) => f,
            Err(why) => {
                println!("skipped the comparison with {name} ({why})");
                return;
            }
        };
        let mut failures = Vec::new();
        for (fixture, data) in fixtures {
            for &level in levels {
                let want = run_go(&filter, level, &data);
                let got = member(level, &data);
                if let Some(at) = first_diff(&got, &want) {
                    failures.push(format!(
                        "{fixture} level {level}: first difference at byte {at} (got {} bytes, {name} {})",
                        got.len(),
                        want.len()
                    ));
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// Compares `enc` (a gzip member at `level`, fed `piece` bytes at a
    /// time) with `filter` on `total` bytes of 16 MiB units, each prefixed
    /// with its number, by hash: no side holds the stream.
    pub(crate) fn compare_long_stream<E: super::Deflate>(
        filter: &Path,
        level: i32,
        total: usize,
        enc: E,
        piece: usize,
    ) {
        use sha2::{Digest, Sha256};
        let unit = std::sync::Arc::new(mixed(11, 16 << 20));
        let chunks = move || {
            let unit = unit.clone();
            (0..total.div_ceil(unit.len() + 8)).map(move |i| {
                let mut c = (i as u64)
                    .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                    .to_le_bytes()
                    .to_vec();
                c.extend_from_slice(&unit);
                c
            })
        };
        let mut want = Sha256::new();
        run_filter(filter, level, chunks(), |b| want.update(b));
        let mut enc = super::GzipEncoder::new(enc, level);
        let mut got = Sha256::new();
        let mut out = Vec::new();
        for c in chunks() {
            for p in c.chunks(piece) {
                enc.write(p, &mut out);
            }
            got.update(&out);
            out.clear();
        }
        enc.finish(&mut out);
        got.update(&out);
        assert_eq!(
            got.finalize(),
            want.finalize(),
            "level {level}, {total} bytes"
        );
    }

    /// The raw stream `enc` makes of `data` fed in pieces of `piece()`
    /// bytes.
    pub(crate) fn raw_in_pieces<E: super::Deflate>(
        mut enc: E,
        data: &[u8],
        mut piece: impl FnMut() -> usize,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            let n = piece().clamp(1, rest.len());
            enc.write(&rest[..n], &mut out);
            rest = &rest[n..];
        }
        enc.finish(&mut out);
        out
    }

    pub(crate) fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
        a.iter()
            .zip(b)
            .position(|(x, y)| x != y)
            .or((a.len() != b.len()).then_some(a.len().min(b.len())))
    }

    pub(crate) fn inflate(raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::DeflateDecoder::new(raw)
            .read_to_end(&mut out)
            .expect("valid deflate stream");
        out
    }
}
