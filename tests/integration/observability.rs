//! The debug server (`http.debug`): `/livez`, `/readyz` and
//! `/debug/health` report the store's health (a data directory that goes
//! away turns them 503, its return turns them back), and the Prometheus
//! metrics count the requests made, the conversions, the cache's hits and
//! misses and the store's figures, in a format `promtool check metrics`
//! accepts.

use std::time::{Duration, Instant};

use hyper::Method;
use tests::{gzip_layer, join_all, text_bytes, Server};

/// Waits until the server answers (it loads its guest first).
async fn ready(srv: &Server) {
    srv.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn health_endpoints_report_a_store_that_goes_away() {
    let srv = Server::start_with_debug(|_| {}).await;
    ready(&srv).await;
    assert_eq!(srv.debug_get("/livez").await.0, 200);
    assert_eq!(srv.debug_get("/readyz").await.0, 200);
    let (status, content_type, body) = srv.debug_get("/debug/health").await;
    assert_eq!((status, body.as_str()), (200, "{}"));
    assert_eq!(content_type, "application/json");
    assert_eq!(srv.debug_get("/nothing-here").await.0, 404);

    let moved = srv.outside_dir().join("moved");
    std::fs::rename(srv.data_dir(), &moved).unwrap();
    let (status, _, body) = srv.debug_get("/debug/health").await;
    assert_eq!(status, 503, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(json["storagedriver_filesystem"].is_string(), "{body}");
    assert_eq!(srv.debug_get("/readyz").await.0, 503);
    assert_eq!(srv.debug_get("/livez").await.0, 200, "alive, not ready");

    std::fs::rename(&moved, srv.data_dir()).unwrap();
    assert_eq!(srv.debug_get("/debug/health").await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_periodic_storage_check_turns_unhealthy_after_its_threshold() {
    let srv = Server::start_with_debug(|config| {
        config.health.storage = Some(host::StorageCheck {
            interval: Duration::from_millis(100),
            threshold: 3,
        });
    })
    .await;
    ready(&srv).await;
    assert_eq!(srv.debug_get("/debug/health").await.0, 200);
    let moved = srv.outside_dir().join("moved");
    std::fs::rename(srv.data_dir(), &moved).unwrap();
    let began = Instant::now();
    while srv.debug_get("/debug/health").await.0 == 200 {
        assert!(began.elapsed() < Duration::from_secs(10), "still healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Three failures 100 ms apart: not before about 200 ms.
    assert!(
        began.elapsed() >= Duration::from_millis(150),
        "{:?}",
        began.elapsed()
    );
    std::fs::rename(&moved, srv.data_dir()).unwrap();
    let began = Instant::now();
    while srv.debug_get("/readyz").await.0 != 200 {
        assert!(began.elapsed() < Duration::from_secs(10), "still unhealthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of the sample `line_start` (metric name and labels) in
/// `text`, or 0 when absent.
fn sample(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(line_start)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_the_requests_made_and_pass_promtool() {
    let srv = Server::start_with_debug(|_| {}).await;
    ready(&srv).await; // one GET /v2/
    for _ in 0..2 {
        srv.get("/v2/").await.assert_status(200);
    }
    let blob = vec![7u8; 3000];
    let digest = srv.push_blob("metrics/repo", &blob).await;
    for _ in 0..2 {
        srv.head(format!("/v2/metrics/repo/blobs/{digest}"))
            .await
            .assert_status(200);
    }
    srv.get(format!("/v2/metrics/repo/blobs/{digest}"))
        .await
        .assert_status(200);
    srv.req(Method::GET, "/v2/metrics/repo/manifests/nope")
        .send()
        .await
        .assert_status(404);

    // A request is counted when its response body is dropped, a moment
    // after the client has read it.
    let began = Instant::now();
    let text = loop {
        let (status, content_type, text) = srv.debug_get("/metrics").await;
        assert_eq!(status, 200);
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        let done = sample(
            &text,
            "blockreg_http_requests_total{method=\"GET\",route=\"manifests\",status=\"404\"}",
        ) == 1.0
            && sample(&text, "blockreg_guest_instances_in_use") == 0.0;
        if done || began.elapsed() > Duration::from_secs(10) {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let count = |labels: &str| sample(&text, &format!("blockreg_http_requests_total{{{labels}}}"));
    assert_eq!(
        count("method=\"GET\",route=\"base\",status=\"200\""),
        3.0,
        "{text}"
    );
    assert_eq!(
        count("method=\"POST\",route=\"uploads\",status=\"201\""),
        1.0,
        "{text}"
    );
    assert_eq!(
        count("method=\"HEAD\",route=\"blobs\",status=\"200\""),
        2.0,
        "{text}"
    );
    assert_eq!(
        count("method=\"GET\",route=\"blobs\",status=\"200\""),
        1.0,
        "{text}"
    );
    assert_eq!(
        count("method=\"GET\",route=\"manifests\",status=\"404\""),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "blockreg_http_request_duration_seconds_count{method=\"GET\",route=\"base\",status=\"200\"}"
        ),
        3.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "blockreg_http_request_body_bytes_total"),
        3000.0
    );
    assert!(
        sample(&text, "blockreg_http_response_body_bytes_total") >= 3000.0,
        "the blob GET sent 3000 bytes: {text}"
    );
    assert_eq!(
        sample(&text, "blockreg_guest_instances_in_use"),
        0.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "blockreg_guest_instances_max"),
        256.0,
        "{text}"
    );

    promtool_check(&text);
}

/// Scrapes until `done` holds for the text (requests are counted a moment
/// after their client read the response), at most 10 s; the last text.
async fn scrape_until(srv: &Server, done: impl Fn(&str) -> bool) -> String {
    let began = Instant::now();
    loop {
        let (status, _, text) = srv.debug_get("/metrics").await;
        assert_eq!(status, 200);
        if done(&text) || began.elapsed() > Duration::from_secs(10) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn store_conversion_and_cache_metrics_follow_a_push_and_its_pulls() {
    let srv = Server::start_with_debug(|_| {}).await;
    ready(&srv).await;
    let files: Vec<_> = (0..4)
        .map(|i| (format!("f{i}.txt"), text_bytes(i, 60_000)))
        .collect();
    let layer = gzip_layer(&files, 1_700_000_000);
    let digest = srv.push_blob("metrics/cache", &layer).await;
    let blob_path = format!("/v2/metrics/cache/blobs/{digest}");
    let stats = srv.wait_converted().await;
    assert_eq!(stats.pending, 0);
    // Converted: the first GET recreates it (a cache miss), the second is
    // a cache hit. The cache entry is committed by the first GET's instance
    // once the body is out, a moment after the client has it all.
    assert_eq!(srv.get(&blob_path).await.assert_status(200).body, layer);
    let deadline = Instant::now() + Duration::from_secs(10);
    while srv.stats().await.cache_bytes == 0 {
        assert!(
            Instant::now() < deadline,
            "the recreated blob was not cached"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(srv.get(&blob_path).await.assert_status(200).body, layer);
    let reads = |text: &str, source: &str| {
        sample(
            text,
            &format!("blockreg_blob_reads_total{{source=\"{source}\"}}"),
        )
    };
    let text = scrape_until(&srv, |t| reads(t, "cache") == 1.0).await;
    let size = layer.len() as f64;
    for (source, n) in [("original", 0.0), ("recreated", 1.0), ("cache", 1.0)] {
        assert_eq!(reads(&text, source), n, "{source}: {text}");
        assert_eq!(
            sample(
                &text,
                &format!("blockreg_blob_read_bytes_total{{source=\"{source}\"}}")
            ),
            size * n,
            "{source}: {text}"
        );
    }
    assert_eq!(
        sample(&text, "blockreg_conversions_total{outcome=\"converted\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "blockreg_converted_bytes_total"),
        size,
        "{text}"
    );
    assert_eq!(sample(&text, "blockreg_conversion_seconds_count"), 1.0);
    // The store's figures are the guest's, as `blockreg stats` gives them.
    let stats = srv.stats().await;
    assert_eq!(sample(&text, "blockreg_store_blobs"), 1.0, "{text}");
    assert_eq!(sample(&text, "blockreg_store_logical_bytes"), size);
    assert_eq!(sample(&text, "blockreg_store_pending_blobs"), 0.0);
    // One gzip layer, stored decoded.
    assert_eq!(sample(&text, "blockreg_store_decoded_blobs"), 1.0, "{text}");
    assert_eq!(
        sample(&text, "blockreg_store_verbatim_blobs"),
        0.0,
        "{text}"
    );
    assert_eq!((stats.gzip_blobs, stats.raw_blobs), (1, 0));
    assert_eq!(
        sample(&text, "blockreg_store_stored_bytes"),
        stats.stored_bytes as f64
    );
    assert!(sample(&text, "blockreg_store_blocks") >= 1.0, "{text}");
    assert!(
        sample(&text, "blockreg_cache_bytes") >= size,
        "the recreated layer is cached: {text}"
    );
    let ratio = sample(&text, "blockreg_store_stored_ratio");
    assert!(
        (ratio - stats.stored_bytes as f64 / size).abs() < 1e-6,
        "{ratio}"
    );
    promtool_check(&text);
}

/// `promtool check metrics` (Debian's prometheus package, which the e2e
/// tier installs) on `text`; skipped with a note when promtool is missing.
pub(crate) fn promtool_check(text: &str) {
    use std::io::Write as _;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("note: promtool not installed (apt package prometheus); format check skipped");
            return;
        }
        Err(e) => panic!("running promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Concurrent cold pulls of one new layer (a CI fleet starting on a new
/// image): the layer is recreated once; the other requests read that
/// recreation as it is written (or, arriving after, the cache entry), and
/// every one gets the exact bytes.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_cold_pulls_recreate_a_layer_once() {
    let srv = Server::start_with_debug(|_| {}).await;
    ready(&srv).await;
    // The same file eight times (as layers hold copies): its decoded form
    // costs less than the gzip stream, so it is stored decoded.
    let files: Vec<_> = (0..8)
        .map(|i| (format!("f{i}.txt"), text_bytes(40, 700_000)))
        .collect();
    let layer = gzip_layer(&files, 1_700_000_000);
    let digest = srv.push_blob("fleet/app", &layer).await;
    srv.wait_converted().await;
    let path = format!("/v2/fleet/app/blobs/{digest}");
    const PULLS: usize = 10;
    let pulls = (0..PULLS).map(|_| {
        let (srv, path) = (&srv, &path);
        async move { srv.get(path.clone()).await }
    });
    for resp in join_all(pulls).await {
        resp.assert_status(200).assert_body(&layer);
    }
    let reads = |text: &str, source: &str| {
        sample(
            text,
            &format!("blockreg_blob_reads_total{{source=\"{source}\"}}"),
        )
    };
    let text = scrape_until(&srv, |t| {
        reads(t, "recreated") + reads(t, "following") + reads(t, "cache") == PULLS as f64
    })
    .await;
    assert_eq!(reads(&text, "recreated"), 1.0, "{text}");
    assert!(reads(&text, "following") >= 1.0, "{text}");
    assert_eq!(
        reads(&text, "recreated") + reads(&text, "following") + reads(&text, "cache"),
        PULLS as f64,
        "{text}"
    );
}
