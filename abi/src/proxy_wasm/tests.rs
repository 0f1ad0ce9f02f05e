//! Host-function tests on both engines, driven from outside the guest.
//!
//! The guest is a generated forwarder: for every proxy-wasm import of a version
//! it exports `call_<name>` with the same signature, plus a bump allocator
//! (`malloc`) that can be told to fail. Every case runs on wasmtime and wasmer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use proptest::prelude::*;
use wasmgate_engines::{
    new_engine, CompiledModule, EngineKind, EngineOptions, Instance, Limits, Trap, Val, ValType,
};

use super::abi::{buffer, map, status, AbiVersion, MODULE};
use super::pairs::HeaderPairs;
use super::serial::{deserialize, serialize};
use super::shared::VmShared;
use super::state::{CallResponse, MiddlewareShared, RequestInfo, Stream, VmState};
use super::ServiceDirectory;
use crate::error::ProxyError;
use crate::middleware::Endpoint;
use crate::model::{Request, Response};
use crate::test_util::parity;

const HEAP: i32 = 32768;

fn forwarder_wat(version: AbiVersion) -> String {
    let mut imports = String::new();
    let mut exports = String::new();
    for f in super::host_functions("probe", version)
        .0
        .iter()
        .filter(|f| f.module == MODULE)
    {
        let params: Vec<_> = f.ty.params.iter().map(|t| t.to_string()).collect();
        let sig = format!("(param {}) (result i32)", params.join(" "));
        imports += &format!("(import \"env\" \"{n}\" (func ${n} {sig}))\n", n = f.name);
        let gets: String = (0..params.len())
            .map(|i| format!("local.get {i} "))
            .collect();
        exports += &format!(
            "(func (export \"call_{n}\") {sig} {gets} call ${n})\n",
            n = f.name
        );
    }
    format!(
        r#"(module
{imports}
(import "wasi_snapshot_preview1" "environ_sizes_get" (func $env_sizes (param i32 i32) (result i32)))
(import "wasi_unstable" "environ_get" (func $env_get (param i32 i32) (result i32)))
(func (export "call_environ_sizes_get") (param i32 i32) (result i32) local.get 0 local.get 1 call $env_sizes)
(func (export "call_environ_get") (param i32 i32) (result i32) local.get 0 local.get 1 call $env_get)
(memory (export "memory") 2)
(global $heap (mut i32) (i32.const {HEAP}))
(global $mode (mut i32) (i32.const 0))
(func (export "set_alloc_mode") (param i32) local.get 0 global.set $mode)
(func (export "malloc") (param i32) (result i32) (local i32)
  global.get $mode i32.const 1 i32.eq if i32.const 0 return end
  global.get $mode i32.const 2 i32.eq if unreachable end
  global.get $heap local.set 1
  global.get $heap local.get 0 i32.add global.set $heap
  local.get 1)
{exports})"#
    )
}

fn module(engine: EngineKind, version: AbiVersion) -> Arc<dyn CompiledModule> {
    type Key = (EngineKind, AbiVersion);
    static MODULES: OnceLock<Mutex<HashMap<Key, Arc<dyn CompiledModule>>>> = OnceLock::new();
    // A compile that panicked for one engine must not fail the other engine's tests.
    let mut m = MODULES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    m.entry((engine, version))
        .or_insert_with(|| {
            let e = new_engine(engine, EngineOptions::default()).unwrap();
            e.compile(
                forwarder_wat(version).as_bytes(),
                Arc::new(super::host_functions("probe", version)),
                Limits::default(),
            )
            .unwrap()
        })
        .clone()
}

struct Echo;

#[async_trait::async_trait]
impl Endpoint for Echo {
    async fn call(&self, _req: Request) -> Result<Response, ProxyError> {
        Ok(Response::new(http::StatusCode::OK))
    }
}

struct OneService;

impl ServiceDirectory for OneService {
    fn service(&self, name: &str) -> Option<Arc<dyn Endpoint>> {
        (name == "auth").then(|| Arc::new(Echo) as Arc<dyn Endpoint>)
    }
}

fn shared(version: AbiVersion, vm: Arc<VmShared>) -> Arc<MiddlewareShared> {
    Arc::new(MiddlewareShared {
        plugin: "probe".into(),
        middleware: "probe-mw".into(),
        root_id: "my_root".into(),
        vm_config: Bytes::from_static(b"vm-config"),
        plugin_config: Bytes::from_static(b"plugin-config"),
        vm,
        services: Arc::new(OneService),
        version,
        log_level: 0,
        max_body_bytes: 1 << 20,
        max_host_bytes: crate::guest::DEFAULT_MAX_HOST_BYTES,
        env: vec!["A=1".into(), "GREETING=hello world".into()],
        writes_stdio: true,
        stats: Arc::new(crate::guest::GuestStats::new(&[], false)),
    })
}

struct Probe {
    inst: Box<dyn Instance>,
    next: u32,
}

fn request_headers() -> HeaderPairs {
    let mut h = HeaderPairs::new();
    for (n, v) in [
        (":authority", "example.com"),
        (":path", "/a/b?x=1"),
        (":method", "GET"),
        (":scheme", "http"),
        ("accept", "text/plain"),
        ("x-multi", "one"),
        ("x-multi", "two"),
    ] {
        h.append(n, HeaderValue::from_static(v));
    }
    h
}

impl Probe {
    fn new(engine: EngineKind, version: AbiVersion) -> Probe {
        Probe::with_vm(engine, version, VmShared::new("vm1"))
    }

    fn with_vm(engine: EngineKind, version: AbiVersion, vm: Arc<VmShared>) -> Probe {
        let inst = module(engine, version)
            .instantiate(Box::new(VmState::new(shared(version, vm))))
            .unwrap();
        Probe { inst, next: 1024 }
    }

    fn state(&mut self) -> &mut VmState {
        self.inst.data().downcast_mut().unwrap()
    }

    /// Puts a stream in flight (request phase) and makes it the effective context.
    fn with_stream(mut self) -> Probe {
        let info = RequestInfo {
            version: http::Version::HTTP_11,
            source: "10.0.0.1:5555".parse().unwrap(),
            destination: "10.0.0.2:80".parse().unwrap(),
            started: Instant::now(),
            request_size: 0,
            response_code: None,
            response_size: 0,
            connection_id: 7,
            request_id: None,
            tls: None,
        };
        let st = self.state();
        st.streams
            .insert(2, Stream::new(2, request_headers(), info));
        st.effective_ctx = 2;
        self
    }

    fn stream(&mut self) -> &mut Stream {
        self.state().streams.get_mut(&2).unwrap()
    }

    /// Copies bytes into guest memory below the heap; returns (ptr, len).
    fn put(&mut self, bytes: &[u8]) -> (i32, i32) {
        let at = self.next;
        self.inst.write(at, bytes).unwrap();
        self.next += bytes.len() as u32 + 8;
        assert!(self.next < HEAP as u32);
        (at as i32, bytes.len() as i32)
    }

    fn call(&mut self, name: &str, args: &[Val]) -> Result<i32, Trap> {
        let mut out = [Val::I32(0)];
        self.inst
            .call_by_name(&format!("call_{name}"), args, &mut out)?;
        Ok(out[0].i32().unwrap())
    }

    fn ok(&mut self, name: &str, args: &[i32]) -> i32 {
        let a: Vec<Val> = args.iter().map(|v| Val::I32(*v)).collect();
        self.call(name, &a).unwrap()
    }

    fn alloc_mode(&mut self, mode: i32) {
        self.inst
            .call_by_name("set_alloc_mode", &[Val::I32(mode)], &mut [])
            .unwrap();
    }

