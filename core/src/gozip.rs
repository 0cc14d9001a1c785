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
    use std::path::PathBuf;
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

    pub(crate) fn run_go(filter: &PathBuf, level: i32, plain: &[u8]) -> Vec<u8> {
        let mut child = Command::new(filter)
            .arg(level.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn Go gzip filter");
        let mut stdin = child.stdin.take().unwrap();
        let plain = plain.to_vec();
        let feeder = std::thread::spawn(move || stdin.write_all(&plain));
        let mut out = Vec::new();
        child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
        feeder.join().unwrap().unwrap();
        assert!(child.wait().unwrap().success());
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
