//! virtio-net unit tests on an injected backend (no tap, no privileges): a mock driver publishes
//! RX/TX chains, a [`FakeBackend`] plays the tap.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_manager::{EventManager, EventSet, SubscriberOps};
use squib_core::GuestMemoryMmap;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::*;
use crate::persist::Persist;
use crate::rate_limiter::{FakeClock, RateLimiter, TokenBucket};
use crate::virtio::features::{VERSION_1, bit};
use crate::virtio::test_utils::{RecordingInterrupt, TestQueue, guest_memory, rd, wr};
use crate::virtio::{EventSourceChange, InterruptKind, VirtioDevice, VirtioSubscriber};

/// What the fake tap saw and will give.
#[derive(Debug, Default)]
pub(super) struct FakeState {
    pub(super) incoming: VecDeque<Vec<u8>>,
    pub(super) written: Vec<Vec<u8>>,
    pub(super) reads: usize,
    pub(super) read_error: Option<i32>,
    pub(super) write_error: Option<i32>,
    pub(super) offload: Option<u32>,
    /// Accept frames gathered from guest memory (as the tap does) with at most this many
    /// buffers (more: `InvalidInput`, as the tap's limit); `None`: copy path only.
    pub(super) direct_max_bufs: Option<usize>,
    /// Frames that came through the direct path.
    pub(super) direct_writes: usize,
}

/// A tap stand-in sharing its state with the test.
#[derive(Debug)]
pub(super) struct FakeBackend {
    pub(super) state: Arc<Mutex<FakeState>>,
    fd: Option<EventFd>,
}

impl FakeBackend {
    pub(super) fn new(with_fd: bool) -> (Self, Arc<Mutex<FakeState>>) {
        let state = Arc::new(Mutex::new(FakeState::default()));
        let fd = with_fd.then(|| EventFd::new(0).unwrap());
        (
            Self {
                state: state.clone(),
                fd,
            },
            state,
        )
    }
}

impl NetBackend for FakeBackend {
    fn name(&self) -> &'static str {
        "fake0"
    }

    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut s = self.state.lock().unwrap();
        if let Some(e) = s.read_error {
            return Err(io::Error::from_raw_os_error(e));
        }
        let Some(f) = s.incoming.pop_front() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        s.reads += 1;
        let n = f.len().min(buf.len());
        buf[..n].copy_from_slice(&f[..n]);
        Ok(n)
    }

    fn write_frame(&mut self, frame: &[u8]) -> io::Result<usize> {
        let mut s = self.state.lock().unwrap();
        if let Some(e) = s.write_error {
            return Err(io::Error::from_raw_os_error(e));
        }
        s.written.push(frame.to_vec());
        Ok(frame.len())
    }

    fn write_frame_from_guest(
        &mut self,
        mem: &GuestMemoryMmap,
        bufs: &mut dyn Iterator<Item = (GuestAddress, usize)>,
    ) -> Option<io::Result<usize>> {
        let mut s = self.state.lock().unwrap();
        let max = s.direct_max_bufs?;
        let bufs: Vec<_> = bufs.collect();
        if bufs.len() > max {
            return Some(Err(io::ErrorKind::InvalidInput.into()));
        }
        let mut f = Vec::new();
        for (addr, len) in bufs {
            let mut b = vec![0u8; len];
            mem.read_slice(&mut b, addr).unwrap();
            f.extend_from_slice(&b);
        }
        let n = f.len();
        s.written.push(f);
        s.direct_writes += 1;
        Some(Ok(n))
    }

    fn set_offload(&mut self, flags: u32) -> Result<(), squib_sys::tap::TapError> {
        self.state.lock().unwrap().offload = Some(flags);
        Ok(())
    }

    fn raw_fd(&self) -> Option<RawFd> {
        self.fd.as_ref().map(AsRawFd::as_raw_fd)
    }
}

pub(super) const MAC: [u8; 6] = [0x06, 0, 0xac, 0x10, 0, 2];
const MEM: usize = 0x8_0000;
const DATA: u64 = 0x1_0000;

pub(super) fn config(rx: RateLimiter, tx: RateLimiter) -> NetConfig {
    NetConfig {
        iface_id: "eth0".into(),
        host_dev_name: "unused".into(),
        guest_mac: Some(MAC),
        mtu: Some(1500),
        rx_rate_limiter: rx,
        tx_rate_limiter: tx,
    }
}

