//! Owns turning PEM files into a rustls server configuration: the certificate chain, the
//! private key, optionally the CA whose client certificates are accepted, and the ALPN
//! protocols. Written once for the broker's MQTT/TLS listener and the API server's HTTPS;
//! each daemon keeps its own accept loop.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::{TlsAcceptor, rustls};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("cannot read {path}: {reason}")]
    Pem {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// rustls refused the material.
    #[error("TLS configuration refused: {0}")]
    Rustls(String),
}

fn pem_error(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::Pem {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// The PEM files of a TLS server.
#[derive(Debug, Clone, Copy)]
pub struct ServerPem<'a> {
    /// Certificate chain, leaf first.
    pub cert_file: &'a Path,
    /// The leaf's private key.
    pub key_file: &'a Path,
    /// When set, clients must present a certificate signed by a CA in this file.
    pub client_ca_file: Option<&'a Path>,
}

/// The acceptor for `pem`'s material, offering `alpn` (e.g. `[b"http/1.1"]`; empty for none).
///
/// # Errors
/// When a file cannot be read or holds nothing usable, or rustls refuses the material.
pub fn acceptor(pem: ServerPem<'_>, alpn: &[&[u8]]) -> Result<TlsAcceptor, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(pem.cert_file)
        .map_err(|e| pem_error(pem.cert_file, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error(pem.cert_file, e))?;
    if certs.is_empty() {
        return Err(pem_error(pem.cert_file, "no certificate found"));
    }
    let key = PrivateKeyDer::from_pem_file(pem.key_file).map_err(|e| pem_error(pem.key_file, e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match pem.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| pem_error(ca_file, e))? {
                roots
                    .add(cert.map_err(|e| pem_error(ca_file, e))?)
                    .map_err(|e| pem_error(ca_file, e))?;
            }
            if roots.is_empty() {
                return Err(pem_error(ca_file, "no certificate found"));
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut server = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    server.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(server)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// The error `pem` is refused with, as the operator reads it.
    fn refusal(pem: ServerPem<'_>) -> String {
        match acceptor(pem, &[]) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_self_signed_certificate_and_its_key_give_an_acceptor_offering_the_alpn() {
        let dir = tempfile::tempdir().unwrap();
        let signed = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, signed.cert.pem()).unwrap();
        std::fs::write(&key, signed.signing_key.serialize_pem()).unwrap();
        let pem = ServerPem {
            cert_file: &cert,
            key_file: &key,
            client_ca_file: None,
        };
        let built = acceptor(pem, &[b"http/1.1"]).unwrap();
        assert_eq!(built.config().alpn_protocols, vec![b"http/1.1".to_vec()]);
        // Requiring client certificates signed by it (a self-signed certificate is its own CA).
        let with_ca = ServerPem {
            client_ca_file: Some(&cert),
            ..pem
        };
        assert!(acceptor(with_ca, &[]).is_ok());
    }

    #[test]
    fn a_missing_certificate_file_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let pem = ServerPem {
            cert_file: &cert,
            key_file: &key,
            client_ca_file: None,
        };
        let err = refusal(pem);
        assert!(err.contains("cert.pem"), "{err}");
    }

    #[test]
    fn files_without_certificates_are_refused_with_their_names() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, "not a certificate\n").unwrap();
        let pem = ServerPem {
            cert_file: &cert,
            key_file: &key,
            client_ca_file: None,
        };
        let err = refusal(pem);
        assert!(
            err.contains("cert.pem") && err.contains("no certificate"),
            "{err}"
        );
        let empty_ca = dir.path().join("ca.pem");
        std::fs::write(&empty_ca, "").unwrap();
        let signed = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::write(&cert, signed.cert.pem()).unwrap();
        std::fs::write(&key, signed.signing_key.serialize_pem()).unwrap();
        let pem = ServerPem {
            cert_file: &cert,
            key_file: &key,
            client_ca_file: Some(&empty_ca),
        };
        let err = refusal(pem);
        assert!(err.contains("ca.pem"), "{err}");
    }
}
