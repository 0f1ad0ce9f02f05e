//! Typed host-function registration ([`HostFunctions::func_wrap`]).
//!
//! The wasm signature of a host function is read from its closure's Rust
//! type, as wasmtime's `Linker::func_wrap` does, so an argument read at the
//! wrong index or as the wrong type is a compile error rather than a silent
//! `0` at run time. The result is the same dynamic [`HostFunc`] that
//! [`HostFunctions::add`] builds, so the backends need not know about it.
//!
//! A closure with the wrong argument types does not compile:
//!
//! ```compile_fail,E0277
//! # use wasmgate_engines::{Caller, HostError, HostFunctions};
//! let mut h = HostFunctions::new();
//! // `String` is not a wasm value type.
//! h.func_wrap("env", "f", |_c: &mut dyn Caller, s: String| -> Result<(), HostError> {
//!     drop(s);
//!     Ok(())
//! });
//! ```
//!
//! nor does one without the [`Caller`] first argument:
//!
//! ```compile_fail,E0277
//! # use wasmgate_engines::{HostError, HostFunctions};
//! let mut h = HostFunctions::new();
//! h.func_wrap("env", "f", |a: i32| -> Result<i32, HostError> { Ok(a) });
//! ```
//!
//! nor one with thirteen parameters:
//!
//! ```compile_fail,E0277
//! # use wasmgate_engines::{Caller, HostError, HostFunctions};
//! let mut h = HostFunctions::new();
//! h.func_wrap(
//!     "env",
//!     "f",
//!     |_c: &mut dyn Caller, a: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32,
//!      _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| -> Result<i32, HostError> { Ok(a) },
//! );
//! ```
//!
//! while this one does:
//!
//! ```
//! # use wasmgate_engines::{Caller, FuncType, HostError, HostFunctions, ValType};
//! let mut h = HostFunctions::new();
//! h.func_wrap("env", "add", |_c: &mut dyn Caller, a: u32, b: i64| -> Result<u64, HostError> {
//!     Ok(a as u64 + b as u64)
//! });
//! assert_eq!(
//!     h.get("env", "add").unwrap().ty,
//!     FuncType::new([ValType::I32, ValType::I64], [ValType::I64])
//! );
//! ```

use std::sync::Arc;

use crate::{Caller, FuncType, HostError, HostFunc, HostFunctions, Val, ValType};

mod sealed {
    /// Keeps the set of wasm-typed Rust types closed.
    pub trait Sealed {}
}

/// A Rust type that is one wasm value: `i32`, `u32` (wasm `i32`), `i64`,
/// `u64` (wasm `i64`), `f32`, `f64`.
pub trait WasmTy: sealed::Sealed + Copy + Send + Sync + 'static {
    /// The wasm type it is passed as.
    const TYPE: ValType;
    /// Converts a value of [`WasmTy::TYPE`] (any other type is `None`).
    fn from_val(v: Val) -> Option<Self>;
    /// Converts to a value of [`WasmTy::TYPE`].
    fn into_val(self) -> Val;
}

macro_rules! wasm_ty {
    ($($t:ty => $vt:ident, $wire:ty;)*) => {$(
        impl sealed::Sealed for $t {}
        impl WasmTy for $t {
            const TYPE: ValType = ValType::$vt;
            #[inline]
            fn from_val(v: Val) -> Option<Self> {
                match v {
                    // The unsigned types are the same bits as their signed wasm type.
                    Val::$vt(x) => Some(x as $t),
                    _ => None,
                }
            }
            #[inline]
            fn into_val(self) -> Val {
                Val::$vt(self as $wire)
            }
        }
    )*};
}

wasm_ty! {
    i32 => I32, i32;
    u32 => I32, i32;
    i64 => I64, i64;
    u64 => I64, i64;
    f32 => F32, f32;
    f64 => F64, f64;
}

/// What a typed host function returns: nothing (`()`) or one [`WasmTy`].
pub trait WasmResults: sealed::Sealed + Send + 'static {
    /// The wasm result types.
    fn types() -> Vec<ValType>;
    /// Writes the results into slots of [`WasmResults::types`].
    fn store(self, out: &mut [Val]);
}

impl sealed::Sealed for () {}

impl WasmResults for () {
    fn types() -> Vec<ValType> {
        Vec::new()
    }
    #[inline]
    fn store(self, _out: &mut [Val]) {}
}

impl<T: WasmTy> WasmResults for T {
    fn types() -> Vec<ValType> {
        vec![T::TYPE]
    }
    #[inline]
    fn store(self, out: &mut [Val]) {
        out[0] = self.into_val();
    }
}

