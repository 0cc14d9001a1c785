//! Content discovery and management beyond push and pull: the referrers API
//! (`OCI-Subject`, `artifactType` filtering), and `DELETE` of manifests,
//! tags and blobs, including the operator switch that turns deletion off.

use hyper::Method;
use tests::{media, sha256_digest, Flavor, Pushed, Server};

const SIG_TYPE: &str = "application/vnd.example.signature";
const SBOM_TYPE: &str = "application/vnd.example.sbom";

/// Pushes an artifact manifest (empty config, one layer) whose subject is
/// `subject` and whose artifactType is `artifact_type`.
async fn push_referrer(srv: &Server, repo: &str, subject: &Pushed, artifact_type: &str) -> Pushed {
    let empty = b"{}";
    srv.push_blob(repo, empty).await;
    let layer = format!("payload for {artifact_type}").into_bytes();
    srv.push_blob(repo, &layer).await;
    let body = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256_digest(empty), "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": sha256_digest(&layer), "size": layer.len()}],
        "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.body.len()},
        "annotations": {"org.example.kind": artifact_type},
    }))
    .unwrap();
    let resp = srv
        .put_manifest(repo, &sha256_digest(&body), media::OCI_MANIFEST, &body)
        .await;
    resp.assert_status(201)
        .assert_header("oci-subject", &subject.digest);
    Pushed {
        digest: sha256_digest(&body),
        body,
        media_type: media::OCI_MANIFEST,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn referrers_of_a_subject_without_any_is_an_empty_index() {
    let srv = Server::start().await;
    let image = srv.push_image("r", "v1", Flavor::Oci, 1).await;
    let resp = srv.get(format!("/v2/r/referrers/{}", image.digest)).await;
    resp.assert_status(200)
        .assert_header("content-type", media::OCI_INDEX);
    let index = resp.json();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["mediaType"], media::OCI_INDEX);
    assert_eq!(index["manifests"], serde_json::json!([]));
    // A subject that was never pushed has no referrers either, not an error.
    let unknown = sha256_digest(b"never pushed");
    srv.get(format!("/v2/r/referrers/{unknown}"))
        .await
        .assert_status(200);
}

