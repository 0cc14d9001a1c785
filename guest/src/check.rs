//! `blockreg check`: verifies the store without changing it (restic's
//! `check`, zot's scrub).
//!
//! - The block index: every shard a whole number of records, in SHA-1
//!   order, each record in its shard; every record's frame reads and
//!   decompresses to its length, and the block's bytes hash to its SHA-1.
//!   Records are checked pack by pack and frame by frame, so each frame is
//!   decompressed once; memory is bounded by doing it in passes over a
//!   share of the packs each.
//! - Packs: each one present is named by some index record (a pack that no
//!   record names is space a garbage collection would reclaim, reported,
//!   not a fault).
//! - Blobs: every recipe parses and every frame it names lies inside an
//!   existing pack; with `read_data`, every blob is read in full — rebuilt
//!   from its blocks, never from the cache — and must hash to its digest
//!   and have its size.
//! - Manifests: every stored manifest parses, and the blobs (config,
//!   layers) and child manifests it names are in its repository — the
//!   property a push guarantees and a garbage collection must keep. Blobs
//!   no manifest names are counted with their bytes (what a collection
//!   would reclaim once their grace period is over), not reported as
//!   damage: a blob is unreferenced between its push and its manifest's.
//!
//! Nothing is written, removed or set aside (a pull that meets a damaged
//! source does that): the check is safe while the store serves.

use std::collections::{BTreeMap, HashSet};

use std::io;

use crate::block::BlockId;
use crate::oci::media::parse_manifest;
use crate::oci::{Digest, Hasher, RepoName};
use crate::packs::{shard_of, FrameReader, Located, Packs, SHARDS};
use crate::rebuild::Rebuild;
use crate::recipe::{pack_name, Frame};
use crate::store::{list_dir, BlobSource, Store};

/// A frame of a pack and the index records of the blocks in it.
type FrameBlocks = (Frame, Vec<(BlockId, Located)>);

/// Problems listed in a report, at most; the counts go on.
const MAX_PROBLEMS: usize = 100;

/// Index records held in memory per pass (about 80 bytes each).
const RECORDS_PER_PASS: u64 = 1_000_000;

/// What [`check`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Index records checked, and those whose block did not read back to
    /// its SHA-1 (missing pack, frame that does not decode, wrong bytes,
    /// misplaced or unordered record).
    pub blocks: u64,
    pub bad_blocks: u64,
    /// Packs present, and those no index record names.
    pub packs: u64,
    pub unindexed_packs: u64,
    pub unindexed_bytes: u64,
    /// Blobs checked, and those that failed.
    pub blobs: u64,
    pub bad_blobs: u64,
    /// Blob bytes read back (with `read_data`).
    pub bytes_read: u64,
    /// Manifests checked, and those that do not parse or name content
    /// missing from their repository.
    pub manifests: u64,
    pub bad_manifests: u64,
    /// Committed blobs no manifest names, and their sizes.
    pub unreferenced_blobs: u64,
    pub unreferenced_bytes: u64,
    /// The first problems found, one line each.
    pub problems: Vec<String>,
}

impl Report {
    fn problem(&mut self, line: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(line);
        }
    }

    /// No block or blob failed.
    #[cfg(test)]
    fn is_clean(&self) -> bool {
        self.bad_blocks == 0 && self.bad_blobs == 0 && self.bad_manifests == 0
    }
}

/// Checks the store; with `read_data`, also reads every blob in full.
///
/// # Errors
/// I/O errors listing the store's folders. Damage is reported, not an
/// error.
pub fn check(store: &Store, read_data: bool) -> io::Result<Report> {
    let mut report = Report::default();
    let packs = Packs::new(store.layout());
    let present = packs.present()?;
    report.packs = present.len() as u64;
    let named = check_index(store, &packs, &present, &mut report)?;
    for (id, size) in &present {
        if !named.contains(id) {
            report.unindexed_packs += 1;
            report.unindexed_bytes += size;
        }
    }
    let referenced = check_manifests(store, &mut report)?;
    check_blobs(store, &present, &referenced, read_data, &mut report)?;
    Ok(report)
}

