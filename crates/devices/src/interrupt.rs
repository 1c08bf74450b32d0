//! Edge-triggered interrupt lines injected into device models.
//!
//! A device raises its interrupt through an [`IrqLine`] and never learns what delivers it. In
//! production that is an [`EventFdIrq`]: the VMM registers the eventfd with the hypervisor as an
//! irqfd for the device's GSI (COM1 → 4, i8042 → 1), so a write of 1 injects an edge on that
//! line without a VM exit. Tests use [`CountingIrq`].
//!
//! Lines are `Send + Sync` and shared as `Arc<dyn IrqLine>`; triggering takes `&self`.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use vmm_sys_util::eventfd::EventFd;

/// An edge-triggered interrupt line.
pub trait IrqLine: Send + Sync {
    /// Signals one edge on the line.
    fn trigger(&self) -> io::Result<()>;
}

/// An interrupt line backed by an eventfd (the VMM registers it as a KVM irqfd).
#[derive(Debug)]
pub struct EventFdIrq(EventFd);

impl EventFdIrq {
    /// Wraps `eventfd`; every trigger writes 1 to it.
    pub fn new(eventfd: EventFd) -> Self {
        Self(eventfd)
    }

    /// The underlying eventfd (to register it as an irqfd, or to read it in tests).
    pub fn eventfd(&self) -> &EventFd {
        &self.0
    }

    /// Unwraps the eventfd.
    pub fn into_inner(self) -> EventFd {
        self.0
    }
}

impl IrqLine for EventFdIrq {
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// A test double that counts edges and can be switched to fail.
#[derive(Debug, Default)]
pub struct CountingIrq {
    count: AtomicU64,
    fail: AtomicBool,
}

impl CountingIrq {
    /// A line with no edges yet that accepts triggers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of successful triggers so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// Makes subsequent triggers fail with an I/O error (`true`) or succeed again (`false`).
    pub fn set_failing(&self, fail: bool) {
        self.fail.store(fail, Ordering::SeqCst);
    }
}

impl IrqLine for CountingIrq {
    fn trigger(&self) -> io::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(io::Error::other("CountingIrq set to fail"));
        }
        self.count.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    use super::*;

    #[test]
    fn test_eventfd_irq_trigger_writes_one_per_edge() {
        let irq = EventFdIrq::new(EventFd::new(EFD_NONBLOCK).unwrap());
        irq.trigger().unwrap();
        irq.trigger().unwrap();
        assert_eq!(irq.eventfd().read().unwrap(), 2);
    }

    #[test]
    fn test_counting_irq_counts_and_fails_on_demand() {
        let irq: Arc<dyn IrqLine> = Arc::new(CountingIrq::new());
        irq.trigger().unwrap();
        let counting = CountingIrq::new();
        counting.set_failing(true);
        assert!(counting.trigger().is_err());
        assert_eq!(counting.count(), 0);
        counting.set_failing(false);
        counting.trigger().unwrap();
        assert_eq!(counting.count(), 1);
    }
}
