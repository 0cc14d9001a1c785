//! The `admin` export: store statistics, background conversion, crash
//! recovery, upload expiry, the integrity check, and the guest's identity.

use std::time::Duration;

use crate::bindings::exports::blockreg::registry::admin::{
    CheckReport, CollectOptions, Collection, Conversion, Encoding, Error, Failure, Guest,
    GuestInfo, Purge, Queue, Recovery, Removals, Stats,
};
use crate::cache::Cache;
use crate::chunker::Chunker;
use crate::convert::ConvertError;
use crate::gc;
use crate::packs::Packs;
use crate::retention::Rule;
use crate::store::Store;

/// Where the host grants the store.
pub const DATA_ROOT: &str = "/data";

fn io_error(e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::InvalidData {
        Error::Corrupt(e.to_string())
    } else {
        Error::Io(e.to_string())
    }
}

impl Guest for crate::Component {
    fn get_stats() -> Result<Stats, Error> {
        let store = Store::open(DATA_ROOT).map_err(io_error)?;
        let usage = store.usage().map_err(io_error)?;
        let repos = store.repositories().map_err(io_error)?;
        let packs = Packs::new(store.layout());
        let index = packs.totals().map_err(io_error)?;
        let (pack_count, pack_bytes) = packs.pack_totals().map_err(io_error)?;
        let (_, cache_bytes) = Cache::new(store.layout(), 0).usage().map_err(io_error)?;
        let (_, temporary_bytes) = store.temporaries().map_err(io_error)?;
        // A manifest that does not parse leaves the figure unknown (0),
        // not the stats failed: `check` names it.
        let (unreferenced_blobs, unreferenced_bytes) = gc::unreferenced(&store).unwrap_or((0, 0));
        Ok(Stats {
            blobs: usage.blobs,
            logical_bytes: usage.logical_bytes,
            blocks: index.blocks + usage.loose_blocks,
            block_bytes: index.bytes + usage.loose_bytes,
            packs: pack_count,
            stored_bytes: usage.stored_bytes(pack_bytes, index.blocks),
            cache_bytes,
            pending: usage.pending,
            gzip_blobs: usage.gzip_blobs,
            zstd_blobs: usage.zstd_blobs,
            raw_blobs: usage.raw_blobs,
            raw_bytes: usage.raw_bytes,
            failed: usage.failed,
            repositories: repos.len() as u64,
            manifests: repos.iter().map(|(_, n)| n).sum(),
            uploads: usage.uploads,
            temporary_bytes,
            unreferenced_blobs,
            unreferenced_bytes,
            last_collection: gc::last_collection(&store)
                .map_err(io_error)?
                .map(collection),
        })
    }

    fn restore_set_aside() -> Result<(u64, u64), Error> {
        let store = Store::open(DATA_ROOT).map_err(io_error)?;
        gc::recover_trash(&store).map_err(io_error)
    }

