//! Garbage collection (issue 9): the host's half of `admin.collect`. The
//! guest decides what goes (retention rules, untagged manifests, blobs no
//! kept manifest names and nothing used within the grace period, then dead
//! packs); this file runs it: one collection in a fresh guest instance
//! under the exclusive store lock ([`collect`]), the server's background
//! job ([`run`]), `blockreg gc` ([`collect_garbage`]), and the report for
//! people.
//!
//! The lock is the contract's rule (`wit/admin.wit`): no `convert-next` may
//! run on the store while `collect` does, in this process or another. A
//! collection waits for the conversion in progress to end (the converter
//! holds the lock shared for each call, `convert.rs`), and the converter
//! waits while a collection runs; requests go on meanwhile, and pushes
//! are served from their originals until conversion resumes.
//!
//! The server's first collection runs [`FIRST_AFTER`] after start (or after
//! `interval` when that is shorter), then every `interval`, each under
//! [`COLLECT_TIMEOUT`]. A collection cut off (time limit, shutdown, a
//! killed `blockreg gc`) leaves the blobs it was judging set aside; the
//! next `convert-next` (within seconds while a server converts; a server
//! that does not convert calls `restore-set-aside` as often, in
//! [`restore_set_aside`]), the next collection or the recovery at start
//! puts them back.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::bindings::{AdminError, CollectOptions, Collection, RetentionRecord};
use crate::config::{GarbageCollection, Limits, ServeConfig};
use crate::guest::{self, GuestSlot, LoadedGuest};
use crate::metrics::Metrics;
use crate::shutdown::Stop;
use crate::stats::bytes;
use crate::store_lock::{Mode, StoreLock};

/// Time limit of one collection: it walks every manifest and recipe and
/// rewrites packs that are mostly dead, and conversion waits meanwhile.
pub(crate) const COLLECT_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// Delay of the first background collection after start, at most: a
/// registry restarted daily would otherwise never reach a long interval.
const FIRST_AFTER: Duration = Duration::from_secs(600);

/// How much longer than the request timeout the server's grace period must
/// be: a request may hold a blob unreferenced for the whole timeout (an
/// upload, then the manifest that names it).
const GRACE_MARGIN: Duration = Duration::from_secs(60);

/// The config key of the grace period, for the messages that name it.
const GRACE_KEY: &str = "blockreg.gc.grace";

/// The WIT record of a collection's options.
fn options(gc: &GarbageCollection) -> CollectOptions {
    CollectOptions {
        grace_secs: gc.grace.as_secs(),
        delete_untagged: gc.delete_untagged,
        retention: gc
            .retention
            .iter()
            .map(|rule| RetentionRecord {
                repositories: rule.repositories.clone(),
                keep_last: rule.keep_last,
                keep_within_secs: rule.keep_within.map(|d| d.as_secs()),
                keep_tags: rule.keep_tags.clone(),
                delete_untagged_after_secs: rule.delete_untagged_after.map(|d| d.as_secs()),
            })
            .collect(),
        dry_run: gc.dry_run,
        io_percent: gc.io_percent,
    }
}

/// The shortest grace period safe with `request_timeout`, exclusive.
fn grace_floor(request_timeout: Duration) -> Duration {
    request_timeout.saturating_add(GRACE_MARGIN)
}

/// Refuses a background collection whose grace period is not longer than
/// the request timeout plus a minute: it could remove the blobs of a push
/// whose manifest is still on its way.
///
/// # Errors
///
/// Names the key (`blockreg.gc.grace`) and the limit.
pub(crate) fn check_grace(gc: &GarbageCollection, limits: &Limits) -> anyhow::Result<()> {
    if !gc.enabled || gc.dry_run {
        return Ok(());
    }
    let floor = grace_floor(limits.request_timeout);
    if gc.grace <= floor {
        anyhow::bail!(
            "config key {GRACE_KEY}: {}s must be longer than the request timeout \
             (blockreg.request_timeout_secs, {}s) plus 1 min, {}s: a pushed blob is unreferenced \
             until its manifest arrives, and the collection would remove it meanwhile \
             (or set blockreg.gc.enabled: false)",
            gc.grace.as_secs(),
            limits.request_timeout.as_secs(),
            floor.as_secs(),
        );
    }
    Ok(())
}

