//! The `admin` export: store statistics and the guest's identity.

use crate::bindings::exports::blockreg::registry::admin::{Error, Guest, GuestInfo, Stats};
use crate::chunker::{Chunker, FixedChunker};
use crate::store::Store;

/// Where the host grants the store.
pub const DATA_ROOT: &str = "/data";

impl Guest for crate::Component {
    fn get_stats() -> Result<Stats, Error> {
        let io = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                Error::Corrupt(e.to_string())
            } else {
                Error::Io(e.to_string())
            }
        };
        let store = Store::open(DATA_ROOT).map_err(io)?;
        let usage = store.usage().map_err(io)?;
        let repos = store.repositories().map_err(io)?;
        Ok(Stats {
            blobs: usage.blobs,
            logical_bytes: usage.logical_bytes,
            blocks: usage.blocks,
            block_bytes: usage.block_bytes,
            repositories: repos.len() as u64,
            manifests: repos.iter().map(|(_, n)| n).sum(),
            uploads: usage.uploads,
        })
    }

    fn describe() -> GuestInfo {
        GuestInfo {
            version: crate::routes::guest_version(),
            chunker: FixedChunker::default().name(),
        }
    }
}
