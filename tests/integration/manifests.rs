//! `/v2/<name>/manifests/<reference>`: the four manifest types by tag and by
//! digest, byte-exact storage, digest references, references to blobs and
//! manifests that the repository does not hold, invalid bodies, unknown
//! references and retagging.

use hyper::Method;
use tests::{
    image_blobs, image_manifest, index_manifest, location_path, media, sha256_digest, Described,
    Descriptor, Flavor, Pushed, Server,
};

/// Asserts GET and HEAD by tag (if any) and by digest serve `pushed` exactly.
async fn assert_served(srv: &Server, repo: &str, tag: Option<&str>, pushed: &Pushed) {
    let mut references = vec![pushed.digest.clone()];
    references.extend(tag.map(str::to_string));
    for reference in references {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let get = srv
            .req(Method::GET, path.clone())
            .header("accept", media::ACCEPT_ALL)
            .send()
            .await;
        get.assert_status(200)
            .assert_header("content-type", pushed.media_type)
            .assert_header("docker-content-digest", &pushed.digest)
            .assert_content_length(pushed.body.len())
            .assert_body(&pushed.body);

        let head = srv
            .req(Method::HEAD, path)
            .header("accept", media::ACCEPT_ALL)
            .send()
            .await;
        head.assert_status(200)
            .assert_header("content-type", pushed.media_type)
            .assert_header("docker-content-digest", &pushed.digest)
            .assert_content_length(pushed.body.len());
        assert!(head.body.is_empty(), "{}", head.describe());
    }
}