    fn u32_at(&self, at: i32) -> u32 {
        let b = self.inst.read(at as u32, 4).unwrap();
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Reads the (ptr, size) out-params at 0 and 4.
    fn out(&self) -> Vec<u8> {
        let (p, n) = (self.u32_at(0), self.u32_at(4));
        if n == 0 {
            assert_eq!(p, 0, "empty results are ptr 0 / size 0");
            return Vec::new();
        }
        self.inst.read(p, n).unwrap()
    }
}

const RET: i32 = 0;
const RET_SIZE: i32 = 4;
const OUT: i32 = 8;
const BAD: i32 = 0x7fff_fff0;

fn versions() -> [AbiVersion; 3] {
    AbiVersion::ALL
}

#[test]
fn import_sets_follow_the_version() {
    let names = |v| {
        super::host_functions("p", v)
            .0
            .iter()
            .filter(|f| f.module == MODULE)
            .map(|f| f.name.clone())
            .collect::<Vec<_>>()
    };
    let v1 = names(AbiVersion::V0_1_0);
    let v20 = names(AbiVersion::V0_2_0);
    let v21 = names(AbiVersion::V0_2_1);
    for f in [
        "proxy_get_configuration",
        "proxy_continue_request",
        "proxy_continue_response",
        "proxy_clear_route_cache",
    ] {
        assert!(v1.iter().any(|n| n == f), "{f} in 0.1.0");
        assert!(!v20.iter().any(|n| n == f), "{f} not in 0.2.0");
    }
    for f in [
        "proxy_continue_stream",
        "proxy_close_stream",
        "proxy_call_foreign_function",
    ] {
        assert!(!v1.iter().any(|n| n == f));
        assert!(v20.iter().any(|n| n == f) && v21.iter().any(|n| n == f));
    }
    assert!(!v20.iter().any(|n| n == "proxy_get_log_level"));
    assert!(v21.iter().any(|n| n == "proxy_get_log_level"));
    // WASI under both module names.
    let t = super::host_functions("p", AbiVersion::V0_2_1);
    assert!(t.get("wasi_snapshot_preview1", "fd_write").is_some());
    assert!(t.get("wasi_unstable", "fd_write").is_some());
}

fn log_time_and_levels(e: EngineKind) {
    for v in versions() {
        let mut p = Probe::new(e, v);
        let (m, n) = p.put(b"hello");
        assert_eq!(p.ok("proxy_log", &[2, m, n]), status::OK);
        assert_eq!(p.ok("proxy_log", &[6, m, n]), status::BAD_ARGUMENT);
        assert_eq!(p.ok("proxy_log", &[-1, m, n]), status::BAD_ARGUMENT);
        assert_eq!(
            p.ok("proxy_log", &[2, BAD, 100]),
            status::INVALID_MEMORY_ACCESS
        );
        assert_eq!(
            p.ok("proxy_get_current_time_nanoseconds", &[OUT]),
            status::OK
        );
        let b = p.inst.read(OUT as u32, 8).unwrap();
        let t = u64::from_le_bytes(b.try_into().unwrap());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        assert!(t <= now && now - t < 10_000_000_000, "{e} {v}");
        assert_eq!(
            p.ok("proxy_get_current_time_nanoseconds", &[BAD]),
            status::INVALID_MEMORY_ACCESS
        );
        if v == AbiVersion::V0_2_1 {
            assert_eq!(p.ok("proxy_get_log_level", &[OUT]), status::OK);
            assert_eq!(p.u32_at(OUT), 0);
            assert_eq!(
                p.ok("proxy_get_log_level", &[BAD]),
                status::INVALID_MEMORY_ACCESS
            );
        }
        assert_eq!(
            p.ok("proxy_set_tick_period_milliseconds", &[25]),
            status::OK
        );
        assert_eq!(
            p.state().tick_period,
            Some(std::time::Duration::from_millis(25))
        );
        assert_eq!(p.ok("proxy_set_tick_period_milliseconds", &[0]), status::OK);
        assert_eq!(p.state().tick_period, None);
    }
}
parity!(log_time_and_levels);

fn wasi_environment_is_the_configured_one(e: EngineKind) {
    let mut p = Probe::new(e, AbiVersion::V0_2_0);
    assert_eq!(p.ok("environ_sizes_get", &[OUT, OUT + 4]), 0);
    assert_eq!((p.u32_at(OUT), p.u32_at(OUT + 4)), (2, 4 + 21));
    assert_eq!(p.ok("environ_get", &[100, 200]), 0);
    assert_eq!((p.u32_at(100), p.u32_at(104)), (200, 204));
    assert_eq!(
        p.inst.read(200, 25).unwrap(),
        b"A=1\0GREETING=hello world\0"
    );
    assert_eq!(p.ok("environ_get", &[BAD, 200]), 21);
    assert_eq!(p.ok("environ_sizes_get", &[BAD, 0]), 21);
}
parity!(wasi_environment_is_the_configured_one);

fn header_maps(e: EngineKind) {
    for v in versions() {
        let mut p = Probe::new(e, v).with_stream();
        // Pairs in the spec's serialization, in order, with pseudo-headers.
        assert_eq!(
            p.ok(
                "proxy_get_header_map_pairs",
                &[map::HTTP_REQUEST_HEADERS, RET, RET_SIZE]
            ),
            status::OK
        );
        let pairs = deserialize(&p.out()).unwrap();
        assert_eq!(pairs.len(), 7);
        assert_eq!(pairs[1], (b":path".to_vec(), b"/a/b?x=1".to_vec()));
        assert_eq!(pairs[6], (b"x-multi".to_vec(), b"two".to_vec()));
        // Empty map: ptr 0 / size 0.
        assert_eq!(
            p.ok(
                "proxy_get_header_map_pairs",
                &[map::HTTP_REQUEST_TRAILERS, RET, RET_SIZE]
            ),
            status::OK
        );
        assert_eq!(p.out(), b"");
        // Absent map (no response yet): pairs empty, value/size/setters BAD_ARGUMENT.
        assert_eq!(
            p.ok(
                "proxy_get_header_map_pairs",
                &[map::HTTP_RESPONSE_HEADERS, RET, RET_SIZE]
            ),
            status::OK
        );
        assert_eq!(p.out(), b"");
        let (k, kn) = p.put(b"x-multi");
        assert_eq!(
            p.ok(
                "proxy_get_header_map_value",
                &[map::HTTP_RESPONSE_HEADERS, k, kn, RET, RET_SIZE]
            ),
            status::BAD_ARGUMENT
        );
        assert_eq!(
            p.ok(
                "proxy_get_header_map_size",
                &[map::HTTP_RESPONSE_HEADERS, OUT]
            ),
            status::BAD_ARGUMENT
        );
        assert_eq!(
            p.ok("proxy_get_header_map_pairs", &[99, RET, RET_SIZE]),
            status::BAD_ARGUMENT
        );
        assert_eq!(
            p.ok("proxy_get_header_map_pairs", &[-1, RET, RET_SIZE]),
            status::BAD_ARGUMENT
        );
        // First value of a repeated header.
        assert_eq!(
            p.ok(
                "proxy_get_header_map_value",
                &[map::HTTP_REQUEST_HEADERS, k, kn, RET, RET_SIZE]
            ),
            status::OK
        );
        assert_eq!(p.out(), b"one");
        // Missing key: NOT_FOUND from 0.2.0, OK + empty in 0.1.0.
        let (m, mn) = p.put(b"x-missing");
        let s = p.ok(
            "proxy_get_header_map_value",
            &[map::HTTP_REQUEST_HEADERS, m, mn, RET, RET_SIZE],
        );
        if v == AbiVersion::V0_1_0 {
            assert_eq!(s, status::OK);
            assert_eq!(p.out(), b"");
        } else {
            assert_eq!(s, status::NOT_FOUND);
        }
        // Add, replace, remove, size.
        let (val, vn) = p.put(b"three");
        assert_eq!(
            p.ok(
                "proxy_add_header_map_value",
                &[map::HTTP_REQUEST_HEADERS, k, kn, val, vn]
            ),
            status::OK
        );
        assert_eq!(p.stream().request_headers.get_all("x-multi").count(), 3);
        assert_eq!(
            p.ok(
                "proxy_replace_header_map_value",
                &[map::HTTP_REQUEST_HEADERS, k, kn, val, vn]
            ),
            status::OK
        );
        assert_eq!(
            p.stream()
                .request_headers
                .get_all("x-multi")
                .collect::<Vec<_>>(),
            vec![&b"three"[..]]
        );
        assert_eq!(
            p.ok(
                "proxy_replace_header_map_value",
                &[map::HTTP_REQUEST_HEADERS, m, mn, val, vn]
            ),
            status::OK
        );
        assert_eq!(
            p.stream().request_headers.get("x-missing"),
            Some(&b"three"[..])
        );
        assert_eq!(
            p.ok(
                "proxy_remove_header_map_value",
                &[map::HTTP_REQUEST_HEADERS, m, mn]
            ),
            status::OK
        );
        assert_eq!(
            p.ok(
                "proxy_remove_header_map_value",
                &[map::HTTP_REQUEST_HEADERS, m, mn]
            ),
            status::OK
        );
        assert!(p.stream().request_headers.get("x-missing").is_none());
        assert_eq!(
            p.ok(
                "proxy_get_header_map_size",
                &[map::HTTP_REQUEST_HEADERS, OUT]
            ),
            status::OK
        );
        let expect = serialize(
            p.stream()
                .request_headers
                .clone()
                .iter()
                .map(|(k, v)| (k.as_bytes(), v)),
        )
        .len();
        assert_eq!(p.u32_at(OUT) as usize, expect);
        // Values with CR, LF, NUL or another control byte, and bad names, never reach the map.
        for bad in [&b"a\r\nb"[..], b"a\0b", b"a\nb", b"a\x01b", b"a\x7fb"] {
            let (bv, bn) = p.put(bad);
            assert_eq!(
                p.ok(
                    "proxy_add_header_map_value",
                    &[map::HTTP_REQUEST_HEADERS, k, kn, bv, bn]
                ),
                status::BAD_ARGUMENT
            );
        }
        let (bk, bkn) = p.put(b"bad name");
        assert_eq!(
            p.ok(
                "proxy_add_header_map_value",
                &[map::HTTP_REQUEST_HEADERS, bk, bkn, val, vn]
            ),
            status::BAD_ARGUMENT
        );
        // Set pairs replaces the map; malformed pairs are BAD_ARGUMENT.
        let ser = serialize([(&b":path"[..], &b"/new"[..]), (&b"x-a"[..], &b""[..])]);
        let (sp, sn) = p.put(&ser);
        assert_eq!(
            p.ok(
                "proxy_set_header_map_pairs",
                &[map::HTTP_REQUEST_HEADERS, sp, sn]
            ),
            status::OK
        );
        assert_eq!(p.stream().request_headers.len(), 2);
        assert_eq!(
            p.ok(
                "proxy_set_header_map_pairs",
                &[map::HTTP_REQUEST_HEADERS, sp, sn - 1]
            ),
            status::BAD_ARGUMENT
        );
        let bad = serialize([(&b"x-a"[..], &b"v\r\n"[..])]);
        let (bp, bn) = p.put(&bad);
        assert_eq!(
            p.ok(
                "proxy_set_header_map_pairs",
                &[map::HTTP_REQUEST_HEADERS, bp, bn]
            ),
            status::BAD_ARGUMENT
        );
        // Bad pointers: statuses.
        assert_eq!(
            p.ok(
                "proxy_get_header_map_pairs",
                &[map::HTTP_REQUEST_HEADERS, BAD, RET_SIZE]
            ),
            status::INVALID_MEMORY_ACCESS
        );
        assert_eq!(
            p.ok(
                "proxy_get_header_map_value",
                &[map::HTTP_REQUEST_HEADERS, BAD, 10, RET, RET_SIZE]
            ),
            status::INVALID_MEMORY_ACCESS
        );
        assert_eq!(
            p.ok(
                "proxy_set_header_map_pairs",
                &[map::HTTP_REQUEST_HEADERS, BAD, 10]
            ),
            status::INVALID_MEMORY_ACCESS
        );
        // Writes to the request after it went on are refused.
        p.stream().phase = super::state::Phase::Response;
        assert_eq!(
            p.ok(
                "proxy_add_header_map_value",
                &[map::HTTP_REQUEST_HEADERS, k, kn, val, vn]
            ),
            status::BAD_ARGUMENT
        );
        p.stream().response_headers = Some(HeaderPairs::new());
        assert_eq!(
            p.ok(
                "proxy_add_header_map_value",
                &[map::HTTP_RESPONSE_HEADERS, k, kn, val, vn]
            ),
            status::OK
        );
        assert_eq!(
            p.ok(
                "proxy_add_header_map_value",
                &[map::HTTP_RESPONSE_TRAILERS, k, kn, val, vn]
            ),
            status::OK
        );
        // Without the stream as effective context, stream maps are absent.
        p.state().effective_ctx = 1;
        assert_eq!(
            p.ok(
                "proxy_get_header_map_size",
                &[map::HTTP_REQUEST_HEADERS, OUT]
            ),
            status::BAD_ARGUMENT
        );
        assert_eq!(p.ok("proxy_set_effective_context", &[2]), status::OK);
        assert_eq!(
            p.ok(
                "proxy_get_header_map_size",
                &[map::HTTP_REQUEST_HEADERS, OUT]
            ),
            status::OK
        );
        assert_eq!(
            p.ok("proxy_set_effective_context", &[3]),
            status::BAD_ARGUMENT
        );
        // Call response maps: read-only, only while delivered.
        assert_eq!(
            p.ok(
                "proxy_get_header_map_size",
                &[map::HTTP_CALL_RESPONSE_HEADERS, OUT]
            ),
            status::BAD_ARGUMENT
        );
        let mut h = HeaderPairs::new();
        h.append(":status", HeaderValue::from_static("200"));
        p.state().call_response = Some(CallResponse {
            headers: h,
            body: Bytes::from_static(b"xyz"),
            trailers: HeaderPairs::new(),
        });
        let (st, stn) = p.put(b":status");
        assert_eq!(
            p.ok(
                "proxy_get_header_map_value",
                &[map::HTTP_CALL_RESPONSE_HEADERS, st, stn, RET, RET_SIZE]
            ),
            status::OK
        );
        assert_eq!(p.out(), b"200");
        assert_eq!(
            p.ok(
                "proxy_add_header_map_value",
                &[map::HTTP_CALL_RESPONSE_HEADERS, k, kn, val, vn]
            ),
            status::BAD_ARGUMENT
        );
        assert_eq!(
            p.ok(
                "proxy_get_buffer_bytes",
                &[buffer::HTTP_CALL_RESPONSE_BODY, 0, 100, RET, RET_SIZE]
            ),
            status::OK
        );
        assert_eq!(p.out(), b"xyz");
    }
}
parity!(header_maps);

fn a_header_flood_is_refused_at_the_map_limits(e: EngineKind) {
    let mut p = Probe::new(e, AbiVersion::V0_2_1).with_stream();
    let (k, kn) = p.put(b"x-flood");
    let (v, vn) = p.put(b"1");
    let room = crate::headers::GUEST_MAX_FIELD_LINES - p.stream().request_headers.len();
    for _ in 0..room {
        assert_eq!(
            p.ok(
                "proxy_add_header_map_value",
                &[map::HTTP_REQUEST_HEADERS, k, kn, v, vn]
            ),
            status::OK
        );
    }
    for f in [
        "proxy_add_header_map_value",
        "proxy_replace_header_map_value",
    ] {
        assert_eq!(
            p.ok(f, &[map::HTTP_REQUEST_HEADERS, k, kn, v, vn]),
            status::BAD_ARGUMENT,
            "{e} {f}"
        );
    }
    assert_eq!(
        p.stream().request_headers.len(),
        crate::headers::GUEST_MAX_FIELD_LINES
    );
}
parity!(a_header_flood_is_refused_at_the_map_limits);

fn buffers(e: EngineKind) {
    let mut p = Probe::new(e, AbiVersion::V0_2_1).with_stream();
    assert_eq!(
        p.ok(
            "proxy_get_buffer_bytes",
            &[buffer::HTTP_REQUEST_BODY, 0, 10, RET, RET_SIZE]
        ),
        status::NOT_FOUND
    );
    assert_eq!(
        p.ok(
            "proxy_get_buffer_status",
            &[buffer::HTTP_REQUEST_BODY, OUT, OUT + 4]
        ),
        status::NOT_FOUND
    );
    p.stream().request_body = Some(BytesMut::from(&b"hello world"[..]));
    assert_eq!(
        p.ok(
            "proxy_get_buffer_bytes",
            &[buffer::HTTP_REQUEST_BODY, 6, 100, RET, RET_SIZE]
        ),
        status::OK
    );
    assert_eq!(p.out(), b"world");
    assert_eq!(
        p.ok(
            "proxy_get_buffer_bytes",
            &[buffer::HTTP_REQUEST_BODY, 0, 5, RET, RET_SIZE]
        ),
        status::OK
    );
    assert_eq!(p.out(), b"hello");
    assert_eq!(
        p.ok(
            "proxy_get_buffer_bytes",
            &[buffer::HTTP_REQUEST_BODY, 11, 5, RET, RET_SIZE]
        ),
        status::OK
    );
    assert_eq!(p.out(), b"");
    assert_eq!(
        p.ok(
            "proxy_get_buffer_bytes",
            &[buffer::HTTP_REQUEST_BODY, 1, -1, RET, RET_SIZE]
        ),
        status::BAD_ARGUMENT
    );
    assert_eq!(
        p.ok(
            "proxy_get_buffer_status",
            &[buffer::HTTP_REQUEST_BODY, OUT, OUT + 4]
        ),
        status::OK
    );
    assert_eq!((p.u32_at(OUT), p.u32_at(OUT + 4)), (11, 0));
    let (x, xn) = p.put(b">>");
    assert_eq!(
        p.ok(
            "proxy_set_buffer_bytes",
            &[buffer::HTTP_REQUEST_BODY, 0, 0, x, xn]
        ),
        status::OK
    );
    assert_eq!(
        &p.stream().request_body.as_ref().unwrap()[..],
        b">>hello world"
    );
    assert_eq!(
        p.ok(
            "proxy_set_buffer_bytes",
            &[buffer::HTTP_REQUEST_BODY, -1, 0, x, xn]
        ),
        status::OK
    );
    assert_eq!(
        &p.stream().request_body.as_ref().unwrap()[..],
        b">>hello world>>"
    );
    assert_eq!(
        p.ok(
            "proxy_set_buffer_bytes",
            &[buffer::HTTP_REQUEST_BODY, 3, 2, x, xn]
        ),
        status::BAD_ARGUMENT
    );
    assert_eq!(
        p.ok(
            "proxy_set_buffer_bytes",
            &[buffer::HTTP_REQUEST_BODY, 0, 15, x, xn]
        ),
        status::OK
    );
    assert_eq!(&p.stream().request_body.as_ref().unwrap()[..], b">>");
    // Start 0 with a size inside the buffer: drain that many bytes, then prepend.
    p.stream().request_body = Some(BytesMut::from(&b"0123456789"[..]));
    assert_eq!(
        p.ok(
            "proxy_set_buffer_bytes",
            &[buffer::HTTP_REQUEST_BODY, 0, 4, x, xn]
        ),
        status::OK
    );
    assert_eq!(&p.stream().request_body.as_ref().unwrap()[..], b">>456789");
    // No body grows past maxBodyBytes (1 MiB here): the edit is refused, the body kept.
    let limit = 1 << 20;
    p.stream().request_body = Some(BytesMut::from(&vec![b'a'; limit - 1][..]));
    assert_eq!(
        p.ok(
            "proxy_set_buffer_bytes",
            &[buffer::HTTP_REQUEST_BODY, -1, 0, x, xn]
        ),
        status::BAD_ARGUMENT
    );
    assert_eq!(p.stream().request_body.as_ref().unwrap().len(), limit - 1);
    assert_eq!(
        p.ok(
            "proxy_set_buffer_bytes",
            &[buffer::HTTP_REQUEST_BODY, 0, 1, x, xn]
        ),
        status::OK
    );
    assert_eq!(p.stream().request_body.as_ref().unwrap().len(), limit);
    assert_eq!(
        p.ok(
            "proxy_set_buffer_bytes",
            &[buffer::HTTP_REQUEST_BODY, 0, -1, x, xn]
        ),
        status::OK
    );
    assert_eq!(&p.stream().request_body.as_ref().unwrap()[..], b">>");
    assert_eq!(
        p.ok(
            "proxy_set_buffer_bytes",
            &[buffer::HTTP_REQUEST_BODY, 0, 2, BAD, 4]
        ),
        status::INVALID_MEMORY_ACCESS
    );
    // Configurations: readable, read-only.
    assert_eq!(
        p.ok(
            "proxy_get_buffer_bytes",
            &[buffer::VM_CONFIGURATION, 0, 100, RET, RET_SIZE]
        ),
        status::OK
    );
    assert_eq!(p.out(), b"vm-config");
    assert_eq!(
        p.ok(
            "proxy_get_buffer_bytes",
            &[buffer::PLUGIN_CONFIGURATION, 0, 100, RET, RET_SIZE]
        ),
        status::OK
    );
    assert_eq!(p.out(), b"plugin-config");
    for ro in [
        buffer::VM_CONFIGURATION,
        buffer::PLUGIN_CONFIGURATION,
        buffer::HTTP_CALL_RESPONSE_BODY,
    ] {
        assert_eq!(
            p.ok("proxy_set_buffer_bytes", &[ro, 0, 0, x, xn]),
            status::BAD_ARGUMENT
        );
    }
    for absent in [
        buffer::DOWNSTREAM_DATA,
        buffer::UPSTREAM_DATA,
        buffer::GRPC_CALL_MESSAGE,
        buffer::FOREIGN_FUNCTION_ARGUMENTS,
        buffer::HTTP_RESPONSE_BODY,
    ] {
        assert_eq!(
            p.ok("proxy_get_buffer_bytes", &[absent, 0, 1, RET, RET_SIZE]),
            status::NOT_FOUND
        );
    }
    assert_eq!(
        p.ok("proxy_get_buffer_bytes", &[9, 0, 1, RET, RET_SIZE]),
        status::BAD_ARGUMENT
    );
    assert_eq!(
        p.ok("proxy_set_buffer_bytes", &[-3, 0, 1, x, xn]),
        status::BAD_ARGUMENT
    );
    // A failing allocator is INVALID_MEMORY_ACCESS; a trapping one traps this instance only.
    p.alloc_mode(1);
    assert_eq!(
        p.ok(
            "proxy_get_buffer_bytes",
            &[buffer::VM_CONFIGURATION, 0, 100, RET, RET_SIZE]
        ),
        status::INVALID_MEMORY_ACCESS
    );
    p.alloc_mode(2);
    assert!(p
        .call(
            "proxy_get_buffer_bytes",
            &[
                Val::I32(buffer::VM_CONFIGURATION),
                Val::I32(0),
                Val::I32(100),
                Val::I32(RET),
                Val::I32(RET_SIZE)
            ]
        )
        .is_err());
    assert!(p.inst.is_poisoned());
    let mut fresh = Probe::new(e, AbiVersion::V0_2_1);
    assert_eq!(
        fresh.ok(
            "proxy_get_buffer_bytes",
            &[buffer::VM_CONFIGURATION, 0, 100, RET, RET_SIZE]
        ),
        status::OK
    );
}
parity!(buffers);

fn configuration_in_0_1_0(e: EngineKind) {
    let mut p = Probe::new(e, AbiVersion::V0_1_0);
    p.state().callback = super::state::Callback::VmStart;
    assert_eq!(
        p.ok("proxy_get_configuration", &[RET, RET_SIZE]),
        status::OK
    );
    assert_eq!(p.out(), b"vm-config");
    p.state().callback = super::state::Callback::Configure;
    assert_eq!(
        p.ok("proxy_get_configuration", &[RET, RET_SIZE]),
        status::OK
    );
    assert_eq!(p.out(), b"plugin-config");
    let mut p = p.with_stream();
    assert_eq!(p.ok("proxy_continue_request", &[]), status::OK);
    assert!(p.stream().resume_request);
    assert_eq!(p.ok("proxy_continue_response", &[]), status::OK);
    assert!(p.stream().resume_response);
    assert_eq!(p.ok("proxy_clear_route_cache", &[]), status::OK);
}
parity!(configuration_in_0_1_0);

fn properties(e: EngineKind) {
    let mut p = Probe::new(e, AbiVersion::V0_2_1);
    let get = |p: &mut Probe, path: &[u8]| {
        let (a, n) = p.put(path);
        let s = p.ok("proxy_get_property", &[a, n, RET, RET_SIZE]);
        (s == status::OK).then(|| p.out())
    };
    assert_eq!(get(&mut p, b"plugin_name").unwrap(), b"probe");
    assert_eq!(get(&mut p, b"plugin_root_id").unwrap(), b"my_root");
    assert_eq!(get(&mut p, b"plugin_vm_id").unwrap(), b"vm1");
    // No stream yet: request properties are missing.
    assert_eq!(get(&mut p, b"request\0path"), None);
    let mut p = p.with_stream();
    assert_eq!(get(&mut p, b"request\0path").unwrap(), b"/a/b?x=1");
    assert_eq!(get(&mut p, b"request\0path\0").unwrap(), b"/a/b?x=1");
    assert_eq!(get(&mut p, b"request\0url_path").unwrap(), b"/a/b");
    assert_eq!(get(&mut p, b"request\0method").unwrap(), b"GET");
    assert_eq!(get(&mut p, b"request\0host").unwrap(), b"example.com");
    assert_eq!(get(&mut p, b"request\0protocol").unwrap(), b"HTTP/1.1");
    assert_eq!(
        get(&mut p, b"request\0headers\0accept").unwrap(),
        b"text/plain"
    );
    assert_eq!(get(&mut p, b"source\0address").unwrap(), b"10.0.0.1:5555");
    assert_eq!(get(&mut p, b"source\0port").unwrap(), 5555i64.to_le_bytes());
    assert_eq!(
        get(&mut p, b"destination\0port").unwrap(),
        80i64.to_le_bytes()
    );
    assert_eq!(get(&mut p, b"connection\0id").unwrap(), 7u64.to_le_bytes());
    assert_eq!(get(&mut p, b"response\0code"), None);
    assert_eq!(get(&mut p, b"request\0nope"), None);
    assert_eq!(get(&mut p, b"request\0method\0extra"), None);
    let headers = get(&mut p, b"request\0headers").unwrap();
    assert_eq!(deserialize(&headers).unwrap().len(), 7);
    // set/get round trip.
    let (k, kn) = p.put(b"my\0prop\0");
    let (v, vn) = p.put(b"\x00\x01binary");
    assert_eq!(p.ok("proxy_set_property", &[k, kn, v, vn]), status::OK);
    assert_eq!(get(&mut p, b"my\0prop").unwrap(), b"\x00\x01binary");
    assert_eq!(
        p.ok("proxy_set_property", &[k, 0, v, vn]),
        status::BAD_ARGUMENT
    );
    assert_eq!(
        p.ok("proxy_set_property", &[BAD, 4, v, vn]),
        status::INVALID_MEMORY_ACCESS
    );
    assert_eq!(
        p.ok("proxy_get_property", &[k, kn, BAD, RET_SIZE]),
        status::INVALID_MEMORY_ACCESS
    );
}
parity!(properties);

fn shared_data_queues_and_metrics(e: EngineKind) {
    let vm = VmShared::new("vm1");
    let mut a = Probe::with_vm(e, AbiVersion::V0_2_1, vm.clone());
    let mut b = Probe::with_vm(e, AbiVersion::V0_2_1, vm.clone());
    let (k, kn) = a.put(b"counter");
    let (v1, v1n) = a.put(b"1");
    assert_eq!(
        a.ok("proxy_get_shared_data", &[k, kn, RET, RET_SIZE, OUT]),
        status::NOT_FOUND
    );
    assert_eq!(
        a.ok("proxy_set_shared_data", &[k, kn, v1, v1n, 0]),
        status::OK
    );
    let (k2, k2n) = b.put(b"counter");
    assert_eq!(
        b.ok("proxy_get_shared_data", &[k2, k2n, RET, RET_SIZE, OUT]),
        status::OK
    );
    assert_eq!(b.out(), b"1");
    let cas = b.u32_at(OUT);
    assert_ne!(cas, 0);
    let (v2, v2n) = b.put(b"2");
    assert_eq!(
        b.ok("proxy_set_shared_data", &[k2, k2n, v2, v2n, cas as i32]),
        status::OK
    );
    // a's cas is stale now.
    assert_eq!(
        a.ok("proxy_set_shared_data", &[k, kn, v1, v1n, cas as i32]),
        status::CAS_MISMATCH
    );
    assert_eq!(
        a.ok("proxy_set_shared_data", &[BAD, 4, v1, v1n, 0]),
        status::INVALID_MEMORY_ACCESS
    );

    // Queues.
    let (q, qn) = a.put(b"jobs");
    assert_eq!(
        a.ok("proxy_register_shared_queue", &[q, qn, OUT]),
        status::OK
    );
    let id = a.u32_at(OUT) as i32;
    assert!(id > 0);
    let (vmn, vmnn) = b.put(b"vm1");
    let (q2, q2n) = b.put(b"jobs");
    assert_eq!(
        b.ok("proxy_resolve_shared_queue", &[vmn, vmnn, q2, q2n, OUT]),
        status::OK
    );
    assert_eq!(b.u32_at(OUT) as i32, id);
    assert_eq!(
        b.ok("proxy_resolve_shared_queue", &[vmn, 0, q2, q2n, OUT]),
        status::OK
    );
    let (other, on) = b.put(b"nope");
    assert_eq!(
        b.ok("proxy_resolve_shared_queue", &[vmn, vmnn, other, on, OUT]),
        status::NOT_FOUND
    );
    assert_eq!(
        b.ok("proxy_dequeue_shared_queue", &[id, RET, RET_SIZE]),
        status::EMPTY
    );
    let (item, itn) = b.put(b"item-1");
    assert_eq!(
        b.ok("proxy_enqueue_shared_queue", &[id, item, itn]),
        status::OK
    );
    assert_eq!(
        b.ok("proxy_enqueue_shared_queue", &[id + 5, item, itn]),
        status::NOT_FOUND
    );
    // The registering middleware hears of it.
    let waiter = a.state().waiter.clone();
    assert_eq!(*waiter.ready.lock().unwrap(), vec![id as u32]);
    assert_eq!(
        a.ok("proxy_dequeue_shared_queue", &[id, RET, RET_SIZE]),
        status::OK
    );
    assert_eq!(a.out(), b"item-1");
    assert_eq!(
        a.ok("proxy_dequeue_shared_queue", &[0, RET, RET_SIZE]),
        status::NOT_FOUND
    );

    // Metrics.
    let (m, mn) = a.put(b"requests");
    assert_eq!(
        a.ok("proxy_define_metric", &[3, m, mn, OUT]),
        status::BAD_ARGUMENT
    );
    assert_eq!(a.ok("proxy_define_metric", &[0, m, mn, OUT]), status::OK);
    let c = a.u32_at(OUT) as i32;
    assert_eq!(
        a.call("proxy_increment_metric", &[Val::I32(c), Val::I64(5)])
            .unwrap(),
        status::OK
    );
    assert_eq!(
        a.call("proxy_increment_metric", &[Val::I32(c), Val::I64(-1)])
            .unwrap(),
        status::BAD_ARGUMENT
    );
    assert_eq!(
        a.call("proxy_record_metric", &[Val::I32(c + 9), Val::I64(1)])
            .unwrap(),
        status::NOT_FOUND
    );
    assert_eq!(a.ok("proxy_get_metric", &[c, OUT]), status::OK);
    assert_eq!(a.inst.read(OUT as u32, 8).unwrap(), 5u64.to_le_bytes());
    let (g, gn) = a.put(b"temp");
    assert_eq!(a.ok("proxy_define_metric", &[1, g, gn, OUT]), status::OK);
    let gid = a.u32_at(OUT) as i32;
    assert_eq!(
        a.call("proxy_increment_metric", &[Val::I32(gid), Val::I64(-3)])
            .unwrap(),
        status::OK
    );
    assert_eq!(vm.metric("temp").unwrap().value, -3);
    assert_eq!(vm.metric("requests").unwrap().value, 5);
}
parity!(shared_data_queues_and_metrics);

fn stream_control_calls_and_unimplemented(e: EngineKind) {
    let mut p = Probe::new(e, AbiVersion::V0_2_0);
    // No stream: stream control answers NOT_FOUND.
    assert_eq!(p.ok("proxy_continue_stream", &[0]), status::NOT_FOUND);
    let mut p = p.with_stream();
    assert_eq!(p.ok("proxy_continue_stream", &[0]), status::OK);
    assert!(p.stream().resume_request);
    assert_eq!(p.ok("proxy_continue_stream", &[1]), status::OK);
    assert!(p.stream().resume_response);
    assert_eq!(p.ok("proxy_continue_stream", &[3]), status::UNIMPLEMENTED);
    assert_eq!(p.ok("proxy_continue_stream", &[9]), status::BAD_ARGUMENT);
    assert_eq!(p.ok("proxy_close_stream", &[2]), status::UNIMPLEMENTED);
    assert_eq!(p.ok("proxy_done", &[]), status::NOT_FOUND);
    p.stream().done_pending = true;
    assert_eq!(p.ok("proxy_done", &[]), status::OK);
    // Local response.
    let (d, dn) = p.put(b"details");
    let (body, bn) = p.put(b"nope");
    let hs = serialize([(&b"x-why"[..], &b"test"[..])]);
    let (h, hn) = p.put(&hs);
    assert_eq!(
        p.ok(
            "proxy_send_local_response",
            &[99, d, dn, body, bn, h, hn, -1]
        ),
        status::BAD_ARGUMENT
    );
    assert_eq!(
        p.ok(
            "proxy_send_local_response",
            &[403, d, dn, body, bn, h, hn - 1, -1]
        ),
        status::BAD_ARGUMENT
    );
    assert!(p.stream().local_response.is_none());
    assert_eq!(
        p.ok(
            "proxy_send_local_response",
            &[403, d, dn, body, bn, h, hn, -1]
        ),
        status::OK
    );
    let l = p.stream().local_response.clone().unwrap();
    assert_eq!(
        (l.status, &l.body[..], l.headers[0].0.as_str()),
        (403, &b"nope"[..], "x-why")
    );
    // http_call: needs :method, :path, :authority and a known service.
    let good = serialize([
        (&b":method"[..], &b"GET"[..]),
        (&b":path"[..], &b"/"[..]),
        (&b":authority"[..], &b"x"[..]),
    ]);
    let partial = serialize([(&b":method"[..], &b"GET"[..]), (&b":path"[..], &b"/"[..])]);
    let (g, gn) = p.put(&good);
    let (pp, ppn) = p.put(&partial);
    let (svc, sn) = p.put(b"auth");
    let (unk, un) = p.put(b"nowhere");
    assert_eq!(
        p.ok("proxy_http_call", &[unk, un, g, gn, 0, 0, 0, 0, 100, OUT]),
        status::BAD_ARGUMENT
    );
    assert_eq!(
        p.ok("proxy_http_call", &[svc, sn, pp, ppn, 0, 0, 0, 0, 100, OUT]),
        status::BAD_ARGUMENT
    );
    assert_eq!(
        p.ok(
            "proxy_http_call",
            &[svc, sn, g, gn - 2, 0, 0, 0, 0, 100, OUT]
        ),
        status::BAD_ARGUMENT
    );
    assert_eq!(
        p.ok("proxy_http_call", &[svc, sn, g, gn, 0, 0, 0, 0, 100, BAD]),
        status::INVALID_MEMORY_ACCESS
    );
    assert_eq!(
        p.ok(
            "proxy_http_call",
            &[svc, sn, g, gn, body, bn, 0, 0, 100, OUT]
        ),
        status::OK
    );
    let token = p.u32_at(OUT);
    let calls = &p.state().pending_calls;
    assert_eq!(calls.len(), 1);
    assert_eq!(
        (
            calls[0].token,
            calls[0].service.as_str(),
            &calls[0].body[..]
        ),
        (token, "auth", &b"nope"[..])
    );
    assert_eq!(
        calls[0].timeout,
        Some(std::time::Duration::from_millis(100))
    );
    // At most MAX_CALLS_OUT calls out per context: then INTERNAL_FAILURE, for that context only.
    for _ in 1..crate::proxy_wasm::MAX_CALLS_OUT {
        assert_eq!(
            p.ok("proxy_http_call", &[svc, sn, g, gn, 0, 0, 0, 0, 100, OUT]),
            status::OK
        );
    }
    assert_eq!(
        p.ok("proxy_http_call", &[svc, sn, g, gn, 0, 0, 0, 0, 100, OUT]),
        status::INTERNAL_FAILURE
    );
    assert_eq!(
        p.state().pending_calls.len(),
        crate::proxy_wasm::MAX_CALLS_OUT
    );
    let (stream_ctx, root) = (p.state().effective_ctx, p.state().root_ctx);
    p.state().effective_ctx = root;
    assert_eq!(
        p.ok("proxy_http_call", &[svc, sn, g, gn, 0, 0, 0, 0, 100, OUT]),
        status::OK
    );
    p.state().effective_ctx = stream_ctx;
    p.state().pending_calls.truncate(1);
    // get_status.
    p.state().last_status = (11, "timeout".into());
    assert_eq!(p.ok("proxy_get_status", &[OUT, RET, RET_SIZE]), status::OK);
    assert_eq!((p.u32_at(OUT), p.out()), (11, b"timeout".to_vec()));
    // gRPC and foreign functions are linked and answer UNIMPLEMENTED.
    assert_eq!(p.ok("proxy_grpc_call", &[0; 12]), status::UNIMPLEMENTED);
    assert_eq!(p.ok("proxy_grpc_stream", &[0; 9]), status::UNIMPLEMENTED);
    assert_eq!(p.ok("proxy_grpc_send", &[0; 4]), status::UNIMPLEMENTED);
    assert_eq!(p.ok("proxy_grpc_cancel", &[0]), status::UNIMPLEMENTED);
    assert_eq!(p.ok("proxy_grpc_close", &[0]), status::UNIMPLEMENTED);
    assert_eq!(
        p.ok("proxy_call_foreign_function", &[0; 6]),
        status::UNIMPLEMENTED
    );
}
parity!(stream_control_calls_and_unimplemented);

fn random_args(ty: &[ValType], seed: &[i64]) -> Vec<Val> {
    ty.iter()
        .enumerate()
        .map(|(i, t)| {
            let r = seed[i % seed.len()];
            match t {
                ValType::I64 => Val::I64(r),
                _ => Val::I32(r as i32),
            }
        })
        .collect()
}

/// Random pointers, lengths and enum values into every host function: statuses or traps, never a panic.
fn random_arguments_give_statuses_or_traps(
    e: EngineKind,
    seed: Vec<i64>,
    version: usize,
    alloc_mode: i32,
) -> Result<(), TestCaseError> {
    let version = AbiVersion::ALL[version];
    let mut p = Probe::new(e, version).with_stream();
    p.alloc_mode(alloc_mode);
    let funcs: Vec<_> = super::host_functions("probe", version)
        .0
        .into_iter()
        .filter(|f| f.module == MODULE)
        .collect();
    for f in funcs {
        if p.inst.is_poisoned() {
            p = Probe::new(e, version).with_stream();
            p.alloc_mode(alloc_mode);
        }
        let args = random_args(&f.ty.params, &seed);
        match p.call(&f.name, &args) {
            Ok(s) => prop_assert!((0..=12).contains(&s), "{} returned {}", f.name, s),
            Err(t) => prop_assert!(
                alloc_mode == 2,
                "{} trapped with a sane allocator: {}",
                f.name,
                t
            ),
        }
    }
    Ok(())
}
parity!(
    proptest(ProptestConfig { cases: 48, ..ProptestConfig::default() })
    random_arguments_give_statuses_or_traps(
        seed in proptest::collection::vec(
            prop_oneof![any::<i64>(), 0i64..16, -2i64..2, 0i64..70000, Just(0x7fff_ffffi64)],
            1..12,
        ),
        version in 0usize..3,
        alloc_mode in 0i32..3,
    )
);

fn header_pairs() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
    let name = prop_oneof![
        Just(b"x-a".to_vec()),
        Just(b"x-b".to_vec()),
        Just(b":path".to_vec()),
        "[a-z0-9-]{1,12}".prop_map(String::into_bytes),
    ];
    // Any byte a field value may hold (not CR, LF, NUL or another control byte but tab,
    // which a filter may not write); empty values included.
    let value = proptest::collection::vec(
        any::<u8>().prop_filter("a field value byte", |b| {
            *b == b'\t' || (*b >= 0x20 && *b != 0x7f)
        }),
        0..16,
    );
    proptest::collection::vec((name, value), 0..10)
}

