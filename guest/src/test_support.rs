//! Fixtures for the guest's unit tests, which run under wasmtime through
//! `blockreg run` with a scratch directory preopened at `/scratch`.

use crate::settings::Settings;
use crate::store::Store;

/// Settings for tests: those of `blockreg serve` without flags, so a test
/// sees the registry users run; tests that need a limit change one field.
pub fn settings() -> Settings {
    Settings {
        delete_enabled: true,
        cache_bytes: 2 << 30,
        max_correction_ratio: 0.05,
        max_decoded_bytes: 4 << 30,
        max_decoded_ratio: 100.0,
        request_timeout_secs: 1800,
        accept_foreign_layers: true,
    }
}

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

/// A fresh store in its own directory under the scratch preopen.
pub fn scratch_store(name: &str) -> Store {
    let root = std::path::Path::new("/scratch").join(name);
    let _ = std::fs::remove_dir_all(&root);
    Store::open(root).expect("the test runner preopens /scratch")
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

/// Commits `data` as a blob awaiting conversion, as a finished push does.
pub fn commit_blob(store: &Store, data: &[u8]) -> crate::oci::Digest {
    let d = crate::oci::Digest::of(crate::oci::Algorithm::Sha256, data);
    let id = store.create_upload(&"t/r".parse().unwrap()).unwrap();
    let mut held = hold(store, &id);
    held.append(&mut &data[..], None).unwrap();
    crate::ingest::commit_upload(store, held, &d).unwrap();
    d
}

/// Holds a session that no other request uses.
pub fn hold(store: &Store, id: &crate::store::UploadId) -> crate::store::HeldUpload {
    let lease = std::time::Duration::from_secs(60);
    match store
        .hold_upload(id, lease, std::time::Duration::ZERO)
        .unwrap()
    {
        crate::store::Hold::Held(h) => h,
        other => panic!("session not holdable: {other:?}"),
    }
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
