//! Loading the guest component and swapping it while serving.
//!
//! One process-wide [`Engine`] compiles every component. It has epoch
//! interruption on, and a ticker thread advances the epoch every
//! [`EPOCH_TICK`]; stores yield to the executor at each tick (see
//! `ctx::new_store`), so a CPU-bound guest cannot hold a worker thread and
//! request timeouts fire. Instances use the on-demand allocator: the pooling
//! allocator would reserve address space for `--max-concurrency` instances of
//! `--max-memory-mib` up front, a poor trade for a registry whose requests
//! are I/O-bound.
//!
//! A component is accepted only if it fits both worlds the host drives,
//! `wasi:http/proxy` (requests) and `admin-host` (admin calls), and answers
//! `admin.describe`. The serving copy lives in a [`GuestSlot`]; each request
//! takes an `Arc` of it at its start, so replacing the slot never disturbs
//! requests in flight.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use tokio::sync::OnceCell;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, Store};

use crate::bindings::{Admin, AdminHostPre, GuestInfo, ProxyPre, Recovery, Settings};
use crate::config::{GuestSource, Limits};
use crate::ctx::{self, Sandbox};
use crate::error::wasm_err;
use crate::shutdown::Stop;

/// How often the epoch advances, i.e. how long a guest runs between yields.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// How often the `--guest` file is checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// The guest built from `guest/` by `build.rs`.
static EMBEDDED_GUEST: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guest.wasm"));

/// Returns the guest component compiled into this binary.
pub fn embedded_guest() -> &'static [u8] {
    EMBEDDED_GUEST
}

/// The engine and the linker holding every import a guest may use.
pub(crate) struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<Sandbox>,
}

/// Returns the process-wide runtime, creating it (and its epoch ticker) on
/// first use.
///
/// # Errors
///
/// Fails when wasmtime cannot be set up on this platform.
pub(crate) fn runtime() -> anyhow::Result<&'static Runtime> {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());

    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    // Serialised so only one engine (and one ticker thread) is ever made.
    let _guard = INIT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let mut config = Config::new();
    // For profiling with `perf`: BLOCKREG_PERFMAP=1 makes wasmtime write
    // /tmp/perf-<pid>.map, naming the guest's compiled functions.
    if std::env::var_os("BLOCKREG_PERFMAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    config.epoch_interruption(true);
    config.wasm_component_model(true);
    // Compiled guests are cached on disk (wasmtime's cache: the user's
    // cache directory, entries keyed by the component's hash and the
    // compiler's settings): `blockreg stats`, `check` and `gc` are short
    // processes that would otherwise compile the guest each time (about a
    // second of CPU), and so would every start of the server. Without a
    // usable cache directory, guests are compiled as before.
    match wasmtime::Cache::new(wasmtime::CacheConfig::new()) {
        Ok(cache) => {
            config.cache(Some(cache));
        }
        Err(e) => tracing::debug!("no compilation cache: {e:#}"),
    }
    let engine = Engine::new(&config).map_err(wasm_err)?;
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(wasm_err)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(wasm_err)?;
    crate::bindings::add_settings_to_linker::<Sandbox, wasmtime::component::HasSelf<Sandbox>>(
        &mut linker,
        |sandbox| sandbox,
    )
    .map_err(wasm_err)?;
    crate::bindings::add_access_to_linker::<Sandbox, wasmtime::component::HasSelf<Sandbox>>(
        &mut linker,
        |sandbox| sandbox,
    )
    .map_err(wasm_err)?;
    crate::bindings::objects::add_to_linker::<Sandbox, wasmtime::component::HasSelf<Sandbox>>(
        &mut linker,
        |sandbox| sandbox,
    )
    .map_err(wasm_err)?;
    crate::bindings::frames::add_to_linker::<Sandbox, wasmtime::component::HasSelf<Sandbox>>(
        &mut linker,
        |sandbox| sandbox,
    )
    .map_err(wasm_err)?;
    crate::bindings::replicas::add_to_linker::<Sandbox, wasmtime::component::HasSelf<Sandbox>>(
        &mut linker,
        |sandbox| sandbox,
    )
    .map_err(wasm_err)?;
    let runtime = RUNTIME.get_or_init(|| Runtime { engine, linker });

    let ticker = runtime.engine.clone();
    std::thread::Builder::new()
        .name("blockreg-epoch".into())
        .spawn(move || loop {
            std::thread::sleep(EPOCH_TICK);
            ticker.increment_epoch();
        })
        .context("starting the epoch ticker thread")?;
    Ok(runtime)
}

