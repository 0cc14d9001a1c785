//! Harness for blockreg's host integration tests.
//!
//! [`Server::start`] runs the real host library (`host::serve`, with its
//! embedded guest) on `127.0.0.1:0` over a fresh temporary directory laid out
//! as `<tmp>/data` (the data dir the server is given) and `<tmp>/outside` (an
//! empty sibling the confinement tests watch). Requests go over real HTTP/1.1
//! through hyper's own low-level client, one connection per request: it adds
//! no HTTP stack beyond the one the host already builds, and it sends paths
//! byte for byte as written (no normalisation of `..` or `%2F`), which the
//! confinement tests rely on. [`Server::raw`] writes a request line by hand
//! for the few paths the `http` crate refuses to parse (backslashes).
//!
//! Fixtures are deterministic: blob contents come from [`seeded_bytes`]
//! (splitmix64, the one PRNG of the tests) and [`text_bytes`], layers from
//! [`gzip_layer`], manifests from [`image_manifest`] and [`index_manifest`].

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes, Frame};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// How long one request may take before the test fails instead of hanging.
/// Generous because the first request to a fresh server may wait for the
/// guest to be compiled.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// The value every guest response carries in `Blockreg-Guest`.
pub const GUEST_VERSION: &str = "blockreg-guest/0.1.0";

/// Error codes of the OCI distribution spec plus the Docker registry API V2
/// ones a registry may still use (`TAG_INVALID`, `RANGE_INVALID`, ...,
/// and `UNKNOWN`/`UNAVAILABLE`, which the host uses for its own 5xx).
pub const SPEC_ERROR_CODES: &[&str] = &[
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "MANIFEST_UNVERIFIED",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "PAGINATION_NUMBER_INVALID",
    "RANGE_INVALID",
    "SIZE_INVALID",
    "TAG_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
    "TOOMANYREQUESTS",
    "UNKNOWN",
    "UNAVAILABLE",
];

/// Media types used by the manifest fixtures.
pub mod media {
    /// Docker image manifest, schema 2.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Docker gzip layer.
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// OCI gzip layer.
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// An `Accept` header naming every manifest type above, as docker sends.
    pub const ACCEPT_ALL: &str = "application/vnd.docker.distribution.manifest.v2+json, \
        application/vnd.docker.distribution.manifest.list.v2+json, \
        application/vnd.oci.image.manifest.v1+json, \
        application/vnd.oci.image.index.v1+json";
}

