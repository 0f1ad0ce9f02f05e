//! The gateway: configuration, plugins and the current snapshot, in one place.
//!
//! Snapshots are built inside the tokio runtime the gateway was loaded for, whatever thread
//! asks: proxy-wasm middlewares start their dispatcher (ticks, queues) when they are created.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::access_log::AccessLog;
use crate::config::{self, ConfigError, ConfigErrors, LoadedConfig, RoutingSource};
use crate::metrics::Metrics;
use crate::plugins::PluginCatalog;
use crate::provider::{self, KvRouting};
use crate::service::TransportCache;
use crate::snapshot::{self, BuildContext, Snapshot};

/// Everything a running wasmgate serves from. Entry points and plugin
/// declarations are fixed at start; routing can be reloaded.
pub struct Gateway {
    /// The install file, parsed.
    pub loaded: LoadedConfig,
    /// The access log, when `accessLog` is configured.
    pub access_log: Option<AccessLog>,
    /// Prometheus metrics, when `metrics.prometheus` is configured.
    pub metrics: Option<Arc<Metrics>>,
    /// Shutdown has begun: `/ping` answers its terminating status.
    pub draining: AtomicBool,
    plugins: PluginCatalog,
    transports: TransportCache,
    snapshot: ArcSwap<Snapshot>,
    runtime: Handle,
    reloads: watch::Sender<Reloads>,
    /// One reload at a time, so generations are numbered without gaps or repeats.
    reloading: Mutex<()>,
    /// What the KV providers gave (taken with `reloading` held).
    kv: Mutex<KvState>,
}

/// The routing of the KV providers, by provider name.
#[derive(Default)]
struct KvState {
    /// The last routing of each provider that was served (a rejected read leaves it).
    good: BTreeMap<String, Arc<KvRouting>>,
    /// The pairs of each provider's last read, accepted or not: the same again is no reload.
    last_read: BTreeMap<String, Vec<(String, String)>>,
}

/// What routing reloads have done so far; see [`Gateway::reloads`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reloads {
    /// The generation of the snapshot being served: 1 at start, one more per accepted reload.
    pub generation: u64,
    /// Reloads rejected (the previous snapshot kept serving).
    pub rejected: u64,
}

impl Gateway {
    /// Loads the install file, its plugins and its routing, checking every reference.
    ///
    /// Middlewares are created in `runtime` (entered here, and again for every reload):
    /// proxy-wasm ones spawn their dispatcher there.
    pub fn load(path: &Path, runtime: &Handle) -> Result<Arc<Gateway>, ConfigErrors> {
        let _in_runtime = runtime.enter();
        let loaded = config::load(path)?;
        let plugins = PluginCatalog::load(&loaded);
        let routing = config::load_routing(&loaded);
        // Report plugin and routing mistakes together.
        let (plugins, routing) = match (plugins, routing) {
            (Ok(p), Ok(r)) => (p, r),
            (p, r) => {
                let mut all = Vec::new();
                if let Err(e) = p {
                    all.extend(e.0);
                }
                if let Err(e) = r {
                    all.extend(e.0);
                }
                return Err(ConfigErrors(all));
            }
        };
        let transports = TransportCache::default();
        // The KV providers have given nothing yet: they fill their part in once running.
        let snapshot = build_snapshot(
            routing,
            has_kv_providers(&loaded).then(BTreeMap::new).as_ref(),
            &BuildContext {
                entry_points: &loaded.config.entry_points,
                plugins: &plugins,
                transports: &transports,
                generation: 1,
                install_file: &loaded.file,
            },
        )?;
        let access_log = match &loaded.config.access_log {
            Some(cfg) => Some(AccessLog::open(cfg, loaded.base_dir()).map_err(|e| {
                ConfigErrors(vec![ConfigError::at(
                    &loaded.file,
                    "accessLog.filePath".to_string(),
                    format!("cannot open the access log: {e}"),
                )])
            })?),
            None => None,
        };
        let metrics = loaded
            .config
            .metrics
            .as_ref()
            .and_then(|m| m.prometheus.as_ref())
            .map(|p| Arc::new(Metrics::new(p)));
        if let Some(m) = &metrics {
            m.config_applied(&config_hash(&snapshot.routing_text));
        }
        Ok(Arc::new(Gateway {
            loaded,
            access_log,
            metrics,
            draining: AtomicBool::new(false),
            plugins,
            transports,
            snapshot: ArcSwap::from_pointee(snapshot),
            runtime: runtime.clone(),
            reloads: watch::Sender::new(Reloads {
                generation: 1,
                rejected: 0,
            }),
            reloading: Mutex::new(()),
            kv: Mutex::new(KvState::default()),
        }))
    }

    /// The loaded plugin declared as `name`.
    pub fn plugin(&self, name: &str) -> Option<Arc<wasmgate_abi::Plugin>> {
        self.plugins.plugin(name).cloned()
    }

    /// The snapshot new requests are served from.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The generation of the snapshot being served: 1 at start, one more per accepted reload.
    pub fn generation(&self) -> u64 {
        self.reloads.borrow().generation
    }

