//! `blockreg stats`: the store's size and deduplication figures, computed by
//! the guest's `admin.get-stats` in a fresh instance with the same `/data`
//! preopen as requests. The figures are the `stats` record generated from
//! `wit/admin.wit` (its fields are documented there); this file adds the
//! ratio and the two ways of printing them.

use std::fmt;
use std::path::Path;

use serde::Serialize;

use crate::bindings::{AdminError, StoreStats};
use crate::config::{GuestSource, Limits};
use crate::{ctx, guest};

impl StoreStats {
    /// Stored bytes as a share of what a layer-level store (registry:2)
    /// would keep; 1.0 for an empty store.
    pub fn ratio(&self) -> f64 {
        if self.logical_bytes == 0 {
            1.0
        } else {
            self.stored_bytes as f64 / self.logical_bytes as f64
        }
    }

    /// Share of the logical bytes that the store saved, in percent.
    pub fn saved_percent(&self) -> f64 {
        100.0 * (1.0 - self.ratio())
    }

    /// One JSON object with the snake_case fields plus `ratio`
    /// (stored bytes / logical bytes).
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct WithRatio<'a> {
            #[serde(flatten)]
            stats: &'a StoreStats,
            ratio: f64,
        }
        serde_json::to_string(&WithRatio {
            stats: self,
            ratio: self.ratio(),
        })
        .expect("plain numbers always serialise")
    }
}

impl fmt::Display for StoreStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "logical bytes  {}", bytes(self.logical_bytes))?;
        writeln!(f, "stored bytes   {}", bytes(self.stored_bytes))?;
        writeln!(
            f,
            "ratio          {:.3} of a layer store (saved {:.1}%)",
            self.ratio(),
            self.saved_percent()
        )?;
        writeln!(f, "unique bytes   {}", bytes(self.block_bytes))?;
        writeln!(f, "unique blocks  {}", self.blocks)?;
        writeln!(f, "packs          {}", self.packs)?;
        writeln!(f, "cache bytes    {}", bytes(self.cache_bytes))?;
        writeln!(f, "blobs          {}", self.blobs)?;
        writeln!(f, "pending        {}", self.pending)?;
        writeln!(f, "failed         {}", self.failed)?;
        writeln!(f, "repositories   {}", self.repositories)?;
        writeln!(f, "manifests      {}", self.manifests)?;
        writeln!(f, "uploads        {}", self.uploads)?;
        write!(f, "temporary      {}", bytes(self.temporary_bytes))
    }
}

/// `12345678 (11.8 MiB)`: exact for scripts, readable for people.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n}");
    }
    let mut value = n as f64;
    let mut unit = "B";
    for next in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    format!("{n} ({value:.1} {unit})")
}

/// Asks `guest` for the figures of the store in `data_dir`.
///
/// # Errors
///
/// Fails when `data_dir` does not exist, the guest does not load or traps,
/// or the guest reports an `admin` error (unreadable or corrupt store).
pub async fn store_stats(data_dir: &Path, guest: &GuestSource) -> anyhow::Result<StoreStats> {
    let data_dir = &crate::datadir::prepare(data_dir, false)?;
    let limits = Limits::default();
    // Statistics depend on no setting; the defaults satisfy the import.
    let loaded = guest::load(guest, data_dir, &limits, ctx::default_guest_settings()).await?;
    get_stats(&loaded, data_dir, &limits, limits.request_timeout).await
}

/// Asks a loaded guest for the figures of the store in `data_dir`, with a
/// time limit (the metrics ask a running server's guest, `debug.rs`).
///
/// # Errors
///
/// As [`store_stats`].
pub(crate) async fn get_stats(
    loaded: &guest::LoadedGuest,
    data_dir: &Path,
    limits: &Limits,
    timeout: std::time::Duration,
) -> anyhow::Result<StoreStats> {
    let result = guest::call_admin(
        &loaded.admin,
        data_dir,
        limits.max_memory_bytes,
        loaded.settings,
        timeout,
        "get-stats",
        |admin, store| Box::pin(admin.call_get_stats(store)),
    )
    .await?;
    match result {
        Ok(stats) => Ok(stats),
        Err(AdminError::Io(detail)) => anyhow::bail!("the store could not be read: {detail}"),
        Err(AdminError::Corrupt(detail)) => anyhow::bail!("the store is corrupt: {detail}"),
        Err(AdminError::Other(detail)) => anyhow::bail!("get-stats failed: {detail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StoreStats {
        StoreStats {
            logical_bytes: 10_000,
            blobs: 4,
            blocks: 3,
            block_bytes: 12_000,
            packs: 1,
            stored_bytes: 4_000,
            cache_bytes: 100,
            pending: 1,
            failed: 0,
            repositories: 1,
            manifests: 2,
            uploads: 0,
            temporary_bytes: 0,
        }
    }

    #[test]
    fn ratio_is_stored_over_logical() {
        assert_eq!(sample().ratio(), 0.4);
        assert!((sample().saved_percent() - 60.0).abs() < 1e-9);
    }

    #[test]
    fn empty_store_has_ratio_one_and_saves_nothing() {
        let empty = StoreStats {
            logical_bytes: 0,
            stored_bytes: 0,
            ..sample()
        };
        assert_eq!(empty.ratio(), 1.0);
        assert_eq!(empty.saved_percent(), 0.0);
    }

    #[test]
    fn json_has_snake_case_fields_and_ratio() {
        let json: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "logical_bytes": 10_000, "blobs": 4, "blocks": 3, "block_bytes": 12_000,
                "packs": 1, "stored_bytes": 4_000, "cache_bytes": 100, "pending": 1,
                "failed": 0, "repositories": 1, "manifests": 2, "uploads": 0, "temporary_bytes": 0,
                "ratio": 0.4
            })
        );
    }

    #[test]
    fn text_names_every_figure() {
        let text = sample().to_string();
        for label in [
            "logical bytes",
            "stored bytes",
            "ratio          0.400 of a layer store (saved 60.0%)",
            "unique bytes",
            "unique blocks",
            "packs",
            "cache bytes",
            "blobs",
            "pending",
            "repositories",
            "manifests",
            "uploads",
            "temporary",
        ] {
            assert!(text.contains(label), "{label} missing from:\n{text}");
        }
    }

    #[test]
    fn byte_counts_show_exact_and_binary_units() {
        assert_eq!(bytes(512), "512");
        assert_eq!(bytes(1536), "1536 (1.5 KiB)");
        assert_eq!(bytes(3 << 30), "3221225472 (3.0 GiB)");
    }
}
