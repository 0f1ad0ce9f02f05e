//! PEM files: certificates and private keys for TLS, on entry points and toward upstreams.
//!
//! Errors are plain strings naming the file, so that callers can wrap them in a
//! [`ConfigError`](crate::config::ConfigError) at the config path that named the file.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Every certificate in a PEM file (a chain: the leaf first), or an error when it holds none.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?;
    let certs = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad certificate in {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("no usable private key in {}: {e}", path.display()))
}

/// A root store of the certificates in these PEM files.
pub fn root_store(paths: &[&Path]) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for path in paths {
        for cert in certificates(path)? {
            roots
                .add(cert)
                .map_err(|e| format!("bad CA certificate in {}: {e}", path.display()))?;
        }
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_the_file_and_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a pem\n").unwrap();
        let e = certificates(&empty).unwrap_err();
        assert!(e.contains("empty.pem") && e.contains("no PEM certificate"), "{e}");
        let e = private_key(&empty).unwrap_err();
        assert!(e.contains("no usable private key"), "{e}");
        let e = certificates(&dir.path().join("missing.pem")).unwrap_err();
        assert!(e.contains("cannot read"), "{e}");

        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.test".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let good = dir.path().join("good.pem");
        std::fs::write(&good, cert.pem() + &key.serialize_pem()).unwrap();
        assert_eq!(certificates(&good).unwrap().len(), 1);
        assert!(private_key(&good).is_ok());
        assert_eq!(root_store(&[&good]).unwrap().len(), 1);
    }
}
