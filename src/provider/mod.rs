//! Providers of routing besides the file: Traefik's KV providers, etcd and Redis.
//!
//! Each KV provider reads every key under its `rootKey`, maps them with [`kv::parse`] and hands
//! the result to [`Gateway::apply_kv`], which builds one snapshot from the file provider and
//! every KV provider together, and keeps serving the last good one when that fails. Names are
//! qualified as in Traefik: what a KV provider defines is `name@etcd` (or `@redis`) in the
//! snapshot, a reference without `@` stays within its own provider, and the file provider's
//! names stay as they are (so a file-only configuration is served exactly as before; `x@file`
//! reaches them from a KV provider).

pub mod etcd;
pub mod kv;
pub mod redis;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinHandle;

use crate::config::{ConfigErrors, HttpConfig, RoutingSource};
use crate::gateway::Gateway;
pub use kv::KvRouting;

/// The sections of `http` whose items have names.
const SECTIONS: [&str; 4] = ["routers", "middlewares", "services", "serversTransports"];

/// Changes closer together than this are one change: a deploy writes many keys.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// A reference as it reads in the merged configuration: without `@` it is `provider`'s own.
fn qualify_ref(reference: &str, provider: &str) -> String {
    if reference.contains('@') {
        reference.to_string()
    } else {
        format!("{reference}@{provider}")
    }
}

/// `kv`'s configuration with its names qualified (`r` is `r@etcd`) and its references too.
pub fn qualify(kv: &KvRouting) -> HttpConfig {
    let p = kv.provider.as_str();
    let name = |n: &String| format!("{n}@{p}");
    let http = &kv.http;
    HttpConfig {
        routers: http
            .routers
            .iter()
            .map(|(n, r)| {
                let mut r = r.clone();
                r.service = qualify_ref(&r.service, p);
                r.middlewares = r.middlewares.iter().map(|m| qualify_ref(m, p)).collect();
                (name(n), r)
            })
            .collect(),
        middlewares: http
            .middlewares
            .iter()
            .map(|(n, m)| {
                let mut m = m.clone();
                if let Some(chain) = &mut m.chain {
                    chain.middlewares = chain
                        .middlewares
                        .iter()
                        .map(|m| qualify_ref(m, p))
                        .collect();
                }
                (name(n), m)
            })
            .collect(),
        services: http
            .services
            .iter()
            .map(|(n, s)| {
                let mut s = s.clone();
                if let Some(t) = &mut s.load_balancer.servers_transport {
                    *t = qualify_ref(t, p);
                }
                (name(n), s)
            })
            .collect(),
        servers_transports: http
            .servers_transports
            .iter()
            .map(|(n, t)| (name(n), t.clone()))
            .collect(),
    }
}

/// The file provider's routing with every KV provider's added, and the text of the whole (JSON,
/// keys sorted: the same on every replica fed the same keys), served by `/api/rawdata` and
/// hashed for `/metrics`. The file's text stays the source's text, so its errors keep their lines.
pub fn merge(
    file: RoutingSource,
    kvs: &BTreeMap<String, Arc<KvRouting>>,
) -> (RoutingSource, String) {
    let mut http = file.http.clone();
    let mut tree: Value = serde_yaml::from_str::<serde_yaml::Value>(&file.text)
        .ok()
        .and_then(|doc| serde_json::to_value(doc).ok())
        .and_then(|doc| doc.get("http").cloned())
        .filter(Value::is_object)
        .unwrap_or_else(|| Value::Object(Default::default()));
    for kv in kvs.values() {
        let q = qualify(kv);
        http.routers.extend(q.routers);
        http.middlewares.extend(q.middlewares);
        http.services.extend(q.services);
        http.servers_transports.extend(q.servers_transports);
        for section in SECTIONS {
            let Some(Value::Object(items)) = kv.tree.get(section) else {
                continue;
            };
            let out = tree
                .as_object_mut()
                .expect("an object")
                .entry(section)
                .or_insert_with(|| Value::Object(Default::default()));
            if let Value::Object(out) = out {
                for (n, item) in items {
                    out.insert(format!("{n}@{}", kv.provider), item.clone());
                }
            }
        }
    }
    let text = serde_json::to_string_pretty(&serde_json::json!({ "http": canonical(tree) }))
        .expect("JSON values serialize");
    (
        // Certificates and TLS options come from the file (Traefik's KV `tls` keys are not read).
        RoutingSource {
            file: file.file,
            text: file.text,
            http,
            tls: file.tls,
        },
        text,
    )
}

