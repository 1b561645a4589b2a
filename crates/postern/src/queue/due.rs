//! Due times of the messages the scheduler knows about.
//!
//! May touch: nothing (memory only).

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::spool::QueueId;

/// Due times, indexed by id and by time, so a queue of many thousands of
/// messages costs O(log n) per operation instead of a scan per pass.
#[derive(Debug, Default)]
pub(super) struct DueQueue {
    by_id: HashMap<QueueId, u64>,
    order: BTreeSet<(u64, QueueId)>,
}

impl DueQueue {
    /// Sets (or moves) the due time of `id`.
    pub(super) fn insert(&mut self, id: QueueId, at: u64) {
        if let Some(old) = self.by_id.insert(id.clone(), at) {
            self.order.remove(&(old, id.clone()));
        }
        self.order.insert((at, id));
    }

    /// Sets the due time of `id` unless it has one.
    pub(super) fn insert_if_absent(&mut self, id: QueueId, at: u64) {
        if !self.by_id.contains_key(&id) {
            self.insert(id, at);
        }
    }

    /// Forgets `id`.
    pub(super) fn remove(&mut self, id: &QueueId) {
        if let Some(at) = self.by_id.remove(id) {
            self.order.remove(&(at, id.clone()));
        }
    }

    /// Up to `max` ids due at `now`, earliest first, skipping running ones.
    pub(super) fn ready(&self, now: u64, max: usize, running: &HashSet<QueueId>) -> Vec<QueueId> {
        self.order
            .iter()
            .take_while(|(at, _)| *at <= now)
            .filter(|(_, id)| !running.contains(id))
            .take(max)
            .map(|(_, id)| id.clone())
            .collect()
    }

    /// The earliest due time.
    pub(super) fn earliest(&self) -> Option<u64> {
        self.order.iter().next().map(|(at, _)| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_queue_orders_and_updates() {
        let id = |n: u16| QueueId::parse(&format!("{n:016X}")).unwrap();
        let mut q = DueQueue::default();
        q.insert(id(1), 30);
        q.insert(id(2), 10);
        q.insert(id(3), 20);
        q.insert(id(1), 5);
        q.insert_if_absent(id(2), 0);
        let none = HashSet::new();
        assert_eq!(q.ready(25, 10, &none), vec![id(1), id(2), id(3)]);
        assert_eq!(q.ready(25, 1, &none), vec![id(1)]);
        let running: HashSet<QueueId> = [id(1)].into_iter().collect();
        assert_eq!(q.ready(12, 10, &running), vec![id(2)]);
        q.remove(&id(1));
        assert_eq!(q.earliest(), Some(10));
        assert_eq!(q.by_id.len(), q.order.len());
    }
}
