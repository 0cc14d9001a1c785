//! The HTTP server: accepts connections, runs each request in a fresh guest
//! instance, and stops gracefully (see `shutdown.rs`).
//!
//! Bodies are never collected: the request body reaches the guest frame by
//! frame through a [`MeteredBody`], and the guest's response body streams back
//! through wasmtime-wasi-http's bounded channel (see `ctx.rs`). The host
//! writes a response itself only in the cases listed in `error.rs`.
//!
//! A live guest instance is a slot (`--max-concurrency`), and slots are what
//! a slow client could hoard, so three limits keep them moving:
//! - Writes (`POST`, `PUT`, `PATCH`, or any request with a body) may hold at
//!   most [`Limits::write_slots`] of them; the rest are for reads, so
//!   however many uploads are open, `GET` and `HEAD` find a slot.
//! - A request body is paced ([`Pace`]): a body that leaves the guest waiting
//!   for `body_idle_timeout`, or trickles below `min_body_rate`, fails. The
//!   guest sees a read error and drops the partial chunk (as on any body
//!   error), the client gets 408, and the slot is free again. Only time spent
//!   waiting on the client counts, not time the guest spends writing to disk.
//! - An answer given before the request body was read to its end (an
//!   unknown session, a full disk) is not followed at once by closing the
//!   connection: the rest of the body is read and dropped, at most
//!   [`LINGER_BYTES`] for at most [`LINGER_TIME`], on a task of its own and
//!   holding no slot ([`Lingering`]). Closing a socket with unread bytes
//!   resets it, and a client still sending would lose the answer to the
//!   reset (Apache's and nginx's lingering close). A body cut off for
//!   breaking a limit (too large, too slow) is not read further.
//! - A request head must arrive within `header_read_timeout` (hyper's timer),
//!   which also closes idle keep-alive connections; neither holds a slot.
//!   Over TLS the handshake must finish within it too.
//!
//! Connections speak HTTP/1.1 in the clear, and over TLS (`tls.rs`) HTTP/2
//! or HTTP/1.1 as ALPN chose (hyper-util's auto builder, told the protocol
//! so it never waits on a preface, which no header timeout would bound).
//! The host adds the configured extra headers (`http.headers`) to every
//! response and counts requests for the metrics (`metrics.rs`, served by
//! the debug server, `debug.rs`).

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::header::{
    HeaderName, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST, RETRY_AFTER,
    WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use wasmtime::component::Resource;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p2::types::{HostIncomingRequest, HostResponseOutparam};
use wasmtime_wasi_http::WasiHttpView as _;

use crate::auth::Auth;
use crate::bindings::Scheme;
use crate::config::{Limits, ServeConfig};
use crate::convert::{self, NewBlobs};
use crate::ctx;
use crate::debug::{self, Debug, Health, StoreFigures};
use crate::error::{wasm_err, HostErrorCode};
use crate::guest::{self, GuestSlot};
use crate::metrics::{self, Metrics};
use crate::shutdown::{self, Stop};
use crate::store_lock::{Mode, StoreLock};
use crate::throttle::{RetryAfter, Throttle, UploadGuard};
use crate::tls::{self, Tls};

/// The sockets [`serve`] answers on: the registry's, and the debug
/// server's (bound from `ServeConfig::debug` when not given here).
pub struct Listeners {
    /// The registry.
    pub http: TcpListener,
    /// Health and metrics (`http.debug.addr`).
    pub debug: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    fn from(http: TcpListener) -> Self {
        Self { http, debug: None }
    }
}

/// Serves the registry on `listeners` until `shutdown` resolves.
///
/// Creates `config.data_dir` if needed, loads the TLS certificate and the
/// guest before accepting anything. On shutdown the listener closes, idle
/// connections are closed, and requests in flight get up to
/// `limits.request_timeout` to finish.
///
/// # Errors
///
/// Fails when the background garbage collection's grace period is not
/// longer than the request timeout plus a minute, the data directory cannot
/// be created or locked, the TLS certificate or key does not load (or the
/// key lies in the data directory), the debug address cannot be bound, or
/// the guest does not load; errors on single connections are logged, not
/// returned. Before serving it waits for a garbage collection another
/// process runs on the same directory to end.
pub async fn serve(
    listeners: impl Into<Listeners>,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let Listeners {
        http: listener,
        debug: debug_listener,
    } = listeners.into();
    let ServeConfig {
        data_dir,
        guest: source,
        limits,
        settings,
        background_conversion,
        tls,
        http2,
        headers,
        debug: debug_config,
        health,
        upload_purging,
        auth,
        gc,
    } = config;
    crate::gc::check_grace(&gc, &limits)?;
    let data_dir = crate::datadir::prepare_for_serving(&data_dir)?;
    let auth = Arc::new(Auth::load(&auth, &data_dir)?);
    let tls = tls
        .map(|config| tls::load(&config, &data_dir, http2))
        .transpose()?;
    let debug_listener = match (debug_listener, &debug_config) {
        (Some(listener), _) => Some(listener),
        (None, Some(config)) => Some(
            TcpListener::bind(config.addr)
                .await
                .map_err(|e| anyhow::anyhow!("binding the debug address {}: {e}", config.addr))?,
        ),
        (None, None) => None,
    };

    let settings = crate::ctx::guest_settings(&settings, limits.request_timeout);
    let loaded = guest::load(&source, &data_dir, &limits, settings).await?;
    tracing::info!("guest loaded: {}", loaded.info.version);
    // Nothing serves yet: the one moment to finish what a crash cut off.
    // A collection by another process (`blockreg gc`) must end first.
    let recovered = {
        let _lock = match StoreLock::try_acquire(&data_dir, Mode::Exclusive)? {
            Some(lock) => lock,
            None => {
                tracing::info!(
                    "waiting for the garbage collection another process runs on {} to end",
                    data_dir.display()
                );
                StoreLock::acquire(&data_dir, Mode::Exclusive).await?
            }
        };
        guest::recover(&loaded, &data_dir, &limits).await?
    };
    if recovered.temporaries
        + recovered.sessions_released
        + recovered.sessions_removed
        + recovered.blobs_restored
        + recovered.blobs_removed
        > 0
    {
        tracing::info!(
            "recovered the store: {} temporary file(s) ({} bytes) removed, {} upload session(s) released, {} half-made session(s) removed, {} blob(s) a cut-off garbage collection had set aside restored and {} removed",
            recovered.temporaries,
            recovered.temporary_bytes,
            recovered.sessions_released,
            recovered.sessions_removed,
            recovered.blobs_restored,
            recovered.blobs_removed
        );
    }
    let slot = Arc::new(GuestSlot::new(loaded));

    let (trigger, stop) = shutdown::channel();
    let watcher = tokio::spawn(guest::watch(
        slot.clone(),
        source,
        data_dir.clone(),
        limits.clone(),
        stop.clone(),
    ));

    let metrics = Arc::new(Metrics::new());
    let new_blobs = Arc::new(NewBlobs::default());
    let converter = if background_conversion {
        Some(convert::spawn(
            slot.clone(),
            data_dir.clone(),
            limits.clone(),
            new_blobs.clone(),
            metrics.clone(),
            stop.clone(),
        )?)
    } else {
        None
    };
    // Without a converter, nothing else would put back soon what a killed
    // `blockreg gc` set aside.
    let restore_task = (!background_conversion).then(|| {
        tokio::spawn(crate::gc::restore_set_aside(
            slot.clone(),
            data_dir.clone(),
            limits.clone(),
            stop.clone(),
        ))
    });

    metrics
        .instances_max
        .set(i64::try_from(limits.max_concurrency.max(1)).unwrap_or(i64::MAX));
    let health = Arc::new(Health::new(data_dir.clone(), health.storage));
    let health_task = tokio::spawn(health.clone().run(stop.clone()));
    let purge_task = tokio::spawn(crate::purge::run(
        slot.clone(),
        data_dir.clone(),
        limits.clone(),
        upload_purging,
        metrics.clone(),
        stop.clone(),
    ));
    let gc_task = tokio::spawn(crate::gc::run(
        slot.clone(),
        data_dir.clone(),
        limits.clone(),
        gc,
        metrics.clone(),
        stop.clone(),
    ));
    let debug_task = debug_listener.map(|listener| {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!("debug server on http://{addr}");
        }
        let debug = Debug {
            health: health.clone(),
            metrics: metrics.clone(),
            prometheus_path: debug_config.and_then(|c| c.prometheus_path),
            store: StoreFigures {
                slot: slot.clone(),
                data_dir: data_dir.clone(),
                limits: limits.clone(),
                asked: tokio::sync::Mutex::new(None),
            },
        };
        tokio::spawn(debug::serve(listener, Arc::new(debug), stop.clone()))
    });
    let (acceptor, tls_task) = match tls {
        Some(Tls {
            acceptor,
            certificates,
        }) => (
            Some(acceptor),
            Some(tokio::spawn(tls::watch(certificates, stop.clone()))),
        ),
        None => (None, None),
    };

    let state = Arc::new(Server {
        engine: guest::runtime()?.engine.clone(),
        slot,
        new_blobs,
        data_dir,
        permits: Arc::new(Semaphore::new(limits.max_concurrency.max(1))),
        write_permits: Arc::new(Semaphore::new(limits.write_slots())),
        throttle: Throttle::new(&limits.clients),
        limits,
        scheme_https: acceptor.is_some(),
        headers,
        metrics,
        auth,
    });
    tracing::info!(
        "listening on {}://{}, data in {}{}",
        if acceptor.is_some() { "https" } else { "http" },
        listener.local_addr()?,
        state.data_dir.display(),
        if state.auth.is_on() {
            ""
        } else {
            ", no authentication"
        }
    );

    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    connections.spawn(accept_connection(
                        state.clone(),
                        acceptor.clone(),
                        socket,
                        peer,
                        stop.clone(),
                    ));
                }
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }

    drop(listener);
    trigger.stop();
    shutdown::drain(&mut connections, state.limits.request_timeout).await;
    let _ = watcher.await;
    let _ = health_task.await;
    let _ = purge_task.await;
    let _ = gc_task.await;
    for task in [debug_task, tls_task, restore_task].into_iter().flatten() {
        let _ = task.await;
    }
    if let Some(converter) = converter {
        converter.join().await;
    }
    Ok(())
}

