//! The debug server (`http.debug.addr`): health and metrics, apart from the
//! registry's own listener so they can stay on a private address.
//!
//! - `/debug/health` (registry:2's): `200 {}` when healthy, else `503` with
//!   a JSON object naming each failing check and its error.
//! - `/livez`: 200 while the process answers.
//! - `/readyz`: 200 when the registry serves and its store is healthy,
//!   else 503.
//! - the Prometheus path (`http.debug.prometheus.path`, `/metrics`) when
//!   metrics are on.
//!
//! The store check ([`Health`]) lists the data directory and writes, reads
//! back and removes a `.tmp-health-*` file in it (the guest skips `.tmp-`
//! names and removes leftovers at start). With `health.storagedriver`
//! enabled it runs every `interval` and the store turns unhealthy after
//! `threshold` failures in a row; otherwise it runs when asked.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::config::{Limits, StorageCheck};
use crate::guest::GuestSlot;
use crate::metrics::{self, Metrics};
use crate::shutdown::Stop;
use crate::stats;

/// The registry's health: its data directory readable and writable.
pub(crate) struct Health {
    data_dir: PathBuf,
    check: Option<StorageCheck>,
    /// Failures in a row and the last error (periodic checks only).
    state: Mutex<(u32, Option<String>)>,
}

/// The name registry:2 gives the check of a filesystem store.
const STORAGE_CHECK: &str = "storagedriver_filesystem";

impl Health {
    pub(crate) fn new(data_dir: PathBuf, check: Option<StorageCheck>) -> Self {
        Self {
            data_dir,
            check,
            state: Mutex::new((0, None)),
        }
    }

    /// Lists the data directory and writes, reads back and removes a file.
    fn probe(data_dir: &std::path::Path) -> Result<(), String> {
        std::fs::read_dir(data_dir).map_err(|e| format!("cannot list the data directory: {e}"))?;
        let probe = data_dir.join(format!(".tmp-health-{}", std::process::id()));
        let written = b"blockreg health check";
        let outcome = std::fs::write(&probe, written)
            .map_err(|e| format!("cannot write in the data directory: {e}"))
            .and_then(|()| {
                let read = std::fs::read(&probe)
                    .map_err(|e| format!("cannot read back from the data directory: {e}"))?;
                if read == written {
                    Ok(())
                } else {
                    Err("the data directory returned other bytes than written".to_owned())
                }
            });
        let _ = std::fs::remove_file(&probe);
        outcome
    }

    async fn probe_now(&self) -> Result<(), String> {
        let dir = self.data_dir.clone();
        tokio::task::spawn_blocking(move || Self::probe(&dir))
            .await
            .unwrap_or_else(|e| Err(format!("health check failed: {e}")))
    }

    /// The store's status: the periodic verdict, or a probe now.
    pub(crate) async fn storage(&self) -> Result<(), String> {
        let Some(check) = self.check else {
            return self.probe_now().await;
        };
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match &*state {
            (failures, Some(error)) if *failures >= check.threshold => Err(error.clone()),
            _ => Ok(()),
        }
    }

    /// Runs the periodic check until `stop` (nothing to do without one).
    pub(crate) async fn run(self: Arc<Self>, mut stop: Stop) {
        let Some(check) = self.check else { return };
        let mut interval = tokio::time::interval(check.interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.stopped() => return,
                _ = interval.tick() => {
                    let outcome = self.probe_now().await;
                    let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                    match outcome {
                        Ok(()) => {
                            if state.0 >= check.threshold {
                                tracing::info!("health: the data directory is healthy again");
                            }
                            *state = (0, None);
                        }
                        Err(error) => {
                            state.0 += 1;
                            if state.0 == check.threshold {
                                tracing::error!("health: {error}");
                            }
                            state.1 = Some(error);
                        }
                    }
                }
            }
        }
    }
}

/// What the debug server answers from.
pub(crate) struct Debug {
    pub(crate) health: Arc<Health>,
    pub(crate) metrics: Arc<Metrics>,
    /// Where metrics are served; `None`: not at all.
    pub(crate) prometheus_path: Option<String>,
    pub(crate) store: StoreFigures,
}

/// Keeps the store gauges of the metrics fresh: asks the guest for the
/// store's figures (`admin.get-stats`) when metrics are scraped, at most
/// once per [`STORE_FIGURES_MAX_AGE`], so frequent scrapes cost nothing.
pub(crate) struct StoreFigures {
    pub(crate) slot: Arc<GuestSlot>,
    pub(crate) data_dir: PathBuf,
    pub(crate) limits: Limits,
    /// When the figures were last asked for; held across the call so two
    /// scrapes at once ask once.
    pub(crate) asked: tokio::sync::Mutex<Option<Instant>>,
}

/// How old the store figures of a scrape may be.
const STORE_FIGURES_MAX_AGE: Duration = Duration::from_secs(5);

/// Longest a scrape waits for the store figures; older ones are served
/// after it.
const STORE_FIGURES_TIMEOUT: Duration = Duration::from_secs(20);

impl StoreFigures {
    async fn refresh(&self, metrics: &Metrics) {
        let mut asked = self.asked.lock().await;
        if asked.is_some_and(|at| at.elapsed() < STORE_FIGURES_MAX_AGE) {
            return;
        }
        let loaded = self.slot.current();
        let figures =
            stats::get_stats(&loaded, &self.data_dir, &self.limits, STORE_FIGURES_TIMEOUT).await;
        match figures {
            Ok(figures) => metrics.set_store(&figures),
            Err(e) => tracing::warn!("metrics: the store's figures are not current: {e:#}"),
        }
        *asked = Some(Instant::now());
    }
}

/// Serves the debug endpoints on `listener` until `stop`.
pub(crate) async fn serve(listener: TcpListener, debug: Arc<Debug>, mut stop: Stop) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stop.stopped() => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => {
                    // Small answers; see `server::accept_connection`.
                    let _ = socket.set_nodelay(true);
                    let debug = debug.clone();
                    let mut stop = stop.clone();
                    connections.spawn(async move {
                        let service = hyper::service::service_fn(move |request| {
                            let debug = debug.clone();
                            async move { Ok::<_, Infallible>(debug.answer(request).await) }
                        });
                        let connection = http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(std::time::Duration::from_secs(30))
                            .serve_connection(TokioIo::new(socket), service);
                        let mut connection = std::pin::pin!(connection);
                        tokio::select! {
                            _ = connection.as_mut() => {}
                            () = stop.stopped() => {
                                connection.as_mut().graceful_shutdown();
                                let _ = connection.await;
                            }
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("debug server: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

impl Debug {
    async fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path();
        if self.prometheus_path.as_deref() == Some(path) {
            self.store.refresh(&self.metrics).await;
            return reply(StatusCode::OK, metrics::CONTENT_TYPE, self.metrics.render());
        }
        match path {
            "/debug/health" => match self.health.storage().await {
                Ok(()) => reply(StatusCode::OK, "application/json", "{}".to_owned()),
                Err(error) => {
                    let body = serde_json::json!({ STORAGE_CHECK: error }).to_string();
                    reply(StatusCode::SERVICE_UNAVAILABLE, "application/json", body)
                }
            },
            "/livez" => reply(StatusCode::OK, "text/plain", "ok\n".to_owned()),
            "/readyz" => match self.health.storage().await {
                Ok(()) => reply(StatusCode::OK, "text/plain", "ok\n".to_owned()),
                Err(error) => reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("store unhealthy: {error}\n"),
                ),
            },
            _ => reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found\n".to_owned(),
            ),
        }
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