/// A running server over its own temporary directory; shut down on drop.
pub struct Server {
    addr: SocketAddr,
    debug_addr: Option<SocketAddr>,
    /// `Authorization` sent with every request that sets none itself.
    authorization: std::sync::Mutex<Option<String>>,
    root: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Server {
    /// Starts a server with the embedded guest and default limits.
    pub async fn start() -> Server {
        Self::start_with(|_| {}).await
    }

    /// Starts a server after letting the caller adjust its configuration.
    pub async fn start_with(adjust: impl FnOnce(&mut host::ServeConfig)) -> Server {
        let root = Self::temp_root();
        let mut config = host::ServeConfig::new(root.path().join("data"));
        adjust(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        Self::start_from(root, listener.into(), config)
    }

    /// Starts a server with a debug server on its own `127.0.0.1:0`
    /// (health, and metrics at `/metrics`), after `adjust`.
    pub async fn start_with_debug(adjust: impl FnOnce(&mut host::ServeConfig)) -> Server {
        let root = Self::temp_root();
        let mut config = host::ServeConfig::new(root.path().join("data"));
        let debug = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        config.debug = Some(host::DebugConfig {
            addr: debug.local_addr().expect("local addr"),
            prometheus_path: Some("/metrics".to_owned()),
        });
        adjust(&mut config);
        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let listeners = host::Listeners {
            http,
            debug: Some(debug),
        };
        Self::start_from(root, listeners, config)
    }

    /// A fresh temporary directory holding an empty `data/` and `outside/`.
    pub fn temp_root() -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("create temp dir");
        std::fs::create_dir(root.path().join("data")).expect("create data dir");
        std::fs::create_dir(root.path().join("outside")).expect("create sibling dir");
        root
    }

    /// Starts `host::serve` on `listeners` with `config`, owning `root`
    /// (removed when the server is dropped).
    pub fn start_from(
        root: tempfile::TempDir,
        listeners: host::Listeners,
        config: host::ServeConfig,
    ) -> Server {
        let addr = listeners.http.local_addr().expect("local addr");
        let debug_addr = listeners
            .debug
            .as_ref()
            .map(|debug| debug.local_addr().expect("local addr"));
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(host::serve(listeners, config, async move {
            let _ = rx.await;
        }));
        Server {
            addr,
            debug_addr,
            authorization: std::sync::Mutex::new(None),
            root,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// `GET path` on the debug server: status, Content-Type and body.
    pub async fn debug_get(&self, path: &str) -> (u16, String, String) {
        let addr = self.debug_addr.expect("started with a debug server");
        let work = async {
            let stream = TcpStream::connect(addr).await.expect("connect");
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("http1 handshake");
            tokio::spawn(conn);
            let request = Request::get(path)
                .header("host", addr.to_string())
                .body(Full::new(Bytes::new()))
                .expect("request");
            let response = sender.send_request(request).await.expect("debug request");
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let body = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            (
                status,
                content_type,
                String::from_utf8_lossy(&body).into_owned(),
            )
        };
        tokio::time::timeout(REQUEST_TIMEOUT, work)
            .await
            .expect("debug request timed out")
    }

    /// Resolves the shutdown future and returns what `host::serve` returned.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let task = self.task.take().expect("server task");
        match tokio::time::timeout(REQUEST_TIMEOUT, task).await {
            Ok(joined) => joined.expect("server task panicked"),
            Err(_) => anyhow::bail!("server did not stop within {REQUEST_TIMEOUT:?}"),
        }
    }

    /// Sends `Authorization: value` with every later request that does not
    /// set the header itself (`None`: no credentials), so the helpers
    /// (`push_blob`, `push_image`, ...) work against a registry with
    /// authentication.
    pub fn set_authorization(&self, value: Option<String>) {
        *self.authorization.lock().unwrap_or_else(|p| p.into_inner()) = value;
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The data dir the server was given (`<tmp>/data`).
    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// An empty sibling of the data dir (`<tmp>/outside`).
    pub fn outside_dir(&self) -> PathBuf {
        self.root.path().join("outside")
    }

    /// The temporary directory holding `data` and `outside`.
    pub fn root_dir(&self) -> &Path {
        self.root.path()
    }

    /// Starts building a request for `path` (origin-form, sent as written).
    pub fn req(&self, method: Method, path: impl Into<String>) -> Req<'_> {
        Req {
            server: self,
            method,
            path: path.into(),
            headers: Vec::new(),
            body: ReqBody::Empty,
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: impl Into<String>) -> Resp {
        self.req(Method::GET, path).send().await
    }

    /// `HEAD path`.
    pub async fn head(&self, path: impl Into<String>) -> Resp {
        self.req(Method::HEAD, path).send().await
    }

    /// Sends `request` verbatim over a fresh connection (add
    /// `Connection: close`) and returns the status code and the whole
    /// response text. For request lines the `http` crate would refuse.
    pub async fn raw(&self, request: &[u8]) -> (u16, String) {
        let work = async {
            let mut stream = TcpStream::connect(self.addr).await.expect("connect");
            stream.write_all(request).await.expect("write raw request");
            let mut out = Vec::new();
            // The server may reset instead of closing cleanly after an error.
            let _ = stream.read_to_end(&mut out).await;
            out
        };
        let out = tokio::time::timeout(REQUEST_TIMEOUT, work)
            .await
            .expect("raw request timed out");
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text
            .strip_prefix("HTTP/1.1 ")
            .or_else(|| text.strip_prefix("HTTP/1.0 "))
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no HTTP status line in raw response: {text:?}"));
        (status, text)
    }

    /// Asserts the server still answers `GET /v2/` with 200.
    pub async fn assert_alive(&self) {
        self.get("/v2/").await.assert_status(200);
    }

    // ---- blob helpers -------------------------------------------------

    /// Pushes `data` to `repo` with one monolithic `POST ?digest=`; asserts
    /// 201 and returns the digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = sha256_digest(data);
        let resp = self
            .req(
                Method::POST,
                format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
            )
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await;
        resp.assert_status(201);
        assert_eq!(
            resp.header("docker-content-digest"),
            Some(digest.as_str()),
            "{}",
            resp.describe()
        );
        digest
    }

    /// Opens an upload session in `repo`; asserts 202 and the headers.
    pub async fn start_upload(&self, repo: &str) -> Upload {
        let resp = self
            .req(Method::POST, format!("/v2/{repo}/blobs/uploads/"))
            .send()
            .await;
        resp.assert_status(202);
        Upload::from_response(repo, &resp)
    }

    /// `PATCH`es `data` into `upload` (a streamed chunk, no
    /// `Content-Range`); asserts 202 and follows the new `Location`.
    pub async fn patch(&self, upload: &mut Upload, data: &[u8]) {
        let resp = self
            .req(Method::PATCH, upload.path.clone())
            .body(data.to_vec())
            .send()
            .await;
        resp.assert_status(202);
        upload.follow(&resp);
    }

    /// Pushes `data` to `repo` as `POST`, `PATCH` chunks of `chunk` bytes
    /// with `Content-Range`, then `PUT ?digest=` without body. Asserts every
    /// step and returns the digest.
    pub async fn push_blob_chunked(&self, repo: &str, data: &[u8], chunk: usize) -> String {
        let mut upload = self.start_upload(repo).await;
        for (i, piece) in data.chunks(chunk).enumerate() {
            let start = i * chunk;
            let end = start + piece.len() - 1;
            let resp = self
                .req(Method::PATCH, upload.path.clone())
                .header("content-type", "application/octet-stream")
                .header("content-range", format!("{start}-{end}"))
                .body(piece.to_vec())
                .send()
                .await;
            resp.assert_status(202);
            resp.assert_header("range", &format!("0-{end}"));
            upload.follow(&resp);
        }
        let digest = sha256_digest(data);
        let resp = self
            .req(Method::PUT, upload.with_digest(&digest))
            .send()
            .await;
        resp.assert_status(201);
        resp.assert_header("docker-content-digest", &digest);
        digest
    }

    // ---- manifest helpers ---------------------------------------------

    /// `PUT /v2/<repo>/manifests/<reference>` with `media_type` as
    /// Content-Type; returns the response unchecked.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Resp {
        self.req(Method::PUT, format!("/v2/{repo}/manifests/{reference}"))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
    }

    /// Pushes a manifest and asserts 201 with the right digest; returns it.
    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &'static str,
        body: &[u8],
    ) -> Pushed {
        let resp = self.put_manifest(repo, reference, media_type, body).await;
        resp.assert_status(201);
        let digest = sha256_digest(body);
        resp.assert_header("docker-content-digest", &digest);
        assert!(resp.header("location").is_some(), "{}", resp.describe());
        Pushed {
            digest,
            body: body.to_vec(),
            media_type,
        }
    }

