//! Host-function tests on both engines, driven from outside the guest.
//!
//! The guest is a generated forwarder: for every `http_handler` import it
//! exports `call_<name>` with the same signature, so a test can call any host
//! function with any arguments and then inspect guest memory, exactly as a
//! guest would see it. Every case runs on wasmtime and on wasmer.

use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use http::{Method, Version};
use proptest::prelude::*;
use wasmgate_engines::{
    new_engine, CompiledModule, EngineKind, EngineOptions, Instance, Limits, Trap, Val,
};

use super::abi::{count_len, eof_len, feature, MODULE};
use super::state::{Exchange, HttpWasmState, MiddlewareShared, Phase, RequestBody};
use crate::body::Body;
use crate::headers::Headers;
use crate::model::Request;
use crate::test_util::parity;

const BUF: u32 = 4096;
const FILL: u8 = 0xAA;

/// A module that re-exports every `http_handler` function as `call_<name>`.
fn forwarder_wat() -> String {
    let mut imports = String::new();
    let mut exports = String::new();
    for f in super::host_functions("probe")
        .0
        .iter()
        .filter(|f| f.module == MODULE)
    {
        let params: Vec<_> = f.ty.params.iter().map(|t| t.to_string()).collect();
        let results: Vec<_> = f.ty.results.iter().map(|t| t.to_string()).collect();
        let sig = format!(
            "(param {}) (result {})",
            params.join(" "),
            results.join(" ")
        );
        imports += &format!(
            "(import \"{MODULE}\" \"{n}\" (func ${n} {sig}))\n",
            n = f.name
        );
        let gets: String = (0..params.len())
            .map(|i| format!("local.get {i} "))
            .collect();
        exports += &format!(
            "(func (export \"call_{n}\") {sig} {gets} call ${n})\n",
            n = f.name
        );
    }
    format!("(module\n{imports}(memory (export \"memory\") 1)\n{exports})")
}

/// The forwarder compiled for `engine`, once per engine (each engine's tests compile only theirs).
fn module(engine: EngineKind) -> Arc<dyn CompiledModule> {
    static MODULES: [OnceLock<Arc<dyn CompiledModule>>; 2] = [OnceLock::new(), OnceLock::new()];
    let slot = EngineKind::ALL.iter().position(|&k| k == engine).unwrap();
    MODULES[slot]
        .get_or_init(|| {
            let e = new_engine(engine, EngineOptions::default()).unwrap();
            e.compile(
                forwarder_wat().as_bytes(),
                Arc::new(super::host_functions("probe")),
                Limits::default(),
            )
            .unwrap()
        })
        .clone()
}

fn shared(config: &[u8]) -> Arc<MiddlewareShared> {
    Arc::new(MiddlewareShared {
        plugin: "probe".into(),
        middleware: "probe-mw".into(),
        config: config.to_vec(),
        min_log_level: -1,
        max_body_bytes: 1 << 20,
        max_host_bytes: crate::guest::DEFAULT_MAX_HOST_BYTES,
        writes_stdio: true,
    })
}

/// A memory share counted nowhere.
fn unmetered() -> crate::guest::MemoryShare {
    crate::guest::MemoryShare::new(Arc::new(crate::guest::GuestStats::new(&[], false)))
}

struct Probe {
    inst: Box<dyn Instance>,
}

impl Probe {
    fn new(engine: EngineKind, config: &[u8]) -> Probe {
        let inst = module(engine)
            .instantiate(Box::new(HttpWasmState::new(shared(config), unmetered())))
            .unwrap();
        let mut p = Probe { inst };
        p.inst.write(0, &vec![FILL; 65536]).unwrap();
        p
    }

    fn state(&mut self) -> &mut HttpWasmState {
        self.inst.data().downcast_mut().unwrap()
    }

    fn ex(&mut self) -> &mut Exchange {
        self.state().exchange.as_mut().unwrap()
    }

    /// Puts `req` in flight, its body read ahead as the middleware does (the bodies here are
    /// in memory: read ahead at once).
    fn with_request(mut self, mut req: Request) -> Probe {
        let mf = self.state().module_features;
        let limit = self.state().shared.max_body_bytes;
        let mut body = RequestBody::new(std::mem::take(&mut req.body));
        ready(body.read_ahead(limit)).unwrap();
        self.state().exchange = Some(Exchange::new(req, body, mf));
        self
    }

    /// Puts `req` in flight with its body not read ahead (a guest that does not import
    /// `read_body` and had trailers off at start-up).
    fn with_request_streaming(mut self, mut req: Request) -> Probe {
        let mf = self.state().module_features;
        let body = RequestBody::new(std::mem::take(&mut req.body));
        self.state().exchange = Some(Exchange::new(req, body, mf));
        self
    }

    fn put(&mut self, at: u32, bytes: &[u8]) -> (i32, i32) {
        self.inst.write(at, bytes).unwrap();
        (at as i32, bytes.len() as i32)
    }

