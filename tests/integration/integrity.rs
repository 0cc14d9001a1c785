//! Issue 13: never serve bytes that do not match their digest, never wedge.
//! Races on one upload session, a manifest PUT racing its DELETE, media
//! types that cannot be sent back, a `Content-Range` that is not text, a
//! full disk, damaged originals, and what a crash leaves behind.

use std::time::Duration;

use hyper::Method;
use tests::{image_blobs, image_manifest, seeded_bytes, sha256_digest, Flavor, Resp, Server};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Opens a session and PATCHes `data` into it; returns the session path.
async fn session_with(srv: &Server, repo: &str, data: &[u8]) -> String {
    let mut upload = srv.start_upload(repo).await;
    srv.patch(&mut upload, data).await;
    upload.path
}

/// `path` with `?digest=` (or `&digest=`) added.
fn with_digest(path: &str, digest: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}digest={digest}")
}

/// The head of a chunked PATCH whose body is sent later, over `stream`.
async fn open_chunked_patch(srv: &Server, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(srv.addr()).await.unwrap();
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        srv.addr()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// Reads a whole response from a raw connection: `(status, text)`.
async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut out))
        .await
        .expect("response within 60 s")
        .ok();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_patch_still_sending_cannot_append_to_a_committed_blob() {
    let srv = Server::start().await;
    let x = seeded_bytes(1, 100_000);
    let digest = sha256_digest(&x);
    let path = session_with(&srv, "a/one", &x).await;

    // A second PATCH sends its head and holds the session, body pending.
    let mut patch = open_chunked_patch(&srv, &path).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The PUT cannot take bytes another request is still writing: it is
    // told the session is busy instead of committing them.
    let put = srv
        .req(Method::PUT, with_digest(&path, &digest))
        .send()
        .await;
    put.assert_error(416, &["BLOB_UPLOAD_INVALID"]);
    // The PATCH then sends its bytes, and they land in the session only.
    patch.write_all(b"5\r\nextra\r\n0\r\n\r\n").await.unwrap();
    let (status, text) = read_response(&mut patch).await;
    assert_eq!(status, 202, "{text}");
    assert!(text.contains("0-100004"), "{text}");
    // Nothing was committed under X's digest, in any repository ...
    srv.head(format!("/v2/a/one/blobs/{digest}"))
        .await
        .assert_status(404);
    // ... and the session's bytes (X + extra) do not commit as X.
    srv.req(Method::PUT, with_digest(&path, &digest))
        .send()
        .await
        .assert_error(400, &["DIGEST_INVALID"]);
    // Another repository pushing X stores X, exactly.
    srv.push_blob("b/two", &x).await;
    srv.get(format!("/v2/b/two/blobs/{digest}"))
        .await
        .assert_status(200)
        .assert_body(&x);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_patch_after_the_put_finds_no_session() {
    let srv = Server::start().await;
    let x = seeded_bytes(2, 50_000);
    let digest = sha256_digest(&x);
    let path = session_with(&srv, "r", &x).await;
    srv.req(Method::PUT, with_digest(&path, &digest))
        .send()
        .await
        .assert_status(201);
    let mut patch = open_chunked_patch(&srv, &path).await;
    patch.write_all(b"5\r\nextra\r\n0\r\n\r\n").await.unwrap();
    let (status, text) = read_response(&mut patch).await;
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("BLOB_UPLOAD_UNKNOWN"), "{text}");
    srv.get(format!("/v2/r/blobs/{digest}"))
        .await
        .assert_status(200)
        .assert_body(&x);
}