    /// Pushes a config blob and two layer blobs for `flavor` into `repo`
    /// and returns their descriptors; `seed` makes them unique.
    pub async fn push_image_blobs(
        &self,
        repo: &str,
        flavor: Flavor,
        seed: u64,
    ) -> (Descriptor, Vec<Descriptor>) {
        let (config, layers) = image_blobs(flavor, seed);
        self.push_blob(repo, &config.1).await;
        for layer in &layers {
            self.push_blob(repo, &layer.1).await;
        }
        (config.0, layers.into_iter().map(|l| l.0).collect())
    }

    /// Pushes the blobs and manifest of a small image as `repo:reference`.
    pub async fn push_image(
        &self,
        repo: &str,
        reference: &str,
        flavor: Flavor,
        seed: u64,
    ) -> Pushed {
        let (config, layers) = self.push_image_blobs(repo, flavor, seed).await;
        let body = image_manifest(flavor, &config, &layers);
        self.push_manifest(repo, reference, flavor.manifest_type(), &body)
            .await
    }

    // ---- storage helpers ----------------------------------------------

    /// The store's figures, from the guest's `admin.get-stats`.
    pub async fn stats(&self) -> host::StoreStats {
        host::store_stats(&self.data_dir(), &host::GuestSource::Embedded)
            .await
            .expect("stats of the test store")
    }