/// Response header by which the guest says that it committed a blob (see
/// `admin.convert-next` in `wit/admin.wit`); removed before the response
/// leaves.
const COMMITTED_HEADER: &str = "blockreg-committed";

/// Response header by which the guest says where a blob GET's bytes come
/// from (`guest/src/routes/blobs.rs`), for the metrics; removed before the
/// response leaves.
const SERVED_FROM_HEADER: &str = "blockreg-served-from";

/// Shared state of a running server.
struct Server {
    engine: wasmtime::Engine,
    slot: Arc<GuestSlot>,
    /// Rung when a blob is committed, to wake the background converter.
    new_blobs: Arc<NewBlobs>,
    data_dir: PathBuf,
    limits: Limits,
    /// One permit per live guest instance.
    permits: Arc<Semaphore>,
    /// One more per live instance serving a write; see the module docs.
    write_permits: Arc<Semaphore>,
    /// Whether connections come over TLS (the scheme the guest is told).
    scheme_https: bool,
    /// Added to every response that lacks them (`http.headers`).
    headers: Vec<(HeaderName, HeaderValue)>,
    metrics: Arc<Metrics>,
    /// Who callers are and what they may do (`auth/`).
    auth: Arc<Auth>,
    /// What one client may do (`throttle.rs`).
    throttle: Throttle,
}

