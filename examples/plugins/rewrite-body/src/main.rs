//! Rewrites response bodies: replaces every `from` with `to`, using `buffer_response`.
//!
//! Config: `{"from": "hello", "to": "goodbye"}`.

use http_wasm_guest::host::{admin, feature, Request, Response};
use http_wasm_guest::{register, Guest};

#[derive(serde::Deserialize)]
struct Config {
    from: String,
    to: String,
}

impl Guest for Config {
    fn handle_response(&self, _ctx: i32, _request: &Request, response: &Response, is_error: bool) {
        if is_error {
            return;
        }
        let body = response.body.read();
        let text = String::from_utf8_lossy(&body);
        if text.contains(&self.from) {
            let new = text.replace(&self.from, &self.to);
            // The length changed; the host recomputes framing.
            response.header.remove(b"content-length");
            response.body.write(new.as_bytes());
        }
        response.header.set(b"x-rewritten", b"1");
    }
}

fn main() {
    let config: Config =
        serde_json::from_slice(&admin::config()).expect("config must be JSON: {\"from\": .., \"to\": ..}");
    // Whole-plugin: every response is buffered so handle_response can read and rewrite it.
    admin::enable(feature::BufferResponse);
    register(config);
}
