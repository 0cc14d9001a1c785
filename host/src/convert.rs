//! The background converter: the host schedules the guest's
//! `admin.convert-next` one blob (or one batch of small blobs) at a time, so
//! pushes are answered at stream speed and the slow part (analysing gzip
//! layers so they can be recreated bit for bit, cutting their tar into
//! blocks) happens afterwards. Calls alternate the guest's two queues
//! (small blobs in batches, large ones alone), so a run of slow blobs —
//! decompression bombs, big layers, blobs that trapped — holds up the small
//! ones by one blob at a time at most, and the other way round.
//!
//! One conversion runs at a time, in its own guest instance under the
//! per-instance memory limit, always with the guest that serves at that
//! moment (a hot swap takes effect at the next blob).
//!
//! Scheduling: the converter has an OS thread of its own
//! (`blockreg-convert`, a current-thread tokio runtime), and is never paused
//! for requests. The kernel's scheduler shares the CPU between it and the
//! request workers, so conversion makes steady progress however busy the
//! registry is, and requests keep every other core. The
//! threads of the request runtime (workers and their blocking threads) run
//! [`REQUEST_NICE`] steps below it ([`lower_request_thread_priority`]):
//! with equal priority, eight busy clients on two cores cut conversion to
//! 0.41 of its idle throughput (0.55 at 5 steps below, 1.06 at 10, while
//! the clients' request rate fell from 575/s to 512/s:
//! `bench/convert-under-load.py --phases idle,busy --layer-mib 12
//! --layers 6`). A backlog that can only grow under load is a store that
//! never shrinks; the converter is one thread, so at its priority it never
//! takes more than one core. Its helpers — blocking threads that compress
//! and decode pack frames beside it (`frames.rs`) — run at the request
//! threads' priority, so they use a spare core when there is one and share
//! with requests when there is not. When the CPU is not saturated the
//! priorities change nothing. Its guest file I/O
//! blocks only its own thread. An earlier design ran it on the request
//! runtime and stopped polling it while any request was open; one client
//! trickling a body then slowed conversion fivefold, and 8 busy clients
//! nearly stopped it (issue 13, defect 10).
//!
//! The loop asks for the next blob as soon as one is done. It pauses only
//! when the guest has nothing to convert (until a blob is committed, or
//! [`IDLE_POLL`]) or after [`ERRORS_BEFORE_BACKOFF`] failures in a row
//! (growing to [`MAX_BACKOFF`]): a single failure is the blob's, and the
//! guest records it and moves on; a run of them is the store's (disk full, a
//! broken guest). Progress is logged as blobs and bytes per [`REPORT_EVERY`].
//!
//! Each call holds the store lock shared (`store_lock.rs`): a garbage
//! collection, which holds it exclusive, waits for the call in progress,
//! and the converter waits (trying every [`LOCK_POLL`]) while one runs.
//! Between two calls the lock is left free for [`HANDOVER`], so that a
//! collection waiting for it gets it.
//!
//! Stopping the server drops a conversion mid-way; the guest keeps a blob's
//! original until its recipe is committed, so the next start simply converts
//! it again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::Notify;

use crate::bindings::{Conversion, Encoding, Queue};
use crate::config::Limits;
use crate::guest::{self, GuestSlot};
use crate::metrics::Metrics;
use crate::shutdown::Stop;
use crate::store_lock::{Mode, StoreLock, HANDOVER};

/// How many nice steps below the converter (and the process as started)
/// request threads run: CFS weights 1024 against 110, so under full load
/// the converter's one thread gets a core while the request threads share
/// the rest.
pub const REQUEST_NICE: i32 = 10;

/// The calling thread's nice value (0 when it cannot be read).
#[must_use]
pub fn current_nice() -> i32 {
    rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap_or(0)
}

/// Sets the calling thread's nice value to `base` + [`REQUEST_NICE`]: for
/// the request runtime's `on_thread_start`, with `base` read before the
/// runtime was built. Linux keeps a nice value per thread, and a thread
/// inherits its creator's; raising it needs no privilege. Failure (another
/// OS, a sandbox that forbids it) leaves the thread as it is.
pub fn lower_request_thread_priority(base: i32) {
    let tid = rustix::thread::gettid();
    let _ = rustix::process::setpriority_process(Some(tid), base + REQUEST_NICE);
}

/// How often an idle converter looks for work it was not told about.
const IDLE_POLL: Duration = Duration::from_secs(5);
/// Wall-clock budget of one blob's conversion.
const CONVERT_TIMEOUT: Duration = Duration::from_secs(3600);
/// Failures in a row retried at once, before the converter backs off.
const ERRORS_BEFORE_BACKOFF: u32 = 3;
/// The first pause after that many failures; it doubles with each further
/// failure, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often a converter kept out by a garbage collection tries the store
/// lock again.
const LOCK_POLL: Duration = Duration::from_secs(1);
/// How often progress is logged while there is work.
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// A bell rung when a blob was committed: wakes an idle converter.
#[derive(Debug, Default)]
pub(crate) struct NewBlobs(Notify);

