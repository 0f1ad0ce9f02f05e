//! Shared data and shared queues, shared by every VM of every plugin with the same VM id
//! ([`VmShared`]); a queue of another VM id is resolved by (vm_id, name), and its id works in
//! any VM.
//!
//! [`VmShared`]: crate::proxy_wasm::shared::VmShared

use super::prelude::*;

/// This family's host functions.
pub(super) fn define(t: &mut Table) {
    use AbiVersion::V0_1_0;
    // Shared data.
    t.def(
        "proxy_get_shared_data",
        V0_1_0,
        None,
        |c: &mut dyn Caller,
         key_data: u32,
         key_size: u32,
         return_value_data: u32,
         return_value_size: u32,
         return_cas: u32| {
            let key = rd(c, key_data, key_size)?;
            let Some((v, cas)) = state(c)?.shared.vm.get_data(&key) else {
                return Ok(status::NOT_FOUND);
            };
            c.write_u32(return_cas, cas)?;
            out(c, &v, return_value_data, return_value_size)?;
            Ok(status::OK)
        },
    );
    t.def(
        "proxy_set_shared_data",
        V0_1_0,
        None,
        |c: &mut dyn Caller,
         key_data: u32,
         key_size: u32,
         value_data: u32,
         value_size: u32,
         cas: u32| {
            let key = rd(c, key_data, key_size)?;
            let value = rd(c, value_data, value_size)?;
            Ok(state(c)?.shared.vm.set_data(&key, &value, cas))
        },
    );

    // Shared queues.
    t.def(
        "proxy_register_shared_queue",
        V0_1_0,
        None,
        |c: &mut dyn Caller, name_data: u32, name_size: u32, return_queue_id: u32| {
            let name = rd(c, name_data, name_size)?;
            let Ok(name) = String::from_utf8(name) else {
                return Ok(status::BAD_ARGUMENT);
            };
            c.write_u32(return_queue_id, 0)?;
            // The registering VM's root context hears of the queue's items.
            let st = state(c)?;
            match st.shared.vm.register_queue(&name, &st.waiter) {
                Some(id) => {
                    c.write_u32(return_queue_id, id)?;
                    Ok(status::OK)
                }
                // The VM's queue registry is full.
                None => Ok(status::INTERNAL_FAILURE),
            }
        },
    );
    t.def(
        "proxy_resolve_shared_queue",
        V0_1_0,
        None,
        |c: &mut dyn Caller,
         vm_id_data: u32,
         vm_id_size: u32,
         name_data: u32,
         name_size: u32,
         return_queue_id: u32| {
            let vm = rd(c, vm_id_data, vm_id_size)?;
            let name = rd(c, name_data, name_size)?;
            let id = state(c)?.shared.vm.resolve_queue(
                &String::from_utf8_lossy(&vm),
                &String::from_utf8_lossy(&name),
            );
            match id {
                Some(id) => {
                    c.write_u32(return_queue_id, id)?;
                    Ok(status::OK)
                }
                None => Ok(status::NOT_FOUND),
            }
        },
    );
    t.def(
        "proxy_enqueue_shared_queue",
        V0_1_0,
        None,
        |c: &mut dyn Caller, queue_id: u32, value_data: u32, value_size: u32| {
            let value = rd(c, value_data, value_size)?;
            Ok(state(c)?.shared.vm.enqueue(queue_id, value))
        },
    );
    t.def(
        "proxy_dequeue_shared_queue",
        V0_1_0,
        None,
        |c: &mut dyn Caller, queue_id: u32, return_value_data: u32, return_value_size: u32| {
            c.write_u32(return_value_data, 0)?;
            c.write_u32(return_value_size, 0)?;
            match state(c)?.shared.vm.dequeue(queue_id) {
                Ok(v) => {
                    out(c, &v, return_value_data, return_value_size)?;
                    Ok(status::OK)
                }
                Err(s) => Ok(s),
            }
        },
    );
}
