//! Plugins: a WebAssembly module, compiled once on the engine its declaration
//! names, speaking one of the two ABIs; each middleware that uses it gets its
//! own instances and configuration.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmgate_engines::{new_engine, Engine, EngineError, EngineOptions, ModuleInfo, Trap};
pub use wasmgate_engines::{EngineKind, Limits};

use crate::http_wasm::HttpWasmPlugin;
use crate::middleware::Middleware;
use crate::proxy_wasm::{NoServices, ProxyWasmPlugin, ServiceDirectory};

/// Which ABI a declaration asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AbiChoice {
    /// Detect it from the module's imports and exports.
    #[default]
    Auto,
    /// http-wasm (`http_handler`).
    HttpWasm,
    /// proxy-wasm.
    ProxyWasm,
}

/// The ABI a module speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbiKind {
    /// http-wasm (`http_handler` imports, `handle_request` / `handle_response` exports).
    HttpWasm,
    /// proxy-wasm (a `proxy_abi_version_*` export).
    ProxyWasm,
}

impl std::fmt::Display for AbiKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AbiKind::HttpWasm => "http-wasm",
            AbiKind::ProxyWasm => "proxy-wasm",
        })
    }
}

/// How a plugin is run.
#[derive(Debug, Clone)]
pub struct PluginOptions {
    /// The engine.
    pub engine: EngineKind,
    /// The ABI asked for.
    pub abi: AbiChoice,
    /// Memory, deadline and stack limits of each instance.
    pub limits: Limits,
    /// Instances per middleware kept warm (idle, ready for the next request).
    pub pool_size: usize,
    /// The most instances one middleware may have at once; `None`: as many as requests need
    /// (the reference http-wasm host's pool is unbounded: a cap is a concurrency limit, and
    /// slow clients holding instances would starve everyone else).
    pub max_instances: Option<usize>,
    /// How long a request waits for a free instance before a 503.
    pub pool_wait: Duration,
    /// Largest body a plugin may have buffered; larger is 413 (requests) or 500 (responses).
    pub max_body_bytes: usize,
    /// proxy-wasm: the VM configuration (buffer 6, `proxy_on_vm_start`'s size).
    pub vm_config: Vec<u8>,
    /// proxy-wasm: the root id (`plugin_root_id` property).
    pub root_id: String,
    /// proxy-wasm: the VM id (`plugin_vm_id`); empty means the plugin's name.
    pub vm_id: String,
    /// proxy-wasm: the environment WASI `environ_get` gives the guest.
    pub env: Vec<(String, String)>,
}

impl Default for PluginOptions {
    fn default() -> Self {
        PluginOptions {
            engine: EngineKind::Wasmtime,
            abi: AbiChoice::Auto,
            limits: Limits::default(),
            pool_size: 16,
            max_instances: None,
            pool_wait: Duration::from_secs(5),
            max_body_bytes: 16 << 20,
            vm_config: Vec::new(),
            root_id: String::new(),
            vm_id: String::new(),
            env: Vec::new(),
        }
    }
}

/// Why a plugin could not be loaded or configured.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The engine rejected the module (invalid, missing imports, compile failure).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The module does not fit the ABI (missing or mistyped exports, no ABI detected).
    #[error("{0}")]
    Abi(String),
    /// The guest failed while starting (`_start`, `_initialize`, a start section).
    #[error("guest failed during start-up: {0}")]
    Start(Trap),
    /// A proxy-wasm middleware was created outside a tokio runtime: its dispatcher (ticks,
    /// queue readiness) would not run until the first request.
    #[error(
        "middleware {0}: proxy-wasm middlewares must be created inside a tokio runtime \
         (their tick and queue dispatcher starts with them)"
    )]
    NoRuntime(String),
}

/// Engines by kind, created on first use and shared by every plugin.
pub struct Engines {
    cache_dir: Option<PathBuf>,
    cache_max_bytes: u64,
    engines: Mutex<HashMap<EngineKind, Arc<dyn Engine>>>,
}

impl Engines {
    /// Engines that keep compiled modules in `cache_dir` (none: no disk cache).
    pub fn new(cache_dir: Option<PathBuf>) -> Self {
        Engines {
            cache_dir,
            cache_max_bytes: wasmgate_engines::DEFAULT_CACHE_MAX_BYTES,
            engines: Mutex::new(HashMap::new()),
        }
    }

    /// Caps the bytes the disk cache keeps (see
    /// [`EngineOptions::cache_max_bytes`]); engines created afterwards use it.
    pub fn with_cache_max_bytes(mut self, max_bytes: u64) -> Self {
        self.cache_max_bytes = max_bytes;
        self
    }

    /// The engine of `kind`.
    pub fn get(&self, kind: EngineKind) -> Result<Arc<dyn Engine>, EngineError> {
        let mut map = self.engines.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = map.get(&kind) {
            return Ok(e.clone());
        }
        let engine = new_engine(
            kind,
            EngineOptions {
                cache_dir: self.cache_dir.clone(),
                cache_max_bytes: self.cache_max_bytes,
                // Every middleware's pool draws on the engine's slots; room for many middlewares.
                // The slots reserve address space, not memory.
                pool_instances: 1024,
                ..EngineOptions::default()
            },
        )?;
        map.insert(kind, engine.clone());
        Ok(engine)
    }
}

