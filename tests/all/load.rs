//! The bounded load test (issue 13): traffic through chains of plugins that trap at random,
//! while the routing file is rewritten every second, and every request accounted for.
//!
//! Three routes, one per failure policy, each a chain of a `headers` middleware (the routing
//! generation, as a response header), an http-wasm plugin and a proxy-wasm filter, one on
//! wasmtime and the other on wasmer. Both guests trap when the request names them in an
//! `x-trap-*` header, in the request or the response phase; the clients choose the traps with
//! a seeded generator and remember them, so each request's answer is known in advance:
//! `closed` and `reload` answer 503 naming the middleware, `open` skips it (200, without the
//! header the skipped guest adds). Every reload swaps the two plugins' order and changes the
//! generation, so each one builds new middlewares.
//!
//! One answer other than its own is allowed, and counted apart: a proxy-wasm VM carries many
//! streams, so a trap fails the other streams on its VM too (each under its policy), at most
//! one per other client for each trap; and a `reload` middleware in backoff refuses requests.
//! Anything else (another status, a 200 that is not the upstream's echo of the request, a
//! request without an answer within 10 s, a connection error) fails the test.
//!
//! The test runs in a process of its own (this binary, re-run on the one ignored test
//! [`in_own_process`]): the RSS it compares is the whole process's, which other tests of the
//! binary, running at the same time, would blur. `WASMGATE_LOAD_SECONDS` sets the traffic
//! time (default 3 s, the CI form; the README's figures are from 60 s).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::common::*;

/// The http-wasm plugin: adds `x-seen-hw: 1` to the request, and traps in `handle_request`
/// when the request has `x-trap-hw-req`, in `handle_response` when it has `x-trap-hw-resp`.
const HTTP_WASM_GUEST: &str = r#"(module
  (import "http_handler" "get_header_values"
    (func $values (param i32 i32 i32 i32 i32) (result i64)))
  (import "http_handler" "add_header_value" (func $add (param i32 i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "x-trap-hw-req")   ;; 13
  (data (i32.const 32) "x-trap-hw-resp")  ;; 14
  (data (i32.const 48) "x-seen-hw")       ;; 9
  (data (i32.const 64) "1")
  ;; A request header is present: its values, probed with a zero-length buffer, are not none.
  (func $has (param $name i32) (param $len i32) (result i32)
    (i64.ne (call $values (i32.const 0) (local.get $name) (local.get $len) (i32.const 1024) (i32.const 0))
      (i64.const 0)))
  (func (export "handle_request") (result i64)
    (if (call $has (i32.const 16) (i32.const 13)) (then unreachable))
    (call $add (i32.const 0) (i32.const 48) (i32.const 9) (i32.const 64) (i32.const 1))
    (i64.const 1))
  (func (export "handle_response") (param i32 i32)
    (if (call $has (i32.const 32) (i32.const 14)) (then unreachable))))"#;

/// The proxy-wasm filter (ABI 0.2.1): the same, with `x-seen-pw` and `x-trap-pw-*`. The host
/// allocates header values in its memory: the bump allocator starts over with every callback,
/// since no value outlives the callback that asked for it.
const PROXY_WASM_GUEST: &str = r#"(module
  (import "env" "proxy_get_header_map_value"
    (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value"
    (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 16) "x-trap-pw-req")   ;; 13
  (data (i32.const 32) "x-trap-pw-resp")  ;; 14
  (data (i32.const 48) "x-seen-pw")       ;; 9
  (data (i32.const 64) "1")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32) (local $p i32)
    (local.set $p (global.get $heap))
    (if (i32.gt_u (i32.add (local.get $p) (local.get $size)) (i32.const 65536))
      (then (return (i32.const 0))))
    (global.set $heap (i32.add (local.get $p) (local.get $size)))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  ;; A request header is present (status OK, not NOT_FOUND).
  (func $has (param $name i32) (param $len i32) (result i32)
    (global.set $heap (i32.const 4096))
    (i32.eqz (call $get (i32.const 0) (local.get $name) (local.get $len) (i32.const 512) (i32.const 516))))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (if (call $has (i32.const 16) (i32.const 13)) (then unreachable))
    (drop (call $add (i32.const 0) (i32.const 48) (i32.const 9) (i32.const 64) (i32.const 1)))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (if (call $has (i32.const 32) (i32.const 14)) (then unreachable))
    (i32.const 0)))"#;

