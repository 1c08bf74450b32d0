//! The virtio-mmio transport (virtio 1.x §4.2, modern register layout, `Version` 2).
//!
//! [`MmioTransport`] is the [`BusDevice`] for one 4 KiB MMIO slot ([`MMIO_SLOT_SIZE`]); the VMM
//! maps one per device at `0xC000_1000 + n × 4 KiB` with GSI `5 + n` and announces it with
//! `virtio_mmio.device=4K@0x<base>:<gsi>`. It owns:
//!
//! - feature negotiation: `DeviceFeatures`/`DriverFeatures` with their 32-bit page selectors;
//!   `FEATURES_OK` is refused (the bit does not stick) unless the driver accepted
//!   `VIRTIO_F_VERSION_1`, and feature bits the device did not offer are dropped;
//! - the queue configuration registers, accepted only between `FEATURES_OK` and `DRIVER_OK`;
//! - the device status state machine; on `DRIVER_OK` it builds `virtio_queue::Queue`s, validates
//!   them against guest memory (`QueueT::is_valid`) and activates the device. A queue that is not
//!   ready, has an invalid size or lies outside guest memory, or a device that refuses to
//!   activate, gives `DEVICE_NEEDS_RESET` plus a configuration interrupt, never a panic;
//!   writing 0 resets the device and every register;
//! - the interrupt status register, shared with the device as an [`MmioInterrupt`]
//!   ([`VirtioInterrupt`]) over an edge-triggered [`IrqLine`]: bit 0 = used buffer, bit 1 =
//!   configuration change, cleared by `InterruptACK`;
//! - `QueueNotify`: signals the device's queue eventfd (see the module docs of
//!   [`virtio`](super) for why this is the same path as the KVM ioeventfd).
//!
//! Registers take aligned 32-bit accesses; configuration space (from offset 0x100) takes any
//! width. Everything else is ignored and counted in [`MmioTransportMetrics`]. `VendorID` is 0, as
//! in Firecracker.
//!
//! Threading: the transport lives behind the bus mutex (vCPU threads); it locks the device for
//! configuration-space accesses, activation and reset. Queue notifications use cloned eventfds
//! and the interrupt status is an atomic, so neither takes the device lock.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Serialize;
use squib_core::GuestMemoryMmap;
use virtio_bindings::virtio_mmio::{
    VIRTIO_MMIO_CONFIG, VIRTIO_MMIO_CONFIG_GENERATION, VIRTIO_MMIO_DEVICE_FEATURES,
    VIRTIO_MMIO_DEVICE_FEATURES_SEL, VIRTIO_MMIO_DEVICE_ID, VIRTIO_MMIO_DRIVER_FEATURES,
    VIRTIO_MMIO_DRIVER_FEATURES_SEL, VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING,
    VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INTERRUPT_STATUS, VIRTIO_MMIO_MAGIC_VALUE,
    VIRTIO_MMIO_QUEUE_AVAIL_HIGH, VIRTIO_MMIO_QUEUE_AVAIL_LOW, VIRTIO_MMIO_QUEUE_DESC_HIGH,
    VIRTIO_MMIO_QUEUE_DESC_LOW, VIRTIO_MMIO_QUEUE_NOTIFY, VIRTIO_MMIO_QUEUE_NUM,
    VIRTIO_MMIO_QUEUE_NUM_MAX, VIRTIO_MMIO_QUEUE_READY, VIRTIO_MMIO_QUEUE_SEL,
    VIRTIO_MMIO_QUEUE_USED_HIGH, VIRTIO_MMIO_QUEUE_USED_LOW, VIRTIO_MMIO_SHM_BASE_HIGH,
    VIRTIO_MMIO_SHM_BASE_LOW, VIRTIO_MMIO_SHM_LEN_HIGH, VIRTIO_MMIO_SHM_LEN_LOW,
    VIRTIO_MMIO_SHM_SEL, VIRTIO_MMIO_STATUS, VIRTIO_MMIO_VENDOR_ID, VIRTIO_MMIO_VERSION,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryBackend};
use vmm_sys_util::eventfd::EventFd;

use super::status::{ACKNOWLEDGE, DEVICE_NEEDS_RESET, DRIVER, DRIVER_OK, FAILED, FEATURES_OK};
use super::{InterruptKind, VirtioDevice, VirtioInterrupt, features};
use crate::bus::BusDevice;
use crate::interrupt::IrqLine;
use crate::log::RateLimitedLog;
use crate::metrics::Counter;
use crate::{rl_error, rl_warn};

