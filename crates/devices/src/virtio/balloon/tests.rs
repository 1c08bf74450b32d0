//! virtio-balloon tests: a mock driver on every queue, memory actually given back, statistics,
//! hinting, reporting, host-side updates and persistence.

use std::sync::{Arc, Mutex};

use squib_config::schemas::balloon::{BalloonHintingStatus, BalloonStats};
use squib_core::GuestMemoryMmap;
use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::persist::Persist;
use crate::virtio::test_utils::{RecordingInterrupt, TestQueue, guest_memory, rd, wr};
use crate::virtio::{InterruptKind, VirtioDevice, features};

pub(super) const MEM: usize = 4 << 20;
/// Queue structures live in the first 32 KiB (one 4 KiB page per queue).
pub(super) const DATA: u64 = 0x8000;

pub(super) struct H {
    pub(super) mem: GuestMemoryMmap,
    pub(super) qs: Vec<TestQueue>,
    pub(super) dev: Balloon,
    pub(super) irq: Arc<RecordingInterrupt>,
    pub(super) seen: Arc<Mutex<Vec<BalloonStatus>>>,
}

pub(super) fn all_features() -> BalloonConfig {
    BalloonConfig {
        amount_mib: 1,
        deflate_on_oom: true,
        stats_polling_interval_s: 1,
        free_page_hinting: true,
        free_page_reporting: true,
    }
}

impl H {
    pub(super) fn new(cfg: BalloonConfig) -> Self {
        Self::with_memory(cfg, MEM)
    }

    pub(super) fn with_memory(cfg: BalloonConfig, size: usize) -> Self {
        let mem = guest_memory(size);
        let mut dev = Balloon::new(cfg).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = Arc::clone(&seen);
        dev.set_status_sink(Arc::new(move |s| s2.lock().unwrap().push(s)));
        let n = dev.queue_max_sizes().len();
        let qs: Vec<TestQueue> = (0..n)
            .map(|i| TestQueue::new(&mem, 0x1000 * i as u64, 16))
            .collect();
        let irq = RecordingInterrupt::new();
        dev.activate(
            mem.clone(),
            irq.clone(),
            qs.iter().map(TestQueue::create_queue).collect(),
        )
        .unwrap();
        Self {
            mem,
            qs,
            dev,
            irq,
            seen,
        }
    }

    pub(super) fn kick(&mut self, q: usize) {
        self.dev.queue_events()[q].write(1).unwrap();
        self.dev.process_queue_event(q);
    }

    fn fill(&self, addr: u64, len: usize, byte: u8) {
        self.mem
            .write_slice(&vec![byte; len], GuestAddress(addr))
            .unwrap();
    }

    fn bytes(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    fn write_u32s(&self, addr: u64, vals: &[u32]) {
        let b: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.mem.write_slice(&b, GuestAddress(addr)).unwrap();
    }

    fn last_stats(&self) -> Option<BalloonStats> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find_map(|s| match s {
                BalloonStatus::Stats(s) => Some((**s).clone()),
                BalloonStatus::Hinting(_) => None,
            })
    }
}

fn stat(tag: u16, val: u64) -> Vec<u8> {
    let mut v = tag.to_le_bytes().to_vec();
    v.extend_from_slice(&val.to_le_bytes());
    v
}

#[test]
fn test_identity_features_and_queues_follow_the_configuration() {
    let dev = Balloon::new(BalloonConfig::default()).unwrap();
    assert_eq!(dev.device_type(), 5);
    assert_eq!(dev.queue_max_sizes(), &[256, 256]);
    assert_eq!(dev.avail_features(), features::bit(features::VERSION_1));
    let dev = Balloon::new(all_features()).unwrap();
    assert_eq!(dev.queue_max_sizes().len(), 5);
    assert_eq!(
        dev.avail_features(),
        (1 << 32) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 5)
    );
    let dev = Balloon::new(BalloonConfig {
        free_page_reporting: true,
        ..BalloonConfig::default()
    })
    .unwrap();
    assert_eq!(dev.role(2), Some(device::Role::Reporting));
    assert_eq!(dev.role(3), None);
    assert!(matches!(
        Balloon::new(BalloonConfig {
            amount_mib: 1 << 24,
            ..BalloonConfig::default()
        }),
        Err(BalloonError::TooMuchMemoryRequested(_))
    ));
}

