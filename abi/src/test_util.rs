//! Helpers for the unit tests.

/// Generates one test per engine, `NAME::wasmtime` and `NAME::wasmer`, for a case
/// `fn NAME(engine: EngineKind)`, so that each engine passes or fails on its own under the
/// same expectations.
///
/// `parity!(proptest(CONFIG) NAME(arg in strategy, ...))` does the same for a property: one
/// proptest per engine, each calling `fn NAME(engine, arg, ...) -> Result<(), TestCaseError>`
/// with the generated arguments.
macro_rules! parity {
    (proptest($config:expr) $name:ident($($arg:ident in $strategy:expr),+ $(,)?)) => {
        mod $name {
            use super::*;

            ::proptest::proptest! {
                #![proptest_config($config)]

                #[test]
                fn wasmtime($($arg in $strategy),+) {
                    super::$name($crate::engines::EngineKind::Wasmtime, $($arg),+)?;
                }

                #[test]
                fn wasmer($($arg in $strategy),+) {
                    super::$name($crate::engines::EngineKind::Wasmer, $($arg),+)?;
                }
            }
        }
    };
    ($name:ident) => {
        mod $name {
            #[test]
            fn wasmtime() {
                super::$name($crate::engines::EngineKind::Wasmtime);
            }
            #[test]
            fn wasmer() {
                super::$name($crate::engines::EngineKind::Wasmer);
            }
        }
    };
}

pub(crate) use parity;
