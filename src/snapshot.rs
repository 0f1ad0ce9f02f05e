//! A snapshot: the routing configuration resolved into routes, chains and services.
//!
//! Requests take the current snapshot when they arrive and keep it until they
//! finish, so a reload never changes the chain under a request in flight.
//! Building a snapshot is also where references are checked: every error
//! names its config path and, for dangling references, what exists instead.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use http::uri::Scheme;
use wasmgate_abi::plugin::WASMTIME_POOL_SLOTS;
use wasmgate_abi::{Endpoint, Middleware};

use crate::config::error::missing;
use crate::config::{
    ConfigError, ConfigErrors, EntryPointConfig, MiddlewareKind, RoutingSource,
    ServersTransportConfig,
};
use crate::middlewares::{HeadersMiddleware, StripPrefixMiddleware};
use crate::plugins::{PluginCatalog, PoolKey};
use crate::router::{Route, RouteTable, Rule};
use crate::service::health::HealthCheck;
use crate::service::transport::UpstreamTls;
use crate::service::{EchoService, LoadBalancer, Server, TransportCache, ECHO_SERVICE};
use crate::tls::{TlsTable, TlsUse, DEFAULT_OPTIONS};

/// Resolved routing, ready to serve.
pub struct Snapshot {
    /// Routes by entry point.
    pub routes: RouteTable,
    /// Counts reloads: 1 for the first snapshot.
    pub generation: u64,
    /// The plugin middlewares, by name (for their metrics).
    pub plugin_middlewares: Vec<(String, Arc<dyn Middleware>)>,
    /// The text of the routing configuration it was built from (for `/api/rawdata`).
    pub routing_text: Arc<str>,
    /// TLS of the entry points that serve it, with this snapshot's certificates.
    pub tls: TlsTable,
}

/// What a snapshot is built against besides the routing config itself.
pub struct BuildContext<'a> {
    /// The entry points routers may name.
    pub entry_points: &'a BTreeMap<String, EntryPointConfig>,
    /// The declared plugins.
    pub plugins: &'a PluginCatalog,
    /// Upstream connection pools, kept across reloads.
    pub transports: &'a TransportCache,
    /// The generation number to give the snapshot.
    pub generation: u64,
    /// The install file (entry points' `http.tls` errors point into it).
    pub install_file: &'a Path,
}

/// Traefik lets references carry a provider suffix (`auth@file`); there is one provider here.
fn local_name(reference: &str) -> &str {
    reference.strip_suffix("@file").unwrap_or(reference)
}

struct Builder<'a> {
    src: &'a RoutingSource,
    ctx: &'a BuildContext<'a>,
    errors: Vec<ConfigError>,
    services: HashMap<String, Arc<dyn Endpoint>>,
    /// Middlewares built so far, flattened; `None` marks one being built (to catch cycles) or broken.
    middlewares: HashMap<String, Option<Vec<Arc<dyn Middleware>>>>,
    /// The chain of middleware names being built, outermost first.
    building: Vec<String>,
    /// The plugin middlewares would not fit the instance pools: none is built (the error
    /// says why), so none takes slots the serving snapshot needs.
    plugins_refused: bool,
}