/// Size of one virtio-mmio slot.
pub const MMIO_SLOT_SIZE: u64 = 0x1000;
/// `MagicValue`: "virt" in little-endian.
pub const MMIO_MAGIC: u32 = 0x7472_6976;
/// `Version` of the modern (virtio 1.x) register layout.
pub const MMIO_VERSION: u32 = 2;
/// `VendorID` (Firecracker reports 0).
pub const MMIO_VENDOR_ID: u32 = 0;

/// Interrupt status bit: the device used buffers.
pub const INT_VRING: u32 = VIRTIO_MMIO_INT_VRING;
/// Interrupt status bit: the configuration space changed.
pub const INT_CONFIG: u32 = VIRTIO_MMIO_INT_CONFIG;

const CONFIG_START: u64 = VIRTIO_MMIO_CONFIG as u64;

/// Counters of one transport (squib-only; Firecracker has no such group).
#[derive(Debug, Default, Serialize)]
pub struct MmioTransportMetrics {
    /// Reads with a bad width, alignment or offset.
    pub missed_read_count: Counter,
    /// Writes with a bad width, alignment or offset, or to a read-only register.
    pub missed_write_count: Counter,
    /// Writes the current device status does not allow (bad status transitions, features
    /// after `FEATURES_OK`, queue setup after `DRIVER_OK`, unknown feature pages, ...).
    pub invalid_driver_writes: Counter,
    /// `DRIVER_OK` writes that ended in `DEVICE_NEEDS_RESET`.
    pub activate_fails: Counter,
    /// `QueueNotify` writes for a queue that does not exist, or that could not be signalled.
    pub notify_fails: Counter,
    /// Device resets (status 0 writes).
    pub reset_count: Counter,
}

/// The interrupt status register plus the line it raises; the device's [`VirtioInterrupt`].
pub struct MmioInterrupt {
    status: AtomicU32,
    irq: Arc<dyn IrqLine>,
}

impl fmt::Debug for MmioInterrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MmioInterrupt")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl MmioInterrupt {
    /// A status register at 0 that raises `irq`.
    pub fn new(irq: Arc<dyn IrqLine>) -> Self {
        Self {
            status: AtomicU32::new(0),
            irq,
        }
    }

    /// The current `InterruptStatus` value.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// A register holding `status` (snapshot restore) on `irq`.
    pub(crate) fn restored(irq: Arc<dyn IrqLine>, status: u32) -> Self {
        Self {
            status: AtomicU32::new(status & (INT_VRING | INT_CONFIG)),
            irq,
        }
    }

    /// The interrupt line.
    pub(crate) fn irq(&self) -> &Arc<dyn IrqLine> {
        &self.irq
    }

    fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    fn clear(&self) {
        self.status.store(0, Ordering::SeqCst);
    }
}

impl VirtioInterrupt for MmioInterrupt {
    fn trigger(&self, kind: InterruptKind) -> std::io::Result<()> {
        let bit = match kind {
            InterruptKind::Config => INT_CONFIG,
            InterruptKind::Queue(_) => INT_VRING,
        };
        self.status.fetch_or(bit, Ordering::SeqCst);
        squib_core::metrics::METRICS.interrupts.triggers.inc();
        self.irq.trigger()
    }
}

/// What the driver wrote for one queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct QueueRegs {
    max_size: u16,
    size: u16,
    ready: bool,
    desc: u64,
    avail: u64,
    used: u64,
}

impl QueueRegs {
    fn new(max_size: u16) -> Self {
        Self {
            max_size,
            size: max_size,
            ..Self::default()
        }
    }

    /// The device-side queue, if the configuration is well-formed (addresses are checked
    /// against guest memory separately).
    fn build(&self, event_idx: bool) -> Option<Queue> {
        let mut q = Queue::new(self.max_size).ok()?;
        q.try_set_size(self.size).ok()?;
        q.try_set_desc_table_address(GuestAddress(self.desc)).ok()?;
        q.try_set_avail_ring_address(GuestAddress(self.avail))
            .ok()?;
        q.try_set_used_ring_address(GuestAddress(self.used)).ok()?;
        q.set_event_idx(event_idx);
        q.set_ready(self.ready);
        Some(q)
    }
}

/// Whether the descriptor table and both rings of `q` lie in `mem` (what `is_valid` checks).
fn rings_in_memory(q: &Queue, mem: &GuestMemoryMmap) -> bool {
    let n = usize::from(q.size());
    [
        (q.desc_table(), 16 * n),
        (q.avail_ring(), 6 + 2 * n),
        (q.used_ring(), 6 + 8 * n),
    ]
    .into_iter()
    .all(|(addr, len)| mem.check_range(GuestAddress(addr), len))
}

