//! `tls.options.<name>` turned into a rustls server configuration: versions, TLS 1.2 cipher
//! suites, groups, ALPN and client certificates, with Traefik's names for each.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::ring::{self, cipher_suite, kx_group};
use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::server::WebPkiClientVerifier;
use rustls::{ServerConfig, SupportedCipherSuite, SupportedProtocolVersion};

use super::certs::{CertStore, SniResolver};
use crate::config::TlsOptions;

/// A setting that cannot be used: the key under the options (e.g. `minVersion`) and why.
pub type OptionError = (String, String);

/// ALPN offered when `alpnProtocols` is not set: HTTP/2 first, as Traefik.
const DEFAULT_ALPN: [&str; 2] = ["h2", "http/1.1"];

/// TLS 1.2 suites rustls (ring) has, by their IANA names, which Traefik (Go) uses.
const TLS12_SUITES: [(&str, SupportedCipherSuite); 6] = [
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

/// TLS 1.3 suites: always on (Go does not let them be chosen either); named in
/// `cipherSuites`, they are accepted and change nothing.
const TLS13_SUITES: [(&str, SupportedCipherSuite); 3] = [
    (
        "TLS_AES_128_GCM_SHA256",
        cipher_suite::TLS13_AES_128_GCM_SHA256,
    ),
    (
        "TLS_AES_256_GCM_SHA384",
        cipher_suite::TLS13_AES_256_GCM_SHA384,
    ),
    (
        "TLS_CHACHA20_POLY1305_SHA256",
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ),
];

/// Go's curve names (and the IANA ones) for the groups rustls (ring) has.
const GROUPS: [(&[&str], &dyn SupportedKxGroup); 3] = [
    (&["X25519", "x25519"], kx_group::X25519),
    (&["CurveP256", "secp256r1", "P-256"], kx_group::SECP256R1),
    (&["CurveP384", "secp384r1", "P-384"], kx_group::SECP384R1),
];

/// Builds the server configuration for `opts`, serving certificates from `store`; CA files
/// are read relative to `base`.
pub fn server_config(
    opts: &TlsOptions,
    store: Arc<CertStore>,
    base: &Path,
) -> Result<ServerConfig, OptionError> {
    let versions = versions(opts)?;
    let provider = Arc::new(CryptoProvider {
        cipher_suites: cipher_suites(&opts.cipher_suites)?,
        kx_groups: groups(&opts.curve_preferences)?,
        ..ring::default_provider()
    });
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| ("cipherSuites".to_string(), e.to_string()))?;
    let builder = match client_verifier(opts, base, provider)? {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(SniResolver {
        store,
        strict: opts.sni_strict,
    }));
    config.alpn_protocols = match &opts.alpn_protocols {
        Some(list) => list.iter().map(|p| p.as_bytes().to_vec()).collect(),
        None => DEFAULT_ALPN.iter().map(|p| p.as_bytes().to_vec()).collect(),
    };
    Ok(config)
}

fn version(name: &str, key: &str) -> Result<u8, OptionError> {
    match name {
        "VersionTLS12" => Ok(12),
        "VersionTLS13" => Ok(13),
        "VersionTLS10" | "VersionTLS11" => Err((
            key.to_string(),
            format!("{name} is not supported: wasmgate (rustls) speaks TLS 1.2 and 1.3 only"),
        )),
        other => Err((
            key.to_string(),
            format!("unknown TLS version {other:?}; use VersionTLS12 or VersionTLS13"),
        )),
    }
}

fn versions(opts: &TlsOptions) -> Result<Vec<&'static SupportedProtocolVersion>, OptionError> {
    let min = match &opts.min_version {
        Some(v) => version(v, "minVersion")?,
        None => 12,
    };
    let max = match &opts.max_version {
        Some(v) => version(v, "maxVersion")?,
        None => 13,
    };
    if min > max {
        return Err(("minVersion".into(), "minVersion is above maxVersion".into()));
    }
    let mut out = Vec::new();
    if max >= 13 {
        out.push(&rustls::version::TLS13);
    }
    if min <= 12 {
        out.push(&rustls::version::TLS12);
    }
    Ok(out)
}

fn cipher_suites(names: &[String]) -> Result<Vec<SupportedCipherSuite>, OptionError> {
    let mut suites: Vec<SupportedCipherSuite> = TLS13_SUITES.iter().map(|(_, s)| *s).collect();
    if names.is_empty() {
        suites.extend(TLS12_SUITES.iter().map(|(_, s)| *s));
        return Ok(suites);
    }
    for (i, name) in names.iter().enumerate() {
        if TLS13_SUITES.iter().any(|(n, _)| n == name) {
            continue;
        }
        match TLS12_SUITES.iter().find(|(n, _)| n == name) {
            Some((_, s)) if !suites.contains(s) => suites.push(*s),
            Some(_) => {}
            None => {
                let known: Vec<&str> = TLS12_SUITES.iter().map(|(n, _)| *n).collect();
                return Err((
                    format!("cipherSuites[{i}]"),
                    format!(
                        "cipher suite {name:?} is unknown or not supported (CBC and RSA key \
                         exchange suites are not); supported: {}",
                        known.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(suites)
}

fn groups(names: &[String]) -> Result<Vec<&'static dyn SupportedKxGroup>, OptionError> {
    if names.is_empty() {
        return Ok(ring::default_provider().kx_groups);
    }
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            GROUPS
                .iter()
                .find(|(names, _)| names.contains(&name.as_str()))
                .map(|(_, g)| *g)
                .ok_or_else(|| {
                    (
                        format!("curvePreferences[{i}]"),
                        format!(
                            "curve {name:?} is not supported; use X25519, CurveP256 or CurveP384"
                        ),
                    )
                })
        })
        .collect()
}

fn client_verifier(
    opts: &TlsOptions,
    base: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>, OptionError> {
    let auth = &opts.client_auth;
    let kind = auth.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let optional = match kind {
        "NoClientCert" => return Ok(None),
        "VerifyClientCertIfGiven" => true,
        "RequireAndVerifyClientCert" => false,
        "RequestClientCert" | "RequireAnyClientCert" => {
            return Err((
                "clientAuth.clientAuthType".into(),
                format!(
                    "{kind} (a client certificate taken without verification) is not \
                     supported; use VerifyClientCertIfGiven or RequireAndVerifyClientCert"
                ),
            ))
        }
        other => {
            return Err((
                "clientAuth.clientAuthType".into(),
                format!(
                    "unknown clientAuthType {other:?}; use NoClientCert, \
                     VerifyClientCertIfGiven or RequireAndVerifyClientCert"
                ),
            ))
        }
    };
    if auth.ca_files.is_empty() {
        return Err((
            "clientAuth.caFiles".into(),
            format!("{kind} needs caFiles: the CAs client certificates must chain to"),
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    for (i, file) in auth.ca_files.iter().enumerate() {
        let key = format!("clientAuth.caFiles[{i}]");
        for cert in crate::pem::certificates_of(file, base).map_err(|e| (key.clone(), e))? {
            roots.add(cert).map_err(|e| {
                let shown = crate::pem::shown(file);
                (key.clone(), format!("bad CA certificate in {shown}: {e}"))
            })?;
        }
    }
    let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    if optional {
        builder = builder.allow_unauthenticated();
    }
    builder
        .build()
        .map(Some)
        .map_err(|e| ("clientAuth.caFiles".into(), e.to_string()))
}
