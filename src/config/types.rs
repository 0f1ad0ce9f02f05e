//! The configuration as written: Traefik's names, deserialised strictly.
//!
//! Every struct denies unknown fields, so a typo is an error that names the
//! field instead of a setting silently ignored.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::duration::deserialize_opt_duration;
pub use super::tls::{
    ClientAuthConfig, RouterTls, StoreCertificate, TlsCertificate, TlsConfig, TlsOptions, TlsStore,
};

/// The install file: entry points, providers, plugin declarations and, optionally, inline routing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StaticConfig {
    /// Where wasmgate listens, by name.
    #[serde(default)]
    pub entry_points: BTreeMap<String, EntryPointConfig>,
    /// Where the routing configuration comes from when it is not inline.
    #[serde(default)]
    pub providers: ProvidersConfig,
    /// WebAssembly plugins, declared once and compiled once.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginDecl>,
    /// Traefik's own plugin declarations, accepted unchanged.
    #[serde(default)]
    pub experimental: ExperimentalConfig,
    /// Inline routing configuration.
    #[serde(default)]
    pub http: Option<HttpConfig>,
    /// Inline certificates and TLS options (with inline routing).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Where compiled plugins are kept between runs.
    #[serde(default)]
    pub cache: CacheConfig,
    /// The access log (Traefik's `accessLog`); none when absent.
    #[serde(default)]
    pub access_log: Option<AccessLogConfig>,
    /// Traefik's `ping`: `/ping` on the internal entry point; none when absent.
    #[serde(default)]
    pub ping: Option<PingConfig>,
    /// Traefik's `metrics`; none when absent.
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    /// Traefik's `api`: `/api/rawdata` on the internal entry point; none when absent.
    #[serde(default)]
    pub api: Option<ApiConfig>,
}

/// Traefik's `api`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiConfig {
    /// Traefik serves the API on the `traefik` entry point only with `insecure`; wasmgate always
    /// does (accepted for Traefik's files).
    #[serde(default)]
    pub insecure: bool,
    /// Traefik's dashboard: not served by wasmgate (`true` is a config error).
    #[serde(default)]
    pub dashboard: Option<bool>,
}

/// The name of Traefik's internal entry point, which `ping` and `metrics` use unless told
/// otherwise; when they use it and it is not declared, it listens on `:8080`.
pub const INTERNAL_ENTRY_POINT: &str = "traefik";

/// Traefik's `ping`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PingConfig {
    /// The entry point `/ping` is served on (default `traefik`).
    #[serde(default)]
    pub entry_point: Option<String>,
    /// The status `/ping` answers while wasmgate shuts down (default 503).
    #[serde(default)]
    pub terminating_status_code: Option<u16>,
}

/// Traefik's `metrics`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetricsConfig {
    /// Prometheus, scraped at `/metrics`.
    #[serde(default)]
    pub prometheus: Option<PrometheusConfig>,
}

/// Traefik's `metrics.prometheus`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PrometheusConfig {
    /// The entry point `/metrics` is served on (default `traefik`).
    #[serde(default)]
    pub entry_point: Option<String>,
    /// Histogram buckets of request durations, in seconds (default 0.1, 0.3, 1.2, 5).
    #[serde(default)]
    pub buckets: Option<Vec<f64>>,
    /// Per entry point metrics (default true).
    #[serde(default)]
    pub add_entry_points_labels: Option<bool>,
    /// Per router metrics (default false, as in Traefik).
    #[serde(default)]
    pub add_routers_labels: Option<bool>,
    /// Per service metrics (default true).
    #[serde(default)]
    pub add_services_labels: Option<bool>,
}

/// The access log: one line per request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AccessLogConfig {
    /// The file lines are appended to, relative to the install file (default: stdout).
    #[serde(default)]
    pub file_path: Option<String>,
    /// `common` (default) or `json`.
    #[serde(default)]
    pub format: AccessLogFormat,
    /// Lines kept in memory for the writer (default 1024).
    #[serde(default)]
    pub buffering_size: Option<usize>,
    /// Which requests are logged (default: all).
    #[serde(default)]
    pub filters: Option<AccessLogFilters>,
}