    /// Waits (up to 60 s) until the background converter has turned every
    /// pushed blob into blocks; returns the figures then.
    pub async fn wait_converted(&self) -> host::StoreStats {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let stats = self.stats().await;
            if stats.pending == 0 {
                return stats;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "conversion still pending after 60 s: {stats:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `data/layers/<digest>/original`: a pushed blob awaiting conversion.
    pub fn original_path(&self, digest: &str) -> PathBuf {
        self.data_dir().join("layers").join(digest).join("original")
    }

    /// Regular files in `data/blocks/??/` (recursively below each `??`).
    pub fn block_files(&self) -> Vec<(PathBuf, u64)> {
        let blocks = self.data_dir().join("blocks");
        let Ok(entries) = std::fs::read_dir(&blocks) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            if entry.path().is_dir() && name.len() == 2 {
                out.extend(walk_files(&entry.path()));
            }
        }
        out
    }

    /// `data/layers/<digest>/recipe.json`.
    pub fn recipe_path(&self, digest: &str) -> PathBuf {
        self.data_dir()
            .join("layers")
            .join(digest)
            .join("recipe.json")
    }

    /// Regular files below `data/uploads/`.
    pub fn upload_files(&self) -> Vec<(PathBuf, u64)> {
        walk_files(&self.data_dir().join("uploads"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// An upload session as the client sees it.
#[derive(Debug, Clone)]
pub struct Upload {
    /// The repository the session was opened in.
    pub repo: String,
    /// The latest `Location`, reduced to path and query.
    pub path: String,
    /// `Docker-Upload-UUID` of the session.
    pub uuid: String,
}

impl Upload {
    /// Reads a 202 session response, asserting `Location` (path
    /// `/v2/<repo>/blobs/uploads/<uuid>`), `Docker-Upload-UUID`, `Range: 0-0`.
    #[track_caller]
    pub fn from_response(repo: &str, resp: &Resp) -> Upload {
        let uuid = resp.expect_header("docker-upload-uuid").to_string();
        assert!(!uuid.is_empty(), "{}", resp.describe());
        let path = location_path(resp.expect_header("location"));
        let bare = path.split('?').next().unwrap_or_default();
        assert_eq!(
            bare,
            format!("/v2/{repo}/blobs/uploads/{uuid}"),
            "upload Location must name the session\n{}",
            resp.describe()
        );
        resp.assert_header("range", "0-0");
        Upload {
            repo: repo.to_string(),
            path,
            uuid,
        }
    }

    /// Follows the `Location` of a later response in the same session.
    #[track_caller]
    pub fn follow(&mut self, resp: &Resp) {
        let path = location_path(resp.expect_header("location"));
        assert!(
            path.starts_with(&format!("/v2/{}/blobs/uploads/", self.repo)),
            "{}",
            resp.describe()
        );
        self.path = path;
    }

    /// The session path with `digest=<digest>` added to its query.
    pub fn with_digest(&self, digest: &str) -> String {
        with_query(&self.path, &format!("digest={digest}"))
    }
}

/// A manifest that was stored.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// `sha256:` digest of `body`.
    pub digest: String,
    /// The exact bytes sent.
    pub body: Vec<u8>,
    /// The Content-Type it was sent with.
    pub media_type: &'static str,
}

/// Which manifest family a fixture image uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Docker schema 2.
    Docker,
    /// OCI image manifest.
    Oci,
}

impl Flavor {
    /// The image manifest media type of this flavor.
    pub fn manifest_type(self) -> &'static str {
        match self {
            Flavor::Docker => media::DOCKER_MANIFEST,
            Flavor::Oci => media::OCI_MANIFEST,
        }
    }

    /// The index / manifest list media type of this flavor.
    pub fn index_type(self) -> &'static str {
        match self {
            Flavor::Docker => media::DOCKER_LIST,
            Flavor::Oci => media::OCI_INDEX,
        }
    }

    fn config_type(self) -> &'static str {
        match self {
            Flavor::Docker => media::DOCKER_CONFIG,
            Flavor::Oci => media::OCI_CONFIG,
        }
    }

    fn layer_type(self) -> &'static str {
        match self {
            Flavor::Docker => media::DOCKER_LAYER,
            Flavor::Oci => media::OCI_LAYER,
        }
    }
}

/// A content descriptor (`mediaType`, `digest`, `size`).
#[derive(Debug, Clone)]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// Its digest.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
}

