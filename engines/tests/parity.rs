//! Parity tests: every case runs on both engines with the same expectations.

use std::any::Any;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use wasmgate_engines::wasi::{self, WasiStream};
use wasmgate_engines::*;

/// Generates one test per engine for a case `fn(EngineKind)`.
macro_rules! parity {
    ($name:ident) => {
        mod $name {
            #[test]
            fn wasmtime() {
                super::$name(wasmgate_engines::EngineKind::Wasmtime);
            }
            #[test]
            fn wasmer() {
                super::$name(wasmgate_engines::EngineKind::Wasmer);
            }
        }
    };
}

/// One shared engine per kind (no cache), like the proxy would hold.
fn engine(kind: EngineKind) -> Arc<dyn Engine> {
    type Engines = Mutex<Vec<(EngineKind, Arc<dyn Engine>)>>;
    static ENGINES: OnceLock<Engines> = OnceLock::new();
    let mut v = ENGINES.get_or_init(Default::default).lock().unwrap();
    if let Some((_, e)) = v.iter().find(|(k, _)| *k == kind) {
        return e.clone();
    }
    let e = new_engine(kind, EngineOptions::default()).unwrap();
    v.push((kind, e.clone()));
    e
}

fn compile(
    kind: EngineKind,
    wat: &str,
    host: HostFunctions,
    limits: Limits,
) -> Arc<dyn CompiledModule> {
    engine(kind)
        .compile(wat.as_bytes(), Arc::new(host), limits)
        .unwrap()
}

/// The error compiling `wat` must give, as text.
fn compile_error(kind: EngineKind, wat: &str, limits: Limits) -> String {
    engine(kind)
        .compile(wat.as_bytes(), Arc::new(HostFunctions::new()), limits)
        .err()
        .expect("must fail")
        .to_string()
}

fn instance(kind: EngineKind, wat: &str, host: HostFunctions) -> Box<dyn Instance> {
    compile(kind, wat, host, Limits::default())
        .instantiate(Box::new(()))
        .unwrap()
}

fn call1(i: &mut dyn Instance, name: &str, args: &[Val]) -> Result<Val, Trap> {
    let f = i.export(name).unwrap_or_else(|| panic!("no export {name}"));
    let mut r = [Val::default_for(f.ty().results[0])];
    i.call(&f, args, &mut r)?;
    Ok(r[0])
}

fn call0(i: &mut dyn Instance, name: &str, args: &[Val]) -> Result<(), Trap> {
    i.call_by_name(name, args, &mut [])
}

const TYPES_WAT: &str = r#"(module
  (func (export "add_i32") (param i32 i32) (result i32) local.get 0 local.get 1 i32.add)
  (func (export "add_i64") (param i64 i64) (result i64) local.get 0 local.get 1 i64.add)
  (func (export "add_f32") (param f32 f32) (result f32) local.get 0 local.get 1 f32.add)
  (func (export "add_f64") (param f64 f64) (result f64) local.get 0 local.get 1 f64.add)
  (func (export "neg_i32") (param i32) (result i32) i32.const 0 local.get 0 i32.sub)
  (func (export "weigh3_i32") (param i32 i32 i32) (result i32)
    local.get 0 local.get 1 i32.const 10 i32.mul i32.add local.get 2 i32.const 100 i32.mul i32.add)
  (func (export "const_i64") (result i64) i64.const -1234567890123)
  (func (export "const_i32") (result i32) i32.const 42)
  (func (export "noop"))
  (func (export "mixed") (param i32 i64 f32 f64) (result f64 i32)
    local.get 0 f64.convert_i32_s
    local.get 1 f64.convert_i64_s f64.add
    local.get 2 f64.promote_f32 f64.add
    local.get 3 f64.add
    i32.const 7)
)"#;

fn value_types(kind: EngineKind) {
    let mut i = instance(kind, TYPES_WAT, HostFunctions::new());
    let i = i.as_mut();
    assert_eq!(
        call1(i, "add_i32", &[Val::I32(i32::MAX), Val::I32(1)]).unwrap(),
        Val::I32(i32::MIN)
    );
    assert_eq!(
        call1(i, "add_i64", &[Val::I64(1 << 40), Val::I64(-5)]).unwrap(),
        Val::I64((1 << 40) - 5)
    );
    assert_eq!(
        call1(i, "add_f32", &[Val::F32(1.5), Val::F32(2.25)]).unwrap(),
        Val::F32(3.75)
    );
    assert_eq!(
        call1(i, "add_f64", &[Val::F64(0.1), Val::F64(0.2)]).unwrap(),
        Val::F64(0.1 + 0.2)
    );
    assert_eq!(call1(i, "neg_i32", &[Val::I32(5)]).unwrap(), Val::I32(-5));
    // Each argument in its place (the typed path proxy-wasm's stream callbacks take).
    assert_eq!(
        call1(i, "weigh3_i32", &[Val::I32(1), Val::I32(2), Val::I32(3)]).unwrap(),
        Val::I32(321)
    );
    assert_eq!(
        call1(i, "const_i64", &[]).unwrap(),
        Val::I64(-1234567890123)
    );
    assert_eq!(call1(i, "const_i32", &[]).unwrap(), Val::I32(42));
    call0(i, "noop", &[]).unwrap();
    let f = i.export("mixed").unwrap();
    assert_eq!(
        f.ty(),
        &FuncType::new(
            [ValType::I32, ValType::I64, ValType::F32, ValType::F64],
            [ValType::F64, ValType::I32]
        )
    );
    let mut r = [Val::F64(0.0), Val::I32(0)];
    i.call(
        &f,
        &[Val::I32(1), Val::I64(2), Val::F32(0.5), Val::F64(0.25)],
        &mut r,
    )
    .unwrap();
    assert_eq!(r, [Val::F64(3.75), Val::I32(7)]);
    // Wrong argument types are refused, not mis-passed.
    let add = i.export("add_i32").unwrap();
    let err = i
        .call(&add, &[Val::I64(1), Val::I32(1)], &mut [Val::I32(0)])
        .unwrap_err();
    assert!(matches!(err.reason, TrapReason::Other(_)), "{err}");
    assert!(i.export("nope").is_none());
    let err = call0(i, "nope", &[]).unwrap_err();
    assert_eq!(err.export, "nope");
    assert_eq!(err.engine, kind);
}
parity!(value_types);

/// Host functions used by several guests.
fn env_host() -> HostFunctions {
    let mut h = HostFunctions::new();
    // probe(ptr, len) -> 0 if readable and writable, 1 if out of bounds.
    h.add(
        "env",
        "probe",
        FuncType::new([ValType::I32, ValType::I32], [ValType::I32]),
        |c, a, r| {
            let (ptr, len) = (a[0].i32().unwrap() as u32, a[1].i32().unwrap() as u32);
            let read = c.read(ptr, len);
            let write = c.write(ptr, &vec![0xAB; len as usize]);
            r[0] = Val::I32(match (read, write) {
                (Ok(_), Ok(())) => 0,
                (Err(HostError::OutOfBounds { .. }), Err(HostError::OutOfBounds { .. })) => 1,
                other => panic!("inconsistent: {other:?}"),
            });
            Ok(())
        },
    );
    // give() -> ptr: calls the guest's malloc re-entrantly and writes "hello".
    h.add(
        "env",
        "give",
        FuncType::new([], [ValType::I32]),
        |c, _, r| {
            let mut p = [Val::I32(0)];
            c.call("malloc", &[Val::I32(5)], &mut p)?;
            let ptr = p[0].i32().unwrap() as u32;
            c.write(ptr, b"hello")?;
            *c.data().downcast_mut::<u32>().expect("u32 data") += 1;
            r[0] = Val::I32(ptr as i32);
            Ok(())
        },
    );
    h.add("env", "fail", FuncType::new([], []), |_, _, _| {
        Err(HostError::msg("boom from host"))
    });
    // nested_trap(): calls the guest's `unreachable` export.
    h.add("env", "nested_trap", FuncType::new([], []), |c, _, _| {
        c.call("die", &[], &mut [])?;
        Ok(())
    });
    h.add("env", "nop", FuncType::new([], []), |_, _, _| Ok(()));
    // Declared to return i32 but returns an i64: refused, not mis-passed.
    h.add(
        "env",
        "bad_ret",
        FuncType::new([], [ValType::I32]),
        |_, _, r| {
            r[0] = Val::I64(1);
            Ok(())
        },
    );
    // Echoes every value type through the host.
    h.add(
        "env",
        "echo",
        FuncType::new(
            [ValType::I32, ValType::I64, ValType::F32, ValType::F64],
            [ValType::F64, ValType::I64],
        ),
        |_, a, r| {
            let (x, y, z, w) = (
                a[0].i32().unwrap(),
                a[1].i64().unwrap(),
                a[2].f32().unwrap(),
                a[3].f64().unwrap(),
            );
            r[0] = Val::F64(x as f64 + y as f64 + z as f64 + w);
            r[1] = Val::I64(y.wrapping_mul(3));
            Ok(())
        },
    );
    h
}