/// The access log's line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AccessLogFormat {
    /// Traefik's common log format.
    #[default]
    Common,
    /// One JSON object per line, with Traefik's field names.
    Json,
}

/// Access-log filters: a request is logged when any given filter matches.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AccessLogFilters {
    /// Status codes or ranges: `"404"`, `"500-599"`.
    #[serde(default)]
    pub status_codes: Vec<String>,
    /// Requests that took at least this long.
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    pub min_duration: Option<Duration>,
}

/// The on-disk cache of compiled plugins.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CacheConfig {
    /// The directory, relative to the install file (default: `$XDG_CACHE_HOME/wasmgate`,
    /// else `$HOME/.cache/wasmgate`).
    #[serde(default)]
    pub dir: Option<String>,
    /// Set to false to compile every plugin at every start.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Most bytes of compiled plugins kept; past it the oldest are removed
    /// (default 1 GiB).
    #[serde(default)]
    pub max_size_bytes: Option<u64>,
}

/// One listening address.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EntryPointConfig {
    /// `host:port`, e.g. `127.0.0.1:8080`, or Traefik's `:8080` (every interface), optionally
    /// followed by `/tcp`; port 0 picks a free port.
    pub address: String,
    /// Timeouts and shutdown behaviour.
    #[serde(default)]
    pub transport: EntryPointTransport,
    /// HTTP limits and request-path handling.
    #[serde(default)]
    pub http: EntryPointHttp,
    /// Which peers may set `X-Forwarded-*` and `X-Real-Ip`.
    #[serde(default)]
    pub forwarded_headers: ForwardedHeadersConfig,
    /// HTTP/2 settings.
    #[serde(default)]
    pub http2: EntryPointHttp2,
}

/// Traefik's `entryPoints.<n>.http2`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EntryPointHttp2 {
    /// Streams one HTTP/2 client connection may have open at once (default 250, as Traefik).
    #[serde(default)]
    pub max_concurrent_streams: Option<u32>,
}

/// Traefik's `forwardedHeaders`: whose `X-Forwarded-*` and `X-Real-Ip` are believed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ForwardedHeadersConfig {
    /// Peers (CIDR ranges or addresses) whose forwarded headers are kept and appended to;
    /// from anyone else they are replaced with what wasmgate saw (default: nobody).
    #[serde(default, rename = "trustedIPs")]
    pub trusted_ips: Vec<String>,
    /// Trust every peer (default false).
    #[serde(default)]
    pub insecure: bool,
}

/// Timeouts and shutdown behaviour of an entry point.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EntryPointTransport {
    /// Timeouts toward clients.
    #[serde(default)]
    pub responding_timeouts: RespondingTimeouts,
    /// Shutdown behaviour.
    #[serde(default)]
    pub life_cycle: LifeCycle,
    /// Most client connections open at once (wasmgate's own setting; default 0: no limit).
    /// At the limit, new connections wait in the listen backlog until one closes.
    #[serde(default)]
    pub max_connections: Option<usize>,
}

/// Timeouts toward clients (Traefik's `respondingTimeouts`; `0s` means none).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RespondingTimeouts {
    /// How long a client may take to send a whole request, head and body (default 60s).
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    pub read_timeout: Option<Duration>,
    /// How long writing a response may take, from the end of its request's head (default 0s:
    /// no limit).
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    pub write_timeout: Option<Duration>,
    /// How long an idle keep-alive connection stays open (default 180s; `0s` falls back to
    /// `readTimeout`, as in Go).
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    pub idle_timeout: Option<Duration>,
}

/// Shutdown behaviour.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LifeCycle {
    /// How long in-flight requests may take to finish at shutdown (default 10s).
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    pub grace_time_out: Option<Duration>,
    /// How long the entry point keeps accepting requests after shutdown began, before it
    /// drains (default 0s); `/ping` answers its terminating status meanwhile, so a load
    /// balancer takes this replica out first.
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    pub request_accept_grace_timeout: Option<Duration>,
}