    fn mem(&self, at: u32, len: u32) -> Vec<u8> {
        self.inst.read(at, len).unwrap()
    }

    fn call(&mut self, name: &str, args: &[i32]) -> Result<Option<Val>, Trap> {
        let f = self.inst.export(&format!("call_{name}")).unwrap();
        let args: Vec<Val> = args.iter().map(|&a| Val::I32(a)).collect();
        let mut out: Vec<Val> = f
            .ty()
            .results
            .iter()
            .map(|&t| Val::default_for(t))
            .collect();
        self.inst.call(&f, &args, &mut out)?;
        Ok(out.first().copied())
    }

    fn i32(&mut self, name: &str, args: &[i32]) -> i32 {
        self.call(name, args).unwrap().unwrap().i32().unwrap()
    }

    fn i64(&mut self, name: &str, args: &[i32]) -> i64 {
        self.call(name, args).unwrap().unwrap().i64().unwrap()
    }

    fn unit(&mut self, name: &str, args: &[i32]) {
        assert_eq!(self.call(name, args).unwrap(), None);
    }

    fn traps(&mut self, name: &str, args: &[i32]) -> String {
        match self.call(name, args) {
            Err(t) => t.to_string(),
            Ok(v) => panic!("{name}{args:?} should trap, returned {v:?}"),
        }
    }
}

/// The output of a future that is ready at once.
fn ready<F: std::future::Future>(f: F) -> F::Output {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::pin!(f).poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("the future was not ready at once"),
    }
}

fn request() -> Request {
    let mut req = Request::new(
        Method::GET,
        "/v1.0/hi%20there?name=kung+fu+panda".parse().unwrap(),
        "1.2.3.4:12345".parse().unwrap(),
    );
    req.version = Version::HTTP_11;
    req.headers = [
        ("Host", "example.com"),
        ("Accept", "text/plain"),
        ("X-Multi", "a"),
        ("x-multi", "bb"),
    ]
    .into_iter()
    .collect();
    req
}

fn single_value_getters_and_the_too_small_buffer_convention(k: EngineKind) {
    let mut p = Probe::new(k, b"{\"a\":1}").with_request(request());
    for (func, want) in [
        ("get_method", &b"GET"[..]),
        ("get_uri", b"/v1.0/hi%20there?name=kung+fu+panda"),
        ("get_protocol_version", b"HTTP/1.1"),
        ("get_source_addr", b"1.2.3.4:12345"),
        ("get_config", b"{\"a\":1}"),
    ] {
        let n = want.len() as i32;
        // Too small: nothing written, full length returned.
        assert_eq!(p.i32(func, &[BUF as i32, n - 1]), n, "{k} {func}");
        assert_eq!(p.mem(BUF, n as u32), vec![FILL; n as usize], "{k} {func}");
        // Probe with 0.
        assert_eq!(p.i32(func, &[BUF as i32, 0]), n, "{k} {func}");
        // Exact fit.
        assert_eq!(p.i32(func, &[BUF as i32, n]), n, "{k} {func}");
        assert_eq!(p.mem(BUF, n as u32), want, "{k} {func}");
        p.put(BUF, &[FILL; 64]);
    }
}
parity!(single_value_getters_and_the_too_small_buffer_convention);

fn header_names_and_values_lists(k: EngineKind) {
    let mut p = Probe::new(k, b"").with_request(request());
    let want = b"host\0accept\0x-multi\0";
    let got = p.i64("get_header_names", &[0, BUF as i32, 100]);
    assert_eq!(got, count_len(3, want.len()), "{k}");
    assert_eq!(p.mem(BUF, want.len() as u32), want, "{k}");
    // Too small: nothing written.
    p.put(BUF, &[FILL; 64]);
    assert_eq!(
        p.i64("get_header_names", &[0, BUF as i32, want.len() as i32 - 1]),
        count_len(3, want.len())
    );
    assert_eq!(p.mem(BUF, 8), vec![FILL; 8]);
    // Values: case-insensitive, in order.
    let (name, len) = p.put(100, b"X-MULTI");
    assert_eq!(
        p.i64("get_header_values", &[0, name, len, BUF as i32, 64]),
        count_len(2, 5)
    );
    assert_eq!(p.mem(BUF, 5), b"a\0bb\0");
    // The lists are built in the instance's scratch buffer, kept for the next call.
    assert!(p.state().scratch.capacity() >= want.len(), "{k}");
    // Absent: 0.
    let (name, len) = p.put(100, b"nope");
    assert_eq!(
        p.i64("get_header_values", &[0, name, len, BUF as i32, 64]),
        0
    );
    // No response headers before next.
    assert_eq!(p.i64("get_header_names", &[1, BUF as i32, 64]), 0);
    // Empty name traps; an unknown kind traps.
    assert!(p
        .traps("get_header_values", &[0, 100, 0, BUF as i32, 64])
        .contains("empty header name"));
    assert!(p
        .traps("get_header_names", &[9, BUF as i32, 64])
        .contains("unknown header kind"));
}
parity!(header_names_and_values_lists);

