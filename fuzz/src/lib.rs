//! Shared driver for squib's fuzz targets: a virtio device behind its virtio-mmio transport,
//! driven the way a (hostile) guest driver would, from one fuzz input.
//!
//! [`VirtioCase`] is decoded from the input with `arbitrary`: the features the driver accepts,
//! the queue size, then a sequence of [`Op`]s. The driver first brings the device up through
//! the MMIO registers (status, features, queue addresses, `DRIVER_OK`), then each op either
//! publishes a descriptor chain (any addresses, lengths, flags; loops and out-of-memory buffers
//! included), pokes raw bytes anywhere in guest memory (rings, indices, buffers), writes a
//! queue notify and runs the device's queue handler, fires a timer or host event, writes
//! configuration space, or writes/reads any MMIO register. The device must never panic.
//!
//! Threading: one thread; every target builds a fresh device per input.

use std::sync::{Arc, Mutex, PoisonError};

use arbitrary::{Arbitrary, Unstructured};
use squib_core::GuestMemoryMmap;
use squib_devices::BusDevice;
use squib_devices::interrupt::CountingIrq;
use squib_devices::virtio::VirtioDevice;
use squib_devices::virtio::mmio::MmioTransport;
use squib_devices::virtio::status::{ACKNOWLEDGE, DRIVER, DRIVER_OK, FEATURES_OK};
use vm_memory::{Bytes, GuestAddress};

/// Guest RAM of a virtio case: 64 KiB at 0. Queues live in the first 16 KiB.
pub const RAM: usize = 0x1_0000;
/// Where the data buffers of published chains usually point.
pub const DATA: u64 = 0x4000;
const QUEUE_AREA: u64 = 0x1000;

// virtio-mmio register offsets (virtio 1.2, 4.2.2).
const REG_DEVICE_FEATURES_SEL: u64 = 0x014;
const REG_DRIVER_FEATURES: u64 = 0x020;
const REG_DRIVER_FEATURES_SEL: u64 = 0x024;
const REG_QUEUE_SEL: u64 = 0x030;
const REG_QUEUE_NUM: u64 = 0x038;
const REG_QUEUE_READY: u64 = 0x044;
const REG_QUEUE_NOTIFY: u64 = 0x050;
const REG_INTERRUPT_ACK: u64 = 0x064;
const REG_STATUS: u64 = 0x070;
const REG_DESC_LOW: u64 = 0x080;
const REG_DESC_HIGH: u64 = 0x084;
const REG_AVAIL_LOW: u64 = 0x090;
const REG_AVAIL_HIGH: u64 = 0x094;
const REG_USED_LOW: u64 = 0x0a0;
const REG_USED_HIGH: u64 = 0x0a4;
const REG_CONFIG: u64 = 0x100;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;

/// One buffer of a chain the fuzzer publishes.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct Desc {
    /// Guest address selector: mostly inside the data area, sometimes anywhere.
    pub addr: u32,
    /// Length selector.
    pub len: u16,
    /// Device-writable.
    pub write: bool,
    /// Rare: mark the descriptor `INDIRECT`.
    pub indirect: bool,
}

/// One step of a hostile driver.
#[derive(Arbitrary, Debug)]
pub enum Op {
    /// Publish a chain on queue `queue` (descriptors written to the table, head to the ring).
    Chain {
        /// Queue index (modulo the device's queue count).
        queue: u8,
        /// The chain, in order.
        descs: Vec<Desc>,
    },
    /// Write bytes into guest memory at `addr` (anywhere in RAM: data, rings, indices).
    Poke {
        /// Offset into RAM.
        addr: u16,
        /// Bytes.
        bytes: Vec<u8>,
    },
    /// `QueueNotify` for `queue`, then the device's queue handler.
    Notify {
        /// Queue index.
        queue: u8,
    },
    /// The device's timer `idx` fires.
    Timer {
        /// Timer index.
        idx: u8,
    },
    /// One of the device's host event sources fires (tap, sockets, completions).
    Host {
        /// Source index.
        idx: u8,
    },
    /// Write configuration space.
    Config {
        /// Offset into configuration space.
        offset: u8,
        /// Bytes (1..=8 are meaningful; any length is tried).
        bytes: Vec<u8>,
    },
    /// Any MMIO register write (4 bytes), including status, queue addresses and reset.
    Mmio {
        /// Register offset.
        offset: u16,
        /// Value.
        value: u32,
    },
    /// Any MMIO read of `len % 9` bytes.
    MmioRead {
        /// Register offset.
        offset: u16,
        /// Access length selector.
        len: u8,
    },
    /// Device-specific host input (tap frame, backend bytes): handed to the target's hook.
    Input(Vec<u8>),
    /// Publish a well-formed chain on `queue`: each buffer's bytes are written into the data
    /// area (device-readable) or it is a device-writable buffer of that many bytes.
    Buffers {
        /// Queue index.
        queue: u8,
        /// `(device-writable, bytes)` in chain order.
        bufs: Vec<(bool, Vec<u8>)>,
    },
}

