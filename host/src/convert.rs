//! The background converter: the host schedules the guest's
//! `admin.convert-next` one blob at a time, so pushes are answered at stream
//! speed and the slow part (analysing gzip layers so they can be recreated
//! bit for bit, cutting their tar into blocks) happens afterwards.
//!
//! One conversion runs at a time, in its own guest instance under the
//! per-instance memory limit, always with the guest that serves at that
//! moment (a hot swap takes effect at the next blob). It yields to requests:
//! while any request is in flight the conversion's instance is not polled
//! (it pauses at its next epoch yield), for at most [`MAX_PAUSE`] in a row,
//! so a continuously busy registry still converts. Stopping the server drops
//! a conversion mid-way; the guest keeps a blob's original until its recipe
//! is committed, so the next start simply converts it again.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

use crate::config::Limits;
use crate::ctx;
use crate::error::wasm_err;
use crate::guest::{self, GuestSlot};

/// Longest a conversion waits for requests to finish before it runs anyway.
const MAX_PAUSE: Duration = Duration::from_secs(5);
/// How long a conversion then runs before it may pause again.
const MIN_RUN: Duration = Duration::from_secs(1);
/// How often an idle converter looks for work it was not told about.
const IDLE_POLL: Duration = Duration::from_secs(5);
/// Wall-clock budget of one blob's conversion.
const CONVERT_TIMEOUT: Duration = Duration::from_secs(3600);

/// Requests in flight, and a bell rung when a blob was committed.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    active: AtomicUsize,
    committed: Notify,
}

/// Counts one request as in flight until dropped.
pub(crate) struct InFlight(Arc<Activity>);

impl Activity {
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.active.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// Tells the converter that a new blob may be waiting.
    pub(crate) fn blob_committed(&self) {
        self.committed.notify_one();
    }

    fn busy(&self) -> bool {
        self.active.load(Ordering::SeqCst) > 0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Polls `inner` only while no request is in flight, within the bounds of
/// [`MAX_PAUSE`] and [`MIN_RUN`].
struct Yielding<F> {
    inner: Pin<Box<F>>,
    activity: Arc<Activity>,
    paused_since: Option<Instant>,
    running_since: Option<Instant>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<F: Future> Future for Yielding<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let now = Instant::now();
        let must_run = self
            .running_since
            .is_some_and(|t| now.duration_since(t) < MIN_RUN);
        if self.activity.busy() && !must_run {
            let since = *self.paused_since.get_or_insert(now);
            if now.duration_since(since) < MAX_PAUSE {
                self.running_since = None;
                let sleep = self
                    .sleep
                    .insert(Box::pin(tokio::time::sleep(Duration::from_millis(20))));
                if sleep.as_mut().poll(cx).is_ready() {
                    cx.waker().wake_by_ref();
                }
                return Poll::Pending;
            }
            self.running_since = Some(now);
        }
        if !must_run && !self.activity.busy() {
            self.running_since = None;
        }
        self.paused_since = None;
        self.inner.as_mut().poll(cx)
    }
}

/// Runs conversions until `stop` turns true.
pub(crate) async fn run(
    slot: Arc<GuestSlot>,
    data_dir: PathBuf,
    limits: Limits,
    activity: Arc<Activity>,
    mut stop: watch::Receiver<bool>,
) {
    let engine = match guest::runtime() {
        Ok(r) => r.engine.clone(),
        Err(e) => {
            tracing::error!("converter not started: {e:#}");
            return;
        }
    };
    loop {
        if *stop.borrow() {
            return;
        }
        let loaded = slot.current();
        let mut store = match ctx::new_store(&engine, &data_dir, limits.max_memory_bytes) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("converter: cannot prepare an instance: {:#}", wasm_err(e));
                return;
            }
        };
        let started = Instant::now();
        let call = async {
            let admin = loaded.admin.instantiate_async(&mut store).await?;
            admin
                .blockreg_registry_admin()
                .call_convert_next(&mut store)
                .await
        };
        let gated = Yielding {
            inner: Box::pin(tokio::time::timeout(CONVERT_TIMEOUT, call)),
            activity: activity.clone(),
            paused_since: None,
            running_since: None,
            sleep: None,
        };
        let outcome = tokio::select! {
            r = gated => r,
            () = guest::stopped(&mut stop) => return,
        };
        let wait = match outcome {
            Ok(Ok(Ok(Some(c)))) => {
                let how = match &c.fallback {
                    Some(why) => format!("raw ({why})"),
                    None => c.encoding.clone(),
                };
                tracing::info!(
                    target: "blockreg::convert",
                    "converted {} as {how}: {} bytes, {} content bytes, {} new blocks ({} bytes) in {:.1}s",
                    c.digest,
                    c.size,
                    c.content_bytes,
                    c.new_blocks,
                    c.new_bytes,
                    started.elapsed().as_secs_f64()
                );
                None
            }
            Ok(Ok(Ok(None))) => Some(IDLE_POLL),
            Ok(Ok(Err(e))) => {
                tracing::warn!(target: "blockreg::convert", "conversion failed: {e:?}");
                Some(Duration::from_secs(10))
            }
            Ok(Err(trap)) => {
                tracing::error!(target: "blockreg::convert", "conversion trapped: {:#}", wasm_err(trap));
                Some(Duration::from_secs(10))
            }
            Err(_) => {
                tracing::error!(target: "blockreg::convert", "conversion timed out");
                Some(Duration::from_secs(10))
            }
        };
        drop(store);
        if let Some(wait) = wait {
            tokio::select! {
                () = activity.committed.notified() => {}
                () = tokio::time::sleep(wait) => {}
                () = guest::stopped(&mut stop) => return,
            }
        }
    }
}
