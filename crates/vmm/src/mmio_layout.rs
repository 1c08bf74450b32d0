//! virtio-mmio slot and IRQ allocation, and how devices are announced on the command line.
//!
//! Firecracker's x86_64 layout: the boot timer owns 0xC000_0000; virtio-mmio devices take 4 KiB
//! slots from 0xC000_1000 upwards, first fit, and legacy GSIs 5..=23 in attach order. Each device
//! is announced as `virtio_mmio.device=4K@0x<base>:<gsi>`; a root block device adds
//! `root=/dev/vda` (or `root=PARTUUID=<uuid>`) and `ro`/`rw`. Attach order: balloon, block (root
//! first), net, pmem, vsock, rng, virtio-mem. Pure data, no I/O.

/// First virtio-mmio slot (after the boot timer's 4 KiB).
pub const MMIO_SLOTS_START: u64 = 0xc000_1000;
/// Size of one virtio-mmio slot.
pub const MMIO_SLOT_SIZE: u64 = 0x1000;
/// First GSI handed to MMIO devices.
pub const FIRST_DEVICE_GSI: u32 = 5;
/// Last legacy GSI (IOAPIC pins 0..=23).
pub const LAST_DEVICE_GSI: u32 = 23;

/// A virtio-mmio slot: base address and interrupt line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioSlot {
    /// Guest-physical base of the 4 KiB register window.
    pub base: u64,
    /// Legacy GSI.
    pub gsi: u32,
}

impl MmioSlot {
    /// The kernel command-line token announcing this device.
    pub fn cmdline_token(&self) -> String {
        format!("virtio_mmio.device=4K@{:#x}:{}", self.base, self.gsi)
    }
}

/// Hands out slots in attach order.
#[derive(Debug, Clone, Default)]
pub struct MmioAllocator {
    next: u32,
}

impl MmioAllocator {
    /// Number of slots available (one per legacy GSI).
    pub const CAPACITY: u32 = LAST_DEVICE_GSI - FIRST_DEVICE_GSI + 1;

    /// The next free slot, or `None` when the GSIs are exhausted.
    pub fn allocate(&mut self) -> Option<MmioSlot> {
        if self.next >= Self::CAPACITY {
            return None;
        }
        let slot = MmioSlot {
            base: MMIO_SLOTS_START + u64::from(self.next) * MMIO_SLOT_SIZE,
            gsi: FIRST_DEVICE_GSI + self.next,
        };
        self.next += 1;
        Some(slot)
    }
}

/// The `root=` arguments Firecracker appends for a root block device.
pub fn root_block_args(partuuid: Option<&str>, read_only: bool) -> String {
    let dev = partuuid.map_or_else(|| "/dev/vda".to_owned(), |u| format!("PARTUUID={u}"));
    format!("root={dev} {}", if read_only { "ro" } else { "rw" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_should_allocate_firecracker_slots_in_order() {
        let mut a = MmioAllocator::default();
        let first = a.allocate().unwrap();
        assert_eq!(
            first,
            MmioSlot {
                base: 0xc000_1000,
                gsi: 5
            }
        );
        assert_eq!(first.cmdline_token(), "virtio_mmio.device=4K@0xc0001000:5");
        assert_eq!(
            a.allocate().unwrap(),
            MmioSlot {
                base: 0xc000_2000,
                gsi: 6
            }
        );
        let mut n = 2;
        while a.allocate().is_some() {
            n += 1;
        }
        assert_eq!(n, MmioAllocator::CAPACITY);
    }

    #[test]
    fn test_should_compose_root_args_like_firecracker() {
        assert_eq!(root_block_args(None, false), "root=/dev/vda rw");
        assert_eq!(
            root_block_args(Some("abcd-01"), true),
            "root=PARTUUID=abcd-01 ro"
        );
    }
}