/// The low 32 bits of `v`.
fn low32(v: u64) -> u32 {
    u32::try_from(v & 0xffff_ffff).unwrap_or(0)
}

fn set_low(v: &mut u64, low: u32) {
    *v = (*v & !0xffff_ffff) | u64::from(low);
}

fn set_high(v: &mut u64, high: u32) {
    *v = (*v & 0xffff_ffff) | (u64::from(high) << 32);
}

/// A virtio device behind its virtio-mmio register file.
pub struct MmioTransport {
    device: Arc<Mutex<dyn VirtioDevice>>,
    mem: GuestMemoryMmap,
    interrupt: Arc<MmioInterrupt>,
    notify: Vec<EventFd>,
    device_type: u32,
    avail_features: u64,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    queues: Vec<QueueRegs>,
    status: u32,
    metrics: Arc<MmioTransportMetrics>,
    log: RateLimitedLog,
}

impl fmt::Debug for MmioTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MmioTransport")
            .field("device_type", &self.device_type)
            .field("status", &self.status)
            .field("driver_features", &self.driver_features)
            .field("queues", &self.queues)
            .finish_non_exhaustive()
    }
}

impl MmioTransport {
    /// Wraps `device`; its interrupt goes out on `irq`, its queues live in `mem`.
    ///
    /// Fails only if the device's queue eventfds cannot be duplicated.
    pub fn new(
        mem: GuestMemoryMmap,
        irq: Arc<dyn IrqLine>,
        device: Arc<Mutex<dyn VirtioDevice>>,
    ) -> std::io::Result<Self> {
        let (device_type, avail_features, queues, notify) = {
            let dev = device.lock().unwrap_or_else(PoisonError::into_inner);
            let notify = dev
                .queue_events()
                .iter()
                .map(EventFd::try_clone)
                .collect::<std::io::Result<Vec<_>>>()?;
            let queues = dev
                .queue_max_sizes()
                .iter()
                .map(|&m| QueueRegs::new(m))
                .collect();
            (dev.device_type(), dev.avail_features(), queues, notify)
        };
        Ok(Self {
            device,
            mem,
            interrupt: Arc::new(MmioInterrupt::new(irq)),
            notify,
            device_type,
            avail_features,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            queues,
            status: 0,
            metrics: Arc::new(MmioTransportMetrics::default()),
            log: RateLimitedLog::default(),
        })
    }

    /// The device.
    pub fn device(&self) -> &Arc<Mutex<dyn VirtioDevice>> {
        &self.device
    }

    /// The interrupt status register shared with the device.
    pub fn interrupt(&self) -> &Arc<MmioInterrupt> {
        &self.interrupt
    }

    /// The transport's counters.
    pub fn metrics(&self) -> &Arc<MmioTransportMetrics> {
        &self.metrics
    }

    /// The device status register.
    pub fn device_status(&self) -> u32 {
        self.status
    }

    fn lock_device(&self) -> MutexGuard<'_, dyn VirtioDevice + 'static> {
        self.device.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn selected_queue(&self) -> Option<&QueueRegs> {
        self.queues.get(usize::try_from(self.queue_sel).ok()?)
    }

    /// Queue registers may change only between `FEATURES_OK` and `DRIVER_OK`.
    fn queue_setup_allowed(&self) -> bool {
        self.status & (DRIVER | FEATURES_OK) == (DRIVER | FEATURES_OK)
            && self.status & (DRIVER_OK | FAILED | DEVICE_NEEDS_RESET) == 0
    }

    fn invalid(&self, what: &str, value: u32) {
        self.metrics.invalid_driver_writes.inc();
        rl_warn!(
            self.log,
            device_type = self.device_type,
            status = self.status,
            "virtio-mmio: ignoring {what} ({value:#x})"
        );
    }

    fn read_register(&self, offset: u32) -> Option<u32> {
        let v = match offset {
            VIRTIO_MMIO_MAGIC_VALUE => MMIO_MAGIC,
            VIRTIO_MMIO_VERSION => MMIO_VERSION,
            VIRTIO_MMIO_DEVICE_ID => self.device_type,
            VIRTIO_MMIO_VENDOR_ID => MMIO_VENDOR_ID,
            VIRTIO_MMIO_DEVICE_FEATURES => match self.device_features_sel {
                0 => low32(self.avail_features),
                1 => low32(self.avail_features >> 32),
                _ => 0,
            },
            VIRTIO_MMIO_QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| q.max_size.into()),
            VIRTIO_MMIO_QUEUE_READY => self.selected_queue().map_or(0, |q| q.ready.into()),
            VIRTIO_MMIO_INTERRUPT_STATUS => self.interrupt.status(),
            VIRTIO_MMIO_STATUS => self.status,
            // No shared memory regions: a length of all-ones means "none".
            VIRTIO_MMIO_SHM_LEN_LOW
            | VIRTIO_MMIO_SHM_LEN_HIGH
            | VIRTIO_MMIO_SHM_BASE_LOW
            | VIRTIO_MMIO_SHM_BASE_HIGH => u32::MAX,
            VIRTIO_MMIO_CONFIG_GENERATION => self.lock_device().config_generation(),
            _ => return None,
        };
        Some(v)
    }

