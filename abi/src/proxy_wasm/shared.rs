//! What all instances of one proxy-wasm VM id share: shared data with CAS, shared queues,
//! and the metric registry; and the [`VmRegistry`] that hands out one such state per VM id.
//!
//! As in Envoy, the state belongs to the VM id, not to a plugin declaration: plugins declared
//! with the same `vmId` (default: their own name) share data, queues and metrics, and any
//! plugin may resolve another VM id's queue (proxy-wasm-cpp-host `src/shared_data.cc` keys data
//! by vm_id, `src/shared_queue.cc` registers queues under (vm_id, name) with tokens valid in
//! every VM). A registry serves one gateway: its plugins are declared once for its life, so a
//! routing reload keeps the state, and two gateways in one process (tests) never mix theirs.
//!
//! Besides each store's own caps, their bytes together (shared data, queued items, queue and
//! metric names) are charged to one [`HostBudget`] of `maxHostBytes`: they outlive any one
//! VM, so they have a budget of their own rather than a share of a VM's. Past it a call gets
//! INTERNAL_FAILURE, as past the caps.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

use super::abi::{status, MetricKind};
use crate::guest::{HostBudget, DEFAULT_MAX_HOST_BYTES};

/// Bound of the shared data store (keys plus values), per VM.
pub const MAX_SHARED_DATA_BYTES: usize = 16 << 20;
/// Bound of one shared queue, in items.
pub const MAX_QUEUE_ITEMS: usize = 10_000;
/// Bound of the items waiting in all queues of one VM, in bytes.
pub const MAX_QUEUE_BYTES: usize = 16 << 20;
/// Most queues one VM may register.
pub const MAX_QUEUES: usize = 1024;
/// Most metrics one VM may define (a filter naming metrics after requests would otherwise
/// grow the registry with every request).
pub const MAX_METRICS: usize = 10_000;
/// Longest metric or queue name, in bytes.
pub const MAX_NAME_BYTES: usize = 4096;
/// Samples a histogram keeps (the most recent ones).
pub const MAX_SAMPLES: usize = 1024;
/// Most VM states one registry hands out over its life: a queue id carries its VM's number
/// in its high 16 bits, so an id stays valid in every VM (as cpp-host's global tokens).
pub const MAX_VM_IDS: usize = 0xffff;

/// A wake-up target for queue readiness: a middleware's dispatcher.
pub struct QueueWaiter {
    /// Queue ids with items not yet announced.
    pub ready: Mutex<Vec<u32>>,
    /// Wakes the dispatcher.
    pub notify: Notify,
}

struct Queue {
    items: VecDeque<Vec<u8>>,
    waiters: Vec<Weak<QueueWaiter>>,
}

/// One metric's current state.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// The name the guest defined.
    pub name: String,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// Counter and gauge: the value; histogram: the last recorded value.
    pub value: i64,
    /// Histogram: the most recent recorded values (at most [`MAX_SAMPLES`]).
    pub samples: VecDeque<u64>,
}

#[derive(Default)]
struct Queues {
    list: Vec<Queue>,
    /// Index into `list` by name.
    by_name: HashMap<String, usize>,
    /// Bytes of the items waiting in all queues.
    bytes: usize,
}

#[derive(Default)]
struct Metrics {
    list: Vec<Metric>,
    /// Index into `list` by (name, kind).
    by_key: HashMap<(String, MetricKind), usize>,
}

#[derive(Default)]
struct Data {
    entries: HashMap<Vec<u8>, (Vec<u8>, u32)>,
    bytes: usize,
    next_cas: u32,
}

/// The VM states of one gateway, one per VM id, held weakly: a state lives as long as a
/// plugin (or a middleware of it) using that VM id does. Cloning shares the registry.
#[derive(Clone, Default)]
pub struct VmRegistry {
    inner: Arc<Registry>,
}

