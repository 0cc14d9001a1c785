//! Per-client limits that protect the service from one client: how many
//! requests it may send per second, how many uploads it may have in flight,
//! and how many failed logins it may try per minute. A client is its peer
//! IP address (the registry sees no other identity before authenticating;
//! behind a proxy that hides client addresses, every client is the proxy's
//! address, so leave the request rate off there).
//!
//! A refused request gets 429 `TOOMANYREQUESTS` with `Retry-After` from the
//! host (`error.rs`), before any guest runs and, for a locked-out client,
//! before bcrypt does: a brute-force loop costs a hash map lookup.
//!
//! The request rate is a GCRA per address (the `governor` crate); uploads
//! and login failures are counters in a map. All three forget idle clients,
//! so a scan from many addresses cannot grow them without bound.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::ClientLimits;

/// The window login failures are counted in.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Clients remembered by a map before idle ones are swept out.
const SWEEP_AT: usize = 4096;

/// The three per-client limits of a running server.
pub(crate) struct Throttle {
    requests: Option<DefaultKeyedRateLimiter<IpAddr>>,
    clock: DefaultClock,
    checks: AtomicU64,
    max_uploads: usize,
    uploads: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max_failures: u32,
    failures: Mutex<HashMap<IpAddr, Strikes>>,
}

/// Login failures of one client in the current window.
struct Strikes {
    since: Instant,
    count: u32,
}

/// How long a refused client should wait before trying again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RetryAfter(pub(crate) Duration);

impl RetryAfter {
    /// Whole seconds for the `Retry-After` header, at least 1.
    pub(crate) fn seconds(self) -> u64 {
        self.0.as_secs_f64().ceil().max(1.0) as u64
    }
}

impl Throttle {
    pub(crate) fn new(limits: &ClientLimits) -> Self {
        let requests = NonZeroU32::new(limits.request_rate).map(|rate| {
            let burst = NonZeroU32::new(limits.request_burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Self {
            requests,
            clock: DefaultClock::default(),
            checks: AtomicU64::new(0),
            max_uploads: limits.max_uploads,
            uploads: Arc::default(),
            max_failures: limits.auth_failures_per_minute,
            failures: Mutex::default(),
        }
    }

    /// Counts one request of `client` against its rate.
    pub(crate) fn request(&self, client: IpAddr) -> Result<(), RetryAfter> {
        let Some(limiter) = &self.requests else {
            return Ok(());
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % 1024 == 1023 {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        limiter
            .check_key(&client)
            .map_err(|not_until| RetryAfter(not_until.wait_time_from(self.clock.now())))
    }

    /// Takes one of `client`'s upload places until the guard is dropped;
    /// `None` when it already has its maximum in flight.
    pub(crate) fn upload(&self, client: IpAddr) -> Option<UploadGuard> {
        if self.max_uploads > 0 {
            let mut uploads = lock(&self.uploads);
            let count = uploads.entry(client).or_default();
            if *count >= self.max_uploads {
                return None;
            }
            *count += 1;
        }
        Some(UploadGuard {
            client,
            uploads: (self.max_uploads > 0).then(|| self.uploads.clone()),
        })
    }

    /// Whether `client` failed to log in too often in the last minute, and
    /// how long until it may try again.
    pub(crate) fn locked_out(&self, client: IpAddr) -> Option<RetryAfter> {
        if self.max_failures == 0 {
            return None;
        }
        let failures = lock(&self.failures);
        let strikes = failures.get(&client)?;
        let elapsed = strikes.since.elapsed();
        (strikes.count >= self.max_failures && elapsed < FAILURE_WINDOW)
            .then(|| RetryAfter(FAILURE_WINDOW - elapsed))
    }

    /// Records a failed login of `client`.
    pub(crate) fn failed_login(&self, client: IpAddr) {
        if self.max_failures == 0 {
            return;
        }
        let mut failures = lock(&self.failures);
        if failures.len() >= SWEEP_AT {
            failures.retain(|_, strikes| strikes.since.elapsed() < FAILURE_WINDOW);
        }
        let now = Instant::now();
        let strikes = failures.entry(client).or_insert(Strikes {
            since: now,
            count: 0,
        });
        if now.duration_since(strikes.since) >= FAILURE_WINDOW {
            *strikes = Strikes {
                since: now,
                count: 0,
            };
        }
        strikes.count = strikes.count.saturating_add(1);
    }
}

/// One upload of a client in flight; gives its place back when dropped.
pub(crate) struct UploadGuard {
    client: IpAddr,
    /// `None` when uploads are not limited.
    uploads: Option<Arc<Mutex<HashMap<IpAddr, usize>>>>,
}

impl Drop for UploadGuard {
    fn drop(&mut self) {
        let Some(uploads) = &self.uploads else {
            return;
        };
        let mut uploads = lock(uploads);
        if let Some(count) = uploads.get_mut(&self.client) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                uploads.remove(&self.client);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Counters stay meaningful if a holder panicked.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rate: u32, burst: u32, uploads: usize, failures: u32) -> ClientLimits {
        ClientLimits {
            request_rate: rate,
            request_burst: burst,
            max_uploads: uploads,
            auth_failures_per_minute: failures,
        }
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn a_client_over_its_burst_waits_and_others_do_not() {
        let throttle = Throttle::new(&limits(2, 5, 0, 0));
        for _ in 0..5 {
            assert_eq!(throttle.request(A), Ok(()));
        }
        let wait = throttle.request(A).unwrap_err();
        assert!(wait.0 <= Duration::from_millis(500), "{wait:?}");
        assert_eq!(wait.seconds(), 1);
        assert_eq!(throttle.request(B), Ok(()));
    }

    #[test]
    fn a_zero_rate_never_refuses() {
        let throttle = Throttle::new(&limits(0, 0, 0, 0));
        for _ in 0..10_000 {
            assert_eq!(throttle.request(A), Ok(()));
        }
    }

    #[test]
    fn uploads_in_flight_are_capped_per_client_and_given_back() {
        let throttle = Throttle::new(&limits(0, 0, 2, 0));
        let first = throttle.upload(A).unwrap();
        let _second = throttle.upload(A).unwrap();
        assert!(throttle.upload(A).is_none());
        assert!(throttle.upload(B).is_some());
        drop(first);
        assert!(throttle.upload(A).is_some());
    }

    #[test]
    fn repeated_login_failures_lock_the_client_out_for_the_window() {
        let throttle = Throttle::new(&limits(0, 0, 0, 3));
        for _ in 0..2 {
            throttle.failed_login(A);
        }
        assert_eq!(throttle.locked_out(A), None);
        throttle.failed_login(A);
        let wait = throttle.locked_out(A).unwrap();
        assert!(wait.0 > Duration::from_secs(55), "{wait:?}");
        assert_eq!(throttle.locked_out(B), None);
    }
}
