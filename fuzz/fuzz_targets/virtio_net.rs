//! virtio-net: RX and TX chains (any shape, with or without `MRG_RXBUF`), frames from a fake tap
//! (`Op::Input`), and the MMDS stack plugged in as the frame interceptor, as the VMM does.
#![no_main]

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, PoisonError};

use libfuzzer_sys::fuzz_target;
use squib_devices::RateLimiter;
use squib_devices::virtio::{FrameInterceptor, Net, NetBackend, NetConfig};
use squib_fuzz::{guest_memory, run_virtio};
use squib_mmds::{ManualClock, Mmds, MmdsNetworkStack};
use squib_sys::tap::TapError;
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

#[derive(Debug)]
struct FakeTap {
    incoming: Arc<Mutex<VecDeque<Vec<u8>>>>,
    fd: EventFd,
}

impl NetBackend for FakeTap {
    fn name(&self) -> &'static str {
        "fuzztap0"
    }
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let frame = self
            .incoming
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
            .ok_or_else(|| io::Error::from(io::ErrorKind::WouldBlock))?;
        let n = frame.len().min(buf.len());
        buf[..n].copy_from_slice(&frame[..n]);
        Ok(n)
    }
    fn write_frame(&mut self, frame: &[u8]) -> io::Result<usize> {
        Ok(frame.len())
    }
    fn set_offload(&mut self, _flags: u32) -> Result<(), TapError> {
        Ok(())
    }
    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }
}

struct Interceptor(MmdsNetworkStack);

impl FrameInterceptor for Interceptor {
    fn detour_frame(&mut self, frame: &[u8]) -> bool {
        self.0.detour_frame(frame)
    }
    fn write_next_frame(&mut self, buf: &mut [u8]) -> Option<usize> {
        self.0.write_next_frame(buf)
    }
    fn has_pending_frames(&self) -> bool {
        self.0.has_pending_frames()
    }
}

fuzz_target!(|data: &[u8]| {
    let incoming = Arc::new(Mutex::new(VecDeque::new()));
    let Ok(fd) = EventFd::new(EFD_NONBLOCK) else {
        return;
    };
    let tap = FakeTap {
        incoming: incoming.clone(),
        fd,
    };
    let mtu = data.first().is_some_and(|b| b & 1 == 1).then_some(1500);
    let Ok(mut dev) = Net::with_backend(
        NetConfig {
            iface_id: "eth0".into(),
            host_dev_name: "fuzztap0".into(),
            guest_mac: Some([0x06, 0, 0, 0, 0, 1]),
            mtu,
            rx_rate_limiter: RateLimiter::default(),
            tx_rate_limiter: RateLimiter::default(),
        },
        Box::new(tap),
    ) else {
        return;
    };
    if let Ok(mmds) = Mmds::new(4096) {
        let stack = MmdsNetworkStack::new_with_defaults(None, Arc::new(Mutex::new(mmds)))
            .with_clock(Arc::new(ManualClock::new(1_000)));
        dev.set_interceptor(Some(Box::new(Interceptor(stack))));
    }
    let mut tap_frame = |_dev: &mut Net, bytes: &[u8]| {
        let mut q = incoming.lock().unwrap_or_else(PoisonError::into_inner);
        if q.len() < 64 {
            q.push_back(bytes.to_vec());
        }
    };
    run_virtio(dev, &guest_memory(&[]), &mut tap_frame, data);
});
