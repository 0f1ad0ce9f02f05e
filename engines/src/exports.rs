//! The [`Instance`] implementation both backends share: the export table
//! (handles, names, poisoning) around a small per-engine [`Backend`] that
//! resolves an export and runs one outermost call.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use crate::{
    check_call, next_instance_id, EngineKind, ExportFunc, FuncType, GuestMemory, HostError,
    Instance, Trap, TrapReason, Val,
};

/// Names of missing exports remembered, at most: the ABI layers ask for a
/// fixed set of names, so this only bounds a caller passing arbitrary ones.
const MAX_MISSES: usize = 1024;

/// What one engine supplies to [`EngineInstance`].
pub(crate) trait Backend: GuestMemory + Send {
    /// The engine.
    const KIND: EngineKind;
    /// A resolved export, as the engine calls it fastest.
    type Func: Send;
    /// Resolves an exported function and its signature; `None` when there is
    /// none or its signature has types other than numbers.
    fn resolve(&mut self, name: &str) -> Option<(Self::Func, FuncType)>;
    /// Runs one outermost call under the call deadline, then flushes the
    /// guest's unfinished stdio lines. `args` and `results` match the
    /// signature [`Backend::resolve`] gave (checked by the caller).
    fn invoke(
        &mut self,
        f: &Self::Func,
        name: &str,
        args: &[Val],
        results: &mut [Val],
    ) -> Result<(), Trap>;
    /// The per-instance host data.
    fn data(&mut self) -> &mut (dyn Any + Send);
}

/// Export handles of one instance, by index and by name, and whether the
/// instance is still usable.
pub(crate) struct ExportTable<F> {
    /// Which instance the handles belong to ([`ExportFunc::owner`]).
    owner: u64,
    funcs: Vec<F>,
    /// Hits and misses: a missing export costs one engine lookup, not one
    /// per request.
    by_name: HashMap<Arc<str>, Option<ExportFunc>>,
    misses: usize,
    poisoned: bool,
}

impl<F> ExportTable<F> {
    fn new() -> Self {
        ExportTable {
            owner: next_instance_id(),
            funcs: Vec::new(),
            by_name: HashMap::new(),
            misses: 0,
            poisoned: false,
        }
    }

    /// The handle of `name`, resolving it on first use.
    fn get(
        &mut self,
        name: &str,
        resolve: impl FnOnce(&str) -> Option<(F, FuncType)>,
    ) -> Option<ExportFunc> {
        if let Some(f) = self.by_name.get(name) {
            return f.clone();
        }
        let found = resolve(name).map(|(func, ty)| {
            self.funcs.push(func);
            ExportFunc {
                index: self.funcs.len() - 1,
                owner: self.owner,
                name: name.into(),
                ty: Arc::new(ty),
            }
        });
        match &found {
            Some(f) => {
                self.by_name.insert(f.name.clone(), found.clone());
            }
            None if self.misses < MAX_MISSES => {
                self.misses += 1;
                self.by_name.insert(name.into(), None);
            }
            None => {}
        }
        found
    }

    /// The engine function behind a handle, after checking it belongs here
    /// and that `args`/`results` fit its signature.
    fn func(
        &self,
        kind: EngineKind,
        f: &ExportFunc,
        args: &[Val],
        results: &[Val],
    ) -> Result<&F, Trap> {
        if f.owner != self.owner {
            return Err(Trap::new(
                kind,
                &*f.name,
                TrapReason::Other("export handle belongs to another instance".into()),
            ));
        }
        check_call(kind, f, args, results)?;
        Ok(&self.funcs[f.index])
    }

    /// Records the outcome of a call: any trap but a successful exit poisons.
    fn observe(&mut self, r: Result<(), Trap>) -> Result<(), Trap> {
        if let Err(t) = &r {
            if !t.is_success_exit() {
                self.poisoned = true;
            }
        }
        r
    }
}

/// An [`Instance`] of either engine: the shared export table plus the
/// engine's [`Backend`].
pub(crate) struct EngineInstance<B: Backend> {
    backend: B,
    exports: ExportTable<B::Func>,
}

