//! Restore-side guest-memory backends for `PUT /snapshot/load` (`mem_backend`).
//!
//! - [`memory_from_file`] (`backend_type: "File"`): each region is the memory file mapped
//!   `MAP_PRIVATE | MAP_NORESERVE` at its file offset. Pages load lazily on first touch and guest
//!   writes stay private, so restore cost does not grow with guest size and the file is never
//!   modified. Built with vm-memory's safe `MmapRegionBuilder`; no `unsafe` here.
//! - [`memory_from_uffd`] (`backend_type: "Uffd"`): anonymous private memory registered with a
//!   userfaultfd ([`crate::uffd`]: missing faults, non-blocking, `EVENT_REMOVE` required, as
//!   Firecracker 1.17),
//!   then one `sendmsg` to the page-fault handler's socket carrying Firecracker's JSON region
//!   layout and the uffd as `SCM_RIGHTS`, so a handler written for Firecracker serves squib
//!   unchanged. The returned [`UffdHandle`] keeps the uffd and the connection open: Firecracker
//!   never closes the connection either, and its example handlers treat a hang-up as a protocol
//!   error.
//!
//! Huge pages (`huge_pages` of the load request, or the snapshot's): the `*_backed` variants
//! take a [`PageBacking`]. `File` with `Transparent` advises `MADV_HUGEPAGE`; `File` with
//! hugetlbfs is refused with Firecracker's text (a private file mapping cannot use the hugetlbfs
//! pool). `Uffd` maps the anonymous memory with the backing and advertises its page size
//! (2 MiB for hugetlbfs) in the handshake, as Firecracker does.
//!
//! Regions are `(guest address, size, file offset)` triples, what
//! `squib_snapshot::MemoryLayout::restore_ranges` returns after validation.
//!
//! Threading: the functions are stateless. The memory they return is `Send + Sync` like any
//! `GuestMemoryMmap`; with the Uffd backend, a thread touching a page not yet served blocks until
//! the handler (another thread or process) serves it.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use vm_memory::bitmap::NewBitmap;
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestRegionMmap};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use crate::memory_backing::{self, BackingError, PageBacking};
use crate::uffd::{FEATURE_EVENT_REMOVE, Userfaultfd};

/// The page size advertised to page-fault handlers for normal memory (hugetlbfs memory
/// advertises [`crate::memory_backing::HUGE_PAGE_SIZE_2M`]).
pub const HOST_PAGE_SIZE: usize = crate::memory_backing::HOST_PAGE_SIZE;

