//! What the server counts, in the Prometheus text format the debug server
//! serves (`http.debug.prometheus`).
//!
//! Requests are counted and timed when their response body is dropped (the
//! access log's moment, `server.rs`), by method, kind of route and status;
//! request body bytes as they reach the guest, response bytes as they
//! leave. Gauges that mirror other state (guest instances in use) are set
//! when the metrics are asked for. Labels take few values: the route kind
//! is the endpoint group, never the path.

use hyper::Method;
use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

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
}

impl Metrics {
    /// Creates and registers every metric.
    ///
    /// # Panics
    ///
    /// Never with the fixed names below (registration fails only on a
    /// duplicate or malformed name).
    pub(crate) fn new() -> Self {
        let labels = ["method", "route", "status"];
        let requests = IntCounterVec::new(
            Opts::new("blockreg_http_requests_total", "HTTP requests answered."),
            &labels,
        )
        .expect("valid metric");
        let buckets = vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            60.0, 300.0,
        ];
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "blockreg_http_request_duration_seconds",
                "Time from a request's arrival until its response body was sent.",
            )
            .buckets(buckets),
            &labels,
        )
        .expect("valid metric");
        let bytes_in = IntCounter::new(
            "blockreg_http_request_body_bytes_total",
            "Request body bytes received.",
        )
        .expect("valid metric");
        let bytes_out = IntCounter::new(
            "blockreg_http_response_body_bytes_total",
            "Response body bytes sent.",
        )
        .expect("valid metric");
        let instances_in_use = IntGauge::new(
            "blockreg_guest_instances_in_use",
            "Guest instances serving a request.",
        )
        .expect("valid metric");
        let write_instances_in_use = IntGauge::new(
            "blockreg_guest_write_instances_in_use",
            "Guest instances serving a write (upload, manifest push, delete with a body).",
        )
        .expect("valid metric");
        let instances_max = IntGauge::new(
            "blockreg_guest_instances_max",
            "Guest instances allowed at once (--max-concurrency).",
        )
        .expect("valid metric");
        let registry = Registry::new();
        for metric in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(bytes_in.clone()),
            Box::new(bytes_out.clone()),
            Box::new(instances_in_use.clone()),
            Box::new(write_instances_in_use.clone()),
            Box::new(instances_max.clone()),
        ] {
            registry.register(metric).expect("distinct metric names");
        }
        Self {
            registry,
            requests,
            duration,
            bytes_in,
            bytes_out,
            instances_in_use,
            instances_max,
            write_instances_in_use,
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
}