#[derive(Default)]
struct Registry {
    /// Every state handed out, by number (its place here); a dead one keeps its place so a
    /// queue id of it never reaches a later state.
    vms: Mutex<Vec<(String, Weak<VmShared>)>>,
}

impl std::fmt::Debug for VmRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let vms = self.inner.vms.lock().unwrap_or_else(|p| p.into_inner());
        f.debug_list()
            .entries(
                vms.iter()
                    .filter(|(_, w)| w.strong_count() > 0)
                    .map(|(id, _)| id),
            )
            .finish()
    }
}

/// Why a plugin could not join the state of a VM id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VmJoinError {
    /// Another plugin with the same VM id declared another `maxHostBytes`: the VM id's stores
    /// have one budget, and picking one silently would surprise the other plugin.
    #[error(
        "plugin {plugin:?} shares VM id {vm_id:?} with plugin {first:?}, but their \
         maxHostBytes differ ({max_host_bytes} and {first_max_host_bytes}; unset, it is twice \
         maxBodyBytes or 64 MiB): the VM id's shared data, queues and metric names have one \
         budget, so declare the same maxHostBytes on both"
    )]
    MaxHostBytes {
        /// The VM id.
        vm_id: String,
        /// The plugin joining.
        plugin: String,
        /// Its `maxHostBytes`.
        max_host_bytes: usize,
        /// The plugin whose declaration made the state.
        first: String,
        /// That plugin's `maxHostBytes`.
        first_max_host_bytes: usize,
    },
    /// The registry has handed out [`MAX_VM_IDS`] states.
    #[error("more than {MAX_VM_IDS} proxy-wasm VM ids in one gateway")]
    TooMany,
}

impl VmRegistry {
    /// An empty registry.
    pub fn new() -> VmRegistry {
        VmRegistry::default()
    }

    /// The state of VM `vm_id` for plugin `plugin`: the one a live plugin with that VM id
    /// already uses, else a new one whose stores together hold at most `max_host_bytes`.
    pub fn join(
        &self,
        vm_id: &str,
        max_host_bytes: usize,
        plugin: &str,
    ) -> Result<Arc<VmShared>, VmJoinError> {
        let mut vms = self.inner.vms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(vm) = vms
            .iter()
            .filter(|(id, _)| id == vm_id)
            .find_map(|(_, w)| w.upgrade())
        {
            if vm.max_host_bytes != max_host_bytes {
                return Err(VmJoinError::MaxHostBytes {
                    vm_id: vm_id.to_string(),
                    plugin: plugin.to_string(),
                    max_host_bytes,
                    first: vm.first_plugin.clone(),
                    first_max_host_bytes: vm.max_host_bytes,
                });
            }
            return Ok(vm);
        }
        if vms.len() >= MAX_VM_IDS {
            return Err(VmJoinError::TooMany);
        }
        Ok(Registry::add(
            &self.inner,
            &mut vms,
            vm_id,
            max_host_bytes,
            plugin,
        ))
    }
}

impl Registry {
    /// A new state, numbered after the last of `vms` (locked from `registry`).
    fn add(
        registry: &Arc<Registry>,
        vms: &mut Vec<(String, Weak<VmShared>)>,
        vm_id: &str,
        max_host_bytes: usize,
        plugin: &str,
    ) -> Arc<VmShared> {
        let vm = Arc::new(VmShared {
            vm_id: vm_id.to_string(),
            number: vms.len() as u32,
            registry: registry.clone(),
            first_plugin: plugin.to_string(),
            max_host_bytes,
            data: Mutex::new(Data::default()),
            queues: Mutex::new(Queues::default()),
            metrics: Mutex::new(Metrics::default()),
            budget: HostBudget::new(max_host_bytes),
        });
        vms.push((vm_id.to_string(), Arc::downgrade(&vm)));
        vm
    }

