//! Plugin loading: the ABI version a module speaks, the exports it must have and their
//! shapes, compilation with that version's host functions ([`ProxyWasmPlugin`]), and the
//! middlewares made from it.

use std::sync::Arc;

use bytes::Bytes;
use wasmgate_engines::{CompiledModule, Engine, EngineKind, FuncType, ModuleInfo, ValType};

use super::abi::AbiVersion;
use super::host;
use super::shared::VmShared;
use super::state::MiddlewareShared;
use super::stream::ProxyWasmMiddleware;
use super::vm::VmSet;
use super::ServiceDirectory;
use crate::guest::{AbiKind, FailurePolicy, Failures, GuestStats, PluginError, PluginOptions};

/// The guest callbacks the host calls, each with the shapes accepted (any version).
///
/// Header and trailer callbacks come in two shapes whatever the version marker says: 2
/// parameters (0.1.0 headers, trailers everywhere: what cpp-host calls) or 3 with
/// `end_of_stream` last (0.2.x headers; 2020 TinyGo and C++ SDK filters export it under the
/// 0.1.0 marker, and MOSN's host runs them). Each is called with the arity it exports
/// (`guest_call` cuts the arguments), so the host always passes `end_of_stream` third.
fn callback_types() -> Vec<(&'static str, Vec<FuncType>)> {
    use ValType::I32;
    let f = |p: usize, r: usize| FuncType::new(vec![I32; p], vec![I32; r]);
    let one = |p: usize, r: usize| vec![f(p, r)];
    let two_or_three = || vec![f(2, 1), f(3, 1)];
    vec![
        ("proxy_on_context_create", one(2, 0)),
        ("proxy_on_vm_start", one(2, 1)),
        ("proxy_on_configure", one(2, 1)),
        ("proxy_on_tick", one(1, 0)),
        ("proxy_on_done", one(1, 1)),
        ("proxy_on_log", one(1, 0)),
        ("proxy_on_delete", one(1, 0)),
        ("proxy_on_request_headers", two_or_three()),
        ("proxy_on_response_headers", two_or_three()),
        ("proxy_on_request_body", one(3, 1)),
        ("proxy_on_response_body", one(3, 1)),
        ("proxy_on_request_trailers", two_or_three()),
        ("proxy_on_response_trailers", two_or_three()),
        ("proxy_on_http_call_response", one(5, 0)),
        ("proxy_on_queue_ready", one(2, 0)),
    ]
}

/// The ABI version a module's marker export names.
pub fn detect_version(info: &ModuleInfo) -> Result<AbiVersion, PluginError> {
    let markers: Vec<&str> = info
        .exports
        .iter()
        .map(|e| e.name.as_str())
        .filter(|n| n.starts_with("proxy_abi_version_"))
        .collect();
    let Some(first) = markers.first() else {
        return Err(PluginError::NoAbiVersion);
    };
    AbiVersion::from_marker(first).ok_or_else(|| PluginError::UnsupportedAbiVersion {
        marker: first.to_string(),
    })
}

/// A compiled proxy-wasm plugin; its VM id's shared state comes from the options'
/// [`VmRegistry`](super::shared::VmRegistry).
pub struct ProxyWasmPlugin {
    name: String,
    module: Arc<dyn CompiledModule>,
    opts: PluginOptions,
    version: AbiVersion,
    allocator: &'static str,
    vm: Arc<VmShared>,
    /// The guest imports WASI `fd_write` (see [`crate::guest::log::in_call`]).
    writes_stdio: bool,
}