/// Runs the TLS handshake when there is an acceptor (bounded by the
/// header read timeout), then serves the connection.
async fn accept_connection(
    server: Arc<Server>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    socket: TcpStream,
    peer: SocketAddr,
    stop: Stop,
) {
    let local = socket.local_addr().ok();
    // Responses are written whole by hyper; Nagle's algorithm would hold
    // the last small segment of each (a TLS record, a short JSON error)
    // until the client's delayed ACK, ~40 ms per round trip.
    if let Err(e) = socket.set_nodelay(true) {
        tracing::debug!("TCP_NODELAY on the connection from {peer}: {e}");
    }
    let Some(acceptor) = acceptor else {
        return serve_connection(server, socket, false, local, peer, stop).await;
    };
    let timeout = Some(server.limits.header_read_timeout)
        .filter(|timeout| !timeout.is_zero())
        .unwrap_or(Duration::MAX);
    match tokio::time::timeout(timeout, acceptor.accept(socket)).await {
        Ok(Ok(stream)) => {
            // `tls.rs` offers h2 only when HTTP/2 is on.
            let http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            serve_connection(server, stream, http2, local, peer, stop).await;
        }
        Ok(Err(e)) => tracing::debug!("TLS handshake with {peer} failed: {e}"),
        Err(_) => tracing::debug!("TLS handshake with {peer} timed out"),
    }
}