impl NewBlobs {
    /// Tells the converter that a new blob may be waiting.
    pub(crate) fn committed(&self) {
        self.0.notify_one();
    }
}

/// The running converter thread.
pub(crate) struct Converter {
    thread: std::thread::JoinHandle<()>,
}

impl Converter {
    /// Waits, off the async executor, until the thread has ended (after
    /// `stop` was triggered).
    pub(crate) async fn join(self) {
        let thread = self.thread;
        if let Ok(Err(_)) = tokio::task::spawn_blocking(move || thread.join()).await {
            tracing::error!("the converter thread panicked");
        }
    }
}

/// Starts converting on a thread of its own until `stop` is triggered.
///
/// # Errors
///
/// Fails when the thread or its runtime cannot be created.
pub(crate) fn spawn(
    slot: Arc<GuestSlot>,
    data_dir: PathBuf,
    limits: Limits,
    new_blobs: Arc<NewBlobs>,
    metrics: Arc<Metrics>,
    stop: Stop,
) -> anyhow::Result<Converter> {
    // Work the converter hands to blocking threads (frames compressed and
    // decoded beside it, `frames.rs`) runs at the request threads'
    // priority: the converter itself keeps one core under load, its
    // helpers take only what requests would get.
    let base_nice = current_nice();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .on_thread_start(move || lower_request_thread_priority(base_nice))
        .enable_all()
        .build()
        .context("creating the converter's runtime")?;
    let thread = std::thread::Builder::new()
        .name("blockreg-convert".into())
        .spawn(move || {
            runtime.block_on(run(slot, data_dir, limits, new_blobs, &metrics, stop));
        })
        .context("starting the converter thread")?;
    Ok(Converter { thread })
}

/// What one call of `convert-next` came to.
enum Outcome {
    /// Blobs were converted (and perhaps some of the batch failed: each
    /// failure is that blob's, recorded by the guest).
    Converted {
        blobs: u64,
        bytes: u64,
    },
    NothingToDo,
    Failed,
}

/// Runs conversions until `stop` is triggered.
async fn run(
    slot: Arc<GuestSlot>,
    data_dir: PathBuf,
    limits: Limits,
    new_blobs: Arc<NewBlobs>,
    metrics: &Metrics,
    mut stop: Stop,
) {
    let mut failures: u32 = 0;
    let mut progress = Progress::new(Instant::now());
    let mut turn = Queue::Small;
    loop {
        if stop.is_stopped() {
            return;
        }
        let first = turn;
        turn = match turn {
            Queue::Small => Queue::Large,
            Queue::Large => Queue::Small,
        };
        let mut collecting = false;
        let locked = StoreLock::acquire_polling(
            &data_dir,
            Mode::Shared,
            LOCK_POLL,
            &mut stop,
            || {
                tracing::info!(target: "blockreg::convert", "conversion waits: a garbage collection holds the store");
                collecting = true;
            },
        )
        .await;
        let outcome = match locked {
            Ok(None) => return,
            Ok(Some(lock)) => {
                if collecting {
                    tracing::info!(target: "blockreg::convert", "a garbage collection held the store; conversion resumes");
                }
                let outcome = tokio::select! {
                    outcome = convert_one(&slot, &data_dir, &limits, metrics, first) => outcome,
                    () = stop.stopped() => return,
                };
                drop(lock);
                outcome
            }
            Err(e) => {
                tracing::error!(target: "blockreg::convert", "conversion cannot lock the store: {e}");
                Outcome::Failed
            }
        };
        let pause = match outcome {
            Outcome::Converted { blobs, bytes } => {
                failures = 0;
                progress.converted(blobs, bytes);
                None
            }
            Outcome::NothingToDo => {
                failures = 0;
                progress.idle(Instant::now());
                Some((IDLE_POLL, true))
            }
            Outcome::Failed => {
                failures += 1;
                backoff(failures).map(|pause| (pause, false))
            }
        };
        progress.report_if_due(Instant::now());
        let (pause, wake_on_commit) = pause.unwrap_or((HANDOVER, false));
        tokio::select! {
            () = new_blobs.0.notified(), if wake_on_commit => {}
            () = tokio::time::sleep(pause) => {}
            () = stop.stopped() => return,
        }
    }
}

