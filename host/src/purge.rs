//! Expiry of abandoned upload sessions (`storage.maintenance.uploadpurging`,
//! registry:2's upload purging): every `interval`, the guest's
//! `admin.purge-uploads` removes the sessions that no request has touched
//! for `age`.
//!
//! A client that gives up on a push (a cancelled CI job, a crashed runner)
//! leaves its session and the bytes it sent; nothing else ever removes
//! them. Idleness is counted from the last byte appended (the session
//! file's modification time), so a slow upload that keeps sending is never
//! cut off, and the guest holds each session the way a request would
//! before judging it, so one being written to at that moment is skipped.
//!
//! The first purge runs [`FIRST_AFTER`] after start (or after `interval`
//! when that is shorter): a registry restarted daily would otherwise never
//! reach a 24-hour interval. Each purge runs in its own guest instance with
//! the guest that serves at that moment, under [`PURGE_TIMEOUT`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::bindings::{AdminError, Purge};
use crate::config::{Limits, UploadPurging};
use crate::guest::{self, GuestSlot};
use crate::metrics::Metrics;
use crate::shutdown::Stop;

/// Delay of the first purge after start, at most.
const FIRST_AFTER: Duration = Duration::from_secs(60);

/// Time limit of one purge (it lists `uploads/` and holds each session).
const PURGE_TIMEOUT: Duration = Duration::from_secs(600);

/// Runs purges until `stop`; returns at once when purging is off.
pub(crate) async fn run(
    slot: Arc<GuestSlot>,
    data_dir: PathBuf,
    limits: Limits,
    config: UploadPurging,
    metrics: Arc<Metrics>,
    mut stop: Stop,
) {
    if !config.enabled || config.interval.is_zero() {
        return;
    }
    let mut pause = config.interval.min(FIRST_AFTER);
    loop {
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = stop.stopped() => return,
        }
        pause = config.interval;
        let purge = tokio::select! {
            purge = purge_once(&slot, &data_dir, &limits, config) => purge,
            () = stop.stopped() => return,
        };
        match purge {
            Ok(p) if config.dry_run => {
                if p.sessions > 0 {
                    tracing::info!(
                        target: "blockreg::purge",
                        "dry run: {} upload sessions ({} bytes) idle for over {:?} would be removed; {} kept",
                        p.sessions, p.bytes, config.age, p.kept
                    );
                }
            }
            Ok(p) => {
                metrics.uploads_purged(p.sessions, p.bytes);
                if p.sessions > 0 {
                    tracing::info!(
                        target: "blockreg::purge",
                        "removed {} upload sessions ({} bytes) idle for over {:?}; {} kept",
                        p.sessions, p.bytes, config.age, p.kept
                    );
                }
            }
            Err(e) => tracing::warn!(target: "blockreg::purge", "upload purge failed: {e:#}"),
        }
    }
}

/// One call of `admin.purge-uploads`.
async fn purge_once(
    slot: &GuestSlot,
    data_dir: &std::path::Path,
    limits: &Limits,
    config: UploadPurging,
) -> anyhow::Result<Purge> {
    let loaded = slot.current();
    let age = config.age.as_secs();
    let dry_run = config.dry_run;
    let result = guest::call_admin(
        &loaded.admin,
        data_dir,
        limits.max_memory_bytes,
        loaded.settings,
        PURGE_TIMEOUT,
        "purge-uploads",
        move |admin, store| Box::pin(admin.call_purge_uploads(store, age, dry_run)),
    )
    .await?;
    match result {
        Ok(purge) => Ok(purge),
        Err(AdminError::Io(detail) | AdminError::Corrupt(detail) | AdminError::Other(detail)) => {
            anyhow::bail!("{detail}")
        }
    }
}