/// A closure usable with [`HostFunctions::func_wrap`]:
/// `Fn(&mut dyn Caller, A1, ..., An) -> Result<R, HostError>` for n = 0..=12,
/// each `Ai` a [`WasmTy`] and `R` a [`WasmResults`]. `Params` is the tuple of
/// argument types; both type parameters only let the implementations for
/// different arities coexist.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a typed host function",
    label = "expected `Fn(&mut dyn Caller, A1, .., An) -> Result<R, HostError>`",
    note = "arguments: up to 12 of i32, u32, i64, u64, f32, f64; R: one of them or (); \
            annotate the closure's argument types, `&mut dyn Caller` included"
)]
pub trait IntoHostFunc<Params, Results>: Send + Sync + 'static {
    /// Builds the dynamic host function, signature included.
    fn into_host_func(self, module: &str, name: &str) -> HostFunc;
}

/// The error of an argument whose type does not match the signature; the
/// backends convert by the declared signature, so it means a backend bug.
#[cold]
fn bad_args(args: &[Val]) -> HostError {
    HostError::msg(format!("typed host function called with {args:?}"))
}

macro_rules! into_host_func {
    ($($a:ident $v:ident),*) => {
        impl<F, $($a,)* R> IntoHostFunc<($($a,)*), R> for F
        where
            F: Fn(&mut dyn Caller, $($a),*) -> Result<R, HostError> + Send + Sync + 'static,
            $($a: WasmTy,)*
            R: WasmResults,
        {
            fn into_host_func(self, module: &str, name: &str) -> HostFunc {
                HostFunc {
                    module: module.to_string(),
                    name: name.to_string(),
                    ty: FuncType::new(vec![$($a::TYPE),*], R::types()),
                    func: Arc::new(move |c: &mut dyn Caller, args: &[Val], results: &mut [Val]| {
                        let &[$($v),*] = args else {
                            return Err(bad_args(args));
                        };
                        $(let Some($v) = $a::from_val($v) else {
                            return Err(bad_args(args));
                        };)*
                        self(c, $($v),*)?.store(results);
                        Ok(())
                    }),
                }
            }
        }
    };
}

into_host_func!();
into_host_func!(A1 a1);
into_host_func!(A1 a1, A2 a2);
into_host_func!(A1 a1, A2 a2, A3 a3);
into_host_func!(A1 a1, A2 a2, A3 a3, A4 a4);
into_host_func!(A1 a1, A2 a2, A3 a3, A4 a4, A5 a5);
into_host_func!(A1 a1, A2 a2, A3 a3, A4 a4, A5 a5, A6 a6);
into_host_func!(A1 a1, A2 a2, A3 a3, A4 a4, A5 a5, A6 a6, A7 a7);
into_host_func!(A1 a1, A2 a2, A3 a3, A4 a4, A5 a5, A6 a6, A7 a7, A8 a8);
into_host_func!(A1 a1, A2 a2, A3 a3, A4 a4, A5 a5, A6 a6, A7 a7, A8 a8, A9 a9);
into_host_func!(A1 a1, A2 a2, A3 a3, A4 a4, A5 a5, A6 a6, A7 a7, A8 a8, A9 a9, A10 a10);
into_host_func!(A1 a1, A2 a2, A3 a3, A4 a4, A5 a5, A6 a6, A7 a7, A8 a8, A9 a9, A10 a10, A11 a11);
into_host_func!(
    A1 a1, A2 a2, A3 a3, A4 a4, A5 a5, A6 a6, A7 a7, A8 a8, A9 a9, A10 a10, A11 a11, A12 a12
);

impl HostFunctions {
    /// Adds `module.name`; its wasm signature comes from the closure's type, as wasmtime's `Linker::func_wrap`.
    ///
    /// The closure is `Fn(&mut dyn Caller, A1, ..., An) -> Result<R, HostError>`
    /// with up to twelve arguments of `i32`, `u32`, `i64`, `u64`, `f32` or
    /// `f64` (`u32` is passed as wasm `i32`, `u64` as `i64`, same bits) and `R`
    /// one of those or `()`. Annotate the closure's argument types (at least
    /// `&mut dyn Caller`), as with wasmtime. Replaces a function with the same
    /// module and name.
    pub fn func_wrap<Params, Results>(
        &mut self,
        module: &str,
        name: &str,
        f: impl IntoHostFunc<Params, Results>,
    ) -> &mut Self {
        self.push(f.into_host_func(module, name))
    }
}
