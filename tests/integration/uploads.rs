//! `/v2/<name>/blobs/uploads/`: opening sessions, monolithic, streamed and
//! chunked uploads, status, completion with and without a final body,
//! digest checks, cancellation, unknown and foreign sessions (and their
//! answer reaching a client still sending its body), cross-repository
//! mounts, that session data leaves `uploads/` once a session ends, and that
//! abandoned sessions expire (upload purging) while active ones go on.

use std::time::Duration;

use hyper::Method;
use tests::{location_path, seeded_bytes, sha256_digest, with_query, Server, Upload};

/// PATCHes `piece` as `start-end` and expects 202 with `Range: 0-end`.
async fn patch_chunk(srv: &Server, upload: &mut Upload, start: usize, piece: &[u8]) {
    let end = start + piece.len() - 1;
    let resp = srv
        .req(Method::PATCH, upload.path.clone())
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("{start}-{end}"))
        .body(piece.to_vec())
        .send()
        .await;
    resp.assert_status(202)
        .assert_header("range", &format!("0-{end}"))
        .assert_header("docker-upload-uuid", &upload.uuid);
    upload.follow(&resp);
}

/// Finishes with `PUT ?digest=` (optionally with a final body), expects 201.
async fn finish(srv: &Server, upload: &Upload, digest: &str, last: Option<&[u8]>) {
    let mut req = srv.req(Method::PUT, upload.with_digest(digest));
    if let Some(last) = last {
        req = req
            .header("content-type", "application/octet-stream")
            .body(last.to_vec());
    }
    let resp = req.send().await;
    resp.assert_status(201)
        .assert_header("docker-content-digest", digest);
    assert_eq!(
        location_path(resp.expect_header("location")),
        format!("/v2/{}/blobs/{digest}", upload.repo),
        "{}",
        resp.describe()
    );
}

async fn assert_blob(srv: &Server, repo: &str, data: &[u8]) {
    let digest = sha256_digest(data);
    srv.get(format!("/v2/{repo}/blobs/{digest}"))
        .await
        .assert_status(200)
        .assert_header("docker-content-digest", &digest)
        .assert_content_length(data.len())
        .assert_body(data);
}

#[tokio::test(flavor = "multi_thread")]
async fn post_opens_a_session_with_location_uuid_and_empty_range() {
    let srv = Server::start().await;
    let resp = srv
        .req(Method::POST, "/v2/library/app/blobs/uploads/")
        .send()
        .await;
    resp.assert_status(202);
    let upload = Upload::from_response("library/app", &resp);
    // Two sessions are distinct.
    let other = srv.start_upload("library/app").await;
    assert_ne!(upload.uuid, other.uuid);
    // The session is live.
    srv.get(upload.path.clone())
        .await
        .assert_status(204)
        .assert_header("docker-upload-uuid", &upload.uuid);
}

