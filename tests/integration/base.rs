//! `GET /v2/` (the API version check), the headers every guest response
//! carries, and the server lifecycle `host::serve` promises: it answers
//! concurrent requests and returns once its shutdown future completes.

use hyper::Method;
use tests::{join_all, seeded_bytes, sha256_digest, Server, GUEST_VERSION};

#[tokio::test(flavor = "multi_thread")]
async fn version_check_returns_200_with_api_version_header() {
    let srv = Server::start().await;
    let resp = srv.get("/v2/").await;
    resp.assert_status(200)
        .assert_header("docker-distribution-api-version", "registry/2.0")
        .assert_header("blockreg-guest", GUEST_VERSION);
    // The body is implementation-defined; registry:2 sends `{}`.
    if !resp.body.is_empty() {
        assert!(resp.json().is_object(), "{}", resp.describe());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn version_check_head_returns_200_without_body() {
    let srv = Server::start().await;
    let resp = srv.head("/v2/").await;
    resp.assert_status(200)
        .assert_header("docker-distribution-api-version", "registry/2.0")
        .assert_header("blockreg-guest", GUEST_VERSION);
    assert!(resp.body.is_empty(), "{}", resp.describe());
}

#[tokio::test(flavor = "multi_thread")]
async fn every_guest_response_carries_the_guest_version_header() {
    let srv = Server::start().await;
    let data = b"guest header";
    let digest = sha256_digest(data);
    let mut responses = vec![
        srv.get("/v2/").await,
        srv.req(
            Method::POST,
            format!("/v2/r/blobs/uploads/?digest={digest}"),
        )
        .body(data.to_vec())
        .send()
        .await,
        srv.get(format!("/v2/r/blobs/{digest}")).await,
        srv.head(format!("/v2/r/blobs/{digest}")).await,
        srv.req(Method::POST, "/v2/r/blobs/uploads/").send().await,
        srv.get(format!("/v2/nope/blobs/{digest}")).await,
        srv.get("/v2/r/blobs/sha256:totallywrong").await,
        srv.get("/v2/nope/tags/list").await,
        srv.get("/v2/_catalog").await,
        srv.get("/v2/r/manifests/missing").await,
        srv.req(Method::PATCH, "/v2/r/manifests/latest")
            .send()
            .await,
    ];
    let pushed = srv.push_image("r", "latest", tests::Flavor::Oci, 1).await;
    responses.push(srv.get(format!("/v2/r/manifests/{}", pushed.digest)).await);
    responses.push(srv.get("/v2/r/tags/list").await);
    for resp in &responses {
        resp.assert_not_5xx();
        resp.assert_header("blockreg-guest", GUEST_VERSION);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pushes_and_reads_all_succeed() {
    let srv = Server::start().await;
    let blobs: Vec<Vec<u8>> = (0..12)
        .map(|i| seeded_bytes(100 + i, 20_000 + i as usize * 777))
        .collect();
    let pushes = blobs.iter().enumerate().map(|(i, data)| {
        let srv = &srv;
        async move { srv.push_blob(&format!("conc/r{}", i % 3), data).await }
    });
    let digests = join_all(pushes).await;
    let reads = digests.iter().enumerate().map(|(i, digest)| {
        let srv = &srv;
        async move { srv.get(format!("/v2/conc/r{}/blobs/{digest}", i % 3)).await }
    });
    for (resp, data) in join_all(reads).await.iter().zip(&blobs) {
        resp.assert_status(200).assert_body(data);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_beyond_max_concurrency_wait_for_a_slot() {
    let srv = Server::start_with(|config| config.limits.max_concurrency = 1).await;
    let blobs: Vec<Vec<u8>> = (0..6).map(|i| seeded_bytes(300 + i, 50_000)).collect();
    let pushes = blobs
        .iter()
        .map(|data| srv.push_blob("one-at-a-time", data));
    let digests = join_all(pushes).await;
    for (digest, data) in digests.iter().zip(&blobs) {
        srv.get(format!("/v2/one-at-a-time/blobs/{digest}"))
            .await
            .assert_status(200)
            .assert_body(data);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_returns_ok_once_shutdown_completes_and_stops_listening() {
    let srv = Server::start().await;
    srv.assert_alive().await;
    let addr = srv.addr();
    srv.stop()
        .await
        .expect("serve returned an error on shutdown");
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(
        refused.is_err(),
        "server still accepts connections after shutdown"
    );
}
