//! Placing one received frame into the guest's RX chains.
//!
//! [`RxRound`] is the state of one RX processing round: the chains popped from the RX queue and
//! not yet returned (`parked`, in available-ring order). [`RxRound::collect`] pops chains until
//! the frame fits (one chain, or with `MRG_RXBUF` as many as needed); [`RxRound::commit`] copies
//! the frame, writes `num_buffers`, and publishes every used element of the frame at once (a
//! driver polling the used ring must never see the first buffer of a merged frame without the
//! rest, so `Queue::add_used`, which publishes one element at a time, is not used here).
//! [`RxRound::finish`] puts the chains still parked back on the available ring
//! (`go_to_previous_position`), so between rounds the queue's indices are exactly what the guest
//! sees: nothing is held across events, which keeps snapshots and resets trivial.
//!
//! Malformed chains (bad descriptors, device-readable buffers, too small) are returned with length
//! 0 when a frame is committed past them, ahead of the frame's own elements.
//!
//! Owned by the device, used on the VMM thread.

use std::collections::VecDeque;
use std::num::Wrapping;
use std::sync::atomic::{Ordering, fence};

use squib_core::GuestMemoryMmap;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestAddress};

use super::VNET_HDR_LEN;
use crate::virtio::chain::{Chain, Segment};

/// One popped RX chain.
#[derive(Debug)]
struct RxChain {
    head: u16,
    writable: Vec<Segment>,
    capacity: u64,
    usable: bool,
}

/// What [`RxRound::collect`] found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Collect {
    /// The first `n` parked chains hold the frame.
    Ready(usize),
    /// The guest has not made enough room available (notifications are re-enabled).
    NoBuffers,
    /// The frame can never fit: drop it.
    TooBig,
    /// `avail.idx` is impossible.
    BrokenRing,
}

/// What [`RxRound::commit`] did.
#[derive(Debug, Default)]
pub(super) struct Commit {
    /// Malformed chains returned with length 0.
    pub(super) bad_chains: u32,
    /// Guest-memory or used-ring writes failed (the frame is lost).
    pub(super) failed: bool,
}

/// One RX processing round (see the [module docs](self)).
#[derive(Debug, Default)]
pub(super) struct RxRound {
    parked: VecDeque<RxChain>,
    /// Usable chains among `parked` already counted, and their capacity.
    scanned: usize,
    scanned_capacity: u64,
    /// `next_used` when the round started (for notification suppression).
    pub(super) start_used: Option<u16>,
}

impl RxRound {
    /// Pops chains until the first usable ones hold `frame_len` bytes. `min_chain` is the least
    /// capacity of a usable chain; `mergeable` allows spreading over several.
    pub(super) fn collect(
        &mut self,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
        frame_len: usize,
        min_chain: u64,
        mergeable: bool,
    ) -> Collect {
        self.start_used.get_or_insert(queue.next_used());
        self.scanned = 0;
        self.scanned_capacity = 0;
        let need = u64::try_from(frame_len).unwrap_or(u64::MAX);
        loop {
            while self.scanned < self.parked.len() {
                let c = &self.parked[self.scanned];
                self.scanned += 1;
                if !c.usable {
                    continue;
                }
                if !mergeable {
                    return if c.capacity >= need {
                        Collect::Ready(self.scanned)
                    } else {
                        Collect::TooBig
                    };
                }
                self.scanned_capacity = self.scanned_capacity.saturating_add(c.capacity);
                if self.scanned_capacity >= need {
                    return Collect::Ready(self.scanned);
                }
            }
            if self.parked.len() >= usize::from(queue.size()) {
                // Every chain the ring can hold is here and the frame still does not fit.
                return Collect::TooBig;
            }
            match crate::virtio::queue::pending(queue, mem) {
                None => return Collect::BrokenRing,
                Some(0) => match queue.enable_notification(mem) {
                    Ok(true) => continue,
                    Ok(false) | Err(_) => return Collect::NoBuffers,
                },
                Some(_) => {}
            }
            let Some(dc) = queue.pop_descriptor_chain(mem) else {
                return Collect::BrokenRing;
            };
            let head = dc.head_index();
            let chain = Chain::walk(dc, mem);
            let capacity = chain.writable_len();
            let usable = chain.error.is_none()
                && chain.readable.is_empty()
                && capacity >= min_chain
                && head < queue.size();
            self.parked.push_back(RxChain {
                head,
                writable: chain.writable,
                capacity,
                usable,
            });
        }
    }

