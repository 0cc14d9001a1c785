//! Path traversal through every part of a URL that could become a file
//! name: repository names, tags, upload session ids, digests and the mount
//! source. Each attempt must get a 4xx, and nothing may appear outside the
//! data dir: the temp dir holds only `data/` and the empty sibling
//! `outside/` that the attacks aim at.

use hyper::Method;
use tests::{image_manifest, media, sha256_digest, walk_entries, Flavor, Server};

/// Asserts nothing was created next to or above the data dir, and that no
/// repository appeared from an attack.
async fn assert_confined(srv: &Server) {
    let outside = walk_entries(&srv.outside_dir());
    assert!(
        outside.is_empty(),
        "created in the sibling dir: {outside:?}"
    );
    let mut top: Vec<String> = std::fs::read_dir(srv.root_dir())
        .expect("read temp dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, ["data", "outside"], "created next to the data dir");
    let evil: Vec<_> = walk_entries(&srv.data_dir())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("evil"))
        .collect();
    assert!(
        evil.is_empty(),
        "attack names stored in the data dir: {evil:?}"
    );
    srv.assert_alive().await;
    let catalog = srv.get("/v2/_catalog").await;
    catalog.assert_status(200);
    let text = String::from_utf8_lossy(&catalog.body).into_owned();
    assert!(
        !text.contains("evil") && !text.contains(".."),
        "catalog: {text}"
    );
}

#[track_caller]
fn assert_4xx(resp: &tests::Resp) {
    assert!(
        resp.status.is_client_error(),
        "traversal not refused\n{}",
        resp.describe()
    );
}

/// Repository names that try to leave `data/`, as written in a path.
const EVIL_NAMES: &[&str] = &[
    "..%2F..%2Foutside%2Fevil",
    "..%2f..%2foutside%2fevil",
    "a/%2e%2e/%2e%2e/%2e%2e/outside/evil",
    "%2e%2e/%2e%2e/outside/evil",
    "a%2F..%2F..%2F..%2Foutside%2Fevil",
    "a/..%5C..%5Coutside%5Cevil",
    "%252e%252e/%252e%252e/outside/evil",
    "..%00/evil",
];