/// An Ethernet frame with the virtio header in front: `len` bytes in all.
pub(super) fn frame(len: usize, seed: u8) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len)
        .map(|i| seed.wrapping_add(u8::try_from(i % 251).unwrap()))
        .collect();
    f[..VNET_HDR_LEN].fill(0);
    if len >= VNET_HDR_LEN + 14 {
        f[VNET_HDR_LEN + 6..VNET_HDR_LEN + 12].copy_from_slice(&MAC);
        f[VNET_HDR_LEN + 12..VNET_HDR_LEN + 14].copy_from_slice(&[0x88, 0xb5]);
    }
    f
}

struct H {
    mem: GuestMemoryMmap,
    rxq: TestQueue,
    txq: TestQueue,
    dev: Net,
    fake: Arc<Mutex<FakeState>>,
    irq: Arc<RecordingInterrupt>,
}

impl H {
    fn new(acked: u64) -> Self {
        Self::with_limiters(acked, RateLimiter::default(), RateLimiter::default())
    }

    fn with_limiters(acked: u64, rx: RateLimiter, tx: RateLimiter) -> Self {
        let mem = guest_memory(MEM);
        let rxq = TestQueue::new(&mem, 0, 16);
        let txq = TestQueue::new(&mem, 0x1000, 16);
        let (backend, fake) = FakeBackend::new(true);
        let mut dev = Net::with_backend(config(rx, tx), Box::new(backend)).unwrap();
        dev.ack_features(acked | bit(VERSION_1));
        let irq = RecordingInterrupt::new();
        dev.activate(
            mem.clone(),
            irq.clone(),
            vec![rxq.create_queue(), txq.create_queue()],
        )
        .unwrap();
        Self {
            mem,
            rxq,
            txq,
            dev,
            fake,
            irq,
        }
    }

    fn push_rx(&self, f: Vec<u8>) {
        self.fake.lock().unwrap().incoming.push_back(f);
    }

    fn tap_ready(&mut self) {
        self.dev.process_host_event(TAP_TOKEN, EventSet::IN);
    }

    fn notify(&mut self, q: usize) {
        self.dev.queue_events()[q].write(1).unwrap();
        self.dev.process_queue_event(q);
    }

