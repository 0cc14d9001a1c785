//! HTTPS with rustls (`http.tls`, `--tls-cert`/`--tls-key`).
//!
//! The certificate and key are read at start (a bad pair stops the start)
//! and held by a [`Certificates`] resolver that every handshake asks: a
//! reload swaps its `Arc<CertifiedKey>`, so new connections get the new
//! certificate while open ones keep going. [`watch`] reloads when either
//! file changes (once it has looked the same for one poll, so a file being
//! written is not read half-way) and on SIGHUP; a pair that does not load
//! or does not match is logged and the previous one kept.
//!
//! ALPN offers `h2` and `http/1.1` (or only `http/1.1`); the connection
//! builder in `server.rs` serves either. With `clientcas`, every client must
//! present a certificate signed by one of those CAs.
//!
//! The key must lie outside the data directory, which the guest can read
//! in full.

use crate::guest::{stamp, FileStamp};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::config::{TlsConfig, TlsVersion};
use crate::shutdown::Stop;

/// How often the certificate and key files are checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// The TLS side of a server: the acceptor its connections go through and
/// the resolver that [`watch`] reloads.
pub(crate) struct Tls {
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) certificates: Arc<Certificates>,
}

/// Builds the server's TLS configuration from `config`.
///
/// # Errors
///
/// When the key lies inside `data_dir`, a file cannot be read, the
/// certificate and key do not load or do not match, or a client CA bundle
/// holds no usable certificate.
pub(crate) fn load(config: &TlsConfig, data_dir: &Path, http2: bool) -> anyhow::Result<Tls> {
    crate::datadir::refuse_inside("the TLS key", &config.key, data_dir)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certificates = Arc::new(Certificates {
        certificate: config.certificate.clone(),
        key: config.key.clone(),
        current: RwLock::new(Arc::new(certified_key(
            &config.certificate,
            &config.key,
            &provider,
        )?)),
        provider: provider.clone(),
    });
    let versions: &[&'static rustls::SupportedProtocolVersion] = match config.minimum {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .context("TLS versions")?;
    let builder = if config.client_cas.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        for path in &config.client_cas {
            let certs = read_certificates(path)?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                anyhow::bail!(
                    "client CA bundle {} holds no usable certificate",
                    path.display()
                );
            }
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .context("client certificate verifier")?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut server = builder.with_cert_resolver(certificates.clone());
    server.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Tls {
        acceptor: TlsAcceptor::from(Arc::new(server)),
        certificates,
    })
}

fn read_certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading certificates from {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("reading certificates from {}", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

/// Reads a certificate chain and its key and checks that they belong
/// together.
fn certified_key(
    certificate: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> anyhow::Result<CertifiedKey> {
    let chain = read_certificates(certificate)?;
    let key_der = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the TLS key {}", key.display()))?;
    CertifiedKey::from_der(chain, key_der, provider).with_context(|| {
        format!(
            "the TLS key {} does not fit the certificate {}",
            key.display(),
            certificate.display()
        )
    })
}

/// The certificate every handshake gets; swapped by [`Certificates::reload`].
#[derive(Debug)]
pub(crate) struct Certificates {
    certificate: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    provider: Arc<CryptoProvider>,
}

impl Certificates {
    /// Reads the files again; on success new handshakes use them, on
    /// failure the current pair stays and the error is returned.
    fn reload(&self) -> anyhow::Result<()> {
        let fresh = certified_key(&self.certificate, &self.key, &self.provider)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        Ok(())
    }

    fn reload_and_log(&self, why: &str) {
        match self.reload() {
            Ok(()) => tracing::info!(
                "{why}: TLS certificate {} reloaded",
                self.certificate.display()
            ),
            Err(e) => tracing::error!(
                "{why}: TLS certificate reload refused, the previous one stays: {e:#}"
            ),
        }
    }

    fn stamps(&self) -> (Option<FileStamp>, Option<FileStamp>) {
        (stamp(&self.certificate), stamp(&self.key))
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

/// Reloads the certificate and key when their files change or on SIGHUP,
/// until `stop`.
pub(crate) async fn watch(certificates: Arc<Certificates>, mut stop: Stop) {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut interval = tokio::time::interval(WATCH_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut loaded = certificates.stamps();
    let mut pending = None;
    loop {
        tokio::select! {
            () = stop.stopped() => return,
            Some(()) = async { hangup.as_mut()?.recv().await } => {
                loaded = certificates.stamps();
                pending = None;
                certificates.reload_and_log("SIGHUP");
            }
            _ = interval.tick() => {
                let now = certificates.stamps();
                if now == loaded {
                    pending = None;
                } else if pending == Some(now) {
                    pending = None;
                    loaded = now;
                    certificates.reload_and_log("certificate or key file changed");
                } else {
                    pending = Some(now);
                }
            }
        }
    }
}
