//! `blockreg check`: the guest's `admin.check` (the integrity check of
//! the store, `guest/src/check.rs`) in a fresh instance with the same
//! `/data` preopen as requests, and its report for people and scripts.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use crate::bindings::{AdminError, StoreCheck};
use crate::config::Limits;
use crate::store_lock::{Mode, StoreLock};
use crate::{ctx, guest};

/// Time limit of one check: reading every blob back of a large store
/// takes hours (gzip layers are recreated at tens of MB/s).
const CHECK_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

impl StoreCheck {
    /// No block or blob failed.
    pub fn is_clean(&self) -> bool {
        self.bad_blocks == 0 && self.bad_blobs == 0 && self.bad_manifests == 0
    }
}

impl fmt::Display for StoreCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for problem in &self.problems {
            writeln!(f, "problem: {problem}")?;
        }
        writeln!(
            f,
            "blocks         {} checked, {} bad",
            self.blocks, self.bad_blocks
        )?;
        writeln!(
            f,
            "packs          {} ({} named by no index record, {} bytes: reclaimable)",
            self.packs, self.unindexed_packs, self.unindexed_bytes
        )?;
        writeln!(
            f,
            "blobs          {} checked, {} bad",
            self.blobs, self.bad_blobs
        )?;
        writeln!(f, "bytes read     {}", self.bytes_read)?;
        writeln!(
            f,
            "manifests      {} checked, {} bad",
            self.manifests, self.bad_manifests
        )?;
        writeln!(
            f,
            "unreferenced   {} blobs, {} bytes (no manifest names them)",
            self.unreferenced_blobs, self.unreferenced_bytes
        )?;
        write!(
            f,
            "result         {}",
            if self.is_clean() {
                "no damage found"
            } else {
                "DAMAGED"
            }
        )
    }
}

/// Checks the store in `data_dir` with `guest`; `read_data` reads every
/// blob back to its digest. The check holds the store lock shared (as a
/// conversion does), so no garbage collection removes what it is reading
/// and it reports no blob being collected as damage; `waiting` runs once
/// if a collection holds the lock and the check waits for it.
///
/// # Errors
///
/// Fails when `data_dir` does not exist, the guest does not load or traps,
/// or the store cannot be listed. Damage is in the report, not an error.
pub async fn store_check(
    data_dir: &Path,
    guest: &crate::config::GuestSource,
    read_data: bool,
    waiting: impl FnOnce(),
) -> anyhow::Result<StoreCheck> {
    let data_dir = &crate::datadir::prepare(data_dir, false)?;
    let _lock = match StoreLock::try_acquire(data_dir, Mode::Shared)? {
        Some(lock) => lock,
        None => {
            waiting();
            StoreLock::acquire(data_dir, Mode::Shared).await?
        }
    };
    let limits = Limits::default();
    let loaded = guest::load(guest, data_dir, &limits, ctx::default_guest_settings()).await?;
    let result = guest::call_admin(
        &loaded.admin,
        data_dir,
        limits.max_memory_bytes,
        loaded.settings,
        CHECK_TIMEOUT,
        "check",
        move |admin, store| Box::pin(admin.call_check(store, read_data)),
    )
    .await?;
    match result {
        Ok(report) => Ok(report),
        Err(AdminError::Io(detail) | AdminError::Corrupt(detail) | AdminError::Other(detail)) => {
            anyhow::bail!("the store could not be checked: {detail}")
        }
    }
}
