//! A small page-fault handler speaking Firecracker's UFFD protocol: for tests, and as a reference
//! for operators writing their own.
//!
//! [`serve`] accepts one connection on a listening Unix socket, receives the JSON region layout
//! with the userfaultfd attached (one message, as Firecracker and squib send it), then serves
//! missing-page faults with `UFFDIO_COPY` from the memory file (page by page, read at
//! `offset + (fault page - base_host_virt_addr)`). A `remove` event (the guest gave pages back,
//! `madvise(MADV_DONTNEED)`) unregisters the range, so later touches get zero pages from the
//! kernel, as Firecracker's on-demand example does. It returns when the VMM closes the
//! connection.
//!
//! Threading: runs on the caller's thread until the hang-up; typically its own thread (in-process
//! tests) or process. Nothing here is shared.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixListener;

use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use crate::snapshot_memory::GuestRegionUffdMapping;
use crate::uffd::{UffdEvent, Userfaultfd};

/// Largest layout message accepted (Firecracker's example handlers read 1024 bytes; squib's
/// handler allows more regions).
const MAX_MESSAGE: usize = 64 * 1024;

/// Largest page size accepted from a layout (1 GiB huge pages).
const MAX_PAGE_SIZE: usize = 1 << 30;

/// What [`serve`] did, for tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HandlerStats {
    /// The layout received.
    pub mappings: Vec<GuestRegionUffdMapping>,
    /// Pages populated with `UFFDIO_COPY`.
    pub pages_served: u64,
    /// `remove` events handled.
    pub removes: u64,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Serves one VMM connection on `listener` from `mem_file` until the VMM hangs up.
pub fn serve(listener: &UnixListener, mem_file: &File) -> io::Result<HandlerStats> {
    let (stream, _) = listener.accept()?;
    let mut buf = vec![0u8; MAX_MESSAGE];
    let (n, fd) = stream
        .recv_with_fd(&mut buf)
        .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
    let fd = fd.ok_or_else(|| invalid("the layout message carried no userfaultfd".into()))?;
    let uffd = Userfaultfd::from(OwnedFd::from(fd));
    let mappings: Vec<GuestRegionUffdMapping> = serde_json::from_slice(&buf[..n])
        .map_err(|e| invalid(format!("bad region layout: {e}")))?;
    let page_size = mappings.first().map_or(0, |m| m.page_size);
    if !page_size.is_power_of_two() || page_size > MAX_PAGE_SIZE {
        return Err(invalid(format!("bad page size {page_size}")));
    }
    let mut stats = HandlerStats {
        mappings,
        ..HandlerStats::default()
    };
    let mut page = vec![0u8; page_size];

    loop {
        let mut fds = [
            libc::pollfd {
                fd: stream.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: uffd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two initialised pollfd structs owned by this frame,
        // and its length is passed alongside; poll only writes the `revents` fields.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if fds[1].revents & libc::POLLIN != 0 {
            drain_events(&uffd, mem_file, &mut page, &mut stats)?;
        }
        if fds[0].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            // The VMM sends nothing after the layout: readable means hang-up.
            return Ok(stats);
        }
    }
}

fn drain_events(
    uffd: &Userfaultfd,
    mem_file: &File,
    page: &mut [u8],
    stats: &mut HandlerStats,
) -> io::Result<()> {
    let page_size = page.len();
    loop {
        match uffd.read_event()? {
            None => return Ok(()),
            Some(UffdEvent::Pagefault { addr, .. }) => {
                let dst = addr & !(page_size as u64 - 1);
                let region = stats
                    .mappings
                    .iter()
                    .find(|m| {
                        let base = m.base_host_virt_addr;
                        dst >= base && dst < base.saturating_add(m.size as u64)
                    })
                    .ok_or_else(|| invalid(format!("fault at {dst:#x} outside every region")))?;
                let offset = region.offset + (dst - region.base_host_virt_addr);
                mem_file.read_exact_at(page, offset)?;
                match uffd.copy(page, dst) {
                    Ok(_) => stats.pages_served += 1,
                    // Already populated (a racing fault on the same page), or a `remove` event
                    // is pending: the fault is moot or will be raised again.
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST | libc::EAGAIN)) => {}
                    Err(e) => return Err(io::Error::other(format!("UFFDIO_COPY failed: {e}"))),
                }
            }
            Some(UffdEvent::Remove { start, end }) => {
                uffd.unregister(start, end.saturating_sub(start))?;
                stats.removes += 1;
            }
            Some(_) => {}
        }
    }
}