/// What to tell the operator of a manual collection whose grace period is
/// not longer than the request timeout (plus a minute): `blockreg gc`
/// runs it anyway, as asked.
pub fn grace_warning(gc: &GarbageCollection, limits: &Limits) -> Option<String> {
    (!gc.dry_run && gc.grace <= grace_floor(limits.request_timeout)).then(|| {
        format!(
            "grace period {}s: blobs pushed within it whose manifest has not arrived yet \
             (a push in progress) may be removed, and that push then fails; the server uses \
             more than its request timeout plus 1 min ({}s)",
            gc.grace.as_secs(),
            grace_floor(limits.request_timeout).as_secs()
        )
    })
}

/// Runs one collection of the store in `data_dir` with `loaded`, holding
/// the store lock exclusively; `waiting` runs once if the lock is busy
/// (a conversion in progress, or a collection in another process).
///
/// # Errors
///
/// When the lock cannot be taken, the guest traps or times out, or it
/// returns an error (an unreadable store, a bad glob or regular
/// expression in the retention rules).
pub(crate) async fn collect(
    loaded: &LoadedGuest,
    data_dir: &Path,
    max_memory_bytes: usize,
    gc: &GarbageCollection,
    waiting: impl FnOnce(),
) -> anyhow::Result<Collection> {
    let _lock = match StoreLock::try_acquire(data_dir, Mode::Exclusive)? {
        Some(lock) => lock,
        None => {
            waiting();
            StoreLock::acquire(data_dir, Mode::Exclusive).await?
        }
    };
    let options = options(gc);
    let result = guest::call_admin(
        &loaded.admin,
        data_dir,
        max_memory_bytes,
        loaded.settings,
        COLLECT_TIMEOUT,
        "collect",
        move |admin, store| Box::pin(async move { admin.call_collect(store, &options).await }),
    )
    .await?;
    match result {
        Ok(collection) => Ok(collection),
        Err(AdminError::Io(detail)) => {
            anyhow::bail!("the collection could not read or write the store: {detail}")
        }
        Err(AdminError::Corrupt(detail)) => {
            anyhow::bail!("the collection found a corrupt file: {detail}")
        }
        Err(AdminError::Other(detail)) => anyhow::bail!("the collection failed: {detail}"),
    }
}

/// `blockreg gc`: one collection of `config.data_dir` with `config.guest`
/// and `config.gc` (its grace period, `delete_untagged`, retention rules
/// and `dry_run`), safe while a server serves the same directory.
/// `waiting` runs once if the collection must wait for the store lock.
///
/// # Errors
///
/// When the data directory does not exist, the guest does not load, or the
/// collection fails (see [`collect`]).
pub async fn collect_garbage(
    config: &ServeConfig,
    waiting: impl FnOnce(),
) -> anyhow::Result<Collection> {
    let data_dir = &crate::datadir::prepare(&config.data_dir, false)?;
    let settings = crate::ctx::guest_settings(&config.settings, config.limits.request_timeout);
    let loaded = guest::load(&config.guest, data_dir, &config.limits, settings).await?;
    collect(
        &loaded,
        data_dir,
        config.limits.max_memory_bytes,
        &config.gc,
        waiting,
    )
    .await
    .context("garbage collection")
}

/// How often a server that does not convert looks for what a killed
/// collection set aside: as soon as its converter would.
const RESTORE_EVERY: Duration = Duration::from_secs(5);

/// Time limit of one `restore-set-aside` (a few renames).
const RESTORE_TIMEOUT: Duration = Duration::from_secs(60);

