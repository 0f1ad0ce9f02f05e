//! The gateway: configuration, plugins and the current snapshot, in one place.
//!
//! Snapshots are built inside the tokio runtime the gateway was loaded for, whatever thread
//! asks: proxy-wasm middlewares start their dispatcher (ticks, queues) when they are created.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::access_log::AccessLog;
use crate::config::{self, ConfigError, ConfigErrors, LoadedConfig};
use crate::metrics::Metrics;
use crate::plugins::PluginCatalog;
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
        let snapshot = snapshot::build(
            &routing,
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
    /// Blocking (it may start plugin instances); any thread may call it.
    pub fn reload_routing(&self) -> Result<u64, ConfigErrors> {
        let _one = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let _in_runtime = self.runtime.enter();
        let generation = self.generation() + 1;
        let built = config::load_routing(&self.loaded).and_then(|routing| {
            snapshot::build(
                &routing,
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
