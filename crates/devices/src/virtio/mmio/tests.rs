//! MMIO transport tests: a fake two-queue device behind the register file, poked through
//! `BusDevice` the way Linux's virtio-mmio driver does.

use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use squib_core::GuestMemoryMmap;
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::*;
use crate::interrupt::CountingIrq;
use crate::virtio::test_utils::{TestQueue, guest_memory};
use crate::virtio::{ActivateError, read_config_bytes};

const FEAT_X: u64 = 1 << 3;

/// A device with two queues, an 8-byte config space and a switchable activation failure.
struct Dummy {
    max_sizes: Vec<u16>,
    evts: Vec<EventFd>,
    acked: u64,
    config: [u8; 8],
    generation: u32,
    activated: Option<(usize, Vec<bool>)>,
    interrupt: Option<Arc<dyn VirtioInterrupt>>,
    fail_activate: bool,
    resets: u32,
    queues: Vec<Queue>,
}

impl Dummy {
    fn new() -> Self {
        Self {
            max_sizes: vec![16, 8],
            evts: (0..2)
                .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
                .collect(),
            acked: 0,
            config: [1, 2, 3, 4, 5, 6, 7, 8],
            generation: 7,
            activated: None,
            interrupt: None,
            fail_activate: false,
            resets: 0,
            queues: Vec::new(),
        }
    }
}

impl VirtioDevice for Dummy {
    fn device_type(&self) -> u32 {
        42
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &self.max_sizes
    }
    fn avail_features(&self) -> u64 {
        features::bit(features::VERSION_1) | features::bit(features::RING_EVENT_IDX) | FEAT_X
    }
    fn acked_features(&self) -> u64 {
        self.acked
    }
    fn ack_features(&mut self, features: u64) {
        self.acked = features & self.avail_features();
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        if let Some(r) = crate::virtio::config_range(self.config.len(), offset, data.len()) {
            self.config[r].copy_from_slice(data);
        }
    }
    fn config_generation(&self) -> u32 {
        self.generation
    }
    fn activate(
        &mut self,
        _mem: GuestMemoryMmap,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<Queue>,
    ) -> Result<(), ActivateError> {
        if self.fail_activate {
            return Err(ActivateError::Unsupported("dummy refuses".into()));
        }
        self.activated = Some((
            queues.len(),
            queues.iter().map(QueueT::event_idx_enabled).collect(),
        ));
        self.interrupt = Some(interrupt);
        self.queues = queues;
        Ok(())
    }
    fn is_activated(&self) -> bool {
        self.activated.is_some()
    }
    fn reset(&mut self) {
        self.activated = None;
        self.interrupt = None;
        self.queues.clear();
        self.acked = 0;
        self.resets += 1;
    }
    fn queue_events(&self) -> &[EventFd] {
        &self.evts
    }
    fn process_queue_event(&mut self, _idx: usize) {}
    fn queues(&self) -> &[Queue] {
        &self.queues
    }
}

struct Env {
    mem: GuestMemoryMmap,
    dev: Arc<Mutex<Dummy>>,
    irq: Arc<CountingIrq>,
    t: MmioTransport,
}

fn env() -> Env {
    let mem = guest_memory(0x1_0000);
    let dev = Arc::new(Mutex::new(Dummy::new()));
    let irq = Arc::new(CountingIrq::new());
    let t = MmioTransport::new(mem.clone(), irq.clone(), dev.clone()).unwrap();
    Env { mem, dev, irq, t }
}

fn rd32(t: &mut MmioTransport, off: u32) -> u32 {
    let mut b = [0u8; 4];
    t.read(u64::from(off), &mut b);
    u32::from_le_bytes(b)
}

fn wr32(t: &mut MmioTransport, off: u32, v: u32) {
    t.write(u64::from(off), &v.to_le_bytes());
}

fn lo(v: u64) -> u32 {
    u32::try_from(v & 0xffff_ffff).unwrap()
}

fn hi(v: u64) -> u32 {
    u32::try_from(v >> 32).unwrap()
}