impl Builder<'_> {
    fn error(&mut self, path: String, message: String) {
        self.errors
            .push(ConfigError::at(&self.src.file, path, message));
    }

    fn build_services(&mut self) {
        let http = &self.src.http;
        // Relative TLS files resolve against the file that holds the routing configuration.
        let base = self
            .src
            .file
            .parent()
            .unwrap_or(Path::new("."))
            .to_path_buf();
        // The TLS settings of every servers transport that has some, read at every build (their
        // files may have changed); `None` for one with errors (reported here, once).
        let mut tls_by_name: HashMap<&str, Option<Arc<UpstreamTls>>> = HashMap::new();
        for (t_name, t) in http
            .servers_transports
            .iter()
            .filter(|(_, t)| t.has_tls_settings())
        {
            let tls = match UpstreamTls::load(t, &base) {
                Ok(tls) => Some(Arc::new(tls)),
                Err(errors) => {
                    for (path, e) in errors {
                        let sep = if path.is_empty() { "" } else { "." };
                        self.error(format!("http.serversTransports.{t_name}{sep}{path}"), e);
                    }
                    None
                }
            };
            tls_by_name.insert(t_name, tls);
        }
        // For https servers of a transport without TLS settings: the system's roots.
        let mut default_tls: Option<Arc<UpstreamTls>> = None;
        for (name, svc) in &http.services {
            let lb = &svc.load_balancer;
            let mut servers = Vec::new();
            for (i, s) in lb.servers.iter().enumerate() {
                match Server::parse(&s.url, s.weight.unwrap_or(1)) {
                    Ok(server) => servers.push((i, server)),
                    Err(e) => self.error(
                        format!("http.services.{name}.loadBalancer.servers[{i}].url"),
                        e,
                    ),
                }
            }
            let (transport_cfg, named_tls) = match &lb.servers_transport {
                None => (ServersTransportConfig::default(), None),
                Some(t) => match http.servers_transports.get_key_value(local_name(t)) {
                    Some((t_name, cfg)) => (cfg.clone(), tls_by_name.get(t_name.as_str())),
                    None => {
                        let msg = missing("serversTransport", t, http.servers_transports.keys());
                        self.error(
                            format!("http.services.{name}.loadBalancer.serversTransport"),
                            msg,
                        );
                        continue;
                    }
                },
            };
            let check = match lb.health_check.as_ref().map(HealthCheck::parse) {
                None => None,
                Some(Ok(c)) => Some(c),
                Some(Err((field, e))) => {
                    self.error(
                        format!("http.services.{name}.loadBalancer.healthCheck.{field}"),
                        e,
                    );
                    continue;
                }
            };
            let needs_tls = servers.iter().any(|(_, s)| s.scheme() == &Scheme::HTTPS)
                || check.as_ref().is_some_and(HealthCheck::wants_https);
            let tls = match named_tls {
                Some(Some(tls)) => Some(tls.clone()),
                // Its errors are reported already.
                Some(None) => continue,
                None if needs_tls => match &default_tls {
                    Some(tls) => Some(tls.clone()),
                    None => match UpstreamTls::load(&ServersTransportConfig::default(), &base) {
                        Ok(tls) => Some(default_tls.insert(Arc::new(tls)).clone()),
                        Err(errors) => {
                            for (_, e) in errors {
                                self.error(format!("http.services.{name}.loadBalancer"), e);
                            }
                            continue;
                        }
                    },
                },
                None => None,
            };
            let transport = self.ctx.transports.get(&transport_cfg, tls);
            let mut attached = Vec::new();
            for (i, mut server) in servers {
                match server.attach(&transport) {
                    Ok(()) => attached.push(server),
                    Err(e) => self.error(
                        format!("http.services.{name}.loadBalancer.servers[{i}].url"),
                        e,
                    ),
                }
            }
            let servers = attached;
            let balancer = Arc::new(LoadBalancer::new(servers, lb.pass_host_header, transport));
            if let Some(check) = check {
                balancer.check_health(name, check);
            }
            self.services.insert(name.clone(), balancer);
        }
        self.services.insert(
            ECHO_SERVICE.to_string(),
            Arc::new(EchoService::new(ECHO_SERVICE)),
        );
    }

    /// Checks, before any plugin middleware is built, that the instances the plugin
    /// middlewares keep on each wasmtime pool fit its slots twice over: a reload starts the new
    /// snapshot's middlewares while the old ones still hold theirs. Past the slots, instances
    /// would fail to start at run time (500s); refused here instead, naming the middlewares and
    /// the numbers, at the largest one. False when refused.
    fn check_pool_slots(&mut self) -> bool {
        let mut pools: BTreeMap<PoolKey, Vec<(&String, &String, usize)>> = BTreeMap::new();
        for (name, cfg) in &self.src.http.middlewares {
            let Ok(MiddlewareKind::Plugin(p)) = cfg.kind() else {
                continue;
            };
            // A declaration naming no plugin or several is reported when it is built.
            let (Some((plugin, _)), 1) = (p.iter().next(), p.len()) else {
                continue;
            };
            if let Some((pool, n)) = self.ctx.plugins.pool_need(plugin) {
                pools.entry(pool).or_default().push((name, plugin, n));
            }
        }
        let slots = WASMTIME_POOL_SLOTS as usize;
        let mut ok = true;
        for ((_, class), users) in pools {
            let total: usize = users.iter().map(|u| u.2).sum();
            if total.saturating_mul(2) <= slots {
                continue;
            }
            ok = false;
            let list: Vec<String> = users.iter().map(|(m, _, n)| format!("{m}: {n}")).collect();
            let (name, plugin, _) = users.iter().max_by_key(|u| u.2).expect("one at least");
            self.error(
                format!("http.middlewares.{name}.plugin.{plugin}"),
                format!(
                    "the plugin middlewares on wasmtime's instance pool for {} GiB memories keep \
                     {total} instances ({}), and a reload starts new ones while the old ones \
                     still run: {} instances, more than the pool's {slots} slots (past them \
                     instances fail to start); lower poolSize or maxInstances so that they keep \
                     at most {} in all",
                    class >> 30,
                    list.join(", "),
                    total.saturating_mul(2),
                    slots / 2
                ),
            );
        }
        ok
    }

    /// The flattened chain for middleware `name`, building it on first use.
    fn middleware(&mut self, name: &str, path: &str) -> Option<Vec<Arc<dyn Middleware>>> {
        let name = local_name(name);
        if let Some(built) = self.middlewares.get(name).cloned() {
            if built.is_none() && self.building.contains(&name.to_string()) {
                self.error(
                    path.to_string(),
                    format!(
                        "middleware {name:?} includes itself: {} -> {name}",
                        self.building.join(" -> ")
                    ),
                );
            }
            return built;
        }
        let Some(cfg) = self.src.http.middlewares.get(name) else {
            let msg = missing("middleware", name, self.src.http.middlewares.keys());
            self.error(path.to_string(), msg);
            return None;
        };
        let here = format!("http.middlewares.{name}");
        self.middlewares.insert(name.to_string(), None);
        self.building.push(name.to_string());
        let built: Option<Vec<Arc<dyn Middleware>>> = match cfg.kind() {
            Err(e) => {
                self.error(here, e);
                None
            }
            Ok(MiddlewareKind::Headers(h)) => {
                let bad = HeadersMiddleware::invalid_fields(h);
                let ok = bad.is_empty();
                for (field, header, why) in bad {
                    self.error(format!("{here}.headers.{field}.{header}"), why);
                }
                ok.then(|| vec![Arc::new(HeadersMiddleware::new(h)) as Arc<dyn Middleware>])
            }
            Ok(MiddlewareKind::StripPrefix(s)) => {
                Some(vec![Arc::new(StripPrefixMiddleware::new(s))])
            }
            Ok(MiddlewareKind::Chain(c)) => {
                let mut all = Vec::new();
                let mut ok = true;
                for (i, m) in c.middlewares.iter().enumerate() {
                    match self.middleware(m, &format!("{here}.chain.middlewares[{i}]")) {
                        Some(list) => all.extend(list),
                        None => ok = false,
                    }
                }
                ok.then_some(all)
            }
            // Refused as a whole by check_pool_slots.
            Ok(MiddlewareKind::Plugin(_)) if self.plugins_refused => None,
            Ok(MiddlewareKind::Plugin(p)) => {
                if p.len() != 1 {
                    self.error(
                        format!("{here}.plugin"),
                        format!(
                            "a plugin middleware names exactly one plugin; declared plugins: {}",
                            self.ctx.plugins.names().collect::<Vec<_>>().join(", ")
                        ),
                    );
                    None
                } else {
                    let (plugin, config) = p.iter().next().expect("one entry");
                    // proxy-wasm filters reach the services by name with proxy_http_call.
                    let services = Arc::new(self.services.clone());
                    let policy = cfg.failure_policy.map(Into::into);
                    match self
                        .ctx
                        .plugins
                        .middleware(plugin, name, config, services, policy)
                    {
                        Ok(m) => Some(vec![m]),
                        Err(e) => {
                            self.error(format!("{here}.plugin.{plugin}"), e);
                            None
                        }
                    }
                }
            }
        };
        self.building.pop();
        self.middlewares.insert(name.to_string(), built.clone());
        built
    }
}

