//! The host under load (issue 13): slow or idle clients cannot hold guest
//! slots for long, uploads cannot starve reads, and background conversion
//! keeps its pace while requests are open. One client cannot take the
//! service for itself (issue 10): over its request rate or its uploads in
//! flight it gets 429 with `Retry-After`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tests::{gzip_layer, join_all, seeded_bytes, text_bytes, Server};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Opens a connection and sends the head of a chunked `PATCH` to
/// `path`, then `first` as one chunk (if not empty), and nothing more.
async fn stalled_patch(addr: SocketAddr, path: &str, first: &[u8]) -> TcpStream {
    let mut socket = TcpStream::connect(addr).await.expect("connect");
    let mut head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    if !first.is_empty() {
        head.extend_from_slice(format!("{:x}\r\n", first.len()).as_bytes());
        head.extend_from_slice(first);
        head.extend_from_slice(b"\r\n");
    }
    socket.write_all(&head).await.expect("send head");
    socket
}

/// Reads until the server closes `socket`; returns the status and the text.
async fn response_of(socket: &mut TcpStream) -> (u16, String) {
    let mut raw = Vec::new();
    // The server may reset instead of closing once it gave up on the body.
    let _ = socket.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

/// Asserts a host 408: the status and an OCI error body.
#[track_caller]
fn assert_body_timeout(status: u16, text: &str) {
    assert_eq!(status, 408, "{text}");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let json: serde_json::Value = serde_json::from_str(body).expect(text);
    assert!(
        json["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("timed out")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_upload_bodies_neither_block_reads_nor_keep_their_slots() {
    const IDLE: Duration = Duration::from_secs(3);
    let srv = Server::start_with(|config| {
        config.background_conversion = false;
        config.limits.max_concurrency = 4;
        config.limits.body_idle_timeout = IDLE;
        config.limits.min_body_rate = 0;
    })
    .await;
    srv.assert_alive().await;

    // More stalled uploads than there are slots, each with one chunk sent.
    let mut uploads = Vec::new();
    for _ in 0..6 {
        uploads.push(srv.start_upload("idle").await);
    }
    let mut sockets = Vec::new();
    for upload in &uploads {
        sockets.push(stalled_patch(srv.addr(), &upload.path, b"partial chunk").await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Reads have slots of their own.
    let started = Instant::now();
    let read = tokio::time::timeout(Duration::from_millis(1500), srv.get("/v2/")).await;
    assert!(
        read.is_ok_and(|resp| resp.status == 200),
        "GET /v2/ unanswered after {:?} behind stalled uploads",
        started.elapsed()
    );

    // Each stalled body is cut off after the idle timeout: two waves of
    // three write slots.
    let answers = sockets
        .iter_mut()
        .map(|socket| async move { tokio::time::timeout(IDLE * 4, response_of(socket)).await });
    for answer in join_all(answers).await {
        let (status, text) = answer.expect("a stalled body kept its slot");
        assert_body_timeout(status, &text);
    }

    // The partial chunks were dropped, and the sessions still work.
    for upload in &uploads {
        srv.get(upload.path.clone())
            .await
            .assert_status(204)
            .assert_header("range", "0-0");
    }
    let data = seeded_bytes(7, 10_000);
    let digest = srv.push_blob_chunked("idle", &data, 4096).await;
    srv.get(format!("/v2/idle/blobs/{digest}"))
        .await
        .assert_body(&data);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_trickling_below_the_minimum_rate_is_cut_off() {
    let srv = Server::start_with(|config| {
        config.background_conversion = false;
        config.limits.body_idle_timeout = Duration::from_secs(2);
        config.limits.min_body_rate = 1000;
    })
    .await;
    let upload = srv.start_upload("trickle").await;
    let mut socket = stalled_patch(srv.addr(), &upload.path, b"").await;
    // 4 bytes/s: never idle for long, but far below 1000 bytes/s.
    let started = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if socket.write_all(b"1\r\nx\r\n").await.is_err() {
                break;
            }
            let mut byte = [0u8; 1];
            match tokio::time::timeout(Duration::from_millis(250), socket.peek(&mut byte)).await {
                Ok(_) => break,
                Err(_) => continue,
            }
        }
        response_of(&mut socket).await
    })
    .await;
    let (status, text) = outcome.expect("a trickling body kept its slot for 15 s");
    assert_body_timeout(status, &text);
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "cut off after {:?}, before its bank of 2 s ran dry",
        started.elapsed()
    );
    srv.get(upload.path.clone())
        .await
        .assert_status(204)
        .assert_header("range", "0-0");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_head_sent_too_slowly_is_dropped() {
    let srv = Server::start_with(|config| {
        config.background_conversion = false;
        config.limits.header_read_timeout = Duration::from_secs(1);
    })
    .await;
    srv.assert_alive().await;
    let mut socket = TcpStream::connect(srv.addr()).await.expect("connect");
    socket
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("send part of a head");
    let closed = tokio::time::timeout(Duration::from_secs(10), response_of(&mut socket)).await;
    assert!(closed.is_ok(), "a half-sent head kept its connection open");
    srv.assert_alive().await;
}

/// A gzip layer of text-like files of 256 KiB, `len` bytes of content.
fn layer(seed: u64, len: usize) -> Vec<u8> {
    const FILE: usize = 256 * 1024;
    let files: Vec<_> = (0..len.div_ceil(FILE))
        .map(|i| {
            let size = FILE.min(len - i * FILE);
            let content = text_bytes((seed << 16) + i as u64, size);
            (format!("srv/file{i}.txt"), content)
        })
        .collect();
    gzip_layer(&files, 1_700_000_000)
}

/// Pushes `data` and returns how long it took to be converted.
async fn time_to_convert(srv: &Server, repo: &str, data: &[u8]) -> Duration {
    srv.push_blob(repo, data).await;
    let started = Instant::now();
    srv.wait_converted().await;
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn conversion_keeps_its_pace_while_a_request_is_open() {
    let srv = Server::start_with(|config| {
        config.limits.min_body_rate = 0;
        config.limits.body_idle_timeout = Duration::from_secs(600);
    })
    .await;
    const CONTENT: usize = 6 << 20;
    let idle = time_to_convert(&srv, "pace", &layer(1, CONTENT)).await;

    // A client that keeps one request open, trickling a byte at a time.
    let upload = srv.start_upload("slow").await;
    let mut socket = stalled_patch(srv.addr(), &upload.path, b"").await;
    let trickle = tokio::spawn(async move {
        loop {
            if socket.write_all(b"1\r\nx\r\n").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let busy = time_to_convert(&srv, "pace", &layer(2, CONTENT)).await;
    trickle.abort();
    assert!(
        busy < idle * 2 + Duration::from_secs(3),
        "converting took {busy:?} with a request open, {idle:?} without"
    );
}

/// Asserts a host 429 with its `Retry-After` in whole seconds.
#[track_caller]
fn assert_too_many(resp: &tests::Resp, max_wait: u64) {
    resp.assert_error(429, &["TOOMANYREQUESTS"]);
    let wait: u64 = resp
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After: {}", resp.describe()));
    assert!((1..=max_wait).contains(&wait), "{}", resp.describe());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_over_its_request_rate_gets_429_then_is_served_again() {
    let srv = Server::start_with(|config| {
        config.limits.clients.request_rate = 2;
        config.limits.clients.request_burst = 4;
    })
    .await;
    // Wait for the guest without spending the burst.
    tokio::time::sleep(Duration::from_secs(1)).await;
    srv.assert_alive().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Twelve at once: the burst is served, the rest told to wait.
    let answers = join_all((0..12).map(|_| srv.get("/v2/"))).await;
    let mut served = 0;
    for resp in &answers {
        if resp.status == 429 {
            assert_too_many(resp, 1);
        } else {
            resp.assert_status(200);
            served += 1;
        }
    }
    assert!((4..=5).contains(&served), "{served} of 12 served");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    srv.get("/v2/").await.assert_status(200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_over_its_uploads_in_flight_gets_429_and_reads_go_on() {
    let srv = Server::start_with(|config| {
        config.background_conversion = false;
        config.limits.clients.max_uploads = 2;
        config.limits.min_body_rate = 0;
    })
    .await;
    srv.assert_alive().await;
    let first = srv.start_upload("busy").await;
    let second = srv.start_upload("busy").await;
    let mut open = Vec::new();
    for upload in [&first, &second] {
        open.push(stalled_patch(srv.addr(), &upload.path, b"chunk").await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A third write of the same client is refused, reads are not.
    assert_too_many(
        &srv.req(hyper::Method::POST, "/v2/busy/blobs/uploads/")
            .send()
            .await,
        1,
    );
    srv.get("/v2/").await.assert_status(200);
    // One upload ends: the client may write again.
    let mut ended = open.pop().unwrap();
    ended.write_all(b"0\r\n\r\n").await.unwrap();
    let (status, text) = response_of(&mut ended).await;
    assert_eq!(status, 202, "{text}");
    srv.req(hyper::Method::POST, "/v2/busy/blobs/uploads/")
        .send()
        .await
        .assert_status(202);
}