/// The install file: the four plugin declarations (each guest on each engine), the routing in
/// the watched file provider's `dynamic.yaml`.
const INSTALL: &str = r#"entryPoints:
  web:
    address: "127.0.0.1:0"
cache:
  enabled: false
providers:
  file:
    filename: dynamic.yaml
    watch: true
plugins:
  hw-wasmtime: { path: hw.wasm, engine: wasmtime }
  hw-wasmer: { path: hw.wasm, engine: wasmer }
  pw-wasmtime: { path: pw.wasm, engine: wasmtime }
  pw-wasmer: { path: pw.wasm, engine: wasmer }
"#;

/// A route: its path and failure policy, and its two plugin middlewares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Route {
    /// No `failurePolicy`: the default, closed. http-wasm on wasmtime, proxy-wasm on wasmer.
    Closed,
    /// `failurePolicy: open`. http-wasm on wasmer, proxy-wasm on wasmtime.
    Open,
    /// `failurePolicy: reload`. http-wasm on wasmtime, proxy-wasm on wasmer.
    Reload,
}

impl Route {
    const ALL: [Route; 3] = [Route::Closed, Route::Open, Route::Reload];

    fn name(self) -> &'static str {
        match self {
            Route::Closed => "closed",
            Route::Open => "open",
            Route::Reload => "reload",
        }
    }

    /// The http-wasm middleware's name (what a 503 names).
    fn hw(self) -> &'static str {
        match self {
            Route::Closed => "hw-closed",
            Route::Open => "hw-open",
            Route::Reload => "hw-reload",
        }
    }

    /// The proxy-wasm middleware's name.
    fn pw(self) -> &'static str {
        match self {
            Route::Closed => "pw-closed",
            Route::Open => "pw-open",
            Route::Reload => "pw-reload",
        }
    }
}

/// The routing file of `generation`: odd generations run the proxy-wasm filter first.
fn routing(generation: u64) -> String {
    let mut s = String::from("http:\n  routers:\n");
    for r in Route::ALL {
        let (first, second) = if generation % 2 == 0 {
            (r.hw(), r.pw())
        } else {
            (r.pw(), r.hw())
        };
        let name = r.name();
        writeln!(
            s,
            "    {name}: {{ rule: \"PathPrefix(`/{name}`)\", middlewares: [tag, {first}, {second}], service: echo@internal }}"
        )
        .unwrap();
    }
    writeln!(
        s,
        "  middlewares:\n    tag: {{ headers: {{ customResponseHeaders: {{ X-Generation: \"{generation}\" }} }} }}"
    )
    .unwrap();
    for (r, hw, pw, policy) in [
        (Route::Closed, "hw-wasmtime", "pw-wasmer", ""),
        (
            Route::Open,
            "hw-wasmer",
            "pw-wasmtime",
            ", failurePolicy: open",
        ),
        (
            Route::Reload,
            "hw-wasmtime",
            "pw-wasmer",
            ", failurePolicy: reload",
        ),
    ] {
        writeln!(s, "    {}: {{ plugin: {{ {hw}: {{}} }}{policy} }}", r.hw()).unwrap();
        writeln!(s, "    {}: {{ plugin: {{ {pw}: {{}} }}{policy} }}", r.pw()).unwrap();
    }
    s
}

/// Which guest a request makes trap, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Trap {
    None,
    HwRequest,
    HwResponse,
    PwRequest,
    PwResponse,
}

impl Trap {
    const ALL: [Trap; 5] = [
        Trap::None,
        Trap::HwRequest,
        Trap::HwResponse,
        Trap::PwRequest,
        Trap::PwResponse,
    ];