impl<'a> Builder<'a> {
    fn new(src: &'a RoutingSource, ctx: &'a BuildContext<'a>) -> Self {
        Builder {
            src,
            ctx,
            errors: Vec::new(),
            services: HashMap::new(),
            middlewares: HashMap::new(),
            building: Vec::new(),
            plugins_refused: false,
        }
    }
}

/// Resolves `src` into a snapshot, or lists every mistake in it.
pub fn build(src: &RoutingSource, ctx: &BuildContext<'_>) -> Result<Snapshot, ConfigErrors> {
    let mut b = Builder::new(src, ctx);
    b.build_services();
    b.plugins_refused = !b.check_pool_slots();
    // Every middleware is checked, used or not.
    for name in src.http.middlewares.keys() {
        b.middleware(name, &format!("http.middlewares.{name}"));
    }
    let mut table = RouteTable::default();
    // Entry points that serve TLS, with the options each router there asks for.
    let mut tls_uses: BTreeMap<String, Vec<TlsUse>> = BTreeMap::new();
    for (name, r) in &src.http.routers {
        let here = format!("http.routers.{name}");
        let rule = match Rule::parse(&r.rule) {
            Ok(rule) => Some(rule),
            Err(e) => {
                b.error(
                    format!("{here}.rule"),
                    format!("router {name:?}: rule does not parse at {e}"),
                );
                None
            }
        };
        let mut chain = Vec::new();
        let mut ok = rule.is_some();
        for (i, m) in r.middlewares.iter().enumerate() {
            match b.middleware(m, &format!("{here}.middlewares[{i}]")) {
                Some(list) => chain.extend(list),
                None => ok = false,
            }
        }
        let service = b.services.get(local_name(&r.service)).cloned();
        if service.is_none() {
            let mut names: Vec<&String> = src.http.services.keys().collect();
            let echo = ECHO_SERVICE.to_string();
            names.push(&echo);
            let msg = missing("service", &r.service, names);
            b.error(format!("{here}.service"), msg);
        }
        let entry_points: Vec<String> = if r.entry_points.is_empty() {
            // As Traefik: every entry point but the internal one (`ping`, `metrics`), unless
            // it is the only one.
            let all = ctx.entry_points.keys();
            if ctx.entry_points.len() > 1 {
                all.filter(|e| *e != crate::config::INTERNAL_ENTRY_POINT)
                    .cloned()
                    .collect()
            } else {
                all.cloned().collect()
            }
        } else {
            r.entry_points.clone()
        };
        for (i, ep) in entry_points.iter().enumerate() {
            if !ctx.entry_points.contains_key(ep) {
                let msg = missing("entry point", ep, ctx.entry_points.keys());
                b.error(format!("{here}.entryPoints[{i}]"), msg);
                ok = false;
            }
        }
        let (Some(rule), Some(service), true) = (rule, service, ok) else {
            continue;
        };
        let priority = r.priority.unwrap_or(r.rule.chars().count() as i64);
        for ep in &entry_points {
            // A router's own `tls`, else its entry point's `http.tls`.
            let tls = match (&r.tls, &ctx.entry_points[ep].http.tls) {
                (Some(t), _) => Some((t, format!("{here}.tls"), src.file.as_path())),
                (None, Some(t)) => {
                    Some((t, format!("entryPoints.{ep}.http.tls"), ctx.install_file))
                }
                (None, None) => None,
            };
            if let Some((t, path, file)) = &tls {
                if t.cert_resolver.is_some() {
                    b.errors.push(ConfigError::at(
                        file,
                        format!("{path}.certResolver"),
                        "certResolver needs ACME, which wasmgate does not have; give \
                         certificates in tls.certificates",
                    ));
                }
                tls_uses.entry(ep.clone()).or_default().push(TlsUse {
                    options: t.options.clone().unwrap_or_else(|| DEFAULT_OPTIONS.into()),
                    path: path.clone(),
                    file: file.to_path_buf(),
                    hosts: rule.hosts(),
                });
            }
            table.add(
                ep,
                Arc::new(Route {
                    name: name.clone(),
                    priority,
                    rule: rule.clone(),
                    chain: chain.clone(),
                    service_name: local_name(&r.service).to_string(),
                    service: service.clone(),
                    tls: tls.is_some(),
                }),
            );
        }
    }
    let base = src.file.parent().unwrap_or(Path::new("."));
    let tls = match crate::tls::build(&src.tls, &src.file, base, &tls_uses) {
        Ok(t) => t,
        Err(errors) => {
            b.errors.extend(errors);
            TlsTable::default()
        }
    };
    if !b.errors.is_empty() {
        return Err(src.locate(ConfigErrors(b.errors)));
    }
    table.sort();
    let mut plugin_middlewares: Vec<(String, Arc<dyn Middleware>)> = b
        .middlewares
        .iter()
        .filter(|(name, _)| {
            src.http
                .middlewares
                .get(*name)
                .is_some_and(|m| m.plugin.is_some())
        })
        .filter_map(|(name, built)| Some((name.clone(), built.as_ref()?.first()?.clone())))
        .collect();
    plugin_middlewares.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Snapshot {
        routes: table,
        generation: ctx.generation,
        plugin_middlewares,
        routing_text: src.text.as_str().into(),
        tls,
    })
}
