//! The host side of a virtio-pmem device: its backing file mapped for the guest.
//!
//! [`PmemMapping::map`] maps the file `MAP_SHARED` (so guest writes reach the file) into a
//! window whose length is the file length rounded up to [`PMEM_ALIGNMENT`] (2 MiB, what the
//! virtio-pmem driver requires of the region's address and size), as Firecracker does: an
//! anonymous private reservation of the whole window, then the file mapped over its start
//! with `MAP_FIXED`. Bytes past the end of the file read as zeros and never reach the file.
//! A read-only device maps everything `PROT_READ` (and the hypervisor maps it read-only as
//! well, so a guest write never reaches the mapping).
//!
//! The window is a vm-memory `GuestRegionMmap` at the guest address the VMM chose: the region
//! owns the mapping (unmapped when the last `Arc` goes), and the hypervisor backend keeps an
//! `Arc` while the guest can see it. [`PmemMapping::flush`] (`msync(MS_SYNC)` of the file part,
//! then `fdatasync`) serves the driver's flush requests.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use squib_core::GuestRegionMmap;
use squib_core::memory::AtomicBitmap;
use vm_memory::bitmap::NewBitmap;
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{GuestAddress, GuestMemoryRegion};

/// Alignment of a pmem window's guest address and size.
pub const PMEM_ALIGNMENT: u64 = 2 << 20;

/// Why a pmem backing file cannot be mapped. Texts are Firecracker's `PmemError`.
#[derive(Debug, thiserror::Error)]
pub enum PmemMapError {
    /// The file cannot be opened or inspected.
    #[error("Error accessing backing file: {0}")]
    BackingFile(#[source] io::Error),
    /// The file is empty.
    #[error("Error backing file size is 0")]
    BackingFileZeroSize,
    /// The file is too large to map.
    #[error("Error accessing backing file: file of {0} bytes is too large")]
    TooLarge(u64),
    /// `mmap` failed.
    #[error("Error accessing backing file: {0}")]
    Mmap(String),
}

/// The window length for a file of `file_len` bytes: rounded up to [`PMEM_ALIGNMENT`].
pub fn window_len(file_len: u64) -> Option<u64> {
    file_len
        .checked_add(PMEM_ALIGNMENT - 1)
        .map(|v| v & !(PMEM_ALIGNMENT - 1))
}

/// Opens a backing file (read-write unless `read_only`) and returns it with its length.
pub fn open_backing_file(path: &Path, read_only: bool) -> Result<(File, u64), PmemMapError> {
    let file = OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(path)
        .map_err(PmemMapError::BackingFile)?;
    let len = file.metadata().map_err(PmemMapError::BackingFile)?.len();
    if len == 0 {
        return Err(PmemMapError::BackingFileZeroSize);
    }
    Ok((file, len))
}

/// A backing file mapped as a guest window (see the module docs).
#[derive(Debug)]
pub struct PmemMapping {
    file: File,
    file_len: u64,
    read_only: bool,
    region: Arc<GuestRegionMmap>,
}

impl PmemMapping {
    /// Maps `file` (of `file_len` bytes) as a window at guest address `guest_addr`.
    pub fn map(
        file: File,
        file_len: u64,
        read_only: bool,
        guest_addr: GuestAddress,
    ) -> Result<Self, PmemMapError> {
        let too_large = || PmemMapError::TooLarge(file_len);
        let window = window_len(file_len).ok_or_else(too_large)?;
        let window_usize = usize::try_from(window).map_err(|_| too_large())?;
        let file_usize = usize::try_from(file_len).map_err(|_| too_large())?;
        let prot = if read_only {
            libc::PROT_READ
        } else {
            libc::PROT_READ | libc::PROT_WRITE
        };
        let reservation =
            MmapRegionBuilder::new_with_bitmap(window_usize, AtomicBitmap::with_len(window_usize))
                .with_mmap_prot(prot)
                .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE)
                .build()
                .map_err(|e| PmemMapError::Mmap(e.to_string()))?;
        // SAFETY: `reservation` was just created by us and is not shared yet: nothing holds a
        // reference into it. The new mapping replaces (MAP_FIXED) its first `file_len` bytes,
        // rounded up to a page, all inside the reservation (`file_len <= window`). The
        // reservation's `Drop` unmaps the whole window, including the file part. The fd is
        // valid for the call (the mapping keeps its own reference to the file).
        let rc = unsafe {
            libc::mmap(
                reservation.as_ptr().cast(),
                file_usize,
                prot,
                libc::MAP_SHARED | libc::MAP_FIXED | libc::MAP_NORESERVE,
                file.as_raw_fd(),
                0,
            )
        };
        if rc == libc::MAP_FAILED {
            return Err(PmemMapError::Mmap(io::Error::last_os_error().to_string()));
        }
        let region = GuestRegionMmap::new(reservation, guest_addr).ok_or_else(|| {
            PmemMapError::Mmap("the window overflows the guest address space".into())
        })?;
        Ok(Self {
            file,
            file_len,
            read_only,
            region: Arc::new(region),
        })
    }