/// `v` with object keys in sorted order, whatever order the file had them in.
fn canonical(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<String, Value> =
                m.into_iter().map(|(k, v)| (k, canonical(v))).collect();
            Value::Object(sorted.into_iter().collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(canonical).collect()),
        other => other,
    }
}

/// Errors of a merged snapshot that point into a KV provider's part get that provider's key as
/// their "file" (`etcd:traefik/http/routers/r/rule`), as parse errors have.
pub fn locate_kv_errors(
    mut errors: ConfigErrors,
    kvs: &BTreeMap<String, Arc<KvRouting>>,
) -> ConfigErrors {
    for e in errors.0.iter_mut() {
        for kv in kvs.values() {
            if let Some(key) = kv_key(&e.path, kv) {
                *e = kv::key_error(&kv.provider, &key, std::mem::take(&mut e.message));
                break;
            }
        }
    }
    errors
}

/// The key behind config path `path` (`http.routers.r@etcd.rule`) when it is `kv`'s.
fn kv_key(path: &str, kv: &KvRouting) -> Option<String> {
    let rest = path.strip_prefix("http.")?;
    let (section, rest) = rest.split_once('.')?;
    if !SECTIONS.contains(&section) {
        return None;
    }
    let suffix = format!("@{}", kv.provider);
    let mut from = 0;
    // The name may contain dots; it ends where `@provider` is followed by the end, `.` or `[`.
    while let Some(i) = rest[from..].find(&suffix) {
        let end = from + i + suffix.len();
        let tail = &rest[end..];
        if tail.is_empty() || tail.starts_with('.') || tail.starts_with('[') {
            let name = &rest[..from + i];
            let root = format!("{}/http/{section}/{name}", kv.root_key);
            return Some(kv::path_to_key(&root, tail));
        }
        from = end;
    }
    None
}

/// Waits between attempts to reach a store: 1 s, doubling, at most 30 s.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    /// Attempts that failed in a row.
    pub attempt: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: Self::FIRST,
            attempt: 0,
        }
    }
}

impl Backoff {
    const FIRST: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(30);

    /// The wait before the next attempt; each call doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        self.attempt += 1;
        d
    }

    /// After a failed session of `provider` (at `endpoints`): logs why and when the next
    /// attempt comes, then waits for it.
    pub async fn wait_after(&mut self, provider: &str, endpoints: &str, error: &str) {
        let delay = self.next_delay();
        tracing::warn!(
            provider,
            endpoints,
            attempt = self.attempt,
            "{error}; next attempt in {delay:?} (the current routing keeps serving)"
        );
        tokio::time::sleep(delay).await;
    }

    /// The store answered: the next failure starts again from 1 s.
    pub fn reset(&mut self) {
        *self = Backoff::default();
    }
}

/// Hands a full read of a store to the gateway, off the async workers (building a snapshot
/// compiles rules and starts plugins), and logs the outcome. True when the store's routing is
/// being served (applied now, or unchanged since the last good read).
pub async fn apply(
    gateway: &Arc<Gateway>,
    provider: &'static str,
    root_key: &str,
    pairs: Vec<(String, String)>,
) -> bool {
    let gw = gateway.clone();
    let root = root_key.to_string();
    let keys = pairs.len();
    match tokio::task::spawn_blocking(move || gw.apply_kv(provider, &root, pairs)).await {
        Ok(Ok(Some(generation))) => {
            tracing::info!(provider, generation, keys, "routing configuration reloaded");
            true
        }
        Ok(Ok(None)) => {
            tracing::debug!(provider, keys, "routing unchanged");
            true
        }
        Ok(Err(errors)) => {
            for e in &errors.0 {
                tracing::error!(
                    provider,
                    "reload rejected, previous configuration kept: {e}"
                );
            }
            false
        }
        Err(e) => {
            tracing::error!(provider, "reload failed: {e}");
            false
        }
    }
}

/// The provider tasks of a gateway; dropping it stops them.
#[derive(Default)]
pub struct Providers {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Providers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts a task for each KV provider the install file configures. They connect, read, watch
/// and reconnect on their own; the entry points serve meanwhile (the file provider's routing,
/// or nothing until a first read arrives). Call inside the gateway's runtime.
pub fn start(gateway: &Arc<Gateway>) -> Providers {
    let mut tasks = Vec::new();
    let providers = &gateway.loaded.config.providers;
    if let Some(cfg) = &providers.etcd {
        tasks.push(tokio::spawn(etcd::run(
            gateway.clone(),
            cfg.clone(),
            gateway.loaded.base_dir().to_path_buf(),
        )));
    }
    if let Some(cfg) = &providers.redis {
        tasks.push(tokio::spawn(redis::run(gateway.clone(), cfg.clone())));
    }
    Providers { tasks }
}

/// The KV providers `wasmgate validate --provider` can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// `providers.etcd`.
    Etcd,
    /// `providers.redis`.
    Redis,
}