/// PUTs and checks the 201 response: digest of the exact body, and a
/// `Location` that serves the manifest.
async fn put_and_check(
    srv: &Server,
    repo: &str,
    reference: &str,
    media_type: &'static str,
    body: &[u8],
) -> Pushed {
    let resp = srv.put_manifest(repo, reference, media_type, body).await;
    let digest = sha256_digest(body);
    resp.assert_status(201)
        .assert_header("docker-content-digest", &digest);
    let location = location_path(resp.expect_header("location"));
    assert!(
        location == format!("/v2/{repo}/manifests/{digest}")
            || location == format!("/v2/{repo}/manifests/{reference}"),
        "Location {location}\n{}",
        resp.describe()
    );
    srv.get(location).await.assert_status(200).assert_body(body);
    Pushed {
        digest,
        body: body.to_vec(),
        media_type,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_schema2_manifest_is_stored_and_served_by_tag_and_digest() {
    let srv = Server::start().await;
    let (config, layers) = srv.push_image_blobs("docker/img", Flavor::Docker, 1).await;
    let body = image_manifest(Flavor::Docker, &config, &layers);
    let pushed = put_and_check(&srv, "docker/img", "v1", media::DOCKER_MANIFEST, &body).await;
    assert_served(&srv, "docker/img", Some("v1"), &pushed).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oci_image_manifest_is_stored_and_served_by_tag_and_digest() {
    let srv = Server::start().await;
    let (config, layers) = srv.push_image_blobs("oci/img", Flavor::Oci, 2).await;
    let body = image_manifest(Flavor::Oci, &config, &layers);
    let pushed = put_and_check(&srv, "oci/img", "1.0", media::OCI_MANIFEST, &body).await;
    assert_served(&srv, "oci/img", Some("1.0"), &pushed).await;
}

/// Pushes two child images by digest and an index of `flavor` over them.
async fn push_index(srv: &Server, repo: &str, tag: &str, flavor: Flavor) -> Pushed {
    let mut children = Vec::new();
    for seed in [10, 11] {
        let (config, layers) = srv.push_image_blobs(repo, flavor, seed).await;
        let body = image_manifest(flavor, &config, &layers);
        let child = put_and_check(
            srv,
            repo,
            &sha256_digest(&body),
            flavor.manifest_type(),
            &body,
        )
        .await;
        children.push(Descriptor::of(flavor.manifest_type(), &child.body));
    }
    let body = index_manifest(flavor, &children);
    put_and_check(srv, repo, tag, flavor.index_type(), &body).await
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_manifest_list_is_stored_and_served() {
    let srv = Server::start().await;
    let pushed = push_index(&srv, "multi/docker", "latest", Flavor::Docker).await;
    assert_served(&srv, "multi/docker", Some("latest"), &pushed).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oci_index_is_stored_and_served() {
    let srv = Server::start().await;
    let pushed = push_index(&srv, "multi/oci", "latest", Flavor::Oci).await;
    assert_served(&srv, "multi/oci", Some("latest"), &pushed).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn manifest_bytes_are_kept_exactly_with_unusual_formatting() {
    let srv = Server::start().await;
    let (config, layers) = srv.push_image_blobs("exact", Flavor::Oci, 3).await;
    // Keys out of the usual order, tabs, CRLF, spaces before colons, a
    // trailing newline, and an annotation with escapes and non-ASCII text.
    let body = format!(
        "{{\r\n\t\"layers\" :[ {{\"size\":{},  \"digest\":\"{}\",\"mediaType\":\"{}\"}},\n\
         {{ \"digest\" : \"{}\" , \"size\" : {} , \"mediaType\" : \"{}\" }} ],\n\
         \"annotations\": {{\"note\": \"caf\\u00e9 \u{2603} \\\"quoted\\\"\"}},\
         \"config\":{{\"digest\":\"{}\",\"mediaType\":\"{}\",\"size\":{}}},   \
         \"mediaType\":\"{}\",\"schemaVersion\"   :   2\n}}\n\n",
        layers[0].size,
        layers[0].digest,
        layers[0].media_type,
        layers[1].digest,
        layers[1].size,
        layers[1].media_type,
        config.digest,
        config.media_type,
        config.size,
        media::OCI_MANIFEST,
    );
    serde_json::from_str::<serde_json::Value>(&body).expect("fixture is valid JSON");
    let pushed = put_and_check(&srv, "exact", "odd", media::OCI_MANIFEST, body.as_bytes()).await;
    assert_served(&srv, "exact", Some("odd"), &pushed).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn put_by_digest_stores_a_body_that_matches_it() {
    let srv = Server::start().await;
    let (config, layers) = srv.push_image_blobs("bydigest", Flavor::Docker, 4).await;
    let body = image_manifest(Flavor::Docker, &config, &layers);
    let digest = sha256_digest(&body);
    let pushed = put_and_check(&srv, "bydigest", &digest, media::DOCKER_MANIFEST, &body).await;
    assert_served(&srv, "bydigest", None, &pushed).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn put_by_digest_with_a_different_body_returns_digest_invalid() {
    let srv = Server::start().await;
    let (config, layers) = srv.push_image_blobs("bydigest", Flavor::Oci, 5).await;
    let body = image_manifest(Flavor::Oci, &config, &layers);
    let claimed = sha256_digest(b"another body");
    srv.put_manifest("bydigest", &claimed, media::OCI_MANIFEST, &body)
        .await
        .assert_error(400, &["DIGEST_INVALID"]);
    for digest in [claimed, sha256_digest(&body)] {
        srv.get(format!("/v2/bydigest/manifests/{digest}"))
            .await
            .assert_error(404, &["MANIFEST_UNKNOWN"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn manifest_naming_a_missing_layer_is_rejected_and_not_stored() {
    let srv = Server::start().await;
    let ((config, config_bytes), layers) = image_blobs(Flavor::Docker, 6);
    srv.push_blob("missing", &config_bytes).await;
    // Only the first layer is pushed.
    srv.push_blob("missing", &layers[0].1).await;
    let descs: Vec<_> = layers.iter().map(|l| l.0.clone()).collect();
    let body = image_manifest(Flavor::Docker, &config, &descs);
    srv.put_manifest("missing", "v1", media::DOCKER_MANIFEST, &body)
        .await
        .assert_error(400, &["MANIFEST_BLOB_UNKNOWN"]);
    srv.get("/v2/missing/manifests/v1")
        .await
        .assert_error(404, &["MANIFEST_UNKNOWN"]);
    srv.get(format!("/v2/missing/manifests/{}", sha256_digest(&body)))
        .await
        .assert_error(404, &["MANIFEST_UNKNOWN"]);
}

/// An OCI manifest whose second layer is non-distributable: it names URLs
/// to fetch it from, and its blob is never pushed here.
fn manifest_with_a_foreign_layer(seed: u64) -> (Vec<u8>, Vec<Described>, Described) {
    let ((config, config_bytes), layers) = image_blobs(Flavor::Oci, seed);
    let foreign = b"a layer that lives elsewhere".to_vec();
    let foreign_desc = Descriptor::of(
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        &foreign,
    );
    let mut layer = serde_json::json!({
        "mediaType": foreign_desc.media_type,
        "digest": foreign_desc.digest,
        "size": foreign_desc.size,
    });
    layer["urls"] = serde_json::json!(["https://example.com/layer.tar.gz"]);
    let body = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": config.media_type, "digest": config.digest, "size": config.size},
        "layers": [
            {"mediaType": layers[0].0.media_type, "digest": layers[0].0.digest, "size": layers[0].0.size},
            layer,
        ],
    }))
    .unwrap();
    let mut pushed = vec![(config, config_bytes)];
    pushed.push(layers[0].clone());
    (body, pushed, (foreign_desc, foreign))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_with_a_foreign_layer_is_accepted_without_its_blob() {
    let srv = Server::start().await;
    let (body, blobs, (foreign, _)) = manifest_with_a_foreign_layer(21);
    for (_, bytes) in &blobs {
        srv.push_blob("foreign", bytes).await;
    }
    let pushed = srv
        .push_manifest("foreign", "v1", media::OCI_MANIFEST, &body)
        .await;
    assert_served(&srv, "foreign", Some("v1"), &pushed).await;
    // The layer itself is not here: clients fetch it from its URLs.
    srv.head(format!("/v2/foreign/blobs/{}", foreign.digest))
        .await
        .assert_status(404);
}

#[tokio::test(flavor = "multi_thread")]
async fn refusing_foreign_layers_requires_their_blobs() {
    let srv = Server::start_with(|c| c.settings.accept_foreign_layers = false).await;
    let (body, blobs, (_, foreign_bytes)) = manifest_with_a_foreign_layer(22);
    for (_, bytes) in &blobs {
        srv.push_blob("strict", bytes).await;
    }
    srv.put_manifest("strict", "v1", media::OCI_MANIFEST, &body)
        .await
        .assert_error(400, &["MANIFEST_BLOB_UNKNOWN"]);
    srv.get("/v2/strict/manifests/v1")
        .await
        .assert_error(404, &["MANIFEST_UNKNOWN"]);
    srv.push_blob("strict", &foreign_bytes).await;
    srv.push_manifest("strict", "v1", media::OCI_MANIFEST, &body)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn manifest_naming_a_missing_config_is_rejected_and_not_stored() {
    let srv = Server::start().await;
    let ((config, _), layers) = image_blobs(Flavor::Oci, 7);
    for layer in &layers {
        srv.push_blob("noconfig", &layer.1).await;
    }
    let descs: Vec<_> = layers.iter().map(|l| l.0.clone()).collect();
    let body = image_manifest(Flavor::Oci, &config, &descs);
    srv.put_manifest("noconfig", "v1", media::OCI_MANIFEST, &body)
        .await
        .assert_error(400, &["MANIFEST_BLOB_UNKNOWN"]);
    srv.get("/v2/noconfig/manifests/v1")
        .await
        .assert_error(404, &["MANIFEST_UNKNOWN"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn manifest_naming_blobs_of_another_repository_is_rejected() {
    let srv = Server::start().await;
    let (config, layers) = srv.push_image_blobs("owner", Flavor::Docker, 8).await;
    let body = image_manifest(Flavor::Docker, &config, &layers);
    srv.put_manifest("stranger", "v1", media::DOCKER_MANIFEST, &body)
        .await
        .assert_error(400, &["MANIFEST_BLOB_UNKNOWN"]);
    srv.get("/v2/stranger/manifests/v1")
        .await
        .assert_status(404);
    // The same manifest is fine where the blobs are.
    put_and_check(&srv, "owner", "v1", media::DOCKER_MANIFEST, &body).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn index_naming_a_manifest_not_in_the_repository_is_rejected() {
    let srv = Server::start().await;
    // One child exists in the repo, the other only in another repo.
    let here = srv.push_image("idx", "child", Flavor::Oci, 12).await;
    let there = srv.push_image("elsewhere", "child", Flavor::Oci, 13).await;
    let children = [
        Descriptor::of(media::OCI_MANIFEST, &here.body),
        Descriptor::of(media::OCI_MANIFEST, &there.body),
    ];
    let body = index_manifest(Flavor::Oci, &children);
    srv.put_manifest("idx", "multi", media::OCI_INDEX, &body)
        .await
        .assert_error(400, &["MANIFEST_BLOB_UNKNOWN"]);
    srv.get("/v2/idx/manifests/multi")
        .await
        .assert_error(404, &["MANIFEST_UNKNOWN"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_json_returns_manifest_invalid() {
    let srv = Server::start().await;
    let bodies: [&[u8]; 4] = [
        b"this is not json",
        b"{\"schemaVersion\": 2, \"mediaType\": ",
        b"",
        b"\xff\xfe{}",
    ];
    for (i, body) in bodies.iter().enumerate() {
        let tag = format!("bad{i}");
        srv.put_manifest("invalid", &tag, media::OCI_MANIFEST, body)
            .await
            .assert_error(400, &["MANIFEST_INVALID"]);
        srv.get(format!("/v2/invalid/manifests/{tag}"))
            .await
            .assert_status(404);
    }
    srv.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_tag_or_digest_returns_manifest_unknown() {
    let srv = Server::start().await;
    srv.push_image("known", "v1", Flavor::Oci, 14).await;
    let digest = sha256_digest(b"no such manifest");
    for reference in ["v2", digest.as_str()] {
        let path = format!("/v2/known/manifests/{reference}");
        srv.get(path.clone())
            .await
            .assert_error(404, &["MANIFEST_UNKNOWN"]);
        let head = srv.head(path).await;
        head.assert_status(404);
        assert!(head.body.is_empty());
    }
    // In a repository that does not exist at all, either code is fine.
    srv.get("/v2/no/such/repo/manifests/latest")
        .await
        .assert_error(404, &["MANIFEST_UNKNOWN", "NAME_UNKNOWN"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn pushing_a_tag_again_moves_it_to_the_new_manifest() {
    let srv = Server::start().await;
    let first = srv.push_image("retag", "latest", Flavor::Docker, 15).await;
    let second = srv.push_image("retag", "latest", Flavor::Oci, 16).await;
    assert_ne!(first.digest, second.digest);
    assert_served(&srv, "retag", Some("latest"), &second).await;
    // The old manifest is still there by digest.
    assert_served(&srv, "retag", None, &first).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tag_of_maximum_length_is_accepted() {
    let srv = Server::start().await;
    let tag = format!("_{}", "a.b-c".repeat(26).get(..127).unwrap());
    assert_eq!(tag.len(), 128);
    let pushed = srv.push_image("longtag", &tag, Flavor::Oci, 17).await;
    assert_served(&srv, "longtag", Some(&tag), &pushed).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn manifest_whose_subject_is_not_in_the_repository_is_accepted() {
    // Spec 1.1, Push: a registry MUST accept a manifest whose `subject`
    // names a manifest that does not exist (yet), so referrers can be
    // pushed before the image they refer to.
    let srv = Server::start().await;
    let (config, layers) = srv.push_image_blobs("refs", Flavor::Oci, 18).await;
    let body = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom.v1",
        "config": {"mediaType": config.media_type, "digest": config.digest, "size": config.size},
        "layers": [{"mediaType": layers[0].media_type, "digest": layers[0].digest, "size": layers[0].size}],
        "subject": {
            "mediaType": media::OCI_MANIFEST,
            "digest": sha256_digest(b"an image pushed later"),
            "size": 1234,
        },
    }))
    .unwrap();
    let pushed = put_and_check(
        &srv,
        "refs",
        &sha256_digest(&body),
        media::OCI_MANIFEST,
        &body,
    )
    .await;
    assert_served(&srv, "refs", None, &pushed).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn manifest_of_4_mib_is_accepted() {
    // Spec: "Clients and registries SHOULD expect to support manifest
    // uploads of at least 4 MiB."
    let srv = Server::start().await;
    let (config, layers) = srv.push_image_blobs("large", Flavor::Oci, 19).await;
    let padding = "p".repeat(4 * 1024 * 1024 - 2048);
    let body = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": config.media_type, "digest": config.digest, "size": config.size},
        "layers": layers.iter().map(|l| serde_json::json!({"mediaType": l.media_type, "digest": l.digest, "size": l.size})).collect::<Vec<_>>(),
        "annotations": {"padding": padding},
    }))
    .unwrap();
    assert!(body.len() > 4 * 1024 * 1024 - 2048 && body.len() <= 4 * 1024 * 1024);
    let pushed = put_and_check(&srv, "large", "big", media::OCI_MANIFEST, &body).await;
    assert_served(&srv, "large", Some("big"), &pushed).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn content_type_parameters_are_not_stored() {
    // Spec: registries SHOULD ignore Content-Type parameters on push and
    // SHOULD NOT include parameters when serving.
    let srv = Server::start().await;
    let (config, layers) = srv.push_image_blobs("params", Flavor::Oci, 20).await;
    let body = image_manifest(Flavor::Oci, &config, &layers);
    let resp = srv
        .put_manifest(
            "params",
            "v1",
            &format!("{}; charset=utf-8", media::OCI_MANIFEST),
            &body,
        )
        .await;
    resp.assert_status(201);
    let pushed = Pushed {
        digest: sha256_digest(&body),
        body,
        media_type: media::OCI_MANIFEST,
    };
    assert_served(&srv, "params", Some("v1"), &pushed).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pushes_to_one_tag_leave_it_on_one_of_them() {
    let srv = Server::start().await;
    let mut bodies = Vec::new();
    for seed in [21, 22, 23] {
        let (config, layers) = srv.push_image_blobs("race", Flavor::Docker, seed).await;
        bodies.push(image_manifest(Flavor::Docker, &config, &layers));
    }
    let (a, b, c) = tokio::join!(
        srv.put_manifest("race", "latest", media::DOCKER_MANIFEST, &bodies[0]),
        srv.put_manifest("race", "latest", media::DOCKER_MANIFEST, &bodies[1]),
        srv.put_manifest("race", "latest", media::DOCKER_MANIFEST, &bodies[2]),
    );
    for resp in [a, b, c] {
        resp.assert_status(201);
    }
    let resp = srv.get("/v2/race/manifests/latest").await;
    resp.assert_status(200);
    assert!(
        bodies.iter().any(|b| resp.body == b[..]),
        "{}",
        resp.describe()
    );
    resp.assert_header("docker-content-digest", &sha256_digest(&resp.body));
    for body in &bodies {
        srv.get(format!("/v2/race/manifests/{}", sha256_digest(body)))
            .await
            .assert_status(200)
            .assert_body(body);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn manifest_deletion_is_supported_or_refused_cleanly() {
    // Spec: DELETE answers 202, or 400/405 when deletion is disabled.
    let srv = Server::start().await;
    let pushed = srv.push_image("del", "v1", Flavor::Oci, 24).await;
    for reference in ["v1", pushed.digest.as_str()] {
        let resp = srv
            .req(Method::DELETE, format!("/v2/del/manifests/{reference}"))
            .send()
            .await;
        match resp.status.as_u16() {
            202 => {
                srv.get(format!("/v2/del/manifests/{reference}"))
                    .await
                    .assert_error(404, &["MANIFEST_UNKNOWN"]);
            }
            400 | 405 => {
                resp.assert_error(resp.status.as_u16(), &["UNSUPPORTED"]);
                srv.get(format!("/v2/del/manifests/{reference}"))
                    .await
                    .assert_status(200);
            }
            _ => panic!("expected 202, 400 or 405\n{}", resp.describe()),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn accept_negotiation_follows_registry2() {
    let srv = Server::start().await;
    let oci = srv.push_image("r", "oci", Flavor::Oci, 41).await;
    let docker_only = media::DOCKER_MANIFEST;
    // No Accept, */*, or the stored type: served as stored.
    for accept in [None, Some("*/*"), Some(media::OCI_MANIFEST)] {
        let mut req = srv.req(Method::GET, "/v2/r/manifests/oci");
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        req.send()
            .await
            .assert_status(200)
            .assert_header("docker-content-digest", &oci.digest);
    }
    // A client that reads only Docker manifests is told the OCI one is unknown.
    srv.req(Method::GET, "/v2/r/manifests/oci")
        .header("accept", docker_only)
        .send()
        .await
        .assert_error(404, &["MANIFEST_UNKNOWN"]);

    // A Docker manifest list asked for by a client without list support
    // yields its linux/amd64 image.
    let amd64 = srv.push_image("r", "amd64", Flavor::Docker, 42).await;
    let arm64 = srv.push_image("r", "arm64", Flavor::Docker, 43).await;
    let children = [
        Descriptor::of(media::DOCKER_MANIFEST, &amd64.body),
        Descriptor::of(media::DOCKER_MANIFEST, &arm64.body),
    ];
    let list = index_manifest(Flavor::Docker, &children);
    let pushed = srv
        .push_manifest("r", "multi", media::DOCKER_LIST, &list)
        .await;
    srv.req(Method::GET, "/v2/r/manifests/multi")
        .header("accept", docker_only)
        .send()
        .await
        .assert_status(200)
        .assert_header("content-type", media::DOCKER_MANIFEST)
        .assert_header("docker-content-digest", &amd64.digest)
        .assert_body(&amd64.body);
    srv.req(Method::GET, "/v2/r/manifests/multi")
        .header("accept", media::ACCEPT_ALL)
        .send()
        .await
        .assert_status(200)
        .assert_header("docker-content-digest", &pushed.digest);
}
