//! Metrics: `proxy_define_metric`, `proxy_increment_metric`, `proxy_record_metric`,
//! `proxy_get_metric`.

use super::prelude::*;

/// This family's host functions.
pub(super) fn define(t: &mut Table) {
    #[allow(unused_imports)]
    use AbiVersion::{V0_1_0, V0_2_0, V0_2_1};
    let mut def =
        |name, since, until, params: &[ValType], body| t.def(name, since, until, params, body);
    // Metrics.
    def(
        "proxy_define_metric",
        V0_1_0,
        None,
        &[I32, I32, I32, I32],
        Arc::new(|c, a| {
            let Some(kind) = MetricKind::from_i32(arg(a, 0)) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let name = rd(c, u(a, 1), u(a, 2))?;
            let Ok(name) = String::from_utf8(name) else {
                return Ok(status::BAD_ARGUMENT);
            };
            c.write_u32(u(a, 3), 0)?;
            match state(c)?.shared.vm.define_metric(kind, &name) {
                Some(id) => {
                    c.write_u32(u(a, 3), id)?;
                    Ok(status::OK)
                }
                // The VM's metric registry is full.
                None => Ok(status::INTERNAL_FAILURE),
            }
        }),
    );
    def(
        "proxy_increment_metric",
        V0_1_0,
        None,
        &[I32, I64],
        Arc::new(|c, a| Ok(state(c)?.shared.vm.increment_metric(u(a, 0), arg64(a, 1)))),
    );
    def(
        "proxy_record_metric",
        V0_1_0,
        None,
        &[I32, I64],
        Arc::new(|c, a| {
            Ok(state(c)?
                .shared
                .vm
                .record_metric(u(a, 0), arg64(a, 1) as u64))
        }),
    );
    def(
        "proxy_get_metric",
        V0_1_0,
        None,
        &[I32, I32],
        Arc::new(|c, a| match state(c)?.shared.vm.get_metric(u(a, 0)) {
            Ok(v) => {
                c.write_u64(u(a, 1), v)?;
                Ok(status::OK)
            }
            Err(s) => Ok(s),
        }),
    );
}