/// Host functions registered with `func_wrap`: the signature comes from the
/// closure's type. Each records what it received in the instance's
/// `Vec<String>` data, so the test sees the values on the host side too.
fn typed_host() -> HostFunctions {
    fn seen(c: &mut dyn Caller) -> &mut Vec<String> {
        c.data()
            .downcast_mut::<Vec<String>>()
            .expect("Vec<String> data")
    }
    let mut h = HostFunctions::new();
    h.func_wrap(
        "typed",
        "zero",
        |c: &mut dyn Caller| -> Result<i32, HostError> {
            seen(c).push("zero".into());
            Ok(7)
        },
    )
    .func_wrap(
        "typed",
        "unit",
        |c: &mut dyn Caller, x: u64| -> Result<(), HostError> {
            seen(c).push(format!("unit {x}"));
            Ok(())
        },
    )
    .func_wrap(
        "typed",
        "u32",
        |c: &mut dyn Caller, x: u32| -> Result<u32, HostError> {
            seen(c).push(format!("u32 {x}"));
            Ok(x.wrapping_add(5))
        },
    )
    .func_wrap(
        "typed",
        "u64",
        |c: &mut dyn Caller, x: u64| -> Result<u64, HostError> {
            seen(c).push(format!("u64 {x}"));
            Ok(x ^ (1 << 63))
        },
    )
    .func_wrap(
        "typed",
        "mix",
        |c: &mut dyn Caller, a: i32, b: u32, d: i64, e: f32, f: f64| -> Result<f64, HostError> {
            seen(c).push(format!("mix {a} {b} {d} {e} {f}"));
            Ok(a as f64 + b as f64 + d as f64 + e as f64 + f)
        },
    )
    .func_wrap(
        "typed",
        "twelve",
        |c: &mut dyn Caller,
         a1: i32,
         a2: u32,
         a3: i64,
         a4: u64,
         a5: f32,
         a6: f64,
         a7: i32,
         a8: i32,
         a9: i32,
         a10: i32,
         a11: i32,
         a12: u32|
         -> Result<i64, HostError> {
            seen(c).push(format!(
                "twelve {a1} {a2} {a3} {a4} {a5} {a6} {a7} {a8} {a9} {a10} {a11} {a12}"
            ));
            // Positional weights: swapped arguments give another sum.
            let ints = [a7, a8, a9, a10, a11];
            let weighted: i64 = ints
                .iter()
                .enumerate()
                .map(|(k, v)| (k as i64 + 1) * *v as i64)
                .sum();
            Ok(
                a1 as i64 + a2 as i64 + a3 + a4 as i64 + a5 as i64 + a6 as i64 + weighted
                    - a12 as i64,
            )
        },
    )
    .func_wrap(
        "typed",
        "fail",
        |_c: &mut dyn Caller, x: i32| -> Result<i32, HostError> {
            Err(HostError::msg(format!("typed fail {x}")))
        },
    )
    .func_wrap(
        "typed",
        "f32",
        |_c: &mut dyn Caller, x: f32| -> Result<f32, HostError> { Ok(x * 2.0) },
    );
    h
}

const TYPED_WAT: &str = r#"(module
  (import "typed" "zero" (func $zero (result i32)))
  (import "typed" "unit" (func $unit (param i64)))
  (import "typed" "u32" (func $u32 (param i32) (result i32)))
  (import "typed" "u64" (func $u64 (param i64) (result i64)))
  (import "typed" "mix" (func $mix (param i32 i32 i64 f32 f64) (result f64)))
  (import "typed" "twelve" (func $twelve
    (param i32 i32 i64 i64 f32 f64 i32 i32 i32 i32 i32 i32) (result i64)))
  (import "typed" "fail" (func $fail (param i32) (result i32)))
  (import "typed" "f32" (func $f32 (param f32) (result f32)))
  (func (export "zero") (result i32) call $zero)
  (func (export "unit") (param i64) local.get 0 call $unit)
  (func (export "u32") (param i32) (result i32) local.get 0 call $u32)
  ;; The host's u32 result compared in the guest: 0xFFFFFFFA + 5 = 0xFFFFFFFF.
  (func (export "u32_in_guest") (result i32)
    i32.const 0xFFFFFFFA call $u32 i32.const -1 i32.eq)
  (func (export "u64") (param i64) (result i64) local.get 0 call $u64)
  (func (export "mix") (param i32 i32 i64 f32 f64) (result f64)
    local.get 0 local.get 1 local.get 2 local.get 3 local.get 4 call $mix)
  (func (export "twelve") (result i64)
    i32.const -1 i32.const 0x80000000 i64.const -3 i64.const 4 f32.const 5.5 f64.const 6.25
    i32.const 7 i32.const 8 i32.const 9 i32.const 10 i32.const 11 i32.const 0xFFFFFFFF
    call $twelve)
  (func (export "fail") (param i32) (result i32) local.get 0 call $fail)
  (func (export "f32") (param f32) (result f32) local.get 0 call $f32)
)"#;

/// `func_wrap` host functions of several arities and types: values round-trip
/// both ways, unsigned values above 2^31 (2^63) included, and a host error
/// traps the caller.
fn typed_host_functions(kind: EngineKind) {
    let module = compile(kind, TYPED_WAT, typed_host(), Limits::default());
    let mut inst = module.instantiate(Box::new(Vec::<String>::new())).unwrap();
    let i = inst.as_mut();
    assert_eq!(call1(i, "zero", &[]).unwrap(), Val::I32(7));
    call0(i, "unit", &[Val::I64(-1)]).unwrap();
    let big = 0x8000_0001u32;
    assert_eq!(
        call1(i, "u32", &[Val::I32(big as i32)]).unwrap(),
        Val::I32((big + 5) as i32)
    );
    assert_eq!(
        call1(i, "u32", &[Val::I32(-2)]).unwrap(),
        Val::I32(3),
        "u32::MAX - 1 + 5 wraps"
    );
    assert_eq!(call1(i, "u32_in_guest", &[]).unwrap(), Val::I32(1));
    let big64 = (1u64 << 63) + 12345;
    assert_eq!(
        call1(i, "u64", &[Val::I64(big64 as i64)]).unwrap(),
        Val::I64(12345)
    );
    let f = i.export("mix").unwrap();
    let mut r = [Val::F64(0.0)];
    i.call(
        &f,
        &[
            Val::I32(-10),
            Val::I32(0xF000_0000u32 as i32),
            Val::I64(1 << 40),
            Val::F32(0.5),
            Val::F64(0.25),
        ],
        &mut r,
    )
    .unwrap();
    assert_eq!(
        r[0],
        Val::F64(-10.0 + 4026531840.0 + (1u64 << 40) as f64 + 0.75)
    );
    // -1 + 2^31 - 3 + 4 + 5 + 6 + (7 + 16 + 27 + 40 + 55) - (2^32 - 1)
    let want = -1 + (1i64 << 31) - 3 + 4 + 5 + 6 + (7 + 16 + 27 + 40 + 55) - 0xFFFF_FFFF;
    assert_eq!(call1(i, "twelve", &[]).unwrap(), Val::I64(want));
    assert_eq!(call1(i, "f32", &[Val::F32(1.25)]).unwrap(), Val::F32(2.5));
    assert!(!i.is_poisoned());
    let seen = i.data().downcast_mut::<Vec<String>>().unwrap().clone();
    assert_eq!(
        seen,
        [
            "zero".to_string(),
            format!("unit {}", u64::MAX),
            "u32 2147483649".into(),
            "u32 4294967294".into(),
            "u32 4294967290".into(),
            format!("u64 {big64}"),
            format!("mix -10 4026531840 {} 0.5 0.25", 1u64 << 40),
            "twelve -1 2147483648 -3 4 5.5 6.25 7 8 9 10 11 4294967295".into(),
        ]
    );
    // The signatures come from the closures' types.
    let h = typed_host();
    use ValType::*;
    assert_eq!(h.get("typed", "unit").unwrap().ty, FuncType::new([I64], []));
    assert_eq!(
        h.get("typed", "mix").unwrap().ty,
        FuncType::new([I32, I32, I64, F32, F64], [F64])
    );
    assert_eq!(h.get("typed", "twelve").unwrap().ty.params.len(), 12);
    // A host error traps the calling instance.
    let err = call1(i, "fail", &[Val::I32(3)]).unwrap_err();
    assert_eq!(err.reason, TrapReason::HostError("typed fail 3".into()));
    assert_eq!(err.export, "fail");
    assert!(i.is_poisoned());
}
parity!(typed_host_functions);

const MEM_WAT: &str = r#"(module
  (import "env" "probe" (func $probe (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "load8") (param i32) (result i32) local.get 0 i32.load8_u)
  (func (export "store8") (param i32 i32) local.get 0 local.get 1 i32.store8)
  (func (export "probe") (param i32 i32) (result i32) local.get 0 local.get 1 call $probe)
)"#;

fn memory_edges(kind: EngineKind) {
    let mut inst = instance(kind, MEM_WAT, env_host());
    let i = inst.as_mut();
    assert_eq!(i.memory_size(), 65536);
    // Host side: last byte fine, one past the end is an error.
    i.write(65535, &[7]).unwrap();
    assert_eq!(i.read(65535, 1).unwrap(), vec![7]);
    assert_eq!(call1(i, "load8", &[Val::I32(65535)]).unwrap(), Val::I32(7));
    assert!(matches!(
        i.write(65536, &[1]),
        Err(HostError::OutOfBounds { .. })
    ));
    assert!(matches!(
        i.write(65535, &[1, 2]),
        Err(HostError::OutOfBounds { .. })
    ));
    assert!(matches!(
        i.read(65535, 2),
        Err(HostError::OutOfBounds { .. })
    ));
    assert!(matches!(
        i.read(u32::MAX, 2),
        Err(HostError::OutOfBounds { .. })
    ));
    let mut buf = [0u8; 4];
    assert!(i.read_into(65534, &mut buf).is_err());
    i.write(0, b"abcd").unwrap();
    i.read_into(0, &mut buf).unwrap();
    assert_eq!(&buf, b"abcd");
    // Inside a host function: the same bounds.
    assert_eq!(
        call1(i, "probe", &[Val::I32(65535), Val::I32(1)]).unwrap(),
        Val::I32(0)
    );
    assert_eq!(
        call1(i, "probe", &[Val::I32(65535), Val::I32(2)]).unwrap(),
        Val::I32(1)
    );
    assert_eq!(
        call1(i, "probe", &[Val::I32(-1), Val::I32(1)]).unwrap(),
        Val::I32(1)
    );
    assert_eq!(
        call1(i, "load8", &[Val::I32(65535)]).unwrap(),
        Val::I32(0xAB)
    );
    // Guest side: one past the end traps out-of-bounds.
    let err = call1(i, "load8", &[Val::I32(65536)]).unwrap_err();
    assert_eq!(err.reason, TrapReason::OutOfBounds);
    assert_eq!(err.export, "load8");
    assert!(i.is_poisoned());
}
parity!(memory_edges);

const REENTRANT_WAT: &str = r#"(module
  (import "env" "give" (func $give (result i32)))
  (memory (export "memory") 1)
  (global $next (mut i32) (i32.const 1024))
  (func (export "malloc") (param $n i32) (result i32)
    (local $p i32)
    global.get $next local.set $p
    global.get $next local.get $n i32.add global.set $next
    local.get $p)
  (func (export "run") (result i32) call $give drop call $give)
)"#;