/// HTTP limits and request-path handling of an entry point.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EntryPointHttp {
    /// Largest request head accepted (default 1 MiB); larger gets 431.
    #[serde(default)]
    pub max_header_bytes: Option<usize>,
    /// Percent-encoded characters let through in request paths (default: none; 400).
    #[serde(default)]
    pub encoded_characters: EncodedCharactersConfig,
    /// Remove `.`, `..` and duplicate slashes from request paths (default true).
    #[serde(default = "default_true")]
    pub sanitize_path: bool,
    /// Serve every router of this entry point over TLS, with these options.
    #[serde(default)]
    pub tls: Option<RouterTls>,
}

impl Default for EntryPointHttp {
    fn default() -> Self {
        EntryPointHttp {
            max_header_bytes: None,
            encoded_characters: EncodedCharactersConfig::default(),
            sanitize_path: true,
            tls: None,
        }
    }
}

/// Traefik's `encodedCharacters`: each one, when true, lets that percent-encoded character
/// through in a request path; by default all are answered 400.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EncodedCharactersConfig {
    /// `%2F` (`/`).
    #[serde(default)]
    pub allow_encoded_slash: bool,
    /// `%5C` (`\`).
    #[serde(default)]
    pub allow_encoded_back_slash: bool,
    /// `%00`.
    #[serde(default)]
    pub allow_encoded_null_character: bool,
    /// `%3B` (`;`).
    #[serde(default)]
    pub allow_encoded_semicolon: bool,
    /// `%25` (`%`).
    #[serde(default)]
    pub allow_encoded_percent: bool,
    /// `%3F` (`?`).
    #[serde(default)]
    pub allow_encoded_question_mark: bool,
    /// `%23` (`#`).
    #[serde(default)]
    pub allow_encoded_hash: bool,
}

impl EncodedCharactersConfig {
    /// The decoded bytes whose percent-encoded form is refused.
    pub fn denied(&self) -> Vec<u8> {
        [
            (self.allow_encoded_slash, b'/'),
            (self.allow_encoded_back_slash, b'\\'),
            (self.allow_encoded_null_character, 0),
            (self.allow_encoded_semicolon, b';'),
            (self.allow_encoded_percent, b'%'),
            (self.allow_encoded_question_mark, b'?'),
            (self.allow_encoded_hash, b'#'),
        ]
        .into_iter()
        .filter(|(allowed, _)| !allowed)
        .map(|(_, byte)| byte)
        .collect()
    }
}

/// Where the routing configuration comes from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProvidersConfig {
    /// The file provider.
    #[serde(default)]
    pub file: Option<FileProvider>,
    /// Traefik's etcd provider: routing read from etcd keys under `rootKey`, watched.
    #[serde(default)]
    pub etcd: Option<EtcdProvider>,
    /// Traefik's Redis provider: routing read from Redis keys under `rootKey`.
    #[serde(default)]
    pub redis: Option<RedisProvider>,
}

/// Traefik's `providers.etcd`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EtcdProvider {
    /// `host:port` (or `http://`, `https://` URLs) of the cluster's members (default
    /// `127.0.0.1:2379`).
    #[serde(default = "default_etcd_endpoints")]
    pub endpoints: Vec<String>,
    /// The prefix the routing keys live under (default `traefik`).
    #[serde(default = "default_root_key")]
    pub root_key: String,
    /// User name, with `password`, for etcd's authentication.
    #[serde(default)]
    pub username: Option<String>,
    /// Password of `username`.
    #[serde(default)]
    pub password: Option<String>,
    /// TLS toward etcd (none when absent).
    #[serde(default)]
    pub tls: Option<KvTlsConfig>,
}

/// TLS toward a KV store: files relative to the install file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KvTlsConfig {
    /// The CA certificates (PEM) the store's certificate is checked against.
    #[serde(default)]
    pub ca: Option<String>,
    /// A client certificate (PEM), with `key`.
    #[serde(default)]
    pub cert: Option<String>,
    /// The client certificate's private key (PEM).
    #[serde(default)]
    pub key: Option<String>,
    /// Traefik's option to skip the server certificate check: refused (the etcd client has no
    /// such mode); give `ca` instead.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// Traefik's `providers.redis`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RedisProvider {
    /// `host:port` of the Redis server (default `127.0.0.1:6379`); the first one is used.
    #[serde(default = "default_redis_endpoints")]
    pub endpoints: Vec<String>,
    /// The prefix the routing keys live under (default `traefik`).
    #[serde(default = "default_root_key")]
    pub root_key: String,
    /// User name (Redis 6 ACLs), with `password`.
    #[serde(default)]
    pub username: Option<String>,
    /// Password (`AUTH`).
    #[serde(default)]
    pub password: Option<String>,
    /// The database number (default 0).
    #[serde(default)]
    pub db: i64,
}

