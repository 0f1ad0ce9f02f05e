//! Plugin declarations: wasmgate's `plugins` section and Traefik's `experimental.localPlugins`.
//!
//! Declared once, read once: each plugin's .wasm file is found and read here (or fetched by
//! digest, see [`fetch`]), and every middleware that names the plugin shares it.

pub mod fetch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use wasmgate_abi::plugin::{AbiChoice as AbiKindChoice, AbiKind, EngineKind, Limits};
use wasmgate_abi::proxy_wasm::shared::VmRegistry;
use wasmgate_abi::proxy_wasm::ServiceDirectory;
use wasmgate_abi::{Engines, FailurePolicy, Middleware, Plugin, PluginOptions};

use crate::config::{AbiChoice, ConfigError, ConfigErrors, EngineChoice, LoadedConfig, PluginDecl};

/// A declared plugin whose module has been read.
#[derive(Debug, Clone)]
pub struct PluginSource {
    /// The name middlewares use for it.
    pub name: String,
    /// Where its module was read from: the file, or for a downloaded module its copy in the
    /// cache directory (its URL when there is no cache directory to keep it in).
    pub wasm_path: PathBuf,
    /// The URL a downloaded module came from.
    pub url: Option<String>,
    /// The module's bytes.
    pub wasm: Arc<Vec<u8>>,
    /// How it runs.
    pub options: PluginOptions,
}

/// A wasmtime instance pool: (stack limit, memory class), see
/// [`wasmgate_abi::engines::wasmtime_pool_class`].
pub type PoolKey = (usize, u64);

/// Every declared plugin, by name, compiled.
#[derive(Default)]
pub struct PluginCatalog {
    plugins: BTreeMap<String, (PluginSource, Arc<Plugin>)>,
}

impl std::fmt::Debug for PluginCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.plugins.keys()).finish()
    }
}

/// How a declaration asks a plugin to run.
fn options(decl: Option<&PluginDecl>) -> PluginOptions {
    let mut o = PluginOptions::default();
    let Some(d) = decl else { return o };
    o.engine = match d.engine {
        EngineChoice::Wasmtime => EngineKind::Wasmtime,
        EngineChoice::Wasmer => EngineKind::Wasmer,
    };
    o.abi = match d.abi {
        AbiChoice::Auto => AbiKindChoice::Auto,
        AbiChoice::HttpWasm => AbiKindChoice::HttpWasm,
        AbiChoice::ProxyWasm => AbiKindChoice::ProxyWasm,
    };
    let defaults = Limits::default();
    o.limits = Limits {
        max_memory_bytes: d.max_memory_bytes.unwrap_or(defaults.max_memory_bytes),
        call_deadline: d.call_timeout.unwrap_or(defaults.call_deadline),
        ..defaults
    };
    if let Some(n) = d.pool_size {
        o.pool_size = n.max(1);
    }
    o.max_instances = d.max_instances;
    if let Some(w) = d.pool_wait {
        o.pool_wait = w;
    }
    if let Some(b) = d.max_body_bytes {
        o.max_body_bytes = b;
    }
    // By default, room for a request and a response body of maxBodyBytes each.
    o.max_host_bytes = d
        .max_host_bytes
        .unwrap_or(o.max_host_bytes.max(o.max_body_bytes.saturating_mul(2)));
    if let Some(v) = &d.vm_config {
        o.vm_config = v.clone().into_bytes();
    }
    if let Some(r) = &d.root_id {
        o.root_id = r.clone();
    }
    if let Some(v) = &d.vm_id {
        o.vm_id = v.clone();
    }
    if let Some(p) = d.failure_policy {
        o.failure_policy = p.into();
    }
    o.log_level = d.log_level.map(Into::into);
    o.env = d.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    o
}

/// The compiled-plugin cache directory the install file asks for.
fn cache_dir(loaded: &LoadedConfig) -> Option<PathBuf> {
    let c = &loaded.config.cache;
    if !c.enabled {
        return None;
    }
    if let Some(dir) = &c.dir {
        return Some(loaded.base_dir().join(dir));
    }
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("wasmgate"))
}

/// The part of Traefik's `.traefik.yml` manifest wasmgate reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TraefikManifest {
    #[serde(default)]
    runtime: Option<String>,
    #[serde(default)]
    wasm_path: Option<String>,
}

/// What a plugin middleware's configuration becomes for the guest: a plain string as its raw
/// bytes, anything else as JSON (Traefik hands http-wasm plugins their settings as JSON).
pub fn plugin_config_bytes(value: &serde_json::Value) -> Vec<u8> {
    match value {
        serde_json::Value::String(s) => s.clone().into_bytes(),
        serde_json::Value::Null => Vec::new(),
        other => other.to_string().into_bytes(),
    }
}