    fn header(self) -> Option<&'static str> {
        match self {
            Trap::None => None,
            Trap::HwRequest => Some("x-trap-hw-req"),
            Trap::HwResponse => Some("x-trap-hw-resp"),
            Trap::PwRequest => Some("x-trap-pw-req"),
            Trap::PwResponse => Some("x-trap-pw-resp"),
        }
    }

    fn is_pw(self) -> bool {
        matches!(self, Trap::PwRequest | Trap::PwResponse)
    }

    fn label(self) -> &'static str {
        match self {
            Trap::None => "none",
            Trap::HwRequest => "hw request",
            Trap::HwResponse => "hw response",
            Trap::PwRequest => "pw request",
            Trap::PwResponse => "pw response",
        }
    }
}

/// What a client saw, reduced to what the policies decide.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// 200 from the echo service, with the body sent coming back whole; which guests' request
    /// headers reached it.
    Ok { hw: bool, pw: bool },
    /// The fail-closed answer: 503 naming this middleware, empty.
    Failed(String),
    /// Anything else: the status and what was odd about it.
    Other(String),
}

impl Outcome {
    fn label(&self) -> String {
        match self {
            Outcome::Ok { hw, pw } => {
                let seen: Vec<&str> = [(*hw, "hw"), (*pw, "pw")]
                    .into_iter()
                    .filter_map(|(s, n)| s.then_some(n))
                    .collect();
                format!("200 seen by [{}]", seen.join(","))
            }
            Outcome::Failed(mw) => format!("503 {mw}"),
            Outcome::Other(what) => what.clone(),
        }
    }
}

/// The answer the route's policy gives a request that makes `trap` trap, on its own.
fn expected(route: Route, trap: Trap) -> Outcome {
    let both = Outcome::Ok { hw: true, pw: true };
    match (route, trap) {
        (_, Trap::None) => both,
        (Route::Open, Trap::HwRequest) => Outcome::Ok {
            hw: false,
            pw: true,
        },
        (Route::Open, Trap::PwRequest) => Outcome::Ok {
            hw: true,
            pw: false,
        },
        // A response phase skipped gives the response as it was: the request had both.
        (Route::Open, Trap::HwResponse | Trap::PwResponse) => both,
        (r, t) if t.is_pw() => Outcome::Failed(r.pw().into()),
        (r, _) => Outcome::Failed(r.hw().into()),
    }
}

/// The other answers a policy allows, caused by other requests' failures, not this one's: a
/// proxy-wasm VM carries many streams and a trap fails all of them (Envoy's model: the
/// filter's failure, under its policy, for each); a `reload` middleware in backoff refuses
/// requests without entering its guest.
fn allowed_otherwise(route: Route, trap: Trap, outcome: &Outcome) -> bool {
    match (route, outcome) {
        (Route::Reload, Outcome::Failed(mw)) => mw == route.hw() || mw == route.pw(),
        (_, Outcome::Failed(mw)) => !trap.is_pw() && mw == route.pw(),
        // Open: the filter skipped in the request phase (no x-seen-pw), even for a request
        // that would have made it trap later, in the response phase; skipped in the response
        // phase, the answer is the expected one.
        (Route::Open, Outcome::Ok { hw, pw: false }) => {
            trap != Trap::PwRequest && *hw == (trap != Trap::HwRequest)
        }
        _ => false,
    }
}

/// How a request reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Conn {
    /// HTTP/1.1 on the client's keep-alive pool. A request whose body the server leaves
    /// unread (a guest failed before the body was read) gets `Connection: close`, so the
    /// client does not send its next request into a connection about to close.
    KeepAlive,
    /// HTTP/1.1 on a connection of its own.
    Fresh,
    /// h2c (prior knowledge), multiplexed on the client's connection.
    H2,
}

/// A small seeded generator (splitmix64): the same seed gives the same traffic choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Per-request limit: an answer later than this is a hang, and fails the test.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Concurrent clients.
const CLIENTS: usize = 8;

