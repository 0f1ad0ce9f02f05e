//! Answers requests itself: a configured status (default 403) for configured path prefixes.
//!
//! Config: `{"paths": ["/admin"], "status": 403, "body": "forbidden\n"}`.

use http_wasm_guest::host::{admin, Request, Response};
use http_wasm_guest::{register, Guest};

#[derive(serde::Deserialize)]
struct Config {
    paths: Vec<String>,
    #[serde(default = "default_status")]
    status: i32,
    #[serde(default)]
    body: String,
}

fn default_status() -> i32 {
    403
}

impl Guest for Config {
    fn handle_request(&self, request: &Request, response: &Response) -> (bool, i32) {
        let uri = request.uri();
        let path = uri.split(|b| *b == b'?').next().unwrap_or(&[]);
        if self.paths.iter().any(|p| path.starts_with(p.as_bytes())) {
            response.set_status(self.status);
            response.header.set(b"content-type", b"text/plain");
            response.body.write(self.body.as_bytes());
            return (false, 0);
        }
        (true, 0)
    }
}

fn main() {
    let config: Config =
        serde_json::from_slice(&admin::config()).expect("config must be JSON: {\"paths\": [...]}");
    register(config);
}
