//! Linux TAP interfaces for virtio-net, behind a safe API.
//!
//! # What this module owns
//!
//! [`Tap`] opens `/dev/net/tun` non-blocking and attaches it to a TAP interface by name with
//! `TUNSETIFF` (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, single queue), exactly as Firecracker does:
//! every frame read from or written to the descriptor starts with a virtio-net header whose size
//! [`Tap::set_vnet_hdr_size`] sets (`TUNSETVNETHDRSZ`; Firecracker uses the 12-byte
//! `virtio_net_hdr_v1`). [`Tap::set_offload`] passes the offloads the guest accepted to the kernel
//! (`TUNSETOFFLOAD`, [`TUN_F_CSUM`] and friends). Reads and writes go through `std::fs::File`
//! (`read`, `readv`, `write`, `writev`): one call moves exactly one frame.
//! [`Tap::write_from_guest`] writes a frame gathered straight from guest memory (one `writev`
//! on the host mappings), so the TX path copies nothing in the VMM.
//!
//! Errors carry the OS error and Firecracker's texts (`TapError`), so that a busy tap reads
//! `Open tap device failed: Error while creating ifreq structure: Resource busy (os error 16).
//! Invalid TUN/TAP Backend provided by tap0. Check our documentation on setting up the network
//! devices.` once the device wraps it.
//!
//! Closing the `Tap` detaches the descriptor; a non-persistent interface created by the open
//! disappears with it.
//!
//! # Threading
//!
//! `Tap` is `Send + Sync`; reads and writes take `&self` (the kernel serialises them per frame).
//! The owning device uses it from the VMM thread only.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use squib_core::GuestMemoryMmap;
use vm_memory::{GuestAddress, GuestMemoryBackend};

/// Longest interface name, NUL included (`IFNAMSIZ`).
pub const IFACE_NAME_MAX_LEN: usize = libc::IFNAMSIZ;

/// `TUNSETOFFLOAD`: the guest accepts frames with partial checksums (`VIRTIO_NET_F_GUEST_CSUM`).
pub const TUN_F_CSUM: u32 = libc::TUN_F_CSUM;
/// `TUNSETOFFLOAD`: the guest accepts TCPv4 segmentation offload (`VIRTIO_NET_F_GUEST_TSO4`).
pub const TUN_F_TSO4: u32 = libc::TUN_F_TSO4;
/// `TUNSETOFFLOAD`: the guest accepts TCPv6 segmentation offload (`VIRTIO_NET_F_GUEST_TSO6`).
pub const TUN_F_TSO6: u32 = libc::TUN_F_TSO6;
/// `TUNSETOFFLOAD`: the guest accepts UDP fragmentation offload (`VIRTIO_NET_F_GUEST_UFO`).
pub const TUN_F_UFO: u32 = libc::TUN_F_UFO;