#[test]
fn test_config_space_reports_target_and_accepts_only_actual() {
    let mut h = H::new(BalloonConfig {
        amount_mib: 16,
        ..BalloonConfig::default()
    });
    let mut b = [0u8; 12];
    h.dev.read_config(0, &mut b);
    assert_eq!(&b[0..4], &(16u32 * 256).to_le_bytes());
    h.dev.write_config(4, &77u32.to_le_bytes());
    h.dev.write_config(0, &1u32.to_le_bytes());
    h.dev.write_config(8, &5u32.to_le_bytes());
    h.dev.write_config(5, &[1, 2, 3, 4]);
    h.dev.read_config(0, &mut b);
    assert_eq!(&b[0..4], &(16u32 * 256).to_le_bytes(), "target unchanged");
    assert_eq!(&b[4..8], &77u32.to_le_bytes());
    assert_eq!(&b[8..12], &0u32.to_le_bytes());
    let mut far = [0xeeu8; 4];
    h.dev.read_config(10, &mut far);
    assert_eq!(far, [0xee; 4], "straddling read copies nothing");
    assert_eq!(h.dev.actual_pages(), 77);
}

#[test]
fn test_inflate_releases_exactly_the_named_pages() {
    let mut h = H::new(BalloonConfig::default());
    let base = 0x10_0000u64;
    h.fill(base, 16 * 4096, 0xab);
    // Pages 1, 2, 3 and 7 (unsorted, one duplicate), plus one outside guest memory.
    let pfn = |i: u64| u32::try_from((base >> 12) + i).unwrap();
    h.write_u32s(DATA, &[pfn(3), pfn(1), pfn(2), pfn(7), pfn(2), 0xffff_0000]);
    h.qs[0].add_chain(&[rd(DATA, 24)]);
    h.kick(0);
    assert_eq!(h.qs[0].used_idx(), 1);
    assert_eq!(h.qs[0].used_elem(0).1, 0);
    assert_eq!(h.irq.kinds(), vec![InterruptKind::Queue(0)]);
    for i in 0..16u64 {
        let page = h.bytes(base + i * 4096, 4096);
        let released = [1, 2, 3, 7].contains(&i);
        assert!(
            page.iter().all(|&b| b == if released { 0 } else { 0xab }),
            "page {i}"
        );
    }
    assert_eq!(h.dev.metrics().inflate_count.count(), 1);
    assert_eq!(
        h.dev.metrics().event_fails.count(),
        1,
        "the PFN outside memory"
    );
}

#[test]
fn test_inflate_skips_bogus_buffers_and_deflate_acknowledges() {
    let mut h = H::new(BalloonConfig::default());
    h.fill(0x20_0000, 4096, 0x11);
    h.write_u32s(DATA, &[0x200; 300]);
    // Too long (300 PFNs), not a multiple of 4, and device-writable: nothing released.
    h.qs[0].add_chain(&[rd(DATA, 1200)]);
    h.qs[0].add_chain(&[rd(DATA, 6)]);
    h.qs[0].add_chain(&[wr(DATA, 4)]);
    h.kick(0);
    assert_eq!(h.qs[0].used_idx(), 3);
    assert!(h.bytes(0x20_0000, 4096).iter().all(|&b| b == 0x11));
    assert_eq!(h.dev.metrics().event_fails.count(), 3);
    h.qs[1].add_chain(&[rd(DATA, 4)]);
    h.kick(1);
    assert_eq!(h.qs[1].used_idx(), 1);
    assert_eq!(h.dev.metrics().deflate_count.count(), 1);
}