    /// The live state of VM `vm_id`.
    fn find(&self, vm_id: &str) -> Option<Arc<VmShared>> {
        let vms = self.vms.lock().unwrap_or_else(|p| p.into_inner());
        vms.iter()
            .filter(|(id, _)| id == vm_id)
            .find_map(|(_, w)| w.upgrade())
    }

    /// The live state numbered `number`.
    fn get(&self, number: u32) -> Option<Arc<VmShared>> {
        let vms = self.vms.lock().unwrap_or_else(|p| p.into_inner());
        vms.get(number as usize).and_then(|(_, w)| w.upgrade())
    }
}

/// The state one VM id's instances share, whichever plugins declare it.
pub struct VmShared {
    /// The VM id (`plugin_vm_id`).
    pub vm_id: String,
    /// Its number in the registry: the high 16 bits of its queue ids.
    number: u32,
    registry: Arc<Registry>,
    /// The plugin whose declaration made it, for [`VmJoinError`].
    first_plugin: String,
    max_host_bytes: usize,
    data: Mutex<Data>,
    queues: Mutex<Queues>,
    metrics: Mutex<Metrics>,
    /// The bytes of all of the above (`maxHostBytes`).
    budget: HostBudget,
}

impl VmShared {
    /// Empty state for VM `vm_id`, within the default `maxHostBytes`, in a registry of its own.
    pub fn new(vm_id: &str) -> Arc<VmShared> {
        VmShared::with_max_host_bytes(vm_id, DEFAULT_MAX_HOST_BYTES)
    }

    /// Empty state for VM `vm_id` whose stores together hold at most `max_host_bytes`, in a
    /// registry of its own.
    pub fn with_max_host_bytes(vm_id: &str, max_host_bytes: usize) -> Arc<VmShared> {
        let registry = Arc::new(Registry::default());
        let mut vms = registry.vms.lock().unwrap_or_else(|p| p.into_inner());
        Registry::add(&registry, &mut vms, vm_id, max_host_bytes, vm_id)
    }

    /// The state holding queue `id`, and the queue's place in it.
    fn queue_owner(self: &Arc<Self>, id: u32) -> Option<(Arc<VmShared>, usize)> {
        let (number, local) = (id >> 16, id & 0xffff);
        let index = (local as usize).checked_sub(1)?;
        if number == self.number {
            return Some((self.clone(), index));
        }
        Some((self.registry.get(number)?, index))
    }

    fn queue_id(&self, index: usize) -> u32 {
        (self.number << 16) | (index as u32 + 1)
    }

    /// Bytes the stores hold now, as charged to their `maxHostBytes` budget.
    pub fn host_bytes(&self) -> usize {
        self.budget.used()
    }

    /// `proxy_get_shared_data`: value and cas.
    pub fn get_data(&self, key: &[u8]) -> Option<(Vec<u8>, u32)> {
        let d = self.data.lock().unwrap_or_else(|p| p.into_inner());
        d.entries.get(key).cloned()
    }

    /// `proxy_set_shared_data`: a status.
    pub fn set_data(&self, key: &[u8], value: &[u8], cas: u32) -> i32 {
        let mut d = self.data.lock().unwrap_or_else(|p| p.into_inner());
        let old = d.entries.get(key).map(|(v, c)| (v.len(), *c));
        if let Some((_, current)) = old {
            if cas != 0 && cas != current {
                return status::CAS_MISMATCH;
            }
        }
        let old_size = old.map(|(l, _)| l + key.len()).unwrap_or(0);
        let new_size = key.len() + value.len();
        let new_bytes = d.bytes - old_size + new_size;
        if new_bytes > MAX_SHARED_DATA_BYTES {
            return status::INTERNAL_FAILURE;
        }
        if new_size > old_size {
            if self.budget.charge(new_size - old_size).is_err() {
                return status::INTERNAL_FAILURE;
            }
        } else {
            self.budget.release(old_size - new_size);
        }
        d.bytes = new_bytes;
        d.next_cas = d.next_cas.wrapping_add(1).max(1);
        let c = d.next_cas;
        d.entries.insert(key.to_vec(), (value.to_vec(), c));
        status::OK
    }