/// Any map a filter sets comes back byte for byte; a truncated one is BAD_ARGUMENT and changes nothing.
fn header_maps_round_trip_through_the_host(
    e: EngineKind,
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
    cut: prop::sample::Index,
) -> Result<(), TestCaseError> {
    let mut p = Probe::new(e, AbiVersion::V0_2_1).with_stream();
    let ser = serialize(pairs.iter().map(|(k, v)| (&k[..], &v[..])));
    let (ptr, len) = p.put(&ser);
    prop_assert_eq!(
        p.ok(
            "proxy_set_header_map_pairs",
            &[map::HTTP_REQUEST_HEADERS, ptr, len]
        ),
        status::OK
    );
    prop_assert_eq!(
        p.ok(
            "proxy_get_header_map_pairs",
            &[map::HTTP_REQUEST_HEADERS, RET, RET_SIZE]
        ),
        status::OK
    );
    prop_assert_eq!(p.out(), ser.clone());
    if !ser.is_empty() {
        let short = cut.index(ser.len());
        if short > 0 {
            let before = p.stream().request_headers.clone();
            prop_assert_eq!(
                p.ok(
                    "proxy_set_header_map_pairs",
                    &[map::HTTP_REQUEST_HEADERS, ptr, short as i32]
                ),
                status::BAD_ARGUMENT
            );
            prop_assert!(p.stream().request_headers == before);
        }
    }
    Ok(())
}
parity!(
    proptest(ProptestConfig { cases: 32, ..ProptestConfig::default() })
    header_maps_round_trip_through_the_host(
        pairs in header_pairs(),
        cut in any::<prop::sample::Index>(),
    )
);

