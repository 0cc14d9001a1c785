//! The data directory: the one capability the guest is granted.
//!
//! The host opens it once with cap-std and checks that nothing at its top
//! level is a symlink leading out of it, so such a store is refused at
//! startup instead of failing request by request. The folders inside are
//! the guest's business (its `store.rs` owns the layout and creates them;
//! see `data/FORMAT.md`). Each guest instance gets the directory as its
//! `/data` preopen, which wasmtime-wasi resolves with the same capability
//! rules: every path the guest opens is confined beneath it.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use cap_std::ambient_authority;
use cap_std::fs::Dir;

/// Opens `path` (creating it when `create` is set), checks it, and returns
/// its absolute path for the per-instance preopen.
///
/// # Errors
///
/// When the directory is missing (and not to be created), cannot be
/// opened or listed, or an entry at its top level is a symlink that leads
/// outside it.
pub(crate) fn prepare(path: &Path, create: bool) -> anyhow::Result<PathBuf> {
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
    let listing = dir
        .entries()
        .with_context(|| format!("listing the data directory {}", path.display()))?;
    for entry in listing {
        let entry = entry.with_context(|| format!("listing {}", path.display()))?;
        let name = entry.file_name();
        let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
        // cap-std refuses to follow a link whose target is outside `dir`.
        if is_link && dir.metadata(&name).is_err() {
            anyhow::bail!(
                "{}/ inside the data directory {} is a symlink leading outside it",
                name.to_string_lossy(),
                path.display()
            );
        }
    }
    Ok(path)
}

/// The file in which hosts before the `settings` interface handed the guest
/// its settings; nothing reads it any more.
const LEGACY_SETTINGS: &str = "config.json";

/// Refuses a secret (`what`: a TLS key, the htpasswd file, the token
/// certificates) at `path` inside the data directory, which the guest can
/// read and which may be copied around as "just the store".
///
/// # Errors
///
/// When `path` does not exist or lies inside `data_dir`.
pub(crate) fn refuse_inside(what: &str, path: &Path, data_dir: &Path) -> anyhow::Result<()> {
    let abs = path
        .canonicalize()
        .with_context(|| format!("{what} {}", path.display()))?;
    let data_abs = data_dir
        .canonicalize()
        .unwrap_or_else(|_| data_dir.to_owned());
    if abs.starts_with(&data_abs) {
        anyhow::bail!(
            "{what} {} lies inside the data directory {}, which the guest can read; keep it elsewhere",
            path.display(),
            data_dir.display()
        );
    }
    Ok(())
}

/// Prepares the directory for serving: [`prepare`], creating it, and drops
/// the settings file older hosts wrote (settings now reach the guest as the
/// typed record of `wit/settings.wit`, never through the store).
///
/// # Errors
///
/// As [`prepare`], or when the old settings file cannot be removed.
pub(crate) fn prepare_for_serving(path: &Path) -> anyhow::Result<PathBuf> {
    let path = prepare(path, true)?;
    match std::fs::remove_file(path.join(LEGACY_SETTINGS)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing {LEGACY_SETTINGS}"));
        }
        _ => {}
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_creates_the_directory_and_returns_an_absolute_path() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let got = prepare(&data, true).unwrap();
        assert!(got.is_absolute());
        assert!(data.is_dir());
    }

    #[test]
    fn serving_drops_the_settings_file_of_older_hosts() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("config.json"), br#"{"delete_enabled":false}"#).unwrap();
        prepare_for_serving(&data).unwrap();
        assert!(!data.join("config.json").exists());
        prepare_for_serving(&data).unwrap();
    }

    #[test]
    fn missing_directory_is_an_error_unless_created() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(prepare(&tmp.path().join("nope"), false).is_err());
    }

    #[test]
    fn a_top_level_symlink_leading_outside_is_refused() {
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