/// What one traffic round saw.
#[derive(Default)]
struct Tally {
    sent: u64,
    /// Answers by route, trap and outcome: counted as they come, not kept one by one, so
    /// that the test's own records do not grow the RSS it measures.
    answers: BTreeMap<(Route, Trap, Outcome), u64>,
    /// Requests with no answer within [`REQUEST_TIMEOUT`].
    hangs: Vec<String>,
    /// Requests that failed at the transport (no HTTP answer at all).
    errors: Vec<String>,
    /// Generations seen in `x-generation`.
    generations: BTreeSet<u64>,
    /// Routing file rewrites, each waited for until served.
    reloads: u64,
    /// Snapshots the gateway built meanwhile (its generation's growth).
    generations_built: u64,
    /// From the first request to the last answer.
    elapsed: Duration,
    /// RSS in KiB, once a second during the round.
    rss: Vec<u64>,
}

/// The HTTP clients of one round, shared by its client tasks.
struct Clients {
    base: String,
    keep_alive: Client<HttpConnector, Full<Bytes>>,
    h2: Client<HttpConnector, Full<Bytes>>,
}

impl Clients {
    fn new(base: String) -> Self {
        Clients {
            base,
            keep_alive: Client::builder(TokioExecutor::new()).build_http(),
            h2: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
        }
    }

    /// Sends one request; `Err` is a hang or a transport error, described.
    async fn send(
        &self,
        conn: Conn,
        route: Route,
        trap: Trap,
        body: &[u8],
    ) -> Result<(Outcome, Option<u64>), (bool, String)> {
        let fresh;
        let client = match conn {
            Conn::KeepAlive => &self.keep_alive,
            Conn::H2 => &self.h2,
            Conn::Fresh => {
                fresh = Client::builder(TokioExecutor::new())
                    .pool_max_idle_per_host(0)
                    .build_http();
                &fresh
            }
        };
        let mut b = hyper::Request::builder()
            .method(if body.is_empty() { "GET" } else { "POST" })
            .uri(format!("{}/{}/x", self.base, route.name()));
        if let Some(h) = trap.header() {
            b = b.header(h, "1");
        }
        let req = b.body(Full::new(Bytes::copy_from_slice(body))).unwrap();
        let what = || format!("{conn:?} {} trap {}", route.name(), trap.label());
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, async {
            let resp = client.request(req).await.map_err(|e| error_chain(&e))?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok::<_, String>((parts, body))
        })
        .await;
        let (parts, got) = match answer {
            Err(_) => return Err((true, what())),
            Ok(Err(e)) => return Err((false, format!("{}: {e}", what()))),
            Ok(Ok(a)) => a,
        };
        let generation = parts
            .headers
            .get("x-generation")
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let failed = parts
            .headers
            .get("x-wasmgate-failed-middleware")
            .and_then(|v| v.to_str().ok());
        let outcome = match (parts.status.as_u16(), failed) {
            (503, Some(mw)) if got.is_empty() => Outcome::Failed(mw.to_string()),
            (200, None) => {
                // The echo: its header lines, an empty line, then the body it received.
                let text = String::from_utf8_lossy(&got);
                let head = text.split("\n\n").next().unwrap_or("");
                let seen = |h: &str| head.lines().any(|l| l == format!("{h}: 1"));
                if got.ends_with(body) && text.starts_with("Name: echo@internal\n") {
                    Outcome::Ok {
                        hw: seen("x-seen-hw"),
                        pw: seen("x-seen-pw"),
                    }
                } else {
                    Outcome::Other(format!(
                        "200 that is not the echo of the request: {} bytes back for {} sent, \
                         {conn:?}, {:?}, headers {:?}, starting {:?}",
                        got.len(),
                        body.len(),
                        parts.version,
                        parts.headers,
                        String::from_utf8_lossy(&got[..got.len().min(400)]),
                    ))
                }
            }
            (status, failed) => Outcome::Other(format!(
                "{status} {}",
                failed.map_or("(no failed-middleware header)".into(), |m| format!(
                    "naming {m}"
                ))
            )),
        };
        Ok((outcome, generation))
    }
}