// maxHostBytes (issue 13).

const BUDGET: usize = 256 << 10;

/// A VM whose guest may make the host hold at most [`BUDGET`] bytes, with a stream in flight.
fn probe_with_budget(e: EngineKind, vm: Arc<VmShared>) -> Probe {
    let shared = Arc::new(MiddlewareShared {
        max_host_bytes: BUDGET,
        ..Arc::into_inner(shared(AbiVersion::V0_2_1, vm)).unwrap()
    });
    let inst = module(e, AbiVersion::V0_2_1)
        .instantiate(Box::new(VmState::new(shared)))
        .unwrap();
    Probe { inst, next: 1024 }.with_stream()
}

fn call_headers() -> Vec<u8> {
    serialize([
        (&b":method"[..], &b"GET"[..]),
        (&b":path"[..], &b"/"[..]),
        (&b":authority"[..], &b"auth"[..]),
    ])
}

fn a_stream_holds_at_most_max_host_bytes_until_it_ends(e: EngineKind) {
    let mut p = probe_with_budget(e, VmShared::new("vm1"));
    let (k, kn) = p.put(b"x-flood");
    let (v, vn) = p.put(&[b'v'; 1024]);
    let each = (kn + vn) as usize;
    // Each map allows 1024 pairs and 1 MiB: the budget is what stops the filter here,
    // whatever map it spreads its headers over.
    let mut added = 0;
    let refused = loop {
        let m = [map::HTTP_REQUEST_HEADERS, map::HTTP_REQUEST_TRAILERS][added % 2];
        let s = p.ok("proxy_add_header_map_value", &[m, k, kn, v, vn]);
        if s != status::OK {
            break s;
        }
        added += 1;
        assert!(added <= BUDGET / each, "{e}: past the budget");
    };
    assert_eq!(refused, status::INTERNAL_FAILURE, "{e}");
    assert_eq!(added, BUDGET / each, "{e}");
    let used = added * each;
    assert_eq!(p.state().budget.used(), used, "{e}");
    assert_eq!(
        p.stream().request_headers.get_all("x-flood").count(),
        added.div_ceil(2),
        "{e}: the refused add changed nothing"
    );
    // Every call that makes the stream hold bytes is refused past it, and changes nothing.
    let room = BUDGET - used;
    let (big, bign) = p.put(&vec![b'b'; room + 1]);
    let pairs = serialize([(&b"x-a"[..], &vec![b'p'; room][..])]);
    let (pr, prn) = p.put(&pairs);
    let (svc, sn) = p.put(b"auth");
    let (h, hn) = p.put(&call_headers());
    p.stream().request_body = Some(BytesMut::from(&b"0123456789"[..]));
    for (f, args) in [
        (
            "proxy_replace_header_map_value",
            vec![map::HTTP_REQUEST_HEADERS, k, kn, big, bign - kn],
        ),
        (
            "proxy_set_header_map_pairs",
            vec![map::HTTP_REQUEST_TRAILERS, pr, prn],
        ),
        (
            "proxy_set_buffer_bytes",
            vec![buffer::HTTP_REQUEST_BODY, 10, 0, big, bign],
        ),
        ("proxy_set_property", vec![k, kn, big, bign - kn]),
        (
            "proxy_send_local_response",
            vec![403, 0, 0, big, bign, 0, 0, -1],
        ),
        (
            "proxy_http_call",
            vec![svc, sn, h, hn, big, bign, 0, 0, 100, OUT],
        ),
    ] {
        assert_eq!(p.ok(f, &args), status::INTERNAL_FAILURE, "{e} {f}");
        assert_eq!(p.state().budget.used(), used, "{e} {f}");
    }
    let s = p.stream();
    assert_eq!(s.request_trailers.len(), added / 2);
    assert_eq!(&s.request_body.as_ref().unwrap()[..], b"0123456789");
    assert!(s.properties.is_empty() && s.local_response.is_none());
    assert!(p.state().pending_calls.is_empty());
    // Rewriting the chunk in flight in place adds nothing; up to the last byte is allowed.
    assert_eq!(
        p.ok(
            "proxy_set_buffer_bytes",
            &[buffer::HTTP_REQUEST_BODY, 0, 10, big, 10]
        ),
        status::OK
    );
    assert_eq!(p.state().budget.used(), used, "{e}");
    assert_eq!(
        p.ok(
            "proxy_set_buffer_bytes",
            &[buffer::HTTP_REQUEST_BODY, 10, 0, big, room as i32]
        ),
        status::OK
    );
    assert_eq!(p.state().budget.used(), BUDGET, "{e}");
    // The stream's end gives it all back: the next stream starts from nothing.
    p.state().streams.remove(&2);
    assert_eq!(p.state().budget.used(), 0, "{e}");
    let mut p = p.with_stream();
    assert_eq!(
        p.ok(
            "proxy_add_header_map_value",
            &[map::HTTP_REQUEST_HEADERS, k, kn, v, vn]
        ),
        status::OK
    );
    assert_eq!(p.state().budget.used(), each, "{e}");
}
parity!(a_stream_holds_at_most_max_host_bytes_until_it_ends);

