//! Snapshot state shared by every virtio device: its queues.
//!
//! [`QueueSnapshot`] is the serializable form of a `virtio_queue::Queue` (sizes, ready flag, ring
//! addresses, next avail/used indices, event-idx). Restoring one is validated against guest
//! memory like a driver's `DRIVER_OK`: a state file is untrusted input, so a queue that does not
//! fit guest memory is an error, never a panic.
//!
//! Device-specific state (a block device's backing file, a net device's tap name) is each
//! device's own [`Persist`](crate::persist::Persist) state; the transport's registers are
//! [`super::mmio::MmioTransportState`].

use serde::{Deserialize, Serialize};
use squib_core::GuestMemoryMmap;
use virtio_queue::{Queue, QueueState, QueueT};

/// One virtqueue as a snapshot saves it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSnapshot {
    /// Largest size the device offers.
    pub max_size: u16,
    /// Size the driver chose.
    pub size: u16,
    /// `QueueReady`.
    pub ready: bool,
    /// Descriptor table address.
    pub desc_table: u64,
    /// Available ring address.
    pub avail_ring: u64,
    /// Used ring address.
    pub used_ring: u64,
    /// Next available-ring index the device will read.
    pub next_avail: u16,
    /// Next used-ring index the device will write.
    pub next_used: u16,
    /// `VIRTIO_RING_F_EVENT_IDX` negotiated.
    pub event_idx_enabled: bool,
}

/// Why a saved queue cannot be restored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueueRestoreError {
    /// The saved values are not a valid queue (size not a power of two, above the maximum, ...).
    #[error("invalid saved virtqueue: {0}")]
    Invalid(String),
    /// The saved rings do not lie inside guest memory.
    #[error("saved virtqueue {0} does not fit in guest memory")]
    OutOfMemory(usize),
    /// A different number of queues than the device has.
    #[error("expected {expected} saved virtqueues, found {found}")]
    Count {
        /// Queues the device has.
        expected: usize,
        /// Queues in the state.
        found: usize,
    },
}

impl QueueSnapshot {
    /// Captures `queue`.
    pub fn save(queue: &Queue) -> Self {
        let s = queue.state();
        Self {
            max_size: s.max_size,
            size: s.size,
            ready: s.ready,
            desc_table: s.desc_table,
            avail_ring: s.avail_ring,
            used_ring: s.used_ring,
            next_avail: s.next_avail,
            next_used: s.next_used,
            event_idx_enabled: s.event_idx_enabled,
        }
    }

    /// Rebuilds the queue and checks it against `mem`.
    pub fn restore(&self, index: usize, mem: &GuestMemoryMmap) -> Result<Queue, QueueRestoreError> {
        let queue = Queue::try_from(QueueState {
            max_size: self.max_size,
            next_avail: self.next_avail,
            next_used: self.next_used,
            event_idx_enabled: self.event_idx_enabled,
            size: self.size,
            ready: self.ready,
            desc_table: self.desc_table,
            avail_ring: self.avail_ring,
            used_ring: self.used_ring,
        })
        .map_err(|e| QueueRestoreError::Invalid(format!("{e:?}")))?;
        if !queue.is_valid(mem) {
            return Err(QueueRestoreError::OutOfMemory(index));
        }
        Ok(queue)
    }
}

/// Saves every queue of a device.
pub fn save_queues(queues: &[Queue]) -> Vec<QueueSnapshot> {
    queues.iter().map(QueueSnapshot::save).collect()
}

/// Restores `expected` queues from `saved`, each validated against `mem`.
pub fn restore_queues(
    saved: &[QueueSnapshot],
    expected: usize,
    mem: &GuestMemoryMmap,
) -> Result<Vec<Queue>, QueueRestoreError> {
    if saved.len() != expected {
        return Err(QueueRestoreError::Count {
            expected,
            found: saved.len(),
        });
    }
    saved
        .iter()
        .enumerate()
        .map(|(i, q)| q.restore(i, mem))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::test_utils::{TestQueue, guest_memory};

    #[test]
    fn test_queue_round_trip() {
        let mem = guest_memory(0x1_0000);
        let tq = TestQueue::new(&mem, 0, 16);
        let mut q = tq.create_queue();
        q.set_next_avail(5);
        q.set_next_used(4);
        let saved = QueueSnapshot::save(&q);
        let json = serde_json::to_string(&saved).unwrap();
        let back: QueueSnapshot = serde_json::from_str(&json).unwrap();
        let restored = back.restore(0, &mem).unwrap();
        assert_eq!(QueueSnapshot::save(&restored), saved);
        assert_eq!(restored.next_avail(), 5);
        assert_eq!(restored.next_used(), 4);
    }

    #[test]
    fn test_bad_saved_queues_are_errors() {
        let mem = guest_memory(0x1_0000);
        let tq = TestQueue::new(&mem, 0, 16);
        let good = QueueSnapshot::save(&tq.create_queue());
        let mut bad = good;
        bad.size = 3;
        assert!(matches!(
            bad.restore(0, &mem),
            Err(QueueRestoreError::Invalid(_))
        ));
        let mut bad = good;
        bad.used_ring = 0x10_0000;
        assert_eq!(bad.restore(2, &mem), Err(QueueRestoreError::OutOfMemory(2)));
        assert_eq!(
            restore_queues(&[good], 2, &mem).unwrap_err(),
            QueueRestoreError::Count {
                expected: 2,
                found: 1
            }
        );
        assert_eq!(restore_queues(&[good], 1, &mem).unwrap().len(), 1);
    }
}
