//! The sandbox of one guest instance: what a request's `Store` holds.
//!
//! A guest gets exactly one capability, the data directory preopened at
//! `/data` with read-write permissions (wasmtime-wasi confines every path
//! under it with cap-std). It gets no environment variables, no arguments,
//! no sockets, no name lookups and no outgoing HTTP; its stderr is the
//! host's, so guest logs appear next to the host's. What the operator chose
//! reaches it as one typed record, the `settings` import
//! ([`guest_settings`] builds it). Who the request's caller is was settled
//! by the host before the instance was made (`auth/`): the sandbox holds
//! that [`Caller`], and the guest's `access` calls are answered from it.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

use std::sync::Arc;

use crate::auth::{Auth, Identity};
use crate::bindings::{AccessHost, Action, Decision, Settings, SettingsHost};
use crate::config::{GuestSettings, Limits};
use crate::objects::{Backend, LocalObjects};

/// The record the guest's `settings` import returns: the operator's
/// settings plus the host's request timeout (after which the guest may take
/// over an upload session whose request never finished). Every field is
/// named, so a field added to or renamed in `wit/settings.wit` fails to
/// compile here instead of reaching the guest as a default.
pub(crate) fn guest_settings(settings: &GuestSettings, request_timeout: Duration) -> Settings {
    let GuestSettings {
        delete_enabled,
        cache_bytes,
        max_correction_ratio,
        max_decoded_bytes,
        max_decoded_ratio,
        accept_foreign_layers,
    } = *settings;
    Settings {
        delete_enabled,
        cache_bytes,
        max_correction_ratio,
        max_decoded_bytes,
        max_decoded_ratio,
        request_timeout_secs: request_timeout.as_secs(),
        accept_foreign_layers,
    }
}

/// The settings of a registry started without flags: for instances that
/// serve no request (`blockreg stats`, `blockreg run`).
pub(crate) fn default_guest_settings() -> Settings {
    guest_settings(&GuestSettings::default(), Limits::default().request_timeout)
}

/// Where the data directory appears inside the guest.
pub(crate) const DATA_GUEST_PATH: &str = "/data";

/// Response bodies stream through a channel holding one more write than
/// this, each of at most [`OUTGOING_BODY_CHUNK_SIZE`] bytes, so a response
/// pins about 2 MiB of host memory (plus hyper's write buffer) however large
/// the blob, and the guest waits while the client is slow. These are
/// wasmtime-wasi-http's defaults, stated here because the host's memory use
/// relies on them.
const OUTGOING_BODY_BUFFER_CHUNKS: usize = 1;
/// Largest single write the guest can make into a response body.
const OUTGOING_BODY_CHUNK_SIZE: usize = 1 << 20;

/// The caller of the request an instance serves: who the host found it to
/// be, and the rules that decide what it may do.
#[derive(Clone)]
pub(crate) struct Caller {
    pub(crate) auth: Arc<Auth>,
    pub(crate) identity: Identity,
}

/// Store data of one guest instance.
pub(crate) struct Sandbox {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: NoOutgoingHttp,
    limits: StoreLimits,
    settings: Settings,
    /// `None` for instances that serve no request (admin calls, `blockreg
    /// run`): every `access` question is then answered `denied`.
    caller: Option<Caller>,
    /// Where the guest's `objects` are: the same directory as `/data`.
    /// Shared with the `frames` reads in progress (`frames.rs`).
    objects: Arc<Backend>,
    /// Live `frames` readers that decode ahead (`frames.rs` bounds them).
    pub(crate) planned_readers: usize,
    /// Open `replicas` encoders (`replicas.rs` bounds them).
    pub(crate) replica_encoders: usize,
}

impl Sandbox {
    /// Builds the sandbox for one instance over `data_dir`.
    ///
    /// # Errors
    ///
    /// Fails when `data_dir` cannot be opened.
    fn new(data_dir: &Path, max_memory_bytes: usize, settings: Settings) -> wasmtime::Result<Self> {
        let wasi = wasi_builder(data_dir, DATA_GUEST_PATH)?;
        Self::with_wasi(wasi, data_dir, max_memory_bytes, settings)
    }

    /// Builds the sandbox around `wasi`, made by [`wasi_builder`] over
    /// `dir`, which also keeps the guest's objects.
    ///
    /// # Errors
    ///
    /// Fails when `dir` cannot be opened.
    fn with_wasi(
        mut wasi: WasiCtxBuilder,
        dir: &Path,
        max_memory_bytes: usize,
        settings: Settings,
    ) -> wasmtime::Result<Self> {
        let objects = Arc::new(Backend::Local(LocalObjects::open(dir)?));
        Ok(Self {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: NoOutgoingHttp,
            limits: StoreLimitsBuilder::new()
                .memory_size(max_memory_bytes)
                .build(),
            settings,
            caller: None,
            objects,
            planned_readers: 0,
            replica_encoders: 0,
        })
    }

