//! Garbage collection (issue 9): what a user notices. A deleted image's
//! own blobs go and the store shrinks, while what another image shares
//! stays and pulls byte for byte; blobs pushed within the grace period
//! stay; a dry run changes nothing; `blockreg gc` runs as a separate
//! process beside a serving server, pushes and pulls going on; the server
//! collects in the background; retention rules remove tags; the server
//! refuses a grace period a push could outlast. And the store lock on the
//! data directory: conversion waits while it is held exclusive (a
//! collection), a collection and the recovery at start wait for it.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;
use tests::{image_manifest, media, seeded_bytes, Descriptor, Flavor, Server, REQUEST_TIMEOUT};

/// Layers above the guest's small-blob limit (1 MiB): each is converted
/// alone into a pack of its own, which a collection removes whole.
const LAYER: usize = 1_536 * 1024;

/// A test image: its config and layers (descriptor and bytes), and the
/// manifest that names them.
struct Image {
    config: (Descriptor, Vec<u8>),
    layers: Vec<(Descriptor, Vec<u8>)>,
    manifest: Vec<u8>,
    digest: String,
}

impl Image {
    /// An image with a config unique to `seed` and `layers`.
    fn new(seed: u64, layers: Vec<Vec<u8>>) -> Image {
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"seed": seed.to_string()}},
        }))
        .unwrap();
        let config = (Descriptor::of(media::OCI_CONFIG, &config), config);
        let layers: Vec<_> = layers
            .into_iter()
            .map(|l| (Descriptor::of(media::OCI_LAYER, &l), l))
            .collect();
        let descriptors: Vec<_> = layers.iter().map(|l| l.0.clone()).collect();
        let manifest = image_manifest(Flavor::Oci, &config.0, &descriptors);
        let digest = tests::sha256_digest(&manifest);
        Image {
            config,
            layers,
            manifest,
            digest,
        }
    }

    /// Every blob: config first.
    fn blobs(&self) -> impl Iterator<Item = &(Descriptor, Vec<u8>)> {
        std::iter::once(&self.config).chain(&self.layers)
    }

    /// Pushes the blobs and the manifest as `repo:tag`.
    async fn push(&self, srv: &Server, repo: &str, tag: &str) {
        for (_, bytes) in self.blobs() {
            srv.push_blob(repo, bytes).await;
        }
        srv.push_manifest(repo, tag, media::OCI_MANIFEST, &self.manifest)
            .await;
    }

    /// Asserts the manifest by `tag` and every blob read back exactly.
    async fn assert_pulls(&self, srv: &Server, repo: &str, tag: &str) {
        srv.get(format!("/v2/{repo}/manifests/{tag}"))
            .await
            .assert_status(200)
            .assert_body(&self.manifest);
        for (d, bytes) in self.blobs() {
            srv.get(format!("/v2/{repo}/blobs/{}", d.digest))
                .await
                .assert_status(200)
                .assert_body(bytes);
        }
    }
}

/// Two images sharing a layer, each with a layer and a config of its own.
fn two_images_sharing_a_layer() -> (Image, Image, Vec<u8>) {
    let shared = seeded_bytes(900, LAYER);
    let a = Image::new(1, vec![shared.clone(), seeded_bytes(901, LAYER)]);
    let b = Image::new(2, vec![shared.clone(), seeded_bytes(902, LAYER)]);
    (a, b, shared)
}

/// A server without background collection (the tests run their own).
async fn server() -> Server {
    let srv = Server::start_with(|config| config.gc.enabled = false).await;
    srv.assert_alive().await;
    srv
}

/// What `blockreg gc` runs with over `srv`'s data dir: the defaults plus
/// `adjust`.
fn gc_config(srv: &Server, adjust: impl FnOnce(&mut host::GarbageCollection)) -> host::ServeConfig {
    let mut config = host::ServeConfig::new(srv.data_dir());
    adjust(&mut config.gc);
    config
}

/// One collection of `srv`'s store, in this process (as `blockreg gc`
/// runs it).
async fn collect(
    srv: &Server,
    adjust: impl FnOnce(&mut host::GarbageCollection),
) -> host::Collection {
    let config = gc_config(srv, adjust);
    tokio::time::timeout(REQUEST_TIMEOUT, host::collect_garbage(&config, || {}))
        .await
        .expect("collection timed out")
        .expect("collection")
}

