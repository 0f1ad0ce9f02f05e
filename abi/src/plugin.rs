//! Plugins: a WebAssembly module, compiled once on the engine its declaration
//! names, speaking one of the two ABIs; each middleware that uses it gets its
//! own instances and configuration.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use wasmgate_engines::{new_engine, Engine, EngineError, EngineOptions, ModuleInfo};
pub use wasmgate_engines::{EngineKind, Limits};

pub use crate::guest::{AbiChoice, AbiKind, FailurePolicy, PluginError, PluginOptions};

use crate::http_wasm::HttpWasmPlugin;
use crate::middleware::Middleware;
use crate::proxy_wasm::{NoServices, ProxyWasmPlugin, ServiceDirectory};

/// Instance slots of each wasmtime pool ([`wasmgate_engines::wasmtime_pool_class`]): every
/// instance of every middleware on wasmtime within one memory class takes one; past them
/// creating an instance fails. A configuration's needs are checked against them at load.
pub const WASMTIME_POOL_SLOTS: u32 = 1024;

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
                pool_instances: WASMTIME_POOL_SLOTS,
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
    Err(PluginError::UnknownAbi)
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
        self.middleware_with(middleware, config, services, None)
    }

    /// Like [`Plugin::middleware_with_services`], under failure policy `policy` (`None`: the
    /// one the plugin's options give).
    pub fn middleware_with(
        &self,
        middleware: &str,
        config: Vec<u8>,
        services: Arc<dyn ServiceDirectory>,
        policy: Option<FailurePolicy>,
    ) -> Result<Arc<dyn Middleware>, PluginError> {
        Ok(match &self.inner {
            Inner::Http(p) => Arc::new(p.middleware_with_policy(middleware, config, policy)?),
            Inner::Proxy(p) => {
                Arc::new(p.middleware_with_policy(middleware, config, services, policy)?)
            }
        })
    }
}