/// One client's loop: random route, trap (20% of requests trap, one of the four at random),
/// connection kind and body (half of the requests are POSTs of up to 64 KiB). Client 0 alone traps on
/// the `reload` route, each trap followed by a clean request there: two failures in a row
/// (the fresh instances failing too) put a `reload` middleware in backoff, which the test
/// does not want to cause on purpose (the other clients' traps would make it most of the run).
async fn client_loop(
    id: usize,
    clients: Arc<Clients>,
    seed: u64,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
) {
    let mut rng = Rng(seed ^ (id as u64).wrapping_mul(0x5851_f42d_4c95_7f2d));
    let mut after_reload_trap = false;
    while !stop.load(Ordering::Relaxed) {
        let route = if after_reload_trap {
            Route::Reload
        } else {
            Route::ALL[rng.below(3) as usize]
        };
        let may_trap = route != Route::Reload || (id == 0 && !after_reload_trap);
        let trap = if may_trap && rng.below(5) == 0 {
            Trap::ALL[1 + rng.below(4) as usize]
        } else {
            Trap::None
        };
        after_reload_trap = route == Route::Reload && trap != Trap::None;
        let conn = [Conn::KeepAlive, Conn::KeepAlive, Conn::Fresh, Conn::H2][rng.below(4) as usize];
        let body: Vec<u8> = if rng.below(2) == 0 {
            let len = 1 + rng.below(64 * 1024) as usize;
            let start = rng.next();
            (0..len)
                .map(|i| b'a' + ((start as usize + i) % 26) as u8)
                .collect()
        } else {
            Vec::new()
        };
        tally.lock().unwrap().sent += 1;
        let answer = clients.send(conn, route, trap, &body).await;
        let mut t = tally.lock().unwrap();
        match answer {
            Ok((outcome, generation)) => {
                t.generations.extend(generation);
                *t.answers.entry((route, trap, outcome)).or_default() += 1;
            }
            Err((true, what)) => t.hangs.push(what),
            Err((false, what)) => t.errors.push(what),
        }
    }
}

/// Rewrites the routing file every second (the next generation) and waits until the
/// gateway serves it, counting in `done`. A reload not taken within 10 s fails.
async fn reloader(t: Arc<TestServer>, stop: Arc<AtomicBool>, done: Arc<AtomicU64>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let mut reloads = t.gateway.reloads();
        let now = reloads.borrow_and_update().generation;
        replace_file(&t.path("dynamic.yaml"), &routing(now + 1));
        let taken = tokio::time::timeout(
            Duration::from_secs(10),
            reloads.wait_for(|r| r.generation > now || r.rejected > 0),
        )
        .await
        .expect("the routing file was not reloaded within 10 s")
        .expect("the gateway is alive")
        .rejected;
        assert_eq!(taken, 0, "a routing file was rejected");
        done.fetch_add(1, Ordering::Relaxed);
    }
}

/// One round: [`CLIENTS`] clients for `secs`, and then until the routing file was rewritten
/// (and served) once per whole second of it, so that a slow machine still gets its reloads.
async fn round(t: &Arc<TestServer>, secs: f64, seed: u64) -> Tally {
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let clients = Arc::new(Clients::new(format!("http://{}", t.addr)));
    let started = Instant::now();
    let first_generation = t.gateway.generation();
    let done = Arc::new(AtomicU64::new(0));
    let reloads = tokio::spawn(reloader(t.clone(), stop.clone(), done.clone()));
    let rss = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                samples.push(rss_kib());
            }
            samples
        }
    });
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|id| {
            tokio::spawn(client_loop(
                id,
                clients.clone(),
                seed,
                stop.clone(),
                tally.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    // Bounded: each reload is waited for 10 s at most, then the reloader fails.
    while done.load(Ordering::Relaxed) < secs as u64 && !reloads.is_finished() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("a client panicked");
    }
    let elapsed = started.elapsed();
    reloads.await.expect("the reloader panicked");
    drop(clients);
    let mut tally = std::mem::take(&mut *tally.lock().unwrap());
    tally.reloads = done.load(Ordering::Relaxed);
    tally.generations_built = t.gateway.generation() - first_generation;
    tally.rss = rss.await.expect("the RSS sampler panicked");
    tally.elapsed = elapsed;
    tally
}

/// An error and its sources, for the report.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        write!(text, ": {s}").unwrap();
        source = s.source();
    }
    text
}

