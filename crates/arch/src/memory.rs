//! Guest RAM regions for a memory size, and their creation.
//!
//! RAM up to 3 GiB is one region at 0; anything beyond continues at 4 GiB, leaving the 32-bit
//! MMIO gap `[3 GiB, 4 GiB)` for devices.

use squib_core::GuestMemoryMmap;
use vm_memory::GuestAddress;

use crate::error::ArchError;
use crate::layout::{FIRST_ADDR_PAST_32BITS, MMIO32_MEM_START};

/// RAM regions `(start, len)` for `mem_size_mib` MiB of guest memory.
pub fn arch_memory_regions(mem_size_mib: usize) -> Result<Vec<(GuestAddress, usize)>, ArchError> {
    let size = u64::try_from(mem_size_mib)
        .ok()
        .and_then(|m| m.checked_mul(1 << 20))
        .filter(|s| *s > 0)
        .ok_or(ArchError::MemorySize(mem_size_mib))?;
    let to_usize = |v: u64| usize::try_from(v).map_err(|_| ArchError::MemorySize(mem_size_mib));
    if size <= MMIO32_MEM_START {
        return Ok(vec![(GuestAddress(0), to_usize(size)?)]);
    }
    Ok(vec![
        (GuestAddress(0), to_usize(MMIO32_MEM_START)?),
        (
            GuestAddress(FIRST_ADDR_PAST_32BITS),
            to_usize(size - MMIO32_MEM_START)?,
        ),
    ])
}

/// Allocates anonymous guest memory of `mem_size_mib` MiB laid out by [`arch_memory_regions`].
pub fn create_guest_memory(mem_size_mib: usize) -> Result<GuestMemoryMmap, ArchError> {
    let regions = arch_memory_regions(mem_size_mib)?;
    GuestMemoryMmap::from_ranges(&regions).map_err(ArchError::GuestMemoryCreate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_regions_small_memory_is_one_region() {
        assert_eq!(
            arch_memory_regions(256).unwrap(),
            vec![(GuestAddress(0), 256 << 20)]
        );
    }

    #[test]
    fn test_regions_exactly_3g_is_one_region() {
        assert_eq!(
            arch_memory_regions(3072).unwrap(),
            vec![(GuestAddress(0), 3 << 30)]
        );
    }

    #[test]
    fn test_regions_large_memory_skips_mmio_gap() {
        assert_eq!(
            arch_memory_regions(4096).unwrap(),
            vec![(GuestAddress(0), 3 << 30), (GuestAddress(1 << 32), 1 << 30)]
        );
    }

    #[test]
    fn test_regions_zero_is_rejected() {
        assert!(matches!(
            arch_memory_regions(0),
            Err(ArchError::MemorySize(0))
        ));
    }
}