/// A compiled, validated guest ready to be instantiated per request.
pub(crate) struct LoadedGuest {
    /// Pre-instantiation for `wasi:http/proxy`.
    pub(crate) proxy: ProxyPre<Sandbox>,
    /// Pre-instantiation for the `admin` export.
    pub(crate) admin: AdminHostPre<Sandbox>,
    /// What the guest said about itself when it was loaded.
    pub(crate) info: GuestInfo,
    /// The settings every instance of it gets.
    pub(crate) settings: Settings,
}

/// Compiles and validates the guest named by `source`, then calls its
/// `describe` with `/data` granted, under the same limits as a request.
///
/// # Errors
///
/// Fails when the file cannot be read, does not compile, does not fit the
/// `wasi:http/proxy` or `admin-host` world, or traps in `describe`.
pub(crate) async fn load(
    source: &GuestSource,
    data_dir: &Path,
    limits: &Limits,
    settings: Settings,
) -> anyhow::Result<Arc<LoadedGuest>> {
    let runtime = runtime()?;
    let component = match source {
        GuestSource::Embedded => embedded_component(runtime).await?,
        GuestSource::File(path) => {
            let bytes = tokio::fs::read(path)
                .await
                .with_context(|| format!("reading {}", path.display()))?;
            compile(runtime, bytes)
                .await
                .with_context(|| format!("compiling {}", path.display()))?
        }
    };
    let instance_pre = runtime
        .linker
        .instantiate_pre(&component)
        .map_err(wasm_err)
        .context("the guest imports something the host does not provide")?;
    let proxy = ProxyPre::new(instance_pre.clone())
        .map_err(wasm_err)
        .context("the guest does not fit the wasi:http/proxy world")?;
    let admin = AdminHostPre::new(instance_pre)
        .map_err(wasm_err)
        .context("the guest does not export blockreg:registry/admin")?;

    let info = call_admin(
        &admin,
        data_dir,
        limits.max_memory_bytes,
        settings,
        limits.request_timeout,
        "describe",
        |admin, store| Box::pin(admin.call_describe(store)),
    )
    .await?;
    Ok(Arc::new(LoadedGuest {
        proxy,
        admin,
        info,
        settings,
    }))
}

/// Runs the guest's `admin.recover` on the store in `data_dir`: removes
/// what writes cut off by a crash left behind and releases upload sessions
/// of requests that never finished. Only while nothing else uses the store.
///
/// # Errors
///
/// Fails when the guest traps or reports an `admin` error.
pub(crate) async fn recover(
    loaded: &LoadedGuest,
    data_dir: &Path,
    limits: &Limits,
) -> anyhow::Result<Recovery> {
    call_admin(
        &loaded.admin,
        data_dir,
        limits.max_memory_bytes,
        loaded.settings,
        limits.request_timeout,
        "recover",
        |admin, store| Box::pin(admin.call_recover(store)),
    )
    .await?
    .map_err(|e| anyhow::anyhow!("recovering the store: {e:?}"))
}

/// One call on the `admin` export, borrowing the instance and its store.
pub(crate) type AdminCall<'a, T> = Pin<Box<dyn Future<Output = wasmtime::Result<T>> + Send + 'a>>;

/// Instantiates `admin` in a fresh store over `data_dir` and makes one call
/// on it, which must finish within `timeout`. `name` is the function's WIT
/// name, for the error messages.
///
/// # Errors
///
/// Fails when `data_dir` cannot be opened, the guest traps, or the call
/// times out; an `admin` error the function returns is the caller's `T`.
pub(crate) async fn call_admin<T>(
    admin: &AdminHostPre<Sandbox>,
    data_dir: &Path,
    max_memory_bytes: usize,
    settings: Settings,
    timeout: Duration,
    name: &str,
    call: impl for<'a> FnOnce(&'a Admin, &'a mut Store<Sandbox>) -> AdminCall<'a, T>,
) -> anyhow::Result<T> {
    let runtime = runtime()?;
    let mut store = ctx::new_store(&runtime.engine, data_dir, max_memory_bytes, settings)
        .map_err(wasm_err)
        .with_context(|| format!("opening the data directory {}", data_dir.display()))?;
    let run = async {
        let instance = admin.instantiate_async(&mut store).await?;
        call(instance.blockreg_registry_admin(), &mut store).await
    };
    tokio::time::timeout(timeout, run)
        .await
        .with_context(|| format!("admin {name} timed out"))?
        .map_err(wasm_err)
        .with_context(|| format!("calling admin {name}"))
}