/// Resident set size of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/self/status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The traffic time in seconds: `WASMGATE_LOAD_SECONDS`, default 3.
fn traffic_seconds() -> f64 {
    std::env::var("WASMGATE_LOAD_SECONDS")
        .ok()
        .map(|s| {
            s.parse()
                .expect("WASMGATE_LOAD_SECONDS is a number of seconds")
        })
        .unwrap_or(3.0)
}

/// Checks every answer against its policy; returns the table and the failures.
fn account(tally: &Tally) -> (String, Vec<String>) {
    let mut failures = Vec::new();
    let mut table = String::new();
    let rows = &tally.answers;
    let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
    for ((_, _, outcome), n) in rows {
        let status = match outcome {
            Outcome::Ok { .. } => "200".to_string(),
            Outcome::Failed(_) => "503".to_string(),
            Outcome::Other(o) => o.split(' ').next().unwrap_or("?").to_string(),
        };
        *by_status.entry(status).or_default() += n;
    }
    let answered: u64 = rows.values().sum();
    // Each rewrite is one reload (two if the watcher saw it in two parts); a reload that
    // triggers the next (the watcher reacting to its own reads) builds far more.
    if tally.generations_built > 2 * tally.reloads + 2 {
        failures.push(format!(
            "{} snapshots built for {} rewrites of the routing file: reloads trigger reloads",
            tally.generations_built, tally.reloads
        ));
    }
    let unanswered = tally.hangs.len() as u64 + tally.errors.len() as u64;
    let by_status: Vec<String> = by_status.iter().map(|(s, n)| format!("{s}: {n}")).collect();
    writeln!(
        table,
        "requests: {} sent, {answered} answered in {:.1} s ({:.0}/s); {} hangs, {} transport errors\n\
         by status: {}\n\
         reloads: {} routing file rewrites (each waited for until served), {} snapshots built; \
         generations {:?}..={:?} in the answers",
        tally.sent,
        tally.elapsed.as_secs_f64(),
        answered as f64 / tally.elapsed.as_secs_f64(),
        tally.hangs.len(),
        tally.errors.len(),
        by_status.join(", "),
        tally.reloads,
        tally.generations_built,
        tally.generations.first(),
        tally.generations.last(),
    )
    .unwrap();
    writeln!(
        table,
        "{:<7} {:<12} {:<36} {:>7}  verdict",
        "route", "trap", "answer", "count"
    )
    .unwrap();
    // Per route: traps of the proxy-wasm filter, and answers caused by other requests.
    let mut pw_traps: BTreeMap<Route, u64> = BTreeMap::new();
    let mut others: BTreeMap<Route, u64> = BTreeMap::new();
    for ((route, trap, outcome), n) in rows {
        let verdict = if *outcome == expected(*route, *trap) {
            "expected"
        } else if allowed_otherwise(*route, *trap, outcome) {
            *others.entry(*route).or_default() += n;
            "allowed (another request's failure)"
        } else {
            failures.push(format!(
                "{} requests on {} trapping {} got {:?}, expected {:?}",
                n,
                route.name(),
                trap.label(),
                outcome,
                expected(*route, *trap)
            ));
            "WRONG"
        };
        if trap.is_pw() {
            *pw_traps.entry(*route).or_default() += n;
        }
        writeln!(
            table,
            "{:<7} {:<12} {:<36} {:>7}  {verdict}",
            route.name(),
            trap.label(),
            outcome.label(),
            n
        )
        .unwrap();
    }
    if tally.sent != answered || unanswered != 0 {
        failures.push(format!(
            "sent {} but answered {answered}: hangs {:?}, errors {:?}",
            tally.sent,
            &tally.hangs[..tally.hangs.len().min(10)],
            &tally.errors[..tally.errors.len().min(10)]
        ));
    }
    // A trap fails at most the other streams its VM carries: at most one per other client.
    for route in [Route::Closed, Route::Open] {
        let (n, traps) = (
            others.get(&route).copied().unwrap_or(0),
            pw_traps.get(&route).copied().unwrap_or(0),
        );
        if n > traps * (CLIENTS as u64 - 1) {
            failures.push(format!(
                "{}: {n} requests failed for others' traps, more than {traps} filter traps can explain",
                route.name()
            ));
        }
    }
    (table, failures)
}