#[tokio::test(flavor = "multi_thread")]
async fn referrers_lists_descriptors_and_filters_by_artifact_type() {
    let srv = Server::start().await;
    let image = srv.push_image("r", "v1", Flavor::Oci, 2).await;
    let sig = push_referrer(&srv, "r", &image, SIG_TYPE).await;
    let sbom = push_referrer(&srv, "r", &image, SBOM_TYPE).await;

    let resp = srv.get(format!("/v2/r/referrers/{}", image.digest)).await;
    resp.assert_status(200);
    assert!(
        resp.header("oci-filters-applied").is_none(),
        "{}",
        resp.describe()
    );
    let manifests = resp.json()["manifests"].as_array().unwrap().clone();
    assert_eq!(manifests.len(), 2);
    let sig_entry = manifests
        .iter()
        .find(|m| m["digest"] == sig.digest.as_str())
        .unwrap();
    assert_eq!(sig_entry["artifactType"], SIG_TYPE);
    assert_eq!(sig_entry["mediaType"], media::OCI_MANIFEST);
    assert_eq!(sig_entry["size"], sig.body.len());
    assert_eq!(sig_entry["annotations"]["org.example.kind"], SIG_TYPE);

    let filtered = srv
        .get(format!(
            "/v2/r/referrers/{}?artifactType={}",
            image.digest, SBOM_TYPE
        ))
        .await;
    filtered
        .assert_status(200)
        .assert_header("oci-filters-applied", "artifactType");
    let only = filtered.json()["manifests"].as_array().unwrap().clone();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0]["digest"], sbom.digest.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_referrer_removes_it_from_the_index() {
    let srv = Server::start().await;
    let image = srv.push_image("r", "v1", Flavor::Oci, 3).await;
    let sig = push_referrer(&srv, "r", &image, SIG_TYPE).await;
    srv.req(Method::DELETE, format!("/v2/r/manifests/{}", sig.digest))
        .send()
        .await
        .assert_status(202);
    let resp = srv.get(format!("/v2/r/referrers/{}", image.digest)).await;
    assert_eq!(resp.json()["manifests"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_manifest_by_digest_removes_it_and_its_tags() {
    let srv = Server::start().await;
    let keep = srv.push_image("r", "keep", Flavor::Docker, 4).await;
    let gone = srv.push_image("r", "gone", Flavor::Docker, 5).await;
    srv.push_manifest("r", "alias", gone.media_type, &gone.body)
        .await;

    let resp = srv
        .req(Method::DELETE, format!("/v2/r/manifests/{}", gone.digest))
        .send()
        .await;
    resp.assert_status(202);
    let get = srv.get(format!("/v2/r/manifests/{}", gone.digest)).await;
    get.assert_error(404, &["MANIFEST_UNKNOWN"]);
    srv.get("/v2/r/manifests/gone").await.assert_status(404);
    let tags = srv.get("/v2/r/tags/list").await.json();
    assert_eq!(tags["tags"], serde_json::json!(["keep"]));
    srv.get(format!("/v2/r/manifests/{}", keep.digest))
        .await
        .assert_status(200);
    // Deleting it again: it is unknown now.
    let again = srv
        .req(Method::DELETE, format!("/v2/r/manifests/{}", gone.digest))
        .send()
        .await;
    again.assert_error(404, &["MANIFEST_UNKNOWN"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_tag_keeps_the_manifest() {
    let srv = Server::start().await;
    let image = srv.push_image("r", "v1", Flavor::Oci, 6).await;
    srv.req(Method::DELETE, "/v2/r/manifests/v1")
        .send()
        .await
        .assert_status(202);
    srv.get("/v2/r/manifests/v1").await.assert_status(404);
    srv.get(format!("/v2/r/manifests/{}", image.digest))
        .await
        .assert_status(200);
    let tags = srv.get("/v2/r/tags/list").await.json();
    assert_eq!(tags["tags"], serde_json::json!([]));
    let unknown = srv.req(Method::DELETE, "/v2/r/manifests/nope").send().await;
    unknown.assert_error(404, &["MANIFEST_UNKNOWN"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_blob_hides_it_from_the_repository_only() {
    let srv = Server::start().await;
    let data = b"shared layer bytes".repeat(500);
    let digest = srv.push_blob("a", &data).await;
    srv.push_blob("b", &data).await;
    srv.req(Method::DELETE, format!("/v2/a/blobs/{digest}"))
        .send()
        .await
        .assert_status(202);
    let get = srv.get(format!("/v2/a/blobs/{digest}")).await;
    get.assert_error(404, &["BLOB_UNKNOWN"]);
    // Another repository holding the same content still serves it whole.
    srv.get(format!("/v2/b/blobs/{digest}"))
        .await
        .assert_status(200)
        .assert_body(&data);
    let again = srv
        .req(Method::DELETE, format!("/v2/a/blobs/{digest}"))
        .send()
        .await;
    again.assert_error(404, &["BLOB_UNKNOWN"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn deletion_disabled_answers_405_unsupported_and_keeps_everything() {
    let srv = Server::start_with(|c| c.settings.delete_enabled = false).await;
    let image = srv.push_image("r", "v1", Flavor::Oci, 7).await;
    let blob = srv.push_blob("r", b"a blob").await;
    for path in [
        format!("/v2/r/manifests/{}", image.digest),
        "/v2/r/manifests/v1".to_string(),
        format!("/v2/r/blobs/{blob}"),
    ] {
        let resp = srv.req(Method::DELETE, path).send().await;
        resp.assert_error(405, &["UNSUPPORTED"]);
    }
    srv.get("/v2/r/manifests/v1").await.assert_status(200);
    srv.get(format!("/v2/r/blobs/{blob}"))
        .await
        .assert_status(200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repository_emptied_by_deletion_leaves_the_catalog() {
    let srv = Server::start().await;
    let image = srv.push_image("gone/soon", "v1", Flavor::Oci, 8).await;
    srv.push_image("stays", "v1", Flavor::Oci, 9).await;
    let catalog = srv.get("/v2/_catalog").await.json();
    assert_eq!(
        catalog["repositories"],
        serde_json::json!(["gone/soon", "stays"])
    );
    srv.req(
        Method::DELETE,
        format!("/v2/gone/soon/manifests/{}", image.digest),
    )
    .send()
    .await
    .assert_status(202);
    let catalog = srv.get("/v2/_catalog").await.json();
    assert_eq!(catalog["repositories"], serde_json::json!(["stays"]));
}
