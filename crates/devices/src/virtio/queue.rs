//! The device side of split-queue processing, shared by every device.
//!
//! [`drain`] pops every available chain, walks it ([`Chain::walk`]), hands it with its head index
//! to the device's handler and returns it on the used ring; a chain the handler cannot take yet
//! (rate limiter, full I/O engine) is put back and draining stops, and a chain the handler
//! submitted for asynchronous completion ([`Step::Pending`]) is left for the device to return
//! later with `Queue::add_used`. It re-enables driver notifications (`avail_event` with
//! `VIRTIO_RING_F_EVENT_IDX`) and loops while the driver keeps adding chains, up to
//! [`MAX_BATCHES`] rounds so that a driver racing `avail.idx` cannot pin the event loop.
//!
//! virtio-queue logs (through the `log` crate, unthrottled) when asked to iterate a ring whose
//! `avail.idx` is more than a queue size ahead, or to return an out-of-range head. Both are
//! guest-controlled, so [`drain`] checks them first and reports them in [`Drain`] for the device
//! to count and log through its rate-limited log.

use std::num::Wrapping;
use std::sync::atomic::Ordering;

use squib_core::GuestMemoryMmap;
use virtio_queue::{Queue, QueueOwnedT, QueueT};

use super::chain::Chain;
use super::{InterruptKind, VirtioInterrupt};

/// Rounds of "drain, re-enable notifications, re-check" per queue event.
pub(crate) const MAX_BATCHES: usize = 64;

/// What the handler did with one chain.
pub(crate) enum Step {
    /// Return the chain with this many bytes written into it.
    Used(u32),
    /// Not now (rate limited, I/O engine full): put it back and stop draining.
    Throttled,
    /// Submitted for asynchronous completion: the device returns it on the used ring itself.
    Pending,
}

/// What [`drain`] saw.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Drain {
    /// At least one chain was popped.
    pub(crate) popped: bool,
    /// At least one chain was returned on the used ring.
    pub(crate) used: bool,
    /// Draining stopped on a throttled chain.
    pub(crate) throttled: bool,
    /// `avail.idx` was more than a queue size ahead, or unreadable.
    pub(crate) broken_ring: bool,
    /// Used-ring or notification-suppression writes that failed.
    pub(crate) ring_errors: u32,
}

/// Entries the driver made available, or `None` if `avail.idx` is unreadable or impossible.
pub(crate) fn pending(queue: &Queue, mem: &GuestMemoryMmap) -> Option<u16> {
    let idx = queue.avail_idx(mem, Ordering::Acquire).ok()?;
    let n = (idx - Wrapping(queue.next_avail())).0;
    (n <= queue.size()).then_some(n)
}

/// Drains `queue` through `handle` (see the module docs).
pub(crate) fn drain(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    mut handle: impl FnMut(u16, Chain) -> Step,
) -> Drain {
    let mut out = Drain::default();
    'batches: for _ in 0..MAX_BATCHES {
        let Some(mut pending) = pending(queue, mem) else {
            out.broken_ring = true;
            break;
        };
        while pending > 0 {
            let Some(desc_chain) = queue.pop_descriptor_chain(mem) else {
                out.broken_ring = true;
                break 'batches;
            };
            pending -= 1;
            out.popped = true;
            let head = desc_chain.head_index();
            match handle(head, Chain::walk(desc_chain, mem)) {
                Step::Pending => {}
                Step::Throttled => {
                    queue.go_to_previous_position();
                    out.throttled = true;
                    break 'batches;
                }
                // A head outside the table has no used-ring slot; the driver loses it.
                Step::Used(_) if head >= queue.size() => {}
                Step::Used(len) => match queue.add_used(mem, head, len) {
                    Ok(()) => out.used = true,
                    Err(_) => out.ring_errors += 1,
                },
            }
        }
        match queue.enable_notification(mem) {
            Ok(true) => {}
            Ok(false) => break,
            Err(_) => {
                out.ring_errors += 1;
                break;
            }
        }
    }
    out
}

/// Interrupts the driver for used buffers on queue `index` unless event-idx suppression says it
/// does not want one.
pub(crate) fn signal_used(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    interrupt: &dyn VirtioInterrupt,
    index: u16,
) -> std::io::Result<()> {
    if queue.needs_notification(mem).unwrap_or(true) {
        interrupt.trigger(InterruptKind::Queue(index))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use virtio_queue::QueueT;

    use super::*;
    use crate::virtio::test_utils::{TestQueue, guest_memory, wr};

    #[test]
    fn test_drain_returns_chains_and_stops_when_throttled() {
        let mem = guest_memory(0x10000);
        let mut tq = TestQueue::new(&mem, 0, 8);
        let mut q = tq.create_queue();
        for _ in 0..3 {
            tq.add_chain(&[wr(0x4000, 8)]);
        }
        let mut n = 0;
        let d = drain(&mut q, &mem, |_, c| {
            n += 1;
            assert_eq!(c.writable_len(), 8);
            if n == 3 {
                Step::Throttled
            } else {
                Step::Used(8)
            }
        });
        assert!(d.popped && d.used && d.throttled && !d.broken_ring);
        assert_eq!(tq.used_idx(), 2);
        // The throttled chain is offered again.
        let d = drain(&mut q, &mem, |head, _| {
            assert_eq!(head, 2);
            Step::Used(1)
        });
        assert!(d.used && !d.throttled);
        assert_eq!(tq.used_elem(2), (2, 1));
        let d = drain(&mut q, &mem, |_, _| Step::Used(1));
        assert_eq!(d, Drain::default());
    }

    #[test]
    fn test_drain_leaves_pending_chains_to_the_device() {
        let mem = guest_memory(0x10000);
        let mut tq = TestQueue::new(&mem, 0, 8);
        let mut q = tq.create_queue();
        let heads = [
            tq.add_chain(&[wr(0x4000, 8)]),
            tq.add_chain(&[wr(0x5000, 8)]),
        ];
        let mut seen = Vec::new();
        let d = drain(&mut q, &mem, |head, _| {
            seen.push(head);
            if head == heads[0] {
                Step::Pending
            } else {
                Step::Used(3)
            }
        });
        assert_eq!(seen, heads);
        assert!(d.popped && d.used && !d.throttled);
        assert_eq!(tq.used_idx(), 1);
        assert_eq!(tq.used_elem(0), (u32::from(heads[1]), 3));
        // The device completes the pending chain later, out of order.
        q.add_used(&mem, heads[0], 5).unwrap();
        assert_eq!(tq.used_elem(1), (u32::from(heads[0]), 5));
    }

    #[test]
    fn test_drain_reports_broken_ring_without_popping() {
        let mem = guest_memory(0x10000);
        let tq = TestQueue::new(&mem, 0, 8);
        let mut q = tq.create_queue();
        tq.set_avail_idx(9);
        let d = drain(&mut q, &mem, |_, _| unreachable!());
        assert!(d.broken_ring && !d.popped);
        // A head outside the table is consumed but never returned.
        tq.set_avail_idx(0);
        tq.publish(200);
        let d = drain(&mut q, &mem, |_, c| {
            assert!(c.error.is_some());
            Step::Used(0)
        });
        assert!(d.popped && !d.used);
        assert_eq!(tq.used_idx(), 0);
    }
}
