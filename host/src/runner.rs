//! `blockreg run`: runs a `wasi:cli/command` component, such as a guest unit
//! test binary (this is the `wasm32-wasip2` runner in `.cargo/config.toml`).
//!
//! The command gets the caller's stdio, its arguments, `RUST_BACKTRACE` if
//! set and nothing else from the environment, and a fresh scratch directory
//! at `/scratch` (also reported as `initial-cwd`, which Rust's std ignores:
//! tests use absolute `/scratch/...` paths) that is removed afterwards.
//! `wasi:http` is linked too, because the guest's test binaries import it,
//! but with the same refusal of outgoing requests as the server's sandbox.

use std::path::Path;

use anyhow::Context as _;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::Store;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxView, WasiView};

use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::bindings::{CommandPre, Settings, SettingsHost};
use crate::ctx::NoOutgoingHttp;
use crate::error::wasm_err;
use crate::guest;

/// Where the scratch directory appears inside the command.
const SCRATCH_GUEST_PATH: &str = "/scratch";

/// Exit status for a trap, as a shell reports a process killed by SIGABRT
/// (what wasmtime's own CLI does too).
const TRAP_EXIT_STATUS: i32 = 128 + 6;

struct CommandCtx {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: NoOutgoingHttp,
}

impl WasiHttpView for CommandCtx {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Test binaries import `settings` (the guest's library does); tests pass
/// their own settings to what they test, so the defaults satisfy it.
impl SettingsHost for CommandCtx {
    fn get_settings(&mut self) -> Settings {
        crate::ctx::guest_settings(
            &crate::GuestSettings::default(),
            crate::Limits::default().request_timeout,
        )
    }
}

impl WasiView for CommandCtx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

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
    let engine = &guest::runtime()?.engine;
    let bytes = tokio::fs::read(file)
        .await
        .with_context(|| format!("reading {}", file.display()))?;
    let compile_engine = engine.clone();
    let component = tokio::task::spawn_blocking(move || Component::new(&compile_engine, &bytes))
        .await
        .context("the compiler task panicked")?
        .map_err(wasm_err)
        .with_context(|| format!("compiling {}", file.display()))?;
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(wasm_err)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(wasm_err)?;
    crate::bindings::add_settings_to_linker::<CommandCtx, wasmtime::component::HasSelf<CommandCtx>>(
        &mut linker,
        |ctx| ctx,
    )
    .map_err(wasm_err)?;
    let pre = linker
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
    let mut wasi = WasiCtx::builder();
    wasi.inherit_stdio()
        .arg(argv0)
        .args(args)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .initial_cwd(SCRATCH_GUEST_PATH)
        .preopened_dir(scratch.path(), SCRATCH_GUEST_PATH, FsPerms::ReadWrite)
        .map_err(wasm_err)?;
    if let Ok(backtrace) = std::env::var("RUST_BACKTRACE") {
        wasi.env("RUST_BACKTRACE", backtrace);
    }
    let mut store = Store::new(
        engine,
        CommandCtx {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: NoOutgoingHttp,
        },
    );
    // The shared engine interrupts at every epoch; here that only yields.
    store.set_epoch_deadline(1);
    store.epoch_deadline_async_yield_and_update(1);

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
