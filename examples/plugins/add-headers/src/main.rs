//! The demo plugin: adds the request headers its configuration names.
//!
//! Config (JSON, from the middleware's YAML): `{"headers": {"Foo": "Bar"}}`.

use std::collections::BTreeMap;

use http_wasm_guest::host::{admin, Request, Response};
use http_wasm_guest::{register, Guest};

#[derive(serde::Deserialize, Default)]
struct Config {
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

struct AddHeaders {
    headers: Vec<(String, String)>,
}

impl Guest for AddHeaders {
    fn handle_request(&self, request: &Request, _response: &Response) -> (bool, i32) {
        for (name, value) in &self.headers {
            request.header.set(name.as_bytes(), value.as_bytes());
        }
        (true, 0)
    }
}

fn main() {
    let raw = admin::config();
    let config: Config = if raw.is_empty() {
        Config::default()
    } else {
        serde_json::from_slice(&raw).expect("config must be JSON: {\"headers\": {...}}")
    };
    register(AddHeaders {
        headers: config.headers.into_iter().collect(),
    });
}