/// A whole fuzz case for one virtio device.
#[derive(Arbitrary, Debug)]
pub struct VirtioCase {
    /// Mask applied to the offered features before the driver accepts them.
    pub feature_mask: u64,
    /// Queue size selector (a power of two up to the device's maximum).
    pub queue_size: u8,
    /// The driver's steps.
    pub ops: Vec<Op>,
}

/// The driver's view of one queue.
#[derive(Debug, Clone, Copy)]
struct DriverQueue {
    size: u16,
    desc: u64,
    avail: u64,
    next_desc: u16,
    avail_idx: u16,
}

/// Device-specific host input (`Op::Input`): a tap frame for net, a new requested size for
/// virtio-mem, ...
pub type InputHook<'a, T> = &'a mut dyn FnMut(&mut T, &[u8]);

/// Ignores `Op::Input`.
pub fn no_input<T>(_dev: &mut T, _bytes: &[u8]) {}

/// Guest memory with RAM at 0 plus `extra` regions.
#[must_use]
pub fn guest_memory(extra: &[(u64, usize)]) -> GuestMemoryMmap {
    let mut ranges = vec![(GuestAddress(0), RAM)];
    ranges.extend(extra.iter().map(|&(a, l)| (GuestAddress(a), l)));
    GuestMemoryMmap::from_ranges(&ranges).expect("guest memory")
}

fn lock<T>(dev: &Arc<Mutex<T>>) -> std::sync::MutexGuard<'_, T> {
    dev.lock().unwrap_or_else(PoisonError::into_inner)
}

fn write_reg(t: &mut MmioTransport, offset: u64, value: u32) {
    t.write(offset, &value.to_le_bytes());
}

fn addr_of(sel: u32) -> u64 {
    match sel % 16 {
        // Anywhere (mostly outside guest memory).
        0 => u64::from(sel) << 8,
        // Inside the queue structures.
        1 => u64::from(sel >> 4) % DATA,
        _ => DATA + u64::from(sel >> 4) % (RAM as u64 - DATA),
    }
}

fn len_of(sel: u16) -> u32 {
    match sel % 8 {
        0 => u32::from(sel) << 8,
        1 => u32::from(sel % 32),
        _ => u32::from(sel >> 3) % 0x2000,
    }
}

/// Runs `data` against `device` (a fresh device) with guest memory `mem`; `input` handles the
/// device-specific inputs.
pub fn run_virtio<T: VirtioDevice + 'static>(
    device: T,
    mem: &GuestMemoryMmap,
    input: InputHook<'_, T>,
    data: &[u8],
) {
    drive(device, mem, input, data, true);
}

/// Like [`run_virtio`] without the driver's bring-up: every register access (status order,
/// features, queue addresses and sizes, ready, reset) is the fuzzer's.
pub fn run_mmio_raw<T: VirtioDevice + 'static>(device: T, mem: &GuestMemoryMmap, data: &[u8]) {
    drive(device, mem, &mut no_input, data, false);
}

fn drive<T: VirtioDevice + 'static>(
    device: T,
    mem: &GuestMemoryMmap,
    input: InputHook<'_, T>,
    data: &[u8],
    bring_up: bool,
) {
    let mut u = Unstructured::new(data);
    let Ok(case) = VirtioCase::arbitrary(&mut u) else {
        return;
    };
    drive_case(device, mem, input, &case, bring_up);
}

/// Runs an already decoded `case` (for targets that build their ops from their own input
/// format, e.g. well-formed vsock packets).
pub fn run_virtio_case<T: VirtioDevice + 'static>(
    device: T,
    mem: &GuestMemoryMmap,
    input: InputHook<'_, T>,
    case: &VirtioCase,
) {
    drive_case(device, mem, input, case, true);
}

