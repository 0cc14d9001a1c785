//! `blockreg stats`: the store's size and deduplication figures, computed by
//! the guest's `admin.get-stats` in a fresh instance with the same `/data`
//! preopen as requests. The figures are the `stats` record generated from
//! `wit/admin.wit` (its fields are documented there); this file adds the
//! ratio and the two ways of printing them, with the blobs a garbage
//! collection would reclaim and what the last one did.

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
        writeln!(
            f,
            "decoded        {} gzip + {} zstd blobs (content + corrections)",
            self.gzip_blobs, self.zstd_blobs
        )?;
        writeln!(
            f,
            "as they came   {} blobs, {}",
            self.raw_blobs,
            bytes(self.raw_bytes)
        )?;
        writeln!(f, "failed         {}", self.failed)?;
        writeln!(f, "repositories   {}", self.repositories)?;
        writeln!(f, "manifests      {}", self.manifests)?;
        writeln!(f, "uploads        {}", self.uploads)?;
        writeln!(f, "temporary      {}", bytes(self.temporary_bytes))?;
        writeln!(
            f,
            "unreferenced   {} blobs, {} (blob sizes; no manifest names them: a collection reclaims them past the grace period, freeing fewer stored bytes where their blocks are shared)",
            self.unreferenced_blobs,
            bytes(self.unreferenced_bytes)
        )?;
        match &self.last_collection {
            None => write!(f, "last gc        never"),
            Some(c) => write!(
                f,
                "last gc        {}{}, took {}: {} {} tags, {} manifests, {} blobs ({}); stored bytes {} -> {}",
                utc(c.started),
                if c.dry_run { " (dry run)" } else { "" },
                crate::gc::seconds(c.duration_ms),
                if c.dry_run { "would remove" } else { "removed" },
                c.tags_removed,
                c.manifests_removed,
                c.blobs_removed,
                bytes(c.blob_bytes_removed),
                c.stored_bytes_before,
                c.stored_bytes_after,
            ),
        }
    }
}

/// Unix seconds as an RFC 3339 UTC time, `2023-11-14T22:13:20Z`.
pub(crate) fn utc(unix: u64) -> String {
    let (days, secs) = (unix / 86_400, unix % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// `12345678 (11.8 MiB)`: exact for scripts, readable for people.
pub(crate) fn bytes(n: u64) -> String {
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
            gzip_blobs: 2,
            zstd_blobs: 0,
            raw_blobs: 1,
            raw_bytes: 500,
            failed: 0,
            repositories: 1,
            manifests: 2,
            uploads: 0,
            temporary_bytes: 0,
            unreferenced_blobs: 2,
            unreferenced_bytes: 3000,
            last_collection: None,
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
                "gzip_blobs": 2, "zstd_blobs": 0, "raw_blobs": 1, "raw_bytes": 500,
                "failed": 0, "repositories": 1, "manifests": 2, "uploads": 0, "temporary_bytes": 0,
                "unreferenced_blobs": 2, "unreferenced_bytes": 3000, "last_collection": null,
                "ratio": 0.4
            })
        );
        let collected = StoreStats {
            last_collection: Some(crate::gc::tests::sample()),
            ..sample()
        };
        let json: serde_json::Value = serde_json::from_str(&collected.to_json()).unwrap();
        assert_eq!(json["last_collection"]["blobs_removed"], 7);
        assert_eq!(json["last_collection"]["started"], 1_700_000_000u64);
        assert_eq!(json["last_collection"]["dry_run"], false);
    }

    #[test]
    fn text_shows_what_a_collection_would_reclaim_and_the_last_one() {
        let text = sample().to_string();
        assert!(
            text.contains("unreferenced   2 blobs, 3000 (2.9 KiB)"),
            "{text}"
        );
        assert!(text.ends_with("last gc        never"), "{text}");
        let collected = StoreStats {
            last_collection: Some(crate::gc::tests::sample()),
            ..sample()
        };
        let text = collected.to_string();
        assert!(
            text.contains(
                "last gc        2023-11-14T22:13:20Z, took 1.5 s: removed 3 tags, 2 manifests, 7 blobs (70000 (68.4 KiB)); stored bytes 200000 -> 140000"
            ),
            "{text}"
        );
    }

    #[test]
    fn unix_times_print_as_utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(utc(4_102_444_799), "2099-12-31T23:59:59Z");
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
            "unreferenced",
            "last gc",
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