fn reentrant_call(kind: EngineKind) {
    let module = compile(kind, REENTRANT_WAT, env_host(), Limits::default());
    let mut i = module.instantiate(Box::new(0u32)).unwrap();
    let ptr = call1(i.as_mut(), "run", &[]).unwrap().i32().unwrap();
    // Two allocations of 5 bytes from 1024: the second is at 1029.
    assert_eq!(ptr, 1029);
    assert_eq!(i.read(1024, 10).unwrap(), b"hellohello");
    assert_eq!(*i.data().downcast_mut::<u32>().unwrap(), 2);
    assert!(!i.is_poisoned());
    // Per-instance state: a second instance starts from its own data.
    let mut j = module.instantiate(Box::new(100u32)).unwrap();
    call1(j.as_mut(), "run", &[]).unwrap();
    assert_eq!(*j.data().downcast_mut::<u32>().unwrap(), 102);
    assert_eq!(*i.data().downcast_mut::<u32>().unwrap(), 2);
}
parity!(reentrant_call);

const TRAPS_WAT: &str = r#"(module
  (import "env" "fail" (func $fail))
  (import "env" "nested_trap" (func $nested))
  (import "env" "bad_ret" (func $bad_ret (result i32)))
  (import "env" "echo" (func $echo (param i32 i64 f32 f64) (result f64 i64)))
  (memory (export "memory") 1)
  (func $die (export "die") unreachable)
  (func (export "oob") (result i32) i32.const 0x7ffffff0 i32.load)
  (func $rec (export "recurse") (param i32) (result i32)
    local.get 0 i32.const 1 i32.add call $rec i32.const 1 i32.add)
  (func (export "host_fail") call $fail)
  (func (export "nested") call $nested)
  (func (export "ok") (result i32) i32.const 1)
  (func (export "bad_ret") (result i32) call $bad_ret)
  (func (export "echo") (param i32 i64 f32 f64) (result f64 i64)
    local.get 0 local.get 1 local.get 2 local.get 3 call $echo)
)"#;

fn trap_kinds(kind: EngineKind) {
    let module = compile(kind, TRAPS_WAT, env_host(), Limits::default());
    let cases: [(&str, &[Val], TrapReason); 4] = [
        ("die", &[], TrapReason::Unreachable),
        ("oob", &[], TrapReason::OutOfBounds),
        ("recurse", &[Val::I32(0)], TrapReason::StackOverflow),
        ("nested", &[], TrapReason::Unreachable),
    ];
    for (export, args, reason) in cases {
        let mut i = module.instantiate(Box::new(())).unwrap();
        let f = i.export(export).unwrap();
        let mut r = vec![Val::I32(0); f.ty().results.len()];
        let err = i.call(&f, args, &mut r).unwrap_err();
        assert_eq!(err.reason, reason, "{export}: {err}");
        assert_eq!(err.export, export);
        assert_eq!(err.engine, kind);
        assert!(i.is_poisoned());
        assert!(err.to_string().contains(kind.as_str()), "{err}");
    }
    let mut i = module.instantiate(Box::new(())).unwrap();
    let err = call0(i.as_mut(), "host_fail", &[]).unwrap_err();
    match &err.reason {
        TrapReason::HostError(m) => assert!(m.contains("boom from host"), "{m}"),
        other => panic!("expected host error, got {other:?}"),
    }
    assert_eq!(err.export, "host_fail");
    let mut i = module.instantiate(Box::new(())).unwrap();
    let err = call1(i.as_mut(), "bad_ret", &[]).unwrap_err();
    assert!(
        matches!(&err.reason, TrapReason::HostError(m) if m.contains("returned i64 where i32")),
        "{err}"
    );
    // Every value type through a host function and back.
    let mut i = module.instantiate(Box::new(())).unwrap();
    let mut r = [Val::F64(0.0), Val::I64(0)];
    i.call_by_name(
        "echo",
        &[
            Val::I32(-2),
            Val::I64(1 << 40),
            Val::F32(0.5),
            Val::F64(0.25),
        ],
        &mut r,
    )
    .unwrap();
    assert_eq!(
        r,
        [
            Val::F64(-2.0 + (1u64 << 40) as f64 + 0.75),
            Val::I64(3 << 40)
        ]
    );
    // A trap is confined to its instance: a sibling keeps working.
    let mut j = module.instantiate(Box::new(())).unwrap();
    assert_eq!(call1(j.as_mut(), "ok", &[]).unwrap(), Val::I32(1));
    assert!(!j.is_poisoned());
}
parity!(trap_kinds);

const DEPTH_WAT: &str = r#"(module
  (func $r (export "depth") (param i32) (result i32)
    (if (result i32) (local.get 0)
      (then (i32.add (call $r (i32.sub (local.get 0) (i32.const 1))) (i32.const 1)))
      (else (i32.const 0)))))"#;

fn stack_limit(kind: EngineKind) {
    let with_stack = |bytes: usize| {
        let limits = Limits {
            max_stack_bytes: bytes,
            ..Limits::default()
        };
        compile(kind, DEPTH_WAT, HostFunctions::new(), limits)
            .instantiate(Box::new(()))
            .unwrap()
    };
    let depth = Val::I32(10_000);
    let mut big = with_stack(1 << 20);
    assert_eq!(call1(big.as_mut(), "depth", &[depth]).unwrap(), depth);
    let mut small = with_stack(64 << 10);
    assert_eq!(
        call1(small.as_mut(), "depth", &[Val::I32(100)]).unwrap(),
        Val::I32(100)
    );
    // wasmer 7.4 reuses any cached guest stack at least as large as the one
    // requested, so a small limit is only a lower bound there (see
    // `Limits::max_stack_bytes`); wasmtime enforces it exactly.
    if kind == EngineKind::Wasmtime {
        let err = call1(small.as_mut(), "depth", &[depth]).unwrap_err();
        assert_eq!(err.reason, TrapReason::StackOverflow);
    }
}
parity!(stack_limit);

fn pool_discards_trapped(kind: EngineKind) {
    let module = compile(kind, TRAPS_WAT, env_host(), Limits::default());
    let pool = InstancePool::new(module, 2, || Box::new(()) as Box<dyn Any + Send>);
    {
        let mut a = pool.acquire().unwrap();
        assert_eq!(call1(&mut *a, "ok", &[]).unwrap(), Val::I32(1));
    }
    {
        // Reused, not recreated.
        let mut a = pool.acquire().unwrap();
        assert_eq!(call1(&mut *a, "ok", &[]).unwrap(), Val::I32(1));
        let _b = pool.acquire().unwrap();
        assert!(matches!(pool.acquire(), Err(PoolError::Exhausted(2))));
    }
    assert_eq!(pool.created(), 2);
    assert_eq!(pool.idle(), 2);
    {
        let mut a = pool.acquire().unwrap();
        call0(&mut *a, "die", &[]).unwrap_err();
    }
    assert_eq!(pool.discarded(), 1);
    assert_eq!(pool.idle(), 1);
    {
        let mut a = pool.acquire().unwrap();
        let mut b = pool.acquire().unwrap();
        assert_eq!(pool.created(), 3);
        assert_eq!(call1(&mut *a, "ok", &[]).unwrap(), Val::I32(1));
        assert_eq!(call1(&mut *b, "ok", &[]).unwrap(), Val::I32(1));
        b.poison();
    }
    assert_eq!(pool.discarded(), 2);
    assert_eq!(pool.in_use(), 0);
    // An init hook that fails makes acquire fail and leaves no slot taken.
    let module = compile(kind, TRAPS_WAT, env_host(), Limits::default());
    let pool = InstancePool::new(module, 1, || Box::new(()) as Box<dyn Any + Send>)
        .with_init(|i| i.call_by_name("die", &[], &mut []));
    assert!(
        matches!(pool.acquire(), Err(PoolError::Instantiate(t)) if t.reason == TrapReason::Unreachable)
    );
    assert_eq!(pool.in_use(), 0);
}
parity!(pool_discards_trapped);

fn pool_discards_an_instance_dropped_while_unwinding(kind: EngineKind) {
    let module = compile(kind, TRAPS_WAT, env_host(), Limits::default());
    let pool = InstancePool::new(module, 1, || Box::new(()) as Box<dyn Any + Send>);
    let p = pool.clone();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _held = p.acquire().unwrap();
        panic!("a host bug mid-request");
    }));
    assert!(r.is_err());
    assert_eq!(pool.discarded(), 1);
    assert_eq!(pool.idle(), 0);
    assert_eq!(pool.in_use(), 0);
}
parity!(pool_discards_an_instance_dropped_while_unwinding);

fn pool_recycle_replaces_idle_and_in_use_instances(kind: EngineKind) {
    let module = compile(kind, TRAPS_WAT, env_host(), Limits::default());
    let pool = InstancePool::new(module, 3, || Box::new(()) as Box<dyn Any + Send>);
    {
        let _a = pool.acquire().unwrap();
        let _b = pool.acquire().unwrap();
    }
    assert_eq!(pool.idle(), 2);
    let held = pool.acquire().unwrap();
    pool.recycle();
    // The idle one is gone at once, the held one when it comes back.
    assert_eq!(pool.idle(), 0);
    drop(held);
    assert_eq!(pool.idle(), 0);
    assert_eq!(pool.discarded(), 2);
    // Later requests get fresh instances, which are kept again.
    {
        let mut a = pool.acquire().unwrap();
        assert_eq!(call1(&mut *a, "ok", &[]).unwrap(), Val::I32(1));
    }
    assert_eq!(pool.created(), 3);
    assert_eq!(pool.idle(), 1);
    assert_eq!(pool.in_use(), 0);
}
parity!(pool_recycle_replaces_idle_and_in_use_instances);

