//! Prometheus metrics under Traefik's names (`metrics.prometheus`), scraped at `/metrics` on
//! the internal entry point.
//!
//! Off unless configured, as in Traefik: a gateway without `metrics` records nothing, so the
//! request path pays one `Option` check. With it, each request costs one label lookup per
//! family it is counted in.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use wasmgate_abi::guest::CustomKind;
use wasmgate_abi::Middleware;

use crate::config::PrometheusConfig;

/// Traefik's default duration buckets, in seconds.
pub const DEFAULT_BUCKETS: [f64; 4] = [0.1, 0.3, 1.2, 5.0];

/// Labels of the entry point families.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EntryPointLabels {
    code: u16,
    method: String,
    protocol: &'static str,
    entrypoint: String,
}

/// Labels of the router families.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouterLabels {
    code: u16,
    method: String,
    protocol: &'static str,
    router: String,
    service: String,
}

/// Labels of the service families.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    code: u16,
    method: String,
    protocol: &'static str,
    service: String,
}

/// Labels of the provider sync gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    provider: String,
}

/// Labels of the configuration info gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConfigInfoLabels {
    hash: String,
}

/// Labels of the open connections gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    entrypoint: String,
    protocol: &'static str,
}

/// Makes each histogram of a family with the configured buckets.
#[derive(Clone)]
struct Buckets(Arc<[f64]>);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

type Durations<L> = Family<L, Histogram, Buckets>;

/// `traefik_<what>_requests_total` and `traefik_<what>_request_duration_seconds`, registered.
fn pair<L>(
    registry: &mut Registry,
    buckets: &Buckets,
    what: &str,
) -> (Family<L, Counter>, Durations<L>)
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    let requests = Family::default();
    let durations = Family::new_with_constructor(buckets.clone());
    registry.register(
        format!("traefik_{what}_requests"),
        format!(
            "How many HTTP requests processed on a {what}, by status code, method and protocol"
        ),
        requests.clone(),
    );
    registry.register(
        format!("traefik_{what}_request_duration_seconds"),
        format!("How long a {what} took to answer HTTP requests, in seconds"),
        durations.clone(),
    );
    (requests, durations)
}

/// What one finished request is counted under.
pub struct RequestRecord<'a> {
    /// The entry point it arrived on.
    pub entry_point: &'a str,
    /// Its method.
    pub method: &'a http::Method,
    /// The status it was answered with.
    pub status: u16,
    /// The router that took it, if one did.
    pub router: Option<&'a str>,
    /// That router's service.
    pub service: Option<&'a str>,
    /// From its arrival to its response head.
    pub duration: Duration,
}