    /// Copies `frame` (header included) into the first `n` parked chains, sets `num_buffers`,
    /// and publishes their used elements (malformed ones first, with length 0).
    pub(super) fn commit(
        &mut self,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
        frame: &mut [u8],
        n: usize,
    ) -> Commit {
        let mut out = Commit::default();
        let chains: Vec<RxChain> = self.parked.drain(..n.min(self.parked.len())).collect();
        self.scanned = 0;
        self.scanned_capacity = 0;
        // Bytes per usable chain.
        let mut left = frame.len() as u64;
        let mut takes = Vec::with_capacity(chains.len());
        for c in &chains {
            let take = if c.usable { c.capacity.min(left) } else { 0 };
            left -= take;
            takes.push(take);
        }
        let num_buffers = chains
            .iter()
            .zip(&takes)
            .filter(|(c, t)| c.usable && **t > 0)
            .count();
        if let Some(field) = frame.get_mut(VNET_HDR_LEN - 2..VNET_HDR_LEN) {
            let nb = u16::try_from(num_buffers).unwrap_or(u16::MAX);
            field.copy_from_slice(&nb.to_le_bytes());
        }
        let mut used: Vec<(u16, u32)> = Vec::with_capacity(chains.len());
        for c in chains.iter().filter(|c| !c.usable) {
            out.bad_chains += 1;
            if c.head < queue.size() {
                used.push((c.head, 0));
            }
        }
        let mut offset = 0usize;
        for (c, &take) in chains.iter().zip(&takes) {
            if !c.usable || take == 0 {
                continue;
            }
            let take_usize = usize::try_from(take).unwrap_or(usize::MAX);
            let end = offset.saturating_add(take_usize).min(frame.len());
            if !write_stream(mem, &c.writable, &frame[offset..end]) {
                out.failed = true;
            }
            offset = end;
            used.push((c.head, u32::try_from(take).unwrap_or(u32::MAX)));
        }
        if publish_used(queue, mem, &used).is_none() {
            out.failed = true;
        }
        out
    }

    /// Returns the parked chains to the available ring; returns whether the driver must be
    /// interrupted for what this round published.
    pub(super) fn finish(&mut self, queue: &mut Queue, mem: &GuestMemoryMmap) -> bool {
        for _ in 0..self.parked.len() {
            queue.go_to_previous_position();
        }
        self.parked.clear();
        self.scanned = 0;
        self.scanned_capacity = 0;
        let Some(start) = self.start_used.take() else {
            return false;
        };
        let now = queue.next_used();
        if now == start {
            return false;
        }
        needs_notification(queue, mem, start, now)
    }
}

/// Writes `data` across `segs` in order; `false` if a write failed or `data` is longer.
fn write_stream(mem: &GuestMemoryMmap, segs: &[Segment], data: &[u8]) -> bool {
    let mut rest = data;
    for seg in segs {
        if rest.is_empty() {
            break;
        }
        let n = usize::try_from(seg.len)
            .unwrap_or(usize::MAX)
            .min(rest.len());
        if mem.write_slice(&rest[..n], seg.addr).is_err() {
            return false;
        }
        rest = &rest[n..];
    }
    rest.is_empty()
}

/// Writes used elements for `entries` and then `used.idx` once (release). `None` on a failed
/// guest-memory write (nothing is published then).
fn publish_used(queue: &mut Queue, mem: &GuestMemoryMmap, entries: &[(u16, u32)]) -> Option<()> {
    if entries.is_empty() {
        return Some(());
    }
    let size = queue.size();
    if size == 0 {
        return None;
    }
    let ring = GuestAddress(queue.used_ring());
    let mut idx = Wrapping(queue.next_used());
    for &(head, len) in entries {
        let slot = u64::from(idx.0 % size);
        let at = ring.checked_add(4 + 8 * slot)?;
        mem.write_obj(u32::from(head).to_le(), at).ok()?;
        mem.write_obj(len.to_le(), at.checked_add(4)?).ok()?;
        idx += Wrapping(1);
    }
    mem.store(idx.0.to_le(), ring.checked_add(2)?, Ordering::Release)
        .ok()?;
    queue.set_next_used(idx.0);
    Some(())
}

/// `vring_need_event` against the driver's `used_event` (always `true` without
/// `VIRTIO_RING_F_EVENT_IDX`, and when `used_event` cannot be read).
fn needs_notification(queue: &Queue, mem: &GuestMemoryMmap, old: u16, new: u16) -> bool {
    if !queue.event_idx_enabled() {
        return true;
    }
    fence(Ordering::SeqCst);
    let at = GuestAddress(queue.avail_ring()).checked_add(4 + 2 * u64::from(queue.size()));
    let Some(used_event) = at.and_then(|a| mem.read_obj::<u16>(a).ok()) else {
        return true;
    };
    let used_event = Wrapping(u16::from_le(used_event));
    let (old, new) = (Wrapping(old), Wrapping(new));
    new - used_event - Wrapping(1) < new - old
}