#[test]
fn test_statistics_are_parsed_held_and_returned_on_demand() {
    let mut h = H::new(all_features());
    let mut buf = stat(4, 1000);
    buf.extend(stat(5, 5000));
    buf.extend(stat(99, 1)); // unknown tag
    buf.extend(stat(10, 3));
    h.mem.write_slice(&buf, GuestAddress(DATA)).unwrap();
    h.qs[2].add_chain(&[rd(DATA, u32::try_from(buf.len()).unwrap())]);
    h.kick(2);
    assert_eq!(h.qs[2].used_idx(), 0, "the buffer is held");
    let s = h.dev.latest_stats().unwrap();
    assert_eq!(
        (s.free_memory, s.total_memory, s.oom_kill),
        (Some(1000), Some(5000), Some(3))
    );
    assert_eq!((s.target_pages, s.target_mib), (256, 1));
    assert_eq!(h.last_stats(), Some(s));
    assert_eq!(h.dev.metrics().stats_update_fails.count(), 1);
    // A new interval asks for fresh numbers: the held buffer comes back.
    h.dev.update_stats_polling_interval(3).unwrap();
    assert_eq!(h.qs[2].used_idx(), 1);
    assert_eq!(
        h.dev.update_stats_polling_interval(0),
        Err(BalloonError::StatisticsStateChange)
    );
    // A timer that has not expired is a no-op (and never blocks).
    h.dev.process_timer(0);
    assert_eq!(h.qs[2].used_idx(), 1);
    // The driver writes `actual`: published with the stats.
    h.dev.write_config(4, &512u32.to_le_bytes());
    let s = h.last_stats().unwrap();
    assert_eq!((s.actual_pages, s.actual_mib), (512, 2));
}

#[test]
fn test_second_stats_buffer_returns_the_first_and_oversized_is_held_unparsed() {
    let mut h = H::new(all_features());
    let big = vec![0u8; (MAX_STATS_TAGS * STAT_SIZE + 10) as usize];
    h.mem.write_slice(&big, GuestAddress(DATA)).unwrap();
    let first = h.qs[2].add_chain(&[rd(DATA, 10)]);
    h.qs[2].add_chain(&[rd(DATA, u32::try_from(big.len()).unwrap())]);
    h.kick(2);
    assert_eq!(h.qs[2].used_idx(), 1);
    assert_eq!(h.qs[2].used_elem(0).0, u32::from(first));
    assert_eq!(h.dev.stats_desc, Some(1));
    assert_eq!(h.dev.metrics().stats_update_fails.count(), 1);
}

/// Linux primes the stats queue in probe, before `DRIVER_OK`: that notification must not be
/// lost, or every statistics poll finds no buffer ("missing descriptor").
#[test]
fn test_stats_buffer_posted_before_activation_is_taken_at_activation() {
    let mem = guest_memory(MEM);
    let mut dev = Balloon::new(all_features()).unwrap();
    let mut qs: Vec<TestQueue> = (0..dev.queue_max_sizes().len())
        .map(|i| TestQueue::new(&mem, 0x1000 * i as u64, 16))
        .collect();
    let mut stats = stat(0, 7);
    stats.extend(stat(4, 4096));
    mem.write_slice(&stats, GuestAddress(DATA)).unwrap();
    qs[2].add_chain(&[rd(DATA, 20)]);
    dev.queue_events()[2].write(1).unwrap();
    dev.process_queue_event(2); // inactive: remembered, not processed
    assert_eq!(dev.stats_desc, None);
    let irq = RecordingInterrupt::new();
    let queues = qs.iter().map(TestQueue::create_queue).collect();
    dev.activate(mem.clone(), irq, queues).unwrap();
    assert_eq!(dev.queue_events()[2].read().unwrap(), 1, "replayed");
    assert!(
        dev.queue_events()[0].read().is_err(),
        "only what was notified"
    );
    dev.process_queue_event(2);
    assert_eq!(dev.stats_desc, Some(0));
    assert_eq!(dev.latest_stats().unwrap().free_memory, Some(4096));
}