/// Checks every stored manifest; returns the blobs manifests name.
fn check_manifests(store: &Store, report: &mut Report) -> io::Result<HashSet<Digest>> {
    let mut referenced = HashSet::new();
    for (repo, _) in store.repositories()? {
        let Ok(name) = repo.parse::<RepoName>() else {
            continue;
        };
        for (file, ty) in list_dir(&store.layout().manifests(&name))? {
            let Ok(digest) = file.parse::<Digest>() else {
                continue; // `.type` files of data format 2, temporaries
            };
            if !ty.is_file() {
                continue;
            }
            let (media_type, bytes) = match store.manifest(&name, &digest) {
                Ok(Some(m)) => m,
                Ok(None) => continue, // deleted since the listing
                Err(e) => {
                    report.manifests += 1;
                    report.bad_manifests += 1;
                    report.problem(format!("manifest {repo}@{digest}: {e}"));
                    continue;
                }
            };
            report.manifests += 1;
            if Digest::of(digest.algorithm(), &bytes) != digest {
                report.bad_manifests += 1;
                report.problem(format!(
                    "manifest {repo}@{digest}: its bytes do not hash to it"
                ));
                continue;
            }
            let info = match parse_manifest(&bytes, Some(&media_type)) {
                Ok(info) => info,
                Err(e) => {
                    report.bad_manifests += 1;
                    report.problem(format!("manifest {repo}@{digest}: {}", e.message));
                    continue;
                }
            };
            // Foreign layers need not be here; when they are, they are
            // kept like any other layer.
            referenced.extend(info.foreign.iter().cloned());
            let missing = info
                .blobs
                .iter()
                .find(|d| !store.blob_in_repo(&name, d))
                .or_else(|| {
                    info.manifests
                        .iter()
                        .find(|d| !store.has_manifest(&name, d))
                })
                .cloned();
            referenced.extend(info.blobs);
            if let Some(missing) = missing {
                report.bad_manifests += 1;
                report.problem(format!(
                    "manifest {repo}@{digest}: names {missing}, which is not in the repository"
                ));
            }
        }
    }
    Ok(referenced)
}

/// Checks every index record; returns the packs records name.
fn check_index(
    store: &Store,
    packs: &Packs,
    present: &BTreeMap<u64, u64>,
    report: &mut Report,
) -> io::Result<HashSet<u64>> {
    let total = packs.totals().map(|t| t.blocks).unwrap_or(0);
    let passes = total.div_ceil(RECORDS_PER_PASS).max(1);
    let mut named = HashSet::new();
    for pass in 0..passes {
        // Frame → the blocks in it, for the packs of this pass.
        let mut frames: BTreeMap<(u64, u64), FrameBlocks> = BTreeMap::new();
        for shard in 0..SHARDS {
            let (records, sorted) = match packs.shard_records(shard) {
                Ok(r) => r,
                Err(e) => {
                    if pass == 0 {
                        report.bad_blocks += 1;
                        report.problem(format!("index shard {shard:03x}: {e}"));
                    }
                    continue;
                }
            };
            if pass == 0 && !sorted {
                report.bad_blocks += 1;
                report.problem(format!(
                    "index shard {shard:03x}: records out of order or repeated"
                ));
            }
            for (id, at) in records {
                if at.frame.pack % passes != pass {
                    continue;
                }
                named.insert(at.frame.pack);
                if shard_of(&id) != shard {
                    report.blocks += 1;
                    report.bad_blocks += 1;
                    report.problem(format!(
                        "block {id}: indexed in shard {shard:03x}, not its own"
                    ));
                    continue;
                }
                frames
                    .entry((at.frame.pack, at.frame.offset))
                    .or_insert_with(|| (at.frame, Vec::new()))
                    .1
                    .push((id, at));
            }
        }
        let mut reader = FrameReader::new(store.layout());
        for (frame, blocks) in frames.into_values() {
            report.blocks += blocks.len() as u64;
            if !present.contains_key(&frame.pack) {
                report.bad_blocks += blocks.len() as u64;
                report.problem(format!(
                    "pack {} is missing; {} indexed blocks were in it",
                    pack_name(frame.pack),
                    blocks.len()
                ));
                continue;
            }
            let bytes = match reader.frame(&frame) {
                Ok(bytes) => bytes,
                Err(e) => {
                    report.bad_blocks += blocks.len() as u64;
                    report.problem(format!(
                        "pack {} frame at {}: {e}; {} blocks unreadable",
                        pack_name(frame.pack),
                        frame.offset,
                        blocks.len()
                    ));
                    continue;
                }
            };
            for (id, at) in blocks {
                let start = at.offset as usize;
                let end = start.saturating_add(at.len as usize);
                let good = bytes
                    .get(start..end)
                    .is_some_and(|data| BlockId::compute(data).is_ok_and(|got| got == id));
                if !good {
                    report.bad_blocks += 1;
                    report.problem(format!(
                        "block {id} in pack {} frame at {}: its bytes do not hash to it",
                        pack_name(frame.pack),
                        frame.offset
                    ));
                }
            }
        }
    }
    Ok(named)
}