/// For a server that does not convert (`--no-conversion`): puts back,
/// within [`RESTORE_EVERY`], the blobs a killed collection (`blockreg gc`
/// in another process) left set aside, which clients would otherwise be
/// told are unknown until the next collection. Runs only while no
/// collection holds the store (the lock, shared, as conversion takes it).
pub(crate) async fn restore_set_aside(
    slot: Arc<GuestSlot>,
    data_dir: std::path::PathBuf,
    limits: Limits,
    mut stop: Stop,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(RESTORE_EVERY) => {}
            () = stop.stopped() => return,
        }
        let Ok(Some(_lock)) = StoreLock::try_acquire(&data_dir, Mode::Shared) else {
            continue; // a collection runs: it restores what it set aside
        };
        let loaded = slot.current();
        let outcome = guest::call_admin(
            &loaded.admin,
            &data_dir,
            limits.max_memory_bytes,
            loaded.settings,
            RESTORE_TIMEOUT,
            "restore-set-aside",
            |admin, store| Box::pin(async move { admin.call_restore_set_aside(store).await }),
        )
        .await;
        match outcome {
            Ok(Ok((0, 0))) => {}
            Ok(Ok((restored, removed))) => tracing::info!(
                target: "blockreg::gc",
                "a collection was cut off: {restored} blobs or manifests it had set aside put back, {removed} it had judged removed"
            ),
            Ok(Err(e)) => {
                tracing::warn!(target: "blockreg::gc", "restoring what a cut-off collection set aside failed: {e:?}")
            }
            Err(e) => {
                tracing::warn!(target: "blockreg::gc", "restoring what a cut-off collection set aside failed: {e:#}")
            }
        }
    }
}

/// Runs collections until `stop`; returns at once when collection is off.
pub(crate) async fn run(
    slot: Arc<GuestSlot>,
    data_dir: std::path::PathBuf,
    limits: Limits,
    gc: GarbageCollection,
    metrics: Arc<Metrics>,
    mut stop: Stop,
) {
    if !gc.enabled || gc.interval.is_zero() {
        return;
    }
    let mut pause = gc.interval.min(FIRST_AFTER);
    loop {
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = stop.stopped() => return,
        }
        pause = gc.interval;
        let loaded = slot.current();
        let started = Instant::now();
        let waiting = || {
            tracing::info!(
                target: "blockreg::gc",
                "collection waits for the conversion in progress (or a collection by another process) to end"
            );
        };
        let outcome = tokio::select! {
            outcome = collect(&loaded, &data_dir, limits.max_memory_bytes, &gc, waiting) => outcome,
            () = stop.stopped() => {
                tracing::info!(target: "blockreg::gc", "collection cut off by the shutdown");
                return;
            }
        };
        match outcome {
            Ok(c) => {
                metrics.collection(&c);
                tracing::info!(target: "blockreg::gc", "{}", c.summary());
            }
            Err(e) => {
                metrics.collection_failed(started.elapsed().as_secs_f64());
                tracing::warn!(target: "blockreg::gc", "garbage collection failed: {e:#}");
            }
        }
    }
}

impl Collection {
    /// Store bytes the collection gave back (0 in a dry run).
    pub fn stored_bytes_freed(&self) -> u64 {
        self.stored_bytes_before
            .saturating_sub(self.stored_bytes_after)
    }

    /// When it ended, in Unix seconds.
    pub(crate) fn ended(&self) -> u64 {
        self.started.saturating_add(self.duration_ms.div_ceil(1000))
    }

    /// One line for the log: what went, or would go in a dry run.
    pub fn summary(&self) -> String {
        let removed = format!(
            "{} tags, {} manifests, {} blobs ({} bytes); packs: {} removed, {} rewritten ({} bytes freed, {} written)",
            self.tags_removed,
            self.manifests_removed,
            self.blobs_removed,
            self.blob_bytes_removed,
            self.packs_removed,
            self.packs_repacked,
            self.pack_bytes_removed,
            self.pack_bytes_written,
        );
        if self.dry_run {
            format!(
                "dry run: a collection would remove {removed}, {} stale temporaries; {} unreferenced blobs kept as recent, in {} ms",
                self.temporaries_removed, self.blobs_kept_recent, self.duration_ms
            )
        } else {
            format!(
                "collected: removed {removed}, {} stale temporaries; stored bytes {} -> {}; {} unreferenced blobs kept as recent; in {} ms ({} ms paused for requests)",
                self.temporaries_removed,
                self.stored_bytes_before,
                self.stored_bytes_after,
                self.blobs_kept_recent,
                self.duration_ms,
                self.paused_ms
            )
        }
    }
}