fn header_setters_on_request_and_response(k: EngineKind) {
    let mut p = Probe::new(k, b"").with_request(request());
    let (n, nl) = p.put(100, b"x-multi");
    let (v, vl) = p.put(200, b"one");
    p.unit("set_header_value", &[0, n, nl, v, vl]);
    let (v2, vl2) = p.put(300, b"two");
    p.unit("add_header_value", &[0, n, nl, v2, vl2]);
    let got: Vec<_> = p
        .ex()
        .request
        .headers
        .get_all("x-multi")
        .map(|v| v.to_vec())
        .collect();
    assert_eq!(got, vec![b"one".to_vec(), b"two".to_vec()], "{k}");
    let (a, al) = p.put(400, b"Accept");
    p.unit("remove_header", &[0, a, al]);
    assert!(!p.ex().request.headers.contains("accept"));
    p.unit("remove_header", &[0, a, al]); // absent: no-op
                                          // Response headers before next: the guest builds its own response.
    p.unit("set_header_value", &[1, n, nl, v, vl]);
    assert_eq!(p.ex().response.headers.get("x-multi"), Some(&b"one"[..]));
    // Empty value is fine; CR/LF in a value traps.
    p.unit("set_header_value", &[0, n, nl, v, 0]);
    let (bad, badl) = p.put(500, b"a\r\nb: c");
    assert!(p
        .traps("set_header_value", &[0, n, nl, bad, badl])
        .contains("invalid value"));
    let (bn, bnl) = p.put(600, b"bad name");
    assert!(p
        .traps("add_header_value", &[0, bn, bnl, v, vl])
        .contains("invalid header name"));
}
parity!(header_setters_on_request_and_response);

fn method_and_uri_setters(k: EngineKind) {
    let mut p = Probe::new(k, b"").with_request(request());
    let (m, ml) = p.put(100, b"POST");
    p.unit("set_method", &[m, ml]);
    assert_eq!(p.ex().request.method, Method::POST);
    let (u, ul) = p.put(200, b"/a%2Fb?x=%20");
    p.unit("set_uri", &[u, ul]);
    assert_eq!(
        p.ex().uri_text(),
        "/a%2Fb?x=%20",
        "{k}: set_uri must not re-encode"
    );
    let (u, ul) = p.put(200, b"/no-query");
    p.unit("set_uri", &[u, ul]);
    assert_eq!(p.ex().uri_text(), "/no-query");
    p.unit("set_uri", &[u, 0]);
    assert_eq!(p.ex().uri_text(), "/");
    assert!(p.traps("set_method", &[m, 0]).contains("empty method"));
    let (bad, bl) = p.put(300, b"/a b");
    p.traps("set_uri", &[bad, bl]);
}
parity!(method_and_uri_setters);

fn enable_features_scopes(k: EngineKind) {
    let mut p = Probe::new(k, b"");
    // Start-up: module-wide, returns the enabled set.
    assert_eq!(p.i32("enable_features", &[0]), 0);
    assert_eq!(
        p.i32("enable_features", &[feature::BUFFER_RESPONSE as i32]),
        2
    );
    assert_eq!(
        p.i32("enable_features", &[8 | 1]),
        3,
        "unsupported bits are cleared"
    );
    assert_eq!(p.state().module_features, 3);
    // During a request: this request only, module bits included.
    let mut p = p.with_request(request());
    assert_eq!(p.i32("enable_features", &[4]), 7);
    assert_eq!(p.state().module_features, 3);
}
parity!(enable_features_scopes);

fn request_body_streams_and_buffer_request_replays(k: EngineKind) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut req = request();
        req.body = Body::full("0123456789");
        let mut p = Probe::new(k, b"").with_request(req);
        // buf_limit 0 traps.
        assert!(p
            .traps("read_body", &[0, BUF as i32, 0])
            .contains("buf_limit"));
        let mut p = Probe::new(k, b"").with_request({
            let mut r = request();
            r.body = Body::full("0123456789");
            r
        });
        assert_eq!(p.i64("read_body", &[0, BUF as i32, 4]), eof_len(false, 4));
        assert_eq!(p.mem(BUF, 4), b"0123");
        assert_eq!(p.i64("read_body", &[0, BUF as i32, 100]), eof_len(true, 6));
        assert_eq!(p.mem(BUF, 6), b"456789");
        assert_eq!(p.i64("read_body", &[0, BUF as i32, 100]), eof_len(true, 0));
        // Without buffer_request the read part is gone for next.
        let next = p.ex().request_for_next(1 << 20).await.unwrap();
        assert_eq!(next.body.buffer(100).await.unwrap().data, Bytes::new());

        // With buffer_request, next still gets the whole body, and handle_response may read it.
        let mut p = Probe::new(k, b"").with_request({
            let mut r = request();
            r.body = Body::full("0123456789");
            r
        });
        p.i32("enable_features", &[feature::BUFFER_REQUEST as i32]);
        assert_eq!(p.i64("read_body", &[0, BUF as i32, 3]), eof_len(false, 3));
        let next = p.ex().request_for_next(1 << 20).await.unwrap();
        assert_eq!(
            next.body.buffer(100).await.unwrap().data,
            Bytes::from("0123456789")
        );
        p.ex().phase = Phase::Response;
        assert_eq!(p.i64("read_body", &[0, BUF as i32, 100]), eof_len(true, 10));
        assert_eq!(p.mem(BUF, 10), b"0123456789");
    });
}
parity!(request_body_streams_and_buffer_request_replays);