    fn write_register(&mut self, offset: u32, v: u32) -> bool {
        match offset {
            VIRTIO_MMIO_DEVICE_FEATURES_SEL => self.device_features_sel = v,
            VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            VIRTIO_MMIO_DRIVER_FEATURES => self.write_driver_features(v),
            VIRTIO_MMIO_QUEUE_SEL => self.queue_sel = v,
            VIRTIO_MMIO_QUEUE_NUM
            | VIRTIO_MMIO_QUEUE_READY
            | VIRTIO_MMIO_QUEUE_DESC_LOW
            | VIRTIO_MMIO_QUEUE_DESC_HIGH
            | VIRTIO_MMIO_QUEUE_AVAIL_LOW
            | VIRTIO_MMIO_QUEUE_AVAIL_HIGH
            | VIRTIO_MMIO_QUEUE_USED_LOW
            | VIRTIO_MMIO_QUEUE_USED_HIGH => self.write_queue_register(offset, v),
            VIRTIO_MMIO_QUEUE_NOTIFY => self.notify_queue(v),
            VIRTIO_MMIO_INTERRUPT_ACK => self.interrupt.ack(v),
            VIRTIO_MMIO_STATUS => self.write_status(v),
            // Writable, but there are no shared memory regions to select.
            VIRTIO_MMIO_SHM_SEL => {}
            _ => return false,
        }
        true
    }

    fn write_driver_features(&mut self, v: u32) {
        if self.status & (DRIVER | FEATURES_OK | FAILED) != DRIVER {
            self.invalid("DriverFeatures write outside feature negotiation", v);
            return;
        }
        match self.driver_features_sel {
            0 => set_low(&mut self.driver_features, v),
            1 => set_high(&mut self.driver_features, v),
            sel => self.invalid("DriverFeatures write to an unknown page", sel),
        }
    }

    fn write_queue_register(&mut self, offset: u32, v: u32) {
        if !self.queue_setup_allowed() {
            self.invalid("queue register write outside queue setup", offset);
            return;
        }
        let Some(q) = usize::try_from(self.queue_sel)
            .ok()
            .and_then(|i| self.queues.get_mut(i))
        else {
            self.invalid(
                "queue register write for a queue that does not exist",
                offset,
            );
            return;
        };
        match offset {
            // Sizes above u16 can never be valid; build() rejects them as 0.
            VIRTIO_MMIO_QUEUE_NUM => q.size = u16::try_from(v).unwrap_or(0),
            VIRTIO_MMIO_QUEUE_READY => q.ready = v == 1,
            VIRTIO_MMIO_QUEUE_DESC_LOW => set_low(&mut q.desc, v),
            VIRTIO_MMIO_QUEUE_DESC_HIGH => set_high(&mut q.desc, v),
            VIRTIO_MMIO_QUEUE_AVAIL_LOW => set_low(&mut q.avail, v),
            VIRTIO_MMIO_QUEUE_AVAIL_HIGH => set_high(&mut q.avail, v),
            VIRTIO_MMIO_QUEUE_USED_LOW => set_low(&mut q.used, v),
            _ => set_high(&mut q.used, v),
        }
    }

    fn notify_queue(&mut self, v: u32) {
        let Some(evt) = usize::try_from(v).ok().and_then(|i| self.notify.get(i)) else {
            self.metrics.notify_fails.inc();
            rl_warn!(self.log, "virtio-mmio: notify for unknown queue {v}");
            return;
        };
        if let Err(err) = evt.write(1) {
            self.metrics.notify_fails.inc();
            rl_error!(self.log, "virtio-mmio: failed to signal queue {v}: {err}");
        }
    }