/// Errors of the restore backends; texts are Firecracker's (`GuestMemoryFromFileError`,
/// `GuestMemoryFromUffdError`, `MemoryError`).
#[derive(Debug, Error)]
pub enum RestoreMemoryError {
    /// The memory file cannot be opened (missing, a directory, no permission).
    #[error("Failed to load guest memory: {0}")]
    File(#[source] io::Error),
    /// `fstat` of the memory file failed.
    #[error("Failed to restore guest memory: Cannot retrieve snapshot file metadata: {0}")]
    FileMetadata(#[source] io::Error),
    /// The regions reach past the end of the memory file (mapping it would SIGBUS on touch), or
    /// their offsets overflow.
    #[error(
        "Failed to restore guest memory: Total sum of memory regions exceeds largest possible file offset"
    )]
    OffsetTooLarge,
    /// No regions, or a region of zero size.
    #[error("Failed to restore guest memory: Memory region has zero size")]
    ZeroSize,
    /// `mmap` failed.
    #[error("Failed to restore guest memory: Cannot create mmap region: {0}")]
    Mmap(String),
    /// The regions overlap or are out of order.
    #[error("Failed to restore guest memory: Cannot create guest memory")]
    GuestMemory,
    /// Creating the userfaultfd failed.
    #[error("Failed to UFFD object: {0}")]
    UffdCreate(#[source] io::Error),
    /// Registering a region with the userfaultfd failed.
    #[error("Failed to register memory address range with the userfaultfd object: {0}")]
    UffdRegister(#[source] io::Error),
    /// Connecting to the page-fault handler's socket failed.
    #[error("Failed to connect to UDS Unix stream: {0}")]
    Connect(#[source] io::Error),
    /// Sending the layout and the uffd failed (or was cut short).
    #[error("Failed to sends file descriptor: {0}")]
    Send(#[source] io::Error),
    /// hugetlbfs memory cannot be a private mapping of the memory file (Firecracker's
    /// `GuestMemoryFromFileError::HugetlbfsSnapshot`).
    #[error(
        "Cannot restore hugetlbfs backed snapshot by mapping the memory file. Please use uffd."
    )]
    HugetlbfsFile,
    /// The anonymous memory could not be created with its page backing.
    #[error("Failed to restore guest memory: {0}")]
    Backing(#[source] BackingError),
}

/// One region as a Firecracker page-fault handler receives it (Firecracker 1.17's
/// `GuestRegionUffdMapping`, same field names and order).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestRegionUffdMapping {
    /// Host virtual address where the region's bytes must be populated.
    pub base_host_virt_addr: u64,
    /// Region size in bytes.
    pub size: usize,
    /// Offset of the region's bytes in the memory file.
    pub offset: u64,
    /// Page size in bytes.
    pub page_size: usize,
    /// The page size again, **in bytes** despite the name (deprecated in Firecracker, still
    /// sent). Absent in messages from older senders.
    #[serde(default)]
    pub page_size_kib: usize,
}

/// The Uffd backend's keep-alive: the userfaultfd and the handler connection. Keep it as long
/// as the guest memory lives; dropping it closes both (the handler sees the hang-up).
#[derive(Debug)]
pub struct UffdHandle {
    uffd: Userfaultfd,
    socket: UnixStream,
    mappings: Vec<GuestRegionUffdMapping>,
}

impl UffdHandle {
    /// The userfaultfd (for example to unregister ranges the balloon gives back).
    pub fn uffd(&self) -> &Userfaultfd {
        &self.uffd
    }

    /// The connection to the page-fault handler.
    pub fn socket(&self) -> &UnixStream {
        &self.socket
    }

    /// The layout sent to the handler.
    pub fn mappings(&self) -> &[GuestRegionUffdMapping] {
        &self.mappings
    }
}

impl AsRawFd for UffdHandle {
    fn as_raw_fd(&self) -> RawFd {
        self.uffd.as_raw_fd()
    }
}

impl AsFd for UffdHandle {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.uffd.as_fd()
    }
}

/// Checks `(guest address, size, file offset)` triples; returns the file length they need.
fn check_regions(regions: &[(GuestAddress, usize, u64)]) -> Result<u64, RestoreMemoryError> {
    if regions.is_empty() {
        return Err(RestoreMemoryError::ZeroSize);
    }
    let mut end = 0u64;
    for &(_, size, offset) in regions {
        if size == 0 {
            return Err(RestoreMemoryError::ZeroSize);
        }
        let region_end = u64::try_from(size)
            .ok()
            .and_then(|s| offset.checked_add(s))
            .filter(|&e| i64::try_from(e).is_ok())
            .ok_or(RestoreMemoryError::OffsetTooLarge)?;
        end = end.max(region_end);
    }
    Ok(end)
}

fn build_memory<B: NewBitmap>(
    regions: &[(GuestAddress, usize, u64)],
    file: Option<&Arc<File>>,
    backing: PageBacking,
) -> Result<GuestMemoryMmap<B>, RestoreMemoryError> {
    let mut out = Vec::with_capacity(regions.len());
    for &(guest_addr, size, offset) in regions {
        let region = match file {
            Some(f) => {
                let mapping = MmapRegionBuilder::new_with_bitmap(size, B::with_len(size))
                    .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
                    .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_NORESERVE)
                    .with_file_offset(FileOffset::from_arc(Arc::clone(f), offset))
                    .build()
                    .map_err(|e| RestoreMemoryError::Mmap(e.to_string()))?;
                GuestRegionMmap::new(mapping, guest_addr).ok_or(RestoreMemoryError::GuestMemory)?
            }
            None => memory_backing::anonymous_region(guest_addr, size, backing)
                .map_err(RestoreMemoryError::Backing)?,
        };
        out.push(region);
    }
    let mem = GuestMemoryMmap::from_regions(out).map_err(|_| RestoreMemoryError::GuestMemory)?;
    if file.is_some() {
        memory_backing::advise(&mem, backing).map_err(RestoreMemoryError::Backing)?;
    }
    Ok(mem)
}

/// `mem_backend { backend_type: "File" }`: maps `path` privately, region by region.
pub fn memory_from_file<B: NewBitmap>(
    path: &Path,
    regions: &[(GuestAddress, usize, u64)],
) -> Result<GuestMemoryMmap<B>, RestoreMemoryError> {
    memory_from_file_backed(path, regions, PageBacking::Normal)
}