#[test]
fn test_statistics_disabled_is_an_error() {
    let h = H::new(BalloonConfig::default());
    assert_eq!(h.dev.latest_stats(), Err(BalloonError::StatisticsDisabled));
    assert!(h.last_stats().is_none(), "nothing published without stats");
}

#[test]
fn test_update_size_checks_activation_and_memory() {
    let mut dev = Balloon::new(BalloonConfig::default()).unwrap();
    assert_eq!(dev.update_size(1), Err(BalloonError::DeviceNotActive));
    let mut h = H::new(all_features());
    assert_eq!(
        h.dev.update_size(5),
        Err(BalloonError::TooMuchMemoryRequested(5))
    );
    h.dev.update_size(3).unwrap();
    assert_eq!(h.dev.num_pages(), 768);
    assert_eq!(h.dev.config().amount_mib, 3);
    assert_eq!(h.irq.kinds().last(), Some(&InterruptKind::Config));
    assert_eq!(h.last_stats().unwrap().target_mib, 3);
}

#[test]
fn test_free_page_hinting_run() {
    let mut h = H::new(all_features());
    assert_eq!(
        Balloon::new(BalloonConfig::default())
            .unwrap()
            .start_hinting(true),
        Err(BalloonError::HintingNotEnabled)
    );
    h.dev.start_hinting(true).unwrap();
    let mut b = [0u8; 4];
    h.dev.read_config(8, &mut b);
    assert_eq!(u32::from_le_bytes(b), 2);
    assert_eq!(h.irq.kinds().last(), Some(&InterruptKind::Config));
    let page = 0x30_0000u64;
    h.fill(page, 0x2000, 0x5a);
    h.write_u32s(DATA, &[2]);
    h.qs[3].add_chain(&[rd(DATA, 4)]);
    h.qs[3].add_chain(&[wr(page, 0x1000)]);
    h.kick(3);
    assert_eq!(h.qs[3].used_idx(), 2);
    assert!(h.bytes(page, 0x1000).iter().all(|&x| x == 0));
    assert!(h.bytes(page + 0x1000, 0x1000).iter().all(|&x| x == 0x5a));
    assert_eq!(
        h.dev.hinting_status().unwrap(),
        BalloonHintingStatus {
            host_cmd: 2,
            guest_cmd: Some(2)
        }
    );
    // The guest reports STOP: acknowledged with DONE.
    h.write_u32s(DATA, &[FREE_PAGE_HINT_STOP]);
    h.qs[3].add_chain(&[rd(DATA, 4)]);
    h.kick(3);
    assert_eq!(
        h.dev.hinting_status().unwrap().host_cmd,
        FREE_PAGE_HINT_DONE
    );
    // Hints after DONE are stale and ignored.
    h.qs[3].add_chain(&[wr(page + 0x1000, 0x1000)]);
    h.kick(3);
    assert!(h.bytes(page + 0x1000, 0x1000).iter().all(|&x| x == 0x5a));
    h.dev.start_hinting(false).unwrap();
    h.dev.stop_hinting().unwrap();
    assert_eq!(
        h.dev.hinting_status().unwrap().host_cmd,
        FREE_PAGE_HINT_DONE
    );
    assert!(
        h.seen
            .lock()
            .unwrap()
            .iter()
            .any(|s| matches!(s, BalloonStatus::Hinting(_)))
    );
}