fn root_properties_and_http_calls_are_held_while_they_last(e: EngineKind) {
    let mut p = probe_with_budget(e, VmShared::new("vm1"));
    p.state().effective_ctx = 1;
    let (v, vn) = p.put(&[b'v'; 1024]);
    let (svc, sn) = p.put(b"auth");
    let (h, hn) = p.put(&call_headers());
    let call_args = [svc, sn, h, hn, v, vn, 0, 0, 100, OUT];
    // A call holds its service name, headers and body until it is done.
    assert_eq!(p.ok("proxy_http_call", &call_args), status::OK);
    let call = 4 + (7 + 3 + 5 + 1 + 10 + 4) + 1024;
    assert_eq!(p.state().budget.used(), call, "{e}");
    // The root context's properties stay until replaced: they fill the rest.
    let mut keys = Vec::new();
    let refused = loop {
        let key = p.put(format!("r{:04}", keys.len()).as_bytes());
        let s = p.ok("proxy_set_property", &[key.0, key.1, v, vn]);
        if s != status::OK {
            break s;
        }
        keys.push(key);
        assert!(keys.len() <= BUDGET / 1029, "{e}: past the budget");
    };
    assert_eq!(refused, status::INTERNAL_FAILURE, "{e}");
    assert_eq!(keys.len(), (BUDGET - call) / 1029, "{e}");
    let props = keys.len() * 1029;
    assert_eq!(p.state().budget.used(), call + props, "{e}");
    // A call that does not fit is refused, and none is queued.
    assert_eq!(
        p.ok("proxy_http_call", &call_args),
        status::INTERNAL_FAILURE,
        "{e}"
    );
    assert_eq!(p.state().pending_calls.len(), 1);
    // A property replaced by one as large fits in a full budget; by a smaller one, the
    // difference is given back.
    let (k0, k0n) = keys[0];
    assert_eq!(p.ok("proxy_set_property", &[k0, k0n, v, vn]), status::OK);
    assert_eq!(p.state().budget.used(), call + props, "{e}");
    assert_eq!(p.ok("proxy_set_property", &[k0, k0n, v, 0]), status::OK);
    assert_eq!(p.state().budget.used(), call + props - 1024, "{e}");
    // The call done (taken and answered), its bytes are given back.
    p.state().pending_calls.clear();
    assert_eq!(p.state().budget.used(), props - 1024, "{e}");
}
parity!(root_properties_and_http_calls_are_held_while_they_last);