fn guest_bodies_and_header_lists_are_bounded(k: EngineKind) {
    let mut p = Probe::new(k, b"").with_request(request());
    let limit = 1 << 20;
    // Refused before a byte is copied out of the guest.
    assert!(p
        .traps("write_body", &[1, 0, limit + 1])
        .contains("maxBodyBytes"));
    let (a, al) = p.put(100, b"0123456789");
    p.ex().body.written = Some(BytesMut::from(&vec![b'a'; limit as usize - 10][..]));
    p.unit("write_body", &[0, a, al]);
    assert!(p.traps("write_body", &[0, a, 1]).contains("maxBodyBytes"));
    // Header lists: at most 1024 field lines after a guest's change.
    let mut p = Probe::new(k, b"").with_request(request());
    let room = crate::headers::GUEST_MAX_FIELD_LINES - p.ex().request.headers.len();
    for i in 0..room {
        p.ex().request.headers.append(format!("x-{i}"), "v");
    }
    let (n, nl) = p.put(100, b"x-one-more");
    let (v, vl) = p.put(200, b"1");
    for f in ["add_header_value", "set_header_value"] {
        assert!(p.traps(f, &[0, n, nl, v, vl]).contains("1024"), "{k} {f}");
    }
}
parity!(guest_bodies_and_header_lists_are_bounded);

fn write_body_replaces_then_appends(k: EngineKind) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut req = request();
        req.body = Body::full("original");
        let mut p = Probe::new(k, b"").with_request(req);
        let (a, al) = p.put(100, b"new ");
        let (b, bl) = p.put(200, b"body");
        p.unit("write_body", &[0, a, al]);
        p.unit("write_body", &[0, b, bl]);
        let next = p.ex().request_for_next(1 << 20).await.unwrap();
        assert_eq!(
            next.body.buffer(100).await.unwrap().data,
            Bytes::from("new body")
        );
        // After next the request cannot change.
        p.ex().phase = Phase::Response;
        assert!(p
            .traps("write_body", &[0, a, al])
            .contains("cannot change after next"));
        assert!(p
            .traps("set_method", &[a, 3])
            .contains("cannot change after next"));
        assert!(p
            .traps("set_header_value", &[0, a, 3, b, bl])
            .contains("cannot change after next"));
    });
}
parity!(write_body_replaces_then_appends);

fn response_side_after_next_needs_buffer_response(k: EngineKind) {
    let mut p = Probe::new(k, b"").with_request(request());
    {
        let ex = p.ex();
        ex.phase = Phase::Response;
        ex.response.available = true;
        ex.response.status = 201;
        ex.response.headers = [("Content-Type", "text/plain")].into_iter().collect();
    }
    // Reading headers is fine; status, body and writes are not.
    assert_eq!(
        p.i64("get_header_names", &[1, BUF as i32, 64]),
        count_len(1, 13)
    );
    assert!(p.traps("get_status_code", &[]).contains("buffer_response"));
    assert!(p
        .traps("read_body", &[1, BUF as i32, 10])
        .contains("buffer_response"));
    let (n, nl) = p.put(100, b"x-a");
    assert!(p
        .traps("set_header_value", &[1, n, nl, n, nl])
        .contains("buffer_response"));
    assert!(p
        .traps("set_status_code", &[404])
        .contains("buffer_response"));
    assert!(p
        .traps("write_body", &[1, n, nl])
        .contains("buffer_response"));
    assert!(p
        .traps("read_body", &[0, BUF as i32, 10])
        .contains("buffer_request"));

    // With buffer_response everything works.
    let mut p = Probe::new(k, b"").with_request(request());
    p.i32("enable_features", &[feature::BUFFER_RESPONSE as i32]);
    {
        let ex = p.ex();
        ex.phase = Phase::Response;
        ex.response.available = true;
        ex.response.status = 201;
        ex.response.buffered = Some(Bytes::from("upstream body"));
    }
    assert_eq!(p.i32("get_status_code", &[]), 201);
    assert_eq!(p.i64("read_body", &[1, BUF as i32, 64]), eof_len(true, 13));
    assert_eq!(p.mem(BUF, 13), b"upstream body");
    let (n, nl) = p.put(100, b"x-a");
    p.unit("set_status_code", &[418]);
    p.unit("write_body", &[1, n, nl]);
    p.unit("write_body", &[1, n, nl]);
    assert_eq!(p.ex().response.status, 418);
    assert_eq!(&p.ex().response.written.as_ref().unwrap().1[..], b"x-ax-a");
    assert!(p.traps("set_status_code", &[42]).contains("invalid status"));
}
parity!(response_side_after_next_needs_buffer_response);