    /// `proxy_register_shared_queue`: creates or reopens the queue, and lets `waiter` hear of
    /// it; `None` when the VM already has [`MAX_QUEUES`] queues or its name would pass
    /// `maxHostBytes`. Every root that registered the queue hears of its items (cpp-host
    /// keeps only the last registrant; here every VM of a middleware registers alike).
    pub fn register_queue(&self, name: &str, waiter: &Arc<QueueWaiter>) -> Option<u32> {
        let mut qs = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let idx = match qs.by_name.get(name) {
            Some(i) => *i,
            None => {
                if qs.list.len() >= MAX_QUEUES
                    || name.len() > MAX_NAME_BYTES
                    || self.budget.charge(name.len()).is_err()
                {
                    return None;
                }
                qs.list.push(Queue {
                    items: VecDeque::new(),
                    waiters: Vec::new(),
                });
                let i = qs.list.len() - 1;
                qs.by_name.insert(name.to_string(), i);
                i
            }
        };
        let q = &mut qs.list[idx];
        q.waiters.retain(|w| w.strong_count() > 0);
        if !q
            .waiters
            .iter()
            .any(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(waiter)))
        {
            q.waiters.push(Arc::downgrade(waiter));
        }
        Some(self.queue_id(idx))
    }

    /// `proxy_resolve_shared_queue`: the id of an existing queue of VM `vm_id` (empty: this
    /// one), whichever plugin declared that VM id.
    pub fn resolve_queue(&self, vm_id: &str, name: &str) -> Option<u32> {
        if vm_id.is_empty() || vm_id == self.vm_id {
            return self.resolve_own(name);
        }
        self.registry.find(vm_id)?.resolve_own(name)
    }

    fn resolve_own(&self, name: &str) -> Option<u32> {
        let qs = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        qs.by_name.get(name).map(|i| self.queue_id(*i))
    }

    /// `proxy_enqueue_shared_queue`: a status; wakes the roots that registered the queue,
    /// whichever VM id it belongs to (its bytes count against that VM id's bounds).
    pub fn enqueue(self: &Arc<Self>, id: u32, value: Vec<u8>) -> i32 {
        match self.queue_owner(id) {
            Some((vm, index)) => vm.enqueue_own(id, index, value),
            None => status::NOT_FOUND,
        }
    }

    fn enqueue_own(&self, id: u32, index: usize, value: Vec<u8>) -> i32 {
        let waiters: Vec<Arc<QueueWaiter>> = {
            let mut qs = self.queues.lock().unwrap_or_else(|p| p.into_inner());
            let bytes = qs.bytes + value.len();
            let Some(q) = qs.list.get_mut(index) else {
                return status::NOT_FOUND;
            };
            if q.items.len() >= MAX_QUEUE_ITEMS
                || bytes > MAX_QUEUE_BYTES
                || self.budget.charge(value.len()).is_err()
            {
                return status::INTERNAL_FAILURE;
            }
            q.items.push_back(value);
            let waiters = q.waiters.iter().filter_map(Weak::upgrade).collect();
            qs.bytes = bytes;
            waiters
        };
        for w in waiters {
            let mut r = w.ready.lock().unwrap_or_else(|p| p.into_inner());
            if !r.contains(&id) {
                r.push(id);
            }
            drop(r);
            w.notify.notify_one();
        }
        status::OK
    }

    /// `proxy_dequeue_shared_queue`: the item, or a status. As in cpp-host, any VM holding a
    /// queue's id may dequeue from it.
    pub fn dequeue(self: &Arc<Self>, id: u32) -> Result<Vec<u8>, i32> {
        let (vm, index) = self.queue_owner(id).ok_or(status::NOT_FOUND)?;
        let mut qs = vm.queues.lock().unwrap_or_else(|p| p.into_inner());
        let q = qs.list.get_mut(index).ok_or(status::NOT_FOUND)?;
        let item = q.items.pop_front().ok_or(status::EMPTY)?;
        qs.bytes -= item.len();
        vm.budget.release(item.len());
        Ok(item)
    }

    /// `proxy_define_metric`: the id (the same for the same name and kind); `None` when the
    /// VM already has [`MAX_METRICS`] metrics or the name would pass `maxHostBytes`.
    pub fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32> {
        let mut ms = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
        let key = (name.to_string(), kind);
        if let Some(i) = ms.by_key.get(&key) {
            return Some(*i as u32 + 1);
        }
        if ms.list.len() >= MAX_METRICS
            || name.len() > MAX_NAME_BYTES
            || self.budget.charge(name.len()).is_err()
        {
            return None;
        }
        ms.list.push(Metric {
            name: name.to_string(),
            kind,
            value: 0,
            samples: VecDeque::new(),
        });
        let id = ms.list.len();
        ms.by_key.insert(key, id - 1);
        Some(id as u32)
    }

    fn with_metric<T>(
        &self,
        id: u32,
        f: impl FnOnce(&mut Metric) -> Result<T, i32>,
    ) -> Result<T, i32> {
        let mut ms = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
        let m = id
            .checked_sub(1)
            .and_then(|i| ms.list.get_mut(i as usize))
            .ok_or(status::NOT_FOUND)?;
        f(m)
    }

    /// `proxy_increment_metric`.
    pub fn increment_metric(&self, id: u32, delta: i64) -> i32 {
        self.with_metric(id, |m| match m.kind {
            MetricKind::Counter if delta > 0 => {
                m.value = m.value.saturating_add(delta);
                Ok(())
            }
            MetricKind::Gauge => {
                m.value = m.value.saturating_add(delta);
                Ok(())
            }
            _ => Err(status::BAD_ARGUMENT),
        })
        .err()
        .unwrap_or(status::OK)
    }

    /// `proxy_record_metric`.
    pub fn record_metric(&self, id: u32, value: u64) -> i32 {
        self.with_metric(id, |m| {
            match m.kind {
                // As in Envoy, recording on a counter adds.
                MetricKind::Counter => m.value = m.value.saturating_add(value as i64),
                MetricKind::Gauge => m.value = value as i64,
                MetricKind::Histogram => {
                    m.value = value as i64;
                    if m.samples.len() >= MAX_SAMPLES {
                        m.samples.pop_front();
                    }
                    m.samples.push_back(value);
                }
            }
            Ok(())
        })
        .err()
        .unwrap_or(status::OK)
    }

    /// `proxy_get_metric`.
    pub fn get_metric(&self, id: u32) -> Result<u64, i32> {
        self.with_metric(id, |m| match m.kind {
            MetricKind::Histogram => Err(status::BAD_ARGUMENT),
            _ => Ok(m.value as u64),
        })
    }

    /// Every metric, in definition order.
    pub fn metrics(&self) -> Vec<Metric> {
        self.metrics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .list
            .clone()
    }

    /// A metric by name.
    pub fn metric(&self, name: &str) -> Option<Metric> {
        self.metrics().into_iter().find(|m| m.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_rules() {
        let vm = VmShared::new("vm");
        assert_eq!(vm.get_data(b"k"), None);
        // A missing key is created whatever the cas.
        assert_eq!(vm.set_data(b"k", b"1", 77), status::OK);
        let (v, cas) = vm.get_data(b"k").unwrap();
        assert_eq!(v, b"1");
        assert_ne!(cas, 0);
        assert_eq!(vm.set_data(b"k", b"2", cas + 1), status::CAS_MISMATCH);
        assert_eq!(vm.set_data(b"k", b"2", cas), status::OK);
        assert_eq!(vm.set_data(b"k", b"3", cas), status::CAS_MISMATCH);
        assert_eq!(vm.set_data(b"k", b"3", 0), status::OK);
        assert_eq!(vm.get_data(b"k").unwrap().0, b"3");
        let big = vec![0u8; MAX_SHARED_DATA_BYTES];
        assert_eq!(vm.set_data(b"big", &big, 0), status::INTERNAL_FAILURE);
    }

    #[test]
    fn metric_rules() {
        let vm = VmShared::new("vm");
        let c = vm.define_metric(MetricKind::Counter, "c").unwrap();
        let g = vm.define_metric(MetricKind::Gauge, "g").unwrap();
        let h = vm.define_metric(MetricKind::Histogram, "h").unwrap();
        assert_eq!(vm.define_metric(MetricKind::Counter, "c"), Some(c));
        assert_eq!(vm.increment_metric(c, 2), status::OK);
        assert_eq!(vm.increment_metric(c, -1), status::BAD_ARGUMENT);
        assert_eq!(vm.record_metric(c, 3), status::OK);
        assert_eq!(vm.get_metric(c), Ok(5));
        assert_eq!(vm.increment_metric(g, -4), status::OK);
        assert_eq!(vm.get_metric(g), Ok((-4i64) as u64));
        assert_eq!(vm.record_metric(g, 9), status::OK);
        assert_eq!(vm.get_metric(g), Ok(9));
        assert_eq!(vm.increment_metric(h, 1), status::BAD_ARGUMENT);
        assert_eq!(vm.record_metric(h, 7), status::OK);
        assert_eq!(vm.get_metric(h), Err(status::BAD_ARGUMENT));
        assert_eq!(vm.metric("h").unwrap().samples, vec![7]);
        assert_eq!(vm.get_metric(99), Err(status::NOT_FOUND));
        assert_eq!(vm.increment_metric(0, 1), status::NOT_FOUND);
    }

    #[test]
    fn registries_are_bounded() {
        let vm = VmShared::new("vm");
        // A name past MAX_NAME_BYTES is refused, whatever the budget left.
        let long = "n".repeat(MAX_NAME_BYTES + 1);
        assert_eq!(vm.define_metric(MetricKind::Gauge, &long), None);
        let nobody = Arc::new(QueueWaiter {
            ready: Mutex::new(Vec::new()),
            notify: Notify::new(),
        });
        assert_eq!(vm.register_queue(&long, &nobody), None);
        for i in 3..MAX_METRICS {
            assert!(vm
                .define_metric(MetricKind::Gauge, &format!("m{i}"))
                .is_some());
        }
        vm.define_metric(MetricKind::Gauge, "m0").unwrap();
        vm.define_metric(MetricKind::Gauge, "m1").unwrap();
        let h = vm.define_metric(MetricKind::Histogram, "h").unwrap();
        assert_eq!(vm.define_metric(MetricKind::Gauge, "one too many"), None);
        // An existing name still resolves.
        assert_eq!(vm.define_metric(MetricKind::Histogram, "h"), Some(h));
        for v in 0..MAX_SAMPLES as u64 + 5 {
            assert_eq!(vm.record_metric(h, v), status::OK);
        }
        let samples = vm.metric("h").unwrap().samples;
        assert_eq!(samples.len(), MAX_SAMPLES);
        assert_eq!(samples.front(), Some(&5));

        let waiter = Arc::new(QueueWaiter {
            ready: Mutex::new(Vec::new()),
            notify: Notify::new(),
        });
        for i in 0..MAX_QUEUES {
            assert!(vm.register_queue(&format!("q{i}"), &waiter).is_some());
        }
        assert_eq!(vm.register_queue("one too many", &waiter), None);
        assert_eq!(vm.register_queue("q0", &waiter), Some(1));
        // Queue bytes are bounded across the VM's queues, and freed by dequeue.
        let half = vec![0u8; MAX_QUEUE_BYTES / 2];
        assert_eq!(vm.enqueue(1, half.clone()), status::OK);
        assert_eq!(vm.enqueue(2, half.clone()), status::OK);
        assert_eq!(vm.enqueue(3, vec![1]), status::INTERNAL_FAILURE);
        assert_eq!(vm.dequeue(1).map(|v| v.len()), Ok(half.len()));
        assert_eq!(vm.enqueue(3, vec![1]), status::OK);
    }

    fn waiter() -> Arc<QueueWaiter> {
        Arc::new(QueueWaiter {
            ready: Mutex::new(Vec::new()),
            notify: Notify::new(),
        })
    }

    #[test]
    fn one_state_per_vm_id_held_weakly() {
        let reg = VmRegistry::new();
        let a = reg.join("v", 1000, "a").unwrap();
        let b = reg.join("v", 1000, "b").unwrap();
        let c = reg.join("w", 1000, "c").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(a.set_data(b"k", b"1", 0), status::OK);
        assert_eq!(b.get_data(b"k").unwrap().0, b"1");
        assert_eq!(c.get_data(b"k"), None);
        // Another budget for the same VM id is refused, naming both plugins.
        let err = reg
            .join("v", 2000, "d")
            .err()
            .expect("another maxHostBytes");
        assert_eq!(
            err,
            VmJoinError::MaxHostBytes {
                vm_id: "v".into(),
                plugin: "d".into(),
                max_host_bytes: 2000,
                first: "a".into(),
                first_max_host_bytes: 1000,
            }
        );
        assert!(err
            .to_string()
            .contains("\"d\" shares VM id \"v\" with plugin \"a\""));
        // Once no plugin holds it, the state is gone: a new plugin starts afresh.
        drop((a, b));
        let again = reg.join("v", 2000, "d").unwrap();
        assert_eq!(again.get_data(b"k"), None);
        assert_eq!(format!("{reg:?}"), r#"["w", "v"]"#);
    }

    #[test]
    fn queues_resolve_and_fill_across_vm_ids() {
        let reg = VmRegistry::new();
        let a = reg.join("vm-a", 1000, "a").unwrap();
        let b = reg.join("vm-b", 1000, "b").unwrap();
        let (wa, wb) = (waiter(), waiter());
        let qa = a.register_queue("q", &wa).unwrap();
        let qb = b.register_queue("q", &wb).unwrap();
        assert_ne!(qa, qb);
        assert_eq!(b.resolve_queue("vm-a", "q"), Some(qa));
        assert_eq!(b.resolve_queue("", "q"), Some(qb));
        assert_eq!(b.resolve_queue("vm-b", "q"), Some(qb));
        assert_eq!(b.resolve_queue("vm-c", "q"), None);
        assert_eq!(b.resolve_queue("vm-a", "other"), None);
        // B fills A's queue: A's root is told (with A's id), B's is not.
        assert_eq!(b.enqueue(qa, b"x".to_vec()), status::OK);
        assert_eq!(*wa.ready.lock().unwrap(), vec![qa]);
        assert!(wb.ready.lock().unwrap().is_empty());
        // The item is A's: its bytes count there, and any VM may take it.
        assert_eq!(a.host_bytes(), 2);
        assert_eq!(b.host_bytes(), 1);
        assert_eq!(a.dequeue(qb), Err(status::EMPTY));
        assert_eq!(b.dequeue(qa), Ok(b"x".to_vec()));
        assert_eq!(a.host_bytes(), 1);
        // An id of a VM id no plugin uses any more is not found.
        drop(a);
        assert_eq!(b.enqueue(qa, b"y".to_vec()), status::NOT_FOUND);
        assert_eq!(b.dequeue(qa), Err(status::NOT_FOUND));
        assert_eq!(b.resolve_queue("vm-a", "q"), None);
    }
}