/// The metrics of one gateway.
pub struct Metrics {
    registry: Registry,
    entry_points: Option<(
        Family<EntryPointLabels, Counter>,
        Durations<EntryPointLabels>,
    )>,
    routers: Option<(Family<RouterLabels, Counter>, Durations<RouterLabels>)>,
    services: Option<(Family<ServiceLabels, Counter>, Durations<ServiceLabels>)>,
    open_connections: Family<ConnectionLabels, Gauge>,
    reloads: Counter,
    reload_failures: Counter,
    last_reload_success: Gauge,
    last_reload_failure: Gauge,
    provider_last_sync: Family<ProviderLabels, Gauge>,
    config_info: Family<ConfigInfoLabels, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Metrics {
    /// The metrics `cfg` asks for, registered under Traefik's names.
    pub fn new(cfg: &PrometheusConfig) -> Metrics {
        let mut registry = Registry::default();
        let buckets = Buckets(
            cfg.buckets
                .clone()
                .unwrap_or_else(|| DEFAULT_BUCKETS.to_vec())
                .into(),
        );
        let entry_points = cfg
            .add_entry_points_labels
            .unwrap_or(true)
            .then(|| pair(&mut registry, &buckets, "entrypoint"));
        let routers = cfg
            .add_routers_labels
            .unwrap_or(false)
            .then(|| pair(&mut registry, &buckets, "router"));
        let services = cfg
            .add_services_labels
            .unwrap_or(true)
            .then(|| pair(&mut registry, &buckets, "service"));
        let open_connections = Family::default();
        registry.register(
            "traefik_open_connections",
            "How many connections are open, by entry point and protocol",
            open_connections.clone(),
        );
        let reloads = Counter::default();
        registry.register(
            "traefik_config_reloads",
            "Routing configuration reloads applied",
            reloads.clone(),
        );
        let reload_failures = Counter::default();
        registry.register(
            "traefik_config_reloads_failure",
            "Routing configuration reloads refused (the previous configuration kept serving)",
            reload_failures.clone(),
        );
        let last_reload_success = Gauge::default();
        registry.register(
            "traefik_config_last_reload_success",
            "When the last reload was applied (the start counts as one), in Unix seconds",
            last_reload_success.clone(),
        );
        last_reload_success.set(unix_now());
        let last_reload_failure = Gauge::default();
        registry.register(
            "traefik_config_last_reload_failure",
            "When the last reload was refused, in Unix seconds (0: never)",
            last_reload_failure.clone(),
        );
        let provider_last_sync = Family::default();
        registry.register(
            "wasmgate_provider_last_sync_timestamp_seconds",
            "When each KV provider's routing was last read and is being served, in Unix seconds",
            provider_last_sync.clone(),
        );
        let config_info = Family::default();
        registry.register(
            "wasmgate_config_info",
            "The routing being served, by hash: equal on replicas serving the same routing",
            config_info.clone(),
        );
        Metrics {
            provider_last_sync,
            config_info,
            registry,
            entry_points,
            routers,
            services,
            open_connections,
            reloads,
            reload_failures,
            last_reload_success,
            last_reload_failure,
        }
    }

    /// Counts a finished request in every family it belongs to.
    pub fn request(&self, r: &RequestRecord<'_>) {
        let seconds = r.duration.as_secs_f64();
        let method = r.method.as_str();
        if let Some((count, time)) = &self.entry_points {
            let labels = EntryPointLabels {
                code: r.status,
                method: method.to_string(),
                protocol: "http",
                entrypoint: r.entry_point.to_string(),
            };
            time.get_or_create(&labels).observe(seconds);
            count.get_or_create(&labels).inc();
        }
        let (Some(router), Some(service)) = (r.router, r.service) else {
            return;
        };
        if let Some((count, time)) = &self.routers {
            let labels = RouterLabels {
                code: r.status,
                method: method.to_string(),
                protocol: "http",
                router: router.to_string(),
                service: service.to_string(),
            };
            time.get_or_create(&labels).observe(seconds);
            count.get_or_create(&labels).inc();
        }
        if let Some((count, time)) = &self.services {
            let labels = ServiceLabels {
                code: r.status,
                method: method.to_string(),
                protocol: "http",
                service: service.to_string(),
            };
            time.get_or_create(&labels).observe(seconds);
            count.get_or_create(&labels).inc();
        }
    }

    /// A connection opened on `entry_point`; the guard counts it closed when dropped.
    pub fn connection_opened(self: &Arc<Self>, entry_point: &str) -> OpenConnection {
        let labels = ConnectionLabels {
            entrypoint: entry_point.to_string(),
            protocol: "TCP",
        };
        let gauge = self.open_connections.get_or_create(&labels).clone();
        gauge.inc();
        OpenConnection(gauge)
    }

    /// A routing reload was applied (`true`) or refused.
    pub fn reloaded(&self, applied: bool) {
        if applied {
            self.reloads.inc();
            self.last_reload_success.set(unix_now());
        } else {
            self.reload_failures.inc();
            self.last_reload_failure.set(unix_now());
        }
    }

    /// `provider` read its store and its routing is being served.
    pub fn provider_synced(&self, provider: &str) {
        self.provider_last_sync
            .get_or_create(&ProviderLabels {
                provider: provider.to_string(),
            })
            .set(unix_now());
    }

    /// The routing with hash `hash` is now served (one series at a time).
    pub fn config_applied(&self, hash: &str) {
        self.config_info.clear();
        self.config_info
            .get_or_create(&ConfigInfoLabels {
                hash: hash.to_string(),
            })
            .set(1);
    }

    /// The text exposition format, as `/metrics` serves it: the gateway's own metrics, then
    /// those of the plugin middlewares `plugins` (the snapshot being served), read now.
    pub fn encode(&self, plugins: &[(String, Arc<dyn Middleware>)]) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        // One exposition ends with one `# EOF`: the plugins' part, built per scrape, follows.
        if let Some(head) = out.strip_suffix("# EOF\n") {
            out.truncate(head.len());
        }
        let _ = prometheus_client::encoding::text::encode(&mut out, &plugin_registry(plugins));
        out
    }
}