fn trailers_need_the_feature(k: EngineKind) {
    let mut p = Probe::new(k, b"").with_request(request());
    let (n, nl) = p.put(100, b"grpc-status");
    // Without the feature: getters see nothing, setters trap.
    assert_eq!(p.i64("get_header_names", &[3, BUF as i32, 64]), 0);
    assert!(p
        .traps("set_header_value", &[3, n, nl, n, 1])
        .contains("trailers are not enabled"));
    p.i32("enable_features", &[feature::TRAILERS as i32]);
    let (v, vl) = p.put(200, b"0");
    p.unit("set_header_value", &[3, n, nl, v, vl]);
    p.unit("add_header_value", &[2, n, nl, v, vl]);
    // Each kind lands in its own place (not request trailers on response headers).
    assert_eq!(
        p.ex()
            .response
            .trailers
            .as_ref()
            .unwrap()
            .get("grpc-status"),
        Some(&b"0"[..])
    );
    assert_eq!(
        p.ex().request_trailers.as_ref().unwrap().get("grpc-status"),
        Some(&b"0"[..])
    );
    assert!(!p.ex().response.headers.contains("grpc-status"));
    assert_eq!(
        p.i64("get_header_values", &[2, n, nl, BUF as i32, 64]),
        count_len(1, 2)
    );
}
parity!(trailers_need_the_feature);

fn log_and_log_enabled(k: EngineKind) {
    let mut p = Probe::new(k, b"");
    assert_eq!(p.i32("log_enabled", &[-1]), 1);
    assert_eq!(p.i32("log_enabled", &[3]), 0);
    let (m, ml) = p.put(100, b"hello from the guest");
    p.unit("log", &[0, m, ml]);
    // A bad message pointer never traps log.
    p.unit("log", &[0, 65000, 10_000]);
}
parity!(log_and_log_enabled);

fn request_functions_trap_outside_a_request(k: EngineKind) {
    let mut p = Probe::new(k, b"cfg");
    assert!(p
        .traps("get_method", &[BUF as i32, 10])
        .contains("only usable while a request"));
    assert_eq!(p.i32("get_config", &[BUF as i32, 10]), 3);
}
parity!(request_functions_trap_outside_a_request);

fn out_of_range_destinations_trap(k: EngineKind) {
    let mut p = Probe::new(k, b"").with_request(request());
    let end = 65536;
    assert!(p
        .traps("get_method", &[end - 2, 10])
        .contains("out of bounds"));
    assert!(p
        .traps("get_header_names", &[0, end - 2, 100])
        .contains("out of bounds"));
    assert!(p
        .traps("set_header_value", &[0, end - 1, 5, 0, 1])
        .contains("out of bounds"));
    // A value that does not fit the limit writes nothing, so nothing is checked.
    assert_eq!(p.i32("get_method", &[end - 2, 1]), 3);
}
parity!(out_of_range_destinations_trap);

/// Header values a client may send: visible ASCII and spaces inside.
fn header_value() -> impl Strategy<Value = String> {
    "[!-~]([ -~]{0,20}[!-~])?"
}

/// Any header set, any limit: the guest reads back exactly what the host holds, or nothing.
fn buffer_convention_for_any_headers_and_limit(
    k: EngineKind,
    values: Vec<String>,
    other: Vec<(String, String)>,
    limit: u32,
) -> Result<(), TestCaseError> {
    let mut req = request();
    req.headers = Headers::new();
    for v in &values {
        req.headers.append("x-probe", v.clone());
    }
    for (n, v) in &other {
        req.headers.append(format!("o-{n}"), v.clone());
    }
    let mut p = Probe::new(k, b"").with_request(req);
    let (name, len) = p.put(100, b"X-Probe");
    let got = p.i64(
        "get_header_values",
        &[0, name, len, BUF as i32, limit as i32],
    );
    let expect: Vec<u8> = values.iter().flat_map(|v| v.bytes().chain([0])).collect();
    if values.is_empty() {
        prop_assert_eq!(got, 0);
    } else {
        prop_assert_eq!(got, count_len(values.len(), expect.len()));
    }
    let mem = p.mem(BUF, expect.len().max(1) as u32);
    if !expect.is_empty() && expect.len() <= limit as usize {
        prop_assert_eq!(&mem[..expect.len()], &expect[..]);
    } else {
        prop_assert!(
            mem.iter().all(|b| *b == FILL),
            "wrote though it did not fit"
        );
    }
    Ok(())
}
parity!(
    proptest(ProptestConfig { cases: 64, ..ProptestConfig::default() })
    buffer_convention_for_any_headers_and_limit(
        values in prop::collection::vec(header_value(), 0..6),
        other in prop::collection::vec(("[a-z]{1,8}", header_value()), 0..4),
        limit in 0u32..200,
    )
);

