//! virtio-blk device tests: a mock driver builds requests in guest memory, the device runs them
//! against a temporary file.
//!
//! Most tests run once per I/O engine ([`ENGINES`]). With `Async` the harness pumps completions
//! the way the event loop does: wait (at most 10 s, a liveness guard rather than a timing
//! assertion) for the ring's eventfd, then call `process_completion_event`, until nothing is in
//! flight and the eventfd is quiet. Completions may arrive in any order, so used-ring entries are
//! looked up by head index where a batch mixes requests.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use squib_core::GuestMemoryMmap;
use virtio_bindings::virtio_blk::{VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO};
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::tempfile::TempFile;

use super::async_io::{AsyncEngine, InFlight, Op};
use super::device::{completion_status, engine_error};
use super::request::{S_IOERR, S_OK, S_UNSUPP, T_FLUSH, T_GET_ID, T_IN, T_OUT};
use super::*;
use crate::log::RateLimitedLog;
use crate::rate_limiter::{BucketUpdate, FakeClock, TokenBucket};
use crate::virtio::test_utils::{
    Buf, F_INDIRECT, F_NEXT, F_WRITE, RecordingInterrupt, TestQueue, guest_memory, rd, wr,
};
use crate::virtio::{InterruptKind, VirtioDevice, features};

const MEM: usize = 0x4_0000;
const HDR: u64 = 0x1000;
const STATUS: u64 = 0x2000;
const DATA: u64 = 0x1_0000;
const SECTORS: u64 = 16;
/// Both engines, for the tests that hold for each.
const ENGINES: [IoEngine; 2] = [IoEngine::Sync, IoEngine::Async];

/// Byte `i` of the initial disk image.
fn pattern(i: u64) -> u8 {
    u8::try_from((i / 512 * 7 + i) % 251).unwrap()
}

fn disk_file(sectors: u64) -> TempFile {
    let tmp = TempFile::new().unwrap();
    let bytes: Vec<u8> = (0..sectors * 512).map(pattern).collect();
    tmp.as_file().write_all(&bytes).unwrap();
    tmp
}

fn file_bytes(tmp: &TempFile, offset: u64, len: usize) -> Vec<u8> {
    let mut f = tmp.as_file();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut v = vec![0u8; len];
    f.read_exact(&mut v).unwrap();
    v
}

/// Whether `evt` becomes readable within `timeout_ms`.
fn readable(evt: &impl AsRawFd, timeout_ms: i32) -> bool {
    let epoll = Epoll::new().unwrap();
    epoll
        .ctl(
            ControlOperation::Add,
            evt.as_raw_fd(),
            EpollEvent::new(EventSet::IN, 0),
        )
        .unwrap();
    let mut events = [EpollEvent::default(); 1];
    loop {
        // io_uring's task work (completions run on the submitting thread) interrupts epoll_wait
        // with EINTR, exactly as it does the VMM's event loop, which retries too.
        match epoll.wait(timeout_ms, &mut events) {
            Ok(n) => return n > 0,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("epoll_wait: {e}"),
        }
    }
}

/// Runs the device's completion events like the event loop would, until nothing is in flight and
/// no completion is pending. A no-op for `Sync`.
pub(super) fn pump(dev: &mut Block) {
    for _ in 0..100_000 {
        let Some(evt) = dev.completion_events().first() else {
            return;
        };
        let timeout = if dev.in_flight() > 0 { 10_000 } else { 0 };
        if !readable(evt, timeout) {
            assert_eq!(dev.in_flight(), 0, "no io_uring completion within 10 s");
            return;
        }
        dev.process_completion_event(0);
    }
    panic!("completions never settle");
}

fn config(tmp: &TempFile) -> BlockConfig {
    BlockConfig {
        id: "rootfs".into(),
        path: tmp.as_path().to_path_buf(),
        read_only: false,
        root: true,
        partuuid: None,
        cache_type: CacheType::Writeback,
        io_engine: IoEngine::Sync,
        rate_limiter: RateLimiter::default(),
    }
}

struct H {
    mem: GuestMemoryMmap,
    q: TestQueue,
    dev: Block,
    irq: Arc<RecordingInterrupt>,
    tmp: TempFile,
    slot: u64,
    engine: IoEngine,
    /// Head index of the last chain `submit` published.
    last_head: u16,
}

impl H {
    fn with(cfg: impl FnOnce(&mut BlockConfig)) -> Self {
        Self::engine_with(IoEngine::Sync, cfg)
    }

    fn engine(engine: IoEngine) -> Self {
        Self::engine_with(engine, |_| {})
    }

    fn engine_with(engine: IoEngine, cfg: impl FnOnce(&mut BlockConfig)) -> Self {
        let tmp = disk_file(SECTORS);
        let mut c = config(&tmp);
        c.io_engine = engine;
        cfg(&mut c);
        let mem = guest_memory(MEM);
        let q = TestQueue::new(&mem, 0, 64);
        let mut dev = Block::new(c).unwrap();
        let irq = RecordingInterrupt::new();
        dev.activate(mem.clone(), irq.clone(), vec![q.create_queue()])
            .unwrap();
        Self {
            mem,
            q,
            dev,
            irq,
            tmp,
            slot: 0,
            engine,
            last_head: 0,
        }
    }

    fn new() -> Self {
        Self::with(|_| {})
    }

    /// Writes a header in a fresh slot; returns (header addr, status addr).
    fn header(&mut self, t: u32, sector: u64) -> (u64, u64) {
        let h = HDR + self.slot * 16;
        let s = STATUS + self.slot;
        self.slot += 1;
        self.mem.write_obj(t, GuestAddress(h)).unwrap();
        self.mem.write_obj(0u32, GuestAddress(h + 4)).unwrap();
        self.mem.write_obj(sector, GuestAddress(h + 8)).unwrap();
        self.mem.write_obj(0xffu8, GuestAddress(s)).unwrap();
        (h, s)
    }

