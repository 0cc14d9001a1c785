//! The store's layout: where each kind of record lives under the store's
//! root (`data/FORMAT.md` describes the files). This is the one module that
//! knows folder and file names; `store.rs`, `packs.rs`, `cache.rs` and
//! `rebuild.rs` take a [`Layout`] and ask it for paths, and every name,
//! tag and digest reaching a path here is already a validated newtype.

use std::path::{Path, PathBuf};

use crate::objects::Key;
use crate::oci::{Digest, RepoName, Tag};
use crate::recipe::pack_name;

/// The top-level folders; `uploads` last, because its presence says the
/// store is laid out.
pub const FOLDERS: [&str; 5] = ["blocks", "cache", "layers", "manifests", "uploads"];

/// A pushed blob's bytes, until conversion replaces them with a recipe.
const ORIGINAL: &str = "original";
/// How to rebuild a converted blob.
const RECIPE: &str = "recipe.json";
/// Why a blob could not be converted (it stays served from its original).
const FAILED: &str = "conversion-failed";
/// Conversion attempts that did not finish.
const ATTEMPTS: &str = "conversion-attempts";
/// An original found not to hash to its digest, set aside.
const DAMAGED: &str = "damaged-original";
/// When the blob was last used (pushed, mounted, asked for by a push, named
/// by a manifest push): Unix seconds, for the garbage collection's grace.
const TOUCHED: &str = "touched";

/// A repository's manifests, tags, links to its blobs, and referrers.
const MANIFESTS: &str = "_manifests";
const TAGS: &str = "_tags";
const BLOB_LINKS: &str = "_blobs";
const REFERRERS: &str = "_referrers";

/// A key made of validated names (repository names, tags, digests and
/// this module's constants all keep [`Key`]'s rules).
fn key(s: String) -> Key {
    Key::new(s).expect("the layout builds keys from validated names")
}

fn child(parent: &Key, name: &str) -> Key {
    parent
        .join(name)
        .expect("the layout builds keys from validated names")
}

