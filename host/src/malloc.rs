//! glibc's allocator, set for a server that runs for months.
//!
//! glibc gives each thread that allocates under contention an arena of its
//! own, up to eight per core, and memory freed in one arena is reused only
//! by the threads of that arena. The host's threads — tokio's workers, the
//! blocking threads that decode, compress and recreate beside the guest
//! (`frames.rs`, `replicas.rs`), the converter's — each allocate and free
//! megabytes at a time, so each arena kept its own high-water mark: one
//! server converting two 50 MB layers reached a peak RSS of 281–332 MB
//! over three runs, 165–175 MB with two arenas, conversion and pull times
//! unchanged (an ad-hoc run of `blockreg serve`, two PUTs, two cold GETs,
//! `VmHWM` from `/proc`). The peak of `bench/compare.sh`'s push phase is
//! the benchmark's figure.

/// Arenas the server keeps: the value measured above (two threads may
/// share one while both allocate; the server's allocations are few and
/// large, so they rarely wait).
const ARENAS: i32 = 2;

/// Limits glibc's malloc to [`ARENAS`] arenas, unless the operator set
/// `MALLOC_ARENA_MAX` (glibc read it at start, and it stays). Call it
/// before any thread is started. Returns whether the limit was set here.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn limit_arenas() -> bool {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return false;
    }
    #[allow(
        unsafe_code,
        reason = "mallopt is glibc's documented way to set M_ARENA_MAX; it takes two integers and touches no Rust memory"
    )]
    // SAFETY: mallopt only changes the allocator's parameters; any value is
    // accepted or refused (returning 0), and it is called before the
    // program starts other threads.
    let set = unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENAS) };
    set == 1
}

/// Other allocators are left as they are.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn limit_arenas() -> bool {
    false
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_accepts_the_arena_limit_unless_the_operator_set_one() {
        let operator = std::env::var_os("MALLOC_ARENA_MAX").is_some();
        assert_eq!(super::limit_arenas(), !operator);
    }
}
