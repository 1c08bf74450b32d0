//! How guest RAM is backed by host pages: Firecracker's `huge_pages` (`HugePageConfig`).
//!
//! [`PageBacking`] is the host side of `machine-config.huge_pages`:
//! - `Normal` (`"None"`): anonymous private memory, host page size;
//! - `Transparent` (`"Transparent"`): the same, plus `madvise(MADV_HUGEPAGE)` on every region so
//!   the kernel may back it with transparent huge pages;
//! - `Hugetlb2M` (`"2M"`): `MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_HUGETLB |
//!   MAP_HUGE_2MB`, pages taken from the host's 2 MiB hugetlbfs pool. As in Firecracker,
//!   nothing is reserved at `mmap` time: pages are taken from the pool on first touch, so a pool
//!   that is too small shows up when memory is first written (reading the kernel image into
//!   guest memory fails with `EFAULT`, or a later touch faults), not here.
//!
//! [`anonymous_memory`] builds the guest memory for a boot (RAM regions, the virtio-mem region)
//! and for a restore with the Uffd backend; [`advise`] applies the backing's `madvise` to
//! memory mapped elsewhere (a restore with the File backend). Mappings go through vm-memory's
//! `MmapRegionBuilder` (which owns and unmaps them); the only `unsafe` here is `madvise`.
//!
//! Threading: stateless.

use std::io;

use thiserror::Error;
use vm_memory::bitmap::{Bitmap, NewBitmap};
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestRegionMmap};

/// Host page size (the unit of normal and transparent-huge-page memory).
pub const HOST_PAGE_SIZE: usize = 4096;
/// Size of a hugetlbfs page with [`PageBacking::Hugetlb2M`].
pub const HUGE_PAGE_SIZE_2M: usize = 2 << 20;

/// How guest memory pages are backed (Firecracker's `HugePageConfig`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PageBacking {
    /// Host-size pages (`"None"`).
    #[default]
    Normal,
    /// `madvise(MADV_HUGEPAGE)` (`"Transparent"`).
    Transparent,
    /// 2 MiB hugetlbfs pages (`"2M"`).
    Hugetlb2M,
}

impl PageBacking {
    /// The page size a page-fault handler must serve (Firecracker's `page_size()`: 4 KiB for
    /// `Normal` and `Transparent`, 2 MiB for `Hugetlb2M`).
    pub fn page_size(self) -> usize {
        match self {
            Self::Normal | Self::Transparent => HOST_PAGE_SIZE,
            Self::Hugetlb2M => HUGE_PAGE_SIZE_2M,
        }
    }

    /// `true` for hugetlbfs-backed memory.
    pub fn is_hugetlbfs(self) -> bool {
        self == Self::Hugetlb2M
    }

    /// The `mmap` flags of anonymous guest memory with this backing.
    pub fn anonymous_mmap_flags(self) -> libc::c_int {
        let base = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
        match self {
            Self::Normal | Self::Transparent => base,
            Self::Hugetlb2M => base | libc::MAP_HUGETLB | libc::MAP_HUGE_2MB,
        }
    }

    /// The `madvise` advice given to every region (`MADV_NORMAL` is not given at all).
    fn advice(self) -> Option<libc::c_int> {
        match self {
            Self::Transparent => Some(libc::MADV_HUGEPAGE),
            Self::Normal | Self::Hugetlb2M => None,
        }
    }
}

