//! Bad input: malformed digests, names and tags, unsupported methods,
//! garbage headers. Each must get a 4xx with a spec error body
//! (`{"errors":[{"code","message","detail"}]}`), never a 5xx, and the server
//! must go on serving.

use hyper::Method;
use tests::{image_manifest, media, seeded_bytes, sha256_digest, Flavor, Server};

/// Malformed digests: bad hex, wrong length, uppercase hex, unknown or
/// missing algorithm.
fn malformed_digests() -> Vec<String> {
    let good_hex = &sha256_digest(b"x")["sha256:".len()..];
    vec![
        "sha256:totallywrong".to_string(),
        "sha256:abc".to_string(),
        format!("sha256:{good_hex}0"),
        format!("sha256:{}", &good_hex[1..]),
        format!("sha256:{}", good_hex.to_uppercase()),
        "md5:d41d8cd98f00b204e9800998ecf8427e".to_string(),
        format!("sha256{good_hex}"),
        format!(":{good_hex}"),
        "sha256:".to_string(),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_blob_digest_returns_digest_invalid() {
    let srv = Server::start().await;
    srv.push_blob("r", b"something").await;
    for digest in malformed_digests() {
        srv.get(format!("/v2/r/blobs/{digest}"))
            .await
            .assert_error(400, &["DIGEST_INVALID"]);
        srv.head(format!("/v2/r/blobs/{digest}"))
            .await
            .assert_status(400);
    }
    srv.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_digest_when_finishing_an_upload_returns_digest_invalid() {
    let srv = Server::start().await;
    let data = b"payload";
    for digest in malformed_digests() {
        srv.req(
            Method::POST,
            format!("/v2/r/blobs/uploads/?digest={digest}"),
        )
        .body(data.to_vec())
        .send()
        .await
        .assert_error(400, &["DIGEST_INVALID"]);
        let upload = srv.start_upload("r").await;
        srv.req(Method::PUT, upload.with_digest(&digest))
            .body(data.to_vec())
            .send()
            .await
            .assert_error(400, &["DIGEST_INVALID"]);
    }
    assert!(tests::walk_files(&srv.data_dir().join("layers")).is_empty());
    srv.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_manifest_digest_reference_is_rejected() {
    let srv = Server::start().await;
    let (config, layers) = srv.push_image_blobs("r", Flavor::Oci, 1).await;
    let body = image_manifest(Flavor::Oci, &config, &layers);
    // Without a colon, `sha256<hex>` is a valid tag, so only the others.
    for digest in malformed_digests().into_iter().filter(|d| d.contains(':')) {
        // A reference with a colon can only be a digest, so it is invalid
        // input (400), although a GET may also just not find it (404).
        let get = srv.get(format!("/v2/r/manifests/{digest}")).await;
        if get.status.as_u16() == 404 {
            get.assert_error(404, &["MANIFEST_UNKNOWN"]);
        } else {
            get.assert_error(400, &[]);
        }
        srv.put_manifest("r", &digest, media::OCI_MANIFEST, &body)
            .await
            .assert_error(400, &[]);
    }
    srv.assert_alive().await;
}

/// Names the spec's grammar rejects, each as it appears in a path.
fn malformed_names() -> Vec<String> {
    vec![
        "Upper".to_string(),
        "lib/Upper".to_string(),
        "a/../b".to_string(),
        "..".to_string(),
        "/leading".to_string(),
        "trailing/".to_string(),
        "double//slash".to_string(),
        "-dash".to_string(),
        "dash-".to_string(),
        "dot.".to_string(),
        "a___b".to_string(),
        "sp%20ace".to_string(),
        "a".repeat(256),
        format!("{}/{}", "b".repeat(200), "c".repeat(60)),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_repository_names_are_rejected_without_5xx() {
    let srv = Server::start().await;
    let digest = sha256_digest(b"x");
    for name in malformed_names() {
        let requests = [
            (Method::GET, format!("/v2/{name}/tags/list")),
            (Method::POST, format!("/v2/{name}/blobs/uploads/")),
            (Method::GET, format!("/v2/{name}/blobs/{digest}")),
            (Method::GET, format!("/v2/{name}/manifests/latest")),
        ];
        for (method, path) in requests {
            let resp = srv.req(method, path).send().await;
            match resp.status.as_u16() {
                400 => {
                    resp.assert_error(400, &["NAME_INVALID"]);
                }
                // The path may simply not route to any endpoint.
                404 => {
                    resp.assert_error(404, &[]);
                }
                _ => panic!("expected 400 NAME_INVALID or 404\n{}", resp.describe()),
            }
        }
    }
    srv.assert_alive().await;
    // None of them became a repository.
    let catalog = srv.get("/v2/_catalog").await;
    catalog.assert_status(200);
    assert_eq!(catalog.json(), serde_json::json!({"repositories": []}));
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_tags_are_rejected_with_400() {
    let srv = Server::start().await;
    let (config, layers) = srv.push_image_blobs("r", Flavor::Docker, 2).await;
    let body = image_manifest(Flavor::Docker, &config, &layers);
    let tags = [
        "a".repeat(129),
        format!("_{}", "x".repeat(128)),
        "-lead".to_string(),
        ".lead".to_string(),
        "a+b".to_string(),
        "tag!".to_string(),
        "t%20g".to_string(),
        "t%C3%A9".to_string(),
        "t~g".to_string(),
    ];
    for tag in &tags {
        srv.put_manifest("r", tag, media::DOCKER_MANIFEST, &body)
            .await
            .assert_error(400, &[]);
        // A reference that cannot be a tag names nothing (as registry:2 and
        // the OCI conformance suite have it): 404, never 400.
        srv.get(format!("/v2/r/manifests/{tag}"))
            .await
            .assert_error(404, &["MANIFEST_UNKNOWN"]);
        srv.head(format!("/v2/r/manifests/{tag}"))
            .await
            .assert_status(404);
    }
    srv.assert_alive().await;
    // Nothing was tagged.
    let resp = srv.get("/v2/r/tags/list").await;
    resp.assert_not_5xx();
    if resp.status.as_u16() == 200 {
        let listed = resp.json()["tags"].clone();
        assert!(
            listed.is_null() || listed == serde_json::json!([]),
            "tags after rejected pushes: {listed}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unsupported_method_returns_405_unsupported() {
    let srv = Server::start().await;
    let digest = srv.push_blob("r", b"blob").await;
    srv.push_image("r", "latest", Flavor::Oci, 3).await;
    let requests = [
        (Method::PUT, "/v2/".to_string()),
        (Method::POST, "/v2/r/tags/list".to_string()),
        (Method::POST, "/v2/_catalog".to_string()),
        (Method::PATCH, "/v2/r/manifests/latest".to_string()),
        (Method::POST, "/v2/r/manifests/latest".to_string()),
        (Method::PATCH, format!("/v2/r/blobs/{digest}")),
        (Method::PUT, format!("/v2/r/blobs/{digest}")),
    ];
    for (method, path) in requests {
        srv.req(method, path)
            .send()
            .await
            .assert_error(405, &["UNSUPPORTED"]);
    }
    srv.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn method_not_allowed_names_the_allowed_methods() {
    // RFC 9110 15.5.6: "The origin server MUST generate an Allow header
    // field in a 405 response containing a list of the target resource's
    // currently supported methods."
    let srv = Server::start().await;
    let requests = [
        (Method::PUT, "/v2/", "GET"),
        (Method::POST, "/v2/r/tags/list", "GET"),
        (Method::PATCH, "/v2/r/manifests/latest", "PUT"),
    ];
    for (method, path, expected) in requests {
        let resp = srv.req(method, path).send().await;
        resp.assert_status(405);
        let allow = resp.expect_header("allow");
        assert!(
            allow.split(',').any(|m| m.trim() == expected),
            "Allow: {allow} lacks {expected}\n{}",
            resp.describe()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn body_over_the_host_limit_gets_413_size_invalid() {
    let srv = Server::start_with(|config| config.limits.max_body_bytes = 64 * 1024).await;
    let big = seeded_bytes(5, 100 * 1024);
    let digest = sha256_digest(&big);
    srv.req(
        Method::POST,
        format!("/v2/r/blobs/uploads/?digest={digest}"),
    )
    .body(big.clone())
    .send()
    .await
    .assert_error(413, &["SIZE_INVALID"]);
    let upload = srv.start_upload("r").await;
    srv.req(Method::PATCH, upload.path.clone())
        .chunked(big.chunks(16 * 1024).map(<[u8]>::to_vec).collect())
        .send()
        .await
        .assert_error(413, &["SIZE_INVALID"]);
    srv.get(format!("/v2/r/blobs/{digest}"))
        .await
        .assert_error(404, &["BLOB_UNKNOWN"]);
    assert!(!srv.recipe_path(&digest).exists());
    // Bodies under the limit still go through.
    let small = seeded_bytes(6, 60 * 1024);
    srv.push_blob("r", &small).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_range_headers_never_cause_5xx() {
    let srv = Server::start().await;
    let data = seeded_bytes(4, 10_000);
    let digest = srv.push_blob("r", &data).await;
    for range in [
        "bytes=zz",
        "bytes=5-1",
        "bytes=-",
        "items=0-5",
        "bytes=0-1,5-9",
        "bytes=99999999999999999999-",
    ] {
        let resp = srv
            .req(Method::GET, format!("/v2/r/blobs/{digest}"))
            .header("range", range)
            .send()
            .await;
        resp.assert_not_5xx();
        // Either ignored (whole blob) or refused; never a wrong slice.
        if resp.status.as_u16() == 200 {
            resp.assert_body(&data);
        }
    }
    srv.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_content_range_on_patch_is_refused_without_5xx() {
    let srv = Server::start().await;
    let upload = srv.start_upload("r").await;
    for content_range in [
        "garbage",
        "5-1",
        "0-",
        "-5",
        "bytes 0-9/10",
        "0-99999999999999999999",
    ] {
        let resp = srv
            .req(Method::PATCH, upload.path.clone())
            .header("content-range", content_range)
            .body(b"0123456789".to_vec())
            .send()
            .await;
        resp.assert_not_5xx();
        assert!(
            resp.status.is_client_error() || resp.status.as_u16() == 202,
            "{}",
            resp.describe()
        );
        if resp.status.is_client_error() {
            resp.assert_empty_or_error_body();
        }
    }
    srv.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_paths_return_404_with_an_error_body() {
    let srv = Server::start().await;
    for path in ["/v2/r/nonsense", "/v2/_catalog/extra", "/v3/", "/"] {
        let resp = srv.get(path).await;
        resp.assert_not_5xx();
        assert_eq!(resp.status.as_u16(), 404, "{}", resp.describe());
        resp.assert_empty_or_error_body();
    }
    srv.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn error_bodies_carry_code_message_and_detail() {
    let srv = Server::start().await;
    srv.push_blob("r", b"makes r exist").await;
    let cases = [
        (
            srv.get(format!("/v2/r/blobs/{}", sha256_digest(b"none")))
                .await,
            404,
            "BLOB_UNKNOWN",
        ),
        (
            srv.get("/v2/r/manifests/none").await,
            404,
            "MANIFEST_UNKNOWN",
        ),
        (srv.get("/v2/ghost/tags/list").await, 404, "NAME_UNKNOWN"),
        (
            srv.get("/v2/r/blobs/sha256:zz").await,
            400,
            "DIGEST_INVALID",
        ),
        (
            srv.get("/v2/r/blobs/uploads/none").await,
            404,
            "BLOB_UPLOAD_UNKNOWN",
        ),
    ];
    for (resp, status, code) in cases {
        // `manifests/none` may also be reported as an unknown name.
        let codes: &[&str] = if code == "MANIFEST_UNKNOWN" {
            &[code, "NAME_UNKNOWN"]
        } else {
            &[code]
        };
        resp.assert_error(status, codes);
        let error = &resp.json()["errors"][0];
        assert!(
            !error["message"].as_str().unwrap().is_empty(),
            "{}",
            resp.describe()
        );
    }
}