fn the_shared_store_has_a_budget_of_its_own(e: EngineKind) {
    let vm = VmShared::with_max_host_bytes("vm1", BUDGET);
    // Two VMs of the plugin; their own budgets are the default (64 MiB).
    let mut a = Probe::with_vm(e, AbiVersion::V0_2_1, vm.clone());
    let mut b = Probe::with_vm(e, AbiVersion::V0_2_1, vm.clone());
    let (v, vn) = a.put(&[b'v'; 1024]);
    let mut keys = Vec::new();
    let refused = loop {
        let key = a.put(format!("k{:04}", keys.len()).as_bytes());
        let s = a.ok("proxy_set_shared_data", &[key.0, key.1, v, vn, 0]);
        if s != status::OK {
            break s;
        }
        keys.push(key);
        assert!(keys.len() <= BUDGET / 1029, "{e}: past the budget");
    };
    assert_eq!(refused, status::INTERNAL_FAILURE, "{e}");
    assert_eq!(keys.len(), BUDGET / 1029, "{e}");
    let full = keys.len() * 1029;
    assert_eq!(vm.host_bytes(), full, "{e}");
    // The other VM shares it: a queue item does not fit...
    let (q, qn) = b.put(b"q");
    assert_eq!(
        b.ok("proxy_register_shared_queue", &[q, qn, OUT]),
        status::OK
    );
    let id = b.u32_at(OUT) as i32;
    let (item, itemn) = b.put(&[b'i'; 1024]);
    assert_eq!(
        b.ok("proxy_enqueue_shared_queue", &[id, item, itemn]),
        status::INTERNAL_FAILURE
    );
    // ... until a value is replaced by a smaller one; dequeued items are given back.
    let (k0, k0n) = keys[0];
    assert_eq!(
        a.ok("proxy_set_shared_data", &[k0, k0n, v, 0, 0]),
        status::OK
    );
    assert_eq!(vm.host_bytes(), full - 1024 + 1, "{e}");
    assert_eq!(
        b.ok("proxy_enqueue_shared_queue", &[id, item, itemn]),
        status::OK
    );
    assert_eq!(vm.host_bytes(), full + 1, "{e}");
    assert_eq!(
        b.ok("proxy_dequeue_shared_queue", &[id, RET, RET_SIZE]),
        status::OK
    );
    assert_eq!(vm.host_bytes(), full - 1024 + 1, "{e}");
    // Metric names count too.
    let (name, namen) = a.put(&[b'm'; 2048]);
    assert_eq!(
        a.ok("proxy_define_metric", &[1, name, namen, OUT]),
        status::INTERNAL_FAILURE
    );
    assert_eq!(a.ok("proxy_define_metric", &[1, name, 16, OUT]), status::OK);
    assert_eq!(vm.host_bytes(), full - 1024 + 1 + 16, "{e}");
}
parity!(the_shared_store_has_a_budget_of_its_own);

