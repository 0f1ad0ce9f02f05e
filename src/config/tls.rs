//! Traefik's TLS configuration: the routing configuration's `tls` section (certificates,
//! stores, options) and the `tls` of routers and entry points that asks for TLS.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The routing configuration's `tls` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsConfig {
    /// Certificates served, chosen by the name the client asks for (SNI).
    #[serde(default)]
    pub certificates: Vec<TlsCertificate>,
    /// Named sets of TLS settings; `default` applies where no other is named.
    #[serde(default)]
    pub options: BTreeMap<String, TlsOptions>,
    /// Certificate stores; only `default` exists, as in Traefik.
    #[serde(default)]
    pub stores: BTreeMap<String, TlsStore>,
}

/// One certificate and its key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsCertificate {
    /// The certificate chain, PEM, the leaf first: a file, or the PEM text itself.
    pub cert_file: String,
    /// Its private key, PEM: a file, or the PEM text itself.
    pub key_file: String,
    /// Stores it belongs to; only `default` exists.
    #[serde(default)]
    pub stores: Vec<String>,
}

/// A certificate store.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsStore {
    /// Served when no certificate matches the client's SNI (or it sent none).
    #[serde(default)]
    pub default_certificate: Option<StoreCertificate>,
    /// Traefik's ACME-generated default; not supported (no ACME).
    #[serde(default)]
    pub default_generated_cert: Option<serde_yaml::Value>,
}

/// A store's default certificate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StoreCertificate {
    /// The certificate chain, PEM: a file, or the PEM text itself.
    pub cert_file: String,
    /// Its private key, PEM: a file, or the PEM text itself.
    pub key_file: String,
}

/// Traefik's `tls.options.<name>`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsOptions {
    /// `VersionTLS12` (the default) or `VersionTLS13`; older versions are refused.
    #[serde(default)]
    pub min_version: Option<String>,
    /// `VersionTLS12` or `VersionTLS13` (the default).
    #[serde(default)]
    pub max_version: Option<String>,
    /// TLS 1.2 cipher suites by their IANA names, in order of preference (TLS 1.3 suites are
    /// always on, as in Go).
    #[serde(default)]
    pub cipher_suites: Vec<String>,
    /// Key exchange groups (`CurveP256`, `CurveP384`, `X25519`), in order of preference.
    #[serde(default)]
    pub curve_preferences: Vec<String>,
    /// Refuse clients whose SNI matches no certificate, instead of serving the default one.
    #[serde(default)]
    pub sni_strict: bool,
    /// Protocols offered by ALPN (default `h2`, `http/1.1`).
    #[serde(default)]
    pub alpn_protocols: Option<Vec<String>>,
    /// Client certificates (mTLS).
    #[serde(default)]
    pub client_auth: ClientAuthConfig,
    /// Traefik's; accepted and ignored (Go's cipher-suite ordering switch).
    #[serde(default)]
    pub prefer_server_cipher_suites: Option<bool>,
}

/// Traefik's `clientAuth`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClientAuthConfig {
    /// CAs client certificates must chain to: PEM files, or PEM text.
    #[serde(default)]
    pub ca_files: Vec<String>,
    /// `NoClientCert` (default), `VerifyClientCertIfGiven` or `RequireAndVerifyClientCert`.
    #[serde(default)]
    pub client_auth_type: Option<String>,
}

/// The `tls` of a router or of an entry point's `http`: serve over TLS.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouterTls {
    /// The `tls.options` to use (default `default`).
    #[serde(default)]
    pub options: Option<String>,
    /// Traefik's ACME resolver; not supported (no ACME).
    #[serde(default)]
    pub cert_resolver: Option<String>,
    /// Traefik's ACME domains; accepted, unused (certificates are chosen by SNI).
    #[serde(default)]
    pub domains: Vec<serde_yaml::Value>,
}