/// The report of `blockreg gc` for people (`--json` prints the record).
impl fmt::Display for Collection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (verb, mode) = if self.dry_run {
            ("to remove", "dry run: nothing was changed")
        } else {
            ("removed", "collection")
        };
        writeln!(
            f,
            "{mode}, started {}, took {}",
            crate::stats::utc(self.started),
            seconds(self.duration_ms)
        )?;
        writeln!(
            f,
            "tags           {} {verb} by retention rules",
            self.tags_removed
        )?;
        writeln!(
            f,
            "manifests      {} {verb} (untagged)",
            self.manifests_removed
        )?;
        writeln!(
            f,
            "blobs          {} {verb}, {} bytes; {} kept, {} of them unreferenced but used within the grace period",
            self.blobs_removed,
            bytes(self.blob_bytes_removed),
            self.blobs_kept,
            self.blobs_kept_recent
        )?;
        writeln!(
            f,
            "packs          {} {verb} whole, {} rewritten: {} bytes freed, {} written",
            self.packs_removed,
            self.packs_repacked,
            bytes(self.pack_bytes_removed),
            bytes(self.pack_bytes_written)
        )?;
        writeln!(f, "index records  {} {verb}", self.index_records_removed)?;
        writeln!(
            f,
            "cache          {} bytes {verb}",
            bytes(self.cache_bytes_removed)
        )?;
        writeln!(
            f,
            "temporaries    {} {verb} (writes a crash cut off), {} bytes",
            self.temporaries_removed,
            bytes(self.temporary_bytes_removed)
        )?;
        if self.paused_ms > 0 {
            writeln!(
                f,
                "paused         {} of it, leaving the disk to requests (io_percent)",
                seconds(self.paused_ms)
            )?;
        }
        write!(
            f,
            "stored bytes   {} before, {} after",
            bytes(self.stored_bytes_before),
            bytes(self.stored_bytes_after)
        )?;
        // What a dry run is for: the names, to check a policy before it
        // runs. A real run's are in `--json`.
        if self.dry_run {
            let r = &self.removed;
            if r.tags.is_empty() && r.manifests.is_empty() && r.blobs.is_empty() {
                write!(f, "\nnothing would be removed")?;
            }
            for (kind, names) in [
                ("tag", &r.tags),
                ("manifest", &r.manifests),
                ("blob", &r.blobs),
            ] {
                for name in names {
                    write!(f, "\nwould remove {kind:<8} {name}")?;
                }
            }
        }
        Ok(())
    }
}