/// Checks every committed blob.
fn check_blobs(
    store: &Store,
    present: &BTreeMap<u64, u64>,
    referenced: &HashSet<Digest>,
    read_data: bool,
    report: &mut Report,
) -> io::Result<()> {
    for (name, ty) in list_dir(&store.layout().layers())? {
        let Ok(digest) = name.parse::<Digest>() else {
            continue;
        };
        if !ty.is_dir() {
            continue;
        }
        let source = match store.blob_source(&digest) {
            Ok(Some(source)) => source,
            // Deleted since the listing, or never committed (a folder
            // holding only conversion records).
            Ok(None) => continue,
            Err(e) => {
                report.blobs += 1;
                report.bad_blobs += 1;
                report.problem(format!("blob {digest}: {e}"));
                continue;
            }
        };
        report.blobs += 1;
        if !referenced.contains(&digest) {
            report.unreferenced_blobs += 1;
            report.unreferenced_bytes += match &source {
                BlobSource::Original(_, size) => *size,
                BlobSource::Recipe(recipe) => recipe.size,
            };
        }
        if let Err(why) = check_blob(store, &digest, source, present, read_data, report) {
            report.bad_blobs += 1;
            report.problem(format!("blob {digest}: {why}"));
        }
    }
    Ok(())
}