fn default_root_key() -> String {
    "traefik".into()
}

fn default_etcd_endpoints() -> Vec<String> {
    vec!["127.0.0.1:2379".into()]
}

fn default_redis_endpoints() -> Vec<String> {
    vec!["127.0.0.1:6379".into()]
}

/// The file provider: routing configuration in one YAML file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileProvider {
    /// The routing file, relative to the install file.
    pub filename: String,
    /// Reload the routing when the file changes (default true, as in Traefik).
    #[serde(default = "default_true")]
    pub watch: bool,
}

/// Which engine runs a plugin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineChoice {
    /// wasmtime (the default).
    #[default]
    Wasmtime,
    /// wasmer.
    Wasmer,
}

/// What a plugin middleware does when its guest fails (Envoy's `failure_policy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicyChoice {
    /// One 503 naming the middleware (the default).
    #[default]
    Closed,
    /// The request skips the middleware.
    Open,
    /// As closed, then fresh instances, with backoff while they keep failing.
    Reload,
}

impl From<FailurePolicyChoice> for wasmgate_abi::FailurePolicy {
    fn from(c: FailurePolicyChoice) -> Self {
        match c {
            FailurePolicyChoice::Closed => wasmgate_abi::FailurePolicy::Closed,
            FailurePolicyChoice::Open => wasmgate_abi::FailurePolicy::Open,
            FailurePolicyChoice::Reload => wasmgate_abi::FailurePolicy::Reload,
        }
    }
}

/// Which ABI a plugin speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AbiChoice {
    /// Detected from the module's exports (the default).
    #[default]
    Auto,
    /// http-wasm (`http_handler` imports), as Traefik runs.
    HttpWasm,
    /// proxy-wasm, as Envoy runs.
    ProxyWasm,
}

/// A plugin declaration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PluginDecl {
    /// The .wasm file, relative to the install file (or `url` instead).
    #[serde(default)]
    pub path: Option<String>,
    /// Where to download the module from, `http://` or `https://` (Envoy's `remote` source:
    /// `http_uri`), instead of `path`; needs `sha256`.
    #[serde(default)]
    pub url: Option<String>,
    /// The module's SHA-256, 64 hex digits: a download that does not match is never run.
    #[serde(default)]
    pub sha256: Option<String>,
    /// With `url`: how long one download attempt may take (default 30s; Envoy's
    /// `http_uri.timeout`).
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    pub timeout: Option<Duration>,
    /// The engine that runs it.
    #[serde(default)]
    pub engine: EngineChoice,
    /// The ABI it speaks.
    #[serde(default)]
    pub abi: AbiChoice,
    /// http-wasm: instances per middleware kept warm (default 16); more are created when
    /// requests need them, up to `maxInstances`. Not used by proxy-wasm.
    #[serde(default)]
    pub pool_size: Option<usize>,
    /// http-wasm: the most instances one middleware may have at once (default: no cap, as the
    /// reference http-wasm host). proxy-wasm: the number of VMs per middleware (default: one
    /// per runtime worker).
    #[serde(default)]
    pub max_instances: Option<usize>,
    /// With `maxInstances`, how long a request waits for a free instance before a 503 (default 5s).
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    pub pool_wait: Option<Duration>,
    /// Largest linear memory of one instance, in bytes (default 1 GiB, at most 4 GiB); address
    /// space is reserved for it, memory is committed only as the guest grows.
    #[serde(default)]
    pub max_memory_bytes: Option<u64>,
    /// CPU deadline of one guest call (default 1s); a guest past it traps.
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    pub call_timeout: Option<Duration>,
    /// Largest body the plugin may have buffered (default 16 MiB).
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    /// Most bytes the host holds on one instance's behalf, all host functions together
    /// (http-wasm: per request; proxy-wasm: per VM, and again for the plugin's shared data,
    /// queues and metric names). Default 64 MiB, or twice `maxBodyBytes` when that is more.
    #[serde(default)]
    pub max_host_bytes: Option<usize>,
    /// proxy-wasm only: the VM configuration (buffer 6, given to `proxy_on_vm_start`).
    #[serde(default)]
    pub vm_config: Option<String>,
    /// proxy-wasm only: the root id (`plugin_root_id` property); default empty.
    #[serde(default)]
    pub root_id: Option<String>,
    /// proxy-wasm only: the VM id (`plugin_vm_id` property; default the plugin's name).
    /// Plugins with one VM id share shared data, shared queues and metrics, as in Envoy, and
    /// must then declare the same `maxHostBytes`.
    #[serde(default)]
    pub vm_id: Option<String>,
    /// proxy-wasm only: environment variables the guest sees through WASI `environ_get`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// What a guest failure does, for every middleware running the plugin unless the
    /// middleware says otherwise (default `closed`).
    #[serde(default)]
    pub failure_policy: Option<FailurePolicyChoice>,
    /// The most verbose level the plugin logs at (default: as `--log-level` allows).
    #[serde(default)]
    pub log_level: Option<PluginLogLevel>,
}

