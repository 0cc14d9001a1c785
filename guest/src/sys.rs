//! The few host services the guest uses besides the filesystem.

/// `n` random bytes from `wasi:random`.
pub fn random_bytes(n: usize) -> Vec<u8> {
    crate::bindings::wasi::random::random::get_random_bytes(n as u64)
}