/// The lease takes no lock, so this is its concurrency check: threads lease, call, poison
/// and give back instances of a small pool while one of them recycles it. The cap holds at
/// every moment, no instance made before a recycle is handed out after it, and every slot
/// comes back.
fn pool_lease_is_sound_under_contention(kind: EngineKind) {
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    const THREADS: usize = 4;
    const MAX: usize = 3;
    const ROUNDS: u64 = 2000;
    let module = compile(kind, TRAPS_WAT, env_host(), Limits::default());
    let ids = Arc::new(AtomicU64::new(0));
    let next_id = ids.clone();
    let released = Arc::new(AtomicUsize::new(0));
    let hook = released.clone();
    let pool = InstancePool::new(module, MAX, move || {
        Box::new(next_id.fetch_add(1, Ordering::SeqCst) + 1) as Box<dyn Any + Send>
    })
    .with_idle_limit(2)
    .on_release(move || {
        hook.fetch_add(1, Ordering::SeqCst);
    });
    // Instances with an id up to this were made before the last recycle began.
    let retired_up_to = Arc::new(AtomicU64::new(0));
    let held = Arc::new(AtomicUsize::new(0));
    let leases = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (pool, ids, retired_up_to) = (pool.clone(), ids.clone(), retired_up_to.clone());
            let (held, leases) = (held.clone(), leases.clone());
            std::thread::spawn(move || {
                for round in 0..ROUNDS {
                    if t == 0 && round % 50 == 25 {
                        let mark = ids.load(Ordering::SeqCst);
                        pool.recycle();
                        retired_up_to.fetch_max(mark, Ordering::SeqCst);
                    }
                    let retired = retired_up_to.load(Ordering::SeqCst);
                    let mut inst = match pool.acquire() {
                        Ok(i) => i,
                        Err(PoolError::Exhausted(n)) => {
                            assert!(n <= MAX, "{kind}: {n} slots taken");
                            std::thread::yield_now();
                            continue;
                        }
                        Err(e) => panic!("{kind}: {e}"),
                    };
                    leases.fetch_add(1, Ordering::SeqCst);
                    let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                    assert!(now <= MAX, "{kind}: {now} instances held at once");
                    let id = *inst.data().downcast_ref::<u64>().unwrap();
                    assert!(
                        id > retired,
                        "{kind}: instance {id} handed out after a recycle that retired up to {retired}"
                    );
                    assert_eq!(call1(&mut *inst, "ok", &[]).unwrap(), Val::I32(1));
                    if round % 7 == 3 {
                        inst.poison();
                    }
                    held.fetch_sub(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let leases = leases.load(Ordering::SeqCst);
    assert!(leases > 0, "{kind}");
    assert_eq!(pool.in_use(), 0, "{kind}: every slot came back");
    assert!(pool.idle() <= 2, "{kind}: {} idle", pool.idle());
    assert!(
        pool.created() >= pool.discarded() + pool.idle() as u64,
        "{kind}: created {} discarded {} idle {}",
        pool.created(),
        pool.discarded(),
        pool.idle()
    );
    // One release per lease: an acquire that found the pool full took no slot.
    assert_eq!(released.load(Ordering::SeqCst), leases, "{kind}");
}
parity!(pool_lease_is_sound_under_contention);

const GROW_WAT: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "grow") (param i32) (result i32) local.get 0 memory.grow)
  (func (export "size") (result i32) memory.size)
)"#;

fn memory_cap(kind: EngineKind) {
    let limits = Limits {
        max_memory_bytes: 3 * 65536,
        ..Limits::default()
    };
    let module = compile(kind, GROW_WAT, HostFunctions::new(), limits.clone());
    let mut i = module.instantiate(Box::new(())).unwrap();
    let i = i.as_mut();
    assert_eq!(call1(i, "grow", &[Val::I32(1)]).unwrap(), Val::I32(1));
    assert_eq!(call1(i, "grow", &[Val::I32(2)]).unwrap(), Val::I32(-1));
    assert_eq!(call1(i, "grow", &[Val::I32(1)]).unwrap(), Val::I32(2));
    assert_eq!(call1(i, "grow", &[Val::I32(1)]).unwrap(), Val::I32(-1));
    assert_eq!(call1(i, "size", &[]).unwrap(), Val::I32(3));
    assert_eq!(i.memory_size(), 3 * 65536);
    assert!(!i.is_poisoned());
    // A declared maximum above the cap is capped too.
    let wat = r#"(module (memory (export "memory") 1 100)
      (func (export "grow") (param i32) (result i32) local.get 0 memory.grow))"#;
    let mut i = compile(kind, wat, HostFunctions::new(), limits.clone())
        .instantiate(Box::new(()))
        .unwrap();
    assert_eq!(
        call1(i.as_mut(), "grow", &[Val::I32(3)]).unwrap(),
        Val::I32(-1)
    );
    assert_eq!(
        call1(i.as_mut(), "grow", &[Val::I32(2)]).unwrap(),
        Val::I32(1)
    );
    // Initial memory above the cap: instantiation fails clearly.
    let big = r#"(module (memory (export "memory") 4))"#;
    let err = compile(kind, big, HostFunctions::new(), limits)
        .instantiate(Box::new(()))
        .err()
        .expect("must fail");
    assert_eq!(err.reason, TrapReason::MemoryLimit);
    assert_eq!(err.export, INSTANTIATE);
    assert_eq!(err.engine, kind);
}
parity!(memory_cap);

const LOOP_WAT: &str = r#"(module
  (import "env" "nop" (func $nop))
  (func (export "spin") (loop br 0))
  (func (export "spin_host") (loop call $nop br 0))
  (func (export "ok") (result i32) i32.const 5)
)"#;

fn assert_deadline(i: &mut dyn Instance, export: &str, deadline: Duration) {
    let start = Instant::now();
    let err = call0(i, export, &[]).unwrap_err();
    let elapsed = start.elapsed();
    assert_eq!(err.reason, TrapReason::Deadline, "{err}");
    assert_eq!(err.export, export);
    assert!(
        elapsed >= deadline - Duration::from_millis(10),
        "stopped early: {elapsed:?}"
    );
    // Generous: the machines are shared and noisy; a runaway that is not stopped never returns.
    assert!(
        elapsed <= deadline + Duration::from_secs(2),
        "stopped {:?} after the deadline",
        elapsed - deadline
    );
}

fn deadline(kind: EngineKind) {
    let d = Duration::from_millis(200);
    let limits = Limits {
        call_deadline: d,
        ..Limits::default()
    };
    let module = compile(kind, LOOP_WAT, env_host(), limits);
    let mut i = module.instantiate(Box::new(())).unwrap();
    assert_deadline(i.as_mut(), "spin", d);
    assert!(i.is_poisoned());
    let mut j = module.instantiate(Box::new(())).unwrap();
    assert_deadline(j.as_mut(), "spin_host", d);
    // Other instances of the module are unaffected, and fast calls stay fast.
    let mut k = module.instantiate(Box::new(())).unwrap();
    for _ in 0..1000 {
        assert_eq!(call1(k.as_mut(), "ok", &[]).unwrap(), Val::I32(5));
    }
    // An instance moved to another thread still works and still stops.
    let handle = std::thread::spawn(move || {
        assert_eq!(call1(k.as_mut(), "ok", &[]).unwrap(), Val::I32(5));
        assert_deadline(k.as_mut(), "spin", d);
    });
    handle.join().unwrap();
}
parity!(deadline);

/// A runaway instance is stopped without touching instances busy on other threads.
fn deadline_hits_only_the_runaway(kind: EngineKind) {
    let d = Duration::from_millis(150);
    let limits = Limits {
        call_deadline: d,
        ..Limits::default()
    };
    let module = compile(kind, LOOP_WAT, env_host(), limits);
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let mut i = module.instantiate(Box::new(())).unwrap();
            std::thread::spawn(move || {
                let until = Instant::now() + Duration::from_millis(400);
                let mut calls = 0u64;
                while Instant::now() < until {
                    assert_eq!(call1(i.as_mut(), "ok", &[]).unwrap(), Val::I32(5));
                    calls += 1;
                }
                calls
            })
        })
        .collect();
    let runaway: Vec<_> = (0..2)
        .map(|_| {
            let mut i = module.instantiate(Box::new(())).unwrap();
            std::thread::spawn(move || assert_deadline(i.as_mut(), "spin", d))
        })
        .collect();
    for h in runaway {
        h.join().unwrap();
    }
    for h in busy {
        assert!(h.join().unwrap() > 0);
    }
}
parity!(deadline_hits_only_the_runaway);

const STRESS_WAT: &str = r#"(module
  (import "env" "nop" (func $nop))
  (import "stress" "now_us" (func $now (result i64)))
  (import "stress" "reenter" (func $reenter (param i32)))
  (func $spin (export "spin") (param $n i32)
    (loop
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br_if 0 (i32.gt_s (local.get $n) (i32.const 0)))))
  ;; Until now_us() reaches $until: guest loops of $n iterations between
  ;; host calls, and with $nested a host call that runs a guest loop itself.
  (func (export "work") (param $until i64) (param $n i32) (param $nested i32)
    (loop
      (call $spin (local.get $n))
      (call $nop)
      (if (local.get $nested) (then (call $reenter (local.get $n))))
      (br_if 0 (i64.lt_u (call $now) (local.get $until)))))
)"#;

/// The clock `stress.now_us` gives the guest, in microseconds.
fn stress_now_us() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_micros() as u64
}

fn stress_host() -> HostFunctions {
    let mut h = env_host();
    h.func_wrap(
        "stress",
        "now_us",
        |_c: &mut dyn Caller| -> Result<u64, HostError> { Ok(stress_now_us()) },
    )
    .func_wrap(
        "stress",
        "reenter",
        |c: &mut dyn Caller, n: i32| -> Result<(), HostError> {
            c.call("spin", &[Val::I32(n)], &mut [])?;
            Ok(())
        },
    );
    h
}

/// Many calls whose length is about the deadline, on several threads, in
/// and out of host functions and nested guest calls: the deadline may hit
/// anywhere, in guest code, in a host function or right after one. Every
/// call must end, either done or with a deadline trap (on wasmer, a signal
/// landing in the engine's own code used to hang or abort the process).
fn deadline_stress(kind: EngineKind) {
    let d = Duration::from_millis(20);
    let limits = Limits {
        call_deadline: d,
        ..Limits::default()
    };
    let module = compile(kind, STRESS_WAT, stress_host(), limits);
    let (tx, rx) = std::sync::mpsc::channel();
    let threads = 4;
    for t in 0..threads {
        let module = module.clone();
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut rng = 0x9E37_79B9u32.wrapping_mul(t + 1);
            let mut next = move || {
                rng ^= rng << 13;
                rng ^= rng >> 17;
                rng ^= rng << 5;
                rng
            };
            let base = Instant::now();
            let mut inst = module.instantiate(Box::new(0u32)).unwrap();
            let (mut done, mut stopped) = (0u32, 0u32);
            while base.elapsed() < Duration::from_millis(1500) {
                if inst.is_poisoned() {
                    inst = module.instantiate(Box::new(0u32)).unwrap();
                }
                // 0.5 to 1.5 times the deadline.
                let len = d / 2 + d * (next() % 1000) / 1000;
                let n = [100, 5_000, 50_000, 500_000][(next() % 4) as usize];
                let nested = (next() % 2) as i32;
                let until = stress_now_us() + len.as_micros() as u64;
                let started = Instant::now();
                match inst.call_by_name(
                    "work",
                    &[Val::I64(until as i64), Val::I32(n), Val::I32(nested)],
                    &mut [],
                ) {
                    Ok(()) => done += 1,
                    Err(t) => {
                        assert_eq!(t.reason, TrapReason::Deadline, "{t}");
                        // Never early, even with more busy threads than
                        // cores: the deadline threads may wake late, and
                        // then deadlines run late, never short.
                        let ran = started.elapsed();
                        assert!(ran >= d, "{kind}: stopped after {ran:?}, deadline {d:?}");
                        stopped += 1;
                    }
                }
            }
            tx.send((done, stopped)).unwrap();
        });
    }
    drop(tx);
    let (mut done, mut stopped) = (0, 0);
    for _ in 0..threads {
        // A hung call never reports: fail instead of hanging the suite.
        let (a, b) = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("a deadline stress thread hung");
        done += a;
        stopped += b;
    }
    // Both outcomes happened, so deadlines did hit calls in flight.
    assert!(done > 0 && stopped > 0, "done {done}, stopped {stopped}");
}
parity!(deadline_stress);

