//! The device bus: an address map from ranges to devices, used for both port I/O and MMIO.
//!
//! The VMM builds one [`Bus`] for the x86 I/O ports and one for MMIO, inserts devices at fixed
//! ranges, then shares the bus as an `Arc<Bus>` with every vCPU thread. A vCPU exit becomes one
//! [`Bus::read`] or [`Bus::write`]: the bus finds the range containing the access and calls the
//! device with the offset from the range base.
//!
//! Rules (all accesses are guest-controlled, so none of them panics):
//! - an access must have 1..=8 bytes and lie entirely inside one range, otherwise it is
//!   *unclaimed*;
//! - an unclaimed access returns `false`; the caller then answers reads with all-ones (`0xff`
//!   bytes, what an empty ISA bus floats to) and drops writes;
//! - ranges never overlap: [`Bus::insert`] rejects an overlapping or empty range.
//!
//! Devices are locked for the duration of one access. A poisoned lock (a device panicked
//! earlier) is recovered rather than propagated: the device model's state is plain data and the
//! guest keeps running.
//!
//! Devices must not call back into the bus that dispatched to them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Largest access the bus dispatches (a 64-bit MMIO access).
pub const MAX_ACCESS_SIZE: usize = 8;

/// A device that answers reads and writes at offsets inside its bus range.
pub trait BusDevice: Send {
    /// Reads `data.len()` bytes at `offset` from the start of the device's range.
    ///
    /// Bytes the device does not fill keep the value the caller put there.
    fn read(&mut self, offset: u64, data: &mut [u8]);

    /// Writes `data` at `offset` from the start of the device's range.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A half-open address range `[base, base + len)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BusRange {
    /// First address of the range.
    pub base: u64,
    /// Number of addresses in the range (never 0 for an inserted range).
    pub len: u64,
}

impl BusRange {
    /// The range `[base, base + len)`.
    pub const fn new(base: u64, len: u64) -> Self {
        Self { base, len }
    }

    /// The last address in the range, or `None` for an empty range or one that wraps past
    /// `u64::MAX`.
    pub fn last(&self) -> Option<u64> {
        self.len.checked_sub(1)?;
        self.base.checked_add(self.len - 1)
    }

    /// Whether `addr` lies in the range.
    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.base && addr - self.base < self.len
    }

    /// Whether the two ranges share at least one address.
    pub fn overlaps(&self, other: &BusRange) -> bool {
        match (self.last(), other.last()) {
            (Some(a_last), Some(b_last)) => self.base <= b_last && other.base <= a_last,
            _ => false,
        }
    }
}

impl fmt::Display for BusRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:#x}..{:#x}",
            self.base,
            self.base.wrapping_add(self.len)
        )
    }
}

/// Errors from building a [`Bus`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// The range is empty or wraps past the end of the address space.
    #[error("invalid bus range {0}")]
    InvalidRange(BusRange),
    /// The range overlaps one that is already mapped.
    #[error("bus range {new} overlaps the mapped range {existing}")]
    Overlap {
        /// The rejected range.
        new: BusRange,
        /// The range already on the bus.
        existing: BusRange,
    },
}

/// A shared, lockable device as stored on the bus.
pub type SharedBusDevice = Arc<Mutex<dyn BusDevice>>;

type DeviceMap = BTreeMap<u64, (BusRange, SharedBusDevice)>;