#[tokio::test(flavor = "multi_thread")]
async fn traversal_in_repository_names_is_refused() {
    let srv = Server::start().await;
    let digest = sha256_digest(b"evil");
    for name in EVIL_NAMES {
        assert_4xx(
            &srv.req(Method::POST, format!("/v2/{name}/blobs/uploads/"))
                .send()
                .await,
        );
        assert_4xx(
            &srv.req(
                Method::POST,
                format!("/v2/{name}/blobs/uploads/?digest={digest}"),
            )
            .body(b"evil".to_vec())
            .send()
            .await,
        );
        assert_4xx(&srv.get(format!("/v2/{name}/tags/list")).await);
        assert_4xx(&srv.get(format!("/v2/{name}/blobs/{digest}")).await);
        assert_4xx(&srv.get(format!("/v2/{name}/manifests/latest")).await);
        assert_4xx(
            &srv.put_manifest(
                name,
                "latest",
                media::OCI_MANIFEST,
                b"{\"schemaVersion\":2}",
            )
            .await,
        );
    }
    assert_confined(&srv).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn literal_dot_dot_segments_are_refused() {
    // Sent as written: hyper does not normalise the path. Each one escapes
    // `/v2/` if a server resolved it, so no reading of it is a valid route.
    let srv = Server::start().await;
    let digest = sha256_digest(b"evil");
    let paths = [
        (
            Method::POST,
            "/v2/a/../../outside/evil/blobs/uploads/".to_string(),
        ),
        (
            Method::POST,
            format!("/v2/../../outside/evil/blobs/uploads/?digest={digest}"),
        ),
        (
            Method::GET,
            "/v2/../../../outside/evil/tags/list".to_string(),
        ),
        (
            Method::PUT,
            "/v2/a/../../../outside/evil/manifests/latest".to_string(),
        ),
    ];
    for (method, path) in paths {
        assert_4xx(&srv.req(method, path).body(b"evil".to_vec()).send().await);
    }
    assert_confined(&srv).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn backslashes_in_request_paths_are_refused() {
    // The `http` crate will not build these URIs, so they go out raw.
    let srv = Server::start().await;
    let requests = [
        "POST /v2/a\\..\\..\\..\\outside\\evil/blobs/uploads/ HTTP/1.1\r\n",
        "GET /v2/..\\..\\outside\\evil/tags/list HTTP/1.1\r\n",
        "PUT /v2/a/manifests/..\\..\\..\\..\\outside\\evil HTTP/1.1\r\n",
        "PATCH /v2/a/blobs/uploads/..\\..\\..\\outside\\evil HTTP/1.1\r\n",
    ];
    for line in requests {
        let request = format!(
            "{line}Host: {}\r\nContent-Length: 4\r\nConnection: close\r\n\r\nevil",
            srv.addr()
        );
        let (status, text) = srv.raw(request.as_bytes()).await;
        assert!((400..500).contains(&status), "{line:?} got {text}");
    }
    assert_confined(&srv).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn traversal_in_tags_is_refused() {
    let srv = Server::start().await;
    let (config, layers) = srv.push_image_blobs("ok", Flavor::Oci, 1).await;
    let body = image_manifest(Flavor::Oci, &config, &layers);
    let tags = [
        "..",
        "..%2F..%2F..%2F..%2Foutside%2Fevil",
        "%2e%2e",
        "%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2foutside%2fevil",
        "..%5C..%5C..%5C..%5Coutside%5Cevil",
        "evil%00",
        ".evil",
    ];
    for tag in tags {
        assert_4xx(
            &srv.put_manifest("ok", tag, media::OCI_MANIFEST, &body)
                .await,
        );
        let get = srv.get(format!("/v2/ok/manifests/{tag}")).await;
        assert_4xx(&get);
    }
    // Tags with a literal `..` segment after the reference.
    assert_4xx(
        &srv.put_manifest(
            "ok",
            "x/../../../../outside/evil",
            media::OCI_MANIFEST,
            &body,
        )
        .await,
    );
    assert_confined(&srv).await;
    // The repository itself still works.
    srv.push_manifest("ok", "fine", media::OCI_MANIFEST, &body)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn traversal_in_upload_session_ids_is_refused() {
    let srv = Server::start().await;
    srv.start_upload("ok").await;
    let digest = sha256_digest(b"evil");
    let ids = [
        "..",
        "..%2F..%2F..%2F..%2Foutside%2Fevil",
        "%2e%2e%2f%2e%2e%2f%2e%2e%2foutside%2fevil",
        "..%5C..%5C..%5Coutside%5Cevil",
        "../../../../outside/evil",
    ];
    for id in ids {
        let path = format!("/v2/ok/blobs/uploads/{id}");
        assert_4xx(&srv.get(path.clone()).await);
        assert_4xx(
            &srv.req(Method::PATCH, path.clone())
                .body(b"evil".to_vec())
                .send()
                .await,
        );
        assert_4xx(
            &srv.req(Method::PUT, format!("{path}?digest={digest}"))
                .body(b"evil".to_vec())
                .send()
                .await,
        );
        assert_4xx(&srv.req(Method::DELETE, path).send().await);
    }
    assert_confined(&srv).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn traversal_in_digests_is_refused() {
    let srv = Server::start().await;
    srv.push_blob("ok", b"present").await;
    let digests = [
        "sha256:..%2F..%2F..%2F..%2Foutside%2Fevil",
        "..%2F..%2F..%2Foutside%2Fevil",
        "sha256%2F..%2F..%2F..%2Foutside%2Fevil",
        "sha256:%2e%2e",
    ];
    for digest in digests {
        assert_4xx(&srv.get(format!("/v2/ok/blobs/{digest}")).await);
        assert_4xx(&srv.get(format!("/v2/ok/manifests/{digest}")).await);
        assert_4xx(
            &srv.req(
                Method::POST,
                format!("/v2/ok/blobs/uploads/?digest={digest}"),
            )
            .body(b"evil".to_vec())
            .send()
            .await,
        );
    }
    assert_confined(&srv).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn traversal_in_the_mount_source_is_refused() {
    let srv = Server::start().await;
    let digest = srv.push_blob("ok", b"present").await;
    for from in [
        "..%2F..%2Foutside%2Fevil",
        "%2e%2e/%2e%2e/outside/evil",
        "../../outside/evil",
        "ok/../..",
    ] {
        let resp = srv
            .req(
                Method::POST,
                format!("/v2/target/blobs/uploads/?mount={digest}&from={from}"),
            )
            .send()
            .await;
        // Refusing, or falling back to a plain upload session, are both
        // allowed; mounting is not.
        assert!(
            resp.status.is_client_error() || resp.status.as_u16() == 202,
            "{}",
            resp.describe()
        );
        srv.get(format!("/v2/target/blobs/{digest}"))
            .await
            .assert_error(404, &["BLOB_UNKNOWN", "NAME_UNKNOWN"]);
    }
    // `mount` itself as a traversal.
    let resp = srv
        .req(
            Method::POST,
            "/v2/target/blobs/uploads/?mount=..%2F..%2Foutside%2Fevil&from=ok",
        )
        .send()
        .await;
    assert!(
        resp.status.is_client_error() || resp.status.as_u16() == 202,
        "{}",
        resp.describe()
    );
    assert_confined(&srv).await;
}