/// Labels of the plugin middleware families.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    middleware: String,
    plugin: String,
}

/// Labels of the per-phase plugin families.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    middleware: String,
    plugin: String,
    phase: &'static str,
}

/// Labels of the instances gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    middleware: String,
    plugin: String,
    state: &'static str,
}

/// A metric name made of `parts`: characters Prometheus does not allow become `_`.
fn metric_name(parts: &[&str]) -> String {
    let mut name: String = parts
        .join("_")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name
}

/// The plugin middlewares' metrics, read from them now: wasmgate's own names (Traefik has no
/// plugin metrics), and each proxy-wasm filter's own metrics under its plugin's name.
fn plugin_registry(plugins: &[(String, Arc<dyn Middleware>)]) -> Registry {
    let mut registry = Registry::default();
    let calls = Family::<PhaseLabels, Counter>::default();
    let seconds = Family::<PhaseLabels, Counter<f64, AtomicU64>>::default();
    let failures = Family::<PluginLabels, Counter>::default();
    let refused = Family::<PluginLabels, Counter>::default();
    let instances = Family::<InstanceLabels, Gauge>::default();
    let memory = Family::<PluginLabels, Gauge>::default();
    // A filter's metrics belong to its plugin (shared by its middlewares): once per plugin.
    let mut custom_seen = std::collections::HashSet::new();
    for (middleware, m) in plugins {
        let Some(s) = m.stats() else { continue };
        let labels = PluginLabels {
            middleware: middleware.clone(),
            plugin: s.plugin.clone(),
        };
        for (phase, n, secs) in &s.phases {
            if *n == 0 {
                continue;
            }
            let l = PhaseLabels {
                middleware: middleware.clone(),
                plugin: s.plugin.clone(),
                phase,
            };
            calls.get_or_create(&l).inc_by(*n);
            seconds.get_or_create(&l).inc_by(*secs);
        }
        failures.get_or_create(&labels).inc_by(s.failures);
        refused.get_or_create(&labels).inc_by(s.refused);
        for (state, n) in [("idle", s.instances_idle), ("busy", s.instances_busy)] {
            let l = InstanceLabels {
                middleware: middleware.clone(),
                plugin: s.plugin.clone(),
                state,
            };
            instances.get_or_create(&l).set(n as i64);
        }
        memory.get_or_create(&labels).set(s.memory_bytes as i64);
        if !custom_seen.insert(s.plugin.clone()) {
            continue;
        }
        for (name, kind, value) in &s.custom {
            let base = name.strip_suffix("_total").unwrap_or(name);
            let full = metric_name(&[&s.plugin, base]);
            let help = format!("Defined by plugin {}'s filter as {name:?}", s.plugin);
            match kind {
                CustomKind::Counter => {
                    let c = Counter::<f64, AtomicU64>::default();
                    c.inc_by(*value);
                    registry.register(full, help, c);
                }
                CustomKind::Gauge | CustomKind::Histogram => {
                    let g = Gauge::<f64, AtomicU64>::default();
                    g.set(*value);
                    registry.register(full, help, g);
                }
            }
        }
    }
    registry.register(
        "wasmgate_plugin_calls",
        "Guest calls of a plugin middleware, by phase (proxy-wasm: callback)",
        calls,
    );
    registry.register(
        "wasmgate_plugin_call_seconds",
        "Time spent in guest calls, by phase (counted when metrics are on)",
        seconds,
    );
    registry.register(
        "wasmgate_plugin_failures",
        "Guest failures (traps, deadlines, broken contracts) of a plugin middleware",
        failures,
    );
    registry.register(
        "wasmgate_plugin_refused",
        "Requests a reload-policy middleware refused during its backoff",
        refused,
    );
    registry.register(
        "wasmgate_plugin_instances",
        "Instances (proxy-wasm: VMs, and live streams as busy) of a plugin middleware",
        instances,
    );
    registry.register(
        "wasmgate_plugin_memory_bytes",
        "Linear memory of a plugin middleware's live instances",
        memory,
    );
    registry
}

/// One open connection in `traefik_open_connections`, until dropped.
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}