/// Serves HTTP/2 on `stream` when `http2`, else HTTP/1.1.
async fn serve_connection<S>(
    server: Arc<Server>,
    stream: S,
    http2: bool,
    local: Option<SocketAddr>,
    peer: SocketAddr,
    mut stop: Stop,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let header_read_timeout =
        Some(server.limits.header_read_timeout).filter(|timeout| !timeout.is_zero());
    let service = hyper::service::service_fn(move |request| {
        let server = server.clone();
        async move { Ok::<_, Infallible>(server.handle(request, local, peer.ip()).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    builder = if http2 {
        builder.http2_only()
    } else {
        builder.http1_only()
    };
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!("connection from {peer} ended: {e}");
                }
                return;
            }
            () = stop.stopped(), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Why a guest task ended without finishing its request.
enum GuestFailure {
    Timeout,
    Trap(wasmtime::Error),
}

impl Server {
    /// Handles one request and wraps the response so it is logged once sent.
    ///
    /// The caller is authenticated first, before it can take a slot: bad
    /// credentials are answered 401 here and no guest runs. The
    /// `Authorization` header never reaches the guest (it holds a
    /// password or a token); the identity it proved does (`ctx::Caller`).
    async fn handle(
        self: Arc<Self>,
        mut request: Request<Incoming>,
        local: Option<SocketAddr>,
        peer: IpAddr,
    ) -> Response<MeteredBody<HyperOutgoingBody>> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let start = Instant::now();
        let credentials = request.headers_mut().remove(AUTHORIZATION);
        let (response, guest_failed, user) =
            match self.authenticate(credentials.as_ref(), peer).await {
                Ok(identity) => {
                    let user = identity.log_name().to_owned();
                    let caller = ctx::Caller {
                        auth: self.auth.clone(),
                        identity,
                    };
                    let (response, guest_failed) =
                        self.dispatch(request, local, peer, caller).await;
                    (response, guest_failed, user)
                }
                Err(refusal) => (*refusal, None, "-".to_owned()),
            };
        let (mut parts, body) = response.into_parts();
        // The guest's word for it, not a guess from the status and path; the
        // header is between guest and host only.
        if parts.headers.remove(COMMITTED_HEADER).is_some() {
            self.new_blobs.committed();
        }
        let served_from = parts
            .headers
            .remove(SERVED_FROM_HEADER)
            .and_then(|value| metrics::BLOB_SOURCES.into_iter().find(|s| value == *s));
        // Headers the response already has are left as they are; checked
        // before adding, so a configured header may carry several values.
        let absent: Vec<bool> = self
            .headers
            .iter()
            .map(|(name, _)| !parts.headers.contains_key(name))
            .collect();
        for ((name, value), absent) in self.headers.iter().zip(absent) {
            if absent {
                parts.headers.append(name.clone(), value.clone());
            }
        }
        let log = RequestLog {
            method,
            path,
            user,
            start,
            status: parts.status,
            bytes: 0,
            served_from,
            metrics: self.metrics.clone(),
        };
        Response::from_parts(
            parts,
            MeteredBody::new(body, Rules::Response { guest_failed, log }),
        )
    }

    /// Who the caller is, after the client's request rate and failed
    /// logins (`throttle.rs`) were checked; a refusal is the response.
    async fn authenticate(
        &self,
        credentials: Option<&HeaderValue>,
        peer: IpAddr,
    ) -> Result<crate::auth::Identity, Refused> {
        self.throttle.request(peer).map_err(too_many_requests)?;
        let guessing = credentials.is_some() && self.auth.checks_passwords();
        if guessing {
            if let Some(wait) = self.throttle.locked_out(peer) {
                return Err(too_many_requests(wait));
            }
        }
        self.auth
            .authenticate(credentials)
            .await
            .map_err(|challenge| {
                if credentials.is_some() {
                    self.metrics.login_failed();
                }
                if guessing {
                    self.throttle.failed_login(peer);
                }
                Box::new(unauthorized(&challenge))
            })
    }

    /// Runs the request through a guest instance, or answers it directly.
    /// The flag, when present, turns true if the guest fails after it has
    /// sent its response head.
    async fn dispatch(
        &self,
        mut request: Request<Incoming>,
        local: Option<SocketAddr>,
        peer: IpAddr,
        caller: ctx::Caller,
    ) -> (Response<HyperOutgoingBody>, Option<Arc<AtomicBool>>) {
        let is_write = match self.admit(&mut request, local) {
            Ok(is_write) => is_write,
            Err(refusal) => return (*refusal, None),
        };
        let upload = if is_write {
            match self.throttle.upload(peer) {
                Some(guard) => Some(guard),
                None => {
                    let wait = RetryAfter(Duration::from_secs(1));
                    return (*too_many_requests(wait), None);
                }
            }
        } else {
            None
        };
        let Some(permit) = self.acquire_slot(upload).await else {
            return (
                host_error(HostErrorCode::Unavailable, "server is stopping"),
                None,
            );
        };
        let label = format!("{} {}", request.method(), request.uri().path());
        let overflow = Arc::new(AtomicBool::new(false));
        let too_slow = Arc::new(AtomicBool::new(false));
        let (instance, receiver) = match self.instance(request, caller, &overflow, &too_slow) {
            Ok(prepared) => prepared,
            Err(refusal) => return (*refusal, None),
        };
        let timeout = self.limits.request_timeout;
        let (task, guest_failed) =
            spawn_instance(instance, permit, timeout, overflow.clone(), label.clone());

        let response = match receiver.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => Err(Some(format!("the guest answered with error code {code:?}"))),
            Err(_) => match task.await {
                Ok(Ok(())) => Err(Some(
                    "the guest returned without setting a response".to_owned(),
                )),
                Ok(Err(GuestFailure::Timeout)) => {
                    let message = format!("request timed out after {}s", timeout.as_secs());
                    return (host_error(HostErrorCode::Unavailable, &message), None);
                }
                // Already logged by the task, with the wasm backtrace.
                Ok(Err(GuestFailure::Trap(_))) => Err(None),
                Err(join) => Err(Some(format!("the guest task failed: {join}"))),
            },
        };
        // An oversized streamed body makes the guest fail or complain; the
        // client is told what actually happened.
        if overflow.load(Ordering::SeqCst) {
            return (too_large(self.limits.max_body_bytes), None);
        }
        if too_slow.load(Ordering::SeqCst) {
            let message = too_slow_message(&self.limits);
            tracing::info!("{label}: {message}");
            return (host_error(HostErrorCode::BodyTimeout, &message), None);
        }
        match response {
            Ok(response) => (response, Some(guest_failed)),
            Err(Some(message)) => {
                tracing::error!("{label}: {message}");
                (host_error(HostErrorCode::Unknown, &message), None)
            }
            Err(None) => (
                host_error(HostErrorCode::Unknown, "the guest trapped"),
                None,
            ),
        }
    }

    /// Checks a request before it takes a slot: a declared body over the
    /// limit is refused, a missing `Host` is filled in (wasi:http needs an
    /// authority; HTTP/1.0 clients may send none). Returns whether the
    /// request is a write (it then takes a write slot).
    fn admit(
        &self,
        request: &mut Request<Incoming>,
        local: Option<SocketAddr>,
    ) -> Result<bool, Refused> {
        let max_body = self.limits.max_body_bytes;
        if content_length(request).is_some_and(|length| length > max_body) {
            return Err(Box::new(too_large(max_body)));
        }
        if request.uri().authority().is_none() && !request.headers().contains_key(HOST) {
            let host = local.map_or_else(|| "localhost".to_owned(), |addr| addr.to_string());
            if let Ok(value) = HeaderValue::from_str(&host) {
                request.headers_mut().insert(HOST, value);
            }
        }
        Ok(matches!(
            *request.method(),
            Method::POST | Method::PUT | Method::PATCH
        ) || !request.body().is_end_stream())
    }

    /// A fresh instance of the current guest holding `request` and bound
    /// to its `caller`, its body metered (`overflow` and `too_slow` turn
    /// true when it breaks a limit), and the channel its response arrives
    /// on.
    fn instance(
        &self,
        request: Request<Incoming>,
        caller: ctx::Caller,
        overflow: &Arc<AtomicBool>,
        too_slow: &Arc<AtomicBool>,
    ) -> Result<(Instance, oneshot::Receiver<GuestResponse>), Refused> {
        let guest = self.slot.current();
        let mut store = ctx::new_store(
            &self.engine,
            &self.data_dir,
            self.limits.max_memory_bytes,
            guest.settings,
        )
        .map_err(|e| {
            tracing::error!("cannot prepare a guest instance: {:#}", wasm_err(e));
            Box::new(host_error(HostErrorCode::Unknown, "cannot open the store"))
        })?;
        store.data_mut().set_caller(caller);
        let pace = Pace::new(
            self.limits.body_idle_timeout,
            self.limits.min_body_rate,
            too_slow.clone(),
        );
        let request = request.map(|body| {
            let rules = Rules::Request {
                max: self.limits.max_body_bytes,
                overflow: overflow.clone(),
                pace,
                metrics: self.metrics.clone(),
            };
            let body = Lingering::new(body, [overflow.clone(), too_slow.clone()]);
            MeteredBody::new(body, rules)
        });
        let (sender, receiver) = oneshot::channel();
        let resources = store
            .data_mut()
            .http()
            .new_incoming_request(
                if self.scheme_https {
                    Scheme::Https
                } else {
                    Scheme::Http
                },
                request,
            )
            .and_then(|incoming| {
                Ok((
                    incoming,
                    store.data_mut().http().new_response_outparam(sender)?,
                ))
            });
        let (incoming, outparam) = resources.map_err(|e| {
            tracing::error!("cannot hand the request to the guest: {:#}", wasm_err(e));
            Box::new(host_error(
                HostErrorCode::Unknown,
                "cannot pass the request on",
            ))
        })?;
        Ok((
            Instance {
                store,
                guest,
                incoming,
                outparam,
            },
            receiver,
        ))
    }
}

impl Server {
    /// Waits for a slot: a write first takes one of the write slots, so
    /// writes never hold more than those; `None` once the server is closing.
    async fn acquire_slot(&self, upload: Option<UploadGuard>) -> Option<Slot> {
        let write = if upload.is_some() {
            Some(self.write_permits.clone().acquire_owned().await.ok()?)
        } else {
            None
        };
        let any = self.permits.clone().acquire_owned().await.ok()?;
        self.metrics.instances_in_use.inc();
        if write.is_some() {
            self.metrics.write_instances_in_use.inc();
        }
        Some(Slot {
            _any: any,
            _write: write,
            _upload: upload,
            metrics: self.metrics.clone(),
        })
    }
}

/// A live guest instance's place in the pools; freed when dropped.
struct Slot {
    _any: OwnedSemaphorePermit,
    _write: Option<OwnedSemaphorePermit>,
    /// The client's place among its uploads in flight.
    _upload: Option<UploadGuard>,
    metrics: Arc<Metrics>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics.instances_in_use.dec();
        if self._write.is_some() {
            self.metrics.write_instances_in_use.dec();
        }
    }
}

