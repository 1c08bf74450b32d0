//! virtio-mem (device id 24): Firecracker's memory hotplug (`PUT`/`PATCH`/`GET
//! /hotplug/memory`).
//!
//! The device manages a region of `total_size` bytes of guest-physical space (at 512 GiB and
//! up, allocated by the VMM), in **blocks** (the unit the guest plugs, `block_size`) grouped in
//! **slots** (the unit the host maps, `slot_size`). The host asks for `requested_size` bytes
//! (`PATCH /hotplug/memory`, a configuration interrupt); the driver then plugs or unplugs
//! blocks with requests on its one queue until `plugged_size` matches.
//!
//! - A slot is mapped into the guest (through a [`SlotMapper`], which the VMM implements on
//!   the hypervisor) while any of its blocks is plugged, and removed when none is: unplugged
//!   memory is inaccessible to the guest (`VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE`, which the
//!   driver must accept, as in Firecracker).
//! - Unplugged blocks are released to the host
//!   ([`squib_sys::guest_memory::discard_range`]).
//! - Requests are Firecracker's rules: a range must be block-aligned, non-empty and inside the
//!   usable region (`requested_size` rounded up to a slot); a plug must find every block
//!   unplugged and may not take `plugged_size` past `requested_size`; an unplug must find every
//!   block plugged; `UNPLUG_ALL` also shrinks the usable region to 0. Anything else is answered
//!   `ERROR`; a chain too malformed to answer is returned with length 0.
//!
//! The configuration space (56 bytes, little endian): `block_size` u64, `node_id` u16, 6 bytes
//! of padding, `addr`, `region_size`, `usable_region_size`, `plugged_size`, `requested_size`
//! (u64 each). The status ([`HotplugMemoryStatus`]) is pushed to a [`MemStatusSink`] whenever
//! it changes.
//!
//! Threading: `Send`, behind `Arc<Mutex<VirtioMem>>`; see the [`virtio`](super) module docs.

pub mod metrics;
pub mod persist;
pub mod request;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Instant;

use squib_config::schemas::hotplug_memory::HotplugMemoryStatus;
use squib_core::GuestMemoryMmap;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

pub use self::metrics::VirtioMemMetrics;
pub use self::persist::{VirtioMemRestoreError, VirtioMemState};
use self::request::{BlockRange, BlockState, REQ_SIZE, RESP_SIZE, Request, ResponseType};
use super::chain::Chain;
use super::queue::{self, Step};
use super::{
    ActivateError, InterruptKind, MAX_QUEUE_SIZE, VirtioDevice, VirtioInterrupt, features,
};
use crate::log::RateLimitedLog;
use crate::{rl_error, rl_warn};

/// virtio-mem's device id.
pub const MEM_DEVICE_ID: u32 = 24;
/// `VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE`.
pub const F_UNPLUGGED_INACCESSIBLE: u32 = 1;
/// Size of the configuration space.
pub const CONFIG_SPACE_SIZE: usize = 56;
const MIB: u64 = 1 << 20;

/// Maps and unmaps the region's slots in the guest (the VMM implements it on the hypervisor).
pub trait SlotMapper: Send + Sync + std::fmt::Debug {
    /// Makes slot `index` visible to the guest (`true`) or removes it (`false`); idempotent.
    fn set_slot(&self, index: usize, mapped: bool) -> Result<(), String>;
}

/// Receives status changes (`GET /hotplug/memory`). Called with the device lock held.
pub type MemStatusSink = Arc<dyn Fn(HotplugMemoryStatus) + Send + Sync>;

/// The region's geometry, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemGeometry {
    /// Guest-physical start.
    pub addr: u64,
    /// Total size.
    pub region_size: u64,
    /// Block size (a power of two, at least 4 KiB).
    pub block_size: u64,
    /// Slot size (a multiple of the block size).
    pub slot_size: u64,
}

impl MemGeometry {
    /// Checks the invariants the device relies on.
    pub fn validate(&self) -> Result<(), VirtioMemError> {
        let ok = self.block_size.is_power_of_two()
            && self.block_size >= 4096
            && self.slot_size >= self.block_size
            && self.slot_size.is_multiple_of(self.block_size)
            && self.region_size >= self.slot_size
            && self.region_size.is_multiple_of(self.slot_size)
            && self.addr.is_multiple_of(self.block_size)
            && self.addr.checked_add(self.region_size).is_some()
            && self.region_size / self.block_size <= 1 << 24;
        if ok {
            Ok(())
        } else {
            Err(VirtioMemError::InvalidGeometry(*self))
        }
    }