/// Random pointers, lengths and kinds into every host function: a status or a trap, never a host panic.
fn random_arguments_never_harm_the_host(
    k: EngineKind,
    seed_args: Vec<i32>,
    phase_after: bool,
    features: i32,
) -> Result<(), TestCaseError> {
    for f in super::host_functions("probe")
        .0
        .iter()
        .filter(|f| f.module == MODULE)
    {
        let mut p = Probe::new(k, b"cfg").with_request(request());
        p.i32("enable_features", &[features]);
        if phase_after {
            p.ex().phase = Phase::Response;
            p.ex().response.available = true;
        }
        let args = &seed_args[..f.ty.params.len()];
        // read_body would wait on a body stream; the request here has none, so it returns.
        if p.call(&f.name, args).is_ok() {
            // An instance that did not trap still answers.
            prop_assert_eq!(p.i32("get_config", &[BUF as i32, 10]), 3);
        }
    }
    Ok(())
}
parity!(
    proptest(ProptestConfig { cases: 64, ..ProptestConfig::default() })
    random_arguments_never_harm_the_host(
        seed_args in prop::collection::vec(prop_oneof![
            Just(0i32), Just(-1i32), Just(65535i32), Just(65536i32), 0i32..70000, any::<i32>()
        ], 5),
        phase_after in any::<bool>(),
        features in 0i32..8,
    )
);

fn reads_are_served_from_the_read_ahead_part_and_stop_past_it(k: EngineKind) {
    // maxBodyBytes (1 MiB) plus 10: exactly 1 MiB is read ahead.
    let limit = 1usize << 20;
    let mut req = request();
    req.body = Body::full(vec![b'x'; limit + 10]);
    let mut p = Probe::new(k, b"").with_request(req);
    assert_eq!(p.ex().body.pending.len(), limit);
    let mut read = 0;
    while read < limit {
        let r = p.i64("read_body", &[0, BUF as i32, 60_000]);
        assert_eq!(r >> 32, 0, "{k}: no eof before the limit");
        read += (r & 0xffff_ffff) as usize;
    }
    assert_eq!(read, limit);
    assert!(!p.ex().body.too_large);
    // Past the read-ahead part: the call stops (no waiting) and the request is too large.
    assert!(p
        .traps("read_body", &[0, BUF as i32, 100])
        .contains("maxBodyBytes"));
    assert!(p.ex().body.too_large, "{k}");

    // Trailers: known once the body was read ahead to its end...
    let trailers: Headers = [("grpc-status", "0")].into_iter().collect();
    let mut req = request();
    req.body = Body::from(crate::body::BufferedBody {
        data: Bytes::from_static(b"small"),
        trailers: Some(trailers.clone()),
    });
    let mut p = Probe::new(k, b"").with_request(req);
    p.i32("enable_features", &[feature::TRAILERS as i32]);
    assert_eq!(
        p.i64("get_header_names", &[2, BUF as i32, 64]),
        count_len(1, 12)
    );
    // ... and past a body larger than maxBodyBytes they are out of reach: too large.
    let mut req = request();
    req.body = Body::from(crate::body::BufferedBody {
        data: Bytes::from(vec![b'x'; limit + 1]),
        trailers: Some(trailers),
    });
    let mut p = Probe::new(k, b"").with_request(req);
    p.i32("enable_features", &[feature::TRAILERS as i32]);
    assert!(p
        .traps("get_header_names", &[2, BUF as i32, 64])
        .contains("maxBodyBytes"));
    assert!(p.ex().body.too_large, "{k}");
    // Trailers enabled only during the call, body not read ahead: none have arrived, the
    // guest sees none and nothing waits (the reference host's `Request.Trailer` is empty
    // until the body is read).
    let mut req = request();
    req.body = Body::from(crate::body::BufferedBody {
        data: Bytes::from_static(b"streaming"),
        trailers: Some([("x-checksum", "abc")].into_iter().collect()),
    });
    let mut p = Probe::new(k, b"").with_request_streaming(req);
    p.i32("enable_features", &[feature::TRAILERS as i32]);
    assert_eq!(p.i64("get_header_names", &[2, BUF as i32, 64]), 0, "{k}");
    assert!(!p.ex().body.too_large, "{k}");
}
parity!(reads_are_served_from_the_read_ahead_part_and_stop_past_it);