fn missing_imports(kind: EngineKind) {
    let wat = r#"(module
      (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
      (import "env" "nope" (func (param i32)))
      (import "env" "nop" (func (param i32)))
      (import "env" "tbl" (table 1 funcref))
      (memory (export "memory") 1)
      (func (export "handle_request") (result i64) i64.const 1))"#;
    let mut host = env_host();
    host.extend(wasi::functions(Arc::new(|_, _| {})));
    let bin = wat::parse_str(wat).unwrap();
    let info = ModuleInfo::parse(&bin).unwrap();
    assert_eq!(
        info.export_func("handle_request"),
        Some(&FuncType::new([], [ValType::I64]))
    );
    assert!(info.has_export("memory"));
    assert!(info.imports_module("wasi_snapshot_preview1"));
    let missing = info.missing_imports(&host);
    let names: Vec<String> = missing
        .iter()
        .map(|m| format!("{}.{}", m.module, m.name))
        .collect();
    assert_eq!(names, ["env.nope", "env.nop", "env.tbl"]);
    assert_eq!(missing[1].host_has, Some(FuncType::new([], [])));
    match engine(kind).compile(&bin, Arc::new(host), Limits::default()) {
        Err(EngineError::MissingImports(m)) => {
            assert_eq!(m, missing);
            let text = EngineError::MissingImports(m).to_string();
            assert!(
                text.contains("env.nope") && text.contains("env.tbl"),
                "{text}"
            );
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("compiled with missing imports"),
    }
    // Invalid bytes are a load error too.
    assert!(matches!(
        engine(kind).compile(
            b"\0asm\x01\0\0\0\xff",
            Arc::new(HostFunctions::new()),
            Limits::default()
        ),
        Err(EngineError::Invalid(_))
    ));
}
parity!(missing_imports);

fn cache_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wgc"))
        .collect()
}

fn cache(kind: EngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let opts = EngineOptions {
        cache_dir: Some(dir.path().to_path_buf()),
        pool_instances: 4,
        ..EngineOptions::default()
    };
    let check = |m: &Arc<dyn CompiledModule>| {
        let mut i = m.instantiate(Box::new(())).unwrap();
        assert_eq!(
            call1(i.as_mut(), "add_i32", &[Val::I32(2), Val::I32(3)]).unwrap(),
            Val::I32(5)
        );
    };
    let host = Arc::new(HostFunctions::new());
    let e1 = new_engine(kind, opts.clone()).unwrap();
    let m = e1
        .compile(TYPES_WAT.as_bytes(), host.clone(), Limits::default())
        .unwrap();
    assert!(!m.loaded_from_cache());
    check(&m);
    let files = cache_files(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with(kind.as_str()));
    // A restart (new engine, same directory) loads from cache.
    let e2 = new_engine(kind, opts.clone()).unwrap();
    let m = e2
        .compile(TYPES_WAT.as_bytes(), host.clone(), Limits::default())
        .unwrap();
    assert!(m.loaded_from_cache());
    check(&m);
    // Different limits (stack) are a different key.
    let other = Limits {
        max_stack_bytes: 256 << 10,
        ..Limits::default()
    };
    assert!(!e2
        .compile(TYPES_WAT.as_bytes(), host.clone(), other)
        .unwrap()
        .loaded_from_cache());
    assert_eq!(cache_files(dir.path()).len(), 2);
    let good = std::fs::read(&files[0]).unwrap();
    // Garbage: ignored, recompiled, rewritten.
    std::fs::write(&files[0], b"definitely not an artifact").unwrap();
    let m = e2
        .compile(TYPES_WAT.as_bytes(), host.clone(), Limits::default())
        .unwrap();
    assert!(!m.loaded_from_cache());
    check(&m);
    assert_eq!(std::fs::read(&files[0]).unwrap().len(), good.len());
    assert!(e2
        .compile(TYPES_WAT.as_bytes(), host.clone(), Limits::default())
        .unwrap()
        .loaded_from_cache());
    // One flipped byte inside the artifact: checksum mismatch, same recovery.
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x55;
    std::fs::write(&files[0], &bad).unwrap();
    let m = e2
        .compile(TYPES_WAT.as_bytes(), host.clone(), Limits::default())
        .unwrap();
    assert!(!m.loaded_from_cache());
    check(&m);
    assert!(e2
        .compile(TYPES_WAT.as_bytes(), host.clone(), Limits::default())
        .unwrap()
        .loaded_from_cache());
    // The other engine's artifact under this engine's name is foreign: ignored.
    let other_kind = if kind == EngineKind::Wasmtime {
        EngineKind::Wasmer
    } else {
        EngineKind::Wasmtime
    };
    let odir = tempfile::tempdir().unwrap();
    let oe = new_engine(
        other_kind,
        EngineOptions {
            cache_dir: Some(odir.path().to_path_buf()),
            pool_instances: 4,
            ..EngineOptions::default()
        },
    )
    .unwrap();
    oe.compile(TYPES_WAT.as_bytes(), host.clone(), Limits::default())
        .unwrap();
    let foreign = std::fs::read(&cache_files(odir.path())[0]).unwrap();
    std::fs::write(&files[0], &foreign).unwrap();
    let m = e2
        .compile(TYPES_WAT.as_bytes(), host, Limits::default())
        .unwrap();
    assert!(!m.loaded_from_cache());
    check(&m);
}
parity!(cache);

/// A cache directory others can write, or another user owns, is not used;
/// compiling still works and writes nothing there.
fn cache_refuses_untrusted_dirs(kind: EngineKind) {
    use std::os::unix::fs::PermissionsExt;
    let host = Arc::new(HostFunctions::new());
    let compile_in = |dir: &std::path::Path| {
        let e = new_engine(
            kind,
            EngineOptions {
                cache_dir: Some(dir.to_path_buf()),
                pool_instances: 4,
                ..EngineOptions::default()
            },
        )
        .unwrap();
        for _ in 0..2 {
            let m = e
                .compile(TYPES_WAT.as_bytes(), host.clone(), Limits::default())
                .unwrap();
            assert!(!m.loaded_from_cache());
            let mut i = m.instantiate(Box::new(())).unwrap();
            assert_eq!(call1(i.as_mut(), "const_i32", &[]).unwrap(), Val::I32(42));
        }
        assert_eq!(
            std::fs::read_dir(dir).unwrap().count(),
            0,
            "wrote into {dir:?}"
        );
    };
    for mode in [0o770, 0o777] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        compile_in(dir.path());
    }
    // chown needs root; as another user the unit tests cover the check.
    let dir = tempfile::tempdir().unwrap();
    if std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).is_ok() {
        compile_in(dir.path());
    }
}
parity!(cache_refuses_untrusted_dirs);

/// The cache directory is created private, and artifacts beyond the cap are
/// evicted oldest first.
fn cache_is_private_and_capped(kind: EngineKind) {
    use std::os::unix::fs::MetadataExt;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("wasmgate");
    let opts = EngineOptions {
        cache_dir: Some(dir.clone()),
        pool_instances: 4,
        ..EngineOptions::default()
    };
    let host = Arc::new(HostFunctions::new());
    let e = new_engine(kind, opts.clone()).unwrap();
    assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
    e.compile(TYPES_WAT.as_bytes(), host.clone(), Limits::default())
        .unwrap();
    let first = cache_files(&dir);
    assert_eq!(first.len(), 1);
    let size = std::fs::metadata(&first[0]).unwrap().len();
    // Room for one and a half artifacts: each store keeps only the newest.
    let e = new_engine(
        kind,
        EngineOptions {
            cache_max_bytes: size * 3 / 2,
            ..opts
        },
    )
    .unwrap();
    let stack = |kib: usize| Limits {
        max_stack_bytes: kib << 10,
        ..Limits::default()
    };
    for kib in [256, 384] {
        let m = e
            .compile(TYPES_WAT.as_bytes(), host.clone(), stack(kib))
            .unwrap();
        assert!(!m.loaded_from_cache());
        let now = cache_files(&dir);
        assert_eq!(now.len(), 1, "{now:?}");
        assert!(!now.contains(&first[0]), "the oldest stays: {now:?}");
        assert!(e
            .compile(TYPES_WAT.as_bytes(), host.clone(), stack(kib))
            .unwrap()
            .loaded_from_cache());
    }
    assert!(!e
        .compile(TYPES_WAT.as_bytes(), host.clone(), Limits::default())
        .unwrap()
        .loaded_from_cache());
}
parity!(cache_is_private_and_capped);

const WASI_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $prestat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $env_sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 8) "hello\n")
  (data (i32.const 16) "oops")
  (func (export "_start")
    ;; iovec at 0: {ptr 8, len 6}
    (i32.store (i32.const 0) (i32.const 8))
    (i32.store (i32.const 4) (i32.const 6))
    (i32.store (i32.const 100) (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 104)))
    ;; stderr
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 4))
    (i32.store (i32.const 108) (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 104)))
    (i32.store (i32.const 112) (call $fd_write (i32.const 7) (i32.const 0) (i32.const 1) (i32.const 104)))
    (i32.store (i32.const 116) (call $clock (i32.const 0) (i64.const 1) (i32.const 200)))
    (i32.store (i32.const 120) (call $clock (i32.const 1) (i64.const 1) (i32.const 208)))
    (i32.store (i32.const 124) (call $random (i32.const 300) (i32.const 64)))
    (i32.store (i32.const 128) (call $path_open (i32.const 3) (i32.const 0) (i32.const 8) (i32.const 5)
      (i32.const 0) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 400)))
    (i32.store (i32.const 132) (call $prestat (i32.const 3) (i32.const 400)))
    (i32.store (i32.const 136) (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 140)))
    (i32.store (i32.const 144) (call $env_sizes (i32.const 148) (i32.const 152)))
    ;; bad pointer: FAULT, no trap
    (i32.store (i32.const 156) (call $fd_write (i32.const 1) (i32.const 70000) (i32.const 1) (i32.const 104)))
    (call $exit (i32.const 0))
    unreachable)
  (func (export "fail_exit") (call $exit (i32.const 3)))
)"#;

