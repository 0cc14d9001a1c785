//! `GET /v2/<name>/tags/list` and `GET /v2/_catalog`: lexical order, nested
//! repository names, unknown repositories.

use tests::{sha256_digest, Flavor, Server};

#[tokio::test(flavor = "multi_thread")]
async fn tags_list_is_lexically_sorted() {
    let srv = Server::start().await;
    let tags = [
        "v2", "latest", "v10", "1.0", "A_upper", "z", "1.0-rc.1", "_private",
    ];
    for (i, tag) in tags.iter().enumerate() {
        srv.push_image("sorted/app", tag, Flavor::Oci, 100 + i as u64)
            .await;
    }
    let resp = srv.get("/v2/sorted/app/tags/list").await;
    resp.assert_status(200).assert_json_type();
    let mut expected: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    expected.sort();
    assert_eq!(
        resp.json(),
        serde_json::json!({"name": "sorted/app", "tags": expected}),
        "{}",
        resp.describe()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn retagging_does_not_duplicate_a_tag() {
    let srv = Server::start().await;
    srv.push_image("dup", "latest", Flavor::Docker, 1).await;
    srv.push_image("dup", "latest", Flavor::Docker, 2).await;
    srv.push_image("dup", "stable", Flavor::Docker, 2).await;
    let resp = srv.get("/v2/dup/tags/list").await;
    resp.assert_status(200);
    assert_eq!(
        resp.json(),
        serde_json::json!({"name": "dup", "tags": ["latest", "stable"]}),
        "{}",
        resp.describe()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pushing_by_digest_creates_no_tag() {
    let srv = Server::start().await;
    srv.push_image("digestonly", "v1", Flavor::Oci, 3).await;
    let (config, layers) = srv.push_image_blobs("digestonly", Flavor::Oci, 4).await;
    let body = tests::image_manifest(Flavor::Oci, &config, &layers);
    srv.push_manifest(
        "digestonly",
        &sha256_digest(&body),
        tests::media::OCI_MANIFEST,
        &body,
    )
    .await;
    let resp = srv.get("/v2/digestonly/tags/list").await;
    resp.assert_status(200);
    assert_eq!(
        resp.json(),
        serde_json::json!({"name": "digestonly", "tags": ["v1"]}),
        "{}",
        resp.describe()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tags_list_of_an_unknown_repository_returns_name_unknown() {
    let srv = Server::start().await;
    srv.push_image("exists", "v1", Flavor::Oci, 5).await;
    for repo in ["missing", "exists/child", "exist"] {
        srv.get(format!("/v2/{repo}/tags/list"))
            .await
            .assert_error(404, &["NAME_UNKNOWN"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tags_list_works_for_nested_names() {
    let srv = Server::start().await;
    srv.push_image("a/b/c", "deep", Flavor::Docker, 6).await;
    srv.push_image("a/b", "shallow", Flavor::Docker, 7).await;
    let resp = srv.get("/v2/a/b/c/tags/list").await;
    resp.assert_status(200);
    assert_eq!(
        resp.json(),
        serde_json::json!({"name": "a/b/c", "tags": ["deep"]})
    );
    let resp = srv.get("/v2/a/b/tags/list").await;
    resp.assert_status(200);
    assert_eq!(
        resp.json(),
        serde_json::json!({"name": "a/b", "tags": ["shallow"]})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn catalog_lists_repositories_sorted_including_nested_names() {
    let srv = Server::start().await;
    let repos = [
        "zeta",
        "a/b/c",
        "alpha",
        "a/b",
        "a-b",
        "library/ubuntu",
        "my.app_x__y",
    ];
    for (i, repo) in repos.iter().enumerate() {
        srv.push_image(repo, "latest", Flavor::Oci, 200 + i as u64)
            .await;
    }
    let resp = srv.get("/v2/_catalog").await;
    resp.assert_status(200).assert_json_type();
    let mut expected: Vec<String> = repos.iter().map(|r| r.to_string()).collect();
    // Plain byte order: "a-b" < "a/b" < "a/b/c" < "alpha".
    expected.sort();
    assert_eq!(
        resp.json(),
        serde_json::json!({"repositories": expected}),
        "{}",
        resp.describe()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn catalog_of_an_empty_registry_is_empty() {
    let srv = Server::start().await;
    let resp = srv.get("/v2/_catalog").await;
    resp.assert_status(200).assert_json_type();
    assert_eq!(
        resp.json(),
        serde_json::json!({"repositories": []}),
        "{}",
        resp.describe()
    );
}

/// Reads one page of tags: the list, and whether a `Link` header says more.
async fn tags_page(srv: &Server, query: &str) -> (Vec<String>, Option<String>) {
    let resp = srv.get(format!("/v2/paged/tags/list?{query}")).await;
    resp.assert_status(200);
    let json = resp.json();
    assert_eq!(json["name"], "paged", "{}", resp.describe());
    let tags = match &json["tags"] {
        serde_json::Value::Null => Vec::new(),
        value => serde_json::from_value(value.clone()).expect("tags is a list of strings"),
    };
    (tags, resp.header("link").map(str::to_string))
}

/// Asserts a page: exactly `expected` without a `Link` header; with one, a
/// non-empty prefix of it (the spec lets a registry cut a page short then).
#[track_caller]
fn assert_page(page: &(Vec<String>, Option<String>), expected: &[String]) {
    let (tags, link) = page;
    match link {
        None => assert_eq!(tags, expected),
        Some(link) => {
            assert!(link.contains("rel=\"next\""), "Link: {link}");
            assert!(
                !tags.is_empty() && expected.starts_with(tags),
                "{tags:?} vs {expected:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tags_list_paginates_with_n_and_last() {
    let srv = Server::start().await;
    let mut tags: Vec<String> = (0..7).map(|i| format!("t{i}")).collect();
    tags.extend(["A".to_string(), "b".to_string()]);
    for (i, tag) in tags.iter().enumerate() {
        srv.push_image("paged", tag, Flavor::Oci, 300 + i as u64)
            .await;
    }
    tags.sort();

    assert_page(&tags_page(&srv, "n=3").await, &tags[..3]);
    assert_page(
        &tags_page(&srv, &format!("n=3&last={}", tags[2])).await,
        &tags[3..6],
    );
    assert_page(
        &tags_page(&srv, &format!("last={}", tags[6])).await,
        &tags[7..],
    );
    assert_page(&tags_page(&srv, "n=100").await, &tags);
    // `last` need not be an existing tag: what sorts after it is returned.
    assert_page(&tags_page(&srv, "n=2&last=c").await, &tags[2..4]);

    let (empty, link) = tags_page(&srv, "n=0").await;
    assert!(empty.is_empty(), "n=0 returned {empty:?}");
    assert!(link.is_none(), "n=0 must not send a Link header");
}