    /// Publishes header + `data` + status; returns the status address.
    fn submit(&mut self, t: u32, sector: u64, data: &[Buf]) -> u64 {
        let (h, s) = self.header(t, sector);
        let mut bufs = vec![rd(h, 16)];
        bufs.extend_from_slice(data);
        bufs.push(wr(s, 1));
        self.last_head = self.q.add_chain(&bufs);
        s
    }

    /// Notifies the queue and lets the device finish everything it took.
    fn run(&mut self) {
        self.dev.queue_events()[0].write(1).unwrap();
        self.dev.process_queue_event(0);
        self.pump();
    }

    fn pump(&mut self) {
        pump(&mut self.dev);
    }

    /// The used length the device returned chain `head` with.
    fn used_len_of(&self, head: u16) -> u32 {
        (0..self.q.used_idx())
            .map(|i| self.q.used_elem(i))
            .find(|&(id, _)| id == u32::from(head))
            .unwrap_or_else(|| panic!("chain {head} not used"))
            .1
    }

    fn status(&self, s: u64) -> u8 {
        self.mem.read_obj(GuestAddress(s)).unwrap()
    }

    fn bytes(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    fn m(&self) -> &BlockMetrics {
        self.dev.metrics()
    }
}

#[test]
fn test_features_follow_cache_type_and_read_only() {
    let h = H::new();
    let f = h.dev.avail_features();
    assert_ne!(f & features::bit(features::VERSION_1), 0);
    assert_ne!(f & features::bit(features::RING_EVENT_IDX), 0);
    assert_ne!(f & features::bit(VIRTIO_BLK_F_FLUSH), 0);
    assert_eq!(f & features::bit(VIRTIO_BLK_F_RO), 0);
    let h = H::with(|c| {
        c.read_only = true;
        c.cache_type = CacheType::Unsafe;
    });
    let f = h.dev.avail_features();
    assert_eq!(f & features::bit(VIRTIO_BLK_F_FLUSH), 0);
    assert_ne!(f & features::bit(VIRTIO_BLK_F_RO), 0);
    assert_eq!(h.dev.device_type(), 2);
    assert_eq!(h.dev.queue_max_sizes(), &[256]);
    assert!(h.dev.is_read_only());
    assert_eq!((h.dev.id(), h.dev.is_root()), ("rootfs", true));
}

#[test]
fn test_async_engine_creates_a_ring_and_a_completion_event() {
    let tmp = disk_file(1);
    let dev = Block::new(config(&tmp)).unwrap();
    assert_eq!(dev.io_engine(), IoEngine::Sync);
    assert!(dev.completion_events().is_empty());
    let mut c = config(&tmp);
    c.io_engine = IoEngine::Async;
    let dev = Block::new(c).unwrap();
    assert_eq!(dev.io_engine(), IoEngine::Async);
    assert_eq!(dev.completion_events().len(), 1);
    assert_eq!(dev.in_flight(), 0);
}

#[test]
fn test_engine_creation_errors_use_firecracker_texts() {
    let unsupported = [libc_errno::ENOSYS, libc_errno::EPERM];
    for errno in unsupported {
        let err = engine_error(std::io::Error::from_raw_os_error(errno));
        assert_eq!(
            err.to_string(),
            "Error coming from the IO engine: Unsupported engine type: Async"
        );
    }
    let missing_op = std::io::Error::new(std::io::ErrorKind::Unsupported, "no IORING_OP_READV");
    assert!(matches!(
        engine_error(missing_op),
        BlockError::UnsupportedEngine(IoEngine::Async)
    ));
    let err = engine_error(std::io::Error::other("Error calling io_uring_setup: boom"));
    assert_eq!(
        err.to_string(),
        "Error coming from the IO engine: Async error: IoUring: Error calling io_uring_setup: boom"
    );
}

/// The few errno values the tests need (this crate does not link libc).
mod libc_errno {
    pub const EPERM: i32 = 1;
    pub const EIO: i32 = 5;
    pub const ENOSYS: i32 = 38;
}

#[test]
fn test_completion_status_checks_result_against_the_request() {
    let m = BlockMetrics::new();
    let log = RateLimitedLog::default();
    let f = |op, result| {
        let done = InFlight {
            head: 0,
            status: GuestAddress(0),
            op,
            start: std::time::Instant::now(),
        };
        completion_status(&done, result, &m, &log)
    };
    assert_eq!(f(Op::Read(1024), 1024), (S_OK, 1025));
    assert_eq!(f(Op::Read(1024), 512), (S_IOERR, 1), "short read");
    assert_eq!(f(Op::Read(1024), -libc_errno::EIO), (S_IOERR, 1));
    assert_eq!(f(Op::Write(512), 512), (S_OK, 1));
    assert_eq!(f(Op::Write(512), 0), (S_IOERR, 1), "short write");
    assert_eq!(f(Op::Flush, 0), (S_OK, 1));
    assert_eq!(f(Op::Flush, -libc_errno::EIO), (S_IOERR, 1));
    assert_eq!(m.execute_fails.count(), 4);
    assert_eq!((m.read_bytes.count(), m.read_count.count()), (1024, 1));
    assert_eq!((m.write_bytes.count(), m.write_count.count()), (512, 1));
}

#[test]
fn test_config_space_is_capacity() {
    let mut h = H::new();
    let mut b = [0u8; 8];
    h.dev.read_config(0, &mut b);
    assert_eq!(u64::from_le_bytes(b), SECTORS);
    let mut b4 = [0u8; 4];
    h.dev.read_config(4, &mut b4);
    assert_eq!(b4, [0; 4]);
    let mut past = [0xaau8; 4];
    h.dev.read_config(6, &mut past);
    assert_eq!(past, [0xaa; 4], "out of range: untouched");
    h.dev.write_config(0, &[1, 2, 3, 4]);
    assert_eq!(h.m().cfg_fails.count(), 2);
    assert_eq!(h.dev.capacity(), SECTORS);
}

#[test]
fn test_read_returns_file_contents() {
    for engine in ENGINES {
        let mut h = H::engine(engine);
        let s = h.submit(T_IN, 1, &[wr(DATA, 1024)]);
        h.run();
        assert_eq!(h.status(s), S_OK, "{engine:?}");
        let want: Vec<u8> = (512..1536).map(pattern).collect();
        assert_eq!(h.bytes(DATA, 1024), want);
        assert_eq!(h.q.used_idx(), 1);
        assert_eq!(h.q.used_elem(0), (0, 1025));
        assert_eq!(h.irq.kinds(), vec![InterruptKind::Queue(0)]);
        assert_eq!(
            (h.m().read_bytes.count(), h.m().read_count.count()),
            (1024, 1)
        );
        assert_eq!(h.m().queue_event_count.count(), 1);
        assert_eq!(h.dev.in_flight(), 0);
    }
}

#[test]
fn test_scattered_read_and_write() {
    for engine in ENGINES {
        let mut h = H::engine(engine);
        // Data split across three descriptors, the last one sharing its buffer with the status.
        let (hd, _) = h.header(T_IN, 2);
        h.q.add_chain(&[
            rd(hd, 16),
            wr(DATA, 100),
            wr(DATA + 0x1000, 412),
            wr(DATA + 0x2000, 513),
        ]);
        h.run();
        assert_eq!(h.bytes(DATA + 0x2000 + 512, 1), vec![S_OK]);
        let want: Vec<u8> = (1024..1024 + 1024).map(pattern).collect();
        let mut got = h.bytes(DATA, 100);
        got.extend(h.bytes(DATA + 0x1000, 412));
        got.extend(h.bytes(DATA + 0x2000, 512));
        assert_eq!(got, want);

        h.mem.write_slice(&[0x5a; 300], GuestAddress(DATA)).unwrap();
        h.mem
            .write_slice(&[0xa5; 212], GuestAddress(DATA + 0x3000))
            .unwrap();
        let s = h.submit(T_OUT, 3, &[rd(DATA, 300), rd(DATA + 0x3000, 212)]);
        h.run();
        assert_eq!(h.status(s), S_OK);
        let mut want = vec![0x5a; 300];
        want.extend([0xa5; 212]);
        assert_eq!(file_bytes(&h.tmp, 3 * 512, 512), want);
    }
}

#[test]
fn test_write_then_read_back() {
    for engine in ENGINES {
        let mut h = H::engine(engine);
        h.mem
            .write_slice(&[0x42; 1024], GuestAddress(DATA))
            .unwrap();
        let s1 = h.submit(T_OUT, 14, &[rd(DATA, 1024)]);
        if engine == IoEngine::Async {
            // In-flight requests are unordered (as on real hardware): a read of sectors being
            // written waits for the write's completion, like a guest driver would.
            h.run();
        }
        let s2 = h.submit(T_IN, 14, &[wr(DATA + 0x1000, 1024)]);
        h.run();
        assert_eq!((h.status(s1), h.status(s2)), (S_OK, S_OK), "{engine:?}");
        assert_eq!(h.bytes(DATA + 0x1000, 1024), vec![0x42; 1024]);
        assert_eq!(file_bytes(&h.tmp, 14 * 512, 1024), vec![0x42; 1024]);
        assert_eq!(h.q.used_elem(0), (0, 1));
        assert_eq!(h.q.used_elem(1).1, 1025);
        assert_eq!(
            (h.m().write_bytes.count(), h.m().write_count.count()),
            (1024, 1)
        );
        if engine == IoEngine::Sync {
            assert_eq!(h.irq.count(), 1, "one interrupt per batch");
        }
    }
}

#[test]
fn test_async_batch_is_completed_in_any_order_with_one_submission() {
    let mut h = H::engine(IoEngine::Async);
    let mut heads = Vec::new();
    let mut statuses = Vec::new();
    for i in 0..8u64 {
        statuses.push(h.submit(T_IN, i, &[wr(DATA + i * 0x1000, 1024)]));
        heads.push(h.last_head);
    }
    h.run();
    assert_eq!(h.q.used_idx(), 8);
    for (i, (&s, &head)) in statuses.iter().zip(&heads).enumerate() {
        let i = i as u64;
        assert_eq!(h.status(s), S_OK);
        assert_eq!(h.used_len_of(head), 1025);
        let want: Vec<u8> = (i * 512..i * 512 + 1024).map(pattern).collect();
        assert_eq!(h.bytes(DATA + i * 0x1000, 1024), want);
    }
    assert!(h.irq.count() >= 1);
    assert_eq!(h.m().read_count.count(), 8);
}

#[test]
fn test_flush_get_id_and_unsupported() {
    for engine in ENGINES {
        for cache in [CacheType::Writeback, CacheType::Unsafe] {
            let mut h = H::engine_with(engine, |c| c.cache_type = cache);
            h.mem.write_slice(&[9; 512], GuestAddress(DATA)).unwrap();
            let write = h.submit(T_OUT, 2, &[rd(DATA, 512)]);
            let flush = h.submit(T_FLUSH, 0, &[]);
            let flush_head = h.last_head;
            let get_id = h.submit(T_GET_ID, 0, &[wr(DATA + 0x1000, 20)]);
            let id_head = h.last_head;
            let unsupp = h.submit(77, 0, &[]);
            h.run();
            assert_eq!(
                (h.status(write), h.status(flush)),
                (S_OK, S_OK),
                "{engine:?}"
            );
            assert_eq!(h.used_len_of(flush_head), 1);
            assert_eq!(h.status(get_id), S_OK);
            assert_eq!(&h.bytes(DATA + 0x1000, 20)[..7], b"rootfs\0");
            assert_eq!(h.used_len_of(id_head), 21);
            assert_eq!(h.status(unsupp), S_UNSUPP);
            assert_eq!(h.m().flush_count.count(), 1);
            assert_eq!(file_bytes(&h.tmp, 1024, 512), vec![9; 512]);
        }
    }
}

#[test]
fn test_write_to_read_only_disk_is_ioerr_and_file_unchanged() {
    for engine in ENGINES {
        let mut h = H::engine_with(engine, |c| c.read_only = true);
        h.mem.write_slice(&[0; 512], GuestAddress(DATA)).unwrap();
        let s = h.submit(T_OUT, 0, &[rd(DATA, 512)]);
        let r = h.submit(T_IN, 0, &[wr(DATA + 0x1000, 512)]);
        h.run();
        assert_eq!(h.status(s), S_IOERR);
        assert_eq!(h.status(r), S_OK, "reads still work");
        assert_eq!(
            file_bytes(&h.tmp, 0, 512),
            (0..512).map(pattern).collect::<Vec<_>>()
        );
        assert_eq!(h.q.used_elem(0), (0, 1));
        assert_eq!(h.m().invalid_reqs_count.count(), 1);
    }
}

#[test]
fn test_out_of_range_and_bad_lengths_are_ioerr() {
    for engine in ENGINES {
        let mut h = H::engine(engine);
        let past_end = h.submit(T_IN, SECTORS, &[wr(DATA, 512)]);
        let straddle = h.submit(T_IN, SECTORS - 1, &[wr(DATA, 1024)]);
        let overflow = h.submit(T_OUT, u64::MAX, &[rd(DATA, 512)]);
        let short = h.submit(T_IN, 0, &[wr(DATA, 511)]);
        let short_id = h.submit(T_GET_ID, 0, &[wr(DATA, 8)]);
        let ok = h.submit(T_IN, SECTORS - 1, &[wr(DATA, 512)]);
        h.run();
        for s in [past_end, straddle, overflow, short, short_id] {
            assert_eq!(h.status(s), S_IOERR);
        }
        assert_eq!(h.status(ok), S_OK);
        assert_eq!(h.m().invalid_reqs_count.count(), 5);
        assert_eq!(h.q.used_idx(), 6);
    }
}

#[test]
fn test_wrong_directions_are_ioerr() {
    for engine in ENGINES {
        let mut h = H::engine(engine);
        let a = h.submit(T_IN, 0, &[rd(DATA, 512)]);
        let b = h.submit(T_OUT, 0, &[wr(DATA, 512)]);
        // Readable after writable.
        let (hd, s) = h.header(T_IN, 0);
        h.q.add_chain(&[rd(hd, 16), wr(s, 1), rd(DATA, 512)]);
        h.run();
        assert_eq!(h.status(a), S_IOERR);
        assert_eq!(h.status(b), S_IOERR);
        assert_eq!(
            h.status(s),
            S_IOERR,
            "the last writable byte takes the status"
        );
        assert_eq!(h.m().invalid_reqs_count.count(), 3);
        assert_eq!(
            file_bytes(&h.tmp, 0, 16),
            (0..16).map(pattern).collect::<Vec<_>>()
        );
    }
}

#[test]
fn test_missing_status_and_short_header_complete_without_status() {
    for engine in ENGINES {
        let mut h = H::engine(engine);
        let (hd, s) = h.header(T_IN, 0);
        h.q.add_chain(&[rd(hd, 16), wr(DATA, 512)]);
        h.q.add_chain(&[rd(hd, 16)]);
        h.q.add_chain(&[rd(hd, 8), wr(s, 1)]);
        h.run();
        assert_eq!(h.q.used_idx(), 3);
        // The first chain's "status" is its last writable byte.
        assert_eq!(h.bytes(DATA + 511, 1), vec![S_IOERR]);
        assert_eq!(h.q.used_elem(1).1, 0);
        assert_eq!(h.status(s), S_IOERR);
    }
}

#[test]
fn test_descriptor_loop_and_bad_addresses_never_panic() {
    for engine in ENGINES {
        let mut h = H::engine(engine);
        let (hd, s) = h.header(T_IN, 0);
        // 0 -> 1 -> 0 -> ... never terminates.
        h.q.write_desc(0, hd, 16, F_NEXT, 1);
        h.q.write_desc(1, DATA, 512, F_NEXT | F_WRITE, 0);
        h.q.publish(0);
        // Buffers outside guest memory.
        h.q.write_desc(2, hd, 16, F_NEXT, 3);
        h.q.write_desc(3, u64::MAX - 10, 512, F_NEXT | F_WRITE, 4);
        h.q.write_desc(4, s, 1, F_WRITE, 0);
        h.q.publish(2);
        h.q.write_desc(5, hd, 16, F_NEXT, 6);
        h.q.write_desc(6, MEM as u64 - 256, 512, F_NEXT | F_WRITE, 7);
        h.q.write_desc(7, s + 1, 1, F_WRITE, 0);
        h.q.publish(5);
        // Next index out of range.
        h.q.write_desc(8, hd, 16, F_NEXT, 200);
        h.q.publish(8);
        // Head index out of range: nothing to return.
        h.q.publish(99);
        h.run();
        assert_eq!(h.q.used_idx(), 4);
        assert_eq!(h.q.used_elem(0), (0, 0));
        assert_eq!((h.status(s), h.status(s + 1)), (S_IOERR, S_IOERR));
        assert_eq!(h.q.used_elem(3), (8, 0));
        assert_eq!(h.m().invalid_reqs_count.count(), 5);
    }
}

#[test]
fn test_broken_avail_index_is_counted_not_processed() {
    for engine in ENGINES {
        let mut h = H::engine(engine);
        h.submit(T_IN, 0, &[wr(DATA, 512)]);
        h.q.set_avail_idx(100);
        h.run();
        assert_eq!(h.q.used_idx(), 0);
        assert_eq!(h.m().event_fails.count(), 1);
        assert_eq!(h.irq.count(), 0);
    }
}

#[test]
fn test_indirect_chain_is_followed() {
    for engine in ENGINES {
        let mut h = H::engine(engine);
        let (hd, s) = h.header(T_IN, 0);
        let table = 0x3000;
        let it = TestQueue::new(&h.mem, table, 4);
        it.write_desc(0, hd, 16, F_NEXT, 1);
        it.write_desc(1, DATA, 512, F_NEXT | F_WRITE, 2);
        it.write_desc(2, s, 1, F_WRITE, 0);
        h.q.write_desc(0, table, 48, F_INDIRECT, 0);
        h.q.publish(0);
        h.run();
        assert_eq!(h.status(s), S_OK);
        assert_eq!(h.q.used_elem(0), (0, 513));
    }
}

#[test]
fn test_event_idx_suppresses_interrupts() {
    for engine in ENGINES {
        let mut h = H::engine(engine);
        let mut q = h.q.create_queue();
        q.set_event_idx(true);
        h.dev.reset();
        h.dev
            .activate(h.mem.clone(), h.irq.clone(), vec![q])
            .unwrap();
        // The driver wants an interrupt only after used index 5.
        h.q.set_used_event(5);
        h.submit(T_IN, 0, &[wr(DATA, 512)]);
        h.run();
        assert_eq!(h.q.used_idx(), 1);
        assert_eq!(h.irq.count(), 0);
        h.q.set_used_event(1);
        h.submit(T_IN, 0, &[wr(DATA, 512)]);
        h.run();
        assert_eq!(h.irq.count(), 1);
    }
}

fn limited(h: &mut H, clock: &FakeClock, bytes: Option<u64>, ops: Option<u64>) {
    let c: Arc<FakeClock> = Arc::new(clock.clone());
    let bw = bytes.and_then(|b| TokenBucket::with_clock(b, 0, 1000, c.clone()));
    let op = ops.and_then(|o| TokenBucket::with_clock(o, 0, 1000, c.clone()));
    let tmp = disk_file(SECTORS);
    let mut cfg = config(&tmp);
    cfg.rate_limiter = RateLimiter::with_clock(bw, op, c);
    cfg.io_engine = h.engine;
    h.dev = Block::new(cfg).unwrap();
    h.tmp = tmp;
    h.dev
        .activate(h.mem.clone(), h.irq.clone(), vec![h.q.create_queue()])
        .unwrap();
}

#[test]
fn test_ops_rate_limiter_blocks_then_timer_resumes() {
    for engine in ENGINES {
        let mut h = H::engine(engine);
        let clock = FakeClock::new();
        limited(&mut h, &clock, None, Some(2));
        let s: Vec<u64> = (0..3)
            .map(|_| h.submit(T_IN, 0, &[wr(DATA, 512)]))
            .collect();
        h.run();
        assert_eq!(h.q.used_idx(), 2);
        assert_eq!(h.status(s[2]), 0xff);
        assert_eq!(h.m().rate_limiter_throttled_events.count(), 1);
        assert!(h.dev.rate_limiter().is_blocked());
        assert_eq!(h.dev.timer_events().len(), 1);
        assert!(h.dev.timer_events()[0].is_armed().unwrap());
        // A notification while blocked does not process.
        h.run();
        assert_eq!(h.q.used_idx(), 2);
        clock.advance(Duration::from_millis(500));
        h.dev.process_timer(0);
        h.pump();
        assert_eq!(h.q.used_idx(), 3);
        assert_eq!(h.status(s[2]), S_OK);
        assert_eq!(h.m().rate_limiter_event_count.count(), 1);
        assert!(!h.dev.rate_limiter().is_blocked());
    }
}

#[test]
fn test_bandwidth_rate_limiter_counts_data_bytes() {
    for engine in ENGINES {
        let mut h = H::engine(engine);
        let clock = FakeClock::new();
        limited(&mut h, &clock, Some(1024), None);
        for _ in 0..3 {
            h.submit(T_IN, 0, &[wr(DATA, 512)]);
        }
        h.run();
        assert_eq!(h.q.used_idx(), 2);
        clock.advance(Duration::from_millis(500));
        h.dev.process_timer(0);
        h.pump();
        assert_eq!(h.q.used_idx(), 3);
        // A spurious timer is counted, not fatal.
        h.dev.process_timer(0);
        assert_eq!(h.m().event_fails.count(), 1);
    }
}

#[test]
fn test_update_rate_limiter() {
    for engine in ENGINES {
        let mut h = H::engine(engine);
        let clock = FakeClock::new();
        limited(&mut h, &clock, None, Some(1));
        let c: Arc<FakeClock> = Arc::new(clock.clone());
        h.dev.update_rate_limiter(
            BucketUpdate::None,
            BucketUpdate::Update(TokenBucket::with_clock(100, 0, 1000, c).unwrap()),
        );
        assert_eq!(h.dev.rate_limiter().ops().unwrap().capacity(), 100);
        h.dev
            .update_rate_limiter(BucketUpdate::None, BucketUpdate::Disabled);
        assert!(h.dev.rate_limiter().ops().is_none());
        for _ in 0..5 {
            h.submit(T_IN, 0, &[wr(DATA, 512)]);
        }
        h.run();
        assert_eq!(h.q.used_idx(), 5);
    }
}

#[test]
fn test_update_disk_changes_capacity_and_interrupts() {
    for engine in ENGINES {
        let mut h = H::engine(engine);
        let bigger = disk_file(64);
        h.dev.update_disk(bigger.as_path()).unwrap();
        assert_eq!(h.dev.capacity(), 64);
        assert_eq!(h.dev.config_generation(), 1);
        let mut b = [0u8; 8];
        h.dev.read_config(0, &mut b);
        assert_eq!(u64::from_le_bytes(b), 64);
        assert_eq!(h.irq.kinds(), vec![InterruptKind::Config]);
        assert_eq!(h.m().update_count.count(), 1);
        assert_eq!(h.dev.path(), bigger.as_path());
        // Reads now come from the new file, past the old end.
        let s = h.submit(T_IN, 40, &[wr(DATA, 512)]);
        h.run();
        assert_eq!(h.status(s), S_OK);
        // A bad path keeps the current disk.
        assert!(
            h.dev
                .update_disk(std::path::Path::new("/nonexistent"))
                .is_err()
        );
        assert_eq!(h.dev.capacity(), 64);
        assert_eq!(h.m().update_fails.count(), 1);
    }
}

#[test]
fn test_update_disk_while_inactive_does_not_interrupt() {
    let tmp = disk_file(2);
    let mut dev = Block::new(config(&tmp)).unwrap();
    let other = disk_file(4);
    dev.update_disk(other.as_path()).unwrap();
    assert_eq!(dev.capacity(), 4);
}

#[test]
fn test_reset_and_inactive_device_ignore_notifications() {
    for engine in ENGINES {
        let mut h = H::engine(engine);
        h.dev.reset();
        assert!(!h.dev.is_activated());
        let s = h.submit(T_IN, 0, &[wr(DATA, 512)]);
        h.run();
        assert_eq!(h.status(s), 0xff);
        assert_eq!(h.q.used_idx(), 0);
        // Re-activation picks the request up.
        h.dev
            .activate(h.mem.clone(), h.irq.clone(), vec![h.q.create_queue()])
            .unwrap();
        h.run();
        assert_eq!(h.status(s), S_OK);
    }
}

#[test]
fn test_activate_rejects_wrong_queue_count_and_double_activation() {
    let mut h = H::new();
    assert!(matches!(
        h.dev
            .activate(h.mem.clone(), h.irq.clone(), vec![h.q.create_queue()]),
        Err(crate::virtio::ActivateError::AlreadyActive)
    ));
    h.dev.reset();
    assert!(
        h.dev
            .activate(h.mem.clone(), h.irq.clone(), vec![])
            .is_err()
    );
    assert_eq!(h.m().activate_fails.count(), 2);
}

/// The whole path a guest takes: registers through the bus, a notify write, the event loop.
#[test]
fn test_through_mmio_transport_and_event_manager() {
    through_mmio_transport_and_event_manager(IoEngine::Sync);
}

/// The same with io_uring: the generic subscriber also registers the completion eventfd.
#[test]
fn test_async_through_mmio_transport_and_event_manager() {
    through_mmio_transport_and_event_manager(IoEngine::Async);
}

fn through_mmio_transport_and_event_manager(engine: IoEngine) {
    use event_manager::{EventManager, SubscriberOps};
    use virtio_bindings::virtio_mmio::*;

    use crate::bus::BusDevice;
    use crate::interrupt::CountingIrq;
    use crate::virtio::status::{ACKNOWLEDGE, DRIVER, DRIVER_OK, FEATURES_OK};
    use crate::virtio::{MmioTransport, VirtioSubscriber};

    let tmp = disk_file(SECTORS);
    let mem = guest_memory(MEM);
    let mut cfg = config(&tmp);
    cfg.io_engine = engine;
    let block = Arc::new(Mutex::new(Block::new(cfg).unwrap()));
    let irq = Arc::new(CountingIrq::new());
    let mut tr = MmioTransport::new(mem.clone(), irq.clone(), block.clone()).unwrap();
    let mut em = EventManager::<VirtioSubscriber<Block>>::new().unwrap();
    em.add_subscriber(VirtioSubscriber::new(block.clone()));

    let wreg = |tr: &mut MmioTransport, off: u32, v: u32| tr.write(off.into(), &v.to_le_bytes());
    let rreg = |tr: &mut MmioTransport, off: u32| {
        let mut b = [0u8; 4];
        tr.read(off.into(), &mut b);
        u32::from_le_bytes(b)
    };
    assert_eq!(rreg(&mut tr, VIRTIO_MMIO_DEVICE_ID), 2);
    wreg(&mut tr, VIRTIO_MMIO_STATUS, ACKNOWLEDGE);
    wreg(&mut tr, VIRTIO_MMIO_STATUS, ACKNOWLEDGE | DRIVER);
    wreg(&mut tr, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    let hi = rreg(&mut tr, VIRTIO_MMIO_DEVICE_FEATURES);
    wreg(&mut tr, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    wreg(&mut tr, VIRTIO_MMIO_DRIVER_FEATURES, hi);
    wreg(
        &mut tr,
        VIRTIO_MMIO_STATUS,
        ACKNOWLEDGE | DRIVER | FEATURES_OK,
    );
    let q = TestQueue::new(&mem, 0, 64);
    wreg(&mut tr, VIRTIO_MMIO_QUEUE_SEL, 0);
    wreg(&mut tr, VIRTIO_MMIO_QUEUE_NUM, 64);
    wreg(&mut tr, VIRTIO_MMIO_QUEUE_DESC_LOW, 0);
    wreg(
        &mut tr,
        VIRTIO_MMIO_QUEUE_AVAIL_LOW,
        u32::try_from(q.avail_addr().0).unwrap(),
    );
    wreg(
        &mut tr,
        VIRTIO_MMIO_QUEUE_USED_LOW,
        u32::try_from(q.used_addr().0).unwrap(),
    );
    wreg(&mut tr, VIRTIO_MMIO_QUEUE_READY, 1);
    wreg(
        &mut tr,
        VIRTIO_MMIO_STATUS,
        ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
    );
    assert_eq!(rreg(&mut tr, VIRTIO_MMIO_STATUS) & DRIVER_OK, DRIVER_OK);
    // Capacity through config space.
    let mut cap = [0u8; 8];
    tr.read(0x100, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), SECTORS);

    let mut h = H {
        mem: mem.clone(),
        q,
        dev: Block::new(config(&tmp)).unwrap(),
        irq: RecordingInterrupt::new(),
        tmp,
        slot: 0,
        engine,
        last_head: 0,
    };
    let s = h.submit(T_IN, 3, &[wr(DATA, 512)]);
    wreg(&mut tr, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    // Dispatches the queue eventfd to the device (blocks until it is readable), then, with
    // io_uring, the completion eventfd if the read did not finish inline.
    assert_eq!(em.run_with_timeout(10_000).unwrap(), 1);
    for _ in 0..100 {
        if h.status(s) == S_OK {
            break;
        }
        em.run_with_timeout(10_000).unwrap();
    }
    assert_eq!(h.status(s), S_OK);
    assert_eq!(
        h.bytes(DATA, 512),
        (1536..2048).map(pattern).collect::<Vec<_>>()
    );
    assert_eq!(rreg(&mut tr, VIRTIO_MMIO_INTERRUPT_STATUS), 1);
    assert_eq!(irq.count(), 1);
    wreg(&mut tr, VIRTIO_MMIO_INTERRUPT_ACK, 1);
    assert_eq!(rreg(&mut tr, VIRTIO_MMIO_INTERRUPT_STATUS), 0);
    // A config update is seen through the transport.
    let bigger = disk_file(32);
    block.lock().unwrap().update_disk(bigger.as_path()).unwrap();
    assert_eq!(rreg(&mut tr, VIRTIO_MMIO_CONFIG_GENERATION), 1);
    assert_eq!(rreg(&mut tr, VIRTIO_MMIO_INTERRUPT_STATUS), 2);
    tr.read(0x100, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), 32);
}

/// Writes `n` read requests of one sector each (sector `i`, buffer `DATA + i * 0x1000`).
fn reads(h: &mut H, n: u64) -> Vec<u64> {
    (0..n)
        .map(|i| h.submit(T_IN, i, &[wr(DATA + i * 0x1000, 512)]))
        .collect()
}

#[test]
fn test_async_full_engine_stops_draining_until_a_completion() {
    let mut h = H::engine(IoEngine::Async);
    *h.dev.engine_mut() = Some(AsyncEngine::new(2).unwrap());
    h.dev.engine_mut().as_mut().unwrap().hold = true;
    let s = reads(&mut h, 5);
    h.dev.process_queue_event(0);
    // Two requests held in flight; the third found the table full and went back on the ring.
    assert_eq!(h.dev.in_flight(), 2);
    assert_eq!(h.q.used_idx(), 0);
    assert_eq!(h.m().io_engine_throttled_events.count(), 1);
    assert_eq!(h.m().rate_limiter_throttled_events.count(), 0);
    // A notification while the engine is full changes nothing but the counter.
    h.dev.process_queue_event(0);
    assert_eq!(h.dev.in_flight(), 2);
    // Let the kernel have them: the completion event completes them and resumes the queue.
    h.dev.engine_mut().as_mut().unwrap().hold = false;
    h.dev.process_completion_event(0);
    h.pump();
    assert_eq!(h.q.used_idx(), 5);
    for (i, &st) in s.iter().enumerate() {
        assert_eq!(h.status(st), S_OK);
        let want: Vec<u8> = (i as u64 * 512..(i as u64 + 1) * 512)
            .map(pattern)
            .collect();
        assert_eq!(h.bytes(DATA + i as u64 * 0x1000, 512), want);
    }
    assert!(h.m().io_engine_throttled_events.count() >= 2);
}

#[test]
fn test_async_full_engine_does_not_charge_the_rate_limiter() {
    let mut h = H::engine(IoEngine::Async);
    let clock = FakeClock::new();
    limited(&mut h, &clock, None, Some(2));
    *h.dev.engine_mut() = Some(AsyncEngine::new(1).unwrap());
    h.dev.engine_mut().as_mut().unwrap().hold = true;
    reads(&mut h, 3);
    h.dev.process_queue_event(0);
    // One op charged and held; the second chain is refused by the engine before the limiter.
    assert_eq!(h.dev.rate_limiter().ops().unwrap().budget(), 1);
    h.dev.engine_mut().as_mut().unwrap().hold = false;
    h.dev.process_completion_event(0);
    h.pump();
    // The second request took the last op; the third waits for the limiter's timer.
    assert_eq!(h.q.used_idx(), 2);
    assert_eq!(h.m().rate_limiter_throttled_events.count(), 1);
    clock.advance(Duration::from_secs(1));
    h.dev.process_timer(0);
    h.pump();
    assert_eq!(h.q.used_idx(), 3);
}

#[test]
fn test_async_reset_waits_for_in_flight_requests_and_discards_them() {
    let mut h = H::engine(IoEngine::Async);
    h.dev.engine_mut().as_mut().unwrap().hold = true;
    let s = reads(&mut h, 3);
    h.dev.process_queue_event(0);
    assert_eq!(h.dev.in_flight(), 3);
    h.dev.reset();
    // The kernel finished with the buffers before reset returned; nothing was completed.
    assert_eq!(h.dev.in_flight(), 0);
    assert_eq!(h.m().remaining_reqs_count.count(), 3);
    assert_eq!(h.q.used_idx(), 0);
    for (i, &st) in s.iter().enumerate() {
        assert_eq!(h.status(st), 0xff, "no status after reset");
        let want: Vec<u8> = (i as u64 * 512..(i as u64 + 1) * 512)
            .map(pattern)
            .collect();
        assert_eq!(h.bytes(DATA + i as u64 * 0x1000, 512), want);
    }
    // Stale completion events are harmless.
    h.dev.process_completion_event(0);
    // The driver starts over; the engine works as before.
    h.dev.engine_mut().as_mut().unwrap().hold = false;
    h.dev
        .activate(h.mem.clone(), h.irq.clone(), vec![h.q.create_queue()])
        .unwrap();
    h.run();
    assert_eq!(h.q.used_idx(), 3);
    assert!(s.iter().all(|&st| h.status(st) == S_OK));
}

#[test]
fn test_async_disk_update_completes_in_flight_requests_first() {
    let mut h = H::engine(IoEngine::Async);
    h.dev.engine_mut().as_mut().unwrap().hold = true;
    h.mem.write_slice(&[0x77; 512], GuestAddress(DATA)).unwrap();
    let w = h.submit(T_OUT, 1, &[rd(DATA, 512)]);
    h.dev.process_queue_event(0);
    assert_eq!(h.dev.in_flight(), 1);
    h.dev.engine_mut().as_mut().unwrap().hold = false;
    let other = disk_file(SECTORS);
    h.dev.update_disk(other.as_path()).unwrap();
    assert_eq!(h.dev.in_flight(), 0);
    assert_eq!(h.status(w), S_OK);
    assert_eq!(h.q.used_elem(0), (0, 1));
    // The write went to the old file, the one the request was issued against.
    assert_eq!(file_bytes(&h.tmp, 512, 512), vec![0x77; 512]);
    assert_eq!(
        file_bytes(&other, 512, 512),
        (512..1024).map(pattern).collect::<Vec<_>>()
    );
}

#[test]
fn test_async_dropping_a_device_with_requests_in_flight_waits_for_them() {
    let mut h = H::engine(IoEngine::Async);
    h.dev.engine_mut().as_mut().unwrap().hold = true;
    reads(&mut h, 4);
    h.dev.process_queue_event(0);
    assert_eq!(h.dev.in_flight(), 4);
    let H { dev, mem, .. } = h;
    drop(dev);
    drop(mem);
}

#[test]
fn test_truncated_backing_file_reads_are_ioerr() {
    for engine in ENGINES {
        let mut h = H::engine(engine);
        // The capacity was taken at open; the file shrinks behind the device's back.
        h.tmp.as_file().set_len(4 * 512).unwrap();
        let ok = h.submit(T_IN, 3, &[wr(DATA, 512)]);
        let past = h.submit(T_IN, 4, &[wr(DATA + 0x1000, 512)]);
        let straddle = h.submit(T_IN, 3, &[wr(DATA + 0x2000, 1024)]);
        h.run();
        assert_eq!(h.status(ok), S_OK, "{engine:?}");
        assert_eq!((h.status(past), h.status(straddle)), (S_IOERR, S_IOERR));
        assert_eq!(h.m().execute_fails.count(), 2);
        assert_eq!(h.m().invalid_reqs_count.count(), 0);
    }
}

/// Reads `ops` random 4 KiB blocks of `path` (of `blocks` blocks) through a fresh device, `depth`
/// requests per queue notification; returns IOPS. Completions are handled as the event loop
/// would: pumped while any are in flight, then one more completion event for the eventfd
/// wake-up that inline completions leave behind.
fn random_read_iops(
    engine: IoEngine,
    path: &std::path::Path,
    blocks: u64,
    depth: u64,
    ops: u64,
) -> f64 {
    let mut h = H::engine_with(engine, |c| c.path = path.to_path_buf());
    let mut x = 0x5eed_u64 ^ depth;
    let batches = ops / depth;
    let start = std::time::Instant::now();
    for _ in 0..batches {
        h.slot = 0;
        for i in 0..depth {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let sector = ((x >> 16) % blocks) * 8;
            h.submit(T_IN, sector, &[wr(DATA + i * 0x1000, 4096)]);
        }
        h.dev.queue_events()[0].write(1).unwrap();
        h.dev.process_queue_event(0);
        if h.dev.in_flight() > 0 {
            h.pump();
        } else if engine == IoEngine::Async {
            h.dev.process_completion_event(0);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(h.m().execute_fails.count(), 0);
    assert_eq!(h.m().read_count.count(), batches * depth);
    #[expect(clippy::cast_precision_loss, reason = "a printed rate")]
    let iops = (batches * depth) as f64 / secs;
    iops
}

/// Drops `path`'s pages from the page cache (GNU dd's `nocache`; this crate has no libc).
fn evict(path: &std::path::Path) {
    let of = format!("of={}", path.display());
    let ok = std::process::Command::new("dd")
        .args([
            of.as_str(),
            "oflag=nocache",
            "conv=notrunc,fdatasync",
            "count=0",
        ])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "dd nocache failed");
}

/// Not a test: device-only 4 KiB random-read IOPS per engine at queue depth 1 and 16, no guest
/// and no event loop, on a 256 MiB file in the page cache (hot) and evicted from it before each
/// run (cold). Prints, asserts nothing about speed. Run: `cargo test -p squib-devices --release
/// --lib -- --ignored bench_engines --nocapture`.
#[test]
#[ignore = "a measurement, not a test"]
fn bench_engines_random_4k_reads() {
    let big = TempFile::new_in(std::path::Path::new("/var/tmp")).unwrap();
    let chunk: Vec<u8> = (0..1u32 << 20).map(|i| (i % 253) as u8).collect();
    for _ in 0..256 {
        big.as_file().write_all(&chunk).unwrap();
    }
    big.as_file().sync_all().unwrap();
    let blocks = (256u64 << 20) / 4096;
    for (label, cold) in [("hot", false), ("cold", true)] {
        let ops = if cold { 2048 } else { 32_768 };
        for depth in [1u64, 16] {
            for engine in ENGINES {
                if cold {
                    evict(big.as_path());
                }
                let iops = random_read_iops(engine, big.as_path(), blocks, depth, ops);
                println!(
                    "{label:<4} {engine:<5?} depth {depth:>2}: {iops:>9.0} IOPS ({:>7.1} MiB/s)",
                    iops / 256.0
                );
            }
        }
    }
}