/// Reads a declared plugin's module.
fn read_source(
    file: &Path,
    path: &str,
    name: &str,
    wasm_path: PathBuf,
    options: PluginOptions,
) -> Result<PluginSource, ConfigError> {
    let bytes = std::fs::read(&wasm_path).map_err(|e| {
        ConfigError::at(
            file,
            path,
            format!("cannot read plugin module {}: {e}", wasm_path.display()),
        )
    })?;
    if !bytes.starts_with(b"\0asm") {
        return Err(ConfigError::at(
            file,
            path,
            format!(
                "{} is not a WebAssembly module (no \\0asm header)",
                wasm_path.display()
            ),
        ));
    }
    Ok(PluginSource {
        name: name.to_string(),
        wasm_path,
        url: None,
        wasm: Arc::new(bytes),
        options,
    })
}

/// Fetches a declared plugin's module by digest (`url` + `sha256`), from the cache directory
/// `cache` when it holds it.
fn fetch_source(
    file: &Path,
    here: &str,
    name: &str,
    decl: &PluginDecl,
    cache: Option<&Path>,
    options: PluginOptions,
) -> Result<PluginSource, ConfigError> {
    let url = decl.url.as_deref().unwrap_or_default();
    // Checked when the install file was read; again here for a caller that did not.
    let remote = fetch::parse_url(url)
        .and_then(|url| {
            let hex = decl.sha256.as_deref().ok_or("url needs sha256")?;
            Ok(fetch::Remote {
                url,
                sha256: fetch::Sha256Digest::parse(hex)?,
                timeout: decl.timeout.unwrap_or(fetch::DEFAULT_TIMEOUT),
            })
        })
        .map_err(|e| ConfigError::at(file, format!("{here}.url"), e))?;
    let (bytes, kept) = fetch::module(&remote, cache)
        .map_err(|e| ConfigError::at(file, format!("{here}.url"), e.to_string()))?;
    if !bytes.starts_with(b"\0asm") {
        return Err(ConfigError::at(
            file,
            format!("{here}.url"),
            format!("{url} is not a WebAssembly module (no \\0asm header)"),
        ));
    }
    Ok(PluginSource {
        name: name.to_string(),
        wasm_path: kept.unwrap_or_else(|| PathBuf::from(url)),
        url: Some(url.to_string()),
        wasm: Arc::new(bytes),
        options,
    })
}

/// Where Traefik's layout puts a local plugin's module: `.traefik.yml`'s `wasmPath` in its directory.
fn local_plugin_module(dir: &Path) -> Result<PathBuf, String> {
    let manifest_path = dir.join(".traefik.yml");
    let text = std::fs::read_to_string(&manifest_path)
        .map_err(|e| format!("cannot read {}: {e}", manifest_path.display()))?;
    let manifest: TraefikManifest =
        serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", manifest_path.display()))?;
    if let Some(runtime) = manifest.runtime.filter(|r| r != "wasm") {
        return Err(format!(
            "{} declares runtime {runtime:?}; wasmgate runs only wasm plugins (runtime: wasm)",
            manifest_path.display()
        ));
    }
    Ok(dir.join(manifest.wasm_path.as_deref().unwrap_or("plugin.wasm")))
}

