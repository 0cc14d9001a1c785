//! Fixtures for the guest's unit tests, which run under wasmtime through
//! `blockreg run` with a scratch directory preopened at `/scratch`.

use crate::store::Store;

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
