//! Content-aware storage over HTTP: a pushed blob is served from its
//! original at once, converted to blocks in the background, and then served
//! from blocks — recreated bit for bit for gzip layers, cached after the
//! first full pull.

use std::time::{Duration, Instant};

use hyper::Method;
use tests::{gzip_layer, seeded_bytes, sha256_digest, text_bytes, Req, Server};

fn app_files(version: u8) -> Vec<(&'static str, Vec<u8>)> {
    let mut config = text_bytes(3, 20_000);
    config[100] = version;
    vec![
        ("usr/lib/libbig.so", seeded_bytes(1, 400_000)),
        ("usr/share/doc/README", text_bytes(2, 300_000)),
        ("etc/app.conf", config),
        ("srv/app.py", text_bytes(4, 9_000)),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn blob_is_served_from_its_original_until_converted() {
    let srv = Server::start_with(|c| c.background_conversion = false).await;
    let data = gzip_layer(&app_files(1), 1_700_000_000);
    let digest = srv.push_blob("pending", &data).await;
    assert!(srv.original_path(&digest).is_file());
    let stats = srv.stats().await;
    assert_eq!(stats.pending, 1, "{stats:?}");
    assert_eq!(stats.blocks, 0);
    srv.get(format!("/v2/pending/blobs/{digest}"))
        .await
        .assert_status(200)
        .assert_body(&data);
    srv.req(Method::GET, format!("/v2/pending/blobs/{digest}"))
        .header("Range", "bytes=10-19")
        .send()
        .await
        .assert_status(206)
        .assert_body(&data[10..20]);
}

#[tokio::test(flavor = "multi_thread")]
async fn gzip_layer_is_stored_as_its_tar_and_pulled_bit_for_bit() {
    let srv = Server::start().await;
    let data = gzip_layer(&app_files(1), 1_700_000_000);
    let digest = srv.push_blob("gz", &data).await;
    let stats = srv.wait_converted().await;
    assert!(!srv.original_path(&digest).exists(), "original dropped");
    let recipe: serde_json::Value =
        serde_json::from_slice(&std::fs::read(srv.recipe_path(&digest)).unwrap()).unwrap();
    assert_eq!(recipe["encoding"], "gzip", "recipe: {recipe}");
    assert!(
        stats.block_bytes > data.len() as u64,
        "the blocks hold the uncompressed tar: {stats:?}"
    );
    assert_eq!(stats.cache_bytes, 0);

    srv.get(format!("/v2/gz/blobs/{digest}"))
        .await
        .assert_status(200)
        .assert_header("Docker-Content-Digest", &digest)
        .assert_body(&data);
    // The first full pull recreated the stream and cached it. The entry is
    // committed once its last byte was sent, so the client can be first.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while srv.stats().await.cache_bytes != data.len() as u64 {
        assert!(
            std::time::Instant::now() < deadline,
            "no cache entry 10 s after the first pull: {:?}",
            srv.stats().await
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    srv.get(format!("/v2/gz/blobs/{digest}"))
        .await
        .assert_status(200)
        .assert_body(&data);
    let mid = data.len() / 2;
    srv.req(Method::GET, format!("/v2/gz/blobs/{digest}"))
        .header("Range", format!("bytes={mid}-"))
        .send()
        .await
        .assert_status(206)
        .assert_body(&data[mid..]);
}

#[tokio::test(flavor = "multi_thread")]
async fn range_of_a_converted_layer_is_recreated_without_the_cache() {
    let srv = Server::start_with(|c| c.settings.cache_bytes = 0).await;
    let data = gzip_layer(&app_files(2), 1_700_000_000);
    let digest = srv.push_blob("nocache", &data).await;
    srv.wait_converted().await;
    for (start, end) in [(0, 100), (1000, 50_000), (data.len() - 8, data.len() - 1)] {
        srv.req(Method::GET, format!("/v2/nocache/blobs/{digest}"))
            .header("Range", format!("bytes={start}-{end}"))
            .send()
            .await
            .assert_status(206)
            .assert_body(&data[start..=end]);
    }
    srv.get(format!("/v2/nocache/blobs/{digest}"))
        .await
        .assert_body(&data);
    assert_eq!(srv.stats().await.cache_bytes, 0, "budget 0 caches nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn rebuilt_layer_with_new_mtimes_stores_almost_nothing() {
    let srv = Server::start().await;
    let first = gzip_layer(&app_files(1), 1_700_000_000);
    srv.push_blob("rebuild", &first).await;
    let before = srv.wait_converted().await;
    // The same files built again a day later, one config byte changed:
    // a gzip stream that shares no 4 KiB block with the first.
    let second = gzip_layer(&app_files(2), 1_700_086_400);
    let digest = srv.push_blob("rebuild", &second).await;
    let after = srv.wait_converted().await;
    let added = after.stored_bytes - before.stored_bytes;
    assert!(
        added * 20 < second.len() as u64,
        "the rebuilt layer ({} bytes) added {added} stored bytes",
        second.len()
    );
    srv.get(format!("/v2/rebuild/blobs/{digest}"))
        .await
        .assert_body(&second);
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_gzip_is_stored_raw_and_still_pulled_exactly() {
    let srv = Server::start().await;
    let mut data = gzip_layer(&app_files(3), 1);
    let mid = data.len() / 2;
    for b in &mut data[mid..mid + 100] {
        *b = !*b;
    }
    let digest = srv.push_blob("corrupt", &data).await;
    let stats = srv.wait_converted().await;
    assert_eq!(stats.failed, 0);
    let recipe: serde_json::Value =
        serde_json::from_slice(&std::fs::read(srv.recipe_path(&digest)).unwrap()).unwrap();
    assert_eq!(recipe["encoding"], "raw");
    srv.get(format!("/v2/corrupt/blobs/{digest}"))
        .await
        .assert_status(200)
        .assert_body(&data);
}

#[tokio::test(flavor = "multi_thread")]
async fn same_blob_in_two_repositories_is_converted_once() {
    let srv = Server::start().await;
    let data = gzip_layer(&app_files(4), 5);
    let digest = sha256_digest(&data);
    srv.push_blob("one", &data).await;
    let first = srv.wait_converted().await;
    srv.push_blob("two", &data).await;
    let second = srv.wait_converted().await;
    assert_eq!(second.blobs, 1);
    assert_eq!(second.stored_bytes, first.stored_bytes);
    srv.get(format!("/v2/two/blobs/{digest}"))
        .await
        .assert_body(&data);
}

/// Sends `req`, a request that commits a blob or mounts one, and expects
/// 201 without the `blockreg-committed` header that the guest adds for the
/// host.
async fn created_without_committed_header(req: Req<'_>) {
    let resp = req.send().await;
    resp.assert_status(201);
    assert_eq!(
        resp.header("blockreg-committed"),
        None,
        "{}",
        resp.describe()
    );
}

/// The guest tells the host of a commit with a `blockreg-committed` response
/// header: the host wakes the converter on it (at once, not at its next
/// poll 5 s later) and removes it, so no client ever sees it.
#[tokio::test(flavor = "multi_thread")]
async fn a_commit_wakes_the_converter_and_its_header_never_reaches_the_client() {
    let srv = Server::start().await;

    // A monolithic POST commits.
    let data = seeded_bytes(71, 10_000);
    let post = format!("/v2/wake/blobs/uploads/?digest={}", sha256_digest(&data));
    created_without_committed_header(srv.req(Method::POST, post).body(data)).await;
    srv.wait_converted().await;

    // The converter is idle now. A session's final PUT commits too, and
    // wakes it.
    let data = seeded_bytes(72, 10_000);
    let digest = sha256_digest(&data);
    let upload = srv.start_upload("wake").await;
    let committed = Instant::now();
    created_without_committed_header(srv.req(Method::PUT, upload.with_digest(&digest)).body(data))
        .await;
    srv.wait_converted().await;
    let waited = committed.elapsed();
    assert!(
        waited < Duration::from_secs(4),
        "converted {waited:?} after the commit: the converter was not woken"
    );

    // A mount links a blob that is already there.
    let mount = format!("/v2/other/blobs/uploads/?mount={digest}&from=wake");
    created_without_committed_header(srv.req(Method::POST, mount)).await;
}
