//! TLS termination on entry points (Traefik's model): the routing configuration's `tls`
//! section gives certificates and options; a router with `tls` (or every router of an entry
//! point with `http.tls`) is served over TLS, and only over TLS, as in Traefik. An entry point
//! with both kinds of routers tells a TLS client from a plain one by the first byte.
//!
//! Everything is built with each snapshot, so certificates and options reload with the
//! routing file.

pub mod certs;
pub mod options;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::ring;
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::config::{ConfigError, TlsConfig};
use certs::CertStore;

/// The options used where none are named.
pub const DEFAULT_OPTIONS: &str = "default";

/// The one certificate store there is, as in Traefik.
const DEFAULT_STORE: &str = "default";

/// The first byte of a TLS record carrying a handshake (a ClientHello).
pub const HANDSHAKE_RECORD: u8 = 0x16;

/// What a connection that completed a TLS handshake negotiated, for routing, forwarded
/// headers and plugins (the HTTP model's type: requests carry it).
pub use wasmgate_abi::model::ConnectionTls as TlsInfo;

/// The TLS of one entry point: the options of routers whose `Host` names the client's SNI,
/// else the entry point's default ones (Traefik's choice of options).
pub struct EntryPointTls {
    default: Arc<ServerConfig>,
    by_host: HashMap<String, Arc<ServerConfig>>,
}

impl EntryPointTls {
    /// The server configuration for a client asking for `sni`.
    pub fn for_sni(&self, sni: Option<&str>) -> Arc<ServerConfig> {
        sni.and_then(|s| {
            let s = s.trim_end_matches('.').to_ascii_lowercase();
            self.by_host.get(&s)
        })
        .unwrap_or(&self.default)
        .clone()
    }
}

/// The TLS server configuration of each entry point that serves TLS, for one snapshot.
#[derive(Default)]
pub struct TlsTable {
    by_entry_point: HashMap<String, Arc<EntryPointTls>>,
}

impl TlsTable {
    /// The TLS of `entry_point`, when it serves TLS.
    pub fn get(&self, entry_point: &str) -> Option<&Arc<EntryPointTls>> {
        self.by_entry_point.get(entry_point)
    }
}

/// One request for TLS: an entry point, the options it names and the config path that asked
/// (for errors).
#[derive(Debug, Clone)]
pub struct TlsUse {
    /// `tls.options` name, [`DEFAULT_OPTIONS`] when none.
    pub options: String,
    /// Where it was asked for, e.g. `http.routers.r.tls`.
    pub path: String,
    /// The file that asked (the install file for entry points, the routing file for routers).
    pub file: std::path::PathBuf,
    /// The hosts the router's rule names (its `Host` matchers): its options apply to clients
    /// whose SNI is one of them; a router naming none sets the entry point's default options.
    pub hosts: Vec<String>,
}

/// Builds the TLS configuration of every entry point in `uses`: certificates from `tls`
/// (files relative to `base`, errors pointing into `file`), one set of options per entry point.
pub fn build(
    tls: &TlsConfig,
    file: &Path,
    base: &Path,
    uses: &BTreeMap<String, Vec<TlsUse>>,
) -> Result<TlsTable, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let store = Arc::new(load_store(tls, file, base, &mut errors));
    let mut built: HashMap<String, Option<Arc<ServerConfig>>> = HashMap::new();
    let mut table = TlsTable::default();
    for (entry_point, asked) in uses {
        let Some(first) = asked.first() else { continue };
        if store.is_empty() {
            errors.push(ConfigError::at(
                &first.file,
                first.path.clone(),
                format!(
                    "entry point {entry_point:?} serves TLS but no certificate is configured \
                     (tls.certificates or tls.stores.default.defaultCertificate; wasmgate has \
                     no ACME)"
                ),
            ));
            continue;
        }
        // Routers without a Host set the default; they must agree.
        let hostless: Vec<&TlsUse> = asked.iter().filter(|u| u.hosts.is_empty()).collect();
        if let Some(other) = hostless.iter().find(|u| u.options != hostless[0].options) {
            errors.push(ConfigError::at(
                &other.file,
                format!("{}.options", other.path),
                format!(
                    "routers of entry point {entry_point:?} without a Host rule ask for \
                     different TLS options ({:?} at {}, {:?} here); options are chosen by the \
                     client's SNI, so a router naming its own needs a Host rule",
                    hostless[0].options, hostless[0].path, other.options
                ),
            ));
            continue;
        }
        // Each set of options is built once per snapshot.
        let mut config = |u: &TlsUse, errors: &mut Vec<ConfigError>| {
            built
                .entry(u.options.clone())
                .or_insert_with(|| options_config(tls, u, file, base, &store, errors))
                .clone()
        };
        let default = match hostless.first() {
            Some(u) => config(u, &mut errors),
            None => config(
                &TlsUse {
                    options: DEFAULT_OPTIONS.into(),
                    ..first.clone()
                },
                &mut errors,
            ),
        };
        let mut by_host: HashMap<String, (Arc<ServerConfig>, &TlsUse)> = HashMap::new();
        for u in asked.iter().filter(|u| !u.hosts.is_empty()) {
            let Some(c) = config(u, &mut errors) else {
                continue;
            };
            for h in &u.hosts {
                match by_host.get(h) {
                    Some((_, other)) if other.options != u.options => {
                        errors.push(ConfigError::at(
                            &u.file,
                            format!("{}.options", u.path),
                            format!(
                                "host {h:?} on entry point {entry_point:?} gets TLS options \
                                 {:?} here and {:?} at {}; one host, one set of options",
                                u.options, other.options, other.path
                            ),
                        ));
                    }
                    Some(_) => {}
                    None => {
                        by_host.insert(h.clone(), (c.clone(), u));
                    }
                }
            }
        }
        if let Some(default) = default {
            table.by_entry_point.insert(
                entry_point.clone(),
                Arc::new(EntryPointTls {
                    default,
                    by_host: by_host.into_iter().map(|(h, (c, _))| (h, c)).collect(),
                }),
            );
        }
    }
    if errors.is_empty() {
        Ok(table)
    } else {
        Err(errors)
    }
}

