//! Engine benchmarks: host-to-guest call, guest-to-host call, instantiation,
//! and module load from cache vs fresh compile, on both engines.
//!
//! Run: `cargo bench -p wasmgate-engines -- --warm-up-time 1 --measurement-time 2`

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use wasmgate_engines::*;

const WAT: &str = r#"(module
  (import "env" "nop" (func $nop))
  (memory (export "memory") 1)
  (func (export "noop"))
  (func (export "answer") (result i64) i64.const 42)
  (func (export "call_host") call $nop)
)"#;

fn host() -> Arc<HostFunctions> {
    let mut h = HostFunctions::new();
    h.add("env", "nop", FuncType::new([], []), |_, _, _| Ok(()));
    Arc::new(h)
}

/// A module big enough for compilation to matter: `n` small functions.
fn big_module(n: usize) -> String {
    let mut s = String::from("(module (memory (export \"memory\") 1)\n");
    for k in 0..n {
        s.push_str(&format!(
            "(func (export \"f{k}\") (param i32) (result i32) (local i32)
               (loop (local.set 1 (i32.add (local.get 1) (i32.mul (local.get 0) (i32.const {k}))))
                     (local.set 0 (i32.sub (local.get 0) (i32.const 1)))
                     (br_if 0 (i32.gt_s (local.get 0) (i32.const 0))))
               (i32.store (i32.const {m}) (local.get 1)) (i32.load (i32.const {m})))\n",
            m = (k * 4) % 60000
        ));
    }
    s.push(')');
    s
}

/// The same no-op call straight through each runtime's typed API (same
/// features and settings as the crate uses), to show what the interface adds.
fn raw_baselines(c: &mut Criterion) {
    let wat = "(module (func (export \"noop\")))";
    {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let engine = wasmtime::Engine::new(&config).unwrap();
        let module = wasmtime::Module::new(&engine, wat).unwrap();
        let mut store = wasmtime::Store::new(&engine, ());
        store.set_epoch_deadline(u64::MAX / 2);
        let inst = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
        let f = inst.get_typed_func::<(), ()>(&mut store, "noop").unwrap();
        c.bench_function("raw_typed_call_noop/wasmtime", |b| {
            b.iter(|| f.call(&mut store, ()).unwrap())
        });
    }
    {
        let engine = wasmer::Engine::from(wasmer::sys::Cranelift::default());
        let mut store = wasmer::Store::new(engine);
        let module = wasmer::Module::new(&store, wat).unwrap();
        let inst = wasmer::Instance::new(&mut store, &module, &wasmer::imports! {}).unwrap();
        let f = inst
            .exports
            .get_typed_function::<(), ()>(&store, "noop")
            .unwrap();
        c.bench_function("raw_typed_call_noop/wasmer", |b| {
            b.iter(|| f.call(&mut store).unwrap())
        });
    }
}

fn bench(c: &mut Criterion) {
    for kind in EngineKind::ALL {
        let engine = new_engine(kind, EngineOptions::default()).unwrap();
        let module = engine
            .compile(WAT.as_bytes(), host(), Limits::default())
            .unwrap();
        let mut inst = module.instantiate(Box::new(())).unwrap();
        let noop = inst.export("noop").unwrap();
        let answer = inst.export("answer").unwrap();
        let call_host = inst.export("call_host").unwrap();

        c.bench_function(&format!("call_noop/{kind}"), |b| {
            b.iter(|| inst.call(&noop, &[], &mut []).unwrap())
        });
        let mut r = [Val::I64(0)];
        c.bench_function(&format!("call_answer_i64/{kind}"), |b| {
            b.iter(|| inst.call(&answer, &[], &mut r).unwrap())
        });
        c.bench_function(&format!("call_guest_to_host/{kind}"), |b| {
            b.iter(|| inst.call(&call_host, &[], &mut []).unwrap())
        });
        c.bench_function(&format!("call_by_name/{kind}"), |b| {
            b.iter(|| inst.call_by_name("noop", &[], &mut []).unwrap())
        });
        c.bench_function(&format!("instantiate/{kind}"), |b| {
            b.iter(|| drop(module.instantiate(Box::new(())).unwrap()))
        });

        let big = big_module(300);
        let dir = tempfile::tempdir().unwrap();
        let cached = new_engine(
            kind,
            EngineOptions {
                cache_dir: Some(dir.path().to_path_buf()),
                ..EngineOptions::default()
            },
        )
        .unwrap();
        assert!(!cached
            .compile(big.as_bytes(), host(), Limits::default())
            .unwrap()
            .loaded_from_cache());
        let bin = wat::parse_str(&big).unwrap();
        let mut g = c.benchmark_group(format!("load_300_funcs/{kind}"));
        g.sample_size(10);
        g.bench_function("fresh_compile", |b| {
            b.iter_batched(
                || (),
                |_| engine.compile(&bin, host(), Limits::default()).unwrap(),
                BatchSize::PerIteration,
            )
        });
        g.bench_function("from_cache", |b| {
            b.iter(|| {
                let m = cached.compile(&bin, host(), Limits::default()).unwrap();
                assert!(m.loaded_from_cache());
                m
            })
        });
        g.finish();
    }
}

criterion_group!(benches, raw_baselines, bench);
criterion_main!(benches);
