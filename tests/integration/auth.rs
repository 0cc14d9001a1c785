//! Authentication and authorization (`auth.htpasswd`, `auth.token`,
//! `blockreg.access`), started from a config file as an operator would:
//! challenges and error codes as registry:2 answers them, bcrypt logins,
//! per-repository rules, the catalog filtered, the password file reloaded,
//! and bearer tokens minted by a test token server (an ECDSA key and its
//! self-signed certificate made by rcgen, tokens signed with ring).

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hyper::Method;
use tokio::net::TcpListener;

use tests::{Flavor, Resp, Server};

const REALM: &str = "blockreg-test";
const TOKEN_REALM: &str = "https://auth.example/token";
const SERVICE: &str = "blockreg.example";
const ISSUER: &str = "test-token-server";

/// Starts a server from `yaml` (a config file; `DATA` is replaced by the
/// data directory, `ROOT` by the temporary directory holding it).
async fn start(root: tempfile::TempDir, yaml: &str) -> Server {
    let yaml = yaml
        .replace("DATA", &root.path().join("data").display().to_string())
        .replace("ROOT", &root.path().display().to_string());
    let path = root.path().join("config.yml");
    std::fs::write(&path, yaml).unwrap();
    let loaded = host::config_file::load(Some(&path), std::iter::empty()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let srv = Server::start_from(root, listener.into(), loaded.options.serve);
    for _ in 0..600 {
        // Any answer means the guest is loaded.
        if tokio::net::TcpStream::connect(srv.addr()).await.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    srv
}

fn basic(user: &str, password: &str) -> String {
    let pair = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// Writes an htpasswd file of bcrypt entries (cost 4: fast tests).
fn write_htpasswd(path: &Path, users: &[(&str, &str)]) {
    let lines: String = users
        .iter()
        .map(|(user, password)| format!("{user}:{}\n", bcrypt::hash(password, 4).unwrap()))
        .collect();
    std::fs::write(path, lines).unwrap();
}

/// A server with htpasswd users alice/alice-pw and bob/bob-pw, and
/// `access` as the `blockreg.access` section (indented YAML, or empty).
async fn htpasswd_server(access: &str) -> Server {
    if access.is_empty() {
        htpasswd_server_with("").await
    } else {
        htpasswd_server_with(&format!("  access:\n{access}")).await
    }
}

/// [`htpasswd_server`] with `blockreg` as the body of the `blockreg:`
/// section (indented YAML, or empty).
async fn htpasswd_server_with(blockreg: &str) -> Server {
    let root = Server::temp_root();
    write_htpasswd(
        &root.path().join("htpasswd"),
        &[("alice", "alice-pw"), ("bob", "bob-pw")],
    );
    let access = if blockreg.is_empty() {
        String::new()
    } else {
        format!("blockreg:\n{blockreg}")
    };
    start(
        root,
        &format!(
            "version: 0.1
storage:
  filesystem:
    rootdirectory: DATA
  delete:
    enabled: true
auth:
  htpasswd:
    realm: {REALM}
    path: ROOT/htpasswd
{access}"
        ),
    )
    .await
}

/// Asserts a 401 `UNAUTHORIZED` carrying `challenge`.
#[track_caller]
fn assert_challenge(resp: &Resp, challenge: &str) {
    resp.assert_error(401, &["UNAUTHORIZED"]);
    assert_eq!(
        resp.header("www-authenticate"),
        Some(challenge),
        "{}",
        resp.describe()
    );
}

fn basic_challenge() -> String {
    format!("Basic realm=\"{REALM}\"")
}

#[tokio::test(flavor = "multi_thread")]
async fn without_credentials_the_base_and_a_pull_get_the_basic_challenge() {
    let srv = htpasswd_server("").await;
    assert_challenge(&srv.get("/v2/").await, &basic_challenge());
    assert_challenge(
        &srv.get("/v2/app/manifests/latest").await,
        &basic_challenge(),
    );
    assert_challenge(&srv.get("/v2/_catalog").await, &basic_challenge());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_or_a_malformed_header_is_refused_by_the_host() {
    let srv = htpasswd_server("").await;
    for header in [
        basic("alice", "wrong"),
        basic("nobody", "alice-pw"),
        "Basic not-base64!".to_owned(),
        "Basic".to_owned(),
        "Bearer abc.def.ghi".to_owned(),
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("no-colon")
        ),
    ] {
        let resp = srv
            .req(Method::GET, "/v2/")
            .header("authorization", header.clone())
            .send()
            .await;
        assert_challenge(&resp, &basic_challenge());
        // Answered before any guest ran.
        assert!(
            resp.header("blockreg-guest").is_none(),
            "{header}: {}",
            resp.describe()
        );
    }
}

/// A password-guessing loop from one address: each wrong guess is a 401
/// until `auth_failures_per_minute`, then every credentialed request from
/// that address is a 429 with `Retry-After` (the right password too, and
/// without spending a bcrypt verification); hostile headers are refused
/// the same way and the server keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn a_password_guessing_loop_is_answered_401_then_429_and_never_crashes() {
    let srv = htpasswd_server_with("  auth_failures_per_minute: 5\n").await;
    for guess in 0..5 {
        let resp = srv
            .req(Method::GET, "/v2/")
            .header("authorization", basic("alice", &format!("guess-{guess}")))
            .send()
            .await;
        assert_challenge(&resp, &basic_challenge());
    }
    let hostile = [
        basic("alice", "guess-6"),
        basic("alice", "alice-pw"),
        "Basic %%%not base64%%%".to_owned(),
        format!("Basic {}", "QUFB".repeat(16 * 1024)),
        format!("Bearer {}", "x".repeat(32 * 1024)),
    ];
    for header in hostile {
        let resp = srv
            .req(Method::GET, "/v2/")
            .header("authorization", header.clone())
            .send()
            .await;
        resp.assert_error(429, &["TOOMANYREQUESTS"]);
        let wait: u64 = resp
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no Retry-After: {}", resp.describe()));
        assert!((1..=60).contains(&wait), "Retry-After {wait}");
    }
    // Callers without credentials are not locked out: they get the
    // challenge, which is how docker starts a login.
    assert_challenge(&srv.get("/v2/").await, &basic_challenge());
    // A 256 KiB header reaches the check (and is refused by it); a 1 MiB
    // one is cut off by the HTTP layer. Either way the server goes on.
    let (status, text) = srv
        .raw(
            format!(
                "GET /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {}\r\nConnection: close\r\n\r\n",
                "A".repeat(256 * 1024)
            )
            .as_bytes(),
        )
        .await;
    assert_eq!(status, 429, "{text}");
    {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::TcpStream::connect(srv.addr()).await.unwrap();
        let head = format!(
            "GET /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {}\r\n\r\n",
            "A".repeat(1024 * 1024)
        );
        // The server may answer 431 and reset before reading it all.
        let _ = stream.write_all(head.as_bytes()).await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            stream.read_to_end(&mut out),
        )
        .await;
    }
    assert_challenge(&srv.get("/v2/").await, &basic_challenge());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_right_password_pushes_and_pulls() {
    let srv = htpasswd_server("").await;
    srv.set_authorization(Some(basic("alice", "alice-pw")));
    srv.get("/v2/").await.assert_status(200);
    let pushed = srv.push_image("team/app", "v1", Flavor::Oci, 1).await;
    let resp = srv.get("/v2/team/app/manifests/v1").await;
    resp.assert_status(200);
    assert_eq!(resp.body.as_ref(), pushed.body.as_slice());
    // Without registry rules every user may do everything, deletes too.
    srv.set_authorization(Some(basic("bob", "bob-pw")));
    srv.req(
        Method::DELETE,
        format!("/v2/team/app/manifests/{}", pushed.digest),
    )
    .send()
    .await
    .assert_status(202);
}

const PULL_FOR_ALL_ADMIN_ALICE: &str = "    admins: [alice]
    repositories:
      \"**\":
        default: [pull]
";

#[tokio::test(flavor = "multi_thread")]
async fn a_pull_only_user_is_denied_push_with_403() {
    let srv = htpasswd_server(PULL_FOR_ALL_ADMIN_ALICE).await;
    srv.set_authorization(Some(basic("alice", "alice-pw")));
    let pushed = srv.push_image("app", "v1", Flavor::Docker, 2).await;

    srv.set_authorization(Some(basic("bob", "bob-pw")));
    srv.get("/v2/app/manifests/v1").await.assert_status(200);
    let resp = srv.req(Method::POST, "/v2/app/blobs/uploads/").send().await;
    resp.assert_error(403, &["DENIED"]);
    // Not the code's stock message with a null detail: docker 20.10 keeps
    // retrying a push refused that way for ~50 s.
    let error = &resp.json()["errors"][0];
    assert_eq!(error["message"], "the caller may not push to app");
    assert!(!error["detail"].is_null(), "{}", resp.describe());
    srv.put_manifest("app", "v2", tests::media::DOCKER_MANIFEST, &pushed.body)
        .await
        .assert_error(403, &["DENIED"]);
    srv.req(
        Method::DELETE,
        format!("/v2/app/manifests/{}", pushed.digest),
    )
    .send()
    .await
    .assert_error(403, &["DENIED"]);
    // Nothing changed.
    let tags = srv.get("/v2/app/tags/list").await;
    assert_eq!(tags.json()["tags"], serde_json::json!(["v1"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_pull_allowed_by_a_rule_needs_no_credentials_but_push_does() {
    let srv = htpasswd_server(
        "    admins: [alice]
    repositories:
      \"public/**\":
        anonymous: [pull]
",
    )
    .await;
    srv.set_authorization(Some(basic("alice", "alice-pw")));
    srv.push_image("public/app", "v1", Flavor::Oci, 3).await;
    srv.push_image("private/app", "v1", Flavor::Oci, 4).await;

    srv.set_authorization(None);
    // The version check still asks for a login: docker would take a 200
    // there for a successful `docker login` whatever the password.
    assert_challenge(&srv.get("/v2/").await, &basic_challenge());
    srv.get("/v2/public/app/manifests/v1")
        .await
        .assert_status(200);
    assert_challenge(
        &srv.req(Method::POST, "/v2/public/app/blobs/uploads/")
            .send()
            .await,
        &basic_challenge(),
    );
    assert_challenge(
        &srv.get("/v2/private/app/manifests/v1").await,
        &basic_challenge(),
    );
    srv.get("/v2/public/app/tags/list").await.assert_status(200);
    assert_challenge(&srv.get("/v2/_catalog").await, &basic_challenge());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_catalog_lists_only_repositories_the_caller_may_pull() {
    let srv = htpasswd_server(
        "    admins: [alice]
    groups:
      readers: [bob]
    repositories:
      \"team-a/**\":
        policies:
          - groups: [readers]
            actions: [pull]
",
    )
    .await;
    srv.set_authorization(Some(basic("alice", "alice-pw")));
    srv.push_image("team-a/x", "v1", Flavor::Oci, 5).await;
    srv.push_image("team-b/y", "v1", Flavor::Oci, 6).await;
    let all = srv.get("/v2/_catalog").await;
    assert_eq!(
        all.json()["repositories"],
        serde_json::json!(["team-a/x", "team-b/y"])
    );
    srv.set_authorization(Some(basic("bob", "bob-pw")));
    let mine = srv.get("/v2/_catalog").await;
    assert_eq!(mine.json()["repositories"], serde_json::json!(["team-a/x"]));
    srv.get("/v2/team-b/y/tags/list")
        .await
        .assert_error(403, &["DENIED"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_added_to_the_htpasswd_file_logs_in_without_a_restart() {
    let srv = htpasswd_server("").await;
    let carol = basic("carol", "carol-pw");
    let resp = srv
        .req(Method::GET, "/v2/")
        .header("authorization", carol.clone())
        .send()
        .await;
    assert_challenge(&resp, &basic_challenge());
    write_htpasswd(
        &srv.root_dir().join("htpasswd"),
        &[("alice", "alice-pw"), ("carol", "carol-pw")],
    );
    srv.req(Method::GET, "/v2/")
        .header("authorization", carol)
        .send()
        .await
        .assert_status(200);
    // bob is gone from the new file, his earlier logins forgotten.
    let resp = srv
        .req(Method::GET, "/v2/")
        .header("authorization", basic("bob", "bob-pw"))
        .send()
        .await;
    assert_challenge(&resp, &basic_challenge());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_password_file_inside_the_data_directory_is_refused_at_start() {
    let root = Server::temp_root();
    let inside = root.path().join("data").join("htpasswd");
    write_htpasswd(&inside, &[("alice", "alice-pw")]);
    let yaml = format!(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nauth:\n  htpasswd:\n    realm: r\n    path: {}\n",
        root.path().join("data").display(),
        inside.display()
    );
    let path = root.path().join("config.yml");
    std::fs::write(&path, yaml).unwrap();
    let loaded = host::config_file::load(Some(&path), std::iter::empty()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = host::serve(listener, loaded.options.serve, std::future::pending())
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("inside the data directory"),
        "{err:#}"
    );
}

// ---- token authentication ---------------------------------------------

/// A token server's signing key and the certificate the registry trusts.
struct TokenServer {
    key: ring::signature::EcdsaKeyPair,
    certificate_pem: String,
}

impl TokenServer {
    fn new() -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["token.example".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let ring_key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &key.serialize_der(),
            &ring::rand::SystemRandom::new(),
        )
        .unwrap();
        Self {
            key: ring_key,
            certificate_pem: cert.pem(),
        }
    }

    /// An ES256 JWT of `claims`.
    fn sign(&self, claims: &serde_json::Value) -> String {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let header = b64(br#"{"alg":"ES256","typ":"JWT","kid":"test"}"#);
        let body = b64(claims.to_string().as_bytes());
        let signed = format!("{header}.{body}");
        let signature = self
            .key
            .sign(&ring::rand::SystemRandom::new(), signed.as_bytes())
            .unwrap();
        format!("Bearer {signed}.{}", b64(signature.as_ref()))
    }

    /// A token valid for the next hour granting `actions` on `repository`.
    fn grant(&self, repository: &str, actions: &[&str]) -> String {
        self.sign(&claims(repository, actions, SERVICE, 3600))
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn claims(repository: &str, actions: &[&str], audience: &str, valid_for: i64) -> serde_json::Value {
    serde_json::json!({
        "iss": ISSUER,
        "sub": "ci-bot",
        "aud": audience,
        "iat": now() - 10,
        "nbf": now() - 10,
        "exp": now() + valid_for,
        "access": [{"type": "repository", "name": repository, "actions": actions}],
    })
}

async fn token_server() -> (Server, TokenServer) {
    let issuer = TokenServer::new();
    let root = Server::temp_root();
    std::fs::write(root.path().join("token-ca.pem"), &issuer.certificate_pem).unwrap();
    let srv = start(
        root,
        &format!(
            "version: 0.1
storage:
  filesystem:
    rootdirectory: DATA
auth:
  token:
    realm: {TOKEN_REALM}
    service: {SERVICE}
    issuer: {ISSUER}
    rootcertbundle: ROOT/token-ca.pem
"
        ),
    )
    .await;
    (srv, issuer)
}

fn bearer_challenge(extra: &str) -> String {
    format!("Bearer realm=\"{TOKEN_REALM}\",service=\"{SERVICE}\"{extra}")
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_token_the_challenge_names_realm_service_and_scope() {
    let (srv, _) = token_server().await;
    assert_challenge(&srv.get("/v2/").await, &bearer_challenge(""));
    assert_challenge(
        &srv.get("/v2/team/app/manifests/v1").await,
        &bearer_challenge(",scope=\"repository:team/app:pull\""),
    );
    assert_challenge(
        &srv.req(Method::POST, "/v2/team/app/blobs/uploads/")
            .send()
            .await,
        &bearer_challenge(",scope=\"repository:team/app:pull,push\""),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_pulls_what_its_scope_grants_and_push_needs_the_push_scope() {
    let (srv, issuer) = token_server().await;
    srv.set_authorization(Some(issuer.grant("app", &["pull", "push"])));
    srv.get("/v2/").await.assert_status(200);
    srv.push_image("app", "v1", Flavor::Oci, 7).await;

    srv.set_authorization(Some(issuer.grant("app", &["pull"])));
    srv.get("/v2/app/manifests/v1").await.assert_status(200);
    // registry:2 answers a missing scope with 401 and the scope to ask for.
    assert_challenge(
        &srv.req(Method::POST, "/v2/app/blobs/uploads/").send().await,
        &bearer_challenge(",scope=\"repository:app:pull,push\",error=\"insufficient_scope\""),
    );
    assert_challenge(
        &srv.get("/v2/other/tags/list").await,
        &bearer_challenge(",scope=\"repository:other:pull\",error=\"insufficient_scope\""),
    );
    srv.set_authorization(Some(issuer.grant("app", &["*"])));
    srv.push_blob("app", b"a star grants push").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_forged_and_wrong_audience_tokens_are_refused() {
    let (srv, issuer) = token_server().await;
    let forger = TokenServer::new();
    let wrong_issuer = {
        let mut c = claims("app", &["pull"], SERVICE, 3600);
        c["iss"] = "someone-else".into();
        issuer.sign(&c)
    };
    let cases = [
        (
            "expired",
            issuer.sign(&claims("app", &["pull"], SERVICE, -3600)),
        ),
        (
            "wrong audience",
            issuer.sign(&claims("app", &["pull"], "other.example", 3600)),
        ),
        ("unknown key", forger.grant("app", &["pull"])),
        ("wrong issuer", wrong_issuer),
        ("garbage", "Bearer not.a.token".to_owned()),
    ];
    for (what, token) in cases {
        let resp = srv
            .req(Method::GET, "/v2/app/tags/list")
            .header("authorization", token)
            .send()
            .await;
        assert_eq!(resp.status, 401, "{what}: {}", resp.describe());
        assert_challenge(&resp, &bearer_challenge(",error=\"invalid_token\""));
        assert!(resp.header("blockreg-guest").is_none(), "{what}");
    }
    // The same request with a good token gets past authentication.
    srv.req(Method::GET, "/v2/app/tags/list")
        .header("authorization", issuer.grant("app", &["pull"]))
        .send()
        .await
        .assert_error(404, &["NAME_UNKNOWN"]);
}
