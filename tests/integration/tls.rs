//! HTTPS (`http.tls`): a CA and certificates made by rcgen for the test,
//! a rustls client (the host's own TLS stack) speaking HTTP/1.1 and HTTP/2
//! by ALPN, client certificates when `clientcas` is set, and certificate
//! reload without restart or dropped connections.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use tests::Server;

/// A certificate authority made for one test.
struct Ca {
    params: CertificateParams,
    key: KeyPair,
    cert: rcgen::Certificate,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Ca { params, key, cert }
    }

    /// A leaf certificate for `localhost` and 127.0.0.1 signed by this CA:
    /// (certificate PEM, key PEM, certificate DER).
    fn leaf(&self) -> (String, String, CertificateDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().clone())
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }
}

/// Files of a server certificate, outside the data dir.
struct Files {
    cert: PathBuf,
    key: PathBuf,
}

fn write_leaf(dir: &Path, leaf: &(String, String, CertificateDer<'static>)) -> Files {
    std::fs::create_dir_all(dir).unwrap();
    let files = Files {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    // Written beside and renamed, as a certificate manager does.
    std::fs::write(dir.join("cert.pem.new"), &leaf.0).unwrap();
    std::fs::write(dir.join("key.pem.new"), &leaf.1).unwrap();
    std::fs::rename(dir.join("key.pem.new"), &files.key).unwrap();
    std::fs::rename(dir.join("cert.pem.new"), &files.cert).unwrap();
    files
}

async fn start_tls(
    files: &Files,
    root: tempfile::TempDir,
    adjust: impl FnOnce(&mut host::TlsConfig),
) -> Server {
    let mut config = host::ServeConfig::new(root.path().join("data"));
    let mut tls = host::TlsConfig {
        certificate: files.cert.clone(),
        key: files.key.clone(),
        client_cas: Vec::new(),
        minimum: host::TlsVersion::Tls12,
    };
    adjust(&mut tls);
    config.tls = Some(tls);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    Server::start_from(root, listener.into(), config)
}

fn client_config(
    trusted: &[&Ca],
    alpn: &[u8],
    client_cert: Option<(&Ca, &(String, String, CertificateDer<'static>))>,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for ca in trusted {
        roots.add(ca.cert.der().clone()).unwrap();
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
    let mut config = match client_cert {
        None => builder.with_no_client_auth(),
        Some((_, leaf)) => {
            let key = PrivateKeyDer::from_pem_slice(leaf.1.as_bytes()).unwrap();
            builder
                .with_client_auth_cert(vec![leaf.2.clone()], key)
                .unwrap()
        }
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    // Every connection a full handshake: a resumed session shows the
    // certificate of the session it resumes, not the server's current one.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// What one HTTPS `GET /v2/` saw.
struct Answer {
    status: u16,
    version: Version,
    alpn: Option<Vec<u8>>,
    peer_cert: CertificateDer<'static>,
}

/// Connects over TLS and sends `GET /v2/` with HTTP/2 when ALPN chose it,
/// else HTTP/1.1. Errors (handshake, refused client) come back as text.
async fn get_v2(addr: std::net::SocketAddr, config: Arc<ClientConfig>) -> Result<Answer, String> {
    let work = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let stream = TlsConnector::from(config)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let (_, session) = stream.get_ref();
        let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
        let peer_cert = session.peer_certificates().unwrap()[0].clone().into_owned();
        let request = Request::get(format!("https://localhost:{}/v2/", addr.port()))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = if alpn.as_deref() == Some(b"h2") {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await
                    .map_err(|e| format!("h2 handshake: {e}"))?;
            tokio::spawn(conn);
            sender.send_request(request).await
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| format!("http1 handshake: {e}"))?;
            tokio::spawn(conn);
            let mut request = request;
            *request.uri_mut() = "/v2/".parse().unwrap();
            request.headers_mut().insert(
                "host",
                format!("localhost:{}", addr.port()).parse().unwrap(),
            );
            sender.send_request(request).await
        }
        .map_err(|e| format!("request: {e}"))?;
        let status = response.status().as_u16();
        let version = response.version();
        response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?;
        Ok(Answer {
            status,
            version,
            alpn,
            peer_cert,
        })
    };
    tokio::time::timeout(tests::REQUEST_TIMEOUT, work)
        .await
        .map_err(|_| "timed out".to_owned())?
}

/// Retries until the server (loading its guest) accepts connections.
async fn get_v2_ready(addr: std::net::SocketAddr, config: Arc<ClientConfig>) -> Answer {
    let mut last = String::new();
    for _ in 0..400 {
        match get_v2(addr, config.clone()).await {
            Ok(answer) => return answer,
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no HTTPS answer: {last}");
}

#[tokio::test(flavor = "multi_thread")]
async fn https_serves_v2_over_http1_and_http2_by_alpn() {
    let ca = Ca::new("test ca");
    let root = Server::temp_root();
    let files = write_leaf(&root.path().join("tls"), &ca.leaf());
    let srv = start_tls(&files, root, |_| {}).await;

    let h1 = get_v2_ready(srv.addr(), client_config(&[&ca], b"http/1.1", None)).await;
    assert_eq!(h1.status, 200);
    assert_eq!(h1.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(h1.version, Version::HTTP_11);

    let h2 = get_v2(srv.addr(), client_config(&[&ca], b"h2", None))
        .await
        .unwrap();
    assert_eq!(h2.status, 200);
    assert_eq!(h2.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(h2.version, Version::HTTP_2);

    // A client that does not trust the CA gets no answer.
    let stranger = Ca::new("another ca");
    let refused = get_v2(srv.addr(), client_config(&[&stranger], b"h2", None)).await;
    assert!(refused.is_err(), "an untrusted certificate was accepted");
}

#[tokio::test(flavor = "multi_thread")]
async fn client_certificates_are_required_when_clientcas_is_set() {
    let server_ca = Ca::new("server ca");
    let client_ca = Ca::new("client ca");
    let root = Server::temp_root();
    let files = write_leaf(&root.path().join("tls"), &server_ca.leaf());
    let bundle = root.path().join("tls").join("clients.pem");
    std::fs::write(&bundle, client_ca.pem()).unwrap();
    let srv = start_tls(&files, root, |tls| tls.client_cas = vec![bundle.clone()]).await;

    let client = client_ca.leaf();
    let answer = get_v2_ready(
        srv.addr(),
        client_config(&[&server_ca], b"h2", Some((&client_ca, &client))),
    )
    .await;
    assert_eq!(answer.status, 200);

    let without = get_v2(srv.addr(), client_config(&[&server_ca], b"h2", None)).await;
    assert!(
        without.is_err(),
        "a client without a certificate was served"
    );
    let stranger_ca = Ca::new("stranger ca");
    let stranger = stranger_ca.leaf();
    let wrong = get_v2(
        srv.addr(),
        client_config(&[&server_ca], b"http/1.1", Some((&stranger_ca, &stranger))),
    )
    .await;
    assert!(
        wrong.is_err(),
        "a client certificate of another CA was accepted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_certificate_is_picked_up_without_restart_and_a_bad_one_is_refused() {
    let old_ca = Ca::new("old ca");
    let new_ca = Ca::new("new ca");
    let root = Server::temp_root();
    let dir = root.path().join("tls");
    let old = old_ca.leaf();
    let files = write_leaf(&dir, &old);
    let srv = start_tls(&files, root, |_| {}).await;
    let trust_both = client_config(&[&old_ca, &new_ca], b"http/1.1", None);
    let first = get_v2_ready(srv.addr(), trust_both.clone()).await;
    assert_eq!(first.peer_cert, old.2);

    // An open connection, made before the swap, must keep working.
    let tcp = TcpStream::connect(srv.addr()).await.unwrap();
    let stream = TlsConnector::from(trust_both.clone())
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (mut open, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);

    // A garbage certificate is refused; the old one keeps serving.
    std::fs::write(&files.cert, "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let still = get_v2(srv.addr(), trust_both.clone()).await.unwrap();
    assert_eq!(
        still.peer_cert, old.2,
        "a bad certificate replaced the good one"
    );

    let new = new_ca.leaf();
    write_leaf(&dir, &new);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let answer = get_v2(srv.addr(), trust_both.clone()).await.unwrap();
        if answer.peer_cert == new.2 {
            assert_eq!(answer.status, 200);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificate was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let request = Request::get("/v2/")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = open.send_request(request).await.unwrap();
    assert_eq!(
        response.status(),
        200,
        "the connection opened before the reload"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_certificate_or_a_key_in_the_data_dir_stops_the_start() {
    let ca = Ca::new("ca");
    let root = Server::temp_root();
    let leaf = ca.leaf();
    let data = root.path().join("data");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();

    let inside = write_leaf(&data.join("tls"), &leaf);
    let mut config = host::ServeConfig::new(&data);
    config.tls = Some(host::TlsConfig {
        certificate: inside.cert.clone(),
        key: inside.key.clone(),
        client_cas: Vec::new(),
        minimum: host::TlsVersion::Tls12,
    });
    let err = host::serve(listener, config.clone(), std::future::pending())
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("inside the data directory"),
        "{err:#}"
    );

    let outside = write_leaf(&root.path().join("tls"), &leaf);
    std::fs::write(&outside.cert, "garbage").unwrap();
    let tls = config.tls.as_mut().unwrap();
    tls.certificate = outside.cert.clone();
    tls.key = outside.key.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = host::serve(listener, config.clone(), std::future::pending())
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("cert.pem"), "{err:#}");

    // A key of another certificate.
    write_leaf(&root.path().join("tls"), &leaf);
    std::fs::write(&outside.key, ca.leaf().1).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = host::serve(listener, config, std::future::pending())
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("does not fit"), "{err:#}");
}