    /// Opens `path` and maps it at `guest_addr` ([`open_backing_file`] + [`PmemMapping::map`]).
    pub fn open(
        path: &Path,
        read_only: bool,
        guest_addr: GuestAddress,
    ) -> Result<Self, PmemMapError> {
        let (file, len) = open_backing_file(path, read_only)?;
        Self::map(file, len, read_only, guest_addr)
    }

    /// The window (guest address, host mapping), for the hypervisor.
    pub fn region(&self) -> &Arc<GuestRegionMmap> {
        &self.region
    }

    /// Guest address of the window.
    pub fn guest_addr(&self) -> u64 {
        self.region.start_addr().0
    }

    /// Window length (the file length rounded up to [`PMEM_ALIGNMENT`]).
    pub fn len(&self) -> u64 {
        self.region.len()
    }

    /// Never true (a window holds at least one byte of file); for clippy's `len` rule.
    pub fn is_empty(&self) -> bool {
        self.region.len() == 0
    }

    /// Length of the backing file.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Whether the file is mapped read-only.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Writes the guest's changes back to the file: `msync(MS_SYNC)` of the file part, then
    /// `fdatasync` (a read-only mapping has nothing to write; it succeeds).
    pub fn flush(&self) -> io::Result<()> {
        let len = usize::try_from(self.file_len).map_err(io::Error::other)?;
        // SAFETY: the file part `[as_ptr, as_ptr + file_len)` is mapped for as long as
        // `self.region` lives (we hold it); `as_ptr` is page-aligned (an mmap result). msync
        // does not access memory on our behalf beyond writing pages back.
        let rc = unsafe { libc::msync(self.region.as_ptr().cast(), len, libc::MS_SYNC) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        if self.read_only {
            return Ok(());
        }
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek, Write};

    use vm_memory::Bytes;

    use super::*;

    fn file_with(bytes: &[u8]) -> (std::path::PathBuf, File) {
        let p = std::env::temp_dir().join(format!(
            "squib-sys-pmem-{}-{:?}-{}",
            std::process::id(),
            std::thread::current().id(),
            bytes.len()
        ));
        let mut f = File::create(&p).unwrap();
        f.write_all(bytes).unwrap();
        (p, f)
    }

    #[test]
    fn test_should_map_a_file_as_an_aligned_window_and_flush_writes() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let (path, _) = file_with(&data);
        let m = PmemMapping::open(&path, false, GuestAddress(512 << 30)).unwrap();
        assert_eq!(
            (m.guest_addr(), m.len(), m.file_len()),
            (512 << 30, 2 << 20, 10_000)
        );
        let r = m.region();
        let mut back = vec![0u8; 10_000];
        r.read_slice(&mut back, vm_memory::MemoryRegionAddress(0))
            .unwrap();
        assert_eq!(back, data);
        // Past the end of the file: zeros, and writes there never reach the file.
        let tail: u64 = r.read_obj(vm_memory::MemoryRegionAddress(1 << 20)).unwrap();
        assert_eq!(tail, 0);
        r.write_slice(&[0xee; 8], vm_memory::MemoryRegionAddress(1 << 20))
            .unwrap();
        r.write_slice(b"squib", vm_memory::MemoryRegionAddress(100))
            .unwrap();
        m.flush().unwrap();
        let mut f = File::open(&path).unwrap();
        let mut now = Vec::new();
        f.read_to_end(&mut now).unwrap();
        assert_eq!(now.len(), 10_000, "the file never grows");
        assert_eq!(&now[100..105], b"squib");
        assert_eq!(&now[..100], &data[..100]);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn test_should_map_read_only_and_refuse_bad_files() {
        let (path, mut f) = file_with(&[7u8; 4096]);
        let m = PmemMapping::open(&path, true, GuestAddress(0)).unwrap();
        assert!(m.read_only());
        let v: u8 = m
            .region()
            .read_obj(vm_memory::MemoryRegionAddress(4095))
            .unwrap();
        assert_eq!(v, 7);
        m.flush().unwrap();
        f.rewind().unwrap();
        assert!(matches!(
            PmemMapping::open(Path::new("/nonexistent/pmem"), true, GuestAddress(0)),
            Err(PmemMapError::BackingFile(_))
        ));
        let (empty, _) = file_with(&[]);
        let err = PmemMapping::open(&empty, false, GuestAddress(0)).unwrap_err();
        assert_eq!(err.to_string(), "Error backing file size is 0");
        assert_eq!(window_len(1), Some(2 << 20));
        assert_eq!(window_len(2 << 20), Some(2 << 20));
        assert_eq!(window_len(u64::MAX), None);
        for p in [path, empty] {
            let _ = std::fs::remove_file(p);
        }
    }
}