/// Steps the driver takes up to FEATURES_OK, accepting `feats`.
fn negotiate(t: &mut MmioTransport, feats: u64) {
    wr32(t, VIRTIO_MMIO_STATUS, 0);
    wr32(t, VIRTIO_MMIO_STATUS, ACKNOWLEDGE);
    wr32(t, VIRTIO_MMIO_STATUS, ACKNOWLEDGE | DRIVER);
    wr32(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    wr32(t, VIRTIO_MMIO_DRIVER_FEATURES, lo(feats));
    wr32(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    wr32(t, VIRTIO_MMIO_DRIVER_FEATURES, hi(feats));
    wr32(t, VIRTIO_MMIO_STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
}

/// Programs queue `sel` like Linux's `vm_setup_vq`.
fn setup_queue(t: &mut MmioTransport, sel: u32, q: &TestQueue) {
    wr32(t, VIRTIO_MMIO_QUEUE_SEL, sel);
    assert_eq!(rd32(t, VIRTIO_MMIO_QUEUE_READY), 0);
    assert!(rd32(t, VIRTIO_MMIO_QUEUE_NUM_MAX) >= u32::from(q.size()));
    wr32(t, VIRTIO_MMIO_QUEUE_NUM, u32::from(q.size()));
    for (l, h, a) in [
        (
            VIRTIO_MMIO_QUEUE_DESC_LOW,
            VIRTIO_MMIO_QUEUE_DESC_HIGH,
            q.desc_addr().0,
        ),
        (
            VIRTIO_MMIO_QUEUE_AVAIL_LOW,
            VIRTIO_MMIO_QUEUE_AVAIL_HIGH,
            q.avail_addr().0,
        ),
        (
            VIRTIO_MMIO_QUEUE_USED_LOW,
            VIRTIO_MMIO_QUEUE_USED_HIGH,
            q.used_addr().0,
        ),
    ] {
        wr32(t, l, lo(a));
        wr32(t, h, hi(a));
    }
    wr32(t, VIRTIO_MMIO_QUEUE_READY, 1);
    assert_eq!(rd32(t, VIRTIO_MMIO_QUEUE_READY), 1);
}

const S_FEAT: u32 = ACKNOWLEDGE | DRIVER | FEATURES_OK;

fn init(e: &mut Env, feats: u64) {
    negotiate(&mut e.t, feats);
    assert_eq!(rd32(&mut e.t, VIRTIO_MMIO_STATUS), S_FEAT);
    let q0 = TestQueue::new(&e.mem, 0x1000, 16);
    let q1 = TestQueue::new(&e.mem, 0x2000, 8);
    setup_queue(&mut e.t, 0, &q0);
    setup_queue(&mut e.t, 1, &q1);
    wr32(&mut e.t, VIRTIO_MMIO_STATUS, S_FEAT | DRIVER_OK);
}

#[test]
fn test_identity_registers() {
    let mut e = env();
    assert_eq!(rd32(&mut e.t, VIRTIO_MMIO_MAGIC_VALUE), 0x7472_6976);
    assert_eq!(rd32(&mut e.t, VIRTIO_MMIO_VERSION), 2);
    assert_eq!(rd32(&mut e.t, VIRTIO_MMIO_DEVICE_ID), 42);
    assert_eq!(rd32(&mut e.t, VIRTIO_MMIO_VENDOR_ID), 0);
    assert_eq!(rd32(&mut e.t, VIRTIO_MMIO_CONFIG_GENERATION), 7);
    assert_eq!(rd32(&mut e.t, VIRTIO_MMIO_SHM_LEN_LOW), u32::MAX);
    wr32(&mut e.t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
    assert_eq!(
        rd32(&mut e.t, VIRTIO_MMIO_DEVICE_FEATURES),
        (1 << 29) | (1 << 3)
    );
    wr32(&mut e.t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    assert_eq!(rd32(&mut e.t, VIRTIO_MMIO_DEVICE_FEATURES), 1);
    wr32(&mut e.t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 2);
    assert_eq!(rd32(&mut e.t, VIRTIO_MMIO_DEVICE_FEATURES), 0);
}

#[test]
fn test_full_init_sequence_activates_with_negotiated_event_idx() {
    let mut e = env();
    let feats = features::bit(features::VERSION_1) | features::bit(features::RING_EVENT_IDX);
    init(&mut e, feats);
    assert_eq!(rd32(&mut e.t, VIRTIO_MMIO_STATUS), S_FEAT | DRIVER_OK);
    let dev = e.dev.lock().unwrap();
    assert_eq!(dev.acked, feats);
    assert_eq!(dev.activated, Some((2, vec![true, true])));
    assert_eq!(e.t.metrics().activate_fails.count(), 0);
    assert_eq!(e.t.metrics().invalid_driver_writes.count(), 0);
}

#[test]
fn test_features_ok_refused_without_version_1() {
    let mut e = env();
    negotiate(&mut e.t, FEAT_X);
    assert_eq!(rd32(&mut e.t, VIRTIO_MMIO_STATUS), ACKNOWLEDGE | DRIVER);
    assert_eq!(e.dev.lock().unwrap().acked, 0);
    assert_eq!(e.t.metrics().invalid_driver_writes.count(), 1);
}

#[test]
fn test_unoffered_features_are_dropped() {
    let mut e = env();
    negotiate(
        &mut e.t,
        features::bit(features::VERSION_1) | (1 << 7) | (1 << 40),
    );
    assert_eq!(rd32(&mut e.t, VIRTIO_MMIO_STATUS), S_FEAT);
    assert_eq!(
        e.dev.lock().unwrap().acked,
        features::bit(features::VERSION_1)
    );
}

#[test]
fn test_driver_features_outside_negotiation_are_ignored() {
    let mut e = env();
    wr32(&mut e.t, VIRTIO_MMIO_DRIVER_FEATURES, 0xffff_ffff);
    negotiate(&mut e.t, features::bit(features::VERSION_1));
    wr32(&mut e.t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    wr32(&mut e.t, VIRTIO_MMIO_DRIVER_FEATURES, 0xffff_ffff);
    assert_eq!(e.t.metrics().invalid_driver_writes.count(), 2);
    assert_eq!(
        e.dev.lock().unwrap().acked,
        features::bit(features::VERSION_1)
    );
}

#[test]
fn test_queue_not_ready_gives_needs_reset_and_config_interrupt() {
    let mut e = env();
    negotiate(&mut e.t, features::bit(features::VERSION_1));
    let q0 = TestQueue::new(&e.mem, 0x1000, 16);
    setup_queue(&mut e.t, 0, &q0);
    // Queue 1 never made ready.
    wr32(&mut e.t, VIRTIO_MMIO_STATUS, S_FEAT | DRIVER_OK);
    assert_eq!(
        rd32(&mut e.t, VIRTIO_MMIO_STATUS),
        S_FEAT | DEVICE_NEEDS_RESET
    );
    assert_eq!(rd32(&mut e.t, VIRTIO_MMIO_INTERRUPT_STATUS), INT_CONFIG);
    assert_eq!(e.irq.count(), 1);
    assert_eq!(e.t.metrics().activate_fails.count(), 1);
    assert!(!e.dev.lock().unwrap().is_activated());
    // Only a reset gets the device out of it.
    wr32(&mut e.t, VIRTIO_MMIO_STATUS, S_FEAT | DRIVER_OK);
    assert_eq!(
        rd32(&mut e.t, VIRTIO_MMIO_STATUS),
        S_FEAT | DEVICE_NEEDS_RESET
    );
    wr32(&mut e.t, VIRTIO_MMIO_STATUS, 0);
    assert_eq!(rd32(&mut e.t, VIRTIO_MMIO_STATUS), 0);
    assert_eq!(rd32(&mut e.t, VIRTIO_MMIO_INTERRUPT_STATUS), 0);
}

#[test]
fn test_bad_queue_geometry_or_addresses_give_needs_reset() {
    type Mangle = fn(&mut MmioTransport);
    let cases: [Mangle; 4] = [
        // Not a power of two.
        |t| wr32(t, VIRTIO_MMIO_QUEUE_NUM, 12),
        // Larger than QueueNumMax.
        |t| wr32(t, VIRTIO_MMIO_QUEUE_NUM, 32),
        // Descriptor table outside guest memory.
        |t| wr32(t, VIRTIO_MMIO_QUEUE_DESC_HIGH, 1),
        // Misaligned used ring.
        |t| wr32(t, VIRTIO_MMIO_QUEUE_USED_LOW, 0x2002),
    ];
    for mangle in cases {
        let mut e = env();
        negotiate(&mut e.t, features::bit(features::VERSION_1));
        let q0 = TestQueue::new(&e.mem, 0x1000, 16);
        let q1 = TestQueue::new(&e.mem, 0x2000, 8);
        setup_queue(&mut e.t, 0, &q0);
        setup_queue(&mut e.t, 1, &q1);
        wr32(&mut e.t, VIRTIO_MMIO_QUEUE_SEL, 0);
        mangle(&mut e.t);
        wr32(&mut e.t, VIRTIO_MMIO_STATUS, S_FEAT | DRIVER_OK);
        assert_eq!(
            rd32(&mut e.t, VIRTIO_MMIO_STATUS) & DEVICE_NEEDS_RESET,
            DEVICE_NEEDS_RESET
        );
        assert!(!e.dev.lock().unwrap().is_activated());
    }
}

#[test]
fn test_device_refusing_activation_gives_needs_reset() {
    let mut e = env();
    e.dev.lock().unwrap().fail_activate = true;
    init(&mut e, features::bit(features::VERSION_1));
    assert_eq!(
        rd32(&mut e.t, VIRTIO_MMIO_STATUS),
        S_FEAT | DEVICE_NEEDS_RESET
    );
    assert_eq!(e.t.metrics().activate_fails.count(), 1);
}

#[test]
fn test_reset_clears_device_and_registers() {
    let mut e = env();
    init(&mut e, features::bit(features::VERSION_1));
    let interrupt = e.dev.lock().unwrap().interrupt.clone().unwrap();
    interrupt.trigger(InterruptKind::Queue(0)).unwrap();
    assert_eq!(rd32(&mut e.t, VIRTIO_MMIO_INTERRUPT_STATUS), INT_VRING);
    wr32(&mut e.t, VIRTIO_MMIO_STATUS, 0);
    assert_eq!(rd32(&mut e.t, VIRTIO_MMIO_STATUS), 0);
    assert_eq!(rd32(&mut e.t, VIRTIO_MMIO_INTERRUPT_STATUS), 0);
    wr32(&mut e.t, VIRTIO_MMIO_QUEUE_SEL, 1);
    assert_eq!(rd32(&mut e.t, VIRTIO_MMIO_QUEUE_READY), 0);
    {
        let dev = e.dev.lock().unwrap();
        assert!(!dev.is_activated());
        assert_eq!(dev.acked, 0);
        assert_eq!(dev.resets, 2, "negotiate() starts with a reset too");
    }
    // And the driver can bring it up again.
    init(&mut e, features::bit(features::VERSION_1));
    assert!(e.dev.lock().unwrap().is_activated());
    assert_eq!(e.t.metrics().reset_count.count(), 3);
}

#[test]
fn test_queue_writes_after_driver_ok_are_ignored() {
    let mut e = env();
    init(&mut e, features::bit(features::VERSION_1));
    wr32(&mut e.t, VIRTIO_MMIO_QUEUE_SEL, 0);
    wr32(&mut e.t, VIRTIO_MMIO_QUEUE_READY, 0);
    assert_eq!(rd32(&mut e.t, VIRTIO_MMIO_QUEUE_READY), 1);
    assert_eq!(e.t.metrics().invalid_driver_writes.count(), 1);
}

#[test]
fn test_invalid_status_transitions_are_ignored() {
    let mut e = env();
    wr32(&mut e.t, VIRTIO_MMIO_STATUS, DRIVER_OK);
    assert_eq!(rd32(&mut e.t, VIRTIO_MMIO_STATUS), 0);
    wr32(&mut e.t, VIRTIO_MMIO_STATUS, ACKNOWLEDGE);
    wr32(
        &mut e.t,
        VIRTIO_MMIO_STATUS,
        ACKNOWLEDGE | DRIVER | FEATURES_OK,
    );
    assert_eq!(rd32(&mut e.t, VIRTIO_MMIO_STATUS), ACKNOWLEDGE);
    wr32(&mut e.t, VIRTIO_MMIO_STATUS, ACKNOWLEDGE);
    wr32(&mut e.t, VIRTIO_MMIO_STATUS, ACKNOWLEDGE | FAILED);
    assert_eq!(rd32(&mut e.t, VIRTIO_MMIO_STATUS), ACKNOWLEDGE | FAILED);
    assert_eq!(e.t.metrics().invalid_driver_writes.count(), 2);
}

#[test]
fn test_queue_notify_signals_the_queue_eventfd() {
    let mut e = env();
    wr32(&mut e.t, VIRTIO_MMIO_QUEUE_NOTIFY, 1);
    wr32(&mut e.t, VIRTIO_MMIO_QUEUE_NOTIFY, 1);
    assert_eq!(e.dev.lock().unwrap().evts[1].read().unwrap(), 2);
    assert!(
        e.dev.lock().unwrap().evts[0].read().is_err(),
        "not signalled"
    );
    wr32(&mut e.t, VIRTIO_MMIO_QUEUE_NOTIFY, 2);
    wr32(&mut e.t, VIRTIO_MMIO_QUEUE_NOTIFY, u32::MAX);
    assert_eq!(e.t.metrics().notify_fails.count(), 2);
}

#[test]
fn test_interrupt_status_and_ack() {
    let e = env();
    let i = e.t.interrupt().clone();
    let mut t = e.t;
    i.trigger(InterruptKind::Queue(1)).unwrap();
    i.trigger(InterruptKind::Config).unwrap();
    assert_eq!(
        rd32(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS),
        INT_VRING | INT_CONFIG
    );
    assert_eq!(e.irq.count(), 2);
    wr32(&mut t, VIRTIO_MMIO_INTERRUPT_ACK, INT_VRING);
    assert_eq!(rd32(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS), INT_CONFIG);
    // InterruptStatus is read-only.
    wr32(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS, 0);
    assert_eq!(rd32(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS), INT_CONFIG);
    assert_eq!(t.metrics().missed_write_count.count(), 1);
}

#[test]
fn test_bad_widths_and_offsets_are_counted() {
    let mut e = env();
    let mut b2 = [0xaau8; 2];
    e.t.read(0, &mut b2);
    assert_eq!(b2, [0, 0], "ignored reads return zeroes");
    let mut b4 = [0xaau8; 4];
    e.t.read(0x2, &mut b4);
    e.t.read(0x0f8, &mut b4);
    let mut b8 = [0u8; 8];
    e.t.read(0x0, &mut b8);
    assert_eq!(e.t.metrics().missed_read_count.count(), 4);
    e.t.write(VIRTIO_MMIO_STATUS.into(), &[1]);
    e.t.write(0x71, &[1, 0, 0, 0]);
    e.t.write(VIRTIO_MMIO_MAGIC_VALUE.into(), &[0, 0, 0, 0]);
    assert_eq!(e.t.metrics().missed_write_count.count(), 3);
    assert_eq!(rd32(&mut e.t, VIRTIO_MMIO_STATUS), 0);
}

#[test]
fn test_config_space_passthrough_any_width() {
    let mut e = env();
    let mut b = [0u8; 2];
    e.t.read(0x102, &mut b);
    assert_eq!(b, [3, 4]);
    let mut b8 = [0u8; 8];
    e.t.read(0x100, &mut b8);
    assert_eq!(b8, [1, 2, 3, 4, 5, 6, 7, 8]);
    let mut past = [0xffu8; 4];
    e.t.read(0x106, &mut past);
    assert_eq!(past, [0; 4], "out-of-range config reads are zero");
    // Config writes need DRIVER.
    e.t.write(0x100, &[9]);
    assert_eq!(e.dev.lock().unwrap().config[0], 1);
    wr32(&mut e.t, VIRTIO_MMIO_STATUS, ACKNOWLEDGE);
    wr32(&mut e.t, VIRTIO_MMIO_STATUS, ACKNOWLEDGE | DRIVER);
    e.t.write(0x100, &[9]);
    assert_eq!(e.dev.lock().unwrap().config[0], 9);
}

proptest! {
    #[test]
    fn prop_random_register_traffic_never_panics(
        ops in proptest::collection::vec(
            (any::<bool>(), 0u64..0x1000, 1usize..=8, any::<u32>()), 0..200),
    ) {
        let mut e = env();
        for (is_write, off, len, v) in ops {
            // Bias towards register offsets so the state machine is exercised.
            let off = if off % 3 == 0 { off & 0xfc } else { off };
            let len = if off % 2 == 0 { 4 } else { len };
            let mut data = vec![0u8; len];
            if is_write {
                let bytes = v.to_le_bytes();
                for (i, d) in data.iter_mut().enumerate() {
                    *d = bytes[i % 4];
                }
                e.t.write(off, &data);
            } else {
                e.t.read(off, &mut data);
            }
        }
        let s = rd32(&mut e.t, VIRTIO_MMIO_STATUS);
        prop_assert_eq!(s & DRIVER_OK != 0, e.dev.lock().unwrap().is_activated());
    }
}

#[test]
fn test_persist_round_trip_reactivates_with_saved_queues() {
    let mut e = env();
    init(&mut e, features::bit(features::VERSION_1) | FEAT_X);
    assert!(e.dev.lock().unwrap().is_activated());
    e.dev.lock().unwrap().queues[0].set_next_avail(3);
    e.dev.lock().unwrap().queues[0].set_next_used(2);
    wr32(&mut e.t, VIRTIO_MMIO_QUEUE_SEL, 1);
    let saved = e.t.save();
    assert_eq!(saved.active_queues.len(), 2);
    assert_eq!(saved.active_queues[0].next_avail, 3);
    let json = serde_json::to_string(&saved).unwrap();
    let saved: super::persist::MmioTransportState = serde_json::from_str(&json).unwrap();

    let dev = Arc::new(Mutex::new(Dummy::new()));
    let irq = Arc::new(CountingIrq::new());
    let mut t = MmioTransport::restore(e.mem.clone(), irq, dev.clone(), &saved).unwrap();
    assert!(dev.lock().unwrap().is_activated());
    assert_eq!(dev.lock().unwrap().queues[0].next_avail(), 3);
    assert_eq!(dev.lock().unwrap().queues[0].next_used(), 2);
    assert_eq!(t.save(), saved);
    assert_eq!(rd32(&mut t, VIRTIO_MMIO_STATUS), S_FEAT | DRIVER_OK);
    assert_eq!(
        rd32(&mut t, VIRTIO_MMIO_QUEUE_SEL),
        0,
        "QueueSel is write-only"
    );
    assert_eq!(rd32(&mut t, VIRTIO_MMIO_QUEUE_READY), 1);
}

#[test]
fn test_persist_inactive_and_bad_states() {
    let e = env();
    let saved = e.t.save();
    assert!(saved.active_queues.is_empty());
    let fresh = || Arc::new(Mutex::new(Dummy::new()));
    let irq = || Arc::new(CountingIrq::new());
    let t = MmioTransport::restore(e.mem.clone(), irq(), fresh(), &saved).unwrap();
    assert_eq!(t.save(), saved);

    let mut bad = saved.clone();
    bad.device_type = 7;
    assert!(MmioTransport::restore(e.mem.clone(), irq(), fresh(), &bad).is_err());
    let mut bad = saved.clone();
    bad.queues.pop();
    assert!(MmioTransport::restore(e.mem.clone(), irq(), fresh(), &bad).is_err());
    let mut bad = saved.clone();
    bad.queues[0].size = 1000;
    assert!(MmioTransport::restore(e.mem.clone(), irq(), fresh(), &bad).is_err());
    // Active, but the saved rings lie outside guest memory.
    let mut e2 = env();
    init(&mut e2, features::bit(features::VERSION_1));
    let mut bad = e2.t.save();
    bad.active_queues[1].desc_table = 0x10_0000;
    assert!(MmioTransport::restore(e2.mem.clone(), irq(), fresh(), &bad).is_err());
    let mut bad = e2.t.save();
    bad.active_queues.pop();
    assert!(MmioTransport::restore(e2.mem.clone(), irq(), fresh(), &bad).is_err());
}