fn read_u32(i: &dyn Instance, p: u32) -> u32 {
    u32::from_le_bytes(i.read(p, 4).unwrap().try_into().unwrap())
}

fn read_u64(i: &dyn Instance, p: u32) -> u64 {
    u64::from_le_bytes(i.read(p, 8).unwrap().try_into().unwrap())
}

fn wasi_preview1(kind: EngineKind) {
    type Log = Mutex<Vec<(WasiStream, Vec<u8>)>>;
    let log: Arc<Log> = Arc::default();
    let sink_log = log.clone();
    let host = wasi::functions(Arc::new(move |s, b| {
        sink_log.lock().unwrap().push((s, b.to_vec()))
    }));
    let module = compile(kind, WASI_WAT, host, Limits::default());
    let mut i = module.instantiate(Box::new(())).unwrap();
    let err = call0(i.as_mut(), "_start", &[]).unwrap_err();
    assert_eq!(err.reason, TrapReason::Exit(0));
    assert!(err.is_success_exit());
    assert!(!i.is_poisoned(), "exit(0) keeps the instance");
    let i = i.as_ref();
    assert_eq!(
        *log.lock().unwrap(),
        vec![
            (WasiStream::Stdout, b"hello".to_vec()),
            (WasiStream::Stderr, b"oops".to_vec())
        ]
    );
    assert_eq!(read_u32(i, 100), 0);
    assert_eq!(read_u32(i, 108), 0);
    assert_eq!(read_u32(i, 104), 4, "nwritten");
    assert_eq!(read_u32(i, 112), wasi::errno::BADF as u32);
    assert_eq!(read_u32(i, 116), 0);
    assert_eq!(read_u32(i, 120), 0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let realtime = read_u64(i, 200);
    assert!(
        realtime <= now && now - realtime < 60_000_000_000,
        "realtime {realtime} vs {now}"
    );
    assert!(read_u64(i, 208) > 0);
    assert_eq!(read_u32(i, 124), 0);
    let random = i.read(300, 64).unwrap();
    assert!(
        random.iter().filter(|b| **b == 0).count() < 16,
        "{random:?}"
    );
    assert_eq!(
        read_u32(i, 128),
        wasi::errno::BADF as u32,
        "path_open refused"
    );
    assert_eq!(read_u32(i, 132), wasi::errno::BADF as u32, "no preopens");
    assert_eq!(read_u32(i, 136), 0);
    assert_eq!(read_u32(i, 140), 0, "stdin is empty");
    assert_eq!(read_u32(i, 144), 0);
    assert_eq!(
        (read_u32(i, 148), read_u32(i, 152)),
        (0, 0),
        "no environment"
    );
    assert_eq!(read_u32(i, 156), wasi::errno::FAULT as u32);
    // A non-zero exit is a failure and poisons the instance.
    let mut j = module.instantiate(Box::new(())).unwrap();
    let err = call0(j.as_mut(), "fail_exit", &[]).unwrap_err();
    assert_eq!(err.reason, TrapReason::Exit(3));
    assert!(!err.is_success_exit());
    assert!(j.is_poisoned());
    // Monotonic clock advances between calls.
    let mut k = module.instantiate(Box::new(())).unwrap();
    let _ = call0(k.as_mut(), "_start", &[]);
    let t1 = read_u64(k.as_ref(), 208);
    std::thread::sleep(Duration::from_millis(2));
    let _ = call0(k.as_mut(), "_start", &[]);
    assert!(read_u64(k.as_ref(), 208) > t1);
}
parity!(wasi_preview1);

fn wasi_unstable_links(kind: EngineKind) {
    let wat = r#"(module
      (import "wasi_unstable" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
      (import "wasi_unstable" "proc_exit" (func $exit (param i32)))
      (import "wasi_snapshot_preview1" "sched_yield" (func $y (result i32)))
      (import "wasi_snapshot_preview1" "poll_oneoff" (func $p (param i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "args_sizes_get" (func $a (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_fdstat_get" (func $s (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "sock_send" (func $ss (param i32 i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 8) "hi")
      (func (export "run") (result i32)
        (i32.store (i32.const 0) (i32.const 8))
        (i32.store (i32.const 4) (i32.const 2))
        (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 100)))
        (i32.store (i32.const 104) (call $y))
        (i32.store (i32.const 108) (call $p (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)))
        (i32.store (i32.const 112) (call $s (i32.const 1) (i32.const 200)))
        (i32.store (i32.const 116) (call $ss (i32.const 5) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)))
        (i32.load (i32.const 100))))"#;
    let out: Arc<Mutex<Vec<u8>>> = Arc::default();
    let o = out.clone();
    let host = wasi::functions(Arc::new(move |_, b| o.lock().unwrap().extend_from_slice(b)));
    let mut i = compile(kind, wat, host, Limits::default())
        .instantiate(Box::new(()))
        .unwrap();
    assert_eq!(call1(i.as_mut(), "run", &[]).unwrap(), Val::I32(2));
    assert_eq!(*out.lock().unwrap(), b"hi");
    let i = i.as_ref();
    assert_eq!(read_u32(i, 104), 0);
    assert_eq!(
        read_u32(i, 108),
        wasi::errno::INVAL as u32,
        "no subscriptions"
    );
    assert_eq!(read_u32(i, 112), 0);
    assert_eq!(i.read(200, 1).unwrap()[0], 2, "character device");
    assert_eq!(read_u32(i, 116), wasi::errno::BADF as u32);
}
parity!(wasi_unstable_links);

const START_WAT: &str = r#"(module
  (import "env" "give" (func $give (result i32)))
  (memory (export "memory") 1)
  (global $given (mut i32) (i32.const 0))
  (global $order (mut i32) (i32.const 0))
  (func $malloc (export "malloc") (param i32) (result i32) i32.const 1024)
  ;; The start function calls a host function that writes into memory.
  (func $start (global.set $given (call $give)) (global.set $order (i32.const 1)))
  (start $start)
  (func (export "_start") (global.set $order (i32.mul (global.get $order) (i32.const 10))))
  (func (export "given") (result i32) global.get $given)
  (func (export "order") (result i32) global.get $order)
)"#;

fn start_section_reaches_memory(kind: EngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let opts = EngineOptions {
        cache_dir: Some(dir.path().to_path_buf()),
        pool_instances: 4,
        ..EngineOptions::default()
    };
    for from_cache in [false, true] {
        let e = new_engine(kind, opts.clone()).unwrap();
        let m = e
            .compile(
                START_WAT.as_bytes(),
                Arc::new(env_host()),
                Limits::default(),
            )
            .unwrap();
        assert_eq!(m.loaded_from_cache(), from_cache);
        // The rewrite does not show: the module's own exports only.
        assert!(!m.info().has_export(START_EXPORT));
        assert!(m.info().start.is_some());
        let mut i = m.instantiate(Box::new(0u32)).unwrap();
        let i = i.as_mut();
        // The start function ran once, reached memory through the host and
        // re-entered the guest's malloc.
        assert_eq!(*i.data().downcast_mut::<u32>().unwrap(), 1);
        assert_eq!(call1(i, "given", &[]).unwrap(), Val::I32(1024));
        assert_eq!(i.read(1024, 5).unwrap(), b"hello");
        // Before `_start`, which the host calls afterwards.
        assert_eq!(call1(i, "order", &[]).unwrap(), Val::I32(1));
        call0(i, "_start", &[]).unwrap();
        assert_eq!(call1(i, "order", &[]).unwrap(), Val::I32(10));
    }
    // A trap in the start function fails the instantiation, naming it.
    let wat = r#"(module (import "env" "fail" (func $f)) (memory (export "memory") 1)
      (func $s (call $f)) (start $s))"#;
    let err = compile(kind, wat, env_host(), Limits::default())
        .instantiate(Box::new(0u32))
        .err()
        .expect("must fail");
    assert_eq!(err.export, START_SECTION);
    assert_eq!(err.reason, TrapReason::HostError("boom from host".into()));
    let wat = r#"(module (func $s unreachable) (start $s))"#;
    let err = compile(kind, wat, HostFunctions::new(), Limits::default())
        .instantiate(Box::new(()))
        .err()
        .expect("must fail");
    assert_eq!(
        (err.export.as_str(), err.reason),
        (START_SECTION, TrapReason::Unreachable)
    );
    // A runaway start function stops at the deadline.
    let limits = Limits {
        call_deadline: Duration::from_millis(50),
        ..Limits::default()
    };
    let wat = r#"(module (func $s (loop br 0)) (start $s))"#;
    let err = compile(kind, wat, HostFunctions::new(), limits)
        .instantiate(Box::new(()))
        .err()
        .expect("must fail");
    assert_eq!(err.reason, TrapReason::Deadline);
    // The reserved name is refused with a clear error.
    let wat = format!(r#"(module (func $s) (export "{START_EXPORT}" (func $s)) (start $s))"#);
    let err = compile_error(kind, &wat, Limits::default());
    assert!(err.contains("reserves"), "{err}");
}
parity!(start_section_reaches_memory);

const TABLE_WAT: &str = r#"(module
  (table $t 1 funcref)
  (func (export "grow") (param i32) (result i32) (table.grow $t (ref.null func) (local.get 0)))
  (func (export "size") (result i32) (table.size $t))
)"#;

fn table_cap(kind: EngineKind) {
    let mut i = instance(kind, TABLE_WAT, HostFunctions::new());
    let i = i.as_mut();
    // A huge request fails the way the spec says: -1, table unchanged.
    assert_eq!(call1(i, "grow", &[Val::I32(-1)]).unwrap(), Val::I32(-1));
    assert_eq!(
        call1(i, "grow", &[Val::I32(1 << 30)]).unwrap(),
        Val::I32(-1)
    );
    let cap = MAX_TABLE_ELEMENTS as i32;
    assert_eq!(call1(i, "grow", &[Val::I32(cap)]).unwrap(), Val::I32(-1));
    assert_eq!(call1(i, "size", &[]).unwrap(), Val::I32(1));
    // Up to the cap is fine.
    assert_eq!(call1(i, "grow", &[Val::I32(cap - 1)]).unwrap(), Val::I32(1));
    assert_eq!(call1(i, "size", &[]).unwrap(), Val::I32(cap));
    assert_eq!(call1(i, "grow", &[Val::I32(1)]).unwrap(), Val::I32(-1));
    assert!(!i.is_poisoned());
    // A declared minimum above the cap: the module is refused clearly.
    let wat = format!("(module (table {} funcref))", MAX_TABLE_ELEMENTS + 1);
    let err = compile_error(kind, &wat, Limits::default());
    assert!(
        err.contains("table of 1000001 elements exceeds the limit of 1000000"),
        "{err}"
    );
}
parity!(table_cap);

/// What a WASI sink received, record by record.
type StdioLog = Arc<Mutex<Vec<(WasiStream, Vec<u8>)>>>;

fn wasi_host(log: &StdioLog) -> HostFunctions {
    let sink_log = log.clone();
    wasi::functions(Arc::new(move |s, b| {
        sink_log.lock().unwrap().push((s, b.to_vec()))
    }))
}

const FD_WRITE_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 17)
  (data (i32.const 64) "memory allocation of 2097152 bytes failed\nnext")
  ;; write(fd, ptr, len) -> errno; nwritten at 8.
  (func $write (export "write") (param $fd i32) (param $p i32) (param $n i32) (result i32)
    (i32.store (i32.const 0) (local.get $p))
    (i32.store (i32.const 4) (local.get $n))
    (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))
  ;; Rust's allocation-failure message arrives in three writes, then the
  ;; start of another line that the call leaves unfinished.
  (func (export "three_writes")
    (drop (call $write (i32.const 2) (i32.const 64) (i32.const 21)))
    (drop (call $write (i32.const 2) (i32.const 85) (i32.const 7)))
    (drop (call $write (i32.const 2) (i32.const 92) (i32.const 18))))
  ;; 10000 iovecs at 4096, each the 1 MiB region at 65536.
  (func (export "huge") (result i32)
    (local $i i32)
    (loop $l
      (i32.store (i32.add (i32.const 4096) (i32.mul (local.get $i) (i32.const 8))) (i32.const 65536))
      (i32.store (i32.add (i32.const 4100) (i32.mul (local.get $i) (i32.const 8))) (i32.const 1048576))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 10000))))
    (drop (call $fd_write (i32.const 1) (i32.const 4096) (i32.const 10000) (i32.const 8)))
    (i32.load (i32.const 8)))
)"#;

