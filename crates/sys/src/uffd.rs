//! A minimal userfaultfd: create (non-blocking, close-on-exec, `UFFDIO_API` handshake),
//! register guest-memory regions for missing-page faults, read events, `UFFDIO_COPY`,
//! `UFFDIO_ZEROPAGE`, unregister. Raw ioctls on `libc`: the `userfaultfd` crate needs libclang
//! at build time (bindgen), which neither the developers' machines nor CI have.
//!
//! Soundness: only guest-memory regions ([`GuestRegionMmap`], reached only through vm-memory's
//! volatile accessors) are registered from this process, so the kernel filling a missing page
//! (`UFFDIO_COPY`/`UFFDIO_ZEROPAGE`) never changes memory that Rust code holds references to. A
//! uffd received from another process only ever fills that process's pages.
//!
//! Threading: a [`Userfaultfd`] is `Send + Sync`; every operation is one syscall on the fd.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use vm_memory::GuestRegionMmap;
use vm_memory::bitmap::Bitmap;

/// `UFFD_API`.
const UFFD_API: u64 = 0xAA;
/// `UFFD_FEATURE_EVENT_REMOVE`.
pub const FEATURE_EVENT_REMOVE: u64 = 1 << 3;
/// `UFFDIO_REGISTER_MODE_MISSING`.
const REGISTER_MODE_MISSING: u64 = 1;
/// `UFFD_EVENT_PAGEFAULT`.
const EVENT_PAGEFAULT: u8 = 0x12;
/// `UFFD_EVENT_REMOVE`.
const EVENT_REMOVE: u8 = 0x15;
/// `UFFD_EVENT_UNMAP`.
const EVENT_UNMAP: u8 = 0x16;

/// `_IOC(dir, 0xAA, nr, size)` on x86_64/aarch64.
const fn uffd_ioc(dir: u64, nr: u64, size: u64) -> u64 {
    (dir << 30) | (size << 16) | (0xAA << 8) | nr
}
const IOC_WRITE_READ: u64 = 3;
const IOC_READ: u64 = 2;
const UFFDIO_API: u64 = uffd_ioc(IOC_WRITE_READ, 0x3F, 24);
const UFFDIO_REGISTER: u64 = uffd_ioc(IOC_WRITE_READ, 0x00, 32);
const UFFDIO_UNREGISTER: u64 = uffd_ioc(IOC_READ, 0x01, 16);
const UFFDIO_COPY: u64 = uffd_ioc(IOC_WRITE_READ, 0x03, 40);
const UFFDIO_ZEROPAGE: u64 = uffd_ioc(IOC_WRITE_READ, 0x04, 32);
/// `USERFAULTFD_IOC_NEW` on `/dev/userfaultfd` (`_IO(0xAA, 0)`).
const USERFAULTFD_IOC_NEW: u64 = 0xAA00;

#[repr(C)]
#[derive(Default)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioZeropage {
    range: UffdioRange,
    mode: u64,
    zeropage: i64,
}

/// `struct uffd_msg` (32 bytes): the event byte, padding, then a 24-byte union.
#[repr(C)]
#[derive(Default)]
struct UffdMsg {
    event: u8,
    reserved1: u8,
    reserved2: u16,
    reserved3: u32,
    arg: [u64; 3],
}

/// An event read from a userfaultfd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UffdEvent {
    /// A missing-page fault at `addr` (not page-aligned).
    Pagefault {
        /// The faulting address.
        addr: u64,
        /// `UFFD_PAGEFAULT_FLAG_*`.
        flags: u64,
    },
    /// `madvise(MADV_DONTNEED/REMOVE)` dropped `[start, end)`.
    Remove {
        /// Start address.
        start: u64,
        /// End address (exclusive).
        end: u64,
    },
    /// `munmap` of `[start, end)`.
    Unmap {
        /// Start address.
        start: u64,
        /// End address (exclusive).
        end: u64,
    },
    /// Another event (fork, remap) this code does not act on.
    Other(u8),
}

/// An owned userfaultfd.
#[derive(Debug)]
pub struct Userfaultfd {
    fd: OwnedFd,
}

