//! The gateway: configuration, plugins and the current snapshot, in one place.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::access_log::AccessLog;
use crate::config::{self, ConfigError, ConfigErrors, LoadedConfig};
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
    plugins: PluginCatalog,
    transports: TransportCache,
    snapshot: ArcSwap<Snapshot>,
    generation: AtomicU64,
}

impl Gateway {
    /// Loads the install file, its plugins and its routing, checking every reference.
    pub fn load(path: &Path) -> Result<Arc<Gateway>, ConfigErrors> {
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
        Ok(Arc::new(Gateway {
            loaded,
            access_log,
            plugins,
            transports,
            snapshot: ArcSwap::from_pointee(snapshot),
            generation: AtomicU64::new(1),
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

    /// Re-reads the routing configuration and swaps it in; on error the current snapshot stays.
    pub fn reload_routing(&self) -> Result<u64, ConfigErrors> {
        let routing = config::load_routing(&self.loaded)?;
        let generation = self.generation.load(Ordering::SeqCst) + 1;
        let snapshot = snapshot::build(
            &routing,
            &BuildContext {
                entry_points: &self.loaded.config.entry_points,
                plugins: &self.plugins,
                transports: &self.transports,
                generation,
            },
        )?;
        self.generation.store(generation, Ordering::SeqCst);
        self.snapshot.store(Arc::new(snapshot));
        Ok(generation)
    }
}
