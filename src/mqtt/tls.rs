//! TLS to the broker (`[mqtt.tls]`): the rustls client configuration both connections use,
//! built from the configured files.
//!
//! # When the files are read
//!
//! [`TlsFiles::client_config`] reads the CA, certificate and key files afresh before every
//! connection attempt, so a fixed or renewed file is used at the next reconnect, without a
//! reload or restart; an established connection keeps the certificate it connected with
//! until it reconnects. `check-config` (and start-up) read them once to report an
//! unreadable or unparsable file by its key and path. A file that breaks while the daemon
//! runs makes the next attempts fail with that reason, and the daemon keeps retrying.
//!
//! # The server's name
//!
//! The server certificate is checked against `mqtt.tls.server_name` (default `mqtt.host`;
//! an IP address is matched against the certificate's IP addresses). The name is checked
//! by wrapping rustls's WebPKI verifier ([`NamedVerifier`]), so a broker reached by an
//! address that is not in its certificate can still be verified under its real name.
//!
//! Without `mqtt.tls.ca_file` the system's roots are trusted (`/etc/ssl/certs`, read once
//! per process through rustls-native-certs). Only the ring crypto provider is compiled in.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The TLS files and the name to verify, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM file of the CA certificates to trust; `None`: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain (mutual TLS), together with [`Self::client_key_file`].
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub client_key_file: Option<PathBuf>,
    /// The name the server's certificate must carry (a DNS name or an IP address).
    pub server_name: String,
}

/// A TLS file or setting that cannot be used; names the configuration key and the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("TLS: {key} {}: {message}", path.display())]
pub struct TlsFileError {
    /// The configuration key, e.g. `mqtt.tls.ca_file`.
    pub key: &'static str,
    /// The file (empty for `mqtt.tls.server_name`).
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

impl TlsFiles {
    /// Reads the files and builds the client configuration.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsFileError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let name = ServerName::try_from(self.server_name.clone()).map_err(|_| TlsFileError {
            key: "mqtt.tls.server_name",
            path: PathBuf::new(),
            message: format!("{:?} is neither a DNS name nor an IP address", self.server_name),
        })?;
        let roots = match &self.ca_file {
            Some(path) => Arc::new(ca_roots("mqtt.tls.ca_file", path)?),
            None => system_roots().map_err(|message| TlsFileError {
                key: "mqtt.tls.ca_file",
                path: PathBuf::from("(unset: the system's roots)"),
                message,
            })?,
        };
        let inner = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| TlsFileError {
                key: "mqtt.tls.ca_file",
                path: self.ca_file.clone().unwrap_or_default(),
                message: e.to_string(),
            })?;
        let verifier = Arc::new(NamedVerifier { inner, name });
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsFileError {
                key: "mqtt.tls.enabled",
                path: PathBuf::new(),
                message: e.to_string(),
            })?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match (&self.client_cert_file, &self.client_key_file) {
            (Some(cert), Some(key)) => {
                let chain = client_chain(cert)?;
                let key_der = client_key(key)?;
                builder.with_client_auth_cert(chain, key_der).map_err(|e| TlsFileError {
                    key: "mqtt.tls.client_key_file",
                    path: key.clone(),
                    message: format!("does not fit the client certificate: {e}"),
                })?
            }
            (None, None) => builder.with_no_client_auth(),
            (Some(_), None) | (None, Some(_)) => {
                return Err(TlsFileError {
                    key: "mqtt.tls.client_cert_file",
                    path: PathBuf::new(),
                    message: "set both mqtt.tls.client_cert_file and mqtt.tls.client_key_file, \
                              or neither"
                        .into(),
                });
            }
        };
        Ok(Arc::new(config))
    }
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|e| TlsFileError {
        key,
        path: path.to_path_buf(),
        message: format!("cannot read: {e}"),
    })
}

fn certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let bytes = read(key, path)?;
    let bad = |message: String| TlsFileError { key, path: path.to_path_buf(), message };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(bad("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into()));
    }
    Ok(certs)
}

/// The trust anchors of the PEM file `path`, the value of the setting `key`; also the
/// PostgreSQL store's `database.ca_file`.
pub(crate) fn ca_roots(key: &'static str, path: &Path) -> Result<RootCertStore, TlsFileError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(key, path)? {
        roots.add(cert).map_err(|e| TlsFileError {
            key,
            path: path.to_path_buf(),
            message: format!("holds a certificate that cannot be a trust anchor: {e}"),
        })?;
    }
    Ok(roots)
}

fn client_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    certificates("mqtt.tls.client_cert_file", path)
}

fn client_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    let key = "mqtt.tls.client_key_file";
    let bytes = read(key, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsFileError {
        key,
        path: path.to_path_buf(),
        message: format!("holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
    })
}

/// The system's roots, read once per process.
fn system_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (_, _) = roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                let why = found.errors.first().map(ToString::to_string).unwrap_or_default();
                Err(format!(
                    "no system CA certificates found (install the Debian package \
                     ca-certificates, or set mqtt.tls.ca_file) {why}"
                ))
            } else {
                Ok(Arc::new(roots))
            }
        })
        .clone()
}

/// rustls's WebPKI verification, with the certificate checked against the configured name
/// instead of the address connected to.
#[derive(Debug)]
struct NamedVerifier {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for NamedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _connected_to: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> TlsFiles {
        TlsFiles {
            ca_file: Some(dir.join("ca.pem")),
            client_cert_file: None,
            client_key_file: None,
            server_name: "localhost".into(),
        }
    }

    #[test]
    fn a_missing_ca_file_is_named_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let e = files(dir.path()).client_config().unwrap_err();
        assert_eq!(e.key, "mqtt.tls.ca_file");
        assert!(e.to_string().contains("ca.pem") && e.message.contains("cannot read"), "{e}");
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), "not a certificate\n").unwrap();
        let e = files(dir.path()).client_config().unwrap_err();
        assert!(e.message.contains("no PEM certificate"), "{e}");
    }

    #[test]
    fn a_bad_server_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = files(dir.path());
        f.server_name = "not a name!".into();
        assert_eq!(f.client_config().unwrap_err().key, "mqtt.tls.server_name");
    }
}