/// The server configuration of the options `u` names, or `None` with the error recorded.
fn options_config(
    tls: &TlsConfig,
    u: &TlsUse,
    file: &Path,
    base: &Path,
    store: &Arc<CertStore>,
    errors: &mut Vec<ConfigError>,
) -> Option<Arc<ServerConfig>> {
    let name = u.options.as_str();
    let opts = match tls.options.get(name) {
        Some(o) => o.clone(),
        None if name == DEFAULT_OPTIONS => Default::default(),
        None => {
            let mut known: Vec<&str> = tls.options.keys().map(String::as_str).collect();
            if !known.contains(&DEFAULT_OPTIONS) {
                known.push(DEFAULT_OPTIONS);
            }
            errors.push(ConfigError::at(
                &u.file,
                format!("{}.options", u.path),
                format!(
                    "TLS options {name:?} are not defined (tls.options has: {})",
                    known.join(", ")
                ),
            ));
            return None;
        }
    };
    match options::server_config(&opts, store.clone(), base) {
        Ok(config) => Some(Arc::new(config)),
        Err((key, message)) => {
            errors.push(ConfigError::at(
                file,
                format!("tls.options.{name}.{key}"),
                message,
            ));
            None
        }
    }
}

/// Reads every certificate of `tls.certificates` and the default store's default certificate.
fn load_store(
    tls: &TlsConfig,
    file: &Path,
    base: &Path,
    errors: &mut Vec<ConfigError>,
) -> CertStore {
    let mut store = CertStore::default();
    for (i, c) in tls.certificates.iter().enumerate() {
        let path = format!("tls.certificates[{i}]");
        if let Some(s) = c.stores.iter().find(|s| *s != DEFAULT_STORE) {
            errors.push(ConfigError::at(
                file,
                format!("{path}.stores"),
                format!("store {s:?} does not exist; only the \"default\" store does"),
            ));
        }
        match certified_key(base, &c.cert_file, &c.key_file) {
            Ok(key) => match store.add(key) {
                Ok(names) if names.is_empty() => errors.push(ConfigError::at(
                    file,
                    format!("{path}.certFile"),
                    "the certificate names no DNS name (subjectAltName), so no client could \
                     select it by SNI; make it the default certificate \
                     (tls.stores.default.defaultCertificate) instead",
                )),
                Ok(_) => {}
                Err(e) => errors.push(ConfigError::at(file, format!("{path}.certFile"), e)),
            },
            Err((key, e)) => errors.push(ConfigError::at(file, format!("{path}.{key}"), e)),
        }
    }
    for (name, s) in &tls.stores {
        let path = format!("tls.stores.{name}");
        if name != DEFAULT_STORE {
            errors.push(ConfigError::at(
                file,
                path.clone(),
                format!("store {name:?} does not exist; only the \"default\" store does"),
            ));
            continue;
        }
        if s.default_generated_cert.is_some() {
            errors.push(ConfigError::at(
                file,
                format!("{path}.defaultGeneratedCert"),
                "defaultGeneratedCert needs ACME, which wasmgate does not have; give a \
                 defaultCertificate",
            ));
        }
        if let Some(d) = &s.default_certificate {
            match certified_key(base, &d.cert_file, &d.key_file) {
                Ok(key) => store.set_default(key),
                Err((key, e)) => errors.push(ConfigError::at(
                    file,
                    format!("{path}.defaultCertificate.{key}"),
                    e,
                )),
            }
        }
    }
    store
}

/// A certificate chain and its key, checked to belong together. Errors name the key
/// (`certFile` or `keyFile`) they are about.
fn certified_key(
    base: &Path,
    cert_file: &str,
    key_file: &str,
) -> Result<Arc<CertifiedKey>, (&'static str, String)> {
    let chain = crate::pem::certificates_of(cert_file, base).map_err(|e| ("certFile", e))?;
    let key = crate::pem::private_key_of(key_file, base).map_err(|e| ("keyFile", e))?;
    let provider = ring::default_provider();
    let signing = provider.key_provider.load_private_key(key).map_err(|e| {
        let shown = crate::pem::shown(key_file);
        ("keyFile", format!("{shown}: unusable private key: {e}"))
    })?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| {
        let (key, cert) = (crate::pem::shown(key_file), crate::pem::shown(cert_file));
        ("keyFile", format!("{key} is not the key of {cert}: {e}"))
    })?;
    Ok(Arc::new(certified))
}