fn wasi_lines(kind: EngineKind) {
    let log: StdioLog = Arc::default();
    let module = compile(kind, FD_WRITE_WAT, wasi_host(&log), Limits::default());
    let mut i = module.instantiate(Box::new(())).unwrap();
    call0(i.as_mut(), "three_writes", &[]).unwrap();
    // One record for the line; the unfinished "next" when the call returned.
    assert_eq!(
        *log.lock().unwrap(),
        vec![
            (
                WasiStream::Stderr,
                b"memory allocation of 2097152 bytes failed".to_vec()
            ),
            (WasiStream::Stderr, b"next".to_vec()),
        ]
    );
    log.lock().unwrap().clear();
    // A write without newline inside a call is logged when the instance goes.
    let text = 64 + 21 + 7 + 14;
    assert_eq!(
        call1(
            i.as_mut(),
            "write",
            &[Val::I32(1), Val::I32(text), Val::I32(4)]
        )
        .unwrap(),
        Val::I32(0)
    );
    assert_eq!(
        *log.lock().unwrap(),
        vec![(WasiStream::Stdout, b"next".to_vec())]
    );
    log.lock().unwrap().clear();
    // A line longer than the pending cap is cut into records of the cap.
    // 200 KiB of zero bytes from the data-less part of memory, no newline.
    for _ in 0..4 {
        let r = call1(
            i.as_mut(),
            "write",
            &[Val::I32(1), Val::I32(65536), Val::I32(50 << 10)],
        );
        assert_eq!(r.unwrap(), Val::I32(0));
    }
    let sizes: Vec<usize> = log.lock().unwrap().iter().map(|(_, b)| b.len()).collect();
    // Each call's 50 KiB is flushed when it returns (below the cap).
    assert_eq!(sizes, vec![50 << 10; 4]);
    drop(i);
}
parity!(wasi_lines);

fn wasi_write_is_capped(kind: EngineKind) {
    let log: StdioLog = Arc::default();
    let module = compile(kind, FD_WRITE_WAT, wasi_host(&log), Limits::default());
    let mut i = module.instantiate(Box::new(())).unwrap();
    let start = Instant::now();
    // 10000 × 1 MiB asked for; one call takes 64 KiB and says so.
    let n = call1(i.as_mut(), "huge", &[]).unwrap();
    assert_eq!(n, Val::I32(wasi::MAX_WRITE_BYTES as i32));
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    let total: usize = log.lock().unwrap().iter().map(|(_, b)| b.len()).sum();
    assert_eq!(total, wasi::MAX_WRITE_BYTES);
    // The pending-line cap holds without a call boundary too.
    let mut lines = wasi::StdioLines::default();
    let seen: Arc<Mutex<Vec<usize>>> = Arc::default();
    let s = seen.clone();
    let sink: wasi::LogSink = Arc::new(move |_, b| s.lock().unwrap().push(b.len()));
    for _ in 0..3 {
        lines.write(&sink, WasiStream::Stdout, &[b'x'; 50 << 10]);
    }
    assert_eq!(
        *seen.lock().unwrap(),
        vec![wasi::MAX_PENDING_LINE, wasi::MAX_PENDING_LINE]
    );
    lines.write(&sink, WasiStream::Stdout, b"y\nz");
    drop(lines);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            wasi::MAX_PENDING_LINE,
            wasi::MAX_PENDING_LINE,
            (150 << 10) - 2 * wasi::MAX_PENDING_LINE + 1,
            1
        ]
    );
}
parity!(wasi_write_is_capped);

const BIG_MEMORY_WAT: &str = r#"(module
  (memory (export "memory") 1)
  ;; Grows to 100 MiB and writes its last byte.
  (func (export "grow_big") (result i32)
    (if (i32.eq (memory.grow (i32.const 1599)) (i32.const -1)) (then (return (i32.const -1))))
    (i32.store8 (i32.const 104857599) (i32.const 7))
    (i32.load8_u (i32.const 104857599)))
)"#;

fn default_memory_fits_real_plugins(kind: EngineKind) {
    // Default limits, default engine options: more than 64 MiB works.
    let mut i = instance(kind, BIG_MEMORY_WAT, HostFunctions::new());
    assert_eq!(call1(i.as_mut(), "grow_big", &[]).unwrap(), Val::I32(7));
    assert_eq!(i.memory_size(), 100 << 20);
    assert_eq!(Limits::default().max_memory_bytes, DEFAULT_MAX_MEMORY_BYTES);
    // The documented maximum is accepted; above it is refused clearly.
    let e = engine(kind);
    let host = Arc::new(HostFunctions::new());
    let max = Limits {
        max_memory_bytes: MAX_MEMORY_BYTES,
        ..Limits::default()
    };
    let mut i = e
        .compile(BIG_MEMORY_WAT.as_bytes(), host.clone(), max)
        .unwrap()
        .instantiate(Box::new(()))
        .unwrap();
    assert_eq!(call1(i.as_mut(), "grow_big", &[]).unwrap(), Val::I32(7));
    let over = Limits {
        max_memory_bytes: MAX_MEMORY_BYTES + 1,
        ..Limits::default()
    };
    let err = e
        .compile(BIG_MEMORY_WAT.as_bytes(), host, over)
        .err()
        .expect("must fail")
        .to_string();
    assert!(err.contains("4 GiB"), "{err}");
}
parity!(default_memory_fits_real_plugins);

const POLL_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "poll") (param i32 i32 i32 i32) (result i32)
    (call $poll (local.get 0) (local.get 1) (local.get 2) (local.get 3)))
  ;; The guest's monotonic clock.
  (func (export "now") (result i64)
    (drop (call $clock (i32.const 1) (i64.const 0) (i32.const 0)))
    (i64.load (i32.const 0)))
)"#;

/// Where the poll tests put subscriptions, events and `nevents`.
const SUBS: u32 = 1024;
const EVENTS: u32 = 4096;
const NEVENTS: u32 = 8192;

/// A clock subscription: (userdata, clock id, timeout ns, abstime).
fn clock_sub(userdata: u64, id: u32, timeout: u64, abstime: bool) -> [u8; 48] {
    let mut b = [0u8; 48];
    b[0..8].copy_from_slice(&userdata.to_le_bytes());
    b[8] = 0; // tag: clock
    b[16..20].copy_from_slice(&id.to_le_bytes());
    b[24..32].copy_from_slice(&timeout.to_le_bytes());
    b[32..40].copy_from_slice(&1_000u64.to_le_bytes()); // precision: ignored
    b[40..42].copy_from_slice(&(abstime as u16).to_le_bytes());
    b
}

/// An fd_read (tag 1) or fd_write (tag 2) subscription.
fn fd_sub(userdata: u64, tag: u8, fd: u32) -> [u8; 48] {
    let mut b = [0u8; 48];
    b[0..8].copy_from_slice(&userdata.to_le_bytes());
    b[8] = tag;
    b[16..20].copy_from_slice(&fd.to_le_bytes());
    b
}

/// A decoded event: (userdata, error, type, nbytes, flags).
type Event = (u64, u16, u8, u64, u16);

