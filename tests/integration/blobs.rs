//! `HEAD`/`GET /v2/<name>/blobs/<digest>`: exact bytes at sizes around the
//! 4 KiB block size, byte ranges (within and across blocks, open-ended,
//! clamped, unsatisfiable), unknown blobs, per-repository visibility, and
//! what a user can see in the data dir: shared blocks stored once, a recipe
//! per committed blob, no whole copy of a blob.

use hyper::Method;
use tests::{repetitive_bytes, seeded_bytes, sha256_digest, Server};

/// Pushes `data` monolithically, then checks HEAD and GET return it.
async fn assert_round_trip(data: &[u8]) {
    let srv = Server::start().await;
    let digest = srv.push_blob("roundtrip", data).await;
    assert_eq!(digest, sha256_digest(data));

    let head = srv.head(format!("/v2/roundtrip/blobs/{digest}")).await;
    head.assert_status(200)
        .assert_content_length(data.len())
        .assert_header("docker-content-digest", &digest);
    assert!(
        head.body.is_empty(),
        "HEAD returned a body\n{}",
        head.describe()
    );

    let get = srv.get(format!("/v2/roundtrip/blobs/{digest}")).await;
    get.assert_status(200)
        .assert_content_length(data.len())
        .assert_header("docker-content-digest", &digest)
        .assert_body(data);
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_blob_round_trips() {
    assert_round_trip(b"").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_byte_blob_round_trips() {
    assert_round_trip(b"x").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn blob_one_byte_short_of_a_block_round_trips() {
    assert_round_trip(&seeded_bytes(4095, 4095)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn blob_of_exactly_one_block_round_trips() {
    assert_round_trip(&seeded_bytes(4096, 4096)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn blob_one_byte_past_a_block_round_trips() {
    assert_round_trip(&seeded_bytes(4097, 4097)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn multi_mib_random_blob_round_trips() {
    assert_round_trip(&seeded_bytes(3, 3 * 1024 * 1024 + 123)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn highly_repetitive_blob_round_trips() {
    // 2 MiB + a partial block of a 16-byte pattern: every full block is equal.
    assert_round_trip(&repetitive_bytes(
        b"blockreg-repeat!",
        2 * 1024 * 1024 + 1000,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn all_zero_blob_round_trips() {
    assert_round_trip(&vec![0u8; 1024 * 1024 + 4097]).await;
}

// ---- ranges ------------------------------------------------------------

/// Size of the blob the range tests read: three blocks and a partial one.
const RANGED: usize = 3 * 4096 + 500;

async fn ranged_blob() -> (Server, Vec<u8>, String) {
    let srv = Server::start().await;
    let data = seeded_bytes(77, RANGED);
    let digest = srv.push_blob("ranged", &data).await;
    (srv, data, digest)
}

/// Requests `Range: bytes=<spec>` and expects 206 with `first..=last`.
async fn assert_range(
    srv: &Server,
    digest: &str,
    data: &[u8],
    spec: &str,
    first: usize,
    last: usize,
) {
    let resp = srv
        .req(Method::GET, format!("/v2/ranged/blobs/{digest}"))
        .header("range", format!("bytes={spec}"))
        .send()
        .await;
    resp.assert_status(206)
        .assert_header(
            "content-range",
            &format!("bytes {first}-{last}/{}", data.len()),
        )
        .assert_content_length(last - first + 1)
        .assert_body(&data[first..=last]);
}

#[tokio::test(flavor = "multi_thread")]
async fn range_inside_one_block_returns_206_with_exact_slice() {
    let (srv, data, digest) = ranged_blob().await;
    assert_range(&srv, &digest, &data, "10-99", 10, 99).await;
    assert_range(&srv, &digest, &data, "0-0", 0, 0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn range_crossing_block_boundaries_returns_exact_slice() {
    let (srv, data, digest) = ranged_blob().await;
    // Crosses the boundaries at 4096 and 8192.
    assert_range(&srv, &digest, &data, "4000-8200", 4000, 8200).await;
    // Exactly the second block, and one byte either side of a boundary.
    assert_range(&srv, &digest, &data, "4096-8191", 4096, 8191).await;
    assert_range(&srv, &digest, &data, "4095-4096", 4095, 4096).await;
    // From the first block into the trailing partial block.
    assert_range(&srv, &digest, &data, "1-12700", 1, 12700).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn open_ended_range_returns_the_tail() {
    let (srv, data, digest) = ranged_blob().await;
    assert_range(&srv, &digest, &data, "5000-", 5000, RANGED - 1).await;
    assert_range(
        &srv,
        &digest,
        &data,
        &format!("{}-", RANGED - 1),
        RANGED - 1,
        RANGED - 1,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn range_ending_past_the_blob_is_clamped() {
    // RFC 9110 14.1.2: a last-pos at or past the length means "to the end".
    let (srv, data, digest) = ranged_blob().await;
    assert_range(&srv, &digest, &data, "12000-999999", 12000, RANGED - 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn range_deep_inside_a_large_blob_returns_exact_slice() {
    let srv = Server::start().await;
    let data = seeded_bytes(5, 3 * 1024 * 1024 + 11);
    let digest = srv.push_blob("ranged", &data).await;
    assert_range(
        &srv,
        &digest,
        &data,
        "1048570-2097160",
        1_048_570,
        2_097_160,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unsatisfiable_range_returns_416() {
    let (srv, data, digest) = ranged_blob().await;
    for spec in [format!("{RANGED}-"), "20000-20010".to_string()] {
        let resp = srv
            .req(Method::GET, format!("/v2/ranged/blobs/{digest}"))
            .header("range", format!("bytes={spec}"))
            .send()
            .await;
        resp.assert_status(416);
        if let Some(range) = resp.header("content-range") {
            assert_eq!(
                range,
                format!("bytes */{}", data.len()),
                "{}",
                resp.describe()
            );
        }
        assert_ne!(resp.body.as_ref(), &data[..], "416 carried the blob");
        resp.assert_empty_or_error_body();
    }
    srv.assert_alive().await;
}

// ---- unknown blobs and visibility --------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn unknown_blob_returns_404_blob_unknown() {
    let srv = Server::start().await;
    srv.push_blob("some/repo", b"the repository exists").await;
    let digest = sha256_digest(b"never pushed");
    srv.get(format!("/v2/some/repo/blobs/{digest}"))
        .await
        .assert_error(404, &["BLOB_UNKNOWN"]);
    let head = srv.head(format!("/v2/some/repo/blobs/{digest}")).await;
    head.assert_status(404);
    assert!(head.body.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn blob_is_visible_only_in_the_repository_it_was_pushed_to() {
    let srv = Server::start().await;
    let data = seeded_bytes(9, 10_000);
    let digest = srv.push_blob("team/a", &data).await;
    srv.get(format!("/v2/team/a/blobs/{digest}"))
        .await
        .assert_status(200)
        .assert_body(&data);
    srv.get(format!("/v2/team/b/blobs/{digest}"))
        .await
        .assert_error(404, &["BLOB_UNKNOWN"]);
    srv.head(format!("/v2/team/b/blobs/{digest}"))
        .await
        .assert_status(404);
    // A prefix of the name is another repository too.
    srv.get(format!("/v2/team/blobs/{digest}"))
        .await
        .assert_error(404, &["BLOB_UNKNOWN"]);

    let mount = srv
        .req(
            Method::POST,
            format!("/v2/team/b/blobs/uploads/?mount={digest}&from=team/a"),
        )
        .send()
        .await;
    mount.assert_status(201);
    srv.get(format!("/v2/team/b/blobs/{digest}"))
        .await
        .assert_status(200)
        .assert_body(&data);
}

// ---- storage ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn shared_blocks_of_two_blobs_are_stored_once() {
    let srv = Server::start().await;
    let x = seeded_bytes(1234, 1024 * 1024);
    srv.push_blob("dedup", &x).await;
    let after_x = srv.wait_converted().await;
    // 1 MiB of random data (not a tar: cut every 4 KiB): 256 distinct blocks.
    assert_eq!(after_x.blocks, 256, "{after_x:?}");

    let mut x_plus = x.clone();
    x_plus.extend_from_slice(b"a suffix that makes a different blob");
    srv.push_blob("dedup-other", &x_plus).await;
    let after_both = srv.wait_converted().await;
    assert_eq!(
        after_both.blocks, 257,
        "the second blob should add only its tail block"
    );
    let logical = (x.len() + x_plus.len()) as u64;
    assert_eq!(after_both.logical_bytes, logical);
    assert!(
        after_both.stored_bytes < logical * 6 / 10,
        "the store holds {} bytes for {logical} logical bytes: not deduplicated",
        after_both.stored_bytes
    );
    srv.get(format!("/v2/dedup-other/blobs/{}", sha256_digest(&x_plus)))
        .await
        .assert_status(200)
        .assert_body(&x_plus);
}

#[tokio::test(flavor = "multi_thread")]
async fn repetitive_blob_stores_one_block_per_distinct_content() {
    let srv = Server::start().await;
    let data = repetitive_bytes(b"0123456789abcdef", 1024 * 1024);
    srv.push_blob("zeros", &data).await;
    let stats = srv.wait_converted().await;
    assert_eq!(stats.blocks, 1, "256 identical 4 KiB blocks: {stats:?}");
    assert!(
        stats.stored_bytes < 64 * 1024,
        "a repeated pattern compresses: {stats:?}"
    );
    // Pushing the same content again, to another repo, adds nothing.
    srv.push_blob("zeros-again", &data).await;
    assert_eq!(srv.wait_converted().await.blocks, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn committed_blob_has_a_recipe_and_no_whole_copy() {
    let srv = Server::start().await;
    let data = seeded_bytes(4321, 1024 * 1024 + 100);
    let digest = srv.push_blob("recipes", &data).await;
    srv.wait_converted().await;
    let recipe = srv.recipe_path(&digest);
    let text = std::fs::read(&recipe).unwrap_or_else(|e| panic!("{}: {e}", recipe.display()));
    serde_json::from_slice::<serde_json::Value>(&text).expect("recipe.json is JSON");

    // Random bytes do not compress: the one pack holds them at full size.
    // Anywhere else, a file that size would be a whole copy.
    let packs = srv.data_dir().join("blocks").join("packs");
    let copies: Vec<_> = tests::walk_files(&srv.data_dir())
        .into_iter()
        .filter(|(path, size)| *size == data.len() as u64 && !path.starts_with(&packs))
        .collect();
    assert!(copies.is_empty(), "files the size of the blob: {copies:?}");
    assert!(!srv.original_path(&digest).exists());
    assert!(srv.upload_files().is_empty(), "{:?}", srv.upload_files());
}

#[tokio::test(flavor = "multi_thread")]
async fn suffix_range_returns_the_tail_or_the_whole_blob() {
    // RFC 9110 14.1.1: `bytes=-N` is the last N bytes; a server MAY also
    // ignore Range and send the whole blob, but never another slice.
    let (srv, data, digest) = ranged_blob().await;
    let resp = srv
        .req(Method::GET, format!("/v2/ranged/blobs/{digest}"))
        .header("range", "bytes=-500")
        .send()
        .await;
    match resp.status.as_u16() {
        206 => {
            resp.assert_header(
                "content-range",
                &format!("bytes {}-{}/{RANGED}", RANGED - 500, RANGED - 1),
            )
            .assert_body(&data[RANGED - 500..]);
        }
        200 => {
            resp.assert_body(&data);
        }
        _ => panic!("expected 206 or 200\n{}", resp.describe()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn any_range_of_the_empty_blob_is_unsatisfiable() {
    let srv = Server::start().await;
    let digest = srv.push_blob("empty", b"").await;
    let resp = srv
        .req(Method::GET, format!("/v2/empty/blobs/{digest}"))
        .header("range", "bytes=0-")
        .send()
        .await;
    resp.assert_status(416).assert_empty_or_error_body();
}

#[tokio::test(flavor = "multi_thread")]
async fn blob_deletion_is_supported_or_refused_cleanly() {
    // Spec: DELETE answers 202, or 400/405 when deletion is disabled.
    let srv = Server::start().await;
    let digest = srv.push_blob("del", b"to delete").await;
    let resp = srv
        .req(Method::DELETE, format!("/v2/del/blobs/{digest}"))
        .send()
        .await;
    match resp.status.as_u16() {
        202 => {
            srv.get(format!("/v2/del/blobs/{digest}"))
                .await
                .assert_error(404, &["BLOB_UNKNOWN"]);
        }
        400 | 405 => {
            resp.assert_error(resp.status.as_u16(), &["UNSUPPORTED"]);
            srv.get(format!("/v2/del/blobs/{digest}"))
                .await
                .assert_status(200);
        }
        _ => panic!("expected 202, 400 or 405\n{}", resp.describe()),
    }
}