    fn bytes(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    fn put(&self, addr: u64, data: &[u8]) {
        self.mem.write_slice(data, GuestAddress(addr)).unwrap();
    }
}

/// The device as the VMM's event loop runs it: `dev` with VERSION_1 | MRG_RXBUF acked,
/// activated on `rxq`/`txq`, behind its mutex and subscribed to a fresh event manager.
pub(super) fn activate_in_event_manager(
    mut dev: Net,
    mem: &GuestMemoryMmap,
    rxq: &TestQueue,
    txq: &TestQueue,
) -> (Arc<Mutex<Net>>, EventManager<VirtioSubscriber<Net>>) {
    dev.ack_features(bit(VERSION_1) | bit(features::MRG_RXBUF));
    dev.activate(
        mem.clone(),
        RecordingInterrupt::new(),
        vec![rxq.create_queue(), txq.create_queue()],
    )
    .unwrap();
    let dev = Arc::new(Mutex::new(dev));
    let mut em = EventManager::<VirtioSubscriber<Net>>::new().unwrap();
    em.add_subscriber(VirtioSubscriber::new(dev.clone()));
    (dev, em)
}

fn mrg() -> u64 {
    bit(features::MRG_RXBUF)
}

#[test]
fn test_identity_features_and_config_space() {
    let h = H::new(0);
    let d = &h.dev;
    assert_eq!(d.device_type(), 1);
    assert_eq!(d.queue_max_sizes(), &[256, 256]);
    let expected = [0u32, 1, 3, 5, 7, 8, 10, 11, 12, 14, 15, 29, 32]
        .iter()
        .fold(0u64, |a, &b| a | (1 << b));
    assert_eq!(
        d.avail_features(),
        expected,
        "Firecracker's set + MAC + MTU"
    );
    let mut cfg = [0u8; 12];
    d.read_config(0, &mut cfg);
    assert_eq!(&cfg[..6], &MAC);
    assert_eq!(&cfg[10..], &1500u16.to_le_bytes());
    let mut bad = [7u8; 4];
    d.read_config(10, &mut bad);
    assert_eq!(bad, [7; 4]);
    assert_eq!(d.metrics().cfg_fails.count(), 1);

    let (b, _) = FakeBackend::new(false);
    let mut c = config(RateLimiter::default(), RateLimiter::default());
    c.guest_mac = None;
    c.mtu = None;
    let mut plain = Net::with_backend(c, Box::new(b)).unwrap();
    assert_eq!(
        plain.avail_features() & (bit(features::MAC) | bit(features::MTU)),
        0
    );
    plain.read_config(0, &mut cfg);
    assert_eq!(cfg, [0; 12]);
    plain.write_config(0, &[1, 2, 3]);
    plain.read_config(0, &mut cfg);
    assert_eq!(cfg, [0; 12], "the driver cannot write the config space");
    assert_eq!(plain.metrics().cfg_fails.count(), 1);
    assert!(
        plain.host_event_sources().is_empty(),
        "no fd, nothing to watch"
    );

    let (b, _) = FakeBackend::new(false);
    let mut c = config(RateLimiter::default(), RateLimiter::default());
    c.mtu = Some(67);
    assert_eq!(
        Net::with_backend(c, Box::new(b)).unwrap_err().to_string(),
        "MTU 67 is out of range [68, 65535]"
    );
}

#[test]
fn test_activation_offloads_and_errors() {
    let acked = bit(features::GUEST_CSUM) | bit(features::GUEST_TSO4) | bit(features::GUEST_UFO);
    let mut h = H::new(acked);
    assert_eq!(
        h.fake.lock().unwrap().offload,
        Some(squib_sys::tap::TUN_F_CSUM | squib_sys::tap::TUN_F_TSO4 | squib_sys::tap::TUN_F_UFO)
    );
    assert!(matches!(
        h.dev.activate(h.mem.clone(), h.irq.clone(), vec![]),
        Err(crate::virtio::ActivateError::AlreadyActive)
    ));
    h.dev.reset();
    assert!(!h.dev.is_activated());
    assert_eq!(h.dev.acked_features(), 0);
    assert!(h.dev.queues().is_empty());
    assert!(matches!(
        h.dev
            .activate(h.mem.clone(), h.irq.clone(), vec![h.rxq.create_queue()]),
        Err(crate::virtio::ActivateError::QueueCount {
            expected: 2,
            got: 1
        })
    ));
    assert_eq!(h.dev.metrics().activate_fails.count(), 2);
    assert_eq!(tap_offload_flags(0), 0);
    assert_eq!(
        tap_offload_flags(bit(features::GUEST_TSO6)),
        squib_sys::tap::TUN_F_TSO6
    );
}

#[test]
fn test_tx_sends_gathered_frames_to_the_tap() {
    let mut h = H::new(0);
    let f = frame(200, 3);
    h.put(DATA, &f[..12]);
    h.put(DATA + 0x100, &f[12..50]);
    h.put(DATA + 0x400, &f[50..]);
    h.txq
        .add_chain(&[rd(DATA, 12), rd(DATA + 0x100, 38), rd(DATA + 0x400, 150)]);
    let mut spoofed = frame(80, 9);
    spoofed[18..24].copy_from_slice(&[2, 2, 2, 2, 2, 2]);
    h.put(DATA + 0x1000, &spoofed);
    h.txq.add_chain(&[rd(DATA + 0x1000, 80)]);
    h.notify(TX_INDEX);
    assert_eq!(h.fake.lock().unwrap().written, vec![f, spoofed]);
    assert_eq!(h.txq.used_idx(), 2);
    assert_eq!(h.txq.used_elem(0).1, 0);
    let m = h.dev.metrics();
    assert_eq!(m.tx_packets_count.count(), 2);
    assert_eq!(m.tx_count.count(), 2);
    assert_eq!(m.tx_bytes_count.count(), 280);
    assert_eq!(m.tx_spoofed_mac_count.count(), 1);
    assert_eq!(m.tx_queue_event_count.count(), 1);
    assert_eq!(h.irq.kinds(), vec![InterruptKind::Queue(1)]);
    h.notify(TX_INDEX);
    assert_eq!(h.dev.metrics().no_tx_avail_buffer.count(), 1);
}

/// The direct path (frames written from guest memory): the spoofed-MAC check reads the source
/// MAC across buffer boundaries, and a chain the backend cannot gather falls back to a copy.
#[test]
fn test_tx_direct_from_guest_memory_and_copy_fallback() {
    let mut h = H::new(0);
    h.fake.lock().unwrap().direct_max_bufs = Some(3);
    let mut spoofed = frame(120, 5);
    spoofed[18..24].copy_from_slice(&[2, 2, 2, 2, 2, 2]);
    // The source MAC (bytes 18..24) spans the second and third buffers.
    h.put(DATA, &spoofed[..12]);
    h.put(DATA + 0x100, &spoofed[12..20]);
    h.put(DATA + 0x200, &spoofed[20..]);
    h.txq
        .add_chain(&[rd(DATA, 12), rd(DATA + 0x100, 8), rd(DATA + 0x200, 100)]);
    let honest = frame(64, 6);
    h.put(DATA + 0x1000, &honest);
    h.txq.add_chain(&[rd(DATA + 0x1000, 64)]);
    // Four buffers: more than this backend gathers, so the device copies.
    let big = frame(100, 7);
    for (i, part) in big.chunks(25).enumerate() {
        h.put(DATA + 0x2000 + 0x100 * i as u64, part);
    }
    h.txq.add_chain(&[
        rd(DATA + 0x2000, 25),
        rd(DATA + 0x2100, 25),
        rd(DATA + 0x2200, 25),
        rd(DATA + 0x2300, 25),
    ]);
    h.notify(TX_INDEX);
    let fake = h.fake.lock().unwrap();
    assert_eq!(fake.written, vec![spoofed, honest, big]);
    assert_eq!(fake.direct_writes, 2);
    let m = h.dev.metrics();
    assert_eq!(m.tx_packets_count.count(), 3);
    assert_eq!(m.tx_bytes_count.count(), 284);
    assert_eq!(m.tx_spoofed_mac_count.count(), 1);
    assert_eq!(h.txq.used_idx(), 3);
}

#[test]
fn test_tx_malformed_oversized_and_tap_errors_are_counted() {
    let mut h = H::new(0);
    h.txq.add_chain(&[rd(DATA, 20), wr(DATA + 0x100, 10)]);
    h.txq.add_chain(&[rd(DATA, 11)]);
    h.txq
        .add_chain(&[rd(DATA, 0x8000), rd(DATA, 0x8000), rd(DATA, 27)]);
    h.txq.add_chain(&[rd(MEM as u64 - 4, 16)]);
    h.notify(TX_INDEX);
    let m = h.dev.metrics().clone();
    assert_eq!(h.txq.used_idx(), 4);
    assert_eq!(m.tx_fails.count(), 2);
    assert_eq!(m.tx_malformed_frames.count(), 2, "short and oversized");
    assert!(h.fake.lock().unwrap().written.is_empty());
    h.fake.lock().unwrap().write_error = Some(5);
    h.txq.add_chain(&[rd(DATA, 60)]);
    h.notify(TX_INDEX);
    assert_eq!(m.tap_write_fails.count(), 1);
    assert_eq!(m.tx_packets_count.count(), 0);
    assert_eq!(h.txq.used_idx(), 5);
}

#[test]
fn test_rx_single_buffer_without_mrg_rxbuf() {
    let mut h = H::new(0);
    let f = frame(100, 1);
    h.push_rx(f.clone());
    h.rxq.add_chain(&[wr(DATA, 1000)]); // too small without MRG_RXBUF: returned empty
    h.rxq
        .add_chain(&[wr(DATA + 0x1000, 12), wr(DATA + 0x2000, 1514)]);
    h.notify(RX_INDEX);
    assert_eq!(h.rxq.used_idx(), 2);
    assert_eq!(h.rxq.used_elem(0), (0, 0));
    assert_eq!(h.rxq.used_elem(1), (1, 100));
    let mut expect = f.clone();
    expect[10] = 1; // num_buffers
    assert_eq!(h.bytes(DATA + 0x1000, 12), expect[..12].to_vec());
    assert_eq!(h.bytes(DATA + 0x2000, 88), expect[12..].to_vec());
    let m = h.dev.metrics();
    assert_eq!(m.rx_fails.count(), 1);
    assert_eq!(m.rx_packets_count.count(), 1);
    assert_eq!(m.rx_bytes_count.count(), 100);
    assert_eq!(h.irq.kinds(), vec![InterruptKind::Queue(0)]);
}

#[test]
fn test_rx_mergeable_spans_chains_and_publishes_once() {
    let mut h = H::new(mrg());
    let f = frame(150, 5);
    h.push_rx(f.clone());
    for i in 0..4 {
        h.rxq.add_chain(&[wr(DATA + i * 0x100, 64)]);
    }
    h.tap_ready();
    assert_eq!(h.rxq.used_idx(), 3);
    let lens: Vec<_> = (0..3).map(|i| h.rxq.used_elem(i)).collect();
    assert_eq!(lens, vec![(0, 64), (1, 64), (2, 22)]);
    let mut got = h.bytes(DATA, 64);
    got.extend(h.bytes(DATA + 0x100, 64));
    got.extend(h.bytes(DATA + 0x200, 22));
    let mut expect = f;
    expect[10] = 3;
    assert_eq!(got, expect);
    // The fourth chain was put back: a later frame uses it.
    h.push_rx(frame(40, 7));
    h.tap_ready();
    assert_eq!(h.rxq.used_idx(), 4);
    assert_eq!(h.rxq.used_elem(3), (3, 40));
    assert_eq!(h.bytes(DATA + 0x300 + 10, 2), vec![1, 0]);
}

#[test]
fn test_rx_backpressure_holds_one_frame_and_pauses_the_tap() {
    let mut h = H::new(0);
    let fd = h.dev.host_event_sources()[0].fd;
    for i in 0..3 {
        h.push_rx(frame(60, i));
    }
    h.tap_ready();
    let m = h.dev.metrics().clone();
    assert_eq!(
        h.fake.lock().unwrap().reads,
        1,
        "one frame held, the rest stay in the tap"
    );
    assert_eq!(m.no_rx_avail_buffer.count(), 1);
    let paused = EventSourceChange::Modify(EventSource {
        fd,
        events: EventSet::EDGE_TRIGGERED,
        token: TAP_TOKEN,
    });
    assert_eq!(h.dev.take_event_source_changes(), vec![paused]);
    // More readiness while paused reads nothing.
    h.tap_ready();
    assert_eq!(h.fake.lock().unwrap().reads, 1);
    assert!(h.dev.take_event_source_changes().is_empty());
    // One buffer: the held frame goes in, the next one is held.
    h.rxq.add_chain(&[wr(DATA, 2000)]);
    h.notify(RX_INDEX);
    assert_eq!(h.rxq.used_idx(), 1);
    assert_eq!(h.bytes(DATA + 12, 48), frame(60, 0)[12..].to_vec());
    assert_eq!(h.fake.lock().unwrap().reads, 2);
    assert!(h.dev.take_event_source_changes().is_empty(), "still paused");
    h.rxq.add_chain(&[wr(DATA + 0x1000, 2000)]);
    h.rxq.add_chain(&[wr(DATA + 0x2000, 2000)]);
    h.notify(RX_INDEX);
    assert_eq!(h.rxq.used_idx(), 3);
    assert_eq!(h.bytes(DATA + 0x2000 + 12, 48), frame(60, 2)[12..].to_vec());
    assert_eq!(
        h.dev.take_event_source_changes(),
        vec![EventSourceChange::Modify(EventSource {
            fd,
            events: EventSet::IN | EventSet::EDGE_TRIGGERED,
            token: TAP_TOKEN,
        })]
    );
    assert_eq!(m.rx_packets_count.count(), 3);
}

#[test]
fn test_rx_frames_too_large_are_dropped_and_counted() {
    let mut h = H::new(mrg());
    h.push_rx(frame(1000, 1));
    h.push_rx(frame(30, 2));
    for i in 0..16 {
        h.rxq.add_chain(&[wr(DATA + i * 0x100, 16)]);
    }
    h.tap_ready();
    // 16 chains of 16 bytes can never hold 1000 bytes: dropped; the small frame fits in two.
    assert_eq!(h.dev.metrics().rx_fails.count(), 1);
    assert_eq!(h.rxq.used_idx(), 2);
    assert_eq!(h.bytes(DATA + 10, 2), vec![2, 0]);

    let mut h = H::new(0);
    h.push_rx(frame(3000, 1));
    h.push_rx(frame(30, 2));
    h.rxq.add_chain(&[wr(DATA, 2000)]);
    h.tap_ready();
    assert_eq!(h.dev.metrics().rx_fails.count(), 1);
    assert_eq!(h.rxq.used_elem(0), (0, 30));
}

#[test]
fn test_rx_malformed_chains_and_tap_failures() {
    let mut h = H::new(mrg());
    h.rxq.add_chain(&[rd(DATA, 64)]);
    h.rxq.add_chain(&[wr(MEM as u64 - 8, 64)]);
    h.rxq.add_chain(&[wr(DATA + 0x100, 64)]);
    h.push_rx(frame(40, 1));
    h.push_rx(vec![0; 5]);
    h.tap_ready();
    assert_eq!(h.rxq.used_idx(), 3);
    assert_eq!(h.rxq.used_elem(0), (0, 0));
    assert_eq!(h.rxq.used_elem(1), (1, 0));
    assert_eq!(h.rxq.used_elem(2), (2, 40));
    assert_eq!(
        h.dev.metrics().rx_fails.count(),
        3,
        "two bad chains + a headerless frame"
    );
    h.fake.lock().unwrap().read_error = Some(77);
    h.tap_ready();
    assert_eq!(h.dev.metrics().tap_read_fails.count(), 1);
    let fd = h.dev.host_event_sources()[0].fd;
    h.dev
        .process_host_event(TAP_TOKEN, EventSet::ERROR | EventSet::HANG_UP);
    assert!(matches!(
        h.dev.take_event_source_changes()[..],
        [EventSourceChange::Remove(EventSource { fd: f, .. })] if f == fd
    ));
    assert!(h.dev.host_event_sources().is_empty());
    assert_eq!(h.dev.metrics().tap_read_fails.count(), 2);
    h.dev.process_host_event(7, EventSet::IN);
    assert_eq!(h.dev.metrics().event_fails.count(), 2);
}

fn ops_limiter(clock: &FakeClock) -> RateLimiter {
    let c: Arc<FakeClock> = Arc::new(clock.clone());
    RateLimiter::with_clock(None, TokenBucket::with_clock(1, 0, 1000, c.clone()), c)
}

#[test]
fn test_rate_limiters_hold_frames_until_the_timer() {
    let clock = FakeClock::new();
    let tx_clock = FakeClock::new();
    let mut h = H::with_limiters(0, ops_limiter(&clock), ops_limiter(&tx_clock));
    h.push_rx(frame(60, 1));
    h.push_rx(frame(60, 2));
    h.rxq.add_chain(&[wr(DATA, 2000)]);
    h.rxq.add_chain(&[wr(DATA + 0x1000, 2000)]);
    h.tap_ready();
    assert_eq!(h.rxq.used_idx(), 1);
    let m = h.dev.metrics().clone();
    assert_eq!(m.rx_rate_limiter_throttled.count(), 1);
    h.tap_ready();
    assert_eq!(m.rx_rate_limiter_throttled.count(), 2);
    clock.advance(Duration::from_secs(1));
    h.dev.process_timer(RX_INDEX);
    assert_eq!(h.rxq.used_idx(), 2);
    assert_eq!(m.rx_event_rate_limiter_count.count(), 1);

    h.txq.add_chain(&[rd(DATA, 60)]);
    h.txq.add_chain(&[rd(DATA, 60)]);
    h.notify(TX_INDEX);
    assert_eq!(h.txq.used_idx(), 1);
    assert_eq!(m.tx_rate_limiter_throttled.count(), 1);
    tx_clock.advance(Duration::from_secs(1));
    h.dev.process_timer(TX_INDEX);
    assert_eq!(h.txq.used_idx(), 2);
    assert_eq!(m.tx_rate_limiter_event_count.count(), 1);
    h.dev.update_rate_limiters(
        BucketUpdate::Disabled,
        BucketUpdate::Disabled,
        BucketUpdate::None,
        BucketUpdate::Disabled,
    );
    assert!(h.dev.rx_rate_limiter().ops().is_none());
    assert!(h.dev.tx_rate_limiter().ops().is_none());
}

/// Consumes ARP frames (EtherType 0x0806) and answers each with a canned frame.
#[derive(Debug, Default)]
struct FakeMmds {
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
    replies: VecDeque<Vec<u8>>,
}

impl FrameInterceptor for FakeMmds {
    fn detour_frame(&mut self, frame: &[u8]) -> bool {
        if frame.get(12..14) != Some(&[0x08, 0x06]) {
            return false;
        }
        self.seen.lock().unwrap().push(frame.to_vec());
        self.replies.push_back(b"mmds reply frame".to_vec());
        true
    }

