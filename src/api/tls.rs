//! HTTPS for the API: the certificate files (`api.tls.cert_file`, `api.tls.key_file`), a
//! resolver that SIGHUP swaps, and the rustls server configuration.
//!
//! The listener never closes for a renewal: [`CertResolver`] hands every new TLS handshake
//! the certificate it holds now, and [`CertResolver::reload`] replaces it after reading and
//! checking both files (chain parses, key parses, key matches the certificate). A bad pair
//! is refused with a log line and the old certificate stays; connections already open keep
//! the certificate they were made with.
//!
//! rustls with the *ring* provider (the one the rest of the daemon's TLS uses); TLS 1.2 and
//! 1.3; ALPN `http/1.1` (the API speaks HTTP/1.1).

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why a certificate or key file cannot be used. The message names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    /// The certificate file is unreadable, holds no certificate, or does not parse.
    #[error("certificate file {path}: {reason}")]
    Cert {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The key file is unreadable, holds no key, or the key is of an unsupported type.
    #[error("key file {path}: {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The key is not the certificate's.
    #[error("key file {key} does not match certificate file {cert}: {reason}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },
}

fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Reads and checks a certificate chain and its private key (PEM).
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsFileError> {
    let cert_err = |reason: String| TlsFileError::Cert { path: cert.to_path_buf(), reason };
    let key_err = |reason: String| TlsFileError::Key { path: key.to_path_buf(), reason };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(pem_reason(&e)))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(pem_reason(&e)))?;
    if chain.is_empty() {
        return Err(cert_err("no PEM CERTIFICATE block in it".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| key_err(pem_reason(&e)))?;
    // `from_der` parses the end-entity certificate and checks that the key is its key.
    let certified = CertifiedKey::from_der(chain, private, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsFileError::Mismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            reason: e.to_string(),
        },
        other => key_err(other.to_string()),
    })?;
    Ok(certified)
}

fn pem_reason(e: &rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        rustls::pki_types::pem::Error::NoItemsFound => "no PEM block of the expected kind".into(),
        other => format!("not valid PEM ({other:?})"),
    }
}

/// The certificate new handshakes get; [`CertResolver::reload`] swaps it.
pub struct CertResolver {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: ArcSwap<CertifiedKey>,
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertResolver")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

impl CertResolver {
    /// Loads the pair once; fails when either file cannot be used.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<CertResolver, TlsFileError> {
        let key = load_certified_key(cert_file, key_file)?;
        Ok(CertResolver {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            current: ArcSwap::from_pointee(key),
        })
    }

    /// Re-reads both files; on success new handshakes get the new certificate, on failure
    /// the old one stays and the error says why.
    pub fn reload(&self) -> Result<(), TlsFileError> {
        let key = load_certified_key(&self.cert_file, &self.key_file)?;
        self.current.store(Arc::new(key));
        Ok(())
    }

    /// The rustls server configuration over this resolver.
    pub fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        // The ring provider supports the safe default versions: this cannot fail.
        let builder = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|_| {
                rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
                    .with_protocol_versions(&[&rustls::version::TLS13])
                    .unwrap_or_else(|e| unreachable!("ring supports TLS 1.3: {e}"))
            });
        let mut config = builder.with_no_client_auth().with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// Reloads on every SIGHUP (the daemon's configuration reload) until `stop`, logging the
    /// outcome. Fails only when the signal handler cannot be installed.
    pub fn reload_on_sighup(
        self: Arc<Self>,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = signal(SignalKind::hangup())?;
        tokio::spawn(async move {
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    () = &mut stop => return,
                    got = hangups.recv() => {
                        if got.is_none() {
                            return;
                        }
                        match self.reload() {
                            Ok(()) => tracing::info!(
                                cert_file = %self.cert_file.display(),
                                "API certificate reloaded; new connections use it"
                            ),
                            Err(e) => tracing::error!(
                                error = %e,
                                "API certificate reload refused; keeping the running certificate"
                            ),
                        }
                    }
                }
            }
        });
        Ok(())
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}
