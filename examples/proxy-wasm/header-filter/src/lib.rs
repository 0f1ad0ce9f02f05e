//! A proxy-wasm filter built with the Rust SDK.
//!
//! Plugin configuration: `key=value` lines.
//! * `header=<name>` / `value=<v>`: request header to set (default `x-proxy-wasm: rust-sdk`).
//! * `deny=<prefix>`: requests whose path starts with it get a local 403.
//! * `auth_service=<name>`: requests under `/auth` first call `GET /check` on that service;
//!   200 lets them through with `x-auth: ok`, anything else is a local 401.
//! * `rewrite_from=<a>` / `rewrite_to=<b>`: response bodies are buffered (Pause) and `a` replaced by `b`.
//! * `tick_ms=<n>`: the root context ticks every n ms; each tick increments the counter
//!   `sdk_ticks` and, with a CAS loop, the shared-data counter `sdk_tick_count`, which requests
//!   then carry as `x-sdk-ticks`.
//!   Any other key (or a bad number) rejects the configuration (`on_configure` returns false).
//!
//! Every request increments the counter `sdk_requests`.

use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::*;
use proxy_wasm::types::*;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

#[derive(Clone, Default)]
struct Config {
    header: String,
    value: String,
    deny: Option<String>,
    auth_service: Option<String>,
    rewrite: Option<(String, String)>,
    tick_ms: u64,
    counter: u32,
    ticks: u32,
}

const TICK_COUNT: &str = "sdk_tick_count";

fn tick_count(data: Option<Vec<u8>>) -> u64 {
    data.and_then(|d| d.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

#[derive(Default)]
struct Root {
    config: Config,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let text = self
            .get_plugin_configuration()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let mut c = Config {
            header: "x-proxy-wasm".into(),
            value: "rust-sdk".into(),
            ..Config::default()
        };
        let mut from = None;
        let mut to = None;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let Some((k, v)) = line.split_once('=') else {
                return false;
            };
            match k.trim() {
                "header" => c.header = v.trim().to_string(),
                "value" => c.value = v.trim().to_string(),
                "deny" => c.deny = Some(v.trim().to_string()),
                "auth_service" => c.auth_service = Some(v.trim().to_string()),
                "rewrite_from" => from = Some(v.to_string()),
                "rewrite_to" => to = Some(v.to_string()),
                "tick_ms" => match v.trim().parse() {
                    Ok(n) => c.tick_ms = n,
                    Err(_) => return false,
                },
                _ => return false,
            }
        }
        if let (Some(f), Some(t)) = (from, to) {
            c.rewrite = Some((f, t));
        }
        c.counter = match hostcalls::define_metric(MetricType::Counter, "sdk_requests") {
            Ok(id) => id,
            Err(_) => return false,
        };
        c.ticks = match hostcalls::define_metric(MetricType::Counter, "sdk_ticks") {
            Ok(id) => id,
            Err(_) => return false,
        };
        if c.tick_ms > 0 {
            self.set_tick_period(Duration::from_millis(c.tick_ms));
        }
        self.config = c;
        true
    }

    fn on_tick(&mut self) {
        let _ = hostcalls::increment_metric(self.config.ticks, 1);
        // Other instances of the VM may tick at the same time: compare and swap.
        loop {
            let (data, cas) = self.get_shared_data(TICK_COUNT);
            let next = tick_count(data) + 1;
            match self.set_shared_data(TICK_COUNT, Some(&next.to_le_bytes()), cas) {
                Err(Status::CasMismatch) => continue,
                _ => break,
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Filter {
            config: self.config.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Filter {
    config: Config,
}

impl Context for Filter {
    fn on_http_call_response(
        &mut self,
        _token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let status = self.get_http_call_response_header(":status");
        let body = self
            .get_http_call_response_body(0, body_size)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        if status.as_deref() == Some("200") {
            self.set_http_request_header("x-auth", Some("ok"));
            self.set_http_request_header("x-auth-body-len", Some(&body.len().to_string()));
            self.resume_http_request();
        } else {
            self.send_http_response(
                401,
                vec![("x-auth-status", status.as_deref().unwrap_or("none"))],
                Some(b"unauthorized\n"),
            );
        }
    }
}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let _ = hostcalls::increment_metric(self.config.counter, 1);
        let path = self.get_http_request_header(":path").unwrap_or_default();
        if let Some(deny) = &self.config.deny {
            if path.starts_with(deny.as_str()) {
                self.send_http_response(
                    403,
                    vec![("x-denied-by", "header-filter")],
                    Some(b"denied by proxy-wasm\n"),
                );
                return Action::Pause;
            }
        }
        self.set_http_request_header(&self.config.header, Some(&self.config.value));
        if self.config.tick_ms > 0 {
            let n = tick_count(self.get_shared_data(TICK_COUNT).0);
            self.set_http_request_header("x-sdk-ticks", Some(&n.to_string()));
        }
        if let (Some(svc), true) = (&self.config.auth_service, path.starts_with("/auth")) {
            let r = self.dispatch_http_call(
                svc,
                vec![
                    (":method", "GET"),
                    (":path", "/check"),
                    (":authority", "auth"),
                ],
                None,
                vec![],
                Duration::from_secs(2),
            );
            return match r {
                Ok(_) => Action::Pause,
                Err(_) => {
                    self.send_http_response(500, vec![], Some(b"dispatch failed\n"));
                    Action::Pause
                }
            };
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.set_http_response_header("x-proxy-wasm-response", Some("rust-sdk"));
        if self.config.rewrite.is_some() {
            self.set_http_response_header("content-length", None);
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some((from, to)) = &self.config.rewrite else {
            return Action::Continue;
        };
        if !end_of_stream {
            return Action::Pause;
        }
        if let Some(body) = self.get_http_response_body(0, body_size) {
            let text = String::from_utf8_lossy(&body).replace(from.as_str(), to);
            self.set_http_response_body(0, body_size, text.as_bytes());
        }
        Action::Continue
    }
}