    fn write_next_frame(&mut self, buf: &mut [u8]) -> Option<usize> {
        let f = self.replies.pop_front()?;
        buf[..f.len()].copy_from_slice(&f);
        Some(f.len())
    }

    fn has_pending_frames(&self) -> bool {
        !self.replies.is_empty()
    }
}

use crate::rate_limiter::BucketUpdate;
use crate::virtio::EventSource;

#[test]
fn test_interceptor_takes_frames_and_injects_replies_first() {
    let mut h = H::new(mrg());
    let seen = Arc::new(Mutex::new(Vec::new()));
    h.dev.set_interceptor(Some(Box::new(FakeMmds {
        seen: seen.clone(),
        replies: VecDeque::new(),
    })));
    let mut arp = frame(60, 0);
    arp[24..26].copy_from_slice(&[0x08, 0x06]);
    h.put(DATA, &arp);
    h.txq.add_chain(&[rd(DATA, 60)]);
    h.put(DATA + 0x100, &frame(60, 1));
    h.txq.add_chain(&[rd(DATA + 0x100, 60)]);
    h.push_rx(frame(50, 9));
    h.rxq.add_chain(&[wr(DATA + 0x1000, 1000)]);
    h.rxq.add_chain(&[wr(DATA + 0x2000, 1000)]);
    h.notify(TX_INDEX);
    assert_eq!(seen.lock().unwrap().clone(), vec![arp[12..].to_vec()]);
    assert_eq!(h.fake.lock().unwrap().written, vec![frame(60, 1)]);
    // The reply went in first, then the tap's frame.
    assert_eq!(h.rxq.used_elem(0), (0, 12 + 16));
    assert_eq!(
        h.bytes(DATA + 0x1000 + 12, 16),
        b"mmds reply frame".to_vec()
    );
    assert_eq!(h.rxq.used_elem(1), (1, 50));
    assert!(h.dev.has_interceptor());
    h.dev.set_interceptor(None);
    assert!(!h.dev.has_interceptor());
}

#[test]
fn test_persist_round_trip() {
    let clock = FakeClock::new();
    let mut h = H::with_limiters(mrg(), ops_limiter(&clock), RateLimiter::default());
    h.dev.set_interceptor(Some(Box::new(FakeMmds::default())));
    let state = h.dev.save();
    assert_eq!(state.tap_if_name, "fake0");
    assert_eq!(state.acked_features, mrg() | bit(VERSION_1));
    let json = serde_json::to_string(&state).unwrap();
    let back: NetState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, state);
    let (b, _) = FakeBackend::new(true);
    let restored = Net::restore_with_backend(&back, Box::new(b)).unwrap();
    assert!(!restored.is_activated());
    assert_eq!(restored.acked_features(), h.dev.acked_features());
    assert_eq!(restored.avail_features(), h.dev.avail_features());
    assert_eq!(restored.guest_mac(), Some(MAC));
    assert_eq!(restored.mtu(), Some(1500));
    assert_eq!(restored.iface_id(), "eth0");
    assert_eq!(
        restored.rx_rate_limiter().ops().unwrap().capacity(),
        h.dev.rx_rate_limiter().ops().unwrap().capacity()
    );
    let mut again = restored.save();
    assert!(state.has_interceptor && !again.has_interceptor);
    again.has_interceptor = true;
    assert_eq!(again, state);
    // The queues are the VMM's part: they restore through QueueSnapshot and re-activate.
    let saved = crate::virtio::persist::save_queues(h.dev.queues());
    let queues = crate::virtio::persist::restore_queues(&saved, 2, &h.mem).unwrap();
    let mut restored = restored;
    restored
        .activate(h.mem.clone(), h.irq.clone(), queues)
        .unwrap();
    assert_eq!(restored.queues().len(), 2);
}