#[test]
fn test_free_page_reporting_releases_ranges() {
    let mut h = H::new(all_features());
    h.fill(0x20_0000, 0x4000, 0x77);
    h.qs[4].add_chain(&[
        wr(0x20_0000, 0x2000),
        wr(0x20_3000, 0x1000),
        wr(0x3f_ffff, 2),
    ]);
    h.kick(4);
    assert_eq!(h.qs[4].used_idx(), 1);
    assert!(h.bytes(0x20_0000, 0x2000).iter().all(|&x| x == 0));
    assert!(h.bytes(0x20_2000, 0x1000).iter().all(|&x| x == 0x77));
    assert!(h.bytes(0x20_3000, 0x1000).iter().all(|&x| x == 0));
    let m = h.dev.metrics();
    assert_eq!(m.free_page_report_count.count(), 3);
    assert_eq!(m.free_page_report_freed.count(), 0x3000);
    assert_eq!(m.free_page_report_fails.count(), 1);
}

#[test]
fn test_persist_round_trip() {
    let mut h = H::new(all_features());
    h.mem.write_slice(&stat(4, 42), GuestAddress(DATA)).unwrap();
    h.qs[2].add_chain(&[rd(DATA, 10)]);
    h.kick(2);
    h.dev.write_config(4, &256u32.to_le_bytes());
    h.dev.start_hinting(true).unwrap();
    let state = h.dev.save();
    let json = serde_json::to_string(&state).unwrap();
    let back: BalloonState = serde_json::from_str(&json).unwrap();
    let mut dev = Balloon::restore((), &back).unwrap();
    assert_eq!(dev.save(), state);
    assert_eq!(dev.num_pages(), 256);
    let mut b = [0u8; 12];
    dev.read_config(0, &mut b);
    assert_eq!(&b[8..12], &FREE_PAGE_HINT_DONE.to_le_bytes());
    dev.activate(
        h.mem.clone(),
        RecordingInterrupt::new(),
        h.qs.iter().map(TestQueue::create_queue).collect(),
    )
    .unwrap();
    let s = dev.latest_stats().unwrap();
    assert_eq!((s.free_memory, s.actual_pages), (Some(42), 256));
    assert_eq!(dev.stats_desc, Some(0), "held buffer survives activation");
    let bad = BalloonState {
        stats_desc: Some(MAX_QUEUE_SIZE_U16),
        ..state
    };
    assert!(Balloon::restore((), &bad).is_err());
}

const MAX_QUEUE_SIZE_U16: u16 = crate::virtio::MAX_QUEUE_SIZE;

#[test]
fn test_reset_forgets_the_driver() {
    let mut h = H::new(all_features());
    h.dev.write_config(4, &9u32.to_le_bytes());
    h.dev.reset();
    assert!(!h.dev.is_activated());
    assert_eq!(h.dev.actual_pages(), 0);
    assert!(h.dev.queues().is_empty());
    // Inactive: queue events are drained and ignored.
    h.qs[0].add_chain(&[rd(DATA, 4)]);
    h.kick(0);
    assert_eq!(h.qs[0].used_idx(), 0);
    assert_eq!(
        h.dev
            .activate(h.mem.clone(), h.irq.clone(), vec![])
            .unwrap_err()
            .to_string(),
        "expected 5 queues, got 0"
    );
}

#[test]
fn test_helpers() {
    assert_eq!(compact_pfns(&mut []), vec![]);
    assert_eq!(
        compact_pfns(&mut [5, 1, 2, 2, 3, 9, u32::MAX]),
        vec![(1, 3), (5, 1), (9, 1), (u32::MAX, 1)]
    );
    assert_eq!(mib_to_pages(16), Some(4096));
    assert_eq!(mib_to_pages(1 << 24), None);
    assert_eq!(pages_to_mib(511), 1);
    let mut s = BalloonStats::default();
    assert_eq!(parse_stats(&[0u8; 9], &mut s), 0, "partial entry ignored");
    assert_eq!(parse_pfns(&[1, 0, 0, 0, 2]), vec![1]);
}