/// Floods its request headers (`x-flood`) or the shared data (`x-shared-flood`) until the
/// host refuses, and records the refusal's status in the gauge `refused`.
const FLOOD: &str = r#"(module
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_shared_data" (func $set_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_define_metric" (func $define (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_record_metric" (func $record (param i32 i64) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 65536))
  (global $key (mut i32) (i32.const 0))
  (global $m (mut i32) (i32.const 0))
  (data (i32.const 0) "x-flood")
  (data (i32.const 16) "x-shared-flood")
  (data (i32.const 32) "x-flooded")
  (data (i32.const 48) "refused")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "malloc") (param i32) (result i32) (local i32)
    global.get $heap local.set 1
    global.get $heap local.get 0 i32.add global.set $heap
    local.get 1)
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
    (drop (call $define (i32.const 1) (i32.const 48) (i32.const 7) (i32.const 64)))
    (global.set $m (i32.load (i32.const 64)))
    (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func $has (param $name i32) (param $len i32) (result i32)
    (i32.eqz (call $get (i32.const 0) (local.get $name) (local.get $len) (i32.const 80) (i32.const 84))))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (local $s i32)
    (memory.fill (i32.const 1024) (i32.const 97) (i32.const 1024))
    (if (call $has (i32.const 0) (i32.const 7))
      (then
        (loop $l
          (local.set $s (call $add (i32.const 0) (i32.const 32) (i32.const 9) (i32.const 1024) (i32.const 1024)))
          (br_if $l (i32.eqz (local.get $s))))
        (drop (call $record (global.get $m) (i64.extend_i32_u (local.get $s))))))
    (if (call $has (i32.const 16) (i32.const 14))
      (then
        (loop $l
          (i32.store (i32.const 96) (global.get $key))
          (global.set $key (i32.add (global.get $key) (i32.const 1)))
          (local.set $s (call $set_shared (i32.const 96) (i32.const 4) (i32.const 1024) (i32.const 1024) (i32.const 0)))
          (br_if $l (i32.eqz (local.get $s))))
        (drop (call $record (global.get $m) (i64.extend_i32_u (local.get $s))))))
    (i32.const 0)))"#;