/// The embedded guest, compiled once per process: tests start many servers.
async fn embedded_component(runtime: &'static Runtime) -> anyhow::Result<Component> {
    static COMPILED: OnceCell<Component> = OnceCell::const_new();
    COMPILED
        .get_or_try_init(|| async {
            compile(runtime, EMBEDDED_GUEST.to_vec())
                .await
                .context("compiling the embedded guest")
        })
        .await
        .cloned()
}

/// Compiles a component off the async executor.
pub(crate) async fn compile(
    runtime: &'static Runtime,
    bytes: Vec<u8>,
) -> anyhow::Result<Component> {
    tokio::task::spawn_blocking(move || Component::new(&runtime.engine, &bytes).map_err(wasm_err))
        .await
        .context("the compiler task panicked")?
}

/// The guest currently serving; swapped whole on reload.
pub(crate) struct GuestSlot {
    current: RwLock<Arc<LoadedGuest>>,
}

impl GuestSlot {
    pub(crate) fn new(guest: Arc<LoadedGuest>) -> Self {
        Self {
            current: RwLock::new(guest),
        }
    }

    /// The guest new requests should use.
    pub(crate) fn current(&self) -> Arc<LoadedGuest> {
        // A poisoned lock still holds a valid `Arc`: the swap is one store.
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn replace(&self, guest: Arc<LoadedGuest>) {
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = guest;
    }
}

/// What identifies a version of the `--guest` file between polls. The inode
/// catches a replacement by rename even when size and mtime match.
/// What tells a watched file changed (the guest, the htpasswd file, TLS
/// certificates): its mtime, length and inode (a rename over it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

/// The [`FileStamp`] of `path`; `None` when it cannot be read.
pub(crate) fn stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    })
}

/// Reloads the guest on SIGHUP and, for a file guest, when the file changes,
/// until `stop` is triggered. A guest that fails to load is logged and the
/// current one keeps serving.
pub(crate) async fn watch(
    slot: Arc<GuestSlot>,
    source: GuestSource,
    data_dir: PathBuf,
    limits: Limits,
    mut stop: Stop,
) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(e) => {
            tracing::warn!("cannot listen for SIGHUP, reload on signal is off: {e}");
            None
        }
    };
    let path = match &source {
        GuestSource::File(path) => Some(path.clone()),
        GuestSource::Embedded => None,
    };
    let mut interval = tokio::time::interval(WATCH_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut loaded = path.as_deref().and_then(stamp);
    // A change is acted on once the file has looked the same for one whole
    // interval, so a guest still being copied in is not loaded half-written.
    let mut pending: Option<Option<FileStamp>> = None;

    loop {
        tokio::select! {
            () = stop.stopped() => return,
            Some(()) = async { hangup.as_mut()?.recv().await } => {
                match &path {
                    None => tracing::info!(
                        "SIGHUP: the guest is embedded in the binary, nothing to reload"
                    ),
                    Some(path) => {
                        tracing::info!("SIGHUP: reloading guest from {}", path.display());
                        loaded = stamp(path);
                        pending = None;
                        reload(&slot, &source, &data_dir, &limits).await;
                    }
                }
            }
            _ = interval.tick(), if path.is_some() => {
                let Some(path) = &path else { continue };
                let now = stamp(path);
                if now == loaded {
                    pending = None;
                } else if pending == Some(now) {
                    pending = None;
                    loaded = now;
                    if now.is_none() {
                        tracing::warn!(
                            "guest file {} is gone; still serving the loaded guest",
                            path.display()
                        );
                    } else {
                        tracing::info!("guest file {} changed; reloading", path.display());
                        reload(&slot, &source, &data_dir, &limits).await;
                    }
                } else {
                    pending = Some(now);
                }
            }
        }
    }
}

async fn reload(slot: &GuestSlot, source: &GuestSource, data_dir: &Path, limits: &Limits) {
    // The settings do not change with the guest.
    let settings = slot.current().settings;
    match load(source, data_dir, limits, settings).await {
        Ok(guest) => {
            tracing::info!("guest loaded: {}", guest.info.version);
            slot.replace(guest);
        }
        Err(e) => {
            // One line: wasmparser's messages span several.
            let reason = format!("{e:#}")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            tracing::error!("guest reload refused: {reason}; still serving the previous guest");
        }
    }
}