/// Detects the ABI from what the module exports and imports.
pub fn detect_abi(info: &ModuleInfo) -> Result<AbiKind, PluginError> {
    if info
        .exports
        .iter()
        .any(|e| e.name.starts_with("proxy_abi_version_"))
    {
        return Ok(AbiKind::ProxyWasm);
    }
    if info.imports_module("http_handler")
        || info.has_export("handle_request")
        || info.has_export("handle_response")
    {
        return Ok(AbiKind::HttpWasm);
    }
    Err(PluginError::Abi(
        "cannot tell the module's ABI: it neither imports http_handler nor exports \
         handle_request/handle_response (http-wasm), nor exports a proxy_abi_version_* marker \
         (proxy-wasm)"
            .into(),
    ))
}

/// A loaded plugin, ready to make middlewares.
pub struct Plugin {
    /// The declared name.
    pub name: String,
    /// The ABI it speaks.
    pub abi: AbiKind,
    inner: Inner,
}

enum Inner {
    Http(HttpWasmPlugin),
    Proxy(ProxyWasmPlugin),
}

impl Plugin {
    /// Compiles `wasm` on the engine `opts` names and checks it against its ABI.
    pub fn load(
        name: &str,
        wasm: &[u8],
        opts: PluginOptions,
        engines: &Engines,
    ) -> Result<Plugin, PluginError> {
        let info = ModuleInfo::parse(wasm)?;
        let abi = match opts.abi {
            AbiChoice::Auto => detect_abi(&info)?,
            AbiChoice::HttpWasm => AbiKind::HttpWasm,
            AbiChoice::ProxyWasm => AbiKind::ProxyWasm,
        };
        match abi {
            AbiKind::HttpWasm => {
                let engine = engines.get(opts.engine)?;
                let inner = HttpWasmPlugin::load(name, wasm, &info, engine.as_ref(), opts)?;
                Ok(Plugin {
                    name: name.to_string(),
                    abi,
                    inner: Inner::Http(inner),
                })
            }
            AbiKind::ProxyWasm => {
                let engine = engines.get(opts.engine)?;
                let inner = ProxyWasmPlugin::load(name, wasm, &info, engine.as_ref(), opts)?;
                Ok(Plugin {
                    name: name.to_string(),
                    abi,
                    inner: Inner::Proxy(inner),
                })
            }
        }
    }

    /// The engine running it.
    pub fn engine(&self) -> EngineKind {
        match &self.inner {
            Inner::Http(p) => p.engine(),
            Inner::Proxy(p) => p.engine(),
        }
    }

    /// The proxy-wasm plugin, if it is one (its VM holds shared data and metrics).
    pub fn proxy_wasm(&self) -> Option<&ProxyWasmPlugin> {
        match &self.inner {
            Inner::Proxy(p) => Some(p),
            Inner::Http(_) => None,
        }
    }

    /// A middleware named `middleware` running this plugin with `config`; its instances
    /// are created (and started) here, so a bad configuration fails now, not at the first request.
    pub fn middleware(
        &self,
        middleware: &str,
        config: Vec<u8>,
    ) -> Result<Arc<dyn Middleware>, PluginError> {
        self.middleware_with_services(middleware, config, Arc::new(NoServices))
    }

    /// Like [`Plugin::middleware`]; proxy-wasm filters reach `services` with `proxy_http_call`.
    pub fn middleware_with_services(
        &self,
        middleware: &str,
        config: Vec<u8>,
        services: Arc<dyn ServiceDirectory>,
    ) -> Result<Arc<dyn Middleware>, PluginError> {
        Ok(match &self.inner {
            Inner::Http(p) => Arc::new(p.middleware(middleware, config)?),
            Inner::Proxy(p) => Arc::new(p.middleware(middleware, config, services)?),
        })
    }
}

/// A middleware's instance pool and the permits that bound it: `pool_size` instances kept warm,
/// at most `max_instances` at once (unbounded when not set).
pub(crate) fn instance_pool(
    module: Arc<dyn wasmgate_engines::CompiledModule>,
    opts: &PluginOptions,
    factory: impl Fn() -> Box<dyn std::any::Any + Send> + Send + Sync + 'static,
) -> (wasmgate_engines::InstancePool, Arc<tokio::sync::Semaphore>) {
    let max = opts
        .max_instances
        .unwrap_or(tokio::sync::Semaphore::MAX_PERMITS)
        .clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
    let pool =
        wasmgate_engines::InstancePool::new(module, max, factory).with_idle_limit(opts.pool_size);
    (pool, Arc::new(tokio::sync::Semaphore::new(max)))
}

/// Takes an instance from `pool`, waiting up to `wait` for one to be free.
///
/// The semaphore holds as many permits as the pool may have instances (`maxInstances`), so
/// when a cap is set requests queue here instead of multiplying instances; past `wait` the
/// request gets a 503.
pub(crate) async fn acquire_instance(
    pool: &wasmgate_engines::InstancePool,
    permits: &Arc<tokio::sync::Semaphore>,
    wait: Duration,
    middleware: &str,
) -> Result<
    (
        tokio::sync::OwnedSemaphorePermit,
        wasmgate_engines::PooledInstance,
    ),
    crate::error::ProxyError,
> {
    use crate::error::{ErrorSource, ProxyError};
    // Fast path: a free instance needs no timer.
    let permit = match permits.clone().try_acquire_owned() {
        Ok(p) => p,
        Err(_) => tokio::time::timeout(wait, permits.clone().acquire_owned())
            .await
            .map_err(|_| {
                ProxyError::new(
                    ErrorSource::Plugin,
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    format!("middleware {middleware}: no plugin instance free within {wait:?}"),
                )
            })?
            .map_err(|_| ProxyError::internal("instance semaphore closed"))?,
    };
    let inst = pool
        .acquire()
        .map_err(|e| ProxyError::plugin(format!("middleware {middleware}: {e}")))?;
    Ok((permit, inst))
}