impl Descriptor {
    /// Describes `data` as `media_type`.
    pub fn of(media_type: &str, data: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.to_string(),
            digest: sha256_digest(data),
            size: data.len() as u64,
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

/// Some content and its descriptor.
pub type Described = (Descriptor, Vec<u8>);

/// Config and layer contents (with descriptors) of a fixture image.
pub fn image_blobs(flavor: Flavor, seed: u64) -> (Described, Vec<Described>) {
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
        "config": {"Labels": {"seed": seed.to_string()}},
    }))
    .expect("serialize config");
    let layers = [
        seeded_bytes(seed * 2 + 1, 1000 + (seed % 97) as usize),
        seeded_bytes(seed * 2 + 2, 5000),
    ];
    (
        (Descriptor::of(flavor.config_type(), &config), config),
        layers
            .into_iter()
            .map(|l| (Descriptor::of(flavor.layer_type(), &l), l))
            .collect(),
    )
}

/// An image manifest of `flavor` naming `config` and `layers`.
pub fn image_manifest(flavor: Flavor, config: &Descriptor, layers: &[Descriptor]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": flavor.manifest_type(),
        "config": config.json(),
        "layers": layers.iter().map(Descriptor::json).collect::<Vec<_>>(),
    }))
    .expect("serialize manifest")
}

/// An index / manifest list of `flavor` over `children`, one platform each.
pub fn index_manifest(flavor: Flavor, children: &[Descriptor]) -> Vec<u8> {
    const ARCHES: &[&str] = &["amd64", "arm64", "riscv64", "s390x", "ppc64le"];
    let manifests: Vec<_> = children
        .iter()
        .enumerate()
        .map(|(i, child)| {
            let mut value = child.json();
            value["platform"] = serde_json::json!({
                "architecture": ARCHES[i % ARCHES.len()],
                "os": "linux",
            });
            value
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": flavor.index_type(),
        "manifests": manifests,
    }))
    .expect("serialize index")
}

/// A request being built by [`Server::req`].
pub struct Req<'a> {
    server: &'a Server,
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    body: ReqBody,
}

enum ReqBody {
    Empty,
    Full(Bytes),
    Chunked(Vec<Bytes>),
}

impl Req<'_> {
    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// Sends `body` with a `Content-Length`.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = ReqBody::Full(body.into());
        self
    }

    /// Sends `chunks` with `Transfer-Encoding: chunked` (no length known).
    pub fn chunked(mut self, chunks: Vec<Vec<u8>>) -> Self {
        self.body = ReqBody::Chunked(chunks.into_iter().map(Bytes::from).collect());
        self
    }

    /// Sends the request on a fresh connection and reads the whole response.
    pub async fn send(self) -> Resp {
        let method = self.method.clone();
        let path = self.path.clone();
        match tokio::time::timeout(REQUEST_TIMEOUT, self.send_inner()).await {
            Ok(resp) => resp,
            Err(_) => panic!("{method} {path} timed out after {REQUEST_TIMEOUT:?}"),
        }
    }

    async fn send_inner(self) -> Resp {
        let stream = TcpStream::connect(self.server.addr)
            .await
            .expect("connect to server");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("http1 handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut builder = Request::builder()
            .method(self.method.clone())
            .uri(self.path.as_str())
            .header("host", self.server.addr.to_string());
        let has_length = self
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
        for (k, v) in &self.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let explicit = self
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("authorization"));
        let default = self
            .server
            .authorization
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let (false, Some(value)) = (explicit, default) {
            builder = builder.header("authorization", value);
        }
        let body: BoxBody<Bytes, Infallible> = match self.body {
            ReqBody::Empty => {
                let needs_length = !matches!(self.method, Method::GET | Method::HEAD);
                if needs_length && !has_length {
                    builder = builder.header("content-length", "0");
                }
                Full::new(Bytes::new()).boxed()
            }
            ReqBody::Full(bytes) => {
                if !has_length {
                    builder = builder.header("content-length", bytes.len().to_string());
                }
                Full::new(bytes).boxed()
            }
            ReqBody::Chunked(chunks) => Chunks(chunks.into()).boxed(),
        };
        let request = builder
            .body(body)
            .unwrap_or_else(|e| panic!("build request {} {}: {e}", self.method, self.path));
        let response = sender
            .send_request(request)
            .await
            .unwrap_or_else(|e| panic!("{} {}: {e}", self.method, self.path));
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{} {}: reading body: {e}", self.method, self.path))
            .to_bytes();
        Resp {
            method: self.method,
            path: self.path,
            status,
            headers,
            body,
        }
    }
}