/// An address map from non-overlapping ranges to devices.
///
/// The map has interior mutability: [`insert`](Self::insert) and [`remove`](Self::remove) take
/// `&self`, so one `Arc<Bus>` can be shared by the VMM and every vCPU thread (and a device can
/// be hot-plugged while they run). Each access looks the device up under a short read lock,
/// releases it, then locks only the device.
#[derive(Default)]
pub struct Bus {
    devices: RwLock<DeviceMap>,
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.ranges()).finish()
    }
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> RwLockReadGuard<'_, DeviceMap> {
        self.devices.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn map_mut(&self) -> RwLockWriteGuard<'_, DeviceMap> {
        self.devices.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Maps `device` at `[base, base + len)`.
    ///
    /// Fails if the range is empty, wraps past `u64::MAX`, or overlaps a mapped range.
    pub fn insert(&self, device: SharedBusDevice, base: u64, len: u64) -> Result<(), BusError> {
        let range = BusRange::new(base, len);
        let last = range.last().ok_or(BusError::InvalidRange(range))?;
        let mut map = self.map_mut();
        // The only candidate for overlap is the closest range starting at or before `last`.
        if let Some((_, (existing, _))) = map.range(..=last).next_back()
            && existing.overlaps(&range)
        {
            return Err(BusError::Overlap {
                new: range,
                existing: *existing,
            });
        }
        map.insert(base, (range, device));
        Ok(())
    }

    /// Unmaps the range that starts exactly at `base` and returns its device.
    pub fn remove(&self, base: u64) -> Option<(BusRange, SharedBusDevice)> {
        self.map_mut().remove(&base)
    }

    /// The range and device containing `addr`, if any.
    pub fn get(&self, addr: u64) -> Option<(BusRange, SharedBusDevice)> {
        let map = self.map();
        let (_, (range, device)) = map.range(..=addr).next_back()?;
        range.contains(addr).then(|| (*range, Arc::clone(device)))
    }

    /// All mapped ranges, in address order.
    pub fn ranges(&self) -> Vec<BusRange> {
        self.map().values().map(|(range, _)| *range).collect()
    }

    /// Number of mapped devices.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether no device is mapped.
    pub fn is_empty(&self) -> bool {
        self.map().is_empty()
    }

    /// Finds the device claiming an access of `size` bytes at `addr`, with the access offset.
    fn resolve(&self, addr: u64, size: usize) -> Option<(u64, SharedBusDevice)> {
        if size == 0 || size > MAX_ACCESS_SIZE {
            return None;
        }
        let (range, device) = self.get(addr)?;
        let offset = addr - range.base;
        // `size <= 8`; checked_add catches an offset near u64::MAX.
        let end = offset.checked_add(u64::try_from(size).ok()?)?;
        (end <= range.len).then_some((offset, device))
    }

    /// Dispatches a read of `data.len()` bytes at `addr`.
    ///
    /// Returns `false` (and leaves `data` untouched) if no device claims the access; the caller
    /// then answers all-ones.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        let Some((offset, device)) = self.resolve(addr, data.len()) else {
            return false;
        };
        device
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .read(offset, data);
        true
    }

    /// Dispatches a write of `data` at `addr`.
    ///
    /// Returns `false` if no device claims the access; the write is then dropped.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        let Some((offset, device)) = self.resolve(addr, data.len()) else {
            return false;
        };
        device
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write(offset, data);
        true
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Records the last access and answers reads with the offset in every byte.
    #[derive(Default)]
    struct Probe {
        last_write: Option<(u64, Vec<u8>)>,
        reads: usize,
    }

    impl BusDevice for Probe {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            self.reads += 1;
            data.fill(u8::try_from(offset & 0xff).unwrap());
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.last_write = Some((offset, data.to_vec()));
        }
    }

    fn probe() -> Arc<Mutex<Probe>> {
        Arc::new(Mutex::new(Probe::default()))
    }

    #[test]
    fn test_bus_dispatches_with_offset_from_base() {
        let bus = Bus::new();
        let dev = probe();
        bus.insert(dev.clone(), 0x3f8, 8).unwrap();

        let mut data = [0u8; 1];
        assert!(bus.read(0x3fd, &mut data));
        assert_eq!(data, [5]);
        assert!(bus.write(0x3f8, b"x"));
        assert_eq!(dev.lock().unwrap().last_write, Some((0, vec![b'x'])));
    }

    #[test]
    fn test_bus_unclaimed_access_returns_false_and_leaves_data() {
        let bus = Bus::new();
        bus.insert(probe(), 0x60, 5).unwrap();
        let mut data = [0xab; 2];
        assert!(!bus.read(0x5f, &mut data));
        assert!(!bus.read(0x65, &mut data));
        assert_eq!(data, [0xab; 2]);
        assert!(!bus.write(0x1000, &[1]));
    }

    #[test]
    fn test_bus_rejects_bad_sizes_and_straddling_accesses() {
        let bus = Bus::new();
        let dev = probe();
        bus.insert(dev.clone(), 0x1000, 0x10).unwrap();
        assert!(!bus.read(0x1000, &mut []));
        assert!(!bus.read(0x1000, &mut [0u8; 9]));
        assert!(
            !bus.write(0x100e, &[0u8; 4]),
            "straddles the end of the range"
        );
        assert!(
            bus.write(0x1008, &[0u8; 8]),
            "ends exactly at the range end"
        );
        assert_eq!(dev.lock().unwrap().reads, 0);
    }

    #[test]
    fn test_bus_insert_rejects_overlap_and_invalid_ranges() {
        let bus = Bus::new();
        bus.insert(probe(), 0x100, 0x10).unwrap();
        let err = bus.insert(probe(), 0x10f, 1).unwrap_err();
        assert_eq!(
            err,
            BusError::Overlap {
                new: BusRange::new(0x10f, 1),
                existing: BusRange::new(0x100, 0x10)
            }
        );
        assert!(bus.insert(probe(), 0xf0, 0x11).is_err(), "tail overlaps");
        assert!(bus.insert(probe(), 0x0, 0x1000).is_err(), "covers it");
        assert_eq!(
            bus.insert(probe(), 0x200, 0),
            Err(BusError::InvalidRange(BusRange::new(0x200, 0)))
        );
        assert!(bus.insert(probe(), u64::MAX, 2).is_err(), "wraps");
        bus.insert(probe(), 0xf0, 0x10).unwrap();
        bus.insert(probe(), 0x110, 0x10).unwrap();
        bus.insert(probe(), u64::MAX, 1).unwrap();
        assert_eq!(bus.len(), 4);
    }

    #[test]
    fn test_bus_remove_and_get() {
        let bus = Bus::new();
        bus.insert(probe(), 0x40, 4).unwrap();
        assert_eq!(bus.get(0x43).map(|(r, _)| r), Some(BusRange::new(0x40, 4)));
        assert!(bus.get(0x44).is_none());
        assert!(bus.remove(0x41).is_none());
        assert!(bus.remove(0x40).is_some());
        assert!(bus.is_empty());
        assert!(!bus.write(0x40, &[0]));
    }

    #[test]
    fn test_bus_access_at_top_of_address_space_does_not_overflow() {
        let bus = Bus::new();
        bus.insert(probe(), u64::MAX - 3, 4).unwrap();
        let mut data = [0u8; 8];
        assert!(!bus.read(u64::MAX - 1, &mut data));
        assert!(bus.read(u64::MAX - 1, &mut data[..2]));
        assert!(bus.read(u64::MAX, &mut data[..1]));
    }

    #[test]
    fn test_bus_poisoned_device_lock_is_recovered() {
        let bus = Bus::new();
        let dev = probe();
        bus.insert(dev.clone(), 0, 1).unwrap();
        let d2 = dev.clone();
        let _ = std::thread::spawn(move || {
            let _guard = d2.lock().unwrap();
            panic!("poison the lock");
        })
        .join();
        assert!(dev.is_poisoned());
        assert!(bus.write(0, &[7]));
    }

    proptest! {
        #[test]
        fn prop_bus_never_panics_and_claims_only_contained_accesses(
            ranges in proptest::collection::vec((any::<u64>(), 1u64..0x1000), 0..8),
            accesses in proptest::collection::vec((any::<u64>(), 0usize..16), 0..64),
        ) {
            let bus = Bus::new();
            let mut mapped = Vec::new();
            for (base, len) in ranges {
                if bus.insert(probe(), base, len).is_ok() {
                    mapped.push(BusRange::new(base, len));
                }
            }
            // Mapped ranges are pairwise disjoint.
            for (i, a) in mapped.iter().enumerate() {
                for b in &mapped[i + 1..] {
                    prop_assert!(!a.overlaps(b));
                }
            }
            for (addr, size) in accesses {
                let mut data = vec![0u8; size];
                let claimed = bus.read(addr, &mut data);
                let expected = (1..=MAX_ACCESS_SIZE).contains(&size)
                    && mapped.iter().any(|r| {
                        r.contains(addr)
                            && (addr - r.base).checked_add(size as u64).is_some_and(|e| e <= r.len)
                    });
                prop_assert_eq!(claimed, expected);
                prop_assert_eq!(bus.write(addr, &data), expected);
            }
        }
    }
}
