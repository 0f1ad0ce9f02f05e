//! Routers: which rule sends a request to which chain and service.

pub mod rule;

use std::collections::HashMap;
use std::sync::Arc;

use wasmgate_abi::{Endpoint, Headers, Middleware, Request};

pub use rule::{HeaderLookup, MatchInput, Rule, RuleError};

impl HeaderLookup for Headers {
    fn any_value(&self, name: &str, f: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        self.get_all(name).any(f)
    }
}

/// One router, resolved: its rule, its middleware chain (flattened) and its service.
pub struct Route {
    /// The router's name.
    pub name: String,
    /// Its rule.
    pub rule: Rule,
    /// Higher is tried first.
    pub priority: i64,
    /// Middlewares in order, `chain` middlewares flattened.
    pub chain: Vec<Arc<dyn Middleware>>,
    /// The service's name.
    pub service_name: String,
    /// The service.
    pub service: Arc<dyn Endpoint>,
    /// Served over TLS connections only (else over plain ones only), as Traefik's `tls`.
    pub tls: bool,
}

/// Routes by entry point, each list in the order they are tried.
#[derive(Default)]
pub struct RouteTable {
    by_entry_point: HashMap<String, Vec<Arc<Route>>>,
}

impl RouteTable {
    /// Adds `route` to `entry_point`.
    pub fn add(&mut self, entry_point: &str, route: Arc<Route>) {
        self.by_entry_point
            .entry(entry_point.to_string())
            .or_default()
            .push(route);
    }

    /// Orders every list: higher priority first, then by name so the order is stable.
    pub fn sort(&mut self) {
        for routes in self.by_entry_point.values_mut() {
            routes.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.name.cmp(&b.name)));
        }
    }

    /// The first route of `entry_point` for this kind of connection (`tls` or not) whose rule
    /// matches `req`.
    pub fn find(&self, entry_point: &str, tls: bool, req: &Request) -> Option<&Arc<Route>> {
        let routes = self.by_entry_point.get(entry_point)?;
        let input = MatchInput {
            host: req.host(),
            path: req.uri.path(),
            query: req.uri.query().unwrap_or(""),
            method: req.method.as_str(),
            headers: &req.headers,
            client_ip: req.source_addr.ip(),
        };
        routes
            .iter()
            .find(|r| r.tls == tls && r.rule.matches(&input))
    }

    /// Routers of `entry_point`, in the order they are tried.
    pub fn routes(&self, entry_point: &str) -> &[Arc<Route>] {
        self.by_entry_point
            .get(entry_point)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}