/// A body of known chunks and unknown length, so hyper sends it chunked.
struct Chunks(VecDeque<Bytes>);

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

/// A complete response.
pub struct Resp {
    /// Method of the request, for messages.
    pub method: Method,
    /// Path of the request, for messages.
    pub path: String,
    /// Status code.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Resp {
    /// The request and response, for assertion messages.
    pub fn describe(&self) -> String {
        let mut text =
            String::from_utf8_lossy(&self.body[..self.body.len().min(1500)]).into_owned();
        if self.body.len() > 1500 {
            text.push_str(&format!("... ({} bytes)", self.body.len()));
        }
        format!(
            "request: {} {}\nresponse: {}\nheaders: {:?}\nbody: {text}",
            self.method,
            truncate(&self.path, 300),
            self.status,
            self.headers
        )
    }

    /// A header as text, if present and ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A header that must be present.
    #[track_caller]
    pub fn expect_header(&self, name: &str) -> &str {
        self.header(name)
            .unwrap_or_else(|| panic!("missing header {name}\n{}", self.describe()))
    }

    /// Asserts a header's exact value.
    #[track_caller]
    pub fn assert_header(&self, name: &str, expected: &str) -> &Self {
        assert_eq!(
            self.header(name),
            Some(expected),
            "header {name}\n{}",
            self.describe()
        );
        self
    }

    /// Asserts the status code.
    #[track_caller]
    pub fn assert_status(&self, expected: u16) -> &Self {
        assert_eq!(
            self.status.as_u16(),
            expected,
            "status\n{}",
            self.describe()
        );
        self
    }

    /// Asserts the status is not a server error.
    #[track_caller]
    pub fn assert_not_5xx(&self) -> &Self {
        assert!(
            !self.status.is_server_error(),
            "bad input caused a 5xx\n{}",
            self.describe()
        );
        self
    }

    /// Asserts `Content-Length` equals `len`.
    #[track_caller]
    pub fn assert_content_length(&self, len: usize) -> &Self {
        self.assert_header("content-length", &len.to_string())
    }

    /// Asserts the body equals `expected`, without printing large bodies.
    #[track_caller]
    pub fn assert_body(&self, expected: &[u8]) -> &Self {
        if self.body.as_ref() != expected {
            let first_diff = self
                .body
                .iter()
                .zip(expected)
                .position(|(a, b)| a != b)
                .unwrap_or(self.body.len().min(expected.len()));
            panic!(
                "body differs: got {} bytes, expected {}, first difference at {first_diff}\n{}",
                self.body.len(),
                expected.len(),
                self.describe()
            );
        }
        self
    }

    /// The body parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON: {e}\n{}", self.describe()))
    }

    /// Asserts `Content-Type` is JSON.
    #[track_caller]
    pub fn assert_json_type(&self) -> &Self {
        let ct = self.expect_header("content-type");
        assert!(
            ct.starts_with("application/json"),
            "content-type {ct}\n{}",
            self.describe()
        );
        self
    }

    /// The `code`s of a spec error body, asserting its shape: a JSON object
    /// with a non-empty `errors` array of objects with string `code` and
    /// `message` and a `detail` member.
    #[track_caller]
    pub fn error_codes(&self) -> Vec<String> {
        let value = self.json();
        let errors = value
            .get("errors")
            .and_then(|e| e.as_array())
            .unwrap_or_else(|| panic!("no errors array\n{}", self.describe()));
        assert!(
            !errors.is_empty(),
            "empty errors array\n{}",
            self.describe()
        );
        errors
            .iter()
            .map(|error| {
                let code = error
                    .get("code")
                    .and_then(|c| c.as_str())
                    .unwrap_or_else(|| panic!("error without string code\n{}", self.describe()));
                assert!(
                    SPEC_ERROR_CODES.contains(&code),
                    "{code} is not a spec error code\n{}",
                    self.describe()
                );
                assert!(
                    error.get("message").is_some_and(|m| m.is_string()),
                    "error without string message\n{}",
                    self.describe()
                );
                assert!(
                    error.get("detail").is_some(),
                    "error without detail\n{}",
                    self.describe()
                );
                code.to_string()
            })
            .collect()
    }

    /// Asserts `status` and a spec error body whose first code is one of
    /// `codes` (any spec code if `codes` is empty).
    #[track_caller]
    pub fn assert_error(&self, status: u16, codes: &[&str]) -> &Self {
        self.assert_status(status);
        self.assert_json_type();
        let got = self.error_codes();
        if !codes.is_empty() {
            assert!(
                codes.contains(&got[0].as_str()),
                "expected code {codes:?}, got {got:?}\n{}",
                self.describe()
            );
        }
        self
    }

    /// Asserts a body is either empty or a spec error body.
    #[track_caller]
    pub fn assert_empty_or_error_body(&self) -> &Self {
        if !self.body.is_empty() {
            self.error_codes();
        }
        self
    }
}

