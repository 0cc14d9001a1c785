//! The `admin` export: store statistics, background conversion, crash
//! recovery, upload expiry, the integrity check, and the guest's identity.

use std::time::Duration;

use crate::bindings::exports::blockreg::registry::admin::{
    CheckReport, CollectOptions, Collection, Conversion, Encoding, Error, Failure, Guest,
    GuestInfo, Purge, Queue, Recovery, Stats,
};
use crate::cache::Cache;
use crate::chunker::Chunker;
use crate::convert::ConvertError;
use crate::packs::Packs;
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
        let index_bytes = index.blocks * crate::packs::RECORD_LEN as u64;
        let (_, cache_bytes) = Cache::new(store.layout(), 0).usage().map_err(io_error)?;
        let (_, temporary_bytes) = store.temporaries().map_err(io_error)?;
        Ok(Stats {
            blobs: usage.blobs,
            logical_bytes: usage.logical_bytes,
            blocks: index.blocks + usage.loose_blocks,
            block_bytes: index.bytes + usage.loose_bytes,
            packs: pack_count,
            stored_bytes: pack_bytes
                + index_bytes
                + usage.recipe_bytes
                + usage.loose_bytes
                + usage.original_bytes,
            cache_bytes,
            pending: usage.pending,
            failed: usage.failed,
            repositories: repos.len() as u64,
            manifests: repos.iter().map(|(_, n)| n).sum(),
            uploads: usage.uploads,
            temporary_bytes,
            unreferenced_blobs: 0,
            unreferenced_bytes: 0,
            last_collection: None,
        })
    }

    fn collect(_options: CollectOptions) -> Result<Collection, Error> {
        Err(Error::Other("garbage collection is not built yet".into()))
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
        Ok(Recovery {
            temporaries: r.temporaries,
            temporary_bytes: r.temporary_bytes,
            sessions_released: r.sessions_released,
            sessions_removed: r.sessions_removed,
            blobs_restored: 0,
            blobs_removed: 0,
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