/// Errors of the TAP interface (Firecracker's `TapError` texts).
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// `/dev/net/tun` could not be opened.
    #[error("Couldn't open /dev/net/tun: {0}")]
    OpenTun(#[source] io::Error),
    /// The name is empty of meaning for the kernel: too long or with a NUL byte.
    #[error("Invalid interface name")]
    InvalidIfname,
    /// `TUNSETIFF` failed (`EBUSY`: the tap is attached to another descriptor).
    #[error(
        "Error while creating ifreq structure: {0}. Invalid TUN/TAP Backend provided by {1}. \
         Check our documentation on setting up the network devices."
    )]
    IfreqExecuteError(#[source] io::Error, String),
    /// `TUNSETOFFLOAD` failed.
    #[error("Error while setting the offload flags: {0}")]
    SetOffloadFlags(#[source] io::Error),
    /// `TUNSETVNETHDRSZ` failed.
    #[error("Error while setting size of the vnet header: {0}")]
    SetSizeOfVnetHdr(#[source] io::Error),
}

/// An open TAP interface (see the [module docs](self)).
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

/// `struct ifreq` with the name and the 16-bit flags member, laid out as the kernel reads it.
fn ifreq_with(name: &[u8; IFACE_NAME_MAX_LEN], flags: libc::c_short) -> libc::ifreq {
    // SAFETY: `ifreq` is plain old data (a name array and a union of integers, sockaddrs and a
    // pointer) for which all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(name.iter()) {
        *dst = src.cast_signed();
    }
    req.ifr_ifru.ifru_flags = flags;
    req
}

/// The NUL-terminated form of `name`, or `InvalidIfname`.
fn terminated_name(name: &str) -> Result<[u8; IFACE_NAME_MAX_LEN], TapError> {
    let bytes = name.as_bytes();
    if bytes.len() >= IFACE_NAME_MAX_LEN || bytes.contains(&0) {
        return Err(TapError::InvalidIfname);
    }
    let mut out = [0u8; IFACE_NAME_MAX_LEN];
    out[..bytes.len()].copy_from_slice(bytes);
    Ok(out)
}

impl Tap {
    /// Attaches to (or creates, in the calling thread's network namespace) the TAP interface
    /// `name`. A name with `%d` lets the kernel pick one; [`name`](Self::name) reports it.
    pub fn open_named(name: &str) -> Result<Self, TapError> {
        let terminated = terminated_name(name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::OpenTun)?;
        let flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
        // 0x5002 fits a c_short.
        let flags = libc::c_short::try_from(flags).unwrap_or(libc::c_short::MAX);
        let mut req = ifreq_with(&terminated, flags);
        // SAFETY: `file` is an open tun descriptor and `req` a valid, writable `ifreq` that
        // outlives the call; TUNSETIFF reads the name and flags and writes the final name back
        // into `req`, nothing else.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &raw mut req) };
        if rc < 0 {
            return Err(TapError::IfreqExecuteError(
                io::Error::last_os_error(),
                name.to_owned(),
            ));
        }
        let raw: Vec<u8> = req
            .ifr_name
            .iter()
            .map(|&c| c.cast_unsigned())
            .take_while(|&c| c != 0)
            .collect();
        let name = String::from_utf8(raw).unwrap_or_else(|_| name.to_owned());
        Ok(Self { file, name })
    }

    /// The interface name the kernel attached to.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets the size of the virtio-net header in front of every frame (`TUNSETVNETHDRSZ`).
    pub fn set_vnet_hdr_size(&self, size: i32) -> Result<(), TapError> {
        // SAFETY: valid tun descriptor; TUNSETVNETHDRSZ reads one `int` through the pointer,
        // which points at `size`, alive for the call.
        let rc = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                libc::TUNSETVNETHDRSZ,
                &raw const size,
            )
        };
        if rc < 0 {
            return Err(TapError::SetSizeOfVnetHdr(io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Tells the kernel which offloads the guest accepts (`TUNSETOFFLOAD`, `TUN_F_*` bits).
    pub fn set_offload(&self, flags: u32) -> Result<(), TapError> {
        // SAFETY: valid tun descriptor; TUNSETOFFLOAD takes its argument by value and touches no
        // memory of ours.
        let rc = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::c_ulong::from(flags),
            )
        };
        if rc < 0 {
            return Err(TapError::SetOffloadFlags(io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Reads one frame (virtio-net header first). `WouldBlock` when none is queued; a frame
    /// longer than `buf` is truncated by the kernel.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Reads one frame scattered over `bufs` (`readv`).
    pub fn readv(&self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        (&self.file).read_vectored(bufs)
    }

    /// Writes one frame (virtio-net header first).
    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        (&self.file).write(buf)
    }

    /// Writes one frame gathered from `bufs` (`writev`).
    pub fn writev(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&self.file).write_vectored(bufs)
    }

    /// Writes one frame gathered straight from guest memory: one `writev` on the host mappings
    /// of the `(address, length)` buffers, with no copy in the VMM. `InvalidInput` (nothing
    /// written) if a buffer is not inside `mem` or the buffers map to more than
    /// [`MAX_GUEST_IOVECS`] host pieces; the caller then copies instead.
    pub fn write_from_guest(
        &self,
        mem: &GuestMemoryMmap,
        bufs: &mut dyn Iterator<Item = (GuestAddress, usize)>,
    ) -> io::Result<usize> {
        let invalid = || io::Error::from(io::ErrorKind::InvalidInput);
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; MAX_GUEST_IOVECS];
        let mut count = 0usize;
        for (addr, len) in bufs {
            // A buffer may span regions; each region is one contiguous host mapping.
            for slice in mem.get_slices(addr, len) {
                let slice = slice.map_err(|_| invalid())?;
                let entry = iov.get_mut(count).ok_or_else(invalid)?;
                entry.iov_base = slice.ptr_guard().as_ptr().cast_mut().cast();
                entry.iov_len = slice.len();
                count += 1;
            }
        }
        let count = libc::c_int::try_from(count).map_err(|_| invalid())?;
        // SAFETY: the first `count` iovecs point into guest memory mappings owned by `mem`,
        // which the caller borrows for the whole call, each with the length vm-memory checked;
        // writev only reads them (the guest may change them concurrently: the kernel copies
        // whatever bytes are there, as with any guest buffer).
        let rc = unsafe { libc::writev(self.file.as_raw_fd(), iov.as_ptr(), count) };
        usize::try_from(rc).map_err(|_| io::Error::last_os_error())
    }
}

/// The most host pieces [`Tap::write_from_guest`] gathers into one frame.
pub const MAX_GUEST_IOVECS: usize = 16;

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns;

    #[test]
    fn test_names_are_checked() {
        assert!(matches!(
            terminated_name("0123456789abcdef"),
            Err(TapError::InvalidIfname)
        ));
        assert!(matches!(
            terminated_name("a\0b"),
            Err(TapError::InvalidIfname)
        ));
        assert_eq!(&terminated_name("tap0").unwrap()[..5], b"tap0\0");
        assert!(matches!(
            Tap::open_named("0123456789abcdefg"),
            Err(TapError::InvalidIfname)
        ));
    }

    #[test]
    fn test_error_texts_are_firecrackers() {
        let e = TapError::IfreqExecuteError(io::Error::from_raw_os_error(16), "tap0".into());
        assert_eq!(
            e.to_string(),
            "Error while creating ifreq structure: Device or resource busy (os error 16). \
             Invalid TUN/TAP Backend provided by tap0. Check our documentation on setting up the \
             network devices."
        );
    }

    #[test]
    fn test_open_busy_offload_and_frames() {
        netns::in_new_netns("tap", || {
            let tap = Tap::open_named("sqtap0").unwrap();
            assert_eq!(tap.name(), "sqtap0");
            tap.set_vnet_hdr_size(12).unwrap();
            tap.set_offload(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_UFO)
                .unwrap();
            tap.set_offload(0).unwrap();
            let busy = Tap::open_named("sqtap0").unwrap_err();
            match &busy {
                TapError::IfreqExecuteError(e, n) => {
                    assert_eq!(e.raw_os_error(), Some(libc::EBUSY));
                    assert_eq!(n, "sqtap0");
                }
                other => panic!("{other:?}"),
            }
            // Nothing queued: non-blocking.
            let mut buf = [0u8; 2048];
            assert_eq!(
                tap.read(&mut buf).unwrap_err().kind(),
                io::ErrorKind::WouldBlock
            );
            netns::set_link_up("sqtap0").unwrap();
            let sock = netns::PacketSocket::bind("sqtap0", 0x88b5).unwrap();
            // Device → host: header + frame.
            let mut frame = vec![0u8; 12];
            frame.extend_from_slice(&[0xff; 6]);
            frame.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
            frame.extend_from_slice(&[0x88, 0xb5]);
            frame.extend_from_slice(b"hello tap");
            assert_eq!(
                tap.writev(&[IoSlice::new(&frame[..5]), IoSlice::new(&frame[5..])])
                    .unwrap(),
                frame.len()
            );
            let n = sock.recv(&mut buf, 2000).unwrap();
            assert_eq!(&buf[..n], &frame[12..]);
            // Host → device.
            sock.send(&frame[12..]).unwrap();
            let mut got = None;
            for _ in 0..200 {
                match tap.read(&mut buf) {
                    Ok(n) if buf[24..26] == [0x88, 0xb5] => {
                        got = Some(n);
                        break;
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            let n = got.expect("frame reached the tap");
            assert_eq!(&buf[12..n], &frame[12..]);
        });
    }
}