#[test]
fn host_table_signatures_are_the_abi_ones() {
    use wasmgate_engines::FuncType;
    use wasmgate_engines::ValType::{I32, I64};
    // The http-wasm http_handler ABI (http-wasm.io): the typed closures must give exactly these.
    let abi: [(&str, FuncType); 19] = [
        ("enable_features", FuncType::new([I32], [I32])),
        ("get_config", FuncType::new([I32, I32], [I32])),
        ("log_enabled", FuncType::new([I32], [I32])),
        ("log", FuncType::new([I32, I32, I32], [])),
        ("get_method", FuncType::new([I32, I32], [I32])),
        ("set_method", FuncType::new([I32, I32], [])),
        ("get_uri", FuncType::new([I32, I32], [I32])),
        ("set_uri", FuncType::new([I32, I32], [])),
        ("get_protocol_version", FuncType::new([I32, I32], [I32])),
        ("get_header_names", FuncType::new([I32, I32, I32], [I64])),
        (
            "get_header_values",
            FuncType::new([I32, I32, I32, I32, I32], [I64]),
        ),
        (
            "set_header_value",
            FuncType::new([I32, I32, I32, I32, I32], []),
        ),
        (
            "add_header_value",
            FuncType::new([I32, I32, I32, I32, I32], []),
        ),
        ("remove_header", FuncType::new([I32, I32, I32], [])),
        ("read_body", FuncType::new([I32, I32, I32], [I64])),
        ("write_body", FuncType::new([I32, I32, I32], [])),
        ("get_status_code", FuncType::new([], [I32])),
        ("set_status_code", FuncType::new([I32], [])),
        ("get_source_addr", FuncType::new([I32, I32], [I32])),
    ];
    let table = super::host_functions("probe");
    for (name, ty) in &abi {
        assert_eq!(&table.get(MODULE, name).expect(name).ty, ty, "{name}");
    }
    assert_eq!(table.0.iter().filter(|f| f.module == MODULE).count(), 19);
}

// maxHostBytes (issue 13).

/// A probe whose requests may make the host hold at most `max_host_bytes` guest bytes.
fn probe_with_budget(k: EngineKind, max_host_bytes: usize) -> Probe {
    let inst = module(k)
        .instantiate(Box::new(HttpWasmState::new(
            Arc::new(MiddlewareShared {
                max_host_bytes,
                ..Arc::into_inner(shared(b"")).unwrap()
            }),
            unmetered(),
        )))
        .unwrap();
    let mut p = Probe { inst };
    p.inst.write(0, &vec![FILL; 65536]).unwrap();
    p.with_request(request())
}

const BUDGET: usize = 256 << 10;

fn host_bytes_are_bounded_per_request_whatever_the_list(k: EngineKind) {
    let mut p = probe_with_budget(k, BUDGET);
    let (n, nl) = p.put(100, b"x-flood");
    let (v, vl) = p.put(1024, &[b'v'; 1024]);
    let each = (nl + vl) as usize;
    // Header lists each allow 1024 lines and 1 MiB: the budget is what stops the guest here,
    // whatever list it spreads its headers over.
    let mut added = 0;
    let refusal = loop {
        let kind = [0, 1][added % 2];
        match p.call("add_header_value", &[kind, n, nl, v, vl]) {
            Ok(_) => added += 1,
            Err(t) => break t.to_string(),
        }
        assert!(added <= BUDGET / each, "{k}: past the budget");
    };
    assert_eq!(added, BUDGET / each, "{k}");
    assert!(
        refusal.contains("maxHostBytes (262144 bytes)"),
        "{k}: {refusal}"
    );
    let used = added * each;
    assert_eq!(p.ex().budget.as_ref().unwrap().used(), used, "{k}");
    // Every function that copies guest bytes is refused past it, and removing headers does
    // not give their bytes back: they were copied.
    let (r, rl) = p.put(60000, b"x-flood");
    p.unit("remove_header", &[0, r, rl]);
    let room = (BUDGET - used) as i32;
    for (f, args) in [
        ("set_header_value", vec![0, n, nl, v, room - nl + 1]),
        ("write_body", vec![1, v, room + 1]),
        ("set_uri", vec![v, room + 1]),
        ("set_method", vec![v, room + 1]),
    ] {
        assert!(p.traps(f, &args).contains("maxHostBytes"), "{k} {f}");
    }
    // Up to the last byte is allowed.
    p.unit("write_body", &[1, v, room]);
    assert_eq!(p.ex().budget.as_ref().unwrap().used(), BUDGET, "{k}");
    // The next request starts from nothing.
    let mut p = p.with_request(request());
    assert!(p.ex().budget.is_none());
    p.unit("add_header_value", &[0, n, nl, v, vl]);
    assert_eq!(p.ex().budget.as_ref().unwrap().used(), each, "{k}");
}
parity!(host_bytes_are_bounded_per_request_whatever_the_list);

