//! Giving guest memory back to the host: `madvise` on ranges of a `GuestMemoryMmap`.
//!
//! [`discard_range`] is what the balloon (inflated pages, free-page hinting and reporting) and
//! virtio-mem (unplugged blocks) use to release memory. It only accepts a range that lies
//! entirely inside the guest memory it is given (split across regions if it spans several
//! adjacent ones); anything else is refused before a single byte is touched, so a
//! guest-supplied page frame number can never reach host memory outside guest RAM.
//!
//! How a region is released depends on how it is mapped, as in Firecracker:
//! - anonymous memory, and private file mappings (a snapshot restored with the `File`
//!   backend): `MADV_DONTNEED`. The pages are dropped; anonymous memory reads back as zeros, a
//!   private file mapping reads back the file's bytes (the guest's balloon pages have no
//!   defined contents either way);
//! - shared file mappings: `MADV_REMOVE`, which punches a hole in the file as well (a shared
//!   mapping keeps its pages in the page cache after `MADV_DONTNEED`).
//!
//! Threading: stateless; safe to call while vCPUs run (the kernel's MMU notifiers update the
//! hypervisor's mappings).

use std::io;

use vm_memory::bitmap::Bitmap;
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Host page size the ranges must be aligned to.
pub const PAGE_SIZE: u64 = 4096;