fn too_slow_message(limits: &Limits) -> String {
    let idle = limits.body_idle_timeout.as_secs_f64();
    if limits.min_body_rate == 0 {
        format!("request body timed out: no bytes for {idle:.0} s")
    } else {
        format!(
            "request body timed out: no bytes for {idle:.0} s, or slower than {} bytes/s",
            limits.min_body_rate
        )
    }
}

/// A response the host gives instead of the guest's (boxed: it is large).
type Refused = Box<Response<HyperOutgoingBody>>;

/// What a guest hands back through its response outparam.
type GuestResponse =
    Result<Response<HyperOutgoingBody>, wasmtime_wasi_http::p2::bindings::http::types::ErrorCode>;

/// A guest instance about to handle one request.
struct Instance {
    store: wasmtime::Store<ctx::Sandbox>,
    guest: Arc<guest::LoadedGuest>,
    incoming: Resource<HostIncomingRequest>,
    outparam: Resource<HostResponseOutparam>,
}

/// Runs `instance` on its own task, holding `permit` until the instance is
/// gone and dropping it after `timeout`. The task may outlive the response
/// head, since the guest keeps writing the body; the returned flag turns
/// true if it fails, so the body can be cut off visibly.
fn spawn_instance(
    instance: Instance,
    permit: Slot,
    timeout: Duration,
    overflow: Arc<AtomicBool>,
    label: String,
) -> (JoinHandle<Result<(), GuestFailure>>, Arc<AtomicBool>) {
    let guest_failed = Arc::new(AtomicBool::new(false));
    let failed = guest_failed.clone();
    let task = tokio::spawn(async move {
        let _permit = permit;
        let Instance {
            mut store,
            guest,
            incoming,
            outparam,
        } = instance;
        let run = async {
            let proxy = guest.proxy.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, incoming, outparam)
                .await
        };
        let outcome = match tokio::time::timeout(timeout, run).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(trap)) => Err(GuestFailure::Trap(trap)),
            Err(_) => Err(GuestFailure::Timeout),
        };
        if let Err(failure) = &outcome {
            // Set before the store (and the response body's sender in it) is
            // dropped, so the body sees it when its channel closes.
            failed.store(true, Ordering::SeqCst);
            match failure {
                GuestFailure::Timeout => tracing::warn!(
                    "{label}: timed out after {}s; guest instance dropped",
                    timeout.as_secs()
                ),
                // Expected: the guest was cut off mid-body by the host.
                GuestFailure::Trap(_) if overflow.load(Ordering::SeqCst) => {}
                GuestFailure::Trap(e) => tracing::error!("{label}: guest trapped: {e:#}"),
            }
        }
        drop(store);
        outcome
    });
    (task, guest_failed)
}

