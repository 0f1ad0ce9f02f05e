//! How a plugin is run, and why it could not be.

use std::time::Duration;

use super::{FailurePolicy, DEFAULT_MAX_HOST_BYTES};
use crate::proxy_wasm::shared::{VmJoinError, VmRegistry};
use wasmgate_engines::{EngineError, EngineKind, FuncType, Limits, PoolError, Trap};

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
    /// http-wasm: instances per middleware kept warm (idle, ready for the next request).
    /// proxy-wasm does not use it (its VMs carry many streams).
    pub pool_size: usize,
    /// http-wasm: the most instances one middleware may have at once; `None`: as many as
    /// requests need (the reference http-wasm host's pool is unbounded: a cap is a concurrency
    /// limit, and slow clients holding instances would starve everyone else).
    /// proxy-wasm: the number of VMs per middleware; `None`: one per runtime worker.
    pub max_instances: Option<usize>,
    /// How long a request waits for a free instance before a 503.
    pub pool_wait: Duration,
    /// Largest body a plugin may have buffered; larger is 413 (requests) or 500 (responses).
    pub max_body_bytes: usize,
    /// Most bytes the host holds on one instance's behalf (`maxHostBytes`, see
    /// [`HostBudget`](super::HostBudget)): http-wasm, per request; proxy-wasm, per VM, and
    /// again for the plugin's shared data, queues and metric names.
    pub max_host_bytes: usize,
    /// proxy-wasm: the VM configuration (buffer 6, `proxy_on_vm_start`'s size).
    pub vm_config: Vec<u8>,
    /// proxy-wasm: the root id (`plugin_root_id` property).
    pub root_id: String,
    /// proxy-wasm: the VM id (`plugin_vm_id`); empty means the plugin's name. Plugins with
    /// one VM id (in one [`VmRegistry`]) share shared data, queues and metrics, as in Envoy.
    pub vm_id: String,
    /// proxy-wasm: where the state of each VM id lives. Give every plugin of one gateway the
    /// same registry (clones share it), or VM ids are shared by nobody; the default is a
    /// registry of its own.
    pub vm_registry: VmRegistry,
    /// proxy-wasm: the environment WASI `environ_get` gives the guest.
    pub env: Vec<(String, String)>,
    /// What a guest failure does to its request and the ones after it (default `closed`).
    pub failure_policy: FailurePolicy,
    /// The most verbose level the guest may log at (`logLevel`), within the process's log
    /// filter; `None`: as the process's filter allows. Guests are told it (`log_enabled`,
    /// `proxy_get_log_level`) and lines below it are dropped.
    pub log_level: Option<tracing::level_filters::LevelFilter>,
    /// Count and time guest calls and track instances' memory, for metrics (on when the
    /// gateway has metrics; off, the request path does none of it).
    pub collect_metrics: bool,
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
            max_host_bytes: DEFAULT_MAX_HOST_BYTES,
            vm_config: Vec::new(),
            root_id: String::new(),
            vm_id: String::new(),
            vm_registry: VmRegistry::default(),
            env: Vec::new(),
            failure_policy: FailurePolicy::Closed,
            collect_metrics: false,
            log_level: None,
        }
    }
}

/// Why a plugin could not be loaded or configured.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The engine rejected the module (invalid, missing imports, compile failure).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// No ABI was asked for and the module's imports and exports name none.
    #[error(
        "cannot tell the module's ABI: it neither imports http_handler nor exports \
         handle_request/handle_response (http-wasm), nor exports a proxy_abi_version_* marker \
         (proxy-wasm)"
    )]
    UnknownAbi,
    /// The module lacks an export its ABI requires.
    #[error("{abi} guests must export {wanted}")]
    MissingExport {
        /// The ABI that requires it.
        abi: AbiKind,
        /// The export looked for (the first, when several would do).
        name: String,
        /// What the ABI wants, in words (`their memory as `memory``).
        wanted: String,
    },
    /// An export the ABI calls has the wrong function type.
    #[error("export `{name}` has type {found}, {abi} needs {wanted}")]
    WrongSignature {
        /// The export.
        name: String,
        /// Its type in the module.
        found: FuncType,
        /// The ABI (and version) whose rule it breaks: `http-wasm`, `proxy-wasm 0.2.1`.
        abi: String,
        /// The accepted type(s), in words.
        wanted: String,
    },
    /// proxy-wasm was asked for, but the module exports no ABI version marker.
    #[error(
        "not a proxy-wasm module: it exports no proxy_abi_version_* marker \
         (proxy_abi_version_0_1_0, _0_2_0 or _0_2_1)"
    )]
    NoAbiVersion,
    /// The module's proxy-wasm ABI version marker names a version this host does not speak.
    #[error(
        "unsupported proxy-wasm ABI version marker `{marker}` (supported: \
         proxy_abi_version_0_1_0, proxy_abi_version_0_2_0, proxy_abi_version_0_2_1)"
    )]
    UnsupportedAbiVersion {
        /// The marker export.
        marker: String,
    },
    /// The guest refused its configuration (a proxy-wasm `on_vm_start` / `on_configure`
    /// returned false or trapped).
    #[error("plugin {plugin} rejected its configuration: {trap}")]
    Configure {
        /// The plugin's name.
        plugin: String,
        /// What the guest did.
        trap: Trap,
    },
    /// The guest failed while starting (`_start`, `_initialize`, a start section).
    #[error("guest failed during start-up: {0}")]
    Start(Trap),
    /// The middleware's first instances could not be taken from its pool.
    #[error(transparent)]
    Pool(PoolError),
    /// A proxy-wasm plugin could not join its VM id's state (see [`VmJoinError`]).
    #[error(transparent)]
    VmId(#[from] VmJoinError),
    /// A proxy-wasm middleware was created outside a tokio runtime: its dispatcher (ticks,
    /// queue readiness) would not run until the first request.
    #[error(
        "middleware {0}: proxy-wasm middlewares must be created inside a tokio runtime \
         (their tick and queue dispatcher starts with them)"
    )]
    NoRuntime(String),
}

impl From<PoolError> for PluginError {
    /// A new instance that failed to start is a start-up failure; anything else, a pool error.
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Instantiate(t) => PluginError::Start(t),
            other => PluginError::Pool(other),
        }
    }
}
