//! registry:2's `config.yml` (`blockreg serve --config`): keys take effect
//! on a running server, `REGISTRY_*` variables beat the file, unknown keys
//! warn, wrong values and an unsupported `auth` method stop the start. (Flags over
//! the file and the environment: `host/src/main.rs`'s unit tests.)

use std::path::Path;

use hyper::Method;
use tokio::net::TcpListener;

use tests::Server;

/// Reads `yaml` as a config file with `env` as the environment.
fn load(
    dir: &Path,
    yaml: &str,
    env: &[(&str, &str)],
) -> Result<host::config_file::Loaded, host::config_file::ConfigError> {
    let path = dir.join("config.yml");
    std::fs::write(&path, yaml).unwrap();
    let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
    host::config_file::load(Some(&path), env)
}

/// A port free a moment ago on 127.0.0.1.
async fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// Starts the server the loaded options describe, on their address.
async fn start(root: tempfile::TempDir, options: host::ServeOptions) -> Server {
    let listener = TcpListener::bind(options.addr).await.unwrap();
    let srv = Server::start_from(root, listener.into(), options.serve);
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(srv.addr()).await.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    srv
}

const UNKNOWN_MANIFEST: &str =
    "/v2/repo/manifests/sha256:0000000000000000000000000000000000000000000000000000000000000000";

#[tokio::test(flavor = "multi_thread")]
async fn config_file_keys_take_effect_on_the_server() {
    let root = Server::temp_root();
    let data = root.path().join("data");
    let port = free_port().await;
    let yaml = format!(
        "version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {}
  delete:
    enabled: false
http:
  addr: 127.0.0.1:{port}
  headers:
    X-Content-Type-Options: [nosniff]
    X-Multi: [one, two]
blockreg:
  max_body_bytes: 1000
",
        data.display()
    );
    let loaded = load(root.path(), &yaml, &[]).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let srv = start(root, loaded.options).await;
    assert_eq!(srv.addr().port(), port, "http.addr");

    let resp = srv.get("/v2/").await;
    resp.assert_status(200);
    resp.assert_header("x-content-type-options", "nosniff");
    let multi: Vec<_> = resp.headers.get_all("x-multi").iter().collect();
    assert_eq!(multi, ["one", "two"], "http.headers with two values");

    // storage.delete.enabled: false
    let resp = srv.req(Method::DELETE, UNKNOWN_MANIFEST).send().await;
    resp.assert_status(405);
    resp.assert_header("x-content-type-options", "nosniff");

    // storage.filesystem.rootdirectory: the blob lands there.
    let digest = srv.push_blob("repo", b"stored where the file says").await;
    assert!(
        data.join("layers").join(&digest).exists(),
        "blob not in the configured root directory"
    );
    // blockreg.max_body_bytes
    srv.req(Method::POST, "/v2/repo/blobs/uploads/?digest=sha256:00")
        .body(vec![0u8; 2000])
        .send()
        .await
        .assert_status(413);
}

#[tokio::test(flavor = "multi_thread")]
async fn environment_variables_beat_the_file() {
    let root = Server::temp_root();
    let data = root.path().join("data");
    let (file_port, env_port) = (free_port().await, free_port().await);
    let yaml = format!(
        "version: 0.1
storage:
  filesystem:
    rootdirectory: /nonexistent/from-the-file
  delete:
    enabled: false
http:
  addr: 127.0.0.1:{file_port}
"
    );
    let env_addr = format!("127.0.0.1:{env_port}");
    let env_root = data.display().to_string();
    let loaded = load(
        root.path(),
        &yaml,
        &[
            ("REGISTRY_HTTP_ADDR", &env_addr),
            ("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", &env_root),
            ("REGISTRY_STORAGE_DELETE_ENABLED", "true"),
        ],
    )
    .unwrap();
    let srv = start(root, loaded.options).await;
    assert_eq!(srv.addr().port(), env_port);
    srv.assert_alive().await;
    // Deletion is on: an unknown manifest is 404, not 405.
    srv.req(Method::DELETE, UNKNOWN_MANIFEST)
        .send()
        .await
        .assert_status(404);
}

#[test]
fn unknown_keys_and_variables_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = load(
        dir.path(),
        "version: 0.1\nhttp:\n  adress: :5000\nstorage:\n  delete:\n    enabled: true\n",
        &[("REGISTRY_NO_SUCH_KEY", "1")],
    )
    .unwrap();
    let warnings = loaded.warnings.join("\n");
    assert!(
        warnings.contains("unknown config key http.adress"),
        "{warnings}"
    );
    assert!(warnings.contains("REGISTRY_NO_SUCH_KEY"), "{warnings}");
}

#[test]
fn a_wrong_value_stops_the_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (yaml, env, key) in [
        (
            "version: 0.1\nhttp:\n  addr: here\n",
            vec![],
            "config key http.addr:",
        ),
        (
            "version: 0.1\nblockreg:\n  cache_mib: lots\n",
            vec![],
            "config key blockreg.cache_mib:",
        ),
        (
            "version: 0.1\nhttp:\n  tls:\n    certificate: /c.pem\n",
            vec![],
            "config key http.tls.key:",
        ),
        (
            "version: 0.1\n",
            vec![("REGISTRY_LOG_LEVEL", "loud")],
            "config key log.level (from REGISTRY_LOG_LEVEL):",
        ),
        ("version: 2\n", vec![], "config key version:"),
    ] {
        let err = load(dir.path(), yaml, &env).unwrap_err().to_string();
        assert!(err.starts_with(key), "{err}");
    }
}

#[test]
fn debians_htpasswd_section_is_read_and_other_methods_refuse_to_start() {
    let dir = tempfile::tempdir().unwrap();
    // Debian's docker-registry package ships this file.
    let debian = "version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/docker-registry
  delete:
    enabled: true
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
auth:
  htpasswd:
    realm: basic-realm
    path: /etc/docker/registry
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
";
    let loaded = load(dir.path(), debian, &[]).unwrap();
    assert_eq!(
        loaded.options.serve.auth.method,
        Some(host::AuthMethod::Htpasswd {
            realm: "basic-realm".into(),
            path: "/etc/docker/registry".into()
        })
    );
    // A method blockreg lacks would leave the registry open: refused.
    let err = load(
        dir.path(),
        "version: 0.1\n",
        &[("REGISTRY_AUTH_SILLY_REALM", "silly")],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("auth.silly is not supported"), "{err}");
    // A token section without its issuer names the key.
    let err = load(
        dir.path(),
        "version: 0.1\n",
        &[("REGISTRY_AUTH_TOKEN_REALM", "https://auth.example/token")],
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("config key auth.token.service:"), "{err}");
}

#[test]
fn the_registry2_config_of_the_test_scripts_is_accepted_as_is() {
    // tests/e2e/lib.sh's start_registry2 writes this for registry:2.
    let dir = tempfile::tempdir().unwrap();
    let loaded = load(
        dir.path(),
        "version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: /tmp/r2/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:5002
",
        &[],
    )
    .unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(loaded.options.log.level, "warn");
    assert_eq!(loaded.options.addr, "127.0.0.1:5002".parse().unwrap());
}
