//! Fixtures for the guest's unit tests, which run under wasmtime through
//! `blockreg run` with a scratch directory preopened at `/scratch`.

pub use blockreg_core::test_support::{gzip, odd_gzip, seeded_bytes, tar_of, texty_bytes, zstd_of};

use crate::objects::MemObjects;
use crate::oci::Digest;
use crate::settings::Settings;
use crate::store::Store;

/// Settings for tests: those of `blockreg serve` without flags, so a test
/// sees the registry users run; tests that need a limit change one field.
pub fn settings() -> Settings {
    Settings {
        delete_enabled: true,
        cache_bytes: 2 << 30,
        max_correction_ratio: 0.15,
        max_decoded_bytes: 4 << 30,
        max_decoded_ratio: 100.0,
        request_timeout_secs: 1800,
        accept_foreign_layers: true,
    }
}

/// A fresh store in its own directory under the scratch preopen.
pub fn scratch_store(name: &str) -> Store {
    let root = std::path::Path::new("/scratch").join(name);
    let _ = std::fs::remove_dir_all(&root);
    Store::open(root).expect("the test runner preopens /scratch")
}

/// A fresh store whose records that go through the object seam are kept
/// in memory, as strictly as a bucket keeps them ([`MemObjects`]); the rest
/// in its own directory under the scratch preopen.
pub fn mem_store(name: &str) -> (Store, std::sync::Arc<MemObjects>) {
    let root = std::path::Path::new("/scratch").join(name);
    let _ = std::fs::remove_dir_all(&root);
    let objects = std::sync::Arc::new(MemObjects::new());
    let store =
        Store::with_objects(root, objects.clone()).expect("the test runner preopens /scratch");
    (store, objects)
}

/// Commits `data` as a blob awaiting conversion, as a finished push does.
pub fn commit_blob(store: &Store, data: &[u8]) -> Digest {
    let d = Digest::of(crate::oci::Algorithm::Sha256, data);
    let id = store.create_upload(&"t/r".parse().unwrap()).unwrap();
    let mut held = hold(store, &id);
    held.append(&mut &data[..], None).unwrap();
    crate::ingest::commit_upload(store, held, &d).unwrap();
    d
}

/// Holds a session that no other request uses.
pub fn hold(store: &Store, id: &crate::store::UploadId) -> crate::store::HeldUpload {
    let lease = std::time::Duration::from_secs(60);
    match store
        .hold_upload(id, lease, std::time::Duration::ZERO)
        .unwrap()
    {
        crate::store::Hold::Held(h) => h,
        other => panic!("session not holdable: {other:?}"),
    }
}

/// Stores an image manifest in `repo` naming `config` and `layers`
/// (each linked into the repository, as a push does).
pub fn put_image(store: &Store, repo: &str, config: &Digest, layers: &[&Digest]) -> Digest {
    let name: crate::oci::RepoName = repo.parse().unwrap();
    let descriptor = |media: &str, d: &Digest| serde_json::json!({"mediaType": media, "digest": d.to_string(), "size": 1});
    for d in layers.iter().copied().chain([config]) {
        store.link_blob(&name, d).unwrap();
    }
    let bytes = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::oci::media::OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", config),
        "layers": layers
            .iter()
            .map(|d| descriptor("application/vnd.oci.image.layer.v1.tar+gzip", d))
            .collect::<Vec<_>>(),
    }))
    .unwrap();
    let digest = Digest::of(crate::oci::Algorithm::Sha256, &bytes);
    store
        .put_manifest(&name, &digest, crate::oci::media::OCI_MANIFEST, &bytes)
        .unwrap();
    digest
}