/// Codes of a response, or `[]`.
fn codes(resp: &Resp) -> Vec<String> {
    if resp.status.is_success() {
        Vec::new()
    } else {
        resp.error_codes()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn parallel_puts_on_one_session_commit_it_once() {
    let srv = Server::start().await;
    for round in 0..10u64 {
        let data = seeded_bytes(100 + round, 300_000);
        let digest = sha256_digest(&data);
        let path = session_with(&srv, "p", &data).await;
        let url = with_digest(&path, &digest);
        let put = || srv.req(Method::PUT, url.clone()).send();
        let (a, b, c, d, e, f) = tokio::join!(put(), put(), put(), put(), put(), put());
        let answers = [a, b, c, d, e, f];
        let created = answers.iter().filter(|r| r.status == 201).count();
        assert_eq!(created, 1, "round {round}: one PUT commits");
        for r in answers.iter().filter(|r| r.status != 201) {
            r.assert_error(404, &["BLOB_UPLOAD_UNKNOWN"]);
        }
        srv.get(format!("/v2/p/blobs/{digest}"))
            .await
            .assert_status(200)
            .assert_body(&data);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_racing_the_put_lets_exactly_one_of_them_win() {
    let srv = Server::start().await;
    for round in 0..10u64 {
        let data = seeded_bytes(200 + round, 300_000);
        let digest = sha256_digest(&data);
        let path = session_with(&srv, "c", &data).await;
        let (put, cancel) = tokio::join!(
            srv.req(Method::PUT, with_digest(&path, &digest)).send(),
            srv.req(Method::DELETE, path.clone()).send(),
        );
        put.assert_not_5xx();
        cancel.assert_not_5xx();
        match (put.status.as_u16(), cancel.status.as_u16()) {
            (201, 404) => {
                assert_eq!(codes(&cancel), ["BLOB_UPLOAD_UNKNOWN"]);
                srv.get(format!("/v2/c/blobs/{digest}"))
                    .await
                    .assert_body(&data);
            }
            (404, 204) => {
                assert_eq!(codes(&put), ["BLOB_UPLOAD_UNKNOWN"]);
                srv.head(format!("/v2/c/blobs/{digest}"))
                    .await
                    .assert_status(404);
            }
            other => panic!("round {round}: PUT and DELETE answered {other:?}"),
        }
        srv.get(path).await.assert_status(404);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_put_racing_its_delete_leaves_it_whole_or_gone() {
    let srv = Server::start().await;
    let repo = "race/m";
    let (config, layers) = srv.push_image_blobs(repo, Flavor::Oci, 7).await;
    let body = image_manifest(Flavor::Oci, &config, &layers);
    let digest = sha256_digest(&body);
    let media = Flavor::Oci.manifest_type();
    for round in 0..60 {
        let (put, del) = tokio::join!(
            srv.put_manifest(repo, "latest", media, &body),
            srv.req(Method::DELETE, format!("/v2/{repo}/manifests/{digest}"))
                .send(),
        );
        put.assert_status(201);
        del.assert_not_5xx();
        let got = srv.get(format!("/v2/{repo}/manifests/{digest}")).await;
        match got.status.as_u16() {
            200 => {
                got.assert_header("content-type", media)
                    .assert_header("docker-content-digest", &digest)
                    .assert_body(&body);
            }
            404 => {}
            other => panic!("round {round}: GET by digest answered {other}"),
        }
        // Every listed tag answers, with its headers.
        let tags = srv.get(format!("/v2/{repo}/tags/list")).await;
        if tags.status == 200 {
            for tag in tags.json()["tags"].as_array().into_iter().flatten() {
                let tag = tag.as_str().unwrap();
                srv.get(format!("/v2/{repo}/manifests/{tag}"))
                    .await
                    .assert_status(200)
                    .assert_header("content-type", media)
                    .assert_header("docker-content-digest", &digest);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn media_types_that_cannot_be_sent_back_are_refused() {
    let srv = Server::start().await;
    let repo = "mt";
    let (config, layers) = image_blobs(Flavor::Oci, 3);
    srv.push_blob(repo, &config.1).await;
    for layer in &layers {
        srv.push_blob(repo, &layer.1).await;
    }
    let good = image_manifest(Flavor::Oci, &config.0, &[]);
    let text = String::from_utf8(good).unwrap();
    let oci = Flavor::Oci.manifest_type();
    let long = format!("application/{}", "x".repeat(100_000));
    for bad in [
        "a/b\\r\\nX-Injected: 1",
        "a/b\\u0000",
        long.as_str(),
        "text",
    ] {
        let body = text.replace(oci, bad);
        assert_ne!(body, text);
        srv.put_manifest(repo, "t", "application/json", body.as_bytes())
            .await
            .assert_error(400, &["MANIFEST_INVALID"]);
    }
    // Nothing was stored; a valid one still works and keeps its headers.
    srv.get(format!("/v2/{repo}/manifests/t"))
        .await
        .assert_status(404);
    let pushed = srv.push_manifest(repo, "t", oci, text.as_bytes()).await;
    srv.get(format!("/v2/{repo}/manifests/t"))
        .await
        .assert_status(200)
        .assert_header("content-type", oci)
        .assert_header("docker-content-digest", &pushed.digest)
        .assert_content_length(text.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_content_range_that_is_not_text_is_refused() {
    let srv = Server::start().await;
    let path = session_with(&srv, "cr", b"12345").await;
    let mut request = format!(
        "PATCH {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\nContent-Range: "
    )
    .into_bytes();
    request.extend_from_slice(b"5-\xff\xfe\r\n\r\nabc");
    let (status, text) = srv.raw(&request).await;
    assert_eq!(status, 416, "{text}");
    assert!(text.contains("BLOB_UPLOAD_INVALID"), "{text}");
    // The chunk was not appended.
    srv.get(path)
        .await
        .assert_status(204)
        .assert_header("range", "0-4");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_whole_blob_that_does_not_match_its_digest_is_never_delivered() {
    let srv = Server::start_with(|c| c.background_conversion = false).await;
    let data = seeded_bytes(9, 1_000_000);
    let digest = srv.push_blob("d", &data).await;
    // Damage on disk: same size, other bytes.
    let mut damaged = data.clone();
    damaged[500_000] ^= 0xff;
    std::fs::write(srv.original_path(&digest), &damaged).unwrap();

    let mut stream = TcpStream::connect(srv.addr()).await.unwrap();
    let request =
        format!("GET /v2/d/blobs/{digest} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut raw))
        .await
        .expect("response within 60 s")
        .ok();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let body = &raw[split + 4..];
    // The head went out before the damage was known; the body never
    // completes, so no client takes it for the blob.
    assert!(head.starts_with("http/1.1 200"), "{head}");
    if head.contains("transfer-encoding: chunked") {
        assert!(
            !body.ends_with(b"0\r\n\r\n"),
            "the chunked body was finished"
        );
    } else {
        assert!(
            body.len() < data.len(),
            "{} of {} bytes delivered: {head}",
            body.len(),
            data.len()
        );
    }
    // The blob is unknown from then on, so the next push repairs it.
    srv.head(format!("/v2/d/blobs/{digest}"))
        .await
        .assert_status(404);
    srv.push_blob("d", &data).await;
    srv.get(format!("/v2/d/blobs/{digest}"))
        .await
        .assert_status(200)
        .assert_body(&data);
}

#[tokio::test(flavor = "multi_thread")]
async fn what_a_crash_left_behind_is_counted_then_removed_at_start() {
    // A data dir of the test's own, to serve again after a stop.
    let keep = tempfile::tempdir().unwrap();
    let data = keep.path().join("data");
    let serve = |data: std::path::PathBuf| {
        Server::start_with(move |c| {
            c.data_dir = data;
            c.background_conversion = false;
        })
    };
    let stats = |data: std::path::PathBuf| async move {
        host::store_stats(&data, &host::GuestSource::Embedded)
            .await
            .unwrap()
    };
    let srv = serve(data.clone()).await;
    let path = session_with(&srv, "crash", b"12345").await;
    // Leftovers of writes cut off by a kill -9.
    std::fs::write(data.join("manifests/.tmp-x-0001"), vec![0u8; 1000]).unwrap();
    std::fs::create_dir_all(data.join("cache")).unwrap();
    std::fs::write(data.join("cache/.tmp-y-0002"), vec![0u8; 24]).unwrap();
    // A session held by a request that died mid-chunk.
    let uuid = path.rsplit('/').next().unwrap().split('?').next().unwrap();
    let session = data.join("uploads").join(uuid);
    let held = session.join("held-99999999999-5-0123456789ab");
    std::fs::rename(session.join("data"), &held).unwrap();
    std::fs::write(&held, b"12345partial").unwrap();
    assert_eq!(stats(data.clone()).await.temporary_bytes, 1024);
    srv.stop().await.unwrap();

    // The same data dir, served again.
    let srv = serve(data.clone()).await;
    srv.assert_alive().await;
    assert_eq!(stats(data.clone()).await.temporary_bytes, 0);
    assert!(!data.join("manifests/.tmp-x-0001").exists());
    // The session is back at its acknowledged size, and finishes.
    srv.get(path.clone())
        .await
        .assert_status(204)
        .assert_header("range", "0-4");
    let digest = sha256_digest(b"12345");
    srv.req(Method::PUT, with_digest(&path, &digest))
        .send()
        .await
        .assert_status(201);
    srv.get(format!("/v2/crash/blobs/{digest}"))
        .await
        .assert_body(b"12345");
}

/// A small tmpfs, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: std::path::PathBuf, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(&dir).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk(dir))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_is_a_server_error_and_the_session_stays_resumable() {
    let mnt = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(mnt.path().join("disk"), "4m") else {
        // Mounting needs root (as the test command runs); say so loudly.
        eprintln!("SKIPPED: cannot mount a tmpfs (not root?)");
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI runs as root and must run this test"
        );
        return;
    };
    let data_dir = disk.0.join("data");
    let srv = Server::start_with(|c| {
        c.data_dir = data_dir.clone();
        c.background_conversion = false;
    })
    .await;
    let first = seeded_bytes(11, 1_000_000);
    let path = session_with(&srv, "full", &first).await;
    // More than the disk holds.
    let resp = srv
        .req(Method::PATCH, path.clone())
        .body(seeded_bytes(12, 6_000_000))
        .send()
        .await;
    assert!(
        resp.status.is_server_error(),
        "a full disk is the server's problem: {}",
        resp.describe()
    );
    assert_eq!(codes(&resp), ["UNKNOWN"]);
    assert!(
        resp.json()["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("full")),
        "{}",
        resp.describe()
    );
    // Nothing of the failed chunk was kept: the session resumes where it was.
    srv.get(path.clone())
        .await
        .assert_status(204)
        .assert_header("range", &format!("0-{}", first.len() - 1));
    let rest = seeded_bytes(13, 100_000);
    let resp = srv
        .req(
            Method::PUT,
            with_digest(
                &path,
                &sha256_digest(&[first.clone(), rest.clone()].concat()),
            ),
        )
        .body(rest.clone())
        .send()
        .await;
    resp.assert_status(201);
    srv.stop().await.unwrap();
    drop(disk);
}

/// A stop (what SIGTERM triggers) in the middle of an upload: the PATCH
/// whose body is still arriving is finished and acknowledged, new
/// connections are refused, and after a restart on the same data every
/// acknowledged byte is there — the session resumes at its acknowledged
/// size and completes, the blob pushed before the stop pulls back.
#[tokio::test(flavor = "multi_thread")]
async fn a_stop_during_an_upload_loses_nothing_acknowledged() {
    let keep = tempfile::tempdir().unwrap();
    let data = keep.path().join("data");
    let serve = |data: std::path::PathBuf| {
        Server::start_with(move |c| {
            c.data_dir = data;
        })
    };
    let srv = serve(data.clone()).await;
    let pushed = seeded_bytes(21, 300_000);
    let pushed_digest = srv.push_blob("stop/me", &pushed).await;
    let first = seeded_bytes(22, 70_000);
    let path = session_with(&srv, "stop/me", &first).await;

    // A second chunk is on its way when the stop comes.
    let second = seeded_bytes(23, 50_000);
    let mut patch = open_chunked_patch(&srv, &path).await;
    patch
        .write_all(format!("{:x}\r\n", 20_000).as_bytes())
        .await
        .unwrap();
    patch.write_all(&second[..20_000]).await.unwrap();
    patch.write_all(b"\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let addr = srv.addr();
    let stopping = tokio::spawn(srv.stop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // No new connection is served once the stop began.
    if let Ok(Ok(mut late)) =
        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await
    {
        let _ = late
            .write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let (status, text) = read_response(&mut late).await;
        assert_eq!(
            status, 0,
            "a connection made after the stop was served: {text}"
        );
    }
    assert!(
        !stopping.is_finished(),
        "the stop did not wait for the PATCH"
    );
    let rest = &second[20_000..];
    patch
        .write_all(format!("{:x}\r\n", rest.len()).as_bytes())
        .await
        .unwrap();
    patch.write_all(rest).await.unwrap();
    patch.write_all(b"\r\n0\r\n\r\n").await.unwrap();
    let (status, text) = read_response(&mut patch).await;
    assert_eq!(status, 202, "the PATCH in flight was not finished: {text}");
    let acknowledged = first.len() + second.len();
    assert!(
        text.to_ascii_lowercase()
            .contains(&format!("range: 0-{}", acknowledged - 1)),
        "{text}"
    );
    stopping.await.unwrap().unwrap();

    let srv = serve(data.clone()).await;
    srv.get(format!("/v2/stop/me/blobs/{pushed_digest}"))
        .await
        .assert_status(200)
        .assert_body(&pushed);
    srv.get(path.clone())
        .await
        .assert_status(204)
        .assert_header("range", &format!("0-{}", acknowledged - 1));
    let last = seeded_bytes(24, 10_000);
    let whole = [first, second, last.clone()].concat();
    let digest = sha256_digest(&whole);
    srv.req(Method::PUT, with_digest(&path, &digest))
        .body(last)
        .send()
        .await
        .assert_status(201);
    srv.get(format!("/v2/stop/me/blobs/{digest}"))
        .await
        .assert_status(200)
        .assert_body(&whole);
    srv.stop().await.unwrap();
}

/// `blockreg check` (`host::store_check`): a store after pushes and
/// conversion is clean with every blob read back to its digest; a byte
/// flipped in a pack is found, the blob it breaks is named, and the check
/// changes nothing (the damaged pack stays for an operator to look at).
#[tokio::test(flavor = "multi_thread")]
async fn the_integrity_check_finds_a_flipped_byte_and_changes_nothing() {
    let srv = Server::start().await;
    srv.push_image("check/app", "v1", Flavor::Docker, 51).await;
    srv.push_image("check/app", "v2", Flavor::Oci, 52).await;
    let stats = srv.wait_converted().await;
    let check = |read_data: bool| {
        let data = srv.data_dir();
        async move {
            host::store_check(&data, &host::GuestSource::Embedded, read_data, || {})
                .await
                .unwrap()
        }
    };
    let clean = check(true).await;
    assert!(clean.is_clean(), "{clean:?}");
    assert_eq!(clean.blobs, stats.blobs, "{clean:?}");
    assert_eq!(clean.blocks, stats.blocks, "{clean:?}");
    assert_eq!(
        (
            clean.manifests,
            clean.bad_manifests,
            clean.unreferenced_blobs
        ),
        (2, 0, 0),
        "{clean:?}"
    );
    assert!(clean.bytes_read >= stats.logical_bytes, "{clean:?}");

    let packs = srv.data_dir().join("blocks").join("packs");
    let pack = std::fs::read_dir(&packs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "pack"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .expect("a pack");
    let mut bytes = std::fs::read(&pack).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    std::fs::write(&pack, &bytes).unwrap();

    let damaged = check(true).await;
    assert!(!damaged.is_clean(), "{damaged:?}");
    assert!(damaged.bad_blocks >= 1, "{damaged:?}");
    assert!(damaged.bad_blobs >= 1, "{damaged:?}");
    assert!(
        damaged
            .problems
            .iter()
            .any(|p| p.starts_with("blob sha256:")),
        "{:?}",
        damaged.problems
    );
    assert_eq!(std::fs::read(&pack).unwrap(), bytes, "the check wrote");
}