/// Writes the subscriptions, calls `poll_oneoff`, returns errno, the events
/// and how long it took.
fn poll(i: &mut dyn Instance, subs: &[[u8; 48]]) -> (Result<i32, Trap>, Vec<Event>, Duration) {
    for (k, sub) in subs.iter().enumerate() {
        i.write(SUBS + 48 * k as u32, sub).unwrap();
    }
    i.write(EVENTS, &[0xEE; 32 * 8]).unwrap();
    i.write(NEVENTS, &[0xEE; 4]).unwrap();
    let start = Instant::now();
    let r = call1(
        i,
        "poll",
        &[
            Val::I32(SUBS as i32),
            Val::I32(EVENTS as i32),
            Val::I32(subs.len() as i32),
            Val::I32(NEVENTS as i32),
        ],
    )
    .map(|v| v.i32().unwrap());
    let took = start.elapsed();
    let mut events = Vec::new();
    if r == Ok(0) {
        for k in 0..read_u32(i, NEVENTS) {
            let e = i.read(EVENTS + 32 * k, 32).unwrap();
            let u16_at = |at: usize| u16::from_le_bytes([e[at], e[at + 1]]);
            let u64_at = |at: usize| u64::from_le_bytes(e[at..at + 8].try_into().unwrap());
            events.push((u64_at(0), u16_at(8), e[10], u64_at(16), u16_at(24)));
        }
    }
    (r, events, took)
}

fn poll_instance(kind: EngineKind, call_deadline: Duration) -> Box<dyn Instance> {
    let limits = Limits {
        call_deadline,
        ..Limits::default()
    };
    compile(kind, POLL_WAT, wasi_host(&StdioLog::default()), limits)
        .instantiate(Box::new(()))
        .unwrap()
}

const MS: u64 = 1_000_000;

/// `time.Sleep` in Go and TinyGo: one relative clock subscription.
fn poll_relative_sleep(kind: EngineKind) {
    let mut i = poll_instance(kind, Duration::from_secs(10));
    for id in [1, 0] {
        let (r, events, took) = poll(
            i.as_mut(),
            &[clock_sub(0xdead_beef_0042, id, 50 * MS, false)],
        );
        assert_eq!(r, Ok(0), "clock {id}");
        assert_eq!(events, vec![(0xdead_beef_0042, 0, 0, 0, 0)], "clock {id}");
        assert!(
            took >= Duration::from_millis(50),
            "clock {id}: woke after {took:?}"
        );
        assert!(
            took < Duration::from_secs(5),
            "clock {id}: woke after {took:?}"
        );
    }
    // A zero timeout is ready at once.
    let (r, events, _) = poll(i.as_mut(), &[clock_sub(7, 1, 0, false)]);
    assert_eq!((r, events), (Ok(0), vec![(7, 0, 0, 0, 0)]));
    assert!(!i.is_poisoned());
}
parity!(poll_relative_sleep);

/// Absolute timeouts, on the guest's own monotonic clock and on realtime.
fn poll_absolute_sleep(kind: EngineKind) {
    let mut i = poll_instance(kind, Duration::from_secs(10));
    let now = call1(i.as_mut(), "now", &[]).unwrap().i64().unwrap() as u64;
    let (r, events, took) = poll(i.as_mut(), &[clock_sub(1, 1, now + 80 * MS, true)]);
    assert_eq!((r, events), (Ok(0), vec![(1, 0, 0, 0, 0)]));
    // Measured from the clock reading, before the call started.
    assert!(took >= Duration::from_millis(60), "woke after {took:?}");
    assert!(took < Duration::from_secs(5), "woke after {took:?}");
    let after = call1(i.as_mut(), "now", &[]).unwrap().i64().unwrap() as u64;
    assert!(after >= now + 80 * MS, "{after} < {now} + 80 ms");
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let (r, events, took) = poll(i.as_mut(), &[clock_sub(2, 0, wall + 60 * MS, true)]);
    assert_eq!((r, events), (Ok(0), vec![(2, 0, 0, 0, 0)]));
    assert!(took >= Duration::from_millis(40), "woke after {took:?}");
    assert!(took < Duration::from_secs(5), "woke after {took:?}");
    // A time already past is ready at once.
    let (r, events, took) = poll(i.as_mut(), &[clock_sub(3, 1, now, true)]);
    assert_eq!((r, events), (Ok(0), vec![(3, 0, 0, 0, 0)]));
    assert!(took < Duration::from_secs(1), "{took:?}");
}
parity!(poll_absolute_sleep);

/// The earlier of two clocks fires; `nevents` counts only ready subscriptions.
fn poll_two_clocks(kind: EngineKind) {
    let mut i = poll_instance(kind, Duration::from_secs(20));
    let (r, events, took) = poll(
        i.as_mut(),
        &[
            clock_sub(10, 1, 8_000 * MS, false),
            clock_sub(20, 1, 40 * MS, false),
        ],
    );
    assert_eq!((r, events), (Ok(0), vec![(20, 0, 0, 0, 0)]));
    assert!(took >= Duration::from_millis(40), "woke after {took:?}");
    assert!(
        took < Duration::from_secs(6),
        "waited for the later clock: {took:?}"
    );
    // A clock due at once ends the wait; the other is not reported.
    let (r, events, took) = poll(
        i.as_mut(),
        &[
            clock_sub(30, 1, 8_000 * MS, false),
            clock_sub(40, 0, 0, false),
        ],
    );
    assert_eq!((r, events), (Ok(0), vec![(40, 0, 0, 0, 0)]));
    assert!(took < Duration::from_secs(4), "{took:?}");
    // Two clocks due: both reported, in subscription order.
    let (r, events, _) = poll(
        i.as_mut(),
        &[clock_sub(50, 0, 0, false), clock_sub(60, 1, 0, false)],
    );
    assert_eq!(
        (r, events),
        (Ok(0), vec![(50, 0, 0, 0, 0), (60, 0, 0, 0, 0)])
    );
}
parity!(poll_two_clocks);

/// stdio subscriptions are ready at once; bad ones report per-event errors.
fn poll_stdio_and_errors(kind: EngineKind) {
    use wasi::errno::{BADF, INVAL, NOTSUP};
    let mut i = poll_instance(kind, Duration::from_secs(20));
    let (r, events, took) = poll(
        i.as_mut(),
        &[
            clock_sub(1, 1, 8_000 * MS, false),
            fd_sub(2, 1, 0),
            fd_sub(3, 2, 1),
            fd_sub(4, 2, 2),
            fd_sub(5, 1, 1),
            fd_sub(6, 2, 9),
            clock_sub(7, 2, 0, false),
            clock_sub(8, 9, 0, false),
        ],
    );
    assert_eq!(r, Ok(0));
    assert_eq!(
        events,
        vec![
            (2, 0, 1, 1, 0),
            (3, 0, 2, 1, 0),
            (4, 0, 2, 1, 0),
            (5, BADF as u16, 1, 0, 0),
            (6, BADF as u16, 2, 0, 0),
            (7, NOTSUP as u16, 0, 0, 0),
            (8, INVAL as u16, 0, 0, 0),
        ]
    );
    assert!(
        took < Duration::from_secs(4),
        "waited for the clock: {took:?}"
    );
}
parity!(poll_stdio_and_errors);

/// A sleep past the call deadline stops at the deadline, as a runaway would.
fn poll_sleep_past_deadline(kind: EngineKind) {
    let d = Duration::from_millis(200);
    let mut i = poll_instance(kind, d);
    for sub in [
        clock_sub(1, 1, 10_000 * MS, false),
        // Beyond what an `Instant` holds: never ready.
        clock_sub(2, 0, u64::MAX, false),
    ] {
        let (r, _, took) = poll(i.as_mut(), &[sub]);
        let err = r.unwrap_err();
        assert_eq!(err.reason, TrapReason::Deadline, "{err}");
        assert_eq!(err.export, "poll");
        assert!(
            took >= d - Duration::from_millis(10),
            "stopped early: {took:?}"
        );
        assert!(took < d + Duration::from_secs(2), "stopped late: {took:?}");
        assert!(i.is_poisoned());
    }
}
parity!(poll_sleep_past_deadline);

/// Bad pointers are FAULT, no subscriptions or an unknown tag INVAL; no trap.
fn poll_bad_arguments(kind: EngineKind) {
    use wasi::errno::{FAULT, INVAL};
    let mut i = poll_instance(kind, Duration::from_secs(10));
    let call = |i: &mut Box<dyn Instance>, args: [i32; 4]| {
        let args = args.map(Val::I32);
        call1(i.as_mut(), "poll", &args).unwrap().i32().unwrap()
    };
    let (s, e, n) = (SUBS as i32, EVENTS as i32, NEVENTS as i32);
    assert_eq!(call(&mut i, [s, e, 0, n]), INVAL, "no subscriptions");
    assert_eq!(
        call(&mut i, [65536 - 47, e, 1, n]),
        FAULT,
        "subscriptions past memory"
    );
    assert_eq!(
        call(&mut i, [-48, e, 1, n]),
        FAULT,
        "subscriptions at the top of the address space"
    );
    assert_eq!(
        call(&mut i, [s, 65536 - 31, 1, n]),
        FAULT,
        "events past memory"
    );
    assert_eq!(call(&mut i, [s, e, 1, 65533]), FAULT, "nevents past memory");
    assert_eq!(
        call(&mut i, [s, e, 0x0800_0000, n]),
        FAULT,
        "too many subscriptions"
    );
    i.write(SUBS, &fd_sub(1, 3, 0)).unwrap();
    assert_eq!(call(&mut i, [s, e, 1, n]), INVAL, "unknown tag");
    assert!(!i.is_poisoned());
}
parity!(poll_bad_arguments);

/// Both engines give the same answer for the same guest: the one Rust
/// computes with the same operations in the same order (IEEE arithmetic is
/// exact to the bit), so neither engine may differ from the other.
fn engines_agree(kind: EngineKind) {
    let mut i = instance(kind, TYPES_WAT, HostFunctions::new());
    let mut r = [Val::F64(0.0), Val::I32(0)];
    i.call_by_name(
        "mixed",
        &[
            Val::I32(-3),
            Val::I64(1 << 33),
            Val::F32(1e-3),
            Val::F64(-2.5),
        ],
        &mut r,
    )
    .unwrap();
    let want = -3.0 + (1i64 << 33) as f64 + 1e-3f32 as f64 + -2.5;
    assert_eq!(r, [Val::F64(want), Val::I32(7)]);
}
parity!(engines_agree);

#[test]
fn engine_kind_names() {
    for kind in EngineKind::ALL {
        assert_eq!(kind.to_string().parse::<EngineKind>().unwrap(), kind);
        assert_eq!(engine(kind).kind(), kind);
        assert!(!kind.runtime_version().is_empty());
    }
    assert_eq!(
        " Wasmer ".parse::<EngineKind>().unwrap(),
        EngineKind::Wasmer
    );
    assert!("v8".parse::<EngineKind>().is_err());
}