/// Why guest memory could not be created.
#[derive(Debug, Error)]
pub enum BackingError {
    /// A region of zero size.
    #[error("Memory region has zero size")]
    ZeroSize,
    /// A region is not a whole number of the backing's pages (hugetlbfs needs 2 MiB multiples).
    #[error("Memory region size {size:#x} is not a multiple of the page size {page_size:#x}")]
    Unaligned {
        /// Region size in bytes.
        size: usize,
        /// The backing's page size.
        page_size: usize,
    },
    /// `mmap` failed (for hugetlbfs: no pool configured for 2 MiB pages, or no hugetlb support).
    #[error("Cannot create mmap region: {0}")]
    Mmap(String),
    /// `madvise` failed.
    #[error("Cannot advise the kernel about guest memory: {0}")]
    Madvise(#[source] io::Error),
    /// The regions overlap or are out of order.
    #[error("Cannot create guest memory")]
    GuestMemory,
}

/// One anonymous region of `size` bytes at `addr` with `backing`.
pub fn anonymous_region<B: NewBitmap>(
    addr: GuestAddress,
    size: usize,
    backing: PageBacking,
) -> Result<GuestRegionMmap<B>, BackingError> {
    if size == 0 {
        return Err(BackingError::ZeroSize);
    }
    let page_size = backing.page_size();
    if !size.is_multiple_of(page_size) {
        return Err(BackingError::Unaligned { size, page_size });
    }
    let mapping = MmapRegionBuilder::new_with_bitmap(size, B::with_len(size))
        .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
        .with_mmap_flags(backing.anonymous_mmap_flags())
        .with_hugetlbfs(backing.is_hugetlbfs())
        .build()
        .map_err(|e| BackingError::Mmap(e.to_string()))?;
    let region = GuestRegionMmap::new(mapping, addr).ok_or(BackingError::GuestMemory)?;
    advise_region(&region, backing)?;
    Ok(region)
}

/// Anonymous guest memory with one region per `(address, size)` range, backed as `backing`.
pub fn anonymous_memory<B: NewBitmap>(
    ranges: &[(GuestAddress, usize)],
    backing: PageBacking,
) -> Result<GuestMemoryMmap<B>, BackingError> {
    if ranges.is_empty() {
        return Err(BackingError::ZeroSize);
    }
    let regions = ranges
        .iter()
        .map(|&(addr, size)| anonymous_region::<B>(addr, size, backing))
        .collect::<Result<Vec<_>, _>>()?;
    GuestMemoryMmap::from_regions(regions).map_err(|_| BackingError::GuestMemory)
}

/// Gives every region of `mem` the backing's advice (`MADV_HUGEPAGE` for `Transparent`;
/// nothing otherwise).
pub fn advise<B: Bitmap>(
    mem: &GuestMemoryMmap<B>,
    backing: PageBacking,
) -> Result<(), BackingError> {
    mem.iter().try_for_each(|r| advise_region(r, backing))
}

fn advise_region<B: Bitmap>(
    region: &GuestRegionMmap<B>,
    backing: PageBacking,
) -> Result<(), BackingError> {
    let Some(advice) = backing.advice() else {
        return Ok(());
    };
    // SAFETY: `region.as_ptr()..+size()` is one live mapping owned by `region` (borrowed for the
    // whole call); its start is page-aligned (mmap'd). MADV_HUGEPAGE only changes how the kernel
    // may back the pages: contents and validity of the mapping are unchanged, so no Rust
    // reference (vm-memory uses volatile raw-pointer access only) is affected.
    let rc = unsafe { libc::madvise(region.as_ptr().cast(), region.size(), advice) };
    if rc != 0 {
        return Err(BackingError::Madvise(io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use vm_memory::{Bytes, GuestMemoryRegion};

    use super::*;

    #[test]
    fn test_page_sizes_and_flags_match_firecracker() {
        assert_eq!(PageBacking::Normal.page_size(), 4096);
        assert_eq!(PageBacking::Transparent.page_size(), 4096);
        assert_eq!(PageBacking::Hugetlb2M.page_size(), 2 * 1024 * 1024);
        let huge = PageBacking::Hugetlb2M.anonymous_mmap_flags();
        assert_eq!(huge & libc::MAP_HUGETLB, libc::MAP_HUGETLB);
        assert_eq!(
            huge & (0x3f << libc::MAP_HUGE_SHIFT),
            libc::MAP_HUGE_2MB,
            "2 MiB page size encoded in the flags"
        );
        for b in [PageBacking::Normal, PageBacking::Transparent] {
            assert_eq!(b.anonymous_mmap_flags() & libc::MAP_HUGETLB, 0);
        }
    }

    #[test]
    fn test_normal_and_transparent_memory_work() {
        for backing in [PageBacking::Normal, PageBacking::Transparent] {
            let mem: GuestMemoryMmap<()> = anonymous_memory(
                &[(GuestAddress(0), 4 << 20), (GuestAddress(1 << 32), 2 << 20)],
                backing,
            )
            .unwrap();
            assert_eq!(mem.num_regions(), 2);
            mem.write_obj(0xabu8, GuestAddress((1 << 32) + 5)).unwrap();
            assert_eq!(
                mem.read_obj::<u8>(GuestAddress((1 << 32) + 5)).unwrap(),
                0xab
            );
            assert_eq!(mem.iter().next().unwrap().len(), 4 << 20);
        }
    }

    #[test]
    fn test_bad_regions_are_refused() {
        assert!(matches!(
            anonymous_memory::<()>(&[], PageBacking::Normal),
            Err(BackingError::ZeroSize)
        ));
        assert!(matches!(
            anonymous_memory::<()>(&[(GuestAddress(0), 0)], PageBacking::Normal),
            Err(BackingError::ZeroSize)
        ));
        // hugetlbfs needs whole 2 MiB pages; refused before any mmap.
        let e = anonymous_memory::<()>(&[(GuestAddress(0), 3 << 20)], PageBacking::Hugetlb2M)
            .unwrap_err();
        assert!(matches!(e, BackingError::Unaligned { .. }), "{e}");
        assert!(matches!(
            anonymous_memory::<()>(
                &[(GuestAddress(0), 2 << 20), (GuestAddress(1 << 20), 2 << 20)],
                PageBacking::Normal
            ),
            Err(BackingError::GuestMemory)
        ));
    }

    /// The smaps block of the mapping starting at `addr`.
    fn smaps_of(addr: *mut u8) -> String {
        let start = format!("{:x}-", addr as usize);
        let text = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut lines = text.lines().skip_while(|l| !l.starts_with(&start));
        let mut block: Vec<&str> = lines.next().into_iter().collect();
        // Field lines start with `Key:`; the next mapping's header starts with its range.
        block.extend(lines.take_while(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|t| t.ends_with(':'))
        }));
        block.join("\n")
    }

    #[test]
    fn test_transparent_memory_is_advised_hugepage() {
        let mem: GuestMemoryMmap<()> =
            anonymous_memory(&[(GuestAddress(0), 4 << 20)], PageBacking::Transparent).unwrap();
        let smaps = smaps_of(mem.iter().next().unwrap().as_ptr());
        let flags = smaps.lines().find(|l| l.starts_with("VmFlags:")).unwrap();
        // VM_HUGEPAGE, set by MADV_HUGEPAGE.
        assert!(flags.split_whitespace().any(|f| f == "hg"), "{smaps}");
        let normal: GuestMemoryMmap<()> =
            anonymous_memory(&[(GuestAddress(0), 4 << 20)], PageBacking::Normal).unwrap();
        let smaps = smaps_of(normal.iter().next().unwrap().as_ptr());
        let flags = smaps.lines().find(|l| l.starts_with("VmFlags:")).unwrap();
        assert!(!flags.split_whitespace().any(|f| f == "hg"), "{smaps}");
    }

    #[test]
    fn test_hugetlb_memory_is_mapped_with_2m_pages_without_reserving_them() {
        // MAP_NORESERVE: the mapping needs no free page in the pool until it is touched, so
        // this runs whatever the pool holds (nothing is touched here).
        let mem = match anonymous_memory::<()>(
            &[(GuestAddress(0), 4 << 20), (GuestAddress(1 << 32), 2 << 20)],
            PageBacking::Hugetlb2M,
        ) {
            Ok(m) => m,
            Err(BackingError::Mmap(e)) => {
                println!("SKIPPED: this host cannot map 2 MiB hugetlb pages ({e})");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        for region in mem.iter() {
            assert_eq!(region.as_ptr() as usize % HUGE_PAGE_SIZE_2M, 0);
            assert_eq!(region.is_hugetlbfs(), Some(true));
            let smaps = smaps_of(region.as_ptr());
            assert!(
                smaps
                    .lines()
                    .any(|l| l.starts_with("KernelPageSize:") && l.contains(" 2048 kB")),
                "{smaps}"
            );
        }
    }
}
