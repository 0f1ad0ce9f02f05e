//! Traefik's KV layout: `(key, value)` pairs under a root key turned into the routing
//! configuration the file provider gives.
//!
//! `traefik/http/routers/r/rule = PathPrefix(`/`)` is `http.routers.r.rule` in YAML; a numeric
//! segment is a list index (`.../servers/0/url`, `.../middlewares/1`), and
//! `.../middlewares/<m>/plugin/<p>/<field...>` is the plugin's configuration object, its values
//! strings (Traefik hands them to plugins that way). Every value is a string in the store, so
//! the pairs are read through a deserializer that parses numbers, booleans and durations where
//! the configuration types want them, and [`serde_path_to_error`] names the config path of a bad
//! value, which is turned back into its key.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::de::value::{Error as DeError, StrDeserializer};
use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, Visitor};
use serde_json::Value;

use crate::config::{ConfigError, ConfigErrors, HttpConfig};

/// The routing one KV provider read: its configuration and the same as a JSON tree.
#[derive(Debug, Clone)]
pub struct KvRouting {
    /// The provider's name, as in qualified names (`etcd`, `redis`).
    pub provider: String,
    /// The root key the pairs were under.
    pub root_key: String,
    /// The `http` section, names as stored (not yet qualified).
    pub http: HttpConfig,
    /// The `http` section as a JSON tree (values strings), for `/api/rawdata` and the hash.
    pub tree: Value,
}

/// A key's place in the tree: a value, or the keys under it.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Leaf(String),
    Branch(BTreeMap<String, Node>),
}

impl Node {
    /// The children of a branch whose keys are all list indexes, in index order.
    fn as_list(&self) -> Option<Vec<&Node>> {
        let Node::Branch(map) = self else {
            return None;
        };
        let mut items: Vec<(usize, &Node)> = Vec::with_capacity(map.len());
        for (k, v) in map {
            items.push((k.parse().ok()?, v));
        }
        items.sort_by_key(|(i, _)| *i);
        Some(items.into_iter().map(|(_, v)| v).collect())
    }

    fn to_json(&self) -> Value {
        match self {
            Node::Leaf(s) => Value::String(s.clone()),
            Node::Branch(map) => match self.as_list() {
                Some(items) if !map.is_empty() => {
                    Value::Array(items.into_iter().map(Node::to_json).collect())
                }
                _ => Value::Object(map.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()),
            },
        }
    }
}

/// The error of one key: its "file" is `provider:key`, so it reads `etcd:traefik/...: message`.
pub fn key_error(provider: &str, key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::at(&PathBuf::from(format!("{provider}:{key}")), "", message)
}

/// The key a config path (`http.services.s.loadBalancer.servers[0].url`) was read from.
pub fn path_to_key(root_key: &str, path: &str) -> String {
    let mut key = root_key.to_string();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        // `servers[0]`, or `[0]` on its own after another index.
        let (name, indexes) = match part.find('[') {
            Some(i) => part.split_at(i),
            None => (part, ""),
        };
        if !name.is_empty() {
            key.push('/');
            key.push_str(name);
        }
        for index in indexes.split(['[', ']']).filter(|i| !i.is_empty()) {
            key.push('/');
            key.push_str(index);
        }
    }
    key
}

/// Reads the pairs under `root_key` (keys elsewhere are ignored) into the routing
/// configuration; every mistake names its key.
pub fn parse(
    provider: &str,
    root_key: &str,
    pairs: &[(String, String)],
) -> Result<KvRouting, ConfigErrors> {
    let root_key = root_key.trim_end_matches('/');
    let prefix = format!("{root_key}/");
    let mut root = Node::Branch(BTreeMap::new());
    let mut errors = Vec::new();
    for (key, value) in pairs {
        let Some(rest) = key.strip_prefix(&prefix) else {
            continue;
        };
        let segments: Vec<&str> = rest.split('/').collect();
        if segments.iter().any(|s| s.is_empty()) {
            // etcd tools write directory markers such as `traefik/http/`; those carry nothing.
            if value.is_empty() {
                continue;
            }
            errors.push(key_error(provider, key, "empty segment in the key"));
            continue;
        }
        if let Err(message) = insert(&mut root, &segments, value) {
            errors.push(key_error(provider, key, message));
        }
    }
    let Node::Branch(mut sections) = root else {
        unreachable!("the root is a branch")
    };
    let http = sections.remove("http");
    for other in sections.keys() {
        // tcp, udp, tls: Traefik's other sections, which wasmgate does not serve.
        tracing::warn!(
            provider,
            "{root_key}/{other}/...: ignored, wasmgate reads only {root_key}/http/..."
        );
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let http_node = http.unwrap_or(Node::Branch(BTreeMap::new()));
    let mut config: HttpConfig = serde_path_to_error::deserialize(KvDeserializer(&http_node))
        .map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            let key = path_to_key(&format!("{root_key}/http"), &path);
            ConfigErrors(vec![key_error(provider, &key, e.into_inner().to_string())])
        })?;
    // A plugin key with an empty value is a plugin without settings: `{}`, as YAML's `p: {}`.
    for m in config.middlewares.values_mut() {
        for settings in m.plugin.iter_mut().flat_map(|p| p.values_mut()) {
            if settings.as_str() == Some("") {
                *settings = Value::Object(Default::default());
            }
        }
    }
    Ok(KvRouting {
        provider: provider.to_string(),
        root_key: root_key.to_string(),
        http: config,
        tree: http_node.to_json(),
    })
}

