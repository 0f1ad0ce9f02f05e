//! `/api/rawdata` (Traefik's `api`): the routing configuration being served, as JSON, in
//! Traefik's layout (`routers`, `middlewares`, `services`, names with their provider `@file`),
//! with every plugin's configuration redacted: it may hold secrets, and the API is read by
//! whoever reaches the internal entry point.

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
    let section = |name: &str, status: bool, redact: bool| -> Value {
        let mut out = Map::new();
        if let Some(Value::Object(items)) = http.get(name) {
            for (key, item) in items {
                let mut item = item.clone();
                if redact {
                    redact_plugin(&mut item);
                }
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
        "routers": section("routers", true, false),
        "middlewares": section("middlewares", true, true),
        "services": section("services", true, false),
        "serversTransports": section("serversTransports", false, false),
        "generation": generation,
    })
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
"#;
        let raw = build(text, 3);
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