fn content_length<B>(request: &Request<B>) -> Option<u64> {
    request
        .headers()
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn too_large(max_body: u64) -> Response<HyperOutgoingBody> {
    host_error(
        HostErrorCode::SizeInvalid,
        &format!("request body exceeds the limit of {max_body} bytes"),
    )
}

/// 401 `UNAUTHORIZED` for credentials that did not authenticate, with the
/// challenge that tells the client how to log in.
fn unauthorized(challenge: &str) -> Response<HyperOutgoingBody> {
    let mut response = host_error(
        HostErrorCode::Unauthorized,
        "authentication required: the credentials are missing, wrong or expired",
    );
    match HeaderValue::from_str(challenge) {
        Ok(value) => {
            response.headers_mut().insert(WWW_AUTHENTICATE, value);
        }
        Err(_) => tracing::error!("challenge {challenge:?} is not a valid header value"),
    }
    response
}

/// 429 `TOOMANYREQUESTS` for a client over one of its limits, with the
/// seconds it should wait.
fn too_many_requests(wait: RetryAfter) -> Refused {
    let seconds = wait.seconds();
    let mut response = host_error(
        HostErrorCode::TooManyRequests,
        &format!("too many requests from this client; retry in {seconds} s"),
    );
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(seconds));
    Box::new(response)
}

/// A response written by the host itself; see `error.rs`.
fn host_error(code: HostErrorCode, message: &str) -> Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from(code.body(message)))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() = code.status();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A body on its way between client and guest, passed on frame by frame:
/// its bytes are counted, and the transfer is cut off with an error when the
/// [`Rules`] of its direction are broken.
struct MeteredBody<B> {
    inner: B,
    /// Data bytes passed on so far.
    bytes: u64,
    rules: Rules,
}

/// What a [`MeteredBody`] enforces.
enum Rules {
    /// The request body as the guest sees it: at most `max` bytes (beyond,
    /// `overflow` is set and the body fails), at the client's [`Pace`].
    Request {
        max: u64,
        overflow: Arc<AtomicBool>,
        pace: Pace,
        metrics: Arc<Metrics>,
    },
    /// A response body: the guest's (or the host's) as hyper sends it,
    /// turned into an error if the guest failed mid-body (`guest_failed`)
    /// so the client sees a broken transfer rather than a short one, and
    /// logged once dropped.
    Response {
        guest_failed: Option<Arc<AtomicBool>>,
        log: RequestLog,
    },
}

impl<B> MeteredBody<B> {
    fn new(inner: B, rules: Rules) -> Self {
        Self {
            inner,
            bytes: 0,
            rules,
        }
    }
}

