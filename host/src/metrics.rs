//! What the server counts, in the Prometheus text format the debug server
//! serves (`http.debug.prometheus`).
//!
//! Requests are counted and timed when their response body is dropped (the
//! access log's moment, `server.rs`), by method, kind of route and status;
//! request body bytes as they reach the guest, response bytes as they
//! leave. Blob GETs are counted by where their bytes came from (the cache's
//! hits and misses), as the guest says in a response header. The background
//! converter records each call (`convert.rs`), upload purging what it
//! removed (`purge.rs`), garbage collection each run and what it freed
//! (`gc.rs`). The store's figures are the
//! guest's `admin.get-stats`, refreshed when metrics are asked for and at
//! most every few seconds (`debug.rs`). Labels take few values: the route
//! kind is the endpoint group, never the path.

use hyper::Method;
use prometheus::{
    Encoder as _, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, Opts, Registry, TextEncoder,
};

use crate::bindings::{Collection, StoreStats};

/// The Content-Type of [`Metrics::render`]'s output.
pub(crate) const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// The metrics of one server.
pub(crate) struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    bytes_in: IntCounter,
    bytes_out: IntCounter,
    /// Guest instances alive (serving a request) and the most allowed.
    pub(crate) instances_in_use: IntGauge,
    pub(crate) instances_max: IntGauge,
    pub(crate) write_instances_in_use: IntGauge,
    blob_reads: IntCounterVec,
    blob_read_bytes: IntCounterVec,
    login_failures: IntCounter,
    conversions: IntCounterVec,
    conversion_seconds: Histogram,
    converted_bytes: IntCounter,
    purged_sessions: IntCounter,
    purged_bytes: IntCounter,
    gc: GcMetrics,
    store: StoreGauges,
}

/// Garbage collections run by the server (`gc.rs`).
struct GcMetrics {
    runs: IntCounterVec,
    seconds: Histogram,
    tags: IntCounter,
    manifests: IntCounter,
    blobs: IntCounter,
    blob_bytes: IntCounter,
    pack_bytes_removed: IntCounter,
    pack_bytes_written: IntCounter,
    /// When the last collection that was not a dry run ended: the server's
    /// own, or one the store records (`blockreg gc` in another process).
    last_success: Gauge,
}

/// Outcomes of a collection run, as the `outcome` label.
const GC_OUTCOMES: [&str; 3] = ["completed", "dry_run", "failed"];

/// The store's figures (`admin.get-stats`, fields documented in
/// `wit/admin.wit`), as of the last refresh (`debug.rs`).
struct StoreGauges {
    blobs: IntGauge,
    logical_bytes: IntGauge,
    stored_bytes: IntGauge,
    ratio: Gauge,
    blocks: IntGauge,
    block_bytes: IntGauge,
    packs: IntGauge,
    pending: IntGauge,
    gzip_blobs: IntGauge,
    raw_blobs: IntGauge,
    failed: IntGauge,
    cache_bytes: IntGauge,
    repositories: IntGauge,
    manifests: IntGauge,
    uploads: IntGauge,
    unreferenced_blobs: IntGauge,
    unreferenced_bytes: IntGauge,
}

/// Where a blob read's bytes came from, as the guest reports it (the
/// `blockreg-served-from` header, `guest/src/routes/blobs.rs`).
/// `following`: read as another request recreated it (one recreation for
/// concurrent cold pulls).
pub(crate) const BLOB_SOURCES: [&str; 5] =
    ["original", "blocks", "cache", "recreated", "following"];