/// [`memory_from_file`] with a page backing: `Transparent` advises `MADV_HUGEPAGE` on the
/// mapped file; hugetlbfs pages cannot back a private file mapping, so `Hugetlb2M` is refused
/// (Firecracker's text) before the file is even opened.
pub fn memory_from_file_backed<B: NewBitmap>(
    path: &Path,
    regions: &[(GuestAddress, usize, u64)],
    backing: PageBacking,
) -> Result<GuestMemoryMmap<B>, RestoreMemoryError> {
    if backing.is_hugetlbfs() {
        return Err(RestoreMemoryError::HugetlbfsFile);
    }
    let file = File::open(path).map_err(RestoreMemoryError::File)?;
    let meta = file.metadata().map_err(RestoreMemoryError::FileMetadata)?;
    if meta.is_dir() {
        return Err(RestoreMemoryError::File(io::Error::from_raw_os_error(
            libc::EISDIR,
        )));
    }
    let needed = check_regions(regions)?;
    if needed > meta.len() {
        tracing::error!(
            path = %path.display(),
            file_len = meta.len(),
            needed,
            "memory file is shorter than the snapshot's memory layout"
        );
        return Err(RestoreMemoryError::OffsetTooLarge);
    }
    let mem = build_memory::<B>(regions, Some(&Arc::new(file)), backing)?;
    tracing::info!(path = %path.display(), regions = regions.len(), "guest memory mapped from file");
    Ok(mem)
}

/// `mem_backend { backend_type: "Uffd" }`: anonymous memory served by the page-fault handler
/// listening on `backend_path`. The handshake is Firecracker 1.17's: one message, the JSON
/// array of [`GuestRegionUffdMapping`], with the uffd attached.
pub fn memory_from_uffd<B: NewBitmap>(
    backend_path: &Path,
    regions: &[(GuestAddress, usize, u64)],
) -> Result<(GuestMemoryMmap<B>, UffdHandle), RestoreMemoryError> {
    memory_from_uffd_backed(backend_path, regions, PageBacking::Normal)
}

/// [`memory_from_uffd`] with a page backing: the anonymous memory is mapped as `backing`
/// ([`memory_backing`]) and every region of the handshake carries its page size (2 MiB for
/// `Hugetlb2M`, as Firecracker sends it), so the handler serves whole huge pages.
pub fn memory_from_uffd_backed<B: NewBitmap>(
    backend_path: &Path,
    regions: &[(GuestAddress, usize, u64)],
    backing: PageBacking,
) -> Result<(GuestMemoryMmap<B>, UffdHandle), RestoreMemoryError> {
    check_regions(regions)?;
    let mem = build_memory::<B>(regions, None, backing)?;

    // Firecracker 1.17: EVENT_REMOVE required, close-on-exec, non-blocking, kernel faults too.
    let uffd = Userfaultfd::new(FEATURE_EVENT_REMOVE).map_err(RestoreMemoryError::UffdCreate)?;

    let mut mappings = Vec::with_capacity(regions.len());
    for (region, &(_, _, offset)) in mem.iter().zip(regions) {
        let host = region.as_ptr();
        let size = region.size();
        uffd.register_region(region)
            .map_err(RestoreMemoryError::UffdRegister)?;
        mappings.push(GuestRegionUffdMapping {
            base_host_virt_addr: host as u64,
            size,
            offset,
            page_size: backing.page_size(),
            page_size_kib: backing.page_size(),
        });
    }

    let body = serde_json::to_string(&mappings)
        .map_err(|e| RestoreMemoryError::Send(io::Error::other(e)))?;
    let socket = UnixStream::connect(backend_path).map_err(RestoreMemoryError::Connect)?;
    let sent = socket
        .send_with_fd(body.as_bytes(), uffd.as_raw_fd())
        .map_err(|e| RestoreMemoryError::Send(io::Error::from_raw_os_error(e.errno())))?;
    if sent != body.len() {
        return Err(RestoreMemoryError::Send(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes of the region layout", body.len()),
        )));
    }
    tracing::info!(path = %backend_path.display(), regions = mappings.len(), "guest memory handed to the page-fault handler");
    Ok((
        mem,
        UffdHandle {
            uffd,
            socket,
            mappings,
        },
    ))
}