impl PluginCatalog {
    /// Finds, reads and compiles every declared plugin; errors name the declaration.
    pub fn load(loaded: &LoadedConfig) -> Result<PluginCatalog, ConfigErrors> {
        let base = loaded.base_dir();
        let file = &loaded.file;
        // Guest calls are counted and timed only when something reads the numbers.
        let collect_metrics = loaded
            .config
            .metrics
            .as_ref()
            .is_some_and(|m| m.prometheus.is_some());
        // One registry for the gateway's plugins: those declaring one VM id share its state.
        let vm_registry = VmRegistry::new();
        let options = |decl: Option<&PluginDecl>| PluginOptions {
            collect_metrics,
            vm_registry: vm_registry.clone(),
            ..options(decl)
        };
        let mut plugins: BTreeMap<String, PluginSource> = BTreeMap::new();
        let mut errors = Vec::new();
        let cache = cache_dir(loaded);
        for (name, decl) in &loaded.config.plugins {
            let here = format!("plugins.{name}");
            let source = match &decl.path {
                Some(p) => read_source(
                    file,
                    &format!("{here}.path"),
                    name,
                    base.join(p),
                    options(Some(decl)),
                ),
                None => fetch_source(
                    file,
                    &here,
                    name,
                    decl,
                    cache.as_deref(),
                    options(Some(decl)),
                ),
            };
            match source {
                Ok(source) => {
                    plugins.insert(name.clone(), source);
                }
                Err(e) => errors.push(e),
            }
        }
        for (name, local) in &loaded.config.experimental.local_plugins {
            let path = format!("experimental.localPlugins.{name}.moduleName");
            if plugins.contains_key(name) {
                errors.push(ConfigError::at(
                    file,
                    &path,
                    format!("plugin {name:?} is also declared under plugins"),
                ));
                continue;
            }
            // Traefik's wasm plugins are http-wasm plugins.
            let opts = PluginOptions {
                abi: AbiKindChoice::HttpWasm,
                ..options(None)
            };
            let dir = base.join("plugins-local/src").join(&local.module_name);
            match local_plugin_module(&dir)
                .map_err(|e| ConfigError::at(file, &path, e))
                .and_then(|wasm_path| read_source(file, &path, name, wasm_path, opts))
            {
                Ok(source) => {
                    plugins.insert(name.clone(), source);
                }
                Err(e) => errors.push(e),
            }
        }
        for name in loaded.config.experimental.plugins.keys() {
            errors.push(ConfigError::at(
                file,
                format!("experimental.plugins.{name}"),
                "remote plugins are downloaded by Traefik's plugin catalog, which wasmgate does not reach; \
                 put the plugin under plugins-local and declare it in experimental.localPlugins or plugins",
            ));
        }
        let mut engines = Engines::new(cache);
        if let Some(max) = loaded.config.cache.max_size_bytes {
            engines = engines.with_cache_max_bytes(max);
        }
        let mut compiled = BTreeMap::new();
        for (name, source) in plugins {
            let path = if loaded.config.plugins.contains_key(&name) {
                format!("plugins.{name}")
            } else {
                format!("experimental.localPlugins.{name}")
            };
            match Plugin::load(&name, &source.wasm, source.options.clone(), &engines) {
                Ok(p) => {
                    tracing::info!(plugin = %name, abi = %p.abi, engine = %p.engine(), "plugin loaded");
                    compiled.insert(name, (source, Arc::new(p)));
                }
                Err(e) => errors.push(ConfigError::at(
                    file,
                    path,
                    format!(
                        "plugin {name:?} ({}): {e}",
                        source
                            .url
                            .clone()
                            .unwrap_or_else(|| source.wasm_path.display().to_string())
                    ),
                )),
            }
        }
        if errors.is_empty() {
            Ok(PluginCatalog { plugins: compiled })
        } else {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            let locator = crate::config::locate::Locator::new(&text);
            locator.fill(&mut errors);
            Err(ConfigErrors(errors))
        }
    }

    /// Names of the declared plugins.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.plugins.keys().map(String::as_str)
    }

    /// The plugin called `name`.
    pub fn get(&self, name: &str) -> Option<&PluginSource> {
        self.plugins.get(name).map(|(s, _)| s)
    }

    /// The loaded plugin called `name` (a proxy-wasm one holds its VM's metrics).
    pub fn plugin(&self, name: &str) -> Option<&Arc<Plugin>> {
        self.plugins.get(name).map(|(_, p)| p)
    }

    /// The instances a middleware running plugin `name` keeps on a wasmtime pool, and which
    /// pool: http-wasm, `maxInstances` when set (it may use them all), else `poolSize` (kept
    /// warm); proxy-wasm, its VMs (`maxInstances`, else one per runtime worker, as
    /// [`wasmgate_abi::proxy_wasm::ProxyWasmPlugin::middleware`] counts them). `None` for an
    /// unknown plugin and for wasmer, whose instances take no slot.
    pub fn pool_need(&self, name: &str) -> Option<(PoolKey, usize)> {
        let (source, plugin) = self.plugins.get(name)?;
        if plugin.engine() != EngineKind::Wasmtime {
            return None;
        }
        let o = &source.options;
        let n = match plugin.abi {
            AbiKind::HttpWasm => o.max_instances.unwrap_or(o.pool_size),
            AbiKind::ProxyWasm => o
                .max_instances
                .unwrap_or_else(|| {
                    tokio::runtime::Handle::try_current()
                        .map(|h| h.metrics().num_workers())
                        .unwrap_or(1)
                })
                .max(1),
        };
        let class = wasmgate_abi::engines::wasmtime_pool_class(o.limits.max_memory_bytes);
        Some(((o.limits.max_stack_bytes, class), n))
    }

    /// A middleware named `middleware` running plugin `name` with `config`, under `policy`
    /// (`None`: the declaration's); its first instances start here, so a configuration the
    /// guest rejects is an error now.
    pub fn middleware(
        &self,
        name: &str,
        middleware: &str,
        config: &serde_json::Value,
        services: Arc<dyn ServiceDirectory>,
        policy: Option<FailurePolicy>,
    ) -> Result<Arc<dyn Middleware>, String> {
        let (_, plugin) = self
            .plugins
            .get(name)
            .ok_or_else(|| crate::config::error::missing("plugin", name, self.plugins.keys()))?;
        plugin
            .middleware_with(middleware, plugin_config_bytes(config), services, policy)
            .map_err(|e| format!("plugin {name:?}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_bytes() {
        assert_eq!(
            plugin_config_bytes(&serde_json::json!({"headers": {"Foo": "Bar"}})),
            br#"{"headers":{"Foo":"Bar"}}"#.to_vec()
        );
        assert_eq!(
            plugin_config_bytes(&serde_json::json!("raw text")),
            b"raw text".to_vec()
        );
    }
}
