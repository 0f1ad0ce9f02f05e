//! Shared data and shared queues, shared by every VM of the plugin ([`VmShared`]).
//!
//! [`VmShared`]: crate::proxy_wasm::shared::VmShared

use super::prelude::*;

/// This family's host functions.
pub(super) fn define(t: &mut Table) {
    #[allow(unused_imports)]
    use AbiVersion::{V0_1_0, V0_2_0, V0_2_1};
    let mut def =
        |name, since, until, params: &[ValType], body| t.def(name, since, until, params, body);
    // Shared data.
    def(
        "proxy_get_shared_data",
        V0_1_0,
        None,
        &[I32, I32, I32, I32, I32],
        Arc::new(|c, a| {
            let key = rd(c, u(a, 0), u(a, 1))?;
            let Some((v, cas)) = state(c)?.shared.vm.get_data(&key) else {
                return Ok(status::NOT_FOUND);
            };
            c.write_u32(u(a, 4), cas)?;
            out(c, &v, u(a, 2), u(a, 3))?;
            Ok(status::OK)
        }),
    );
    def(
        "proxy_set_shared_data",
        V0_1_0,
        None,
        &[I32, I32, I32, I32, I32],
        Arc::new(|c, a| {
            let key = rd(c, u(a, 0), u(a, 1))?;
            let value = rd(c, u(a, 2), u(a, 3))?;
            Ok(state(c)?.shared.vm.set_data(&key, &value, u(a, 4)))
        }),
    );

    // Shared queues.
    def(
        "proxy_register_shared_queue",
        V0_1_0,
        None,
        &[I32, I32, I32],
        Arc::new(|c, a| {
            let name = rd(c, u(a, 0), u(a, 1))?;
            let Ok(name) = String::from_utf8(name) else {
                return Ok(status::BAD_ARGUMENT);
            };
            c.write_u32(u(a, 2), 0)?;
            // The registering VM's root context hears of the queue's items.
            let st = state(c)?;
            match st.shared.vm.register_queue(&name, &st.waiter) {
                Some(id) => {
                    c.write_u32(u(a, 2), id)?;
                    Ok(status::OK)
                }
                // The VM's queue registry is full.
                None => Ok(status::INTERNAL_FAILURE),
            }
        }),
    );
    def(
        "proxy_resolve_shared_queue",
        V0_1_0,
        None,
        &[I32, I32, I32, I32, I32],
        Arc::new(|c, a| {
            let vm = rd(c, u(a, 0), u(a, 1))?;
            let name = rd(c, u(a, 2), u(a, 3))?;
            let id = state(c)?.shared.vm.resolve_queue(
                &String::from_utf8_lossy(&vm),
                &String::from_utf8_lossy(&name),
            );
            match id {
                Some(id) => {
                    c.write_u32(u(a, 4), id)?;
                    Ok(status::OK)
                }
                None => Ok(status::NOT_FOUND),
            }
        }),
    );
    def(
        "proxy_enqueue_shared_queue",
        V0_1_0,
        None,
        &[I32, I32, I32],
        Arc::new(|c, a| {
            let value = rd(c, u(a, 1), u(a, 2))?;
            Ok(state(c)?.shared.vm.enqueue(u(a, 0), value))
        }),
    );
    def(
        "proxy_dequeue_shared_queue",
        V0_1_0,
        None,
        &[I32, I32, I32],
        Arc::new(|c, a| {
            c.write_u32(u(a, 1), 0)?;
            c.write_u32(u(a, 2), 0)?;
            match state(c)?.shared.vm.dequeue(u(a, 0)) {
                Ok(v) => {
                    out(c, &v, u(a, 1), u(a, 2))?;
                    Ok(status::OK)
                }
                Err(s) => Ok(s),
            }
        }),
    );
}
