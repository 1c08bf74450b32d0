//! Driver-side virtqueue builder for device tests (no guest, no hypervisor).
//!
//! [`TestQueue`] lays out a split virtqueue (descriptor table, available ring, used ring) in a
//! `GuestMemoryMmap` the way a guest driver would, publishes descriptor chains, and reads back
//! what the device put in the used ring.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use squib_core::GuestMemoryMmap;
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress};

use super::{InterruptKind, VirtioInterrupt};

/// Descriptor flag: another descriptor follows.
#[expect(
    clippy::cast_possible_truncation,
    reason = "descriptor flags are 16-bit"
)]
pub(crate) const F_NEXT: u16 = VRING_DESC_F_NEXT as u16;
/// Descriptor flag: device-writable buffer.
#[expect(
    clippy::cast_possible_truncation,
    reason = "descriptor flags are 16-bit"
)]
pub(crate) const F_WRITE: u16 = VRING_DESC_F_WRITE as u16;
/// Descriptor flag: the buffer is an indirect descriptor table.
#[expect(
    clippy::cast_possible_truncation,
    reason = "descriptor flags are 16-bit"
)]
pub(crate) const F_INDIRECT: u16 = VRING_DESC_F_INDIRECT as u16;

/// Guest memory of `len` bytes at guest-physical 0.
pub(crate) fn guest_memory(len: usize) -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), len)]).unwrap()
}

/// Guest-physical addresses (offsets from 0) of the bytes that differ between two snapshots.
///
/// Compares 64-byte chunks first (a `memcmp`), so it stays fast in debug builds.
pub(crate) fn changed_bytes(before: &[u8], after: &[u8]) -> Vec<u64> {
    let mut out = Vec::new();
    for (ci, (b, a)) in before.chunks(64).zip(after.chunks(64)).enumerate() {
        if b != a {
            for (i, (x, y)) in b.iter().zip(a).enumerate() {
                if x != y {
                    out.push((ci * 64 + i) as u64);
                }
            }
        }
    }
    out
}

/// One buffer of a chain to publish: address, length, device-writable.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Buf {
    pub(crate) addr: u64,
    pub(crate) len: u32,
    pub(crate) write: bool,
}

/// A device-readable buffer.
pub(crate) fn rd(addr: u64, len: u32) -> Buf {
    Buf {
        addr,
        len,
        write: false,
    }
}

/// A device-writable buffer.
pub(crate) fn wr(addr: u64, len: u32) -> Buf {
    Buf {
        addr,
        len,
        write: true,
    }
}

/// The driver's view of one split virtqueue in guest memory.
#[derive(Debug)]
pub(crate) struct TestQueue {
    mem: GuestMemoryMmap,
    size: u16,
    desc: GuestAddress,
    avail: GuestAddress,
    used: GuestAddress,
    next_desc: u16,
}

impl TestQueue {
    /// A queue of `size` entries whose structures start at `base` (16-byte aligned).
    pub(crate) fn new(mem: &GuestMemoryMmap, base: u64, size: u16) -> Self {
        let desc = GuestAddress(base);
        let avail = desc.unchecked_add(16 * u64::from(size));
        let used_unaligned = avail.unchecked_add(6 + 2 * u64::from(size));
        let used = GuestAddress((used_unaligned.raw_value() + 3) & !3);
        let q = Self {
            mem: mem.clone(),
            size,
            desc,
            avail,
            used,
            next_desc: 0,
        };
        mem.write_obj(0u16, avail).unwrap();
        mem.write_obj(0u16, avail.unchecked_add(2)).unwrap();
        mem.write_obj(0u16, used).unwrap();
        mem.write_obj(0u16, used.unchecked_add(2)).unwrap();
        q
    }

    /// Queue size.
    pub(crate) fn size(&self) -> u16 {
        self.size
    }

    /// Descriptor table address.
    pub(crate) fn desc_addr(&self) -> GuestAddress {
        self.desc
    }

    /// Available ring address.
    pub(crate) fn avail_addr(&self) -> GuestAddress {
        self.avail
    }

