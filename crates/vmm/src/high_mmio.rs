//! Guest-physical space past the 64-bit MMIO gap (512 GiB and up, Firecracker's
//! `past_mmio64_memory`): the virtio-mem region (allocated first, slot-aligned), then one
//! 2 MiB-aligned window per pmem device, first fit in attach order.
//!
//! Pure data; owned by the device manager.

use squib_arch::layout::{FIRST_ADDR_PAST_64BITS_MMIO, PAST_64BITS_MMIO_SIZE};

/// A bump allocator over `[512 GiB, 1 TiB)` (nothing is freed: no hot-unplug without PCI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HighMmioAllocator {
    next: u64,
}

impl Default for HighMmioAllocator {
    fn default() -> Self {
        Self {
            next: FIRST_ADDR_PAST_64BITS_MMIO,
        }
    }
}

impl HighMmioAllocator {
    /// `size` bytes aligned to `align` (a power of two), or `None` if the area is exhausted.
    pub fn allocate(&mut self, size: u64, align: u64) -> Option<u64> {
        if size == 0 || !align.is_power_of_two() {
            return None;
        }
        let start = self.next.checked_add(align - 1)? & !(align - 1);
        let end = start.checked_add(size)?;
        if end > FIRST_ADDR_PAST_64BITS_MMIO + PAST_64BITS_MMIO_SIZE {
            return None;
        }
        self.next = end;
        Some(start)
    }

    /// Whether `[start, start + size)` lies inside the area (a restored device's window).
    pub fn contains(start: u64, size: u64) -> bool {
        start >= FIRST_ADDR_PAST_64BITS_MMIO
            && start
                .checked_add(size)
                .is_some_and(|e| e <= FIRST_ADDR_PAST_64BITS_MMIO + PAST_64BITS_MMIO_SIZE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_allocates_aligned_first_fit_and_refuses_overflow() {
        let mut a = HighMmioAllocator::default();
        assert_eq!(a.allocate(256 << 20, 128 << 20), Some(512 << 30));
        assert_eq!(
            a.allocate(3 << 20, 2 << 20),
            Some((512 << 30) + (256 << 20))
        );
        assert_eq!(
            a.allocate(2 << 20, 2 << 20),
            Some((512 << 30) + (256 << 20) + (4 << 20))
        );
        assert_eq!(a.allocate(1 << 40, 2 << 20), None);
        assert_eq!(a.allocate(0, 2), None);
        assert_eq!(a.allocate(1, 3), None);
        assert!(HighMmioAllocator::contains(512 << 30, 2 << 20));
        assert!(!HighMmioAllocator::contains(4 << 30, 2 << 20));
        assert!(!HighMmioAllocator::contains(u64::MAX - 1, 2));
    }
}