/// A plugin's `logLevel`, in Traefik's spelling or lower case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginLogLevel {
    /// Everything.
    #[serde(alias = "TRACE")]
    Trace,
    /// Debug and above.
    #[serde(alias = "DEBUG")]
    Debug,
    /// Info and above.
    #[serde(alias = "INFO")]
    Info,
    /// Warnings and errors.
    #[serde(alias = "WARN")]
    Warn,
    /// Errors only (Traefik's `FATAL` and `PANIC` mean the same here).
    #[serde(
        alias = "ERROR",
        alias = "FATAL",
        alias = "PANIC",
        alias = "fatal",
        alias = "panic"
    )]
    Error,
    /// Nothing.
    #[serde(alias = "OFF")]
    Off,
}

impl From<PluginLogLevel> for tracing::level_filters::LevelFilter {
    fn from(l: PluginLogLevel) -> Self {
        use tracing::level_filters::LevelFilter;
        match l {
            PluginLogLevel::Trace => LevelFilter::TRACE,
            PluginLogLevel::Debug => LevelFilter::DEBUG,
            PluginLogLevel::Info => LevelFilter::INFO,
            PluginLogLevel::Warn => LevelFilter::WARN,
            PluginLogLevel::Error => LevelFilter::ERROR,
            PluginLogLevel::Off => LevelFilter::OFF,
        }
    }
}

/// Traefik's `experimental` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExperimentalConfig {
    /// Plugins found under `plugins-local/src/<moduleName>/`.
    #[serde(default)]
    pub local_plugins: BTreeMap<String, LocalPlugin>,
    /// Remote plugins: Traefik downloads these; wasmgate cannot and says so.
    #[serde(default)]
    pub plugins: BTreeMap<String, serde_yaml::Value>,
}

/// One of Traefik's local plugins.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LocalPlugin {
    /// The directory under `plugins-local/src/`.
    pub module_name: String,
    /// Traefik's per-plugin settings (accepted, unused).
    #[serde(default)]
    pub settings: Option<serde_yaml::Value>,
}

/// The routing configuration: Traefik's `http` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpConfig {
    /// Routers by name.
    #[serde(default)]
    pub routers: BTreeMap<String, RouterConfig>,
    /// Middlewares by name.
    #[serde(default)]
    pub middlewares: BTreeMap<String, MiddlewareConfig>,
    /// Services by name.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceConfig>,
    /// How wasmgate talks to upstream servers, by name.
    #[serde(default)]
    pub servers_transports: BTreeMap<String, ServersTransportConfig>,
}

/// The routing file: an `http` section and a `tls` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingFile {
    /// The routing configuration.
    #[serde(default)]
    pub http: HttpConfig,
    /// Certificates and TLS options.
    #[serde(default)]
    pub tls: TlsConfig,
}