impl Metrics {
    /// Creates and registers every metric.
    ///
    /// # Panics
    ///
    /// Never with the fixed names below (registration fails only on a
    /// duplicate or malformed name).
    pub(crate) fn new() -> Self {
        let registry = Registry::new();
        let add = |metric: Box<dyn prometheus::core::Collector>| {
            registry
                .register(metric)
                .expect("distinct, valid metric names");
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            add(Box::new(c.clone()));
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            add(Box::new(g.clone()));
            g
        };
        let counters = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            add(Box::new(c.clone()));
            c
        };
        let labels = ["method", "route", "status"];
        let requests = counters(
            "blockreg_http_requests_total",
            "HTTP requests answered.",
            &labels,
        );
        let buckets = vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            60.0, 300.0,
        ];
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "blockreg_http_request_duration_seconds",
                "Time from a request's arrival until its response body was sent.",
            )
            .buckets(buckets.clone()),
            &labels,
        )
        .expect("valid metric");
        add(Box::new(duration.clone()));
        let conversion_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "blockreg_conversion_seconds",
                "Time of one background conversion call (one large blob or a batch of small ones).",
            )
            .buckets(buckets),
        )
        .expect("valid metric");
        add(Box::new(conversion_seconds.clone()));
        let gc_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "blockreg_gc_duration_seconds",
                "Time of one garbage collection, waiting for the store lock included.",
            )
            .buckets(vec![
                0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 10800.0, 21600.0,
            ]),
        )
        .expect("valid metric");
        add(Box::new(gc_seconds.clone()));
        let gc_last = Gauge::new(
            "blockreg_gc_last_success_timestamp_seconds",
            "Unix time at which the last garbage collection (not a dry run) ended; 0: none known.",
        )
        .expect("valid metric");
        add(Box::new(gc_last.clone()));
        let gc_runs = counters(
            "blockreg_gc_runs_total",
            "Garbage collections run by the server, by outcome (completed, dry_run, failed).",
            &["outcome"],
        );
        for outcome in GC_OUTCOMES {
            gc_runs.with_label_values(&[outcome]);
        }
        let gc = GcMetrics {
            runs: gc_runs,
            seconds: gc_seconds,
            tags: counter(
                "blockreg_gc_tags_removed_total",
                "Tags removed by retention rules.",
            ),
            manifests: counter(
                "blockreg_gc_manifests_removed_total",
                "Manifests removed as untagged.",
            ),
            blobs: counter(
                "blockreg_gc_blobs_removed_total",
                "Blobs removed because no kept manifest named them.",
            ),
            blob_bytes: counter(
                "blockreg_gc_blob_bytes_removed_total",
                "Logical bytes (blob sizes) of the blobs removed.",
            ),
            pack_bytes_removed: counter(
                "blockreg_gc_pack_bytes_removed_total",
                "Bytes of pack files removed or rewritten by garbage collection.",
            ),
            pack_bytes_written: counter(
                "blockreg_gc_pack_bytes_written_total",
                "Bytes of the packs written when rewriting mostly dead ones.",
            ),
            last_success: gc_last,
        };
        let ratio = Gauge::new(
            "blockreg_store_stored_ratio",
            "Stored bytes as a share of logical bytes (1 for an empty store; lower is better).",
        )
        .expect("valid metric");
        add(Box::new(ratio.clone()));
        let store = StoreGauges {
            blobs: gauge("blockreg_store_blobs", "Committed blobs."),
            logical_bytes: gauge(
                "blockreg_store_logical_bytes",
                "Sum of the sizes of committed blobs: what a layer-level store keeps.",
            ),
            stored_bytes: gauge(
                "blockreg_store_stored_bytes",
                "Bytes on disk holding blob data (packs, index, recipes, originals; not the cache).",
            ),
            ratio,
            blocks: gauge("blockreg_store_blocks", "Unique blocks."),
            block_bytes: gauge(
                "blockreg_store_block_bytes",
                "Uncompressed bytes of the unique blocks.",
            ),
            packs: gauge("blockreg_store_packs", "Pack files."),
            pending: gauge(
                "blockreg_store_pending_blobs",
                "Blobs awaiting background conversion.",
            ),
            gzip_blobs: gauge(
                "blockreg_store_decoded_blobs",
                "Blobs stored as their decoded content plus corrections (gzip and zstd layers).",
            ),
            raw_blobs: gauge(
                "blockreg_store_verbatim_blobs",
                "Blobs stored as their own bytes (configs, uncompressed layers, compressed blobs that could not be decoded).",
            ),
            failed: gauge(
                "blockreg_store_failed_blobs",
                "Blobs whose conversion failed (served from their originals).",
            ),
            cache_bytes: gauge(
                "blockreg_cache_bytes",
                "Bytes of recreated blobs in the cache.",
            ),
            repositories: gauge("blockreg_store_repositories", "Repositories."),
            manifests: gauge("blockreg_store_manifests", "Stored manifests."),
            uploads: gauge(
                "blockreg_store_upload_sessions",
                "Upload sessions in progress.",
            ),
            unreferenced_blobs: gauge(
                "blockreg_store_unreferenced_blobs",
                "Committed blobs no manifest names (a collection reclaims them past the grace period).",
            ),
            unreferenced_bytes: gauge(
                "blockreg_store_unreferenced_bytes",
                "Sum of the sizes of the unreferenced blobs.",
            ),
        };
        Self {
            requests,
            duration,
            bytes_in: counter(
                "blockreg_http_request_body_bytes_total",
                "Request body bytes received.",
            ),
            bytes_out: counter(
                "blockreg_http_response_body_bytes_total",
                "Response body bytes sent.",
            ),
            instances_in_use: gauge(
                "blockreg_guest_instances_in_use",
                "Guest instances serving a request.",
            ),
            write_instances_in_use: gauge(
                "blockreg_guest_write_instances_in_use",
                "Guest instances serving a write (upload, manifest push, delete with a body).",
            ),
            instances_max: gauge(
                "blockreg_guest_instances_max",
                "Guest instances allowed at once (--max-concurrency).",
            ),
            blob_reads: counters(
                "blockreg_blob_reads_total",
                "Blob GETs by where their bytes came from: original (not converted yet), blocks, cache (a hit), recreated (a miss), following (a miss while another request recreates it: read from that recreation).",
                &["source"],
            ),
            blob_read_bytes: counters(
                "blockreg_blob_read_bytes_total",
                "Bytes sent by blob GETs, by where they came from.",
                &["source"],
            ),
            login_failures: counter(
                "blockreg_auth_failures_total",
                "Requests whose credentials did not authenticate.",
            ),
            conversions: counters(
                "blockreg_conversions_total",
                "Blobs converted to blocks in the background, by outcome (converted, failed).",
                &["outcome"],
            ),
            conversion_seconds,
            converted_bytes: counter(
                "blockreg_converted_bytes_total",
                "Bytes of blobs converted to blocks.",
            ),
            purged_sessions: counter(
                "blockreg_upload_sessions_purged_total",
                "Abandoned upload sessions removed by upload purging.",
            ),
            purged_bytes: counter(
                "blockreg_upload_bytes_purged_total",
                "Bytes of the upload sessions removed by upload purging.",
            ),
            gc,
            store,
            registry,
        }
    }

    /// Records a collection that finished: a dry run counts only as a run.
    pub(crate) fn collection(&self, c: &Collection) {
        let gc = &self.gc;
        gc.seconds.observe(c.duration_ms as f64 / 1000.0);
        if c.dry_run {
            gc.runs.with_label_values(&["dry_run"]).inc();
            return;
        }
        gc.runs.with_label_values(&["completed"]).inc();
        gc.tags.inc_by(c.tags_removed);
        gc.manifests.inc_by(c.manifests_removed);
        gc.blobs.inc_by(c.blobs_removed);
        gc.blob_bytes.inc_by(c.blob_bytes_removed);
        gc.pack_bytes_removed.inc_by(c.pack_bytes_removed);
        gc.pack_bytes_written.inc_by(c.pack_bytes_written);
        self.collection_ended(c);
    }

    /// Counts a collection that failed (an error, a trap, the time limit)
    /// after `seconds`.
    pub(crate) fn collection_failed(&self, seconds: f64) {
        self.gc.runs.with_label_values(&["failed"]).inc();
        self.gc.seconds.observe(seconds);
    }

    /// Moves the last-success time to `c`'s end if later.
    fn collection_ended(&self, c: &Collection) {
        let ended = c.ended() as f64;
        if ended > self.gc.last_success.get() {
            self.gc.last_success.set(ended);
        }
    }

    /// Records one blob GET whose bytes came from `source` (one of
    /// [`BLOB_SOURCES`]), once its body was sent.
    pub(crate) fn blob_read(&self, source: &'static str, bytes: u64) {
        self.blob_reads.with_label_values(&[source]).inc();
        self.blob_read_bytes
            .with_label_values(&[source])
            .inc_by(bytes);
    }

    /// Counts credentials that did not authenticate.
    pub(crate) fn login_failed(&self) {
        self.login_failures.inc();
    }

    /// Counts upload sessions removed by a purge (`purge.rs`).
    pub(crate) fn uploads_purged(&self, sessions: u64, bytes: u64) {
        self.purged_sessions.inc_by(sessions);
        self.purged_bytes.inc_by(bytes);
    }

    /// Records one conversion call: blobs converted and failed, their
    /// converted bytes, its duration.
    pub(crate) fn conversion(&self, converted: u64, failed: u64, bytes: u64, seconds: f64) {
        self.conversions
            .with_label_values(&["converted"])
            .inc_by(converted);
        self.conversions
            .with_label_values(&["failed"])
            .inc_by(failed);
        self.converted_bytes.inc_by(bytes);
        self.conversion_seconds.observe(seconds);
    }

    /// Sets the store gauges from the guest's figures.
    pub(crate) fn set_store(&self, stats: &StoreStats) {
        let g = &self.store;
        let set =
            |gauge: &IntGauge, value: u64| gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
        set(&g.blobs, stats.blobs);
        set(&g.logical_bytes, stats.logical_bytes);
        set(&g.stored_bytes, stats.stored_bytes);
        g.ratio.set(stats.ratio());
        set(&g.blocks, stats.blocks);
        set(&g.block_bytes, stats.block_bytes);
        set(&g.packs, stats.packs);
        set(&g.pending, stats.pending);
        set(&g.gzip_blobs, stats.gzip_blobs + stats.zstd_blobs);
        set(&g.raw_blobs, stats.raw_blobs);
        set(&g.failed, stats.failed);
        set(&g.cache_bytes, stats.cache_bytes);
        set(&g.repositories, stats.repositories);
        set(&g.manifests, stats.manifests);
        set(&g.uploads, stats.uploads);
        set(&g.unreferenced_blobs, stats.unreferenced_blobs);
        set(&g.unreferenced_bytes, stats.unreferenced_bytes);
        if let Some(c) = stats.last_collection.as_ref().filter(|c| !c.dry_run) {
            self.collection_ended(c);
        }
    }

    /// Records one finished request.
    pub(crate) fn request(&self, method: &Method, path: &str, status: u16, seconds: f64) {
        let status = status.to_string();
        let labels = [method_label(method), route_kind(path), status.as_str()];
        self.requests.with_label_values(&labels).inc();
        self.duration.with_label_values(&labels).observe(seconds);
    }

    /// Counts request body bytes received.
    pub(crate) fn received(&self, bytes: u64) {
        self.bytes_in.inc_by(bytes);
    }

    /// Counts response body bytes sent.
    pub(crate) fn sent(&self, bytes: u64) {
        self.bytes_out.inc_by(bytes);
    }

    /// Every metric in the Prometheus text format (0.0.4).
    pub(crate) fn render(&self) -> String {
        let mut out = Vec::new();
        // Writing to a Vec fails only on a malformed family, which the
        // fixed names above cannot make.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The endpoint group of a request path (the guest routes; this only
/// labels).
pub(crate) fn route_kind(path: &str) -> &'static str {
    let Some(rest) = path.strip_prefix("/v2") else {
        return "other";
    };
    if rest.is_empty() || rest == "/" {
        "base"
    } else if rest == "/_catalog" {
        "catalog"
    } else if rest.contains("/blobs/uploads") {
        "uploads"
    } else if rest.contains("/blobs/") {
        "blobs"
    } else if rest.contains("/manifests/") {
        "manifests"
    } else if rest.ends_with("/tags/list") {
        "tags"
    } else if rest.contains("/referrers/") {
        "referrers"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_kinds_are_the_endpoint_groups() {
        assert_eq!(route_kind("/v2/"), "base");
        assert_eq!(route_kind("/v2"), "base");
        assert_eq!(route_kind("/v2/_catalog"), "catalog");
        assert_eq!(route_kind("/v2/a/b/blobs/uploads/123"), "uploads");
        assert_eq!(route_kind("/v2/a/blobs/sha256:00"), "blobs");
        assert_eq!(route_kind("/v2/a/manifests/latest"), "manifests");
        assert_eq!(route_kind("/v2/a/tags/list"), "tags");
        assert_eq!(route_kind("/v2/a/referrers/sha256:00"), "referrers");
        assert_eq!(route_kind("/etc/passwd"), "other");
    }

    #[test]
    fn a_recorded_request_shows_in_the_text_format() {
        let metrics = Metrics::new();
        metrics.request(&Method::GET, "/v2/", 200, 0.003);
        metrics.sent(10);
        let text = metrics.render();
        assert!(
            text.contains(
                "blockreg_http_requests_total{method=\"GET\",route=\"base\",status=\"200\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("blockreg_http_response_body_bytes_total 10"),
            "{text}"
        );
        assert!(text.contains("# TYPE blockreg_http_request_duration_seconds histogram"));
    }

    #[test]
    fn collections_count_by_outcome_and_dry_runs_free_nothing() {
        let metrics = Metrics::new();
        let text = metrics.render();
        for outcome in GC_OUTCOMES {
            assert!(
                text.contains(&format!(
                    "blockreg_gc_runs_total{{outcome=\"{outcome}\"}} 0"
                )),
                "every outcome shows from the start: {text}"
            );
        }
        let c = crate::gc::tests::sample();
        metrics.collection(&Collection {
            dry_run: true,
            ..c.clone()
        });
        metrics.collection(&c);
        metrics.collection_failed(2.0);
        let text = metrics.render();
        for line in [
            "blockreg_gc_runs_total{outcome=\"completed\"} 1",
            "blockreg_gc_runs_total{outcome=\"dry_run\"} 1",
            "blockreg_gc_runs_total{outcome=\"failed\"} 1",
            "blockreg_gc_blobs_removed_total 7",
            "blockreg_gc_blob_bytes_removed_total 70000",
            "blockreg_gc_pack_bytes_removed_total 60000",
            "blockreg_gc_pack_bytes_written_total 10000",
            "blockreg_gc_tags_removed_total 3",
            "blockreg_gc_manifests_removed_total 2",
            "blockreg_gc_duration_seconds_count 3",
            "blockreg_gc_last_success_timestamp_seconds 1700000002",
        ] {
            assert!(text.contains(line), "{line} missing: {text}");
        }
    }
}