/// The test proper, in its own process: see the module doc.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by `traffic_through_trapping_chains_is_all_accounted_for`, in a process of its own"]
async fn in_own_process() {
    let secs = traffic_seconds();
    let dir = write_files(&[("wasmgate.yaml", INSTALL), ("dynamic.yaml", &routing(1))]);
    std::fs::write(
        dir.path().join("hw.wasm"),
        wat::parse_str(HTTP_WASM_GUEST).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("pw.wasm"),
        wat::parse_str(PROXY_WASM_GUEST).unwrap(),
    )
    .unwrap();
    let t = Arc::new(start_in(dir).await);
    let _watcher = wasmgate::reload::watch(t.gateway.clone())
        .unwrap()
        .expect("watching the routing file");

    // Warm-up: the same traffic and reloads, so that pools, arenas and caches have their
    // working size before the first measure.
    let warm = round(&t, 2.0, 1).await;
    let (table, failures) = account(&warm);
    println!("warm-up:\n{table}");
    assert!(failures.is_empty(), "warm-up:\n{}", failures.join("\n"));
    let rss_before = rss_kib();

    let tally = round(&t, secs, 2).await;
    let rss_after = rss_kib();
    let (table, failures) = account(&tally);
    println!("load, {secs} s:\n{table}");
    println!(
        "RSS: {rss_before} KiB after the warm-up, {rss_after} KiB after the run ({:+.1}%)",
        (rss_after as f64 - rss_before as f64) * 100.0 / rss_before as f64
    );
    // The curve, for a leak's slope: every tenth second.
    let curve: Vec<String> = tally
        .rss
        .iter()
        .step_by(10)
        .map(|k| format!("{}", k / 1024))
        .collect();
    println!("RSS during the run, MiB, every 10 s: {}", curve.join(" "));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        tally.reloads >= secs as u64,
        "{} reloads in {secs} s",
        tally.reloads
    );
    // Requests ran under several generations: reloads happened under the traffic.
    assert!(
        tally.generations.len() >= 2,
        "generations seen: {:?}",
        tally.generations
    );
    // Within 10%, plus 8 MiB: the RSS is about 55 MiB, and the allocator keeps freed memory in
    // per-thread arenas (reloads and fresh VMs run on blocking threads that come and go), an
    // amount that is noise in absolute terms but a few percent of so small a total (+0.6% to
    // +3.7%, 2 MiB at most, in runs of 3 to 60 s here; more threads on a bigger machine keep
    // more). At ~1000 requests/s the limit (~14 MiB) catches a leak of ~5 KiB per request in
    // the short form and ~250 bytes in the 60 s form; the curve printed above shows slopes
    // below that (it showed this test's own per-request records growing 65 KiB/s).
    let limit = rss_before + rss_before / 10 + 8 * 1024;
    assert!(
        rss_after <= limit,
        "RSS grew from {rss_before} KiB to {rss_after} KiB (limit {limit} KiB)"
    );
}

/// Runs [`in_own_process`] in a child process (this test binary), bounded in time, and
/// passes on its output; `WASMGATE_LOAD_SECONDS` goes to it with the environment.
#[test]
fn traffic_through_trapping_chains_is_all_accounted_for() {
    let secs = traffic_seconds();
    let out = tempfile::tempdir().unwrap();
    let log = |n: &str| std::fs::File::create(out.path().join(n)).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "load::in_own_process",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .stdin(Stdio::null())
        .stdout(log("stdout"))
        .stderr(log("stderr"))
        .spawn()
        .unwrap();
    // Start-up, warm-up and the run, with room for a slow machine; past it, the child hangs.
    let deadline = Instant::now() + Duration::from_secs_f64(secs + 120.0);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let read = |n: &str| std::fs::read_to_string(out.path().join(n)).unwrap_or_default();
    let (stdout, stderr) = (read("stdout"), read("stderr"));
    println!("{stdout}");
    eprintln!("{stderr}");
    let status = status.expect("the load test did not finish in time");
    assert!(status.success(), "the load test failed: {status}");
    assert!(
        stdout.contains("1 passed"),
        "the load test did not run: {stdout}"
    );
}