/// One blob: its recipe's frames exist; with `read_data`, its bytes hash
/// to its digest.
fn check_blob(
    store: &Store,
    digest: &Digest,
    source: BlobSource,
    present: &BTreeMap<u64, u64>,
    read_data: bool,
    report: &mut Report,
) -> Result<(), String> {
    let (mut input, size): (Box<dyn io::Read>, u64) = match source {
        BlobSource::Original(f, size) => (Box::new(io::BufReader::new(f)), size),
        BlobSource::Recipe(recipe) => {
            for frame in &recipe.frames {
                // Format-1 recipes name loose blocks, not packs. A pack not
                // listed at the start may have been written since by a
                // conversion (which runs beside a check): looked up again.
                let pack_size = present.get(&frame.pack).copied().or_else(|| {
                    std::fs::metadata(store.layout().pack(frame.pack))
                        .ok()
                        .map(|m| m.len())
                });
                let Some(pack_size) = pack_size else {
                    return Err(format!(
                        "its recipe names pack {}, which is missing",
                        pack_name(frame.pack)
                    ));
                };
                if frame.offset.saturating_add(u64::from(frame.stored_len)) > pack_size {
                    return Err(format!(
                        "its recipe names a frame at {} of pack {}, past the pack's end ({pack_size} bytes)",
                        frame.offset,
                        pack_name(frame.pack)
                    ));
                }
            }
            let size = recipe.size;
            (Box::new(Rebuild::new(store.layout(), recipe, 0)), size)
        }
    };
    if !read_data {
        return Ok(());
    }
    let (got, read) = Hasher::digest_reader(digest.algorithm(), &mut input)
        .map_err(|e| format!("reading it back failed: {e}"))?;
    report.bytes_read += read;
    if read != size {
        return Err(format!("{read} bytes read back, {size} expected"));
    }
    if &got != digest {
        return Err(format!("its bytes hash to {got}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::convert::convert;
    use crate::test_support::{
        commit_blob, gzip, put_image, scratch_store, seeded_bytes, settings, tar_of,
    };

    #[test]
    fn an_empty_store_is_clean() {
        let store = scratch_store("check-empty");
        let r = check(&store, true).unwrap();
        assert!(r.is_clean(), "{r:?}");
        assert_eq!((r.blocks, r.blobs, r.packs), (0, 0, 0));
    }

    /// Two converted blobs (one raw, one gzip layer) and one still waiting.
    fn store_with_blobs(name: &str) -> (Store, Vec<Digest>) {
        let store = scratch_store(name);
        let raw = commit_blob(&store, &seeded_bytes(1, 200_000));
        let tar = tar_of(&[("a.bin", &seeded_bytes(2, 100_000), 1_700_000_000)]);
        let layer = commit_blob(&store, &gzip(&tar, 6));
        for d in [&raw, &layer] {
            convert(&store, &settings(), d).unwrap();
        }
        let pending = commit_blob(&store, &seeded_bytes(3, 5_000));
        (store, vec![raw, layer, pending])
    }

    fn biggest_pack(store: &Store) -> std::path::PathBuf {
        let packs: Vec<_> = fs::read_dir(store.layout().packs())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        packs
            .into_iter()
            .max_by_key(|p| fs::metadata(p).unwrap().len())
            .unwrap()
    }

    #[test]
    fn manifests_naming_missing_blobs_are_damage_and_unnamed_blobs_are_counted() {
        let (store, digests) = store_with_blobs("check-manifests");
        let manifest = put_image(&store, "team/app", &digests[2], &[&digests[1]]);
        let r = check(&store, false).unwrap();
        assert!(r.is_clean(), "{r:?}");
        assert_eq!((r.manifests, r.bad_manifests), (1, 0));
        // The raw blob is named by no manifest.
        assert_eq!(r.unreferenced_blobs, 1, "{r:?}");
        assert_eq!(r.unreferenced_bytes, 200_000);

        // The layer goes (what a wrong collection would do): the manifest
        // is damaged, and says what it misses.
        fs::remove_dir_all(store.layout().layer(&digests[1])).unwrap();
        let r = check(&store, false).unwrap();
        assert!(!r.is_clean(), "{r:?}");
        assert_eq!(r.bad_manifests, 1);
        let line = format!("team/app@{manifest}: names {}", digests[1]);
        assert!(
            r.problems.iter().any(|p| p.contains(&line)),
            "{:?}",
            r.problems
        );
    }

    #[test]
    fn a_converted_store_is_clean_and_every_blob_reads_back() {
        let (store, digests) = store_with_blobs("check-clean");
        let r = check(&store, true).unwrap();
        assert!(r.is_clean(), "{r:?}");
        assert!(r.blocks > 20, "{r:?}");
        assert_eq!(r.blobs, digests.len() as u64);
        assert_eq!(r.unindexed_packs, 0);
        assert!(r.bytes_read >= 300_000, "{r:?}");
    }

    #[test]
    fn a_flipped_byte_in_a_pack_is_found_and_names_the_blobs() {
        let (store, _) = store_with_blobs("check-flip");
        let pack = biggest_pack(&store);
        let mut bytes = fs::read(&pack).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        fs::write(&pack, bytes).unwrap();
        // Without reading the blobs, the index check finds it.
        let r = check(&store, false).unwrap();
        assert!(r.bad_blocks > 0, "{r:?}");
        assert_eq!(r.bad_blobs, 0, "recipes still parse: {r:?}");
        // Reading the blobs finds which one it breaks.
        let r = check(&store, true).unwrap();
        assert!(r.bad_blobs >= 1, "{r:?}");
        assert!(!r.problems.is_empty());
        // Nothing was changed by the check.
        assert!(fs::metadata(&pack).is_ok());
    }

    #[test]
    fn a_truncated_recipe_is_reported_and_the_other_blobs_still_check() {
        let (store, digests) = store_with_blobs("check-truncated");
        let recipe = store.layout().path(&store.layout().recipe_key(&digests[1]));
        let bytes = fs::read(&recipe).unwrap();
        fs::write(&recipe, &bytes[..bytes.len() / 2]).unwrap();
        let r = check(&store, true).unwrap();
        assert_eq!((r.blobs, r.bad_blobs), (3, 1), "{r:?}");
        assert!(
            r.problems
                .iter()
                .any(|p| p.contains(&format!("blob {}", digests[1]))),
            "{:?}",
            r.problems
        );
        assert_eq!(r.bad_blocks, 0, "the packs are intact: {r:?}");
    }

    #[test]
    fn a_missing_pack_and_a_damaged_original_are_reported() {
        let (store, digests) = store_with_blobs("check-missing");
        for pack in fs::read_dir(store.layout().packs()).unwrap() {
            fs::remove_file(pack.unwrap().path()).unwrap();
        }
        let original = store.original_path(&digests[2]);
        let mut bytes = fs::read(&original).unwrap();
        bytes[0] ^= 1;
        fs::write(&original, &bytes).unwrap();
        let r = check(&store, true).unwrap();
        assert!(r.bad_blocks > 0, "{r:?}");
        assert_eq!(r.bad_blobs, 3, "{r:?}");
        assert!(
            r.problems.iter().any(|p| p.contains("missing")),
            "{:?}",
            r.problems
        );
        // The check sets nothing aside: the damaged original is still there.
        assert_eq!(fs::read(&original).unwrap(), bytes);
    }
}
