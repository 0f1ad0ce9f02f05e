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

/// Traefik takes the PEM text itself wherever a file is expected (`certFile`, `rootCAs`...).
pub fn is_inline(value: &str) -> bool {
    value.trim_start().starts_with("-----BEGIN")
}

/// A `certFile`-like value as errors show it: the path, or "the inline PEM".
pub fn shown(value: &str) -> String {
    if is_inline(value) {
        "the inline PEM".to_string()
    } else {
        value.to_string()
    }
}

/// The certificates of a configured value: PEM text, or a file relative to `base`.
pub fn certificates_of(value: &str, base: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    if !is_inline(value) {
        return certificates(&base.join(value));
    }
    let certs = CertificateDer::pem_slice_iter(value.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad certificate in the inline PEM: {e}"))?;
    if certs.is_empty() {
        return Err("the inline PEM holds no certificate".into());
    }
    Ok(certs)
}

/// The private key of a configured value: PEM text, or a file relative to `base`.
pub fn private_key_of(value: &str, base: &Path) -> Result<PrivateKeyDer<'static>, String> {
    if !is_inline(value) {
        return private_key(&base.join(value));
    }
    PrivateKeyDer::from_pem_slice(value.as_bytes())
        .map_err(|e| format!("no usable private key in the inline PEM: {e}"))
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
        assert!(
            e.contains("empty.pem") && e.contains("no PEM certificate"),
            "{e}"
        );
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
        // The same as text, where Traefik takes it too.
        let text = std::fs::read_to_string(&good).unwrap();
        assert!(is_inline(&text) && !is_inline("good.pem"));
        assert_eq!(certificates_of(&text, dir.path()).unwrap().len(), 1);
        assert!(private_key_of(&text, dir.path()).is_ok());
        assert_eq!(certificates_of("good.pem", dir.path()).unwrap().len(), 1);
        assert_eq!(shown(&text), "the inline PEM");
    }
}