#[tokio::test(flavor = "multi_thread")]
async fn monolithic_post_with_digest_creates_the_blob() {
    let srv = Server::start().await;
    let data = seeded_bytes(21, 70_000);
    let digest = sha256_digest(&data);
    let resp = srv
        .req(
            Method::POST,
            format!("/v2/mono/blobs/uploads/?digest={digest}"),
        )
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await;
    resp.assert_status(201)
        .assert_header("docker-content-digest", &digest);
    assert_eq!(
        location_path(resp.expect_header("location")),
        format!("/v2/mono/blobs/{digest}")
    );
    assert_blob(&srv, "mono", &data).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn monolithic_post_with_wrong_digest_returns_digest_invalid() {
    let srv = Server::start().await;
    let data = seeded_bytes(22, 9000);
    let claimed = sha256_digest(b"something else");
    srv.req(
        Method::POST,
        format!("/v2/mono/blobs/uploads/?digest={claimed}"),
    )
    .body(data.clone())
    .send()
    .await
    .assert_error(400, &["DIGEST_INVALID"]);
    for digest in [claimed, sha256_digest(&data)] {
        srv.get(format!("/v2/mono/blobs/{digest}"))
            .await
            .assert_error(404, &["BLOB_UNKNOWN"]);
        assert!(!srv.recipe_path(&digest).exists());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn streamed_patches_without_content_range_append() {
    let srv = Server::start().await;
    let data = seeded_bytes(23, 3 * 4096 + 1234);
    let (first, second) = data.split_at(5000);
    let mut upload = srv.start_upload("stream").await;

    // Chunked transfer encoding: no Content-Length, no Content-Range.
    let resp = srv
        .req(Method::PATCH, upload.path.clone())
        .header("content-type", "application/octet-stream")
        .chunked(first.chunks(1500).map(<[u8]>::to_vec).collect())
        .send()
        .await;
    resp.assert_status(202)
        .assert_header("range", "0-4999")
        .assert_header("docker-upload-uuid", &upload.uuid);
    upload.follow(&resp);

    // A plain body with Content-Length appends after it.
    let resp = srv
        .req(Method::PATCH, upload.path.clone())
        .header("content-type", "application/octet-stream")
        .body(second.to_vec())
        .send()
        .await;
    resp.assert_status(202)
        .assert_header("range", &format!("0-{}", data.len() - 1));
    upload.follow(&resp);

    finish(&srv, &upload, &sha256_digest(&data), None).await;
    assert_blob(&srv, "stream", &data).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_patches_in_order_are_accepted() {
    let srv = Server::start().await;
    let data = seeded_bytes(24, 1000 + 5000 + 3000 + 7);
    let mut upload = srv.start_upload("chunked").await;
    let mut offset = 0;
    for len in [1000, 5000, 3000, 7] {
        patch_chunk(&srv, &mut upload, offset, &data[offset..offset + len]).await;
        offset += len;
    }
    finish(&srv, &upload, &sha256_digest(&data), None).await;
    assert_blob(&srv, "chunked", &data).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_push_of_a_multi_mib_blob_round_trips() {
    let srv = Server::start().await;
    let data = seeded_bytes(25, 3 * 1024 * 1024 + 4097);
    srv.push_blob_chunked("big", &data, 1024 * 1024 + 17).await;
    assert_blob(&srv, "big", &data).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn chunk_not_at_the_current_offset_returns_416_with_current_range() {
    let srv = Server::start().await;
    let data = seeded_bytes(26, 3000);
    let mut upload = srv.start_upload("order").await;
    patch_chunk(&srv, &mut upload, 0, &data[..1000]).await;

    // A gap (2000-2999) and an overlap (500-1499) are both refused.
    for (start, end) in [(2000usize, 2999usize), (500, 1499)] {
        let resp = srv
            .req(Method::PATCH, upload.path.clone())
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{start}-{end}"))
            .body(data[start..=end].to_vec())
            .send()
            .await;
        resp.assert_status(416)
            .assert_header("range", "0-999")
            .assert_empty_or_error_body();
    }

    // The session is intact and continues from what the server has.
    let status = srv.get(upload.path.clone()).await;
    status.assert_status(204).assert_header("range", "0-999");
    upload.follow(&status);
    patch_chunk(&srv, &mut upload, 1000, &data[1000..]).await;
    finish(&srv, &upload, &sha256_digest(&data), None).await;
    assert_blob(&srv, "order", &data).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn get_on_a_session_returns_204_with_range_and_uuid() {
    let srv = Server::start().await;
    let data = seeded_bytes(27, 4097);
    let mut upload = srv.start_upload("status").await;
    patch_chunk(&srv, &mut upload, 0, &data).await;
    let resp = srv.get(upload.path.clone()).await;
    resp.assert_status(204)
        .assert_header("range", "0-4096")
        .assert_header("docker-upload-uuid", &upload.uuid);
    assert!(resp.body.is_empty(), "{}", resp.describe());
    // The spec requires the Location to continue with, too.
    upload.follow(&resp);
    finish(&srv, &upload, &sha256_digest(&data), None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn put_with_a_final_chunk_completes_the_upload() {
    let srv = Server::start().await;
    let data = seeded_bytes(28, 10_000);
    let mut upload = srv.start_upload("final").await;
    patch_chunk(&srv, &mut upload, 0, &data[..6000]).await;
    finish(&srv, &upload, &sha256_digest(&data), Some(&data[6000..])).await;
    assert_blob(&srv, "final", &data).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn put_with_a_final_chunk_and_its_content_range_completes_the_upload() {
    let srv = Server::start().await;
    let data = seeded_bytes(38, 9000);
    let mut upload = srv.start_upload("final-range").await;
    patch_chunk(&srv, &mut upload, 0, &data[..4096]).await;
    let digest = sha256_digest(&data);
    let resp = srv
        .req(Method::PUT, upload.with_digest(&digest))
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("4096-{}", data.len() - 1))
        .body(data[4096..].to_vec())
        .send()
        .await;
    resp.assert_status(201)
        .assert_header("docker-content-digest", &digest);
    assert_blob(&srv, "final-range", &data).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pushes_of_the_same_blob_all_succeed() {
    let srv = Server::start().await;
    let data = seeded_bytes(39, 300_000);
    let (a, b, c, d) = tokio::join!(
        srv.push_blob("same", &data),
        srv.push_blob_chunked("same", &data, 70_000),
        srv.push_blob("same", &data),
        srv.push_blob_chunked("same", &data, 50_000),
    );
    for digest in [a, b, c, d] {
        assert_eq!(digest, sha256_digest(&data));
    }
    assert_blob(&srv, "same", &data).await;
    assert!(srv.upload_files().is_empty(), "{:?}", srv.upload_files());
}

#[tokio::test(flavor = "multi_thread")]
async fn put_with_the_whole_body_and_no_patch_completes_the_upload() {
    let srv = Server::start().await;
    let data = seeded_bytes(29, 8193);
    let upload = srv.start_upload("whole").await;
    finish(&srv, &upload, &sha256_digest(&data), Some(&data)).await;
    assert_blob(&srv, "whole", &data).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_upload_completes_as_the_empty_blob() {
    let srv = Server::start().await;
    let upload = srv.start_upload("empty").await;
    finish(&srv, &upload, &sha256_digest(b""), None).await;
    assert_blob(&srv, "empty", b"").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn put_with_wrong_digest_returns_digest_invalid_and_stores_nothing() {
    let srv = Server::start().await;
    let data = seeded_bytes(30, 20_000);
    let mut upload = srv.start_upload("wrong").await;
    patch_chunk(&srv, &mut upload, 0, &data).await;
    let claimed = sha256_digest(b"not the data");
    srv.req(Method::PUT, upload.with_digest(&claimed))
        .send()
        .await
        .assert_error(400, &["DIGEST_INVALID"]);
    for digest in [claimed.clone(), sha256_digest(&data)] {
        srv.get(format!("/v2/wrong/blobs/{digest}"))
            .await
            .assert_error(404, &["BLOB_UNKNOWN"]);
        srv.head(format!("/v2/wrong/blobs/{digest}"))
            .await
            .assert_status(404);
        let recipe = srv.recipe_path(&digest);
        assert!(
            !recipe.exists(),
            "{} exists after a failed upload",
            recipe.display()
        );
        assert!(
            !recipe.parent().unwrap().exists(),
            "layer dir exists after a failed upload"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn put_without_digest_returns_digest_invalid() {
    let srv = Server::start().await;
    let data = seeded_bytes(31, 100);
    let mut upload = srv.start_upload("nodigest").await;
    patch_chunk(&srv, &mut upload, 0, &data).await;
    srv.req(Method::PUT, upload.path.clone())
        .send()
        .await
        .assert_error(400, &["DIGEST_INVALID"]);
    srv.get(format!("/v2/nodigest/blobs/{}", sha256_digest(&data)))
        .await
        .assert_error(404, &["BLOB_UNKNOWN"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_cancels_the_session() {
    let srv = Server::start().await;
    let data = seeded_bytes(32, 5000);
    let mut upload = srv.start_upload("cancel").await;
    patch_chunk(&srv, &mut upload, 0, &data).await;
    let resp = srv.req(Method::DELETE, upload.path.clone()).send().await;
    resp.assert_status(204);
    assert!(resp.body.is_empty(), "{}", resp.describe());

    srv.get(upload.path.clone())
        .await
        .assert_error(404, &["BLOB_UPLOAD_UNKNOWN"]);
    srv.req(Method::PUT, upload.with_digest(&sha256_digest(&data)))
        .send()
        .await
        .assert_error(404, &["BLOB_UPLOAD_UNKNOWN"]);
    assert!(
        srv.upload_files().is_empty(),
        "cancelled upload left {:?}",
        srv.upload_files()
    );
    srv.get(format!("/v2/cancel/blobs/{}", sha256_digest(&data)))
        .await
        .assert_error(404, &["BLOB_UNKNOWN"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_session_returns_blob_upload_unknown() {
    let srv = Server::start().await;
    srv.start_upload("known").await;
    let digest = sha256_digest(b"x");
    let ids = [
        "3f8e1d2c-0a4b-4c5d-8e9f-0123456789ab",
        "not-a-uuid",
        "zzzz",
        "0000000000000000000000000000000000000000000000000000000000000000000000",
    ];
    for id in ids {
        let path = format!("/v2/known/blobs/uploads/{id}");
        srv.get(path.clone())
            .await
            .assert_error(404, &["BLOB_UPLOAD_UNKNOWN"]);
        srv.req(Method::PATCH, path.clone())
            .body(b"data".to_vec())
            .send()
            .await
            .assert_error(404, &["BLOB_UPLOAD_UNKNOWN"]);
        srv.req(Method::PUT, with_query(&path, &format!("digest={digest}")))
            .body(b"x".to_vec())
            .send()
            .await
            .assert_error(404, &["BLOB_UPLOAD_UNKNOWN"]);
        srv.req(Method::DELETE, path.clone())
            .send()
            .await
            .assert_error(404, &["BLOB_UPLOAD_UNKNOWN"]);
    }
    srv.assert_alive().await;
}

/// A client that sends its whole request before it reads (here a PATCH
/// of 48 MiB to an unknown session, refused before any of the body is
/// read) gets the answer, not a connection reset: the server reads the
/// rest of the body before it closes (`Lingering` in host/src/server.rs).
/// Before, the server closed with the body unread, the kernel reset the
/// connection, and the client's write failed with the answer lost (also
/// the flaky end of `a_full_disk_is_a_server_error_...` on a busy machine).
#[tokio::test(flavor = "multi_thread")]
async fn an_answer_given_before_the_body_was_read_reaches_a_client_still_sending() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let srv = Server::start().await;
    srv.start_upload("known").await;
    // Far more than the socket buffers hold, so it cannot all be in flight.
    let body = seeded_bytes(34, 48 << 20);
    for _ in 0..2 {
        let mut conn = tokio::net::TcpStream::connect(srv.addr()).await.unwrap();
        let head = format!(
            "PATCH /v2/known/blobs/uploads/3f8e1d2c-0a4b-4c5d-8e9f-0123456789ab HTTP/1.1\r\n\
             Host: localhost\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        conn.write_all(&body)
            .await
            .expect("the server reads the whole body before it closes");
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        assert!(answer.contains("BLOB_UPLOAD_UNKNOWN"), "{answer}");
    }
    srv.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn session_used_under_another_repository_is_unknown() {
    let srv = Server::start().await;
    let data = seeded_bytes(33, 3000);
    let mut upload = srv.start_upload("owner/repo").await;
    patch_chunk(&srv, &mut upload, 0, &data[..1000]).await;

    let foreign = upload
        .path
        .replacen("/v2/owner/repo/", "/v2/intruder/repo/", 1);
    srv.get(foreign.clone())
        .await
        .assert_error(404, &["BLOB_UPLOAD_UNKNOWN"]);
    srv.req(Method::PATCH, foreign.clone())
        .header("content-range", "1000-2999")
        .body(data[1000..].to_vec())
        .send()
        .await
        .assert_error(404, &["BLOB_UPLOAD_UNKNOWN"]);
    srv.req(
        Method::PUT,
        with_query(&foreign, &format!("digest={}", sha256_digest(&data))),
    )
    .send()
    .await
    .assert_error(404, &["BLOB_UPLOAD_UNKNOWN"]);
    srv.req(Method::DELETE, foreign.clone())
        .send()
        .await
        .assert_error(404, &["BLOB_UPLOAD_UNKNOWN"]);

    // The owner's session is untouched and still completes.
    srv.get(upload.path.clone())
        .await
        .assert_status(204)
        .assert_header("range", "0-999");
    patch_chunk(&srv, &mut upload, 1000, &data[1000..]).await;
    finish(&srv, &upload, &sha256_digest(&data), None).await;
    assert_blob(&srv, "owner/repo", &data).await;
    srv.get(format!("/v2/intruder/repo/blobs/{}", sha256_digest(&data)))
        .await
        .assert_error(404, &["BLOB_UNKNOWN"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn mount_from_a_repository_holding_the_blob_returns_201() {
    let srv = Server::start().await;
    let data = seeded_bytes(34, 50_000);
    let digest = srv.push_blob("src/repo", &data).await;
    let blocks_before = srv.block_files().len();

    let resp = srv
        .req(
            Method::POST,
            format!("/v2/dst/repo/blobs/uploads/?mount={digest}&from=src/repo"),
        )
        .send()
        .await;
    resp.assert_status(201)
        .assert_header("docker-content-digest", &digest);
    assert_eq!(
        location_path(resp.expect_header("location")),
        format!("/v2/dst/repo/blobs/{digest}"),
        "{}",
        resp.describe()
    );
    assert_blob(&srv, "dst/repo", &data).await;
    assert_blob(&srv, "src/repo", &data).await;
    assert_eq!(
        srv.block_files().len(),
        blocks_before,
        "a mount must not copy blocks"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mount_from_a_repository_without_the_blob_opens_a_session() {
    let srv = Server::start().await;
    let data = seeded_bytes(35, 6000);
    // The blob exists, but in a third repository, not in `from`.
    let digest = srv.push_blob("third", &data).await;
    srv.push_blob("src", b"something else").await;

    let resp = srv
        .req(
            Method::POST,
            format!("/v2/dst/blobs/uploads/?mount={digest}&from=src"),
        )
        .send()
        .await;
    resp.assert_status(202);
    let upload = Upload::from_response("dst", &resp);
    srv.get(format!("/v2/dst/blobs/{digest}"))
        .await
        .assert_error(404, &["BLOB_UNKNOWN"]);

    // The fallback session is an ordinary one.
    finish(&srv, &upload, &digest, Some(&data)).await;
    assert_blob(&srv, "dst", &data).await;

    // `from` naming a repository that does not exist behaves the same.
    let resp = srv
        .req(
            Method::POST,
            format!("/v2/dst2/blobs/uploads/?mount={digest}&from=no/such/repo"),
        )
        .send()
        .await;
    resp.assert_status(202);
    Upload::from_response("dst2", &resp);
}

#[tokio::test(flavor = "multi_thread")]
async fn session_data_leaves_uploads_once_the_blob_is_committed() {
    let srv = Server::start().await;
    let data = seeded_bytes(36, 1024 * 1024 + 300);
    let mut upload = srv.start_upload("cleanup").await;
    patch_chunk(&srv, &mut upload, 0, &data[..600_000]).await;
    patch_chunk(&srv, &mut upload, 600_000, &data[600_000..]).await;
    finish(&srv, &upload, &sha256_digest(&data), None).await;
    srv.wait_converted().await;

    assert!(
        srv.upload_files().is_empty(),
        "left in uploads/: {:?}",
        srv.upload_files()
    );
    assert!(srv.recipe_path(&sha256_digest(&data)).is_file());
    let packs = srv.data_dir().join("blocks").join("packs");
    let copies: Vec<_> = tests::walk_files(&srv.data_dir())
        .into_iter()
        .filter(|(path, size)| *size == data.len() as u64 && !path.starts_with(&packs))
        .collect();
    assert!(copies.is_empty(), "whole copies of the blob: {copies:?}");
    srv.get(upload.path.clone())
        .await
        .assert_error(404, &["BLOB_UPLOAD_UNKNOWN"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn monolithic_upload_leaves_nothing_in_uploads() {
    let srv = Server::start().await;
    srv.push_blob("mono-clean", &seeded_bytes(37, 100_000))
        .await;
    assert!(
        srv.upload_files().is_empty(),
        "left in uploads/: {:?}",
        srv.upload_files()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn percent_encoded_query_values_are_decoded() {
    // Go clients (docker, containerd) build queries with url.Values.Encode,
    // which sends `sha256%3A<hex>` and `from=a%2Fb`.
    let srv = Server::start().await;
    let data = seeded_bytes(40, 12_345);
    let digest = sha256_digest(&data);
    let encoded = digest.replace(':', "%3A");

    let resp = srv
        .req(
            Method::POST,
            format!("/v2/enc/src/blobs/uploads/?digest={encoded}"),
        )
        .body(data.clone())
        .send()
        .await;
    resp.assert_status(201)
        .assert_header("docker-content-digest", &digest);
    assert_blob(&srv, "enc/src", &data).await;

    let upload = srv.start_upload("enc/put").await;
    let resp = srv
        .req(
            Method::PUT,
            with_query(&upload.path, &format!("digest={encoded}")),
        )
        .body(data.clone())
        .send()
        .await;
    resp.assert_status(201)
        .assert_header("docker-content-digest", &digest);
    assert_blob(&srv, "enc/put", &data).await;

    let resp = srv
        .req(
            Method::POST,
            format!("/v2/enc/dst/blobs/uploads/?mount={encoded}&from=enc%2Fsrc"),
        )
        .send()
        .await;
    resp.assert_status(201)
        .assert_header("docker-content-digest", &digest);
    assert_blob(&srv, "enc/dst", &data).await;
}

/// Upload purging (`storage.maintenance.uploadpurging`): a session that no
/// request touched for `age` is removed with its bytes (the client gets
/// 404 `BLOB_UPLOAD_UNKNOWN`), one that keeps receiving chunks is kept and
/// completes; blobs and the session being written are never touched.
#[tokio::test(flavor = "multi_thread")]
async fn idle_upload_sessions_are_purged_and_active_ones_kept() {
    let srv = Server::start_with(|c| {
        c.upload_purging = host::UploadPurging {
            enabled: true,
            age: Duration::from_secs(3),
            interval: Duration::from_secs(1),
            dry_run: false,
        };
    })
    .await;
    let pushed = seeded_bytes(31, 10_000);
    let pushed_digest = srv.push_blob("purge/me", &pushed).await;
    let mut abandoned = srv.start_upload("purge/me").await;
    srv.patch(&mut abandoned, &seeded_bytes(32, 50_000)).await;
    let mut active = srv.start_upload("purge/me").await;
    let mut sent = Vec::new();
    // Chunks every second for 6 s: idle never more than ~1 s.
    for i in 0..6 {
        let chunk = seeded_bytes(40 + i, 5_000);
        srv.patch(&mut active, &chunk).await;
        sent.extend_from_slice(&chunk);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    srv.get(abandoned.path.clone())
        .await
        .assert_error(404, &["BLOB_UPLOAD_UNKNOWN"]);
    assert_eq!(
        srv.stats().await.uploads,
        1,
        "only the active session is left"
    );
    let digest = sha256_digest(&sent);
    srv.req(Method::PUT, active.with_digest(&digest))
        .send()
        .await
        .assert_status(201);
    srv.get(format!("/v2/purge/me/blobs/{digest}"))
        .await
        .assert_status(200)
        .assert_body(&sent);
    srv.get(format!("/v2/purge/me/blobs/{pushed_digest}"))
        .await
        .assert_status(200)
        .assert_body(&pushed);
}

/// With `dryrun`, idle sessions are only reported: they stay and finish.
#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_purge_removes_nothing() {
    let srv = Server::start_with(|c| {
        c.upload_purging = host::UploadPurging {
            enabled: true,
            age: Duration::from_secs(1),
            interval: Duration::from_secs(1),
            dry_run: true,
        };
    })
    .await;
    let data = seeded_bytes(33, 20_000);
    let mut upload = srv.start_upload("purge/dry").await;
    srv.patch(&mut upload, &data).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let digest = sha256_digest(&data);
    srv.req(Method::PUT, upload.with_digest(&digest))
        .send()
        .await
        .assert_status(201);
}
