//! The data directory: the one capability the guest is granted.
//!
//! The host opens it once with cap-std and lays out the store's top-level
//! folders through that capability, so a folder that is a symlink leading
//! out of the directory is refused at startup instead of being followed.
//! Each guest instance then gets the same directory as its `/data` preopen,
//! which wasmtime-wasi resolves with the same capability rules: every path
//! the guest opens is confined beneath it.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use cap_std::ambient_authority;
use cap_std::fs::Dir;

use crate::config::GuestSettings;

/// The store's top-level folders (see `data/FORMAT.md`).
const LAYOUT: [&str; 5] = ["blocks", "cache", "layers", "manifests", "uploads"];

/// Opens `path` (creating it when `create` is set), lays out the store in
/// it, and returns its absolute path for the per-instance preopen.
///
/// # Errors
///
/// When the directory is missing (and not to be created), cannot be
/// opened, or a layout folder cannot be created inside it (for example a
/// symlink that leads outside).
pub(crate) fn prepare(path: &Path, create: bool) -> anyhow::Result<PathBuf> {
    open(path, create).map(|(path, _)| path)
}

/// Like [`prepare`], also returning the capability on the directory.
fn open(path: &Path, create: bool) -> anyhow::Result<(PathBuf, Dir)> {
    if create {
        std::fs::create_dir_all(path)
            .with_context(|| format!("creating the data directory {}", path.display()))?;
    }
    // Absolute, so a later change of working directory cannot move the store.
    let path = path
        .canonicalize()
        .with_context(|| format!("data directory {} does not exist", path.display()))?;
    let dir = Dir::open_ambient_dir(&path, ambient_authority())
        .with_context(|| format!("opening the data directory {}", path.display()))?;
    for folder in LAYOUT {
        dir.create_dir_all(folder).with_context(|| {
            format!(
                "creating {folder}/ inside the data directory {}",
                path.display()
            )
        })?;
    }
    Ok((path, dir))
}

/// Prepares the directory for serving and records the operator's settings
/// in `config.json`, which the guest reads (it sees no environment):
/// `{"delete_enabled", "cache_bytes", "max_correction_ratio",
/// "max_decoded_bytes", "max_decoded_ratio"}` (see [`GuestSettings`]) and
/// `request_timeout_secs` (the host's per-request limit, after which an
/// upload session held by a request that never finished may be taken
/// over). Written atomically: temp file, fsync, rename.
///
/// # Errors
///
/// As [`prepare`], or when the settings cannot be written.
pub(crate) fn prepare_for_serving(
    path: &Path,
    settings: &GuestSettings,
    request_timeout: std::time::Duration,
) -> anyhow::Result<PathBuf> {
    use std::io::Write as _;
    let (path, dir) = open(path, true)?;
    let settings = serde_json::json!({
        "delete_enabled": settings.delete_enabled,
        "cache_bytes": settings.cache_bytes,
        "max_correction_ratio": settings.max_correction_ratio,
        "max_decoded_bytes": settings.max_decoded_bytes,
        "max_decoded_ratio": settings.max_decoded_ratio,
        "request_timeout_secs": request_timeout.as_secs(),
    });
    let tmp = format!(".tmp-config.json-{}", std::process::id());
    let write = || -> std::io::Result<()> {
        let mut f = dir.create(&tmp)?;
        f.write_all(settings.to_string().as_bytes())?;
        f.sync_all()?;
        dir.rename(&tmp, &dir, "config.json")
    };
    write()
        .inspect_err(|_| {
            let _ = dir.remove_file(&tmp);
        })
        .with_context(|| format!("writing {}/config.json", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_creates_the_layout_and_returns_an_absolute_path() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let got = prepare(&data, true).unwrap();
        assert!(got.is_absolute());
        for folder in LAYOUT {
            assert!(data.join(folder).is_dir(), "{folder}");
        }
    }

    #[test]
    fn serving_records_the_deletion_setting_for_the_guest() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        prepare_for_serving(
            &data,
            &GuestSettings {
                delete_enabled: false,
                ..GuestSettings::default()
            },
            std::time::Duration::from_secs(60),
        )
        .unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(data.join("config.json")).unwrap()).unwrap();
        assert_eq!(v["delete_enabled"], false);
        assert_eq!(v["max_decoded_bytes"], 4u64 << 30);
        assert_eq!(v["max_decoded_ratio"], 100.0);
        assert_eq!(v["request_timeout_secs"], 60);
        prepare_for_serving(
            &data,
            &GuestSettings::default(),
            std::time::Duration::from_secs(60),
        )
        .unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(data.join("config.json")).unwrap()).unwrap();
        assert_eq!(v["delete_enabled"], true);
    }

    #[test]
    fn missing_directory_is_an_error_unless_created() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(prepare(&tmp.path().join("nope"), false).is_err());
    }

    #[test]
    fn layout_folder_linking_outside_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, data.join("blocks")).unwrap();
        let err = prepare(&data, true).unwrap_err();
        assert!(format!("{err:#}").contains("blocks/"), "{err:#}");
    }
}
