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

criterion_group!(benches, bench);
criterion_main!(benches);
