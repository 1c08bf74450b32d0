//! Private network namespaces and raw link-layer sockets, for tests of network devices.
//!
//! # What this module owns
//!
//! - [`in_new_netns`]: runs a closure on a fresh thread that first moves itself into a new,
//!   empty network namespace (`unshare(CLONE_NEWNET)`; namespaces are per thread). Every tap the
//!   closure creates, every interface it configures and every packet it sends stays inside that
//!   namespace, which the kernel destroys when the thread and the descriptors opened in it are
//!   gone. If the host refuses (no `CAP_SYS_ADMIN`, no namespace support), it prints one
//!   `SKIPPED: <reason>` line and returns without running the closure.
//! - [`set_link_up`]: `SIOCSIFFLAGS |= IFF_UP` on an interface of the calling thread's namespace.
//! - [`PacketSocket`]: an `AF_PACKET`/`SOCK_RAW` socket bound to one interface and one EtherType:
//!   the host end of a tap in tests (it sends whole Ethernet frames into the interface and receives
//!   the frames a device writes to the tap, byte for byte).
//!
//! # Threading
//!
//! Everything acts on the calling thread's network namespace. `PacketSocket` is `Send`; its
//! methods take `&self`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Runs `f` on a new thread inside a new network namespace (see the [module docs](self)).
///
/// Returns `false` (after printing `SKIPPED: <what>: <reason>`) if the namespace could not be
/// created; a panic in `f` is propagated.
pub fn in_new_netns<F: FnOnce() + Send + 'static>(what: &str, f: F) -> bool {
    let handle = std::thread::spawn(move || {
        // SAFETY: unshare(2) with CLONE_NEWNET only changes the calling thread's namespace
        // membership; it takes no pointers.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // Keep the kernel's IPv6 autoconfiguration traffic off the test interfaces (best
        // effort: /proc/sys/net resolves to the calling thread's namespace).
        for knob in ["default", "all"] {
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{knob}/disable_ipv6"), "1");
        }
        f();
        Ok(())
    });
    match handle.join() {
        Ok(Ok(())) => true,
        Ok(Err(err)) => {
            println!("SKIPPED: {what}: cannot create a network namespace: {err}");
            false
        }
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

fn cstring(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// The index of interface `name` in the calling thread's namespace.
pub fn if_index(name: &str) -> io::Result<u32> {
    let c = cstring(name)?;
    // SAFETY: `c` is a valid NUL-terminated string alive for the call; if_nametoindex only
    // reads it.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(idx)
}

fn socket(domain: libc::c_int, ty: libc::c_int, proto: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; a non-negative result is a new descriptor we own.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Brings interface `name` up (`IFF_UP`).
pub fn set_link_up(name: &str) -> io::Result<()> {
    let c = cstring(name)?;
    let bytes = c.as_bytes_with_nul();
    if bytes.len() > libc::IFNAMSIZ {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let sock = socket(libc::AF_INET, libc::SOCK_DGRAM, 0)?;
    // SAFETY: `ifreq` is plain old data; all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = src.cast_signed();
    }
    // SAFETY: valid socket and a valid, writable `ifreq` alive for the call; SIOCGIFFLAGS fills
    // the flags member.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &raw mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS initialised the 16-bit flags member of the union, which is what we
    // read back.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    // IFF_UP is 1.
    req.ifr_ifru.ifru_flags = flags | 1;
    // SAFETY: as above; SIOCSIFFLAGS reads the name and flags.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &raw mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A raw `AF_PACKET` socket bound to one interface and EtherType (see the [module docs](self)).
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// Binds to interface `ifname`, receiving only frames of `ethertype`.
    pub fn bind(ifname: &str, ethertype: u16) -> io::Result<Self> {
        let index = if_index(ifname)?;
        let proto = ethertype.to_be();
        let fd = socket(libc::AF_PACKET, libc::SOCK_RAW, libc::c_int::from(proto))?;
        // SAFETY: `sockaddr_ll` is plain old data; all-zero bytes are a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::c_ushort::try_from(libc::AF_PACKET).unwrap_or_default();
        addr.sll_protocol = proto;
        addr.sll_ifindex = libc::c_int::try_from(index)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_ll>())
            .unwrap_or(libc::socklen_t::MAX);
        // SAFETY: valid socket; `addr` is a valid `sockaddr_ll` of `len` bytes alive for the call.
        let rc = unsafe { libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), len) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { fd })
    }

    /// Sends one whole Ethernet frame out of the interface (towards the tap's reader).
    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
        // SAFETY: valid socket; the pointer and length describe `frame`, alive for the call and
        // only read.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    /// Receives the next frame that entered the host through the interface, waiting at most
    /// `timeout_ms`; `TimedOut` if none came. Frames the host itself sent are skipped.
    pub fn recv(&self, buf: &mut [u8], timeout_ms: i32) -> io::Result<usize> {
        loop {
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid `pollfd`, alive for the call.
            let rc = unsafe { libc::poll(&raw mut pfd, 1, timeout_ms) };
            if rc < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            if rc == 0 {
                return Err(io::Error::from(io::ErrorKind::TimedOut));
            }
            // SAFETY: `sockaddr_ll` is plain old data; all-zero bytes are a valid value.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_ll>())
                .unwrap_or(libc::socklen_t::MAX);
            // SAFETY: valid socket; `buf` is writable for `buf.len()` bytes and `from`/`len`
            // describe a writable `sockaddr_ll`, all alive for the call.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                    (&raw mut from).cast(),
                    &raw mut len,
                )
            };
            let Ok(n) = usize::try_from(n) else {
                let err = io::Error::last_os_error();
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) {
                    continue;
                }
                return Err(err);
            };
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            return Ok(n.min(buf.len()));
        }
    }
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_loopback_in_private_namespace() {
        in_new_netns("netns", || {
            assert_eq!(if_index("lo").unwrap(), 1, "a fresh namespace has only lo");
            set_link_up("lo").unwrap();
            assert!(if_index("eth-nope").is_err());
            assert!(set_link_up("a\0b").is_err());
        });
    }
}