    /// Follows reloads: the receiver sees a change after every reload, accepted or rejected.
    pub fn reloads(&self) -> watch::Receiver<Reloads> {
        self.reloads.subscribe()
    }

    /// Re-reads the routing configuration and swaps it in; on error the current snapshot stays.
    /// With KV providers, their last good routing is served with the file's.
    /// Blocking (it may start plugin instances); any thread may call it.
    pub fn reload_routing(&self) -> Result<u64, ConfigErrors> {
        let _one = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let kv = self.kv.lock().unwrap_or_else(|p| p.into_inner());
        let kvs = self.has_kv_providers().then(|| kv.good.clone());
        self.install(config::load_routing(&self.loaded), kvs.as_ref())
    }

    /// A KV provider's full read (`pairs`, keys under `root_key`): merged with the file's routing
    /// and every other provider's, and swapped in; on error the current snapshot stays, and
    /// the provider's last good routing with it. `None` when the pairs are the same as the
    /// provider's previous read (nothing is rebuilt). Blocking, as [`Gateway::reload_routing`].
    pub fn apply_kv(
        &self,
        provider: &str,
        root_key: &str,
        pairs: Vec<(String, String)>,
    ) -> Result<Option<u64>, ConfigErrors> {
        let mut pairs = pairs;
        pairs.sort();
        let _one = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let mut kv = self.kv.lock().unwrap_or_else(|p| p.into_inner());
        if kv.last_read.get(provider) == Some(&pairs) {
            if let Some(m) = &self.metrics {
                if kv.good.contains_key(provider) {
                    m.provider_synced(provider);
                }
            }
            return Ok(None);
        }
        kv.last_read.insert(provider.to_string(), pairs.clone());
        let parsed = {
            let _in_runtime = self.runtime.enter();
            provider::kv::parse(provider, root_key, &pairs)
        };
        let routing = match parsed {
            Ok(r) => Arc::new(r),
            Err(errors) => {
                if let Some(m) = &self.metrics {
                    m.reloaded(false);
                }
                self.reloads.send_modify(|r| r.rejected += 1);
                return Err(errors);
            }
        };
        let mut kvs = kv.good.clone();
        kvs.insert(provider.to_string(), routing.clone());
        let generation = self.install(config::load_routing(&self.loaded), Some(&kvs))?;
        kv.good.insert(provider.to_string(), routing);
        if let Some(m) = &self.metrics {
            m.provider_synced(provider);
        }
        Ok(Some(generation))
    }

    /// True when the install file configures a KV provider.
    pub fn has_kv_providers(&self) -> bool {
        has_kv_providers(&self.loaded)
    }

    /// Builds the next snapshot from `routing` (and `kvs`) and serves it, or counts the
    /// rejection; the caller holds `reloading`.
    fn install(
        &self,
        routing: Result<RoutingSource, ConfigErrors>,
        kvs: Option<&BTreeMap<String, Arc<KvRouting>>>,
    ) -> Result<u64, ConfigErrors> {
        let _in_runtime = self.runtime.enter();
        let generation = self.generation() + 1;
        let built = routing.and_then(|routing| {
            build_snapshot(
                routing,
                kvs,
                &BuildContext {
                    entry_points: &self.loaded.config.entry_points,
                    plugins: &self.plugins,
                    transports: &self.transports,
                    generation,
                    install_file: &self.loaded.file,
                },
            )
        });
        if let Some(m) = &self.metrics {
            m.reloaded(built.is_ok());
        }
        match built {
            Ok(snapshot) => {
                if let Some(m) = &self.metrics {
                    m.config_applied(&config_hash(&snapshot.routing_text));
                }
                self.snapshot.store(Arc::new(snapshot));
                self.reloads.send_modify(|r| r.generation = generation);
                Ok(generation)
            }
            Err(errors) => {
                self.reloads.send_modify(|r| r.rejected += 1);
                Err(errors)
            }
        }
    }
}

fn has_kv_providers(loaded: &LoadedConfig) -> bool {
    let p = &loaded.config.providers;
    p.etcd.is_some() || p.redis.is_some()
}

/// The file's routing alone (exactly as without KV providers), or merged with `kvs`.
fn build_snapshot(
    routing: RoutingSource,
    kvs: Option<&BTreeMap<String, Arc<KvRouting>>>,
    ctx: &BuildContext<'_>,
) -> Result<Snapshot, ConfigErrors> {
    let Some(kvs) = kvs else {
        return snapshot::build(&routing, ctx);
    };
    let (merged, text) = provider::merge(routing, kvs);
    let mut built =
        snapshot::build(&merged, ctx).map_err(|e| provider::locate_kv_errors(e, kvs))?;
    built.routing_text = text.into();
    Ok(built)
}

/// The hash `/metrics` shows for the routing being served (`wasmgate_config_info`): the first
/// 16 hex digits of the SHA-256 of its text, the same on replicas given the same routing.
pub fn config_hash(routing_text: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(routing_text.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}
