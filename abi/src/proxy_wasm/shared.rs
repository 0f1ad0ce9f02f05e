//! What all instances of one proxy-wasm VM (one plugin declaration) share:
//! shared data with CAS, shared queues, and the metric registry.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

use super::abi::{status, MetricKind};

/// Bound of the shared data store (keys plus values), per VM.
pub const MAX_SHARED_DATA_BYTES: usize = 16 << 20;
/// Bound of one shared queue, in items.
pub const MAX_QUEUE_ITEMS: usize = 10_000;

/// A wake-up target for queue readiness: a middleware's dispatcher.
pub struct QueueWaiter {
    /// Queue ids with items not yet announced.
    pub ready: Mutex<Vec<u32>>,
    /// Wakes the dispatcher.
    pub notify: Notify,
}

struct Queue {
    vm_id: String,
    name: String,
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
    /// Histogram: every recorded value (bounded to the last 1024).
    pub samples: Vec<u64>,
}

#[derive(Default)]
struct Data {
    entries: HashMap<Vec<u8>, (Vec<u8>, u32)>,
    bytes: usize,
    next_cas: u32,
}

/// The state one VM's instances share.
pub struct VmShared {
    /// The VM id (`plugin_vm_id`).
    pub vm_id: String,
    data: Mutex<Data>,
    queues: Mutex<Vec<Queue>>,
    metrics: Mutex<Vec<Metric>>,
}

impl VmShared {
    /// Empty state for VM `vm_id`.
    pub fn new(vm_id: &str) -> Arc<VmShared> {
        Arc::new(VmShared {
            vm_id: vm_id.to_string(),
            data: Mutex::new(Data::default()),
            queues: Mutex::new(Vec::new()),
            metrics: Mutex::new(Vec::new()),
        })
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
        let new_bytes = d.bytes - old_size + key.len() + value.len();
        if new_bytes > MAX_SHARED_DATA_BYTES {
            return status::INTERNAL_FAILURE;
        }
        d.bytes = new_bytes;
        d.next_cas = d.next_cas.wrapping_add(1).max(1);
        let c = d.next_cas;
        d.entries.insert(key.to_vec(), (value.to_vec(), c));
        status::OK
    }

    /// `proxy_register_shared_queue`: creates or reopens the queue, and lets `waiter` hear of it.
    pub fn register_queue(&self, name: &str, waiter: &Arc<QueueWaiter>) -> u32 {
        let mut qs = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let idx = match qs
            .iter()
            .position(|q| q.vm_id == self.vm_id && q.name == name)
        {
            Some(i) => i,
            None => {
                qs.push(Queue {
                    vm_id: self.vm_id.clone(),
                    name: name.to_string(),
                    items: VecDeque::new(),
                    waiters: Vec::new(),
                });
                qs.len() - 1
            }
        };
        let q = &mut qs[idx];
        q.waiters.retain(|w| w.strong_count() > 0);
        if !q
            .waiters
            .iter()
            .any(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(waiter)))
        {
            q.waiters.push(Arc::downgrade(waiter));
        }
        idx as u32 + 1
    }

    /// `proxy_resolve_shared_queue`: the id of an existing queue of this VM.
    pub fn resolve_queue(&self, vm_id: &str, name: &str) -> Option<u32> {
        let vm_id = if vm_id.is_empty() { &self.vm_id } else { vm_id };
        let qs = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        qs.iter()
            .position(|q| q.vm_id == vm_id && q.name == name)
            .map(|i| i as u32 + 1)
    }

    /// `proxy_enqueue_shared_queue`: a status; wakes the registering middlewares.
    pub fn enqueue(&self, id: u32, value: Vec<u8>) -> i32 {
        let waiters: Vec<Arc<QueueWaiter>> = {
            let mut qs = self.queues.lock().unwrap_or_else(|p| p.into_inner());
            let Some(q) = id.checked_sub(1).and_then(|i| qs.get_mut(i as usize)) else {
                return status::NOT_FOUND;
            };
            if q.items.len() >= MAX_QUEUE_ITEMS {
                return status::INTERNAL_FAILURE;
            }
            q.items.push_back(value);
            q.waiters.iter().filter_map(Weak::upgrade).collect()
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

    /// `proxy_dequeue_shared_queue`: the item, or a status.
    pub fn dequeue(&self, id: u32) -> Result<Vec<u8>, i32> {
        let mut qs = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let Some(q) = id.checked_sub(1).and_then(|i| qs.get_mut(i as usize)) else {
            return Err(status::NOT_FOUND);
        };
        q.items.pop_front().ok_or(status::EMPTY)
    }

    /// `proxy_define_metric`: the id (the same for the same name and kind).
    pub fn define_metric(&self, kind: MetricKind, name: &str) -> u32 {
        let mut ms = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = ms.iter().position(|m| m.name == name && m.kind == kind) {
            return i as u32 + 1;
        }
        ms.push(Metric {
            name: name.to_string(),
            kind,
            value: 0,
            samples: Vec::new(),
        });
        ms.len() as u32
    }

    fn with_metric<T>(
        &self,
        id: u32,
        f: impl FnOnce(&mut Metric) -> Result<T, i32>,
    ) -> Result<T, i32> {
        let mut ms = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
        let m = id
            .checked_sub(1)
            .and_then(|i| ms.get_mut(i as usize))
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
                    if m.samples.len() >= 1024 {
                        m.samples.remove(0);
                    }
                    m.samples.push(value);
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
        let c = vm.define_metric(MetricKind::Counter, "c");
        let g = vm.define_metric(MetricKind::Gauge, "g");
        let h = vm.define_metric(MetricKind::Histogram, "h");
        assert_eq!(vm.define_metric(MetricKind::Counter, "c"), c);
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
}