fn ioctl<T>(fd: RawFd, request: u64, arg: &mut T) -> io::Result<()> {
    // SAFETY: every caller passes a request number whose argument type is exactly `T` (a
    // `repr(C)` mirror of the kernel struct, sizes encoded in the request number and checked in
    // the tests); `arg` is a valid, exclusive reference for the duration of the call.
    let rc = unsafe { libc::ioctl(fd, request as libc::c_ulong, std::ptr::from_mut(arg)) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Userfaultfd {
    /// Creates a non-blocking, close-on-exec userfaultfd handling kernel and user faults, and
    /// performs the `UFFDIO_API` handshake requiring `features` (e.g. [`FEATURE_EVENT_REMOVE`]).
    /// Uses the syscall, or `/dev/userfaultfd` where the syscall is restricted
    /// (`vm.unprivileged_userfaultfd = 0` without `CAP_SYS_PTRACE`).
    pub fn new(features: u64) -> io::Result<Self> {
        let flags = libc::O_CLOEXEC | libc::O_NONBLOCK;
        // SAFETY: the userfaultfd syscall takes one integer flags argument and returns a new fd
        // or -1; no memory is passed.
        let raw = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
        let fd = if raw >= 0 {
            let raw = RawFd::try_from(raw).map_err(|_| io::Error::other("fd out of range"))?;
            // SAFETY: `raw` is a fresh fd returned by the kernel that nothing else owns.
            unsafe { OwnedFd::from_raw_fd(raw) }
        } else {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EPERM) {
                return Err(err);
            }
            let dev = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/userfaultfd")
                .map_err(|_| err)?;
            // SAFETY: USERFAULTFD_IOC_NEW takes the new fd's flags as an integer argument and
            // returns a new fd or -1; `dev` is a valid open fd.
            let raw = unsafe {
                libc::ioctl(dev.as_raw_fd(), USERFAULTFD_IOC_NEW as libc::c_ulong, flags)
            };
            if raw < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `raw` is a fresh fd returned by the kernel that nothing else owns.
            unsafe { OwnedFd::from_raw_fd(raw) }
        };
        let mut api = UffdioApi {
            api: UFFD_API,
            features,
            ioctls: 0,
        };
        ioctl(fd.as_raw_fd(), UFFDIO_API, &mut api)?;
        Ok(Self { fd })
    }

    /// Registers a guest-memory region for missing-page faults.
    pub fn register_region<B: Bitmap>(&self, region: &GuestRegionMmap<B>) -> io::Result<()> {
        let mut reg = UffdioRegister {
            range: UffdioRange {
                start: region.as_ptr() as u64,
                len: region.size() as u64,
            },
            mode: REGISTER_MODE_MISSING,
            ioctls: 0,
        };
        ioctl(self.fd.as_raw_fd(), UFFDIO_REGISTER, &mut reg)
    }

    /// Stops handling faults in `[start, start + len)` (page-aligned); later touches of missing
    /// pages there get zero pages from the kernel.
    pub fn unregister(&self, start: u64, len: u64) -> io::Result<()> {
        let mut range = UffdioRange { start, len };
        ioctl(self.fd.as_raw_fd(), UFFDIO_UNREGISTER, &mut range)
    }

    /// Fills the missing page(s) at `dst` (page-aligned, in a registered range) with `src` and
    /// wakes the faulting threads. `EEXIST`: already present; `EAGAIN`: retry after reading
    /// pending events.
    pub fn copy(&self, src: &[u8], dst: u64) -> io::Result<usize> {
        let mut copy = UffdioCopy {
            dst,
            src: src.as_ptr() as u64,
            len: src.len() as u64,
            mode: 0,
            copy: 0,
        };
        // The kernel reads `src.len()` bytes from `src` (a live slice) and writes only missing
        // pages of ranges registered on this fd (see the module's soundness note).
        ioctl(self.fd.as_raw_fd(), UFFDIO_COPY, &mut copy)?;
        usize::try_from(copy.copy).map_err(|_| io::Error::from_raw_os_error(libc::EAGAIN))
    }

    /// Fills the missing page(s) at `[dst, dst + len)` with zeros and wakes the faulting threads.
    pub fn zeropage(&self, dst: u64, len: u64) -> io::Result<()> {
        let mut z = UffdioZeropage {
            range: UffdioRange { start: dst, len },
            mode: 0,
            zeropage: 0,
        };
        ioctl(self.fd.as_raw_fd(), UFFDIO_ZEROPAGE, &mut z)
    }

    /// Reads one event; `Ok(None)` when none is pending (the fd is non-blocking).
    pub fn read_event(&self) -> io::Result<Option<UffdEvent>> {
        let mut msg = UffdMsg::default();
        let size = size_of::<UffdMsg>();
        // SAFETY: `msg` is a valid, exclusively borrowed `repr(C)` buffer of exactly `size`
        // bytes with no invalid bit patterns; read writes at most `size` bytes into it.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                std::ptr::from_mut(&mut msg).cast(),
                size,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) => Ok(None),
                _ => Err(e),
            };
        }
        if usize::try_from(n).ok() != Some(size) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "short userfaultfd message",
            ));
        }
        Ok(Some(match msg.event {
            EVENT_PAGEFAULT => UffdEvent::Pagefault {
                flags: msg.arg[0],
                addr: msg.arg[1],
            },
            EVENT_REMOVE => UffdEvent::Remove {
                start: msg.arg[0],
                end: msg.arg[1],
            },
            EVENT_UNMAP => UffdEvent::Unmap {
                start: msg.arg[0],
                end: msg.arg[1],
            },
            other => UffdEvent::Other(other),
        }))
    }
}

impl From<OwnedFd> for Userfaultfd {
    /// Wraps a userfaultfd received from elsewhere (e.g. over `SCM_RIGHTS`).
    fn from(fd: OwnedFd) -> Self {
        Self { fd }
    }
}

impl AsRawFd for Userfaultfd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Userfaultfd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_should_encode_kernel_ioctl_numbers() {
        // Values from <linux/userfaultfd.h> on x86_64.
        assert_eq!(UFFDIO_API, 0xc018_aa3f);
        assert_eq!(UFFDIO_REGISTER, 0xc020_aa00);
        assert_eq!(UFFDIO_UNREGISTER, 0x8010_aa01);
        assert_eq!(UFFDIO_COPY, 0xc028_aa03);
        assert_eq!(UFFDIO_ZEROPAGE, 0xc020_aa04);
        assert_eq!(size_of::<UffdioApi>(), 24);
        assert_eq!(size_of::<UffdioRegister>(), 32);
        assert_eq!(size_of::<UffdioCopy>(), 40);
        assert_eq!(size_of::<UffdioZeropage>(), 32);
        assert_eq!(size_of::<UffdMsg>(), 32);
    }
}