/// Why a range could not be discarded.
#[derive(Debug, thiserror::Error)]
pub enum DiscardError {
    /// The range is not page-aligned, is empty, or overflows.
    #[error("invalid range {addr:#x} (+{len:#x}): not page-aligned or empty")]
    Unaligned {
        /// Guest-physical start.
        addr: u64,
        /// Length in bytes.
        len: u64,
    },
    /// Part of the range is not guest memory.
    #[error("range {addr:#x} (+{len:#x}) is not entirely inside guest memory")]
    OutsideMemory {
        /// Guest-physical start.
        addr: u64,
        /// Length in bytes.
        len: u64,
    },
    /// `madvise` failed.
    #[error("madvise failed: {0}")]
    Madvise(#[source] io::Error),
}

/// One piece of a range: host pointer, length, and the advice to give.
struct Piece {
    host: *mut u8,
    len: usize,
    advice: libc::c_int,
}

/// Splits `[addr, addr + len)` into per-region pieces; `None` if any byte is outside `mem`.
fn pieces<B: Bitmap>(mem: &GuestMemoryMmap<B>, addr: u64, len: u64) -> Option<Vec<Piece>> {
    let mut out = Vec::new();
    let mut cur = addr;
    let end = addr.checked_add(len)?;
    while cur < end {
        let region = mem.find_region(GuestAddress(cur))?;
        let offset = cur.checked_sub(region.start_addr().raw_value())?;
        let in_region = region.len().checked_sub(offset)?;
        let take = in_region.min(end - cur);
        let offset = usize::try_from(offset).ok()?;
        let take_usize = usize::try_from(take).ok()?;
        // `offset + take <= region.size()`: `take <= region.len() - offset`.
        let host = region.as_ptr().wrapping_add(offset);
        let shared_file = region.file_offset().is_some() && region.flags() & libc::MAP_SHARED != 0;
        out.push(Piece {
            host,
            len: take_usize,
            advice: if shared_file {
                libc::MADV_REMOVE
            } else {
                libc::MADV_DONTNEED
            },
        });
        cur += take;
    }
    Some(out)
}

/// Releases the guest-physical range `[addr, addr + len)` of `mem` to the host (see the module
/// docs). `addr` and `len` must be multiples of [`PAGE_SIZE`] and `len` non-zero; the whole
/// range must be guest memory. Nothing is released if any check fails.
pub fn discard_range<B: Bitmap>(
    mem: &GuestMemoryMmap<B>,
    addr: GuestAddress,
    len: u64,
) -> Result<(), DiscardError> {
    let a = addr.raw_value();
    if len == 0
        || !a.is_multiple_of(PAGE_SIZE)
        || !len.is_multiple_of(PAGE_SIZE)
        || a.checked_add(len).is_none()
    {
        return Err(DiscardError::Unaligned { addr: a, len });
    }
    let pieces = pieces(mem, a, len).ok_or(DiscardError::OutsideMemory { addr: a, len })?;
    for p in pieces {
        // SAFETY: `p.host..p.host + p.len` lies inside one region of `mem` (checked by `pieces`
        // against the region's length), a live mapping owned by `mem`, which we borrow for the
        // whole call. `madvise` with DONTNEED/REMOVE only drops the pages' contents; the mapping
        // stays valid (reads return zeros or the file's bytes), so no Rust reference into guest
        // memory is invalidated: vm-memory accesses guest memory through volatile raw
        // pointers only. Both addresses are page-aligned: regions are mmap'd (page-aligned) and
        // `addr`, `len` were checked to be page multiples.
        let rc = unsafe { libc::madvise(p.host.cast(), p.len, p.advice) };
        if rc != 0 {
            return Err(DiscardError::Madvise(io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Resident set size of this process, in bytes (`/proc/self/statm`), for tests and metrics.
pub fn rss_bytes() -> io::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::other("malformed /proc/self/statm"))?;
    Ok(pages * PAGE_SIZE)
}

#[cfg(test)]
mod tests {
    use vm_memory::{Bytes, GuestMemoryMmap};

    use super::*;

    fn mem() -> GuestMemoryMmap<()> {
        GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 0x10_0000),
            (GuestAddress(0x10_0000), 0x10_0000),
            (GuestAddress(0x100_0000), 0x10_0000),
        ])
        .unwrap()
    }

    #[test]
    fn test_should_zero_discarded_anonymous_pages() {
        let m = mem();
        m.write_slice(&[0xaa; 0x3000], GuestAddress(0x1000))
            .unwrap();
        discard_range(&m, GuestAddress(0x2000), 0x1000).unwrap();
        let mut b = [0u8; 0x3000];
        m.read_slice(&mut b, GuestAddress(0x1000)).unwrap();
        assert!(b[..0x1000].iter().all(|&x| x == 0xaa));
        assert!(b[0x1000..0x2000].iter().all(|&x| x == 0));
        assert!(b[0x2000..].iter().all(|&x| x == 0xaa));
    }

    #[test]
    fn test_should_discard_across_adjacent_regions() {
        let m = mem();
        m.write_slice(&[1; 0x2000], GuestAddress(0xf_f000)).unwrap();
        discard_range(&m, GuestAddress(0xf_f000), 0x2000).unwrap();
        let mut b = [9u8; 0x2000];
        m.read_slice(&mut b, GuestAddress(0xf_f000)).unwrap();
        assert!(b.iter().all(|&x| x == 0));
    }

    #[test]
    fn test_should_refuse_ranges_outside_memory_without_touching_anything() {
        let m = mem();
        m.write_slice(&[7; 0x1000], GuestAddress(0x1f_f000))
            .unwrap();
        // Crosses the hole between 2 MiB and 16 MiB.
        let err = discard_range(&m, GuestAddress(0x1f_f000), 0x2000).unwrap_err();
        assert!(matches!(err, DiscardError::OutsideMemory { .. }), "{err}");
        let mut b = [0u8; 0x1000];
        m.read_slice(&mut b, GuestAddress(0x1f_f000)).unwrap();
        assert!(b.iter().all(|&x| x == 7), "nothing was discarded");
        for (addr, len) in [
            (0x20_0000, 0x1000),
            (u64::MAX - 0xfff, 0x1000),
            (0x100_0000, 0x20_0000),
        ] {
            assert!(discard_range(&m, GuestAddress(addr), len).is_err());
        }
        for (addr, len) in [(0x10, 0x1000), (0, 0x10), (0, 0)] {
            assert!(matches!(
                discard_range(&m, GuestAddress(addr), len),
                Err(DiscardError::Unaligned { .. })
            ));
        }
    }

    #[test]
    fn test_should_release_rss() {
        let len = 32 << 20;
        let m: GuestMemoryMmap<()> =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), len)]).unwrap();
        for off in (0..len as u64).step_by(4096) {
            m.write_obj(1u8, GuestAddress(off)).unwrap();
        }
        let before = rss_bytes().unwrap();
        discard_range(&m, GuestAddress(0), len as u64).unwrap();
        let after = rss_bytes().unwrap();
        // Other test threads may allocate meanwhile; most of the 32 MiB must be gone.
        assert!(
            before.saturating_sub(after) >= 24 << 20,
            "rss before {before} after {after}"
        );
    }

    #[test]
    fn test_should_punch_holes_in_shared_file_mappings() {
        use std::io::{Read, Seek, Write};
        use vm_memory::FileOffset;
        use vm_memory::mmap::MmapRegionBuilder;

        let mut f = tempfile();
        f.write_all(&[5u8; 0x4000]).unwrap();
        let region = MmapRegionBuilder::new(0x4000)
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_SHARED)
            .with_file_offset(FileOffset::new(f.try_clone().unwrap(), 0))
            .build()
            .unwrap();
        let m = GuestMemoryMmap::<()>::from_regions(vec![
            vm_memory::GuestRegionMmap::new(region, GuestAddress(0)).unwrap(),
        ])
        .unwrap();
        discard_range(&m, GuestAddress(0x1000), 0x1000).unwrap();
        let mut data = Vec::new();
        f.rewind().unwrap();
        f.read_to_end(&mut data).unwrap();
        assert!(data[..0x1000].iter().all(|&x| x == 5));
        assert!(data[0x1000..0x2000].iter().all(|&x| x == 0), "hole punched");
        assert!(data[0x2000..].iter().all(|&x| x == 5));
    }

    fn tempfile() -> std::fs::File {
        let p = std::env::temp_dir().join(format!(
            "squib-sys-discard-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        let _ = std::fs::remove_file(&p);
        f
    }
}