impl<B: Backend> EngineInstance<B> {
    pub(crate) fn new(backend: B) -> Self {
        EngineInstance {
            backend,
            exports: ExportTable::new(),
        }
    }
}

impl<B: Backend> GuestMemory for EngineInstance<B> {
    fn memory_size(&self) -> u64 {
        self.backend.memory_size()
    }
    fn read_into(&self, ptr: u32, buf: &mut [u8]) -> Result<(), HostError> {
        self.backend.read_into(ptr, buf)
    }
    fn write(&mut self, ptr: u32, data: &[u8]) -> Result<(), HostError> {
        self.backend.write(ptr, data)
    }
}

impl<B: Backend> Instance for EngineInstance<B> {
    fn engine(&self) -> EngineKind {
        B::KIND
    }

    fn export(&mut self, name: &str) -> Option<ExportFunc> {
        let backend = &mut self.backend;
        self.exports.get(name, |n| backend.resolve(n))
    }

    fn call(&mut self, f: &ExportFunc, args: &[Val], results: &mut [Val]) -> Result<(), Trap> {
        let func = self.exports.func(B::KIND, f, args, results)?;
        let r = self.backend.invoke(func, &f.name, args, results);
        self.exports.observe(r)
    }

    fn data(&mut self) -> &mut (dyn Any + Send) {
        self.backend.data()
    }

    fn is_poisoned(&self) -> bool {
        self.exports.poisoned
    }

    fn poison(&mut self) {
        self.exports.poisoned = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ValType;

    fn resolver(calls: &mut u32) -> impl FnOnce(&str) -> Option<(&'static str, FuncType)> + '_ {
        move |name| {
            *calls += 1;
            (name == "f").then(|| ("f-func", FuncType::new([ValType::I32], [])))
        }
    }

    #[test]
    fn hits_and_misses_are_resolved_once() {
        let mut t = ExportTable::new();
        let mut calls = 0;
        let f = t.get("f", resolver(&mut calls)).unwrap();
        assert_eq!(t.get("f", resolver(&mut calls)).unwrap().index, f.index);
        assert!(t.get("missing", resolver(&mut calls)).is_none());
        assert!(t.get("missing", resolver(&mut calls)).is_none());
        assert_eq!(calls, 2, "one engine lookup per name");
        assert_eq!(
            t.func(EngineKind::Wasmtime, &f, &[Val::I32(1)], &[]).ok(),
            Some(&"f-func")
        );
    }

    #[test]
    fn misses_are_bounded() {
        let mut t: ExportTable<()> = ExportTable::new();
        for k in 0..MAX_MISSES + 10 {
            assert!(t.get(&format!("m{k}"), |_| None).is_none());
        }
        assert_eq!(t.by_name.len(), MAX_MISSES);
    }

    #[test]
    fn foreign_handles_and_bad_calls_are_refused() {
        let mut a = ExportTable::new();
        let mut b = ExportTable::new();
        let (mut x, mut y) = (0, 0);
        let fa = a.get("f", resolver(&mut x)).unwrap();
        let fb = b.get("f", resolver(&mut y)).unwrap();
        let kind = EngineKind::Wasmer;
        let err = a.func(kind, &fb, &[Val::I32(1)], &[]).unwrap_err();
        assert!(err.to_string().contains("another instance"), "{err}");
        assert!(a.func(kind, &fa, &[Val::I64(1)], &[]).is_err());
        assert!(a.func(kind, &fa, &[Val::I32(1)], &[Val::I32(0)]).is_err());
        // Only a trap other than a successful exit poisons.
        let exit0 = Trap::new(kind, "f", TrapReason::Exit(0));
        assert!(a.observe(Err(exit0)).is_err());
        assert!(!a.poisoned);
        a.observe(Ok(())).unwrap();
        assert!(!a.poisoned);
        let _ = a.observe(Err(Trap::new(kind, "f", TrapReason::Unreachable)));
        assert!(a.poisoned);
    }
}
