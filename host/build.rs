//! Builds the guest component and hands it to the host as `$OUT_DIR/guest.wasm`,
//! which `src/guest.rs` embeds with `include_bytes!`.
//!
//! The guest is built by a nested `cargo build -p guest --target wasm32-wasip2`
//! into its own target directory (`target/guest-build`): sharing the outer
//! build's directory would deadlock on cargo's build lock. Variables that the
//! outer cargo sets for build scripts and that a nested cargo would read
//! (flags for the host target, wrappers such as clippy-driver) are removed,
//! while the jobserver (`CARGO_MAKEFLAGS`) is kept so the nested build shares
//! the outer build's job slots.
//!
//! A toolchain installed before `rust-toolchain.toml` asked for the
//! `wasm32-wasip2` target does not get it (rustup adds the targets of that
//! file only when it installs the toolchain), so the first `cargo run` on such
//! a machine would stop with "can't find crate for `core`". When the target's
//! standard library is missing and the toolchain is rustup's, the build adds
//! it (`rustup target add`), saying so in a warning; otherwise it stops with
//! the command to run.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Environment variables of the outer cargo that would leak into the guest
/// build: host-target flags, compiler wrappers, and target-dir or target
/// overrides (the command line sets both explicitly).
const STRIPPED_ENV: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "RUSTDOCFLAGS",
    "CARGO_ENCODED_RUSTDOCFLAGS",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_RUSTC_WRAPPER",
    "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_PRIMARY_PACKAGE",
    "CLIPPY_ARGS",
    "__CARGO_FIX_PLZ",
];

/// The guest's cargo package and the file its cdylib produces.
const GUEST_PACKAGE: &str = "guest";
const GUEST_ARTIFACT: &str = "guest.wasm";
const GUEST_TARGET: &str = "wasm32-wasip2";

/// Exports the host needs; checked here only to warn early, the real check is
/// done by wasmtime when the host loads the component.
const REQUIRED_EXPORTS: &[&str] = &["wasi:http/incoming-handler@0.2", "blockreg:registry/admin@"];

fn main() -> ExitCode {
    match build_guest() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn build_guest() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR")?);
    let workspace = manifest_dir
        .parent()
        .ok_or("host crate has no parent directory")?
        .to_path_buf();
    let out_dir = PathBuf::from(env_var("OUT_DIR")?);

    // Everything the guest is built from: its crate, the pure core crate,
    // the vendored preflate-rs, the contract and the workspace manifest.
    for watched in [
        "guest/src",
        "guest/Cargo.toml",
        "core/src",
        "core/Cargo.toml",
        "third_party",
        "wit",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }

    ensure_guest_target()?;

    let target_dir = workspace.join("target").join("guest-build");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .arg("build")
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .args(["-p", GUEST_PACKAGE, "--release", "--target", GUEST_TARGET])
        .arg("--target-dir")
        .arg(&target_dir);
    for var in STRIPPED_ENV {
        cmd.env_remove(var);
    }

    let status = cmd
        .status()
        .map_err(|e| format!("could not start cargo to build the guest component: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building the guest component failed ({status}); the host embeds it, so the \
             host cannot be built either. Fix the guest errors shown above (reproduce with \
             `cargo build -p guest --release --target {GUEST_TARGET}`)."
        ));
    }

    let built = target_dir
        .join(GUEST_TARGET)
        .join("release")
        .join(GUEST_ARTIFACT);
    let bytes = fs::read(&built).map_err(|e| {
        format!(
            "the guest built but {} is missing ({e}); is guest/Cargo.toml still a cdylib?",
            built.display()
        )
    })?;
    check_component(&built, &bytes)?;
    fs::write(out_dir.join(GUEST_ARTIFACT), &bytes)
        .map_err(|e| format!("could not copy the guest into OUT_DIR: {e}"))?;
    Ok(())
}

/// Makes sure the toolchain building the host can also build the guest: its
/// sysroot holds the standard library for [`GUEST_TARGET`], or rustup adds it.
fn ensure_guest_target() -> Result<(), String> {
    // Re-check when the toolchain changes (another RUSTUP_HOME or channel).
    println!("cargo:rerun-if-env-changed=RUSTUP_HOME");
    println!("cargo:rerun-if-env-changed=RUSTUP_TOOLCHAIN");
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| OsString::from("rustc"));
    if target_installed(&rustc)? {
        return Ok(());
    }
    let toolchain = env::var("RUSTUP_TOOLCHAIN").ok();
    let mut rustup = Command::new("rustup");
    rustup.args(["target", "add", GUEST_TARGET]);
    if let Some(toolchain) = &toolchain {
        rustup.args(["--toolchain", toolchain]);
    }
    let added = match rustup.status() {
        Ok(status) => status.success(),
        Err(_) => false,
    };
    if added && target_installed(&rustc)? {
        println!(
            "cargo:warning=added the {GUEST_TARGET} target to the toolchain {} (the guest \
             component is built for it)",
            toolchain.as_deref().unwrap_or("in use")
        );
        return Ok(());
    }
    Err(format!(
        "the Rust toolchain building blockreg has no standard library for {GUEST_TARGET}, \
         which the embedded guest component is built for, and `rustup target add \
         {GUEST_TARGET}` did not add it. Install the target for this toolchain \
         (rustup target add {GUEST_TARGET}) and build again."
    ))
}

/// Whether `rustc`'s sysroot holds a compiled `core` for [`GUEST_TARGET`].
fn target_installed(rustc: &OsString) -> Result<bool, String> {
    let output = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", GUEST_TARGET])
        .output()
        .map_err(|e| format!("could not run rustc to find its {GUEST_TARGET} library: {e}"))?;
    if !output.status.success() {
        return Ok(false);
    }
    let libdir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let Ok(entries) = fs::read_dir(&libdir) else {
        return Ok(false);
    };
    Ok(entries.flatten().any(|entry| {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        name.starts_with("libcore-") && name.ends_with(".rlib")
    }))
}

/// Fails on a core module (the wrong target) and warns when an export the
/// host needs is absent, which is the case while the guest is still empty.
fn check_component(path: &Path, bytes: &[u8]) -> Result<(), String> {
    // Component binaries share the `\0asm` magic with core modules but use
    // layer 1 in the second half of the version field.
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" || bytes[6..8] != [1, 0] {
        return Err(format!(
            "{} is not a WebAssembly component; the guest must be built for {GUEST_TARGET}",
            path.display()
        ));
    }
    for export in REQUIRED_EXPORTS {
        if !contains(bytes, export.as_bytes()) {
            println!(
                "cargo:warning=the guest component does not mention `{export}`; the embedded \
                 guest will be refused at start-up until guest/ exports it (use --guest FILE \
                 meanwhile)"
            );
        }
    }
    Ok(())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn env_var(name: &str) -> Result<OsString, String> {
    env::var_os(name).ok_or_else(|| format!("cargo did not set {name}"))
}