    fn blocks(&self) -> usize {
        usize::try_from(self.region_size / self.block_size).unwrap_or(0)
    }

    fn slots(&self) -> usize {
        usize::try_from(self.region_size / self.slot_size).unwrap_or(0)
    }

    fn blocks_per_slot(&self) -> usize {
        usize::try_from(self.slot_size / self.block_size).unwrap_or(1)
    }
}

/// Errors of the device's host-side operations. Texts are Firecracker's `VirtioMemError`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VirtioMemError {
    /// Creating the queue eventfd failed.
    #[error("Error while handling an Event file descriptor: {0}")]
    EventFd(String),
    /// A requested size the device cannot take.
    #[error(
        "Size {0} is invalid: it must be a multiple of block size and less than the total size"
    )]
    InvalidSize(u64),
    /// The driver has not activated the device.
    #[error("Device is not active")]
    DeviceNotActive,
    /// Raising the configuration interrupt failed.
    #[error("Received error while sending an interrupt: {0}")]
    Interrupt(String),
    /// The region's geometry is inconsistent.
    #[error("Invalid virtio-mem geometry: {0:?}")]
    InvalidGeometry(MemGeometry),
}

struct Active {
    mem: GuestMemoryMmap,
    interrupt: Arc<dyn VirtioInterrupt>,
    queue: Queue,
}

/// The virtio-mem device (see the [module docs](self)).
pub struct VirtioMem {
    geometry: MemGeometry,
    pub(crate) usable_region_size: u64,
    pub(crate) requested_size: u64,
    plugged: Vec<bool>,
    slot_mapped: Vec<bool>,
    mapper: Arc<dyn SlotMapper>,
    acked_features: u64,
    config_generation: u32,
    queue_sizes: [u16; 1],
    queue_evts: [EventFd; 1],
    metrics: Arc<VirtioMemMetrics>,
    log: RateLimitedLog,
    sink: Option<MemStatusSink>,
    /// Guest memory while active (also while `active` is taken out to drain the queue).
    mem: Option<GuestMemoryMmap>,
    active: Option<Active>,
}

impl std::fmt::Debug for VirtioMem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioMem")
            .field("geometry", &self.geometry)
            .field("requested_size", &self.requested_size)
            .field("plugged_size", &self.plugged_size())
            .field("active", &self.active.is_some())
            .finish_non_exhaustive()
    }
}

impl VirtioMem {
    /// A device for `geometry`, nothing plugged, mapping slots through `mapper`.
    pub fn new(geometry: MemGeometry, mapper: Arc<dyn SlotMapper>) -> Result<Self, VirtioMemError> {
        geometry.validate()?;
        Ok(Self {
            geometry,
            usable_region_size: 0,
            requested_size: 0,
            plugged: vec![false; geometry.blocks()],
            slot_mapped: vec![false; geometry.slots()],
            mapper,
            acked_features: 0,
            config_generation: 0,
            queue_sizes: [MAX_QUEUE_SIZE],
            queue_evts: [
                EventFd::new(EFD_NONBLOCK).map_err(|e| VirtioMemError::EventFd(e.to_string()))?
            ],
            metrics: Arc::new(VirtioMemMetrics::default()),
            log: RateLimitedLog::default(),
            sink: None,
            mem: None,
            active: None,
        })
    }

    /// Sends status changes to `sink` (and the current status right away).
    pub fn set_status_sink(&mut self, sink: MemStatusSink) {
        sink(self.status());
        self.sink = Some(sink);
    }

    /// The region's geometry.
    pub fn geometry(&self) -> MemGeometry {
        self.geometry
    }

    /// The `memory_hotplug` metric group.
    pub fn metrics(&self) -> &Arc<VirtioMemMetrics> {
        &self.metrics
    }

    /// Bytes plugged.
    pub fn plugged_size(&self) -> u64 {
        self.plugged.iter().filter(|&&p| p).count() as u64 * self.geometry.block_size
    }

    /// `GET /hotplug/memory`.
    pub fn status(&self) -> HotplugMemoryStatus {
        HotplugMemoryStatus {
            total_size_mib: self.geometry.region_size / MIB,
            slot_size_mib: self.geometry.slot_size / MIB,
            block_size_mib: self.geometry.block_size / MIB,
            plugged_size_mib: self.plugged_size() / MIB,
            requested_size_mib: self.requested_size / MIB,
        }
    }

    /// Whether slot `index` is mapped into the guest.
    pub fn slot_mapped(&self, index: usize) -> bool {
        self.slot_mapped.get(index).copied().unwrap_or(false)
    }