/// A router: a rule, the middlewares to run and the service to call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouterConfig {
    /// The rule, e.g. ``Host(`a.localhost`) && PathPrefix(`/api`)``.
    pub rule: String,
    /// Entry points it serves; all of them when empty.
    #[serde(default)]
    pub entry_points: Vec<String>,
    /// Middlewares, in order.
    #[serde(default)]
    pub middlewares: Vec<String>,
    /// The service.
    pub service: String,
    /// Higher first; defaults to the rule's length.
    #[serde(default)]
    pub priority: Option<i64>,
    /// Serve this router over TLS (and only over TLS, as in Traefik).
    #[serde(default)]
    pub tls: Option<RouterTls>,
}

/// A middleware definition as written: a map with exactly one kind set (checked by [`MiddlewareConfig::kind`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MiddlewareConfig {
    /// Adds, replaces or removes headers.
    #[serde(default)]
    pub headers: Option<HeadersMiddlewareConfig>,
    /// Removes a path prefix.
    #[serde(default)]
    pub strip_prefix: Option<StripPrefixConfig>,
    /// Runs other middlewares in order.
    #[serde(default)]
    pub chain: Option<ChainConfig>,
    /// A WebAssembly plugin: `{ pluginName: config }`.
    #[serde(default)]
    pub plugin: Option<BTreeMap<String, serde_json::Value>>,
    /// With `plugin` only (wasmgate's own key, beside the kind): what a guest failure does
    /// here, over the plugin declaration's `failurePolicy`.
    #[serde(default)]
    pub failure_policy: Option<FailurePolicyChoice>,
}

/// The one kind a middleware definition has.
#[derive(Debug, Clone, Copy)]
pub enum MiddlewareKind<'a> {
    /// `headers`.
    Headers(&'a HeadersMiddlewareConfig),
    /// `stripPrefix`.
    StripPrefix(&'a StripPrefixConfig),
    /// `chain`.
    Chain(&'a ChainConfig),
    /// `plugin`.
    Plugin(&'a BTreeMap<String, serde_json::Value>),
}

impl MiddlewareConfig {
    /// The kind that is set, or an error when none or several are.
    pub fn kind(&self) -> Result<MiddlewareKind<'_>, String> {
        if self.failure_policy.is_some() && self.plugin.is_none() {
            return Err("failurePolicy applies to plugin middlewares only".into());
        }
        let mut kinds = Vec::new();
        if let Some(h) = &self.headers {
            kinds.push(MiddlewareKind::Headers(h));
        }
        if let Some(s) = &self.strip_prefix {
            kinds.push(MiddlewareKind::StripPrefix(s));
        }
        if let Some(c) = &self.chain {
            kinds.push(MiddlewareKind::Chain(c));
        }
        if let Some(p) = &self.plugin {
            kinds.push(MiddlewareKind::Plugin(p));
        }
        match kinds.len() {
            1 => Ok(kinds[0]),
            0 => Err(
                "a middleware needs exactly one kind: headers, stripPrefix, chain or plugin".into(),
            ),
            _ => Err("a middleware has exactly one kind, but several are given".into()),
        }
    }
}

/// The `headers` middleware.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HeadersMiddlewareConfig {
    /// Set on the request; an empty value removes the header.
    #[serde(default)]
    pub custom_request_headers: BTreeMap<String, String>,
    /// Set on the response; an empty value removes the header.
    #[serde(default)]
    pub custom_response_headers: BTreeMap<String, String>,
}

/// The `stripPrefix` middleware.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StripPrefixConfig {
    /// Prefixes to remove; the first that matches is removed.
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// Deprecated in Traefik; accepted and ignored.
    #[serde(default)]
    pub force_slash: Option<bool>,
}

/// The `chain` middleware.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ChainConfig {
    /// Middlewares, in order.
    pub middlewares: Vec<String>,
}

/// A service definition. `loadBalancer` is the one kind wasmgate has.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceConfig {
    /// Spreads requests over servers.
    pub load_balancer: LoadBalancerConfig,
}