/// Reads what `which` stores now, once (no retry): its root key and pairs.
pub async fn read_once(
    gateway: &Gateway,
    which: Which,
) -> Result<(&'static str, String, Vec<(String, String)>), String> {
    let providers = &gateway.loaded.config.providers;
    match which {
        Which::Etcd => {
            let cfg = providers
                .etcd
                .as_ref()
                .ok_or("the install file configures no providers.etcd")?;
            let pairs = etcd::read_once(cfg, gateway.loaded.base_dir()).await?;
            Ok(("etcd", cfg.root_key.clone(), pairs))
        }
        Which::Redis => {
            let cfg = providers
                .redis
                .as_ref()
                .ok_or("the install file configures no providers.redis")?;
            let pairs = redis::read_once(cfg).await?;
            Ok(("redis", cfg.root_key.clone(), pairs))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn kv(list: &[(&str, &str)]) -> Arc<KvRouting> {
        let pairs: Vec<(String, String)> = list
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Arc::new(kv::parse("etcd", "traefik", &pairs).unwrap())
    }

    #[test]
    fn names_are_qualified_and_references_stay_within_their_provider() {
        let e = kv(&[
            ("traefik/http/routers/r/rule", "Path(`/`)"),
            ("traefik/http/routers/r/service", "s"),
            ("traefik/http/routers/r/middlewares/0", "m"),
            ("traefik/http/routers/r/middlewares/1", "auth@file"),
            ("traefik/http/middlewares/m/chain/middlewares/0", "n"),
            (
                "traefik/http/services/s/loadBalancer/servers/0/url",
                "http://a",
            ),
            ("traefik/http/services/s/loadBalancer/serversTransport", "t"),
            ("traefik/http/serversTransports/t/maxIdleConnsPerHost", "3"),
        ]);
        let q = qualify(&e);
        let r = &q.routers["r@etcd"];
        assert_eq!(r.service, "s@etcd");
        assert_eq!(r.middlewares, ["m@etcd", "auth@file"]);
        assert_eq!(
            q.middlewares["m@etcd"].chain.as_ref().unwrap().middlewares,
            ["n@etcd"]
        );
        assert_eq!(
            q.services["s@etcd"]
                .load_balancer
                .servers_transport
                .as_deref(),
            Some("t@etcd")
        );
        assert!(q.servers_transports.contains_key("t@etcd"));

        let file = RoutingSource {
            file: PathBuf::from("routing.yaml"),
            text: "http:\n  routers:\n    f: { rule: \"Path(`/f`)\", service: s }\n".into(),
            http: crate::config::parse_yaml::<crate::config::RoutingFile>(
                std::path::Path::new("routing.yaml"),
                "http:\n  routers:\n    f: { rule: \"Path(`/f`)\", service: s }\n",
            )
            .unwrap()
            .http,
            tls: Default::default(),
        };
        let kvs = BTreeMap::from([("etcd".to_string(), e)]);
        let (merged, text) = merge(file, &kvs);
        assert!(merged.http.routers.contains_key("f"));
        assert!(merged.http.routers.contains_key("r@etcd"));
        let json: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["http"]["routers"]["f"]["service"], "s");
        assert_eq!(json["http"]["routers"]["r@etcd"]["service"], "s");
    }

    #[test]
    fn snapshot_errors_in_a_kv_part_name_its_key() {
        let kvs = BTreeMap::from([("etcd".to_string(), kv(&[]))]);
        let errors = ConfigErrors(vec![
            crate::config::ConfigError::at(
                std::path::Path::new("routing.yaml"),
                "http.routers.a.b@etcd.middlewares[1]",
                "nope",
            ),
            crate::config::ConfigError::at(
                std::path::Path::new("routing.yaml"),
                "http.routers.f.service",
                "file's",
            ),
        ]);
        let out = locate_kv_errors(errors, &kvs);
        assert_eq!(
            out.0[0].to_string(),
            "etcd:traefik/http/routers/a.b/middlewares/1: nope"
        );
        assert_eq!(
            out.0[1].to_string(),
            "routing.yaml: http.routers.f.service: file's"
        );
    }

    #[test]
    fn backoff_doubles_to_thirty_seconds() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..7).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        b.reset();
        assert_eq!(b.next_delay().as_secs(), 1);
    }
}