/// Paths of one store.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The top-level folders, `uploads` last.
    pub fn folders(&self) -> impl Iterator<Item = PathBuf> + '_ {
        FOLDERS.iter().map(|f| self.root.join(f))
    }

    /// Whether the folders exist (checked by the last one made).
    pub fn is_laid_out(&self) -> bool {
        self.uploads().is_dir()
    }

    // --- blobs: layers/<digest>/ ---

    /// The folder of every committed blob.
    pub fn layers(&self) -> PathBuf {
        self.root.join("layers")
    }

    /// The folder of one blob.
    pub fn layer(&self, digest: &Digest) -> PathBuf {
        self.path(&self.layer_key(digest))
    }

    /// A blob's folder as an object key; its records that go through the
    /// object seam (the recipe and the conversion records) are below it.
    pub fn layer_key(&self, digest: &Digest) -> Key {
        key(format!("layers/{digest}"))
    }

    pub fn recipe_key(&self, digest: &Digest) -> Key {
        child(&self.layer_key(digest), RECIPE)
    }

    pub fn conversion_failed_key(&self, digest: &Digest) -> Key {
        child(&self.layer_key(digest), FAILED)
    }

    pub fn conversion_attempts_key(&self, digest: &Digest) -> Key {
        child(&self.layer_key(digest), ATTEMPTS)
    }

    pub fn original(&self, digest: &Digest) -> PathBuf {
        self.layer(digest).join(ORIGINAL)
    }

    pub fn damaged_original(&self, digest: &Digest) -> PathBuf {
        self.layer(digest).join(DAMAGED)
    }

    pub fn touched(&self, digest: &Digest) -> PathBuf {
        self.layer(digest).join(TOUCHED)
    }

    /// A blob folder's files, by the folder's name as listed (used by
    /// walks of `layers/` that have not parsed the name as a digest).
    pub fn original_in(layer: &Path) -> PathBuf {
        layer.join(ORIGINAL)
    }

    pub fn recipe_in(layer: &Path) -> PathBuf {
        layer.join(RECIPE)
    }

    pub fn conversion_failed_in(layer: &Path) -> PathBuf {
        layer.join(FAILED)
    }

    pub fn damaged_original_in(layer: &Path) -> PathBuf {
        layer.join(DAMAGED)
    }

    pub fn touched_in(layer: &Path) -> PathBuf {
        layer.join(TOUCHED)
    }

    // --- blocks/ ---

    /// Packs, index shards and (format 1) loose blocks.
    pub fn blocks(&self) -> PathBuf {
        self.root.join("blocks")
    }

    pub fn packs(&self) -> PathBuf {
        self.blocks().join("packs")
    }

    pub fn pack(&self, id: u64) -> PathBuf {
        self.path(&self.pack_key(id))
    }

    /// A pack as an object key (its frames are read through the host's
    /// `frames` import).
    pub fn pack_key(&self, id: u64) -> Key {
        key(format!("blocks/packs/{}.pack", pack_name(id)))
    }

    /// Where a pack is written before its rename.
    pub fn pack_temporary(&self, id: u64) -> PathBuf {
        self.packs().join(format!(".tmp-{}.pack", pack_name(id)))
    }

    pub fn index(&self) -> PathBuf {
        self.blocks().join("index")
    }

    /// One of the 4,096 index shards, by the first 12 bits of the SHA-1.
    pub fn index_shard(&self, shard: usize) -> PathBuf {
        self.index().join(format!("{shard:03x}"))
    }

    /// A format-1 loose block, by its SHA-1 in hex.
    pub fn loose_block(&self, hex: &str) -> PathBuf {
        self.blocks().join(&hex[..2]).join(hex)
    }

    // --- cache/ ---

    pub fn cache(&self) -> PathBuf {
        self.root.join("cache")
    }

    pub fn cached(&self, digest: &Digest) -> PathBuf {
        self.cache().join(digest.to_string())
    }

    // --- manifests/<repo>/: records kept through the object seam ---

    /// The file of an object (for the code that still reads the local
    /// directory's files directly: the collection, `check`).
    pub fn path(&self, key: &Key) -> PathBuf {
        self.root.join(key.as_str())
    }

    /// The folder of every repository.
    pub fn repositories_key(&self) -> Key {
        key("manifests".to_string())
    }

    pub fn repository_key(&self, repo: &RepoName) -> Key {
        key(format!("manifests/{}", repo.as_str()))
    }

    /// Where a repository's manifests are, by digest.
    pub fn manifests_key(&self, repo: &RepoName) -> Key {
        Self::manifests_key_in(&self.repository_key(repo))
    }

    /// A repository folder's manifests, tags and blob links, by the
    /// folder's key (walks of `manifests/` find repositories by these).
    pub fn manifests_key_in(repository: &Key) -> Key {
        child(repository, MANIFESTS)
    }

    pub fn tags_key_in(repository: &Key) -> Key {
        child(repository, TAGS)
    }

    pub fn manifest_key(&self, repo: &RepoName, digest: &Digest) -> Key {
        child(&self.manifests_key(repo), &digest.to_string())
    }

    /// A version-2 manifest's media type, beside it.
    pub fn legacy_media_type_key(&self, repo: &RepoName, digest: &Digest) -> Key {
        child(&self.manifests_key(repo), &format!("{digest}.type"))
    }

    pub fn tags_key(&self, repo: &RepoName) -> Key {
        Self::tags_key_in(&self.repository_key(repo))
    }

    pub fn tag_key(&self, repo: &RepoName, tag: &Tag) -> Key {
        child(&self.tags_key(repo), tag.as_str())
    }

    /// The link saying a blob belongs to a repository.
    pub fn blob_link_key(&self, repo: &RepoName, digest: &Digest) -> Key {
        child(
            &child(&self.repository_key(repo), BLOB_LINKS),
            &digest.to_string(),
        )
    }

    /// Descriptors of the manifests whose `subject` is `subject`.
    pub fn referrers_key(&self, repo: &RepoName, subject: &Digest) -> Key {
        child(
            &child(&self.repository_key(repo), REFERRERS),
            &subject.to_string(),
        )
    }

    pub fn referrer_key(&self, repo: &RepoName, subject: &Digest, digest: &Digest) -> Key {
        child(&self.referrers_key(repo, subject), &digest.to_string())
    }

    // The same records as files, for the code that still walks them.

    pub fn repositories(&self) -> PathBuf {
        self.path(&self.repositories_key())
    }

    pub fn manifests(&self, repo: &RepoName) -> PathBuf {
        self.path(&self.manifests_key(repo))
    }

    pub fn manifest(&self, repo: &RepoName, digest: &Digest) -> PathBuf {
        self.path(&self.manifest_key(repo, digest))
    }

    pub fn tags(&self, repo: &RepoName) -> PathBuf {
        self.path(&self.tags_key(repo))
    }

    // --- gc/: the garbage collection's own records ---

    /// Made on first use (stores laid out before collection existed lack
    /// it).
    pub fn gc(&self) -> PathBuf {
        self.root.join("gc")
    }

    /// Blob folders and manifests a collection set aside while it judges
    /// them (`gc.rs`): put back or removed, never left for good.
    pub fn trash(&self) -> PathBuf {
        self.gc().join("trash")
    }

    /// Packs a collection rewrote: removed by a later one once no reader
    /// can still be streaming from them.
    pub fn retired_packs(&self) -> PathBuf {
        self.gc().join("retired")
    }

    pub fn retired_pack(&self, id: u64) -> PathBuf {
        self.retired_packs().join(pack_name(id))
    }

    /// A pack rewrite in progress: which frames were copied where, written
    /// once the copies are durable and removed once every index record and
    /// recipe points at them; a collection finds it and finishes the
    /// rewrite.
    pub fn rewrite_journal(&self) -> PathBuf {
        self.gc().join("rewrite.json")
    }

    /// What the last collection did (for `stats`).
    pub fn last_collection(&self) -> PathBuf {
        self.gc().join("last-collection.json")
    }

    // --- uploads/<id>/ ---

    pub fn uploads(&self) -> PathBuf {
        self.root.join("uploads")
    }

    /// A session's folder; its files are the sessions' own protocol
    /// (`store.rs`, uploads section).
    pub fn upload(&self, id: &str) -> PathBuf {
        self.uploads().join(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_format() {
        let l = Layout::new("/data");
        let d: Digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            .parse()
            .unwrap();
        let repo: RepoName = "a/b".parse().unwrap();
        let tag: Tag = "v1".parse().unwrap();
        assert_eq!(
            l.original(&d),
            Path::new("/data/layers")
                .join(d.to_string())
                .join("original")
        );
        assert_eq!(
            l.pack(0xab),
            Path::new("/data/blocks/packs/00000000000000ab.pack")
        );
        assert_eq!(l.index_shard(0xabc), Path::new("/data/blocks/index/abc"));
        assert_eq!(l.loose_block("abcdef"), Path::new("/data/blocks/ab/abcdef"));
        assert_eq!(
            l.path(&l.tag_key(&repo, &tag)),
            Path::new("/data/manifests/a/b/_tags/v1")
        );
        assert_eq!(
            l.touched(&d),
            Path::new("/data/layers")
                .join(d.to_string())
                .join("touched")
        );
        assert_eq!(
            l.retired_pack(0xab),
            Path::new("/data/gc/retired/00000000000000ab")
        );
        assert_eq!(
            l.path(&l.blob_link_key(&repo, &d)),
            Path::new("/data/manifests/a/b/_blobs").join(d.to_string())
        );
        assert_eq!(l.folders().last().unwrap(), l.uploads());
    }
}