fn a_replaced_response_body_is_given_back(k: EngineKind) {
    let mut p = probe_with_budget(k, BUDGET);
    p.i32("enable_features", &[feature::BUFFER_RESPONSE as i32]);
    let (v, _) = p.put(1024, &[b'v'; 1024]);
    let chunk = 40 << 10;
    // The request phase writes 160 KiB of response body...
    for _ in 0..4 {
        p.unit("write_body", &[1, v, chunk]);
    }
    // ... which the response phase's first write replaces: 160 KiB again fit in 256 KiB.
    {
        let ex = p.ex();
        ex.phase = Phase::Response;
        ex.response.available = true;
    }
    for _ in 0..4 {
        p.unit("write_body", &[1, v, chunk]);
    }
    assert_eq!(
        p.ex().budget.as_ref().unwrap().used(),
        4 * chunk as usize,
        "{k}"
    );
    assert_eq!(
        p.ex().response.written.as_ref().unwrap().1.len(),
        4 * chunk as usize
    );
}
parity!(a_replaced_response_body_is_given_back);

/// Floods its request headers (`x-flood`) or its response body (`x-body-flood`) until the
/// host refuses; otherwise adds `x-ok: ok` and goes on.
const FLOOD: &str = r#"(module
  (import "http_handler" "get_header_values" (func $ghv (param i32 i32 i32 i32 i32) (result i64)))
  (import "http_handler" "add_header_value" (func $add (param i32 i32 i32 i32 i32)))
  (import "http_handler" "write_body" (func $write (param i32 i32 i32)))
  (memory (export "memory") 2)
  (data (i32.const 0) "x-flood")
  (data (i32.const 16) "x-body-flood")
  (data (i32.const 32) "x-flooded")
  (data (i32.const 48) "x-ok")
  (data (i32.const 64) "ok")
  (func $has (param $name i32) (param $len i32) (result i32)
    (i64.ne (call $ghv (i32.const 0) (local.get $name) (local.get $len) (i32.const 512) (i32.const 0)) (i64.const 0)))
  (func (export "handle_request") (result i64)
    (memory.fill (i32.const 1024) (i32.const 97) (i32.const 65536))
    (if (call $has (i32.const 0) (i32.const 7))
      (then (loop $l
        (call $add (i32.const 0) (i32.const 32) (i32.const 9) (i32.const 1024) (i32.const 1024))
        (br $l))))
    (if (call $has (i32.const 16) (i32.const 12))
      (then (loop $l
        (call $write (i32.const 1) (i32.const 1024) (i32.const 65536))
        (br $l))))
    (call $add (i32.const 0) (i32.const 48) (i32.const 4) (i32.const 64) (i32.const 2))
    (i64.const 1)))"#;

/// Answers 200, saying how many `x-flooded` and `x-ok` headers it got.
struct Counting;

#[async_trait::async_trait]
impl crate::middleware::Endpoint for Counting {
    async fn call(&self, req: Request) -> Result<crate::model::Response, crate::error::ProxyError> {
        let mut r = crate::model::Response::new(http::StatusCode::OK);
        for name in ["x-flooded", "x-ok"] {
            let n = req.headers.get_all(name).count();
            r.headers.append(format!("seen-{name}"), n.to_string());
        }
        Ok(r)
    }
}

fn a_flooding_guest_is_refused_and_the_next_request_works(k: EngineKind) {
    use crate::middleware::{Middleware, Next};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let wasm = wat::parse_str(FLOOD).unwrap();
        let info = wasmgate_engines::ModuleInfo::parse(&wasm).unwrap();
        let engines = crate::plugin::Engines::new(None);
        let plugin = super::HttpWasmPlugin::load(
            "flood",
            &wasm,
            &info,
            engines.get(k).unwrap().as_ref(),
            crate::guest::PluginOptions {
                engine: k,
                pool_size: 1,
                max_host_bytes: BUDGET,
                ..Default::default()
            },
        )
        .unwrap();
        let chain: Vec<Arc<dyn Middleware>> =
            vec![Arc::new(plugin.middleware("flood-mw", Vec::new()).unwrap())];
        let send = |flood: Option<&str>| {
            let mut req = Request::new(
                Method::GET,
                "/".parse().unwrap(),
                "127.0.0.1:4000".parse().unwrap(),
            );
            if let Some(h) = flood {
                req.headers.append(h, "1");
            }
            Next::new(&chain, &Counting).run(req)
        };
        for round in 0..2 {
            for flood in ["x-flood", "x-body-flood"] {
                // Refused at the budget: the request fails (the trap names maxHostBytes; a
                // fail-closed answer is a 503 that keeps the trap text in the log).
                match send(Some(flood)).await {
                    Err(e) => assert!(e.chain().contains("maxHostBytes"), "{k} {flood}: {e}"),
                    Ok(r) => assert_eq!(r.status, 503, "{k} {flood}"),
                }
                // The next request on the same middleware goes through.
                let r = send(None).await.unwrap();
                assert_eq!(r.status, 200, "{k} round {round} after {flood}");
                assert_eq!(r.headers.get_str("seen-x-ok"), Some("1"), "{k}");
                assert_eq!(r.headers.get_str("seen-x-flooded"), Some("0"), "{k}");
            }
        }
    });
}
parity!(a_flooding_guest_is_refused_and_the_next_request_works);