fn drive_case<T: VirtioDevice + 'static>(
    device: T,
    mem: &GuestMemoryMmap,
    input: InputHook<'_, T>,
    case: &VirtioCase,
    bring_up: bool,
) {
    let device = Arc::new(Mutex::new(device));
    let irq = Arc::new(CountingIrq::default());
    let dyn_device: Arc<Mutex<dyn VirtioDevice>> = device.clone();
    let Ok(mut t) = MmioTransport::new(mem.clone(), irq, dyn_device) else {
        return;
    };
    let max_sizes: Vec<u16> = lock(&device).queue_max_sizes().to_vec();
    let offered = lock(&device).avail_features();

    // Bring-up, as Linux's virtio-mmio driver does it.
    let queues = if bring_up {
        bring_up_device(&mut t, &max_sizes, offered, case)
    } else {
        Vec::new()
    };
    run_ops(&mut t, &device, mem, input, &max_sizes, queues, &case.ops);
    // Snapshot path: the device's state is taken while it may be mid-request.
    lock(&device).prepare_save();
}

fn bring_up_device(
    t: &mut MmioTransport,
    max_sizes: &[u16],
    offered: u64,
    case: &VirtioCase,
) -> Vec<DriverQueue> {
    write_reg(t, REG_STATUS, 0);
    write_reg(t, REG_STATUS, ACKNOWLEDGE);
    write_reg(t, REG_STATUS, ACKNOWLEDGE | DRIVER);
    let accepted = offered & case.feature_mask | (offered & (1 << 32));
    for sel in 0..2u32 {
        write_reg(t, REG_DEVICE_FEATURES_SEL, sel);
        write_reg(t, REG_DRIVER_FEATURES_SEL, sel);
        #[allow(clippy::cast_possible_truncation)]
        write_reg(t, REG_DRIVER_FEATURES, (accepted >> (32 * sel)) as u32);
    }
    write_reg(t, REG_STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    let mut queues = Vec::new();
    let per_queue = (DATA - QUEUE_AREA) / max_sizes.len().max(1) as u64;
    for (i, &max) in max_sizes.iter().enumerate() {
        let size = (1u16 << (case.queue_size % 9)).min(max.max(1));
        let desc = QUEUE_AREA + per_queue * i as u64;
        let desc = desc & !0xf;
        let avail = desc + 16 * u64::from(size);
        let used = (avail + 6 + 2 * u64::from(size) + 3) & !3;
        #[allow(clippy::cast_possible_truncation)]
        {
            write_reg(t, REG_QUEUE_SEL, i as u32);
            write_reg(t, REG_QUEUE_NUM, u32::from(size));
            write_reg(t, REG_DESC_LOW, desc as u32);
            write_reg(t, REG_DESC_HIGH, 0);
            write_reg(t, REG_AVAIL_LOW, avail as u32);
            write_reg(t, REG_AVAIL_HIGH, 0);
            write_reg(t, REG_USED_LOW, used as u32);
            write_reg(t, REG_USED_HIGH, 0);
            write_reg(t, REG_QUEUE_READY, 1);
        }
        queues.push(DriverQueue {
            size,
            desc,
            avail,
            next_desc: 0,
            avail_idx: 0,
        });
    }
    write_reg(
        t,
        REG_STATUS,
        ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
    );
    queues
}

fn run_ops<T: VirtioDevice + 'static>(
    t: &mut MmioTransport,
    device: &Arc<Mutex<T>>,
    mem: &GuestMemoryMmap,
    input: InputHook<'_, T>,
    max_sizes: &[u16],
    mut queues: Vec<DriverQueue>,
    ops: &[Op],
) {
    let mut bump = DATA;
    for op in ops.iter().take(256) {
        match op {
            Op::Chain { queue, descs } => {
                if queues.is_empty() {
                    continue;
                }
                let n = queues.len();
                let q = &mut queues[usize::from(*queue) % n];
                publish(mem, q, descs);
            }
            Op::Poke { addr, bytes } => {
                let _ = mem.write_slice(
                    &bytes[..bytes.len().min(512)],
                    GuestAddress(u64::from(*addr)),
                );
            }
            Op::Notify { queue } => {
                let n = max_sizes.len().max(1);
                let idx = usize::from(*queue) % n;
                #[allow(clippy::cast_possible_truncation)]
                write_reg(t, REG_QUEUE_NOTIFY, idx as u32);
                lock(device).process_queue_event(idx);
                let status = t.interrupt().status();
                write_reg(t, REG_INTERRUPT_ACK, status);
            }
            Op::Timer { idx } => {
                let mut d = lock(device);
                let n = d.timer_events().len();
                if n > 0 {
                    d.process_timer(usize::from(*idx) % n);
                }
            }
            Op::Host { idx } => {
                let mut d = lock(device);
                let completions = d.completion_events().len();
                let sources = d.host_event_sources();
                let total = completions + sources.len();
                if total > 0 {
                    let i = usize::from(*idx) % total;
                    if i < completions {
                        d.process_completion_event(i);
                    } else {
                        let s = &sources[i - completions];
                        d.process_host_event(s.token, s.events);
                    }
                }
                let _ = d.take_event_source_changes();
                d.event_source_changes_applied();
            }
            Op::Config { offset, bytes } => {
                t.write(
                    REG_CONFIG + u64::from(*offset),
                    &bytes[..bytes.len().min(16)],
                );
            }
            Op::Mmio { offset, value } => write_reg(t, u64::from(*offset), *value),
            Op::MmioRead { offset, len } => {
                let mut buf = [0u8; 8];
                t.read(u64::from(*offset), &mut buf[..usize::from(*len % 9)]);
            }
            Op::Input(bytes) => input(&mut lock(device), bytes),
            Op::Buffers { queue, bufs } => {
                if queues.is_empty() {
                    continue;
                }
                let n = queues.len();
                let q = &mut queues[usize::from(*queue) % n];
                let descs: Vec<(u64, u32, bool)> = bufs
                    .iter()
                    .take(16)
                    .map(|(write, bytes)| {
                        let len = bytes.len().min(0x1000);
                        if bump + len as u64 > RAM as u64 {
                            bump = DATA;
                        }
                        let at = bump;
                        bump += (len as u64).max(1);
                        if *write {
                            // A writable buffer as long as the bytes given (contents unused).
                            (at, u32::try_from(len).unwrap_or(0), true)
                        } else {
                            let _ = mem.write_slice(&bytes[..len], GuestAddress(at));
                            (at, u32::try_from(len).unwrap_or(0), false)
                        }
                    })
                    .collect();
                publish_raw(mem, q, &descs);
            }
        }
    }
}