/// Converts the next blob, if any, in a fresh instance of the current guest,
/// and logs what happened.
async fn convert_one(
    slot: &GuestSlot,
    data_dir: &std::path::Path,
    limits: &Limits,
    metrics: &Metrics,
    first: Queue,
) -> Outcome {
    let loaded = slot.current();
    let started = Instant::now();
    let result = guest::call_admin(
        &loaded.admin,
        data_dir,
        limits.max_memory_bytes,
        loaded.settings,
        CONVERT_TIMEOUT,
        "convert-next",
        move |admin, store| Box::pin(admin.call_convert_next(store, first)),
    )
    .await;
    let outcomes = match result {
        Ok(Ok(outcomes)) => outcomes,
        Ok(Err(e)) => {
            tracing::warn!(target: "blockreg::convert", "conversion failed: {e:?}");
            metrics.conversion(0, 1, 0, started.elapsed().as_secs_f64());
            return Outcome::Failed;
        }
        // A trap, a timeout, or a store that cannot be opened.
        Err(e) => {
            tracing::error!(target: "blockreg::convert", "conversion failed: {e:#}");
            metrics.conversion(0, 1, 0, started.elapsed().as_secs_f64());
            return Outcome::Failed;
        }
    };
    let secs = started.elapsed().as_secs_f64();
    let batch = if outcomes.len() > 1 {
        format!(" (one of {} small blobs sharing a pack)", outcomes.len())
    } else {
        String::new()
    };
    let (mut blobs, mut bytes) = (0, 0);
    let mut failed = 0;
    for outcome in &outcomes {
        match outcome {
            Ok(c) => {
                blobs += 1;
                bytes += c.size;
                log_converted(c, &batch, secs);
            }
            Err(f) => {
                failed += 1;
                tracing::warn!(
                    target: "blockreg::convert",
                    "converting {} failed{batch}: {:?}",
                    f.digest,
                    f.error
                );
            }
        }
    }
    if blobs + failed > 0 {
        metrics.conversion(blobs, failed, bytes, secs);
    }
    match (blobs, failed) {
        (0, 0) => Outcome::NothingToDo,
        (0, _) => Outcome::Failed,
        _ => Outcome::Converted { blobs, bytes },
    }
}

fn log_converted(c: &Conversion, batch: &str, secs: f64) {
    let how = match &c.fallback {
        Some(why) => format!("raw ({why})"),
        None => match c.encoding {
            Encoding::Raw => "raw".to_string(),
            Encoding::Gzip => "gzip".to_string(),
            Encoding::Zstd => "zstd".to_string(),
        },
    };
    tracing::info!(
        target: "blockreg::convert",
        "converted {} as {how}: {} bytes, {} content bytes, {} new blocks ({} bytes) in {secs:.1}s{batch}",
        c.digest,
        c.size,
        c.content_bytes,
        c.new_blocks,
        c.new_bytes,
    );
}

/// The pause after `failures` failed calls in a row, if any.
fn backoff(failures: u32) -> Option<Duration> {
    let beyond = failures.checked_sub(ERRORS_BEFORE_BACKOFF)?;
    let factor = 1u32.checked_shl(beyond).unwrap_or(u32::MAX);
    Some(FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF))
}

/// Blobs and bytes converted since the last report.
struct Progress {
    since: Instant,
    blobs: u64,
    bytes: u64,
}

impl Progress {
    fn new(now: Instant) -> Self {
        Self {
            since: now,
            blobs: 0,
            bytes: 0,
        }
    }

    fn converted(&mut self, blobs: u64, bytes: u64) {
        self.blobs += blobs;
        self.bytes += bytes;
    }

    /// The backlog is done: reports what is left to report and restarts
    /// the window, so a quiet period does not dilute the next rate.
    fn idle(&mut self, now: Instant) {
        if self.blobs > 0 {
            self.report(now);
        }
        *self = Self::new(now);
    }

    fn report_if_due(&mut self, now: Instant) {
        if now.duration_since(self.since) >= REPORT_EVERY {
            if self.blobs > 0 {
                self.report(now);
            }
            *self = Self::new(now);
        }
    }

    fn report(&self, now: Instant) {
        let secs = now.duration_since(self.since).as_secs_f64().max(0.001);
        tracing::info!(
            target: "blockreg::convert",
            "progress: {} blobs, {:.1} MiB in {secs:.0}s ({:.0} blobs/min, {:.1} MiB/min)",
            self.blobs,
            self.bytes as f64 / f64::from(1 << 20),
            self.blobs as f64 * 60.0 / secs,
            self.bytes as f64 / f64::from(1 << 20) * 60.0 / secs,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_retried_at_once_then_ever_more_slowly() {
        for failures in 1..ERRORS_BEFORE_BACKOFF {
            assert_eq!(backoff(failures), None, "after {failures} failures");
        }
        assert_eq!(backoff(ERRORS_BEFORE_BACKOFF), Some(FIRST_BACKOFF));
        assert_eq!(backoff(ERRORS_BEFORE_BACKOFF + 1), Some(FIRST_BACKOFF * 2));
        assert_eq!(backoff(ERRORS_BEFORE_BACKOFF + 40), Some(MAX_BACKOFF));
        assert_eq!(backoff(u32::MAX), Some(MAX_BACKOFF));
    }
}