/// Answers 200, saying how many `x-flooded` headers it got.
struct CountFlooded;

#[async_trait::async_trait]
impl Endpoint for CountFlooded {
    async fn call(&self, req: Request) -> Result<Response, ProxyError> {
        let mut r = Response::new(http::StatusCode::OK);
        let n = req.headers.get_all("x-flooded").count();
        r.headers.append("seen", n.to_string());
        Ok(r)
    }
}

fn a_flooding_filter_is_refused_and_the_next_request_works(e: EngineKind) {
    use crate::middleware::{Middleware, Next};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let wasm = wat::parse_str(FLOOD).unwrap();
        let engines = crate::plugin::Engines::new(None);
        let opts = crate::guest::PluginOptions {
            engine: e,
            max_instances: Some(1),
            max_host_bytes: BUDGET,
            ..Default::default()
        };
        let plugin = crate::plugin::Plugin::load("flood", &wasm, opts, &engines).unwrap();
        let chain: Vec<Arc<dyn Middleware>> =
            vec![plugin.middleware("flood-mw", Vec::new()).unwrap()];
        let vm = plugin.proxy_wasm().unwrap().vm().clone();
        let send = |flood: Option<&str>| {
            let mut req = Request::new(
                http::Method::GET,
                "/".parse().unwrap(),
                "127.0.0.1:4000".parse().unwrap(),
            );
            req.headers.append("host", "example.com");
            if let Some(h) = flood {
                req.headers.append(h, "1");
            }
            Next::new(&chain, &CountFlooded).run(req)
        };
        let refused = || vm.metric("refused").map(|m| m.value);
        let each = 9 + 1024;
        for round in 0..2 {
            // The filter adds headers until INTERNAL_FAILURE; what it added goes upstream.
            let r = send(Some("x-flood")).await.unwrap();
            assert_eq!(r.status, 200, "{e}");
            assert_eq!(
                r.headers.get_str("seen"),
                Some(&*(BUDGET / each).to_string()),
                "{e} round {round}"
            );
            assert_eq!(refused(), Some(status::INTERNAL_FAILURE as i64), "{e}");
            // The stream's bytes were given back when it ended: the next one may add again.
            let r = send(None).await.unwrap();
            assert_eq!(
                (r.status.as_u16(), r.headers.get_str("seen")),
                (200, Some("0")),
                "{e}"
            );
        }
        // The shared data fills the plugin's own budget and stays full; requests go on.
        vm.record_metric(1, 0);
        let r = send(Some("x-shared-flood")).await.unwrap();
        assert_eq!(r.status, 200, "{e}");
        assert_eq!(refused(), Some(status::INTERNAL_FAILURE as i64), "{e}");
        let room = BUDGET - "refused".len();
        assert_eq!(
            vm.host_bytes(),
            room / (4 + 1024) * (4 + 1024) + "refused".len(),
            "{e}"
        );
        assert_eq!(send(None).await.unwrap().status, 200, "{e}");
        let r = send(Some("x-flood")).await.unwrap();
        assert_eq!(
            r.headers.get_str("seen"),
            Some(&*(BUDGET / each).to_string()),
            "{e}"
        );
    });
}
parity!(a_flooding_filter_is_refused_and_the_next_request_works);