    /// Where the guest's objects are.
    pub(crate) fn objects(&self) -> &Backend {
        &self.objects
    }

    /// Where the guest's objects are, for work that outlives a call (a
    /// frame decoded ahead).
    pub(crate) fn objects_shared(&self) -> Arc<Backend> {
        Arc::clone(&self.objects)
    }

    /// The instance's resources (`frames` readers, `replicas` encoders and
    /// WASI's).
    pub(crate) fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    /// Binds the caller of the request this instance serves.
    pub(crate) fn set_caller(&mut self, caller: Caller) {
        self.caller = Some(caller);
    }
}

/// The WASI context of an instance, still open to additions: `dir`
/// preopened read-write at `guest_path`, stderr inherited, and nothing else
/// (no environment, no arguments, no sockets, no name lookups).
/// `blockreg run` adds stdio and arguments to it.
///
/// # Errors
///
/// Fails when `dir` cannot be opened.
pub(crate) fn wasi_builder(dir: &Path, guest_path: &str) -> wasmtime::Result<WasiCtxBuilder> {
    let mut wasi = WasiCtx::builder();
    // File operations run on the calling thread instead of a
    // spawn_blocking hop each: the guest makes several small calls per
    // 4 KiB block, and the hop cost more than the I/O (1.4 ms vs 0.2 ms
    // per block written). The runtime has extra worker threads so a
    // request blocked on disk does not stall the others (main.rs).
    // Must be set before the preopen, which captures it.
    wasi.allow_blocking_current_thread(true)
        .inherit_stderr()
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .preopened_dir(dir, guest_path, FsPerms::ReadWrite)?;
    Ok(wasi)
}

/// Creates a store for one guest instance: sandbox, settings, memory limit,
/// and epoch-based yielding so a CPU-bound guest gives the executor (and the
/// request timeout) a chance to run.
///
/// # Errors
///
/// Fails when `data_dir` cannot be opened.
pub(crate) fn new_store(
    engine: &Engine,
    data_dir: &Path,
    max_memory_bytes: usize,
    settings: Settings,
) -> wasmtime::Result<Store<Sandbox>> {
    Ok(store(
        engine,
        Sandbox::new(data_dir, max_memory_bytes, settings)?,
    ))
}

/// Creates a store like [`new_store`] whose sandbox is built from `wasi`
/// (made by [`wasi_builder`] over `dir`): for `blockreg run`.
///
/// # Errors
///
/// Fails when `dir` cannot be opened.
pub(crate) fn store_with(
    engine: &Engine,
    wasi: WasiCtxBuilder,
    dir: &Path,
    max_memory_bytes: usize,
    settings: Settings,
) -> wasmtime::Result<Store<Sandbox>> {
    Ok(store(
        engine,
        Sandbox::with_wasi(wasi, dir, max_memory_bytes, settings)?,
    ))
}

fn store(engine: &Engine, sandbox: Sandbox) -> Store<Sandbox> {
    let mut store = Store::new(engine, sandbox);
    store.limiter(|sandbox| &mut sandbox.limits);
    store.set_epoch_deadline(1);
    store.epoch_deadline_async_yield_and_update(1);
    store
}

impl SettingsHost for Sandbox {
    fn get_settings(&mut self) -> Settings {
        self.settings
    }
}

impl AccessHost for Sandbox {
    fn authorize(&mut self, repository: String, action: Action) -> Decision {
        match &self.caller {
            Some(caller) => caller.auth.authorize(&caller.identity, &repository, action),
            None => Decision::Denied,
        }
    }

    fn authorize_base(&mut self) -> Decision {
        match &self.caller {
            Some(caller) => caller.auth.authorize_base(&caller.identity),
            None => Decision::Denied,
        }
    }
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Sandbox {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// `wasi:http` hooks that refuse every outgoing request: the registry has no
/// reason to call out, and a guest that tries gets `HTTP-request-denied`.
struct NoOutgoingHttp;

type SendRequestFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                hyper::Response<WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for NoOutgoingHttp {
    fn send_request(
        &mut self,
        request: hyper::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendRequestFuture {
        tracing::warn!(uri = %request.uri(), "guest tried an outgoing HTTP request; refused");
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }

    fn p2_outgoing_body_buffer_chunks(&mut self) -> usize {
        OUTGOING_BODY_BUFFER_CHUNKS
    }

    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        OUTGOING_BODY_CHUNK_SIZE
    }
}