    fn publish(&self) {
        if let Some(sink) = &self.sink {
            sink(self.status());
        }
    }

    fn config_bytes(&self) -> [u8; CONFIG_SPACE_SIZE] {
        let mut b = [0u8; CONFIG_SPACE_SIZE];
        let fields = [
            (0, self.geometry.block_size),
            (16, self.geometry.addr),
            (24, self.geometry.region_size),
            (32, self.usable_region_size),
            (40, self.plugged_size()),
            (48, self.requested_size),
        ];
        for (at, v) in fields {
            b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// `PATCH /hotplug/memory`: asks the driver to reach `requested_size_mib`.
    pub fn update_requested_size(&mut self, requested_size_mib: u64) -> Result<(), VirtioMemError> {
        let active = self
            .active
            .as_ref()
            .ok_or(VirtioMemError::DeviceNotActive)?;
        let size = requested_size_mib
            .checked_mul(MIB)
            .ok_or(VirtioMemError::InvalidSize(u64::MAX))?;
        if !size.is_multiple_of(self.geometry.block_size) || size > self.geometry.region_size {
            return Err(VirtioMemError::InvalidSize(size));
        }
        if self.usable_region_size < size {
            self.usable_region_size = size.next_multiple_of(self.geometry.slot_size);
        }
        self.requested_size = size;
        self.config_generation = self.config_generation.wrapping_add(1);
        let result = active
            .interrupt
            .trigger(InterruptKind::Config)
            .map_err(|e| VirtioMemError::Interrupt(e.to_string()));
        self.publish();
        result
    }

    /// The block indices of `range` if it is valid (Firecracker's `validate_range`).
    fn block_range(&self, range: BlockRange) -> Option<std::ops::Range<usize>> {
        let g = &self.geometry;
        if range.nb_blocks == 0 || !range.addr.is_multiple_of(g.block_size) {
            return None;
        }
        let start = range.addr.checked_sub(g.addr)?;
        let len = u64::from(range.nb_blocks).checked_mul(g.block_size)?;
        let end = start.checked_add(len)?;
        if start >= self.usable_region_size || end > self.usable_region_size {
            return None;
        }
        let first = usize::try_from(start / g.block_size).ok()?;
        Some(first..first + usize::from(range.nb_blocks))
    }

    fn state_of(&self, blocks: std::ops::Range<usize>) -> BlockState {
        let total = blocks.len();
        let plugged = self.plugged[blocks].iter().filter(|&&p| p).count();
        match plugged {
            0 => BlockState::Unplugged,
            n if n == total => BlockState::Plugged,
            _ => BlockState::Mixed,
        }
    }

    /// Sets `blocks` to `plug`, maps/unmaps the slots they touch, releases unplugged memory.
    /// On a mapping failure the blocks are restored and the slots left as they were.
    fn update_blocks(&mut self, blocks: std::ops::Range<usize>, plug: bool) -> Result<(), String> {
        let before: Vec<bool> = self.plugged[blocks.clone()].to_vec();
        self.plugged[blocks.clone()].fill(plug);
        let per = self.geometry.blocks_per_slot();
        let slots = blocks.start / per..blocks.end.div_ceil(per);
        for slot in slots.clone() {
            let want = self.plugged[slot * per..(slot + 1) * per]
                .iter()
                .any(|&p| p);
            if want != self.slot_mapped[slot] {
                if let Err(e) = self.mapper.set_slot(slot, want) {
                    self.plugged[blocks.clone()].copy_from_slice(&before);
                    for s in slots.start..slot {
                        let was = self.plugged[s * per..(s + 1) * per].iter().any(|&p| p);
                        if was != self.slot_mapped[s] && self.mapper.set_slot(s, was).is_ok() {
                            self.slot_mapped[s] = was;
                        }
                    }
                    return Err(e);
                }
                self.slot_mapped[slot] = want;
            }
        }
        if !plug && let Some(mem) = &self.mem {
            let g = &self.geometry;
            let addr = g.addr + blocks.start as u64 * g.block_size;
            let len = blocks.len() as u64 * g.block_size;
            if let Err(e) = squib_sys::guest_memory::discard_range(mem, GuestAddress(addr), len) {
                self.metrics.unplug_discard_fails.inc();
                rl_error!(self.log, "virtio-mem: failed to discard memory range: {e}");
            }
        }
        Ok(())
    }

    /// Serves one request; returns the response.
    fn serve(&mut self, req: Request) -> (ResponseType, Option<BlockState>) {
        let start = Instant::now();
        let elapsed_us = |s: Instant| u64::try_from(s.elapsed().as_micros()).unwrap_or(u64::MAX);
        let block_size = self.geometry.block_size;
        let bytes = |n: u16| u64::from(n) * block_size;
        match req {
            Request::Plug(range) => {
                self.metrics.plug_count.inc();
                let result = match self.block_range(range) {
                    None => Err("invalid range".to_owned()),
                    Some(_)
                        if self.plugged_size() + bytes(range.nb_blocks) > self.requested_size =>
                    {
                        Err("plugged_size would be greater than requested_size".to_owned())
                    }
                    Some(b) => match self.state_of(b.clone()) {
                        BlockState::Unplugged => self.update_blocks(b, true),
                        s => Err(format!("the range is {s:?}")),
                    },
                };
                self.metrics.plug_agg.record(elapsed_us(start));
                self.finish(
                    result,
                    &self.metrics.plug_fails,
                    &self.metrics.plug_bytes,
                    range,
                )
            }
            Request::Unplug(range) => {
                self.metrics.unplug_count.inc();
                let result = match self.block_range(range) {
                    None => Err("invalid range".to_owned()),
                    Some(b) => match self.state_of(b.clone()) {
                        BlockState::Plugged => self.update_blocks(b, false),
                        s => Err(format!("the range is {s:?}")),
                    },
                };
                self.metrics.unplug_agg.record(elapsed_us(start));
                self.finish(
                    result,
                    &self.metrics.unplug_fails,
                    &self.metrics.unplug_bytes,
                    range,
                )
            }
            Request::UnplugAll => {
                self.metrics.unplug_all_count.inc();
                let all = 0..self.plugged.len();
                let result = self.update_blocks(all, false);
                self.metrics.unplug_all_agg.record(elapsed_us(start));
                match result {
                    Ok(()) => {
                        self.usable_region_size = 0;
                        (ResponseType::Ack, None)
                    }
                    Err(e) => {
                        self.metrics.unplug_all_fails.inc();
                        rl_error!(self.log, "virtio-mem: failed to unplug all: {e}");
                        (ResponseType::Error, None)
                    }
                }
            }
            Request::State(range) => {
                self.metrics.state_count.inc();
                let out = if let Some(b) = self.block_range(range) {
                    (ResponseType::Ack, Some(self.state_of(b)))
                } else {
                    self.metrics.state_fails.inc();
                    rl_warn!(self.log, "virtio-mem: invalid state range {range:?}");
                    (ResponseType::Error, None)
                };
                self.metrics.state_agg.record(elapsed_us(start));
                out
            }
            Request::Unsupported(t) => {
                self.metrics.queue_event_fails.inc();
                rl_warn!(self.log, "virtio-mem: unknown request type {t}");
                (ResponseType::Error, None)
            }
        }
    }

    fn finish(
        &self,
        result: Result<(), String>,
        fails: &crate::metrics::Counter,
        ok_bytes: &crate::metrics::Counter,
        range: BlockRange,
    ) -> (ResponseType, Option<BlockState>) {
        match result {
            Ok(()) => {
                ok_bytes.add(u64::from(range.nb_blocks) * self.geometry.block_size);
                (ResponseType::Ack, None)
            }
            Err(e) => {
                fails.inc();
                rl_warn!(self.log, "virtio-mem: request for {range:?} refused: {e}");
                (ResponseType::Error, None)
            }
        }
    }

    fn process_queue(&mut self) {
        let Some(mut active) = self.active.take() else {
            return;
        };
        let mem = active.mem.clone();
        let mut changed = false;
        let run = queue::drain(&mut active.queue, &mem, |_, chain| {
            let Some((req, resp_at)) = parse_chain(&mem, &chain) else {
                self.metrics.queue_event_fails.inc();
                rl_warn!(self.log, "virtio-mem: malformed request chain");
                return Step::Used(0);
            };
            let (kind, state) = self.serve(req);
            changed |= !matches!(req, Request::State(_)) && kind == ResponseType::Ack;
            if mem
                .write_slice(&request::response(kind, state), resp_at)
                .is_err()
            {
                self.metrics.queue_event_fails.inc();
                return Step::Used(0);
            }
            #[expect(clippy::cast_possible_truncation, reason = "RESP_SIZE is 10")]
            Step::Used(RESP_SIZE as u32)
        });
        if run.broken_ring || run.ring_errors > 0 {
            self.metrics.queue_event_fails.inc();
            rl_warn!(
                self.log,
                "virtio-mem: queue error (bad avail index or used ring)"
            );
        }
        if run.used
            && let Err(err) = queue::signal_used(&mut active.queue, &mem, &*active.interrupt, 0)
        {
            self.metrics.queue_event_fails.inc();
            rl_error!(self.log, "virtio-mem: failed to signal used buffers: {err}");
        }
        self.active = Some(active);
        if changed {
            self.publish();
        }
    }

    /// Restored state that must survive activation (set by [`persist`]).
    pub(crate) fn restore_parts(
        &mut self,
        usable: u64,
        requested: u64,
        plugged: Vec<bool>,
    ) -> Result<(), String> {
        self.usable_region_size = usable;
        self.requested_size = requested;
        self.plugged = plugged;
        let per = self.geometry.blocks_per_slot();
        for slot in 0..self.slot_mapped.len() {
            if self.plugged[slot * per..(slot + 1) * per]
                .iter()
                .any(|&p| p)
            {
                self.mapper.set_slot(slot, true)?;
                self.slot_mapped[slot] = true;
            }
        }
        Ok(())
    }

    pub(crate) fn plugged_blocks(&self) -> &[bool] {
        &self.plugged
    }
}

/// The request and where its response goes, if the chain has Firecracker's shape: at least 24
/// device-readable bytes, then a device-writable buffer of at least 10 bytes.
fn parse_chain(mem: &GuestMemoryMmap, chain: &Chain) -> Option<(Request, GuestAddress)> {
    if chain.error.is_some() || chain.readable_len() < REQ_SIZE as u64 {
        return None;
    }
    let resp = chain
        .writable
        .first()
        .filter(|s| s.len as usize >= RESP_SIZE)?;
    let mut bytes = [0u8; REQ_SIZE];
    let mut got = 0;
    for seg in &chain.readable {
        let take = (seg.len as usize).min(REQ_SIZE - got);
        mem.read_slice(&mut bytes[got..got + take], seg.addr).ok()?;
        got += take;
        if got == REQ_SIZE {
            break;
        }
    }
    Some((request::parse(&bytes)?, resp.addr))
}

impl VirtioDevice for VirtioMem {
    fn device_type(&self) -> u32 {
        MEM_DEVICE_ID
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn avail_features(&self) -> u64 {
        features::bit(features::VERSION_1) | features::bit(F_UNPLUGGED_INACCESSIBLE)
    }

    fn acked_features(&self) -> u64 {
        self.acked_features
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features & self.avail_features();
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        if !super::read_config_bytes(&self.config_bytes(), offset, data) {
            rl_warn!(
                self.log,
                "virtio-mem: config read of {} bytes at {offset:#x} out of range",
                data.len()
            );
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        rl_warn!(
            self.log,
            "virtio-mem: guest driver attempted to write device config (offset={offset:#x}, len={:#x})",
            data.len()
        );
    }

    fn config_generation(&self) -> u32 {
        self.config_generation
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<Queue>,
    ) -> Result<(), ActivateError> {
        if self.active.is_some() {
            self.metrics.activate_fails.inc();
            return Err(ActivateError::AlreadyActive);
        }
        if self.acked_features & features::bit(F_UNPLUGGED_INACCESSIBLE) == 0 {
            self.metrics.activate_fails.inc();
            return Err(ActivateError::Unsupported(
                "virtio-mem: VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE feature not acknowledged by guest"
                    .to_owned(),
            ));
        }
        let queue = super::single_queue(queues, &self.metrics.activate_fails)?;
        self.mem = Some(mem.clone());
        self.active = Some(Active {
            mem,
            interrupt,
            queue,
        });
        Ok(())
    }

    fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    fn reset(&mut self) {
        // Like Firecracker, plugged memory stays plugged across a driver reset: the driver
        // finds it with STATE requests (or UNPLUG_ALL) when it comes back.
        self.active = None;
        self.mem = None;
        self.acked_features = 0;
        let _ = self.queue_evts[0].read();
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    fn queues(&self) -> &[Queue] {
        self.active
            .as_ref()
            .map_or(&[], |a| std::slice::from_ref(&a.queue))
    }

    fn process_queue_event(&mut self, idx: usize) {
        self.metrics.queue_event_count.inc();
        let Some(evt) = self.queue_evts.get(idx) else {
            self.metrics.queue_event_fails.inc();
            return;
        };
        if let Err(err) = evt.read()
            && err.kind() != std::io::ErrorKind::WouldBlock
        {
            self.metrics.queue_event_fails.inc();
            rl_error!(
                self.log,
                "virtio-mem: failed to read the queue event: {err}"
            );
        }
        self.process_queue();
    }
}