fn insert(node: &mut Node, segments: &[&str], value: &str) -> Result<(), String> {
    let Some((first, rest)) = segments.split_first() else {
        return match node {
            Node::Leaf(_) => Err("the key is given twice".into()),
            // A value on a key that has keys under it: only an empty one (a directory marker).
            Node::Branch(map) if map.is_empty() || value.is_empty() => Ok(()),
            Node::Branch(_) => Err("the key has a value and keys under it; remove one".into()),
        };
    };
    if let Node::Leaf(existing) = node {
        if !existing.is_empty() {
            return Err(format!(
                "a key above this one has a value ({existing:?}); a key has either a value or \
                 keys under it"
            ));
        }
        *node = Node::Branch(BTreeMap::new());
    }
    let Node::Branch(map) = node else {
        unreachable!("made a branch above")
    };
    if rest.is_empty() {
        match map.get_mut(*first) {
            None => {
                map.insert(first.to_string(), Node::Leaf(value.to_string()));
                Ok(())
            }
            Some(existing) => insert(existing, rest, value),
        }
    } else {
        let child = map
            .entry(first.to_string())
            .or_insert_with(|| Node::Branch(BTreeMap::new()));
        insert(child, rest, value)
    }
}

static EMPTY: BTreeMap<String, Node> = BTreeMap::new();

/// Deserializes a [`Node`]: values are strings, parsed when a number, boolean or list is wanted.
struct KvDeserializer<'a>(&'a Node);

impl KvDeserializer<'_> {
    fn leaf(&self) -> Result<&str, DeError> {
        match self.0 {
            Node::Leaf(s) => Ok(s),
            Node::Branch(_) => Err(de::Error::custom(
                "expected a value, found keys under this one",
            )),
        }
    }
}

macro_rules! parse_number {
    ($($method:ident $visit:ident $ty:ty),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
                let s = self.leaf()?;
                match s.trim().parse::<$ty>() {
                    Ok(n) => visitor.$visit(n),
                    Err(_) => Err(de::Error::invalid_value(de::Unexpected::Str(s), &visitor)),
                }
            }
        )*
    };
}