impl<B> Body for MeteredBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let now = Instant::now();
        if let Rules::Request { max, pace, .. } = &mut this.rules {
            if this.bytes > *max || pace.failed() {
                return Poll::Ready(None);
            }
            if pace.is_late(now) {
                return Poll::Ready(Some(Err(pace.fail())));
            }
        }
        let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) else {
            if let Rules::Request { pace, .. } = &mut this.rules {
                if pace.poll_deadline(cx).is_ready() {
                    return Poll::Ready(Some(Err(pace.fail())));
                }
            }
            return Poll::Pending;
        };
        match (&frame, &mut this.rules) {
            (Some(Ok(frame)), rules) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    this.bytes += len;
                    match rules {
                        Rules::Request { max, overflow, .. } if this.bytes > *max => {
                            overflow.store(true, Ordering::SeqCst);
                            return Poll::Ready(Some(Err(
                                wasmtime_wasi_http::Error::HttpRequestBodySize(Some(this.bytes)),
                            )));
                        }
                        Rules::Request { pace, metrics, .. } => {
                            metrics.received(len);
                            pace.received(len, now);
                        }
                        Rules::Response { log, .. } => log.bytes = this.bytes,
                    }
                }
            }
            (
                None,
                Rules::Response {
                    guest_failed: Some(failed),
                    ..
                },
            ) if failed.load(Ordering::SeqCst) => {
                return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpResponseIncomplete)));
            }
            _ => {}
        }
        Poll::Ready(frame.map(|frame| frame.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The most of a request body read and dropped after its answer.
const LINGER_BYTES: u64 = 64 << 20;
/// For how long at most.
const LINGER_TIME: Duration = Duration::from_secs(10);

/// A request body that, dropped before its end (the guest answered without
/// reading it all), reads the rest and drops it, within [`LINGER_BYTES`]
/// and [`LINGER_TIME`], so the client gets to read the answer (module doc).
/// Bodies the guest stopped reading because they broke a limit (`cut_off`:
/// too large, too slow) are left as they are.
struct Lingering {
    inner: Option<Incoming>,
    ended: bool,
    cut_off: [Arc<AtomicBool>; 2],
}

impl Lingering {
    fn new(inner: Incoming, cut_off: [Arc<AtomicBool>; 2]) -> Self {
        Self {
            inner: Some(inner),
            ended: false,
            cut_off,
        }
    }
}

impl Body for Lingering {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(mut body) = self.inner.take() else {
            return;
        };
        if self.ended
            || body.is_end_stream()
            || self.cut_off.iter().any(|f| f.load(Ordering::SeqCst))
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let deadline = tokio::time::Instant::now() + LINGER_TIME;
            let mut left = LINGER_BYTES;
            while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, body.frame()).await {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                let Some(rest) = left.checked_sub(len) else {
                    return;
                };
                left = rest;
            }
        });
    }
}

/// How slow a request body may be: a bank of waiting time, filled to
/// `idle` at the first read, drained by the clock while the guest waits for
/// the client, and refilled by `1 / min_rate` s per byte received (to full at
/// once when there is no minimum rate). An empty bank fails the body.
///
/// Only waiting counts: the time between handing the guest a frame and its
/// next read (the guest writing to disk, or hashing) is added back.
struct Pace {
    idle: Duration,
    min_rate: u64,
    /// When the bank runs dry; set at the first read.
    deadline: Option<Instant>,
    /// When the last frame was handed to the guest.
    handed_out: Option<Instant>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Set once the body failed, for the response to say why.
    too_slow: Arc<AtomicBool>,
}

impl Pace {
    fn new(idle: Duration, min_rate: u64, too_slow: Arc<AtomicBool>) -> Self {
        Self {
            idle,
            min_rate,
            deadline: None,
            handed_out: None,
            timer: None,
            too_slow,
        }
    }

    fn enabled(&self) -> bool {
        !self.idle.is_zero()
    }

    fn failed(&self) -> bool {
        self.too_slow.load(Ordering::SeqCst)
    }

    /// Starts the clock at the first read and adds back the guest's time
    /// since the last frame; true if the bank is already empty.
    fn is_late(&mut self, now: Instant) -> bool {
        if !self.enabled() {
            return false;
        }
        let deadline = match (self.deadline, self.handed_out.take()) {
            (None, _) => now + self.idle,
            (Some(deadline), Some(handed_out)) => deadline + now.duration_since(handed_out),
            (Some(deadline), None) => deadline,
        };
        self.deadline = Some(deadline);
        now >= deadline
    }

    /// Credits `len` bytes received at `now`.
    fn received(&mut self, len: u64, now: Instant) {
        let Some(deadline) = self.deadline else {
            return;
        };
        let full = now + self.idle;
        let credited = if self.min_rate == 0 {
            full
        } else {
            deadline + Duration::from_secs_f64(len as f64 / self.min_rate as f64)
        };
        self.deadline = Some(credited.min(full));
        self.handed_out = Some(now);
    }

    /// Arms the timer for the deadline; ready once it has passed.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(deadline) = self.deadline else {
            return Poll::Pending;
        };
        let deadline = tokio::time::Instant::from_std(deadline);
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx)
    }

    fn fail(&mut self) -> wasmtime_wasi_http::Error {
        self.too_slow.store(true, Ordering::SeqCst);
        wasmtime_wasi_http::Error::ConnectionReadTimeout
    }
}