impl std::fmt::Debug for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        text.to_string()
    } else {
        format!("{}... ({} chars)", &text[..max], text.len())
    }
}

/// Runs the futures concurrently on the calling task and returns their
/// outputs in order (join_all without another crate).
pub async fn join_all<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (fut, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match fut.as_mut().poll(cx) {
                    Poll::Ready(v) => *out = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    let hash = Sha256::digest(data);
    let mut out = String::from("sha256:");
    for byte in hash {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// The fixtures the guest's and the core's unit tests use too: one PRNG
/// (`seeded_bytes`), one text generator, one tar writer, one gzip.
pub use blockreg_core::test_support::{gzip, seeded_bytes, tar_of, texty_bytes as text_bytes};

/// A layer as docker makes one: a tar of `files` (path and content, mode
/// 0644, modified at `mtime`), gzip level 6.
pub fn gzip_layer(files: &[(impl AsRef<Path>, Vec<u8>)], mtime: u64) -> Vec<u8> {
    let names: Vec<String> = files
        .iter()
        .map(|(path, _)| path.as_ref().to_string_lossy().into_owned())
        .collect();
    let entries: Vec<(&str, &[u8], u64)> = names
        .iter()
        .zip(files)
        .map(|(name, (_, data))| (name.as_str(), data.as_slice(), mtime))
        .collect();
    gzip(&tar_of(&entries), 6)
}

/// `len` bytes of one short pattern repeated: every aligned 4 KiB block of
/// it is identical when the pattern length divides 4096.
pub fn repetitive_bytes(pattern: &[u8], len: usize) -> Vec<u8> {
    pattern.iter().copied().cycle().take(len).collect()
}

/// Path and query of a `Location` value, which may be absolute or relative.
pub fn location_path(location: &str) -> String {
    for scheme in ["http://", "https://"] {
        if let Some(rest) = location.strip_prefix(scheme) {
            return match rest.find('/') {
                Some(i) => rest[i..].to_string(),
                None => "/".to_string(),
            };
        }
    }
    location.to_string()
}

/// `path` with `param` appended to its query string.
pub fn with_query(path: &str, param: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}{param}")
}

/// Regular files below `dir` with their sizes; empty if `dir` is missing.
pub fn walk_files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                out.push((entry.path(), meta.len()));
            }
        }
    }
    out
}

/// Every entry (file or directory) below `dir`, for confinement checks.
pub fn walk_entries(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            out.push(entry.path());
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_path_strips_scheme_and_authority() {
        assert_eq!(
            location_path("http://127.0.0.1:5/v2/a/blobs/uploads/x?s=1"),
            "/v2/a/blobs/uploads/x?s=1"
        );
        assert_eq!(
            location_path("/v2/a/blobs/uploads/x"),
            "/v2/a/blobs/uploads/x"
        );
    }

    #[test]
    fn with_query_appends_to_an_existing_query() {
        assert_eq!(with_query("/u?state=1", "digest=d"), "/u?state=1&digest=d");
        assert_eq!(with_query("/u", "digest=d"), "/u?digest=d");
    }

    #[test]
    fn seeded_bytes_are_deterministic_and_seed_dependent() {
        assert_eq!(seeded_bytes(7, 100), seeded_bytes(7, 100));
        assert_ne!(seeded_bytes(7, 100), seeded_bytes(8, 100));
        assert_eq!(seeded_bytes(7, 13), seeded_bytes(7, 100)[..13]);
    }

    #[test]
    fn sha256_digest_matches_known_vector() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