/// `1234 ms` as `1.2 s`, `95000 ms` as `1 min 35 s`.
pub(crate) fn seconds(ms: u64) -> String {
    if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        let secs = ms / 1000;
        if secs < 3600 {
            format!("{} min {} s", secs / 60, secs % 60)
        } else {
            format!("{} h {} min", secs / 3600, secs % 3600 / 60)
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bindings::Removals;
    use crate::config::RetentionRule;

    pub(crate) fn sample() -> Collection {
        Collection {
            started: 1_700_000_000,
            duration_ms: 1500,
            dry_run: false,
            tags_removed: 3,
            manifests_removed: 2,
            blobs_removed: 7,
            blob_bytes_removed: 70_000,
            blobs_kept_recent: 1,
            blobs_kept: 5,
            packs_removed: 1,
            packs_repacked: 2,
            pack_bytes_removed: 60_000,
            pack_bytes_written: 10_000,
            index_records_removed: 40,
            cache_bytes_removed: 100,
            stored_bytes_before: 200_000,
            stored_bytes_after: 140_000,
            temporaries_removed: 2,
            temporary_bytes_removed: 4096,
            paused_ms: 700,
            removed: Removals {
                tags: vec!["ci/app:build-1".into()],
                manifests: vec!["ci/app@sha256:aa".into()],
                blobs: vec!["sha256:bb".into()],
            },
        }
    }

    #[test]
    fn the_server_refuses_a_grace_period_within_the_request_timeout() {
        let limits = Limits::default();
        let mut gc = GarbageCollection {
            grace: limits.request_timeout + GRACE_MARGIN,
            ..GarbageCollection::default()
        };
        let err = check_grace(&gc, &limits).unwrap_err().to_string();
        assert!(err.starts_with("config key blockreg.gc.grace:"), "{err}");
        assert!(
            err.contains("blockreg.request_timeout_secs, 1800s"),
            "{err}"
        );
        gc.grace += Duration::from_secs(1);
        check_grace(&gc, &limits).unwrap();
        let off = GarbageCollection {
            enabled: false,
            grace: Duration::ZERO,
            ..GarbageCollection::default()
        };
        check_grace(&off, &limits).unwrap();
        let dry = GarbageCollection {
            dry_run: true,
            grace: Duration::ZERO,
            ..GarbageCollection::default()
        };
        check_grace(&dry, &limits).unwrap();
        check_grace(&GarbageCollection::default(), &limits).unwrap();
    }

    #[test]
    fn a_manual_run_with_a_short_grace_is_warned_about() {
        let limits = Limits::default();
        let zero = GarbageCollection {
            grace: Duration::ZERO,
            ..GarbageCollection::default()
        };
        let warning = grace_warning(&zero, &limits).unwrap();
        assert!(warning.contains("may be removed"), "{warning}");
        assert_eq!(grace_warning(&GarbageCollection::default(), &limits), None);
        let dry = GarbageCollection {
            dry_run: true,
            ..zero
        };
        assert_eq!(
            grace_warning(&dry, &limits),
            None,
            "a dry run removes nothing"
        );
    }

    #[test]
    fn options_carry_every_setting_in_seconds() {
        let gc = GarbageCollection {
            grace: Duration::from_secs(7200),
            delete_untagged: true,
            dry_run: true,
            retention: vec![RetentionRule {
                repositories: vec!["ci/**".into()],
                keep_last: Some(2),
                keep_within: Some(Duration::from_secs(86_400)),
                keep_tags: vec!["v.*".into()],
                delete_untagged_after: Some(Duration::from_secs(7 * 86_400)),
            }],
            io_percent: 30,
            ..GarbageCollection::default()
        };
        let o = options(&gc);
        assert_eq!(o.grace_secs, 7200);
        assert!(o.delete_untagged && o.dry_run);
        assert_eq!(o.retention.len(), 1);
        assert_eq!(o.retention[0].repositories, ["ci/**"]);
        assert_eq!(o.retention[0].keep_last, Some(2));
        assert_eq!(o.retention[0].keep_within_secs, Some(86_400));
        assert_eq!(o.retention[0].keep_tags, ["v.*"]);
        assert_eq!(o.retention[0].delete_untagged_after_secs, Some(7 * 86_400));
        assert_eq!(o.io_percent, 30);
    }

    #[test]
    fn the_report_names_every_figure_and_says_when_it_was_a_dry_run() {
        let text = sample().to_string();
        for needle in [
            "collection, started 2023-11-14T22:13:20Z, took 1.5 s",
            "tags           3 removed",
            "manifests      2 removed",
            "blobs          7 removed, 70000 (68.4 KiB)",
            "5 kept, 1 of them",
            "packs          1 removed whole, 2 rewritten",
            "index records  40",
            "cache          100 bytes",
            "temporaries    2 removed (writes a crash cut off), 4096 (4.0 KiB)",
            "paused         0.7 s of it",
            "stored bytes   200000 (195.3 KiB) before, 140000 (136.7 KiB) after",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
        assert!(!text.contains("would remove"), "{text}");
        let dry = Collection {
            dry_run: true,
            ..sample()
        };
        let text = dry.to_string();
        assert!(text.starts_with("dry run: nothing was changed"), "{text}");
        assert!(text.contains("blobs          7 to remove"), "{text}");
        for needle in [
            "would remove tag      ci/app:build-1",
            "would remove manifest ci/app@sha256:aa",
            "would remove blob     sha256:bb",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
        assert!(dry.summary().starts_with("dry run"));
        assert_eq!(sample().stored_bytes_freed(), 60_000);
        assert_eq!(sample().ended(), 1_700_000_002);
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(seconds(1234), "1.2 s");
        assert_eq!(seconds(95_000), "1 min 35 s");
        assert_eq!(seconds(7_380_000), "2 h 3 min");
    }
}