/// The access-log line of one request, written when its response body is
/// dropped, that is after the last byte was sent or the client went away.
struct RequestLog {
    method: Method,
    path: String,
    /// The authenticated user, `-` when none.
    user: String,
    start: Instant,
    status: StatusCode,
    bytes: u64,
    /// For a blob GET, where its bytes came from (`metrics::BLOB_SOURCES`).
    served_from: Option<&'static str>,
    metrics: Arc<Metrics>,
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed().as_secs_f64();
        self.metrics
            .request(&self.method, &self.path, self.status.as_u16(), elapsed);
        self.metrics.sent(self.bytes);
        if let Some(source) = self.served_from {
            self.metrics.blob_read(source, self.bytes);
        }
        tracing::info!(
            target: "blockreg::request",
            "{} {} {} {} {:.1}ms {}B",
            self.user,
            self.method,
            self.path,
            self.status.as_u16(),
            elapsed * 1000.0,
            self.bytes,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GuestSource;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// Sends one raw HTTP/1.1 request and returns the status and body.
    async fn exchange(addr: SocketAddr, request: &str) -> (u16, String) {
        let mut socket = TcpStream::connect(addr).await.unwrap();
        socket.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        socket.read_to_end(&mut raw).await.unwrap();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
        (status, body.to_owned())
    }

    struct Running {
        addr: SocketAddr,
        stop: oneshot::Sender<()>,
        task: tokio::task::JoinHandle<anyhow::Result<()>>,
    }

    async fn start(config: ServeConfig) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, config, async {
            let _ = stopped.await;
        }));
        // `serve` loads the guest before accepting; wait until it answers.
        for _ in 0..600 {
            if TcpStream::connect(addr).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Running { addr, stop, task }
    }

    fn pace(idle_secs: u64, min_rate: u64) -> Pace {
        Pace::new(
            Duration::from_secs(idle_secs),
            min_rate,
            Arc::new(AtomicBool::new(false)),
        )
    }

    #[test]
    fn without_a_minimum_rate_any_byte_refills_the_idle_bank() {
        let t0 = Instant::now();
        let mut pace = pace(10, 0);
        assert!(!pace.is_late(t0));
        pace.received(1, t0 + Duration::from_secs(9));
        // The guest reads again at once and waits.
        assert!(!pace.is_late(t0 + Duration::from_secs(9)));
        assert!(!pace.is_late(t0 + Duration::from_secs(18)));
        assert!(pace.is_late(t0 + Duration::from_secs(19)));
    }

    #[test]
    fn bytes_below_the_minimum_rate_do_not_keep_a_body_alive() {
        let t0 = Instant::now();
        let mut pace = pace(10, 100);
        assert!(!pace.is_late(t0));
        // 10 bytes a second at a minimum of 100: the bank drains at 0.9 s/s.
        let mut t = t0;
        let mut late_at = None;
        for second in 1..60 {
            t = t0 + Duration::from_secs(second);
            if pace.is_late(t) {
                late_at = Some(second);
                break;
            }
            pace.received(10, t);
            assert!(!pace.is_late(t));
        }
        assert_eq!(late_at, Some(11), "cut off at {t:?}");
    }

    #[test]
    fn fast_bytes_bank_no_more_than_the_idle_timeout() {
        let t0 = Instant::now();
        let mut pace = pace(10, 100);
        assert!(!pace.is_late(t0));
        pace.received(1 << 30, t0);
        assert!(!pace.is_late(t0));
        assert!(!pace.is_late(t0 + Duration::from_secs(9)));
        assert!(pace.is_late(t0 + Duration::from_secs(10)));
    }

    #[test]
    fn time_the_guest_spends_away_from_the_body_is_not_counted() {
        let t0 = Instant::now();
        let mut pace = pace(10, 0);
        assert!(!pace.is_late(t0));
        pace.received(1, t0);
        // The guest reads again 60 s later (say, hashing a large upload).
        assert!(!pace.is_late(t0 + Duration::from_secs(60)));
        assert!(!pace.is_late(t0 + Duration::from_secs(69)));
        assert!(pace.is_late(t0 + Duration::from_secs(70)));
    }

    #[test]
    fn a_zero_idle_timeout_turns_pacing_off() {
        let t0 = Instant::now();
        let mut pace = pace(0, 100);
        assert!(!pace.is_late(t0));
        assert!(!pace.is_late(t0 + Duration::from_secs(3600)));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn serve_creates_the_data_dir_answers_and_stops_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("nested").join("data");
        let server = start(ServeConfig::new(&data)).await;
        // The listener is bound before `serve` runs, so a connection is no
        // sign of readiness; an answer is (it comes after the data dir and
        // the guest are ready).
        let (status, _) = exchange(
            server.addr,
            "GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status, 200);
        assert!(data.is_dir());

        server.stop.send(()).unwrap();
        let result = tokio::time::timeout(Duration::from_secs(10), server.task)
            .await
            .expect("serve returns after shutdown");
        result.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn content_length_over_the_limit_is_refused_by_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServeConfig::new(dir.path());
        config.limits.max_body_bytes = 10;
        let server = start(config).await;

        let (status, body) = exchange(
            server.addr,
            "PUT /v2/x/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\
             Connection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status, 413);
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["errors"][0]["code"], "SIZE_INVALID");
        assert!(json["errors"][0]["detail"].is_null());
        let _ = server.stop.send(());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_guest_file_that_is_not_a_component_is_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let bogus = dir.path().join("bogus.wasm");
        std::fs::write(&bogus, b"not wasm").unwrap();
        let mut config = ServeConfig::new(dir.path().join("data"));
        config.guest = GuestSource::File(bogus);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let err = serve(listener, config, std::future::pending())
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("compiling"), "{err:#}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_component_without_the_exports_is_refused_at_start() {
        // The smallest valid component: it compiles but exports nothing.
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.wasm");
        std::fs::write(&empty, b"\0asm\x0d\0\x01\0").unwrap();
        let mut config = ServeConfig::new(dir.path().join("data"));
        config.guest = GuestSource::File(empty);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let err = serve(listener, config, std::future::pending())
            .await
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("does not fit the wasi:http/proxy world"),
            "{err:#}"
        );
    }
}