/// Writes `descs` (fuzzer-shaped addresses and lengths) as one chain and publishes its head.
fn publish(mem: &GuestMemoryMmap, q: &mut DriverQueue, descs: &[Desc]) {
    let raw: Vec<(u64, u32, bool, bool)> = descs
        .iter()
        .map(|d| {
            (
                addr_of(d.addr),
                len_of(d.len),
                d.write,
                d.indirect && d.len % 5 == 0,
            )
        })
        .collect();
    publish_chain(mem, q, &raw);
}

/// Publishes well-formed buffers `(address, length, device-writable)` as one chain.
fn publish_raw(mem: &GuestMemoryMmap, q: &mut DriverQueue, descs: &[(u64, u32, bool)]) {
    let raw: Vec<(u64, u32, bool, bool)> =
        descs.iter().map(|&(a, l, w)| (a, l, w, false)).collect();
    publish_chain(mem, q, &raw);
}

/// Writes `(address, length, writable, indirect)` descriptors as one chain into `q`'s table
/// and publishes its head.
fn publish_chain(mem: &GuestMemoryMmap, q: &mut DriverQueue, descs: &[(u64, u32, bool, bool)]) {
    if q.size == 0 || descs.is_empty() {
        return;
    }
    let head = q.next_desc % q.size;
    let n = descs.len().min(usize::from(q.size));
    for (i, &(addr, len, write, indirect)) in descs[..n].iter().enumerate() {
        let idx = (q.next_desc % q.size, (q.next_desc.wrapping_add(1)) % q.size);
        q.next_desc = q.next_desc.wrapping_add(1);
        let mut flags = if write { F_WRITE } else { 0 };
        if i + 1 < n {
            flags |= F_NEXT;
        }
        if indirect {
            flags |= F_INDIRECT;
        }
        let at = GuestAddress(q.desc + 16 * u64::from(idx.0));
        let _ = mem.write_obj(addr, at);
        let _ = mem.write_obj(len, GuestAddress(at.0 + 8));
        let _ = mem.write_obj(flags, GuestAddress(at.0 + 12));
        let _ = mem.write_obj(idx.1, GuestAddress(at.0 + 14));
    }
    let slot = q.avail + 4 + 2 * u64::from(q.avail_idx % q.size);
    let _ = mem.write_obj(head, GuestAddress(slot));
    q.avail_idx = q.avail_idx.wrapping_add(1);
    let _ = mem.write_obj(q.avail_idx, GuestAddress(q.avail + 2));
}

/// A temporary file of `len` bytes (`0x5a`), created once per process and kept.
#[must_use]
pub fn scratch_file(tag: &str, len: usize) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("squib-fuzz-{}-{tag}", std::process::id()));
    if !path.exists() {
        std::fs::write(&path, vec![0x5au8; len]).expect("scratch file");
    }
    path
}