impl<'de> Deserializer<'de> for KvDeserializer<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Node::Leaf(s) => visitor.visit_str(s),
            Node::Branch(map) => match self.0.as_list() {
                Some(items) if !map.is_empty() => visitor.visit_seq(SeqDe(items.into_iter())),
                _ => visitor.visit_map(MapDe {
                    iter: map.iter(),
                    value: None,
                    fields: &[],
                }),
            },
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let s = self.leaf()?;
        match s.trim().to_ascii_lowercase().as_str() {
            "true" => visitor.visit_bool(true),
            "false" => visitor.visit_bool(false),
            _ => Err(de::Error::invalid_value(de::Unexpected::Str(s), &visitor)),
        }
    }

    parse_number! {
        deserialize_i8 visit_i8 i8,
        deserialize_i16 visit_i16 i16,
        deserialize_i32 visit_i32 i32,
        deserialize_i64 visit_i64 i64,
        deserialize_u8 visit_u8 u8,
        deserialize_u16 visit_u16 u16,
        deserialize_u32 visit_u32 u32,
        deserialize_u64 visit_u64 u64,
        deserialize_f32 visit_f32 f32,
        deserialize_f64 visit_f64 f64,
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        // A key that is there is a value that is there.
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            // Traefik also takes a list as one comma-separated value.
            Node::Leaf(s) => {
                let items: Vec<Node> = s
                    .split(',')
                    .map(|i| Node::Leaf(i.trim().to_string()))
                    .filter(|n| n != &Node::Leaf(String::new()))
                    .collect();
                visitor.visit_seq(SeqDe(items.iter().collect::<Vec<_>>().into_iter()))
            }
            Node::Branch(_) => match self.0.as_list() {
                Some(items) => visitor.visit_seq(SeqDe(items.into_iter())),
                None => Err(de::Error::custom(
                    "expected a list: keys under this one numbered 0, 1, ...",
                )),
            },
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Node::Branch(map) => visitor.visit_map(MapDe {
                iter: map.iter(),
                value: None,
                fields: &[],
            }),
            // An empty value stands for an empty section (`.../plugin/p` with no fields).
            Node::Leaf(s) if s.is_empty() => visitor.visit_map(MapDe {
                iter: EMPTY.iter(),
                value: None,
                fields: &[],
            }),
            Node::Leaf(s) => Err(de::Error::invalid_type(de::Unexpected::Str(s), &visitor)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let map = match self.0 {
            Node::Branch(map) => map,
            // `.../tls = true`: the section with its defaults (Traefik's way to turn one on).
            Node::Leaf(s) if s.is_empty() || s.trim().eq_ignore_ascii_case("true") => &EMPTY,
            Node::Leaf(s) => return Err(de::Error::invalid_type(de::Unexpected::Str(s), &visitor)),
        };
        visitor.visit_map(MapDe {
            iter: map.iter(),
            value: None,
            fields,
        })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let s = self.leaf()?;
        visitor.visit_enum(s.into_deserializer())
    }

    serde::forward_to_deserialize_any! {
        char str string bytes byte_buf unit unit_struct tuple tuple_struct identifier
        ignored_any i128 u128
    }
}

struct SeqDe<'a, I: Iterator<Item = &'a Node>>(I);

impl<'de, 'a, I: Iterator<Item = &'a Node>> de::SeqAccess<'de> for SeqDe<'a, I> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        self.0
            .next()
            .map(|n| seed.deserialize(KvDeserializer(n)))
            .transpose()
    }
}

struct MapDe<'a> {
    iter: std::collections::btree_map::Iter<'a, String, Node>,
    value: Option<&'a Node>,
    /// A struct's field names (empty for a map): keys are matched to them ignoring case, as
    /// Traefik's KV keys are (`entrypoints` is `entryPoints`).
    fields: &'static [&'static str],
}

impl<'de> de::MapAccess<'de> for MapDe<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((k, v)) = self.iter.next() else {
            return Ok(None);
        };
        self.value = Some(v);
        let k = self
            .fields
            .iter()
            .find(|f| f.eq_ignore_ascii_case(k))
            .copied()
            .unwrap_or(k.as_str());
        let key: StrDeserializer<'_, DeError> = k.into_deserializer();
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let v = self
            .value
            .take()
            .ok_or_else(|| de::Error::custom("a value without its key"))?;
        seed.deserialize(KvDeserializer(v))
    }
}

/// Turns [`parse`]'s JSON tree back into `(key, value)` pairs (for tests and tools that write a
/// configuration into a store).
pub fn tree_to_pairs(root_key: &str, tree: &Value) -> Vec<(String, String)> {
    fn walk(key: String, v: &Value, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) => m
                .iter()
                .for_each(|(k, v)| walk(format!("{key}/{k}"), v, out)),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .for_each(|(i, v)| walk(format!("{key}/{i}"), v, out)),
            Value::String(s) => out.push((key, s.clone())),
            other => out.push((key, other.to_string())),
        }
    }
    let mut out = Vec::new();
    walk(format!("{root_key}/http"), tree, &mut out);
    out
}

