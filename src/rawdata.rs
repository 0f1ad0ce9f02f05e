//! `/api/rawdata` (Traefik's `api`): the routing configuration being served, as JSON, in
//! Traefik's layout (`routers`, `middlewares`, `services`, names with their provider `@file`),
//! with every plugin's configuration and every private key (`serversTransports`'
//! `certificates[].keyFile`, which may be the PEM text itself) redacted: they may hold secrets,
//! and the API is read by whoever reaches the internal entry point.

use serde_json::{json, Map, Value};

/// What replaces a plugin's configuration.
pub const REDACTED: &str = "<redacted>";

/// The rawdata of the routing file `text` (or the install file holding the routing), which the
/// snapshot of `generation` was built from. Built when asked for: it re-reads the text.
pub fn build(text: &str, generation: u64) -> Value {
    let http = serde_yaml::from_str::<serde_yaml::Value>(text)
        .ok()
        .and_then(|doc| serde_json::to_value(doc).ok())
        .and_then(|doc| doc.get("http").cloned())
        .unwrap_or(Value::Null);
    let section = |name: &str, status: bool, redact: fn(&mut Value)| -> Value {
        let mut out = Map::new();
        if let Some(Value::Object(items)) = http.get(name) {
            for (key, item) in items {
                let mut item = item.clone();
                redact(&mut item);
                if status {
                    if let Value::Object(o) = &mut item {
                        o.insert("status".into(), json!("enabled"));
                    }
                }
                // Names from KV providers carry theirs already (`r@etcd`).
                let name = if key.contains('@') {
                    key.clone()
                } else {
                    format!("{key}@file")
                };
                out.insert(name, item);
            }
        }
        Value::Object(out)
    };
    json!({
        "routers": section("routers", true, |_| {}),
        "middlewares": section("middlewares", true, redact_plugin),
        "services": section("services", true, |_| {}),
        "serversTransports": section("serversTransports", false, redact_keys),
        "generation": generation,
    })
}

/// Replaces the client keys of a servers transport (`certificates: [{certFile, keyFile}]`).
fn redact_keys(transport: &mut Value) {
    if let Some(Value::Array(certs)) = transport.get_mut("certificates") {
        for c in certs {
            if let Some(key) = c.get_mut("keyFile") {
                *key = json!(REDACTED);
            }
        }
    }
}

/// Replaces the configuration of a plugin middleware (`plugin: { name: config }`).
fn redact_plugin(middleware: &mut Value) {
    if let Some(Value::Object(plugins)) = middleware.get_mut("plugin") {
        for config in plugins.values_mut() {
            *config = json!(REDACTED);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traefiks_layout_with_plugin_configs_redacted() {
        let text = r#"http:
  routers:
    r: { rule: "PathPrefix(`/`)", service: s, middlewares: [waf] }
  middlewares:
    waf: { plugin: { coraza: { secret: hunter2 } } }
    h: { headers: { customRequestHeaders: { X-A: "1" } } }
  services:
    s: { loadBalancer: { servers: [{ url: "http://127.0.0.1:1" }] } }
  serversTransports:
    t:
      serverName: up.test
      certificates:
        - certFile: client.crt
          keyFile: "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n"
"#;
        let raw = build(text, 3);
        let t = &raw["serversTransports"]["t@file"];
        assert_eq!(t["certificates"][0]["keyFile"], REDACTED);
        assert_eq!(t["certificates"][0]["certFile"], "client.crt");
        assert_eq!(t["serverName"], "up.test");
        assert!(!raw.to_string().contains("c2VjcmV0"));
        assert_eq!(raw["routers"]["r@file"]["service"], "s");
        assert_eq!(raw["routers"]["r@file"]["status"], "enabled");
        assert_eq!(raw["middlewares"]["waf@file"]["plugin"]["coraza"], REDACTED);
        assert!(!raw.to_string().contains("hunter2"));
        assert_eq!(
            raw["middlewares"]["h@file"]["headers"]["customRequestHeaders"]["X-A"],
            "1"
        );
        assert_eq!(
            raw["services"]["s@file"]["loadBalancer"]["servers"][0]["url"],
            "http://127.0.0.1:1"
        );
        assert_eq!(raw["generation"], 3);
    }
}