    /// Used ring address.
    pub(crate) fn used_addr(&self) -> GuestAddress {
        self.used
    }

    /// One past the last byte of the used ring (including `avail_event`).
    pub(crate) fn end(&self) -> u64 {
        self.used.raw_value() + 6 + 8 * u64::from(self.size)
    }

    /// A device-side `Queue` configured like a driver would through the transport.
    pub(crate) fn create_queue(&self) -> Queue {
        let mut q = Queue::new(self.size).unwrap();
        q.try_set_size(self.size).unwrap();
        q.try_set_desc_table_address(self.desc).unwrap();
        q.try_set_avail_ring_address(self.avail).unwrap();
        q.try_set_used_ring_address(self.used).unwrap();
        q.set_ready(true);
        q
    }

    /// Writes raw descriptor `idx`.
    pub(crate) fn write_desc(&self, idx: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = self.desc.unchecked_add(16 * u64::from(idx));
        self.mem.write_obj(addr, at).unwrap();
        self.mem.write_obj(len, at.unchecked_add(8)).unwrap();
        self.mem.write_obj(flags, at.unchecked_add(12)).unwrap();
        self.mem.write_obj(next, at.unchecked_add(14)).unwrap();
    }

    /// Writes `bufs` as a chain into consecutive free descriptors (wrapping) and publishes its
    /// head in the available ring. Returns the head index.
    pub(crate) fn add_chain(&mut self, bufs: &[Buf]) -> u16 {
        let head = self.next_desc;
        for (i, b) in bufs.iter().enumerate() {
            let idx = self.next_desc;
            let next = (idx + 1) % self.size;
            let mut flags = if b.write { F_WRITE } else { 0 };
            if i + 1 < bufs.len() {
                flags |= F_NEXT;
            }
            self.write_desc(idx, b.addr, b.len, flags, next);
            self.next_desc = next;
        }
        self.publish(head);
        head
    }

    /// Appends `head` to the available ring and bumps `avail.idx`.
    pub(crate) fn publish(&self, head: u16) {
        let idx: u16 = self.mem.read_obj(self.avail.unchecked_add(2)).unwrap();
        let slot = u64::from(idx % self.size);
        self.mem
            .write_obj(head, self.avail.unchecked_add(4 + 2 * slot))
            .unwrap();
        self.mem
            .write_obj(idx.wrapping_add(1), self.avail.unchecked_add(2))
            .unwrap();
    }

    /// Sets `avail.idx` directly (to simulate a broken driver).
    pub(crate) fn set_avail_idx(&self, idx: u16) {
        self.mem
            .write_obj(idx, self.avail.unchecked_add(2))
            .unwrap();
    }

    /// Writes `used_event` (the entry after the available ring).
    pub(crate) fn set_used_event(&self, v: u16) {
        self.mem
            .write_obj(v, self.avail.unchecked_add(4 + 2 * u64::from(self.size)))
            .unwrap();
    }

    /// `used.idx`.
    pub(crate) fn used_idx(&self) -> u16 {
        self.mem.read_obj(self.used.unchecked_add(2)).unwrap()
    }

    /// Used ring entry `i` as `(id, len)`.
    pub(crate) fn used_elem(&self, i: u16) -> (u32, u32) {
        let at = self.used.unchecked_add(4 + 8 * u64::from(i % self.size));
        (
            self.mem.read_obj(at).unwrap(),
            self.mem.read_obj(at.unchecked_add(4)).unwrap(),
        )
    }
}

/// A [`VirtioInterrupt`] that records every trigger.
#[derive(Debug, Default)]
pub(crate) struct RecordingInterrupt {
    pub(crate) kinds: Mutex<Vec<InterruptKind>>,
    pub(crate) count: AtomicU64,
}

impl RecordingInterrupt {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    pub(crate) fn kinds(&self) -> Vec<InterruptKind> {
        self.kinds.lock().unwrap().clone()
    }
}

impl VirtioInterrupt for RecordingInterrupt {
    fn trigger(&self, kind: InterruptKind) -> std::io::Result<()> {
        self.kinds.lock().unwrap().push(kind);
        self.count.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}