/// Reads a struct from one value, for the deserializer's own tests.
#[cfg(test)]
fn from_pairs<T: for<'de> serde::Deserialize<'de>>(pairs: &[(&str, &str)]) -> Result<T, String> {
    let mut root = Node::Branch(BTreeMap::new());
    for (k, v) in pairs {
        let segments: Vec<&str> = k.split('/').collect();
        insert(&mut root, &segments, v)?;
    }
    serde_path_to_error::deserialize(KvDeserializer(&root))
        .map_err(|e| format!("{}: {}", e.path(), e.inner()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MiddlewareKind;
    use serde::Deserialize;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Traefik's reference writes its keys in lower case (`entrypoints`, `loadbalancer`),
    /// and turns TLS on with `.../tls = true`: keys name fields whatever their case.
    #[test]
    fn keys_ignore_case_and_a_section_may_be_true() {
        let kv = pairs(&[
            ("traefik/http/routers/r/rule", "Host(`a.test`)"),
            ("traefik/http/routers/r/entrypoints/0", "websecure"),
            ("traefik/http/routers/r/service", "s"),
            ("traefik/http/routers/r/tls", "true"),
            ("traefik/http/routers/o/rule", "Host(`b.test`)"),
            ("traefik/http/routers/o/service", "s"),
            ("traefik/http/routers/o/tls/options", "modern"),
            (
                "traefik/http/services/s/loadbalancer/servers/0/url",
                "http://10.0.0.1",
            ),
            (
                "traefik/http/services/s/loadbalancer/passhostheader",
                "false",
            ),
            (
                "traefik/http/middlewares/m/headers/customrequestheaders/X-Keep-Case",
                "1",
            ),
        ]);
        let r = parse("etcd", "traefik", &kv).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.http.routers["r"].entry_points, ["websecure"]);
        assert!(r.http.routers["r"]
            .tls
            .as_ref()
            .is_some_and(|t| t.options.is_none()));
        assert_eq!(
            r.http.routers["o"]
                .tls
                .as_ref()
                .and_then(|t| t.options.as_deref()),
            Some("modern")
        );
        let lb = &r.http.services["s"].load_balancer;
        assert_eq!(lb.servers[0].url, "http://10.0.0.1");
        assert!(!lb.pass_host_header);
        // Header names are a map's keys, not fields: kept as written.
        let h = r.http.middlewares["m"].headers.as_ref().unwrap();
        assert_eq!(h.custom_request_headers["X-Keep-Case"], "1");
        // A section is a value only when it is true (or empty).
        let kv = pairs(&[
            ("traefik/http/routers/r/rule", "Host(`a.test`)"),
            ("traefik/http/routers/r/service", "s"),
            ("traefik/http/routers/r/tls", "yes"),
        ]);
        assert!(parse("etcd", "traefik", &kv).is_err());
    }

    /// The example of Traefik's "Routing Configuration with KV stores" page, in its keys.
    #[test]
    fn traefiks_documented_keys() {
        let kv = pairs(&[
            ("traefik/http/routers/myrouter/rule", "Host(`example.com`)"),
            ("traefik/http/routers/myrouter/entryPoints/0", "web"),
            ("traefik/http/routers/myrouter/entryPoints/1", "websecure"),
            ("traefik/http/routers/myrouter/middlewares/0", "auth"),
            ("traefik/http/routers/myrouter/middlewares/1", "prefix"),
            ("traefik/http/routers/myrouter/service", "myservice"),
            ("traefik/http/routers/myrouter/priority", "42"),
            (
                "traefik/http/services/myservice/loadBalancer/servers/0/url",
                "http://10.0.0.1:80",
            ),
            (
                "traefik/http/services/myservice/loadBalancer/servers/1/url",
                "http://10.0.0.2:80",
            ),
            (
                "traefik/http/services/myservice/loadBalancer/servers/1/weight",
                "3",
            ),
            (
                "traefik/http/services/myservice/loadBalancer/passHostHeader",
                "false",
            ),
            (
                "traefik/http/services/myservice/loadBalancer/healthCheck/path",
                "/health",
            ),
            (
                "traefik/http/services/myservice/loadBalancer/healthCheck/interval",
                "10s",
            ),
            (
                "traefik/http/middlewares/prefix/stripPrefix/prefixes/0",
                "/api",
            ),
            (
                "traefik/http/middlewares/prefix/stripPrefix/prefixes/1",
                "/v1",
            ),
            (
                "traefik/http/middlewares/auth/headers/customRequestHeaders/X-Script-Name",
                "test",
            ),
            (
                "traefik/http/middlewares/auth/headers/customResponseHeaders/X-Gone",
                "",
            ),
            ("traefik/http/middlewares/both/chain/middlewares/0", "auth"),
            (
                "traefik/http/middlewares/both/chain/middlewares/1",
                "prefix",
            ),
            (
                "traefik/http/serversTransports/t/forwardingTimeouts/dialTimeout",
                "5s",
            ),
            // Keys of another root or another section are not ours.
            ("other/http/routers/x/rule", "Path(`/x`)"),
        ]);
        let r = parse("etcd", "traefik", &kv).unwrap();
        let router = &r.http.routers["myrouter"];
        assert_eq!(router.rule, "Host(`example.com`)");
        assert_eq!(router.entry_points, ["web", "websecure"]);
        assert_eq!(router.middlewares, ["auth", "prefix"]);
        assert_eq!(router.service, "myservice");
        assert_eq!(router.priority, Some(42));
        let lb = &r.http.services["myservice"].load_balancer;
        assert_eq!(lb.servers[0].url, "http://10.0.0.1:80");
        assert_eq!(lb.servers[1].url, "http://10.0.0.2:80");
        assert_eq!(lb.servers[1].weight, Some(3));
        assert!(!lb.pass_host_header);
        let hc = lb.health_check.as_ref().unwrap();
        assert_eq!(hc.interval, Some(std::time::Duration::from_secs(10)));
        match r.http.middlewares["prefix"].kind() {
            Ok(MiddlewareKind::StripPrefix(s)) => assert_eq!(s.prefixes, ["/api", "/v1"]),
            other => panic!("{other:?}"),
        }
        match r.http.middlewares["auth"].kind() {
            Ok(MiddlewareKind::Headers(h)) => {
                assert_eq!(h.custom_request_headers["X-Script-Name"], "test");
                assert_eq!(h.custom_response_headers["X-Gone"], "");
            }
            other => panic!("{other:?}"),
        }
        match r.http.middlewares["both"].kind() {
            Ok(MiddlewareKind::Chain(c)) => assert_eq!(c.middlewares, ["auth", "prefix"]),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            r.http.servers_transports["t"]
                .forwarding_timeouts
                .dial_timeout,
            Some(std::time::Duration::from_secs(5))
        );
        assert!(!r.http.routers.contains_key("x"));
        // The tree is the same configuration in JSON, lists as arrays.
        assert_eq!(r.tree["routers"]["myrouter"]["entryPoints"][1], "websecure");
        // ... and goes back to the same keys.
        let back = tree_to_pairs("traefik", &r.tree);
        let mut expected: Vec<_> = kv
            .iter()
            .filter(|(k, _)| k.starts_with("traefik/"))
            .cloned()
            .collect();
        expected.sort();
        let mut back = back;
        back.sort();
        assert_eq!(back, expected);
    }

    #[test]
    fn lists_follow_index_order_not_key_order() {
        let kv = pairs(&[
            ("traefik/http/routers/r/rule", "Path(`/`)"),
            ("traefik/http/routers/r/service", "s"),
            ("traefik/http/routers/r/middlewares/10", "c"),
            ("traefik/http/routers/r/middlewares/2", "b"),
            ("traefik/http/routers/r/middlewares/0", "a"),
            // A router named like an index is still a router (by name, not a list).
            ("traefik/http/routers/0/rule", "Path(`/0`)"),
            ("traefik/http/routers/0/service", "s"),
            // Traefik's other spelling of a list: one comma-separated value.
            ("traefik/http/routers/0/entryPoints", "web, other"),
        ]);
        let r = parse("etcd", "traefik", &kv).unwrap();
        assert_eq!(r.http.routers["r"].middlewares, ["a", "b", "c"]);
        assert_eq!(r.http.routers["0"].rule, "Path(`/0`)");
        assert_eq!(r.http.routers["0"].entry_points, ["web", "other"]);
    }

    #[test]
    fn a_plugin_subtree_is_the_plugins_config_with_string_values() {
        let kv = pairs(&[
            (
                "traefik/http/middlewares/demo/plugin/example/headers/Foo",
                "Bar",
            ),
            (
                "traefik/http/middlewares/demo/plugin/example/headers/X-N",
                "42",
            ),
            ("traefik/http/middlewares/demo/plugin/example/paths/0", "/a"),
            ("traefik/http/middlewares/demo/plugin/example/paths/1", "/b"),
            (
                "traefik/http/middlewares/demo/plugin/example/enabled",
                "true",
            ),
            ("traefik/http/middlewares/demo/failurePolicy", "open"),
            ("traefik/http/middlewares/bare/plugin/example", ""),
        ]);
        let r = parse("etcd", "traefik", &kv).unwrap();
        match r.http.middlewares["demo"].kind() {
            Ok(MiddlewareKind::Plugin(p)) => assert_eq!(
                p["example"],
                serde_json::json!({
                    "headers": {"Foo": "Bar", "X-N": "42"},
                    "paths": ["/a", "/b"],
                    "enabled": "true",
                })
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            r.http.middlewares["demo"].failure_policy,
            Some(crate::config::FailurePolicyChoice::Open)
        );
        match r.http.middlewares["bare"].kind() {
            Ok(MiddlewareKind::Plugin(p)) => assert_eq!(p["example"], serde_json::json!({})),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        let base = [
            ("traefik/http/routers/r/rule", "Path(`/`)"),
            ("traefik/http/routers/r/service", "s"),
        ];
        let with = |extra: &[(&str, &str)]| {
            let mut all = base.to_vec();
            all.extend_from_slice(extra);
            parse("etcd", "traefik", &pairs(&all)).unwrap_err().0
        };
        let e = with(&[("traefik/http/routers/r/priority", "high")]);
        assert_eq!(e.len(), 1);
        assert_eq!(
            e[0].file.to_str(),
            Some("etcd:traefik/http/routers/r/priority")
        );
        assert!(e[0].message.contains("\"high\""), "{}", e[0].message);
        assert!(
            e[0].to_string()
                .starts_with("etcd:traefik/http/routers/r/priority: invalid value"),
            "{}",
            e[0]
        );
        let e = with(&[(
            "traefik/http/services/s/loadBalancer/servers/0/weight",
            "-1",
        )]);
        assert_eq!(
            e[0].file.to_str(),
            Some("etcd:traefik/http/services/s/loadBalancer/servers/0/weight")
        );
        let e = with(&[("traefik/http/routers/r/rulez", "x")]);
        assert_eq!(
            e[0].file.to_str(),
            Some("etcd:traefik/http/routers/r/rulez")
        );
        assert!(e[0].message.contains("unknown field `rulez`"), "{}", e[0]);
        let e = with(&[("traefik/http/routers/q/rule", "Path(`/q`)")]);
        assert_eq!(e[0].file.to_str(), Some("etcd:traefik/http/routers/q"));
        assert!(e[0].message.contains("missing field `service`"), "{}", e[0]);
        let free_form = pairs(&[("traefik/http/middlewares/m/plugin/p/anything", "1")]);
        assert!(
            parse("etcd", "traefik", &free_form).is_ok(),
            "a plugin config is free-form"
        );
        let e = with(&[
            ("traefik/http/routers/r/rule/x", "y"),
            ("traefik/http/routers/bad//rule", "y"),
        ]);
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(
            e[0].file.to_str(),
            Some("etcd:traefik/http/routers/r/rule/x")
        );
        assert!(e[0].message.contains("has a value"), "{}", e[0]);
        assert_eq!(
            e[1].file.to_str(),
            Some("etcd:traefik/http/routers/bad//rule")
        );
        let e = with(&[(
            "traefik/http/middlewares/m/headers/customRequestHeaders",
            "x",
        )]);
        assert_eq!(
            e[0].file.to_str(),
            Some("etcd:traefik/http/middlewares/m/headers/customRequestHeaders")
        );
    }

    #[test]
    fn config_paths_back_to_keys() {
        assert_eq!(
            path_to_key("traefik", "http.routers.r.rule"),
            "traefik/http/routers/r/rule"
        );
        assert_eq!(
            path_to_key("traefik", "http.services.s.loadBalancer.servers[1].url"),
            "traefik/http/services/s/loadBalancer/servers/1/url"
        );
        assert_eq!(path_to_key("t", ""), "t");
    }

    #[test]
    fn numbers_booleans_and_lists_from_strings() {
        #[derive(Deserialize, Debug)]
        struct S {
            n: u16,
            b: bool,
            l: Vec<u8>,
            o: Option<i64>,
        }
        let s: S = from_pairs(&[("n", "8080"), ("b", "TRUE"), ("l/0", "1"), ("l/1", "2")]).unwrap();
        assert_eq!((s.n, s.b, s.l, s.o), (8080, true, vec![1, 2], None));
        let e = from_pairs::<S>(&[("n", "x"), ("b", "true"), ("l/0", "1")]).unwrap_err();
        assert!(e.starts_with("n: invalid value"), "{e}");
        let e = from_pairs::<S>(&[("n", "1"), ("b", "yes"), ("l/0", "1")]).unwrap_err();
        assert!(e.starts_with("b: invalid value"), "{e}");
        let e = from_pairs::<S>(&[("n", "1"), ("b", "true"), ("l/a", "1")]).unwrap_err();
        assert!(e.starts_with("l: expected a list"), "{e}");
    }
}
