//! Which certificate a TLS client gets: the one whose names match its SNI (exact, then
//! `*.` wildcard), else the store's default certificate, as Traefik chooses.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The certificates of one snapshot, by the DNS names they are valid for.
#[derive(Debug, Default)]
pub struct CertStore {
    /// Lower-case names (`a.example.com`, and `*.example.com` for wildcards).
    by_name: HashMap<String, Arc<CertifiedKey>>,
    /// `tls.stores.default.defaultCertificate`.
    default: Option<Arc<CertifiedKey>>,
}

impl CertStore {
    /// Adds a certificate under every DNS name of its leaf (the first certificate added for a
    /// name wins, as in Traefik's file order). Returns the names.
    pub fn add(&mut self, key: Arc<CertifiedKey>) -> Result<Vec<String>, String> {
        let names = dns_names(&key)?;
        for name in &names {
            self.by_name
                .entry(name.clone())
                .or_insert_with(|| key.clone());
        }
        Ok(names)
    }

    /// Sets the certificate served when nothing else matches.
    pub fn set_default(&mut self, key: Arc<CertifiedKey>) {
        self.default = Some(key);
    }

    /// Whether no certificate at all is known.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty() && self.default.is_none()
    }

    /// The certificate for `sni` (any case), without falling back to the default.
    pub fn matching(&self, sni: &str) -> Option<&Arc<CertifiedKey>> {
        let sni = sni.trim_end_matches('.').to_ascii_lowercase();
        if let Some(k) = self.by_name.get(&sni) {
            return Some(k);
        }
        // A wildcard covers exactly one label.
        let (_, parent) = sni.split_once('.')?;
        self.by_name.get(&format!("*.{parent}"))
    }

    /// The certificate for `sni`, or the default one unless `strict`.
    pub fn choose(&self, sni: Option<&str>, strict: bool) -> Option<Arc<CertifiedKey>> {
        if let Some(k) = sni.and_then(|s| self.matching(s)) {
            return Some(k.clone());
        }
        if strict {
            return None;
        }
        self.default.clone()
    }
}

/// The DNS names (subject alternative names) a certificate's leaf is valid for.
fn dns_names(key: &CertifiedKey) -> Result<Vec<String>, String> {
    let leaf = key.end_entity_cert().map_err(|e| e.to_string())?;
    let cert = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| format!("the certificate cannot be parsed: {e}"))?;
    Ok(cert
        .valid_dns_names()
        .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
        .collect())
}

/// rustls asks this for a certificate at every handshake.
#[derive(Debug)]
pub struct SniResolver {
    /// The certificates.
    pub store: Arc<CertStore>,
    /// `sniStrict`: no default certificate for unknown names.
    pub strict: bool,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let chosen = self.store.choose(hello.server_name(), self.strict);
        if chosen.is_none() {
            tracing::debug!(
                sni = hello.server_name().unwrap_or(""),
                "TLS: no certificate for this name"
            );
        }
        chosen
    }
}
