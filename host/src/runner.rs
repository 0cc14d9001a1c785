//! `blockreg run`: runs a `wasi:cli/command` component, such as a guest unit
//! test binary (this is the `wasm32-wasip2` runner in `.cargo/config.toml`).
//!
//! The command gets the caller's stdio, its arguments, `RUST_BACKTRACE` if
//! set and nothing else from the environment, and a fresh scratch directory
//! at `/scratch` (also reported as `initial-cwd`, which Rust's std ignores:
//! tests use absolute `/scratch/...` paths) that is removed afterwards.
//! It runs in the server's sandbox (`ctx.rs`) and linker (`guest.rs`): the
//! scratch directory takes the place of `/data` (and of the store's
//! `objects`), and `wasi:http` is there
//! because the guest's test binaries import it, with outgoing requests
//! refused.

use std::path::Path;

use anyhow::Context as _;
use wasmtime_wasi::I32Exit;

use crate::bindings::CommandPre;
use crate::ctx;
use crate::error::wasm_err;
use crate::guest;

/// Where the scratch directory appears inside the command.
const SCRATCH_GUEST_PATH: &str = "/scratch";

/// Exit status for a trap, as a shell reports a process killed by SIGABRT
/// (what wasmtime's own CLI does too).
const TRAP_EXIT_STATUS: i32 = 128 + 6;

/// Runs the command component in `file` with `args` (after `argv[0]`, which
/// is the file name) and returns its exit status: 0 on success, the status
/// given to `wasi:cli/exit` (Rust's std reports any failure as 1), 1 when
/// `run` returns an error, and 134 when it traps (the trap is printed to
/// stderr).
///
/// # Errors
///
/// Fails when the file cannot be read or compiled, is not a command, or the
/// scratch directory cannot be created.
pub async fn run_command(file: &Path, args: &[String]) -> anyhow::Result<i32> {
    let runtime = guest::runtime()?;
    let bytes = tokio::fs::read(file)
        .await
        .with_context(|| format!("reading {}", file.display()))?;
    let component = guest::compile(runtime, bytes)
        .await
        .with_context(|| format!("compiling {}", file.display()))?;
    let pre = runtime
        .linker
        .instantiate_pre(&component)
        .and_then(CommandPre::new)
        .map_err(wasm_err)
        .with_context(|| format!("{} is not a wasi:cli command", file.display()))?;

    let scratch = tempfile::Builder::new()
        .prefix("blockreg-run-")
        .tempdir()
        .context("creating the scratch directory")?;
    let argv0 = file
        .file_name()
        .map_or_else(|| file.to_string_lossy(), |name| name.to_string_lossy());
    let mut wasi = ctx::wasi_builder(scratch.path(), SCRATCH_GUEST_PATH).map_err(wasm_err)?;
    wasi.inherit_stdio()
        .arg(argv0)
        .args(args)
        .initial_cwd(SCRATCH_GUEST_PATH);
    if let Ok(backtrace) = std::env::var("RUST_BACKTRACE") {
        wasi.env("RUST_BACKTRACE", backtrace);
    }
    // Test binaries are trusted: no memory limit. They import `settings`
    // (the guest's library does) but pass their own to what they test.
    let mut store = ctx::store_with(
        &runtime.engine,
        wasi,
        scratch.path(),
        usize::MAX,
        ctx::default_guest_settings(),
    )
    .map_err(wasm_err)?;

    let result = async {
        let command = pre.instantiate_async(&mut store).await?;
        command.wasi_cli_run().call_run(&mut store).await
    }
    .await;
    drop(store);
    let scratch_path = scratch.path().to_owned();
    if let Err(e) = scratch.close() {
        eprintln!("warning: could not remove {}: {e}", scratch_path.display());
    }
    Ok(match result {
        Ok(Ok(())) => 0,
        Ok(Err(())) => 1,
        Err(e) => match e.downcast_ref::<I32Exit>() {
            Some(exit) => exit.0,
            None => {
                eprintln!("error: {} trapped: {e:#}", file.display());
                TRAP_EXIT_STATUS
            }
        },
    })
}