    fn write_status(&mut self, v: u32) {
        let s = self.status;
        if v == 0 {
            self.reset();
        } else if v == s {
            // Rewriting the current value is harmless.
        } else if v == s | FAILED
            || s == 0 && v == ACKNOWLEDGE
            || s == ACKNOWLEDGE && v == ACKNOWLEDGE | DRIVER
        {
            self.status = v;
        } else if s == ACKNOWLEDGE | DRIVER && v == s | FEATURES_OK {
            self.negotiate_features();
        } else if s == ACKNOWLEDGE | DRIVER | FEATURES_OK && v == s | DRIVER_OK {
            self.activate();
        } else {
            self.invalid("invalid device status transition", v);
        }
    }

    fn negotiate_features(&mut self) {
        let offered = self.driver_features & self.avail_features;
        if offered != self.driver_features {
            rl_warn!(
                self.log,
                "virtio-mmio: driver accepted features the device did not offer: {:#x}",
                self.driver_features & !self.avail_features
            );
        }
        if offered & features::bit(features::VERSION_1) == 0 {
            // Refuse: FEATURES_OK does not stick, which the driver checks by reading it back.
            self.invalid(
                "FEATURES_OK without VIRTIO_F_VERSION_1 (legacy drivers are not supported)",
                self.status | FEATURES_OK,
            );
            return;
        }
        self.driver_features = offered;
        self.lock_device().ack_features(offered);
        self.status |= FEATURES_OK;
    }

    fn activate(&mut self) {
        let event_idx = self.driver_features & features::bit(features::RING_EVENT_IDX) != 0;
        let queues: Option<Vec<Queue>> = self
            .queues
            .iter()
            .map(|regs| {
                regs.build(event_idx)
                    // is_valid logs (unthrottled) on failure, so check the ranges first.
                    .filter(|q| q.ready() && rings_in_memory(q, &self.mem) && q.is_valid(&self.mem))
            })
            .collect();
        let result = match queues {
            None => Err(
                "a queue is not ready, has an invalid size or lies outside guest memory"
                    .to_string(),
            ),
            Some(queues) => {
                let interrupt: Arc<dyn VirtioInterrupt> = self.interrupt.clone();
                self.lock_device()
                    .activate(self.mem.clone(), interrupt, queues)
                    .map_err(|e| e.to_string())
            }
        };
        match result {
            Ok(()) => self.status |= DRIVER_OK,
            Err(reason) => {
                self.metrics.activate_fails.inc();
                rl_error!(
                    self.log,
                    device_type = self.device_type,
                    "virtio-mmio: failed to activate the device: {reason}"
                );
                self.status |= DEVICE_NEEDS_RESET;
                if let Err(err) = self.interrupt.trigger(InterruptKind::Config) {
                    rl_error!(
                        self.log,
                        "virtio-mmio: failed to raise the interrupt: {err}"
                    );
                }
            }
        }
    }

    fn reset(&mut self) {
        self.metrics.reset_count.inc();
        self.lock_device().reset();
        for q in &mut self.queues {
            *q = QueueRegs::new(q.max_size);
        }
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.interrupt.clear();
        self.status = 0;
    }

    fn register_offset(offset: u64, len: usize) -> Option<u32> {
        (len == 4 && offset.is_multiple_of(4) && offset < CONFIG_START)
            .then(|| u32::try_from(offset).ok())
            .flatten()
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset >= CONFIG_START {
            self.lock_device().read_config(offset - CONFIG_START, data);
            return;
        }
        if let Some(v) =
            Self::register_offset(offset, data.len()).and_then(|o| self.read_register(o))
        {
            data.copy_from_slice(&v.to_le_bytes());
        } else {
            self.metrics.missed_read_count.inc();
            rl_warn!(
                self.log,
                "virtio-mmio: ignoring read of {} bytes at {offset:#x}",
                data.len()
            );
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_START {
            if self.status & (DRIVER | FAILED) != DRIVER {
                self.invalid("configuration write before DRIVER", 0);
                return;
            }
            self.lock_device().write_config(offset - CONFIG_START, data);
            return;
        }
        let handled = Self::register_offset(offset, data.len()).is_some_and(|o| {
            let mut b = [0u8; 4];
            b.copy_from_slice(data);
            self.write_register(o, u32::from_le_bytes(b))
        });
        if !handled {
            self.metrics.missed_write_count.inc();
            rl_warn!(
                self.log,
                "virtio-mmio: ignoring write of {} bytes at {offset:#x}",
                data.len()
            );
        }
    }
}

pub mod persist;

#[cfg(test)]
mod tests;