    fn collect(options: CollectOptions) -> Result<Collection, Error> {
        let store = Store::open(DATA_ROOT).map_err(io_error)?;
        let retention = options
            .retention
            .into_iter()
            .map(|r| {
                Rule::new(
                    r.repositories,
                    r.keep_last,
                    r.keep_within_secs,
                    &r.keep_tags,
                    r.delete_untagged_after_secs,
                )
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::Other)?;
        let options = gc::Options {
            grace: options.grace_secs,
            delete_untagged: options.delete_untagged,
            retention,
            dry_run: options.dry_run,
            io_percent: options.io_percent,
        };
        gc::collect(&store, &options, crate::convert::now_secs())
            .map(collection)
            .map_err(io_error)
    }

    fn convert_next(first: Queue) -> Result<Vec<Result<Conversion, Failure>>, Error> {
        let store = Store::open(DATA_ROOT).map_err(io_error)?;
        let now = crate::convert::now_secs();
        let settings = crate::settings::current();
        let first = match first {
            Queue::Small => crate::convert::Queue::Small,
            Queue::Large => crate::convert::Queue::Large,
        };
        let outcomes =
            crate::convert::convert_next(&store, settings, now, first).map_err(io_error)?;
        Ok(outcomes
            .into_iter()
            .map(|(digest, outcome)| match outcome {
                Ok(c) => Ok(Conversion {
                    digest: c.digest.to_string(),
                    size: c.size,
                    encoding: match c.encoding {
                        crate::recipe::Encoding::Raw => Encoding::Raw,
                        crate::recipe::Encoding::Gzip => Encoding::Gzip,
                        crate::recipe::Encoding::Zstd => Encoding::Zstd,
                    },
                    content_bytes: c.content_bytes,
                    new_blocks: c.new_blocks,
                    new_bytes: c.new_bytes,
                    fallback: c.fallback,
                }),
                // Recorded by `convert_next`: failed for good, or retried later.
                Err(e) => Err(Failure {
                    digest: digest.to_string(),
                    error: match e {
                        ConvertError::Damaged(why) => Error::Corrupt(why),
                        ConvertError::Store(e) => Error::Io(e.to_string()),
                    },
                }),
            })
            .collect())
    }

    fn recover() -> Result<Recovery, Error> {
        let store = Store::open(DATA_ROOT).map_err(io_error)?;
        let r = store.recover().map_err(io_error)?;
        let (blobs_restored, blobs_removed) = gc::recover_trash(&store).map_err(io_error)?;
        Ok(Recovery {
            temporaries: r.temporaries,
            temporary_bytes: r.temporary_bytes,
            sessions_released: r.sessions_released,
            sessions_removed: r.sessions_removed,
            blobs_restored,
            blobs_removed,
        })
    }

    fn purge_uploads(older_than_secs: u64, dry_run: bool) -> Result<Purge, Error> {
        let store = Store::open(DATA_ROOT).map_err(io_error)?;
        let p = store
            .purge_uploads(Duration::from_secs(older_than_secs), dry_run)
            .map_err(io_error)?;
        Ok(Purge {
            sessions: p.sessions,
            bytes: p.bytes,
            kept: p.kept,
        })
    }

    fn check(read_data: bool) -> Result<CheckReport, Error> {
        let store = Store::open(DATA_ROOT).map_err(io_error)?;
        let r = crate::check::check(&store, read_data).map_err(io_error)?;
        Ok(CheckReport {
            blocks: r.blocks,
            bad_blocks: r.bad_blocks,
            packs: r.packs,
            unindexed_packs: r.unindexed_packs,
            unindexed_bytes: r.unindexed_bytes,
            blobs: r.blobs,
            bad_blobs: r.bad_blobs,
            bytes_read: r.bytes_read,
            manifests: r.manifests,
            bad_manifests: r.bad_manifests,
            unreferenced_blobs: r.unreferenced_blobs,
            unreferenced_bytes: r.unreferenced_bytes,
            problems: r.problems,
        })
    }

    fn describe() -> GuestInfo {
        GuestInfo {
            version: crate::routes::guest_version(),
            chunker: crate::convert::chunker().name(),
        }
    }
}

/// The WIT record of a collection.
fn collection(c: gc::Collection) -> Collection {
    Collection {
        started: c.started,
        duration_ms: c.duration_ms,
        dry_run: c.dry_run,
        tags_removed: c.tags_removed,
        manifests_removed: c.manifests_removed,
        blobs_removed: c.blobs_removed,
        blob_bytes_removed: c.blob_bytes_removed,
        blobs_kept_recent: c.blobs_kept_recent,
        blobs_kept: c.blobs_kept,
        packs_removed: c.packs_removed,
        packs_repacked: c.packs_repacked,
        pack_bytes_removed: c.pack_bytes_removed,
        pack_bytes_written: c.pack_bytes_written,
        index_records_removed: c.index_records_removed,
        cache_bytes_removed: c.cache_bytes_removed,
        stored_bytes_before: c.stored_bytes_before,
        stored_bytes_after: c.stored_bytes_after,
        temporaries_removed: c.temporaries_removed,
        temporary_bytes_removed: c.temporary_bytes_removed,
        paused_ms: c.paused_ms,
        removed: Removals {
            tags: c.removed.tags,
            manifests: c.removed.manifests,
            blobs: c.removed.blobs,
        },
    }
}
