//! Metrics: `proxy_define_metric`, `proxy_increment_metric`, `proxy_record_metric`,
//! `proxy_get_metric`.

use super::prelude::*;

/// This family's host functions.
pub(super) fn define(t: &mut Table) {
    use AbiVersion::V0_1_0;
    // Metrics.
    t.def(
        "proxy_define_metric",
        V0_1_0,
        None,
        |c: &mut dyn Caller,
         metric_type: i32,
         name_data: u32,
         name_size: u32,
         return_metric_id: u32| {
            let Some(kind) = MetricKind::from_i32(metric_type) else {
                return Ok(status::BAD_ARGUMENT);
            };
            let name = rd(c, name_data, name_size)?;
            let Ok(name) = String::from_utf8(name) else {
                return Ok(status::BAD_ARGUMENT);
            };
            c.write_u32(return_metric_id, 0)?;
            match state(c)?.shared.vm.define_metric(kind, &name) {
                Some(id) => {
                    c.write_u32(return_metric_id, id)?;
                    Ok(status::OK)
                }
                // The VM's metric registry is full.
                None => Ok(status::INTERNAL_FAILURE),
            }
        },
    );
    t.def(
        "proxy_increment_metric",
        V0_1_0,
        None,
        |c: &mut dyn Caller, metric_id: u32, offset: i64| {
            Ok(state(c)?.shared.vm.increment_metric(metric_id, offset))
        },
    );
    t.def(
        "proxy_record_metric",
        V0_1_0,
        None,
        |c: &mut dyn Caller, metric_id: u32, value: i64| {
            Ok(state(c)?.shared.vm.record_metric(metric_id, value as u64))
        },
    );
    t.def(
        "proxy_get_metric",
        V0_1_0,
        None,
        |c: &mut dyn Caller, metric_id: u32, return_value: u32| match state(c)?
            .shared
            .vm
            .get_metric(metric_id)
        {
            Ok(v) => {
                c.write_u64(return_value, v)?;
                Ok(status::OK)
            }
            Err(s) => Ok(s),
        },
    );
}