impl ProxyWasmPlugin {
    /// Checks the module against the ABI and compiles it with its version's host functions.
    pub fn load(
        name: &str,
        wasm: &[u8],
        info: &ModuleInfo,
        engine: &dyn Engine,
        opts: PluginOptions,
    ) -> Result<ProxyWasmPlugin, PluginError> {
        let version = detect_version(info)?;
        if !info.has_export("memory") {
            return Err(PluginError::MissingExport {
                abi: AbiKind::ProxyWasm,
                name: "memory".into(),
                wanted: "their memory as `memory`".into(),
            });
        }
        let alloc_ty = FuncType::new([ValType::I32], [ValType::I32]);
        // cpp-host and Kong take malloc first.
        let allocator = ["malloc", "proxy_on_memory_allocate"]
            .into_iter()
            .find(|n| info.export_func(n) == Some(&alloc_ty))
            .ok_or_else(|| PluginError::MissingExport {
                abi: AbiKind::ProxyWasm,
                name: "malloc".into(),
                wanted: "an allocator: `malloc` or `proxy_on_memory_allocate`, (i32) -> i32".into(),
            })?;
        for (cb, accepted) in callback_types() {
            if let Some(ty) = info.export_func(cb) {
                if !accepted.contains(ty) {
                    let shapes: Vec<String> = accepted.iter().map(|t| t.to_string()).collect();
                    return Err(PluginError::WrongSignature {
                        name: cb.to_string(),
                        found: ty.clone(),
                        abi: format!("proxy-wasm {version}"),
                        wanted: shapes.join(" or "),
                    });
                }
            }
        }
        let module = engine.compile(
            wasm,
            Arc::new(host::functions(name, version)),
            opts.limits.clone(),
        )?;
        let vm_id = if opts.vm_id.is_empty() {
            name.to_string()
        } else {
            opts.vm_id.clone()
        };
        Ok(ProxyWasmPlugin {
            name: name.to_string(),
            module,
            version,
            allocator,
            vm: opts.vm_registry.join(&vm_id, opts.max_host_bytes, name)?,
            writes_stdio: crate::guest::log::writes_stdio(info),
            opts,
        })
    }

    /// The engine running it.
    pub fn engine(&self) -> EngineKind {
        self.module.engine()
    }

    /// The ABI version the module speaks.
    pub fn version(&self) -> AbiVersion {
        self.version
    }

    /// Its VM id's shared data, queues and metrics (metric values are read here), shared with
    /// every plugin of the same VM id in the same registry.
    pub fn vm(&self) -> &Arc<VmShared> {
        &self.vm
    }

    /// A middleware configured with `config`, on its own VMs; `services` are what
    /// `proxy_http_call` can reach.
    ///
    /// The VMs are created here, each with its root context started and configured
    /// (`proxy_on_context_create(root, 0)`, `proxy_on_vm_start`, `proxy_on_configure`), so a
    /// rejected configuration fails now. How many: `maxInstances` when set, else one per
    /// worker of the tokio runtime (as Envoy has one VM per worker thread).
    ///
    /// Must be called inside a tokio runtime: each VM's dispatcher (ticks, queue readiness,
    /// the root context's http calls) is spawned on it here, so a tick period set in
    /// `on_vm_start` or `on_configure` fires from the start. Outside one this is an error,
    /// never a middleware that stays silent until its first request.
    pub fn middleware(
        &self,
        middleware: &str,
        config: Vec<u8>,
        services: Arc<dyn ServiceDirectory>,
    ) -> Result<ProxyWasmMiddleware, PluginError> {
        self.middleware_with_policy(middleware, config, services, None)
    }

    /// Like [`ProxyWasmPlugin::middleware`], under failure policy `policy` (`None`: the
    /// plugin options' `failure_policy`).
    pub fn middleware_with_policy(
        &self,
        middleware: &str,
        config: Vec<u8>,
        services: Arc<dyn ServiceDirectory>,
        policy: Option<FailurePolicy>,
    ) -> Result<ProxyWasmMiddleware, PluginError> {
        let policy = policy.unwrap_or(self.opts.failure_policy);
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| PluginError::NoRuntime(middleware.to_string()))?;
        let shared = Arc::new(MiddlewareShared {
            plugin: self.name.clone(),
            middleware: middleware.into(),
            root_id: self.opts.root_id.clone(),
            vm_config: Bytes::from(self.opts.vm_config.clone()),
            plugin_config: Bytes::from(config),
            vm: self.vm.clone(),
            services,
            version: self.version,
            log_level: host::min_log_level(self.opts.log_level),
            writes_stdio: self.writes_stdio,
            max_body_bytes: self.opts.max_body_bytes,
            max_host_bytes: self.opts.max_host_bytes,
            stats: Arc::new(GuestStats::new(
                &super::state::PHASES,
                self.opts.collect_metrics,
            )),
            env: self
                .opts
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
        });
        let count = self
            .opts
            .max_instances
            .unwrap_or_else(|| runtime.metrics().num_workers())
            .max(1);
        let failures = Arc::new(Failures::new(&self.name, middleware, policy));
        let set = VmSet::new(
            shared,
            self.module.clone(),
            self.allocator,
            self.opts.pool_wait,
            runtime,
            failures.clone(),
        );
        set.start(count).map_err(|t| {
            if t.export == "proxy_on_vm_start" || t.export == "proxy_on_configure" {
                PluginError::Configure {
                    plugin: self.name.clone(),
                    trap: t,
                }
            } else {
                PluginError::Start(t)
            }
        })?;
        Ok(ProxyWasmMiddleware { set, failures })
    }
}