async fn delete_manifest(srv: &Server, repo: &str, digest: &str) {
    srv.req(Method::DELETE, format!("/v2/{repo}/manifests/{digest}"))
        .send()
        .await
        .assert_status(202);
}

/// The blob digests of `image` not in `other`.
fn own_blobs<'a>(image: &'a Image, other: &Image) -> Vec<&'a (Descriptor, Vec<u8>)> {
    image
        .blobs()
        .filter(|(d, _)| other.blobs().all(|(o, _)| o.digest != d.digest))
        .collect()
}

/// Runs the `blockreg` command (built from the host's `main.rs`).
async fn blockreg(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_blockreg-under-test"))
            .args(&args)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run blockreg")
    })
    .await
    .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_images_own_blobs_go_and_what_another_image_shares_stays() {
    let srv = server().await;
    let (a, b, shared) = two_images_sharing_a_layer();
    a.push(&srv, "app", "a").await;
    b.push(&srv, "app", "b").await;
    let before = srv.wait_converted().await;
    assert_eq!(before.unreferenced_blobs, 0, "{before:?}");

    delete_manifest(&srv, "app", &a.digest).await;
    let gone = own_blobs(&a, &b);
    assert_eq!(gone.len(), 2, "a's config and its own layer");
    let gone_bytes: u64 = gone.iter().map(|(d, _)| d.size).sum();
    let unreferenced = srv.stats().await;
    assert_eq!(unreferenced.unreferenced_blobs, 2, "{unreferenced:?}");
    assert_eq!(unreferenced.unreferenced_bytes, gone_bytes);

    let c = collect(&srv, |gc| gc.grace = Duration::ZERO).await;
    assert!(!c.dry_run);
    assert_eq!(c.blobs_removed, 2, "{c:?}");
    assert_eq!(c.blob_bytes_removed, gone_bytes, "{c:?}");
    assert!(
        c.packs_removed >= 1,
        "a's layer had a pack of its own: {c:?}"
    );

    for (d, _) in &gone {
        srv.get(format!("/v2/app/blobs/{}", d.digest))
            .await
            .assert_error(404, &["BLOB_UNKNOWN"]);
    }
    srv.get(format!("/v2/app/manifests/{}", a.digest))
        .await
        .assert_error(404, &["MANIFEST_UNKNOWN"]);
    b.assert_pulls(&srv, "app", "b").await;
    srv.get(format!("/v2/app/blobs/{}", tests::sha256_digest(&shared)))
        .await
        .assert_status(200)
        .assert_body(&shared);

    let after = srv.stats().await;
    assert!(
        after.stored_bytes + LAYER as u64 <= before.stored_bytes,
        "stored bytes fell by at least a's own layer: {} -> {}",
        before.stored_bytes,
        after.stored_bytes
    );
    assert_eq!(c.stored_bytes_before, before.stored_bytes, "{c:?}");
    assert_eq!(c.stored_bytes_after, after.stored_bytes, "{c:?}");
    assert_eq!(after.blobs, before.blobs - 2);
    assert_eq!(after.unreferenced_blobs, 0);
    assert_eq!(c.removed.blobs.len(), 2, "{c:?}");
    let mut without_names = c.clone();
    without_names.removed.blobs.clear();
    assert_eq!(
        after.last_collection.as_ref(),
        Some(&without_names),
        "stats tell the last collection (its figures, not its names)"
    );
    srv.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_default_grace_keeps_a_blob_whose_manifest_has_not_arrived() {
    let srv = server().await;
    let waiting = seeded_bytes(910, 40_000);
    let digest = srv.push_blob("app", &waiting).await;
    let image = Image::new(3, vec![seeded_bytes(911, 20_000)]);
    image.push(&srv, "app", "kept").await;
    srv.wait_converted().await;

    let c = collect(&srv, |_| {}).await;
    assert_eq!(c.blobs_removed, 0, "{c:?}");
    assert!(c.blobs_kept_recent >= 1, "{c:?}");
    srv.get(format!("/v2/app/blobs/{digest}"))
        .await
        .assert_status(200)
        .assert_body(&waiting);
    // Its manifest comes now, and finds it.
    let late = Image::new(4, vec![waiting.clone()]);
    srv.push_blob("app", &late.config.1).await;
    srv.push_manifest("app", "late", media::OCI_MANIFEST, &late.manifest)
        .await;
    late.assert_pulls(&srv, "app", "late").await;
    image.assert_pulls(&srv, "app", "kept").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_reports_what_would_go_and_changes_nothing() {
    let srv = server().await;
    let (a, b, _) = two_images_sharing_a_layer();
    a.push(&srv, "app", "a").await;
    b.push(&srv, "app", "b").await;
    srv.wait_converted().await;
    delete_manifest(&srv, "app", &a.digest).await;
    let before = srv.stats().await;
    let mut files_before = tests::walk_files(&srv.data_dir());
    files_before.sort();

    let dry = collect(&srv, |gc| {
        gc.grace = Duration::ZERO;
        gc.dry_run = true;
    })
    .await;
    assert!(dry.dry_run);
    assert_eq!(dry.blobs_removed, 2, "{dry:?}");
    let mut own: Vec<String> = own_blobs(&a, &b)
        .iter()
        .map(|(d, _)| d.digest.clone())
        .collect();
    own.sort();
    let mut named = dry.removed.blobs.clone();
    named.sort();
    assert_eq!(named, own, "the dry run names a's own blobs");
    let mut files_after = tests::walk_files(&srv.data_dir());
    // The record of the last collection may be the one file written.
    files_after.retain(|f| files_before.iter().any(|b| b.0 == f.0));
    files_after.sort();
    assert_eq!(
        files_after, files_before,
        "files changed or went in a dry run"
    );
    let after = srv.stats().await;
    assert_eq!(after.blobs, before.blobs);
    assert_eq!(after.stored_bytes, before.stored_bytes);
    assert_eq!(after.unreferenced_blobs, 2);
    for (d, bytes) in own_blobs(&a, &b) {
        srv.get(format!("/v2/app/blobs/{}", d.digest))
            .await
            .assert_status(200)
            .assert_body(bytes);
    }
    // The real collection removes what the dry run said.
    let real = collect(&srv, |gc| gc.grace = Duration::ZERO).await;
    assert_eq!(real.blobs_removed, dry.blobs_removed);
    assert_eq!(real.blob_bytes_removed, dry.blob_bytes_removed);
    let mut named = real.removed.blobs.clone();
    named.sort();
    assert_eq!(named, own);
    b.assert_pulls(&srv, "app", "b").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn blockreg_gc_runs_as_another_process_while_the_server_serves() {
    let srv = server().await;
    let (a, b, _) = two_images_sharing_a_layer();
    a.push(&srv, "app", "a").await;
    b.push(&srv, "app", "b").await;
    delete_manifest(&srv, "app", &a.digest).await;
    let data = srv.data_dir().to_string_lossy().into_owned();

    // A push (blobs converting in the background meanwhile) and pulls go
    // on while `blockreg gc` runs with the default grace.
    let srv = Arc::new(srv);
    let pushing = {
        let srv = srv.clone();
        tokio::spawn(async move {
            let c = Image::new(
                5,
                vec![seeded_bytes(905, 3 << 20), seeded_bytes(906, 200_000)],
            );
            for (_, bytes) in c.blobs() {
                srv.push_blob_chunked("app", bytes, 256 * 1024).await;
            }
            srv.push_manifest("app", "c", media::OCI_MANIFEST, &c.manifest)
                .await;
            c
        })
    };
    let done = Arc::new(AtomicBool::new(false));
    let pulling = {
        let (srv, done) = (srv.clone(), done.clone());
        let b_blobs: Vec<_> = b.blobs().cloned().collect();
        tokio::spawn(async move {
            let mut pulls = 0;
            while !done.load(Ordering::SeqCst) || pulls == 0 {
                for (d, bytes) in &b_blobs {
                    srv.get(format!("/v2/app/blobs/{}", d.digest))
                        .await
                        .assert_status(200)
                        .assert_body(bytes);
                    pulls += 1;
                }
            }
            pulls
        })
    };
    let out = blockreg(vec![
        "gc".into(),
        "--data".into(),
        data.clone(),
        "--json".into(),
    ])
    .await;
    done.store(true, Ordering::SeqCst);
    assert!(
        out.status.success(),
        "blockreg gc failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)));
    assert_eq!(report["dry_run"], false, "{report}");
    assert_eq!(
        report["blobs_removed"], 0,
        "all pushed within the grace period: {report}"
    );
    assert!(pulling.await.unwrap() > 0);
    let c = pushing.await.unwrap();
    c.assert_pulls(&srv, "app", "c").await;
    b.assert_pulls(&srv, "app", "b").await;

    // Once nothing pushes, `--grace 0s` takes a's own blobs, warning
    // about what a short grace risks; the server goes on serving.
    srv.wait_converted().await;
    let out = blockreg(vec![
        "gc".into(),
        "--data".into(),
        data,
        "--grace".into(),
        "0s".into(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let report = text(&out.stdout);
    assert!(
        report.contains("blobs          2 removed"),
        "the text report: {report}"
    );
    assert!(
        text(&out.stderr).contains("warning: grace period 0s"),
        "{}",
        text(&out.stderr)
    );
    for (d, _) in own_blobs(&a, &b) {
        srv.get(format!("/v2/app/blobs/{}", d.digest))
            .await
            .assert_error(404, &["BLOB_UNKNOWN"]);
    }
    b.assert_pulls(&srv, "app", "b").await;
    c.assert_pulls(&srv, "app", "c").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn blockreg_gc_reads_the_config_files_gc_section() {
    let srv = server().await;
    let image = Image::new(6, vec![seeded_bytes(960, 10_000)]);
    image.push(&srv, "app", "v1").await;
    let config = srv.root_dir().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nblockreg:\n  gc:\n    grace: 0s\n    retention:\n      - repositories: [app]\n        keep_tags: [\"(\"]\n",
            srv.data_dir().display()
        ),
    )
    .unwrap();
    // The guest checks the rules' regular expressions and names a bad one.
    let out = blockreg(vec![
        "gc".into(),
        "--config".into(),
        config.to_string_lossy().into_owned(),
    ])
    .await;
    assert!(!out.status.success(), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "error: garbage collection: the collection failed: retention rule tag pattern \"(\""
        ),
        "{err}"
    );
    image.assert_pulls(&srv, "app", "v1").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_collects_in_the_background() {
    // The shortest grace the server takes is the request timeout plus a
    // minute: blobs must be that old before a background collection
    // removes them.
    let srv = Server::start_with_debug(|config| {
        config.limits.request_timeout = Duration::from_secs(2);
        config.gc.grace = Duration::from_secs(63);
        config.gc.interval = Duration::from_secs(2);
    })
    .await;
    srv.assert_alive().await;
    let (a, b, _) = two_images_sharing_a_layer();
    a.push(&srv, "app", "a").await;
    b.push(&srv, "app", "b").await;
    delete_manifest(&srv, "app", &a.digest).await;
    let deleted_at = Instant::now();

    // Counted once the collection has returned (its blobs are gone a
    // moment before).
    let metrics = loop {
        let (status, _, metrics) = srv.debug_get("/metrics").await;
        assert_eq!(status, 200);
        if sample(&metrics, "blockreg_gc_blobs_removed_total") > 0.0 {
            break metrics;
        }
        assert!(
            deleted_at.elapsed() < Duration::from_secs(150),
            "a's blobs still there: {:?}",
            srv.stats().await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        deleted_at.elapsed() >= Duration::from_secs(55),
        "removed before the grace period was over: {:?}",
        deleted_at.elapsed()
    );
    for (d, _) in own_blobs(&a, &b) {
        srv.get(format!("/v2/app/blobs/{}", d.digest))
            .await
            .assert_error(404, &["BLOB_UNKNOWN"]);
    }
    b.assert_pulls(&srv, "app", "b").await;
    assert_eq!(srv.stats().await.unreferenced_blobs, 0);

    let metric = |name: &str| sample(&metrics, name);
    assert!(
        metric("blockreg_gc_runs_total{outcome=\"completed\"}") >= 1.0,
        "{metrics}"
    );
    assert_eq!(
        metric("blockreg_gc_runs_total{outcome=\"failed\"}"),
        0.0,
        "{metrics}"
    );
    assert_eq!(metric("blockreg_gc_blobs_removed_total"), 2.0, "{metrics}");
    let own_bytes: u64 = own_blobs(&a, &b).iter().map(|(d, _)| d.size).sum();
    assert_eq!(
        metric("blockreg_gc_blob_bytes_removed_total"),
        own_bytes as f64
    );
    assert!(
        metric("blockreg_gc_pack_bytes_removed_total") >= LAYER as f64,
        "{metrics}"
    );
    let last = metric("blockreg_gc_last_success_timestamp_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(last > now - 300.0 && last <= now + 1.0, "{last} vs {now}");
    crate::observability::promtool_check(&metrics);
    // The store's figures are refreshed at most every 5 s.
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let (_, _, metrics) = srv.debug_get("/metrics").await;
    assert_eq!(
        sample(&metrics, "blockreg_store_unreferenced_blobs"),
        0.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_keeps_the_last_two_of_five_tags() {
    let srv = server().await;
    let mut images = Vec::new();
    for i in 0..5u64 {
        let image = Image::new(20 + i, vec![seeded_bytes(920 + i, 30_000)]);
        image.push(&srv, "ci/app", &format!("t{i}")).await;
        images.push(image);
        // Tags are ordered by when they were written.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let other = Image::new(30, vec![seeded_bytes(930, 30_000)]);
    for tag in ["x1", "x2", "x3"] {
        other.push(&srv, "other", tag).await;
    }
    let rules = vec![host::RetentionRule {
        repositories: vec!["ci/**".into()],
        keep_last: Some(2),
        ..host::RetentionRule::default()
    }];

    // `blockreg gc --dry-run` with the rule in a config file lists the
    // tags, manifests and blobs that would go, and removes none.
    let config = srv.root_dir().join("retention.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nblockreg:\n  gc:\n    grace: 0s\n    delete_untagged: true\n    retention:\n      - repositories: [\"ci/**\"]\n        keep_last: 2\n",
            srv.data_dir().display()
        ),
    )
    .unwrap();
    let out = blockreg(vec![
        "gc".into(),
        "--dry-run".into(),
        "--config".into(),
        config.to_string_lossy().into_owned(),
    ])
    .await;
    let report = text(&out.stdout);
    assert!(out.status.success(), "{report}{}", text(&out.stderr));
    let listed = |kind: &str| -> Vec<String> {
        let prefix = format!("would remove {kind:<8} ");
        let mut names: Vec<String> = report
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        listed("tag"),
        ["ci/app:t0", "ci/app:t1", "ci/app:t2"],
        "{report}"
    );
    let mut manifests: Vec<String> = images[..3]
        .iter()
        .map(|i| format!("ci/app@{}", i.digest))
        .collect();
    manifests.sort();
    assert_eq!(listed("manifest"), manifests, "{report}");
    let mut blobs: Vec<String> = images[..3]
        .iter()
        .flat_map(|i| i.blobs().map(|(d, _)| d.digest.clone()))
        .collect();
    blobs.sort();
    assert_eq!(listed("blob"), blobs, "{report}");
    let tags = srv.get("/v2/ci/app/tags/list").await;
    assert_eq!(
        tags.json()["tags"].as_array().map(Vec::len),
        Some(5),
        "a dry run removes no tag"
    );

    let c = collect(&srv, |gc| {
        gc.grace = Duration::ZERO;
        gc.retention = rules.clone();
    })
    .await;
    assert_eq!(c.tags_removed, 3, "{c:?}");
    assert_eq!(c.manifests_removed, 0, "untagged manifests stay: {c:?}");
    let tags = srv.get("/v2/ci/app/tags/list").await;
    tags.assert_status(200);
    assert_eq!(tags.json()["tags"], serde_json::json!(["t3", "t4"]));
    let others = srv.get("/v2/other/tags/list").await;
    assert_eq!(
        others.json()["tags"],
        serde_json::json!(["x1", "x2", "x3"]),
        "a repository no rule covers keeps every tag"
    );
    srv.get(format!("/v2/ci/app/manifests/{}", images[0].digest))
        .await
        .assert_status(200);

    // With delete_untagged the three manifests go, and their own blobs.
    let c = collect(&srv, |gc| {
        gc.grace = Duration::ZERO;
        gc.retention = rules;
        gc.delete_untagged = true;
    })
    .await;
    assert_eq!(c.manifests_removed, 3, "{c:?}");
    assert_eq!(c.blobs_removed, 6, "three configs and three layers: {c:?}");
    for image in &images[..3] {
        srv.get(format!("/v2/ci/app/manifests/{}", image.digest))
            .await
            .assert_error(404, &["MANIFEST_UNKNOWN"]);
    }
    images[3].assert_pulls(&srv, "ci/app", "t3").await;
    images[4].assert_pulls(&srv, "ci/app", "t4").await;
    other.assert_pulls(&srv, "other", "x1").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_does_not_convert_puts_back_what_a_killed_collection_set_aside() {
    let srv = Server::start_with(|config| {
        config.gc.enabled = false;
        config.background_conversion = false;
    })
    .await;
    srv.assert_alive().await;
    let image = Image::new(40, vec![seeded_bytes(940, 20_000)]);
    image.push(&srv, "app", "v1").await;
    // What a `blockreg gc` killed between setting a blob aside and judging
    // it leaves (data/FORMAT.md, "Garbage collection").
    let layer = &image.layers[0].0.digest;
    let trash = srv.data_dir().join("gc/trash");
    std::fs::create_dir_all(&trash).unwrap();
    std::fs::rename(
        srv.data_dir().join("layers").join(layer),
        trash.join(format!("b.{layer}.0a0b0c")),
    )
    .unwrap();
    srv.get(format!("/v2/app/blobs/{layer}"))
        .await
        .assert_error(404, &["BLOB_UNKNOWN"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = srv.get(format!("/v2/app/blobs/{layer}")).await;
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {} after 30 s: nothing put the blob back",
            r.status
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    image.assert_pulls(&srv, "app", "v1").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_refuses_a_grace_period_a_request_could_outlast() {
    let root = Server::temp_root();
    let mut config = host::ServeConfig::new(root.path().join("data"));
    config.limits.request_timeout = Duration::from_secs(3600);
    // The default grace, one hour, is not longer than that plus a minute.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = host::serve(listener, config, std::future::pending())
        .await
        .unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("blockreg.gc.grace"), "{message}");
    assert!(message.contains("3600s"), "{message}");

    // Through the config file, as `serve --config` reads it.
    let file = root.path().join("config.yml");
    std::fs::write(
        &file,
        "version: 0.1\nblockreg:\n  request_timeout_secs: 600\n  gc:\n    grace: 10m\n",
    )
    .unwrap();
    let loaded = host::config_file::load(Some(&file), std::iter::empty()).unwrap();
    let mut serve = loaded.options.serve;
    serve.data_dir = root.path().join("data");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = host::serve(listener, serve.clone(), std::future::pending())
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("config key blockreg.gc.grace"),
        "{err:#}"
    );

    // Without background collection, or with a longer grace, it starts.
    serve.gc.grace = Duration::from_secs(661);
    let srv = Server::start_from(
        root,
        tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .into(),
        serve,
    );
    srv.assert_alive().await;
}

/// The value of the sample `line_start` (metric name and labels) in
/// `text`, or 0 when absent.
fn sample(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(line_start)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Holds the store lock on `data` exclusively, as a collection does (the
/// lock is `flock` on the directory itself), once the server's converter
/// has ended the call it may be in.
async fn hold_exclusive(data: &Path) -> File {
    let data = data.to_owned();
    tokio::task::spawn_blocking(move || {
        let dir = File::open(data).unwrap();
        dir.lock().unwrap();
        dir
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn conversion_waits_while_a_collection_holds_the_store() {
    let srv = server().await;
    let held = hold_exclusive(&srv.data_dir()).await;
    let blob = seeded_bytes(940, 100_000);
    let digest = srv.push_blob("app", &blob).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(srv.stats().await.pending, 1, "converted under the lock");
    // Requests go on meanwhile, served from the original.
    srv.get(format!("/v2/app/blobs/{digest}"))
        .await
        .assert_status(200)
        .assert_body(&blob);
    drop(held);
    let stats = srv.wait_converted().await;
    assert_eq!(stats.pending, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_collection_waits_for_the_store_lock() {
    let srv = server().await;
    let held = hold_exclusive(&srv.data_dir()).await;
    let config = gc_config(&srv, |_| {});
    let waited = Arc::new(AtomicBool::new(false));
    let told = waited.clone();
    let started = Instant::now();
    let collection = tokio::spawn(async move {
        let result =
            host::collect_garbage(&config, move || told.store(true, Ordering::SeqCst)).await;
        (Instant::now(), result)
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(waited.load(Ordering::SeqCst), "told that it waits");
    assert!(!collection.is_finished(), "ran while the lock was held");
    let released = Instant::now();
    drop(held);
    let (ended, result) = tokio::time::timeout(REQUEST_TIMEOUT, collection)
        .await
        .unwrap()
        .unwrap();
    assert!(ended >= released && released - started >= Duration::from_secs(1));
    result.expect("collection after the lock was released");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_starts_only_once_a_collection_elsewhere_has_ended() {
    let root = Server::temp_root();
    let data = root.path().join("data");
    let held = hold_exclusive(&data).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let srv = Server::start_from(root, listener.into(), host::ServeConfig::new(&data));
    // Its recovery waits for the lock: nothing is served meanwhile.
    let answered = tokio::time::timeout(Duration::from_secs(3), srv.get("/v2/")).await;
    assert!(
        answered.is_err(),
        "served while a collection held the store"
    );
    drop(held);
    srv.assert_alive().await;
}

/// Sets a blob's use stamp far in the past, as if nothing had used it for
/// years: the next collection removes it unless a manifest names it or
/// something uses it first.
fn age_blob(srv: &Server, digest: &str) {
    let stamp = srv.data_dir().join("layers").join(digest).join("touched");
    std::fs::write(stamp, "1000").unwrap();
}

/// Manifest pushes racing collections that run back to back: a blob no
/// manifest names and unused for years is named by a manifest PUT again
/// and again (deleted after each success, the stamp aged again) while
/// collections try to remove it. Each PUT is either accepted — and then the
/// blob is there, at once and after further collections — or refused with
/// MANIFEST_BLOB_UNKNOWN because a collection took the blob first (pushed
/// again then). Never a stored manifest naming a missing blob.
#[tokio::test]
async fn manifest_pushes_racing_collections_never_name_a_collected_blob() {
    let srv = server().await;
    let repo = "race/app";
    let image = Image::new(7, vec![seeded_bytes(70, 4096)]);
    for (_, bytes) in image.blobs() {
        srv.push_blob(repo, bytes).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let collections = {
        let stop = stop.clone();
        let config = gc_config(&srv, |gc| gc.grace = Duration::from_secs(600));
        tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                host::collect_garbage(&config, || {})
                    .await
                    .expect("collection");
                n += 1;
            }
            n
        })
    };
    let (mut accepted, mut refused) = (0, 0);
    let started = Instant::now();
    let mut round = 0u32;
    while started.elapsed() < Duration::from_secs(20) {
        // Every other round the blobs look unused for years: the push
        // races the collections; in the others it must simply succeed.
        round += 1;
        if round % 2 == 1 {
            for (d, _) in image.blobs() {
                age_blob(&srv, &d.digest);
            }
        }
        let resp = srv
            .put_manifest(repo, &image.digest, media::OCI_MANIFEST, &image.manifest)
            .await;
        match resp.status.as_u16() {
            201 => {
                accepted += 1;
                for (d, bytes) in image.blobs() {
                    srv.get(format!("/v2/{repo}/blobs/{}", d.digest))
                        .await
                        .assert_status(200)
                        .assert_body(bytes);
                }
                delete_manifest(&srv, repo, &image.digest).await;
            }
            _ => {
                assert_eq!(
                    round % 2,
                    1,
                    "refused although just pushed: {}",
                    resp.describe()
                );
                resp.assert_error(400, &["MANIFEST_BLOB_UNKNOWN"]);
                refused += 1;
                for (_, bytes) in image.blobs() {
                    srv.push_blob(repo, bytes).await;
                }
            }
        }
    }
    // The last round: accepted, then collections go on for a while.
    for (_, bytes) in image.blobs() {
        srv.push_blob(repo, bytes).await;
    }
    srv.push_manifest(repo, "kept", media::OCI_MANIFEST, &image.manifest)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let n = collections.await.unwrap();
    image.assert_pulls(&srv, repo, "kept").await;
    assert!(n >= 3, "only {n} collections ran");
    assert!(
        accepted > 0,
        "no manifest push was accepted in {refused} tries"
    );
    eprintln!("{accepted} manifest pushes accepted, {refused} refused, {n} collections");
}