/// The `loadBalancer` service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LoadBalancerConfig {
    /// The servers.
    pub servers: Vec<ServerConfig>,
    /// Forward the client's Host header (default true).
    #[serde(default = "default_true")]
    pub pass_host_header: bool,
    /// The servers transport to use.
    #[serde(default)]
    pub servers_transport: Option<String>,
    /// Active health checks of the servers (none when absent).
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
}

/// Traefik's `loadBalancer.healthCheck`: a server whose check fails leaves the rotation until a
/// check passes again.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HealthCheckConfig {
    /// The path checked, e.g. `/health`.
    pub path: String,
    /// How often each server is checked (default 30s).
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    pub interval: Option<Duration>,
    /// How long a check may take before it fails (default 5s).
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    pub timeout: Option<Duration>,
    /// `http` or `https` (default: the server's).
    #[serde(default)]
    pub scheme: Option<String>,
    /// The Host header of checks (default: the server's host).
    #[serde(default)]
    pub hostname: Option<String>,
    /// The port checked (default: the server's).
    #[serde(default)]
    pub port: Option<u16>,
    /// Headers sent with each check.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The method (default GET).
    #[serde(default)]
    pub method: Option<String>,
    /// The status a healthy server answers (default: any 2xx or 3xx).
    #[serde(default)]
    pub status: Option<u16>,
}

/// One upstream server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServerConfig {
    /// `http://host:port[/path]`, `https://host[:port][/path]` (TLS; HTTP/2 when the server
    /// picks it), or `h2c://host:port` for cleartext HTTP/2.
    pub url: String,
    /// Relative share of requests (default 1).
    #[serde(default)]
    pub weight: Option<u32>,
}

/// How wasmgate talks to upstream servers.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServersTransportConfig {
    /// Timeouts toward upstreams.
    #[serde(default)]
    pub forwarding_timeouts: ForwardingTimeouts,
    /// Idle connections kept per upstream host (default 200, as in Traefik).
    #[serde(default)]
    pub max_idle_conns_per_host: Option<usize>,
    /// The name `https://` servers are asked for (SNI) and must hold a certificate for
    /// (default: the host of the server's URL).
    #[serde(default)]
    pub server_name: Option<String>,
    /// No verification of `https://` servers' certificates at all (a warning is logged).
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// CA certificates (PEM files, or PEM text) `https://` servers' certificates must chain to,
    /// instead of the system's roots.
    #[serde(default, rename = "rootCAs")]
    pub root_cas: Vec<String>,
    /// Client certificates offered to `https://` servers that ask for one (mTLS).
    #[serde(default)]
    pub certificates: Vec<CertificateFiles>,
    /// Offer only HTTP/1.1 to `https://` servers (by default `h2` is offered too, in ALPN, and
    /// the server picks).
    #[serde(default, rename = "disableHTTP2")]
    pub disable_http2: bool,
    /// Traefik's check of a URI SAN in the server's certificate: refused (not supported).
    #[serde(default, rename = "peerCertURI")]
    pub peer_cert_uri: Option<String>,
}

impl ServersTransportConfig {
    /// Whether any TLS setting is given (they matter only to `https://` servers).
    pub fn has_tls_settings(&self) -> bool {
        self.server_name.is_some()
            || self.insecure_skip_verify
            || !self.root_cas.is_empty()
            || !self.certificates.is_empty()
            || self.disable_http2
            || self.peer_cert_uri.is_some()
    }
}

/// Timeouts toward upstreams.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ForwardingTimeouts {
    /// Connecting (default 30s); a failure is a 502.
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    pub dial_timeout: Option<Duration>,
    /// Waiting for the response head (default 60s); a timeout is a 504.
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    pub response_header_timeout: Option<Duration>,
    /// How long an idle pooled connection is kept (default 90s).
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    pub idle_conn_timeout: Option<Duration>,
}

fn default_true() -> bool {
    true
}

/// A certificate and its private key, as Traefik names them: PEM files (relative paths resolve
/// against the directory of the file that holds the setting), or the PEM text itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CertificateFiles {
    /// The certificate chain, leaf first.
    pub cert_file: String,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
}
