//! The virtio-vsock device: queues, configuration space, activation, and the glue between the
//! driver's virtqueues and the [muxer](super::muxer).
//!
//! - TX event: every TX chain is parsed (header + payload ≤ 64 KiB copied through the device's
//!   scratch buffer), handed to the muxer and returned with length 0; malformed chains are
//!   returned unread. Then pending RX is delivered.
//! - RX event, host socket event, kill timer: pending packets are written into RX chains (header,
//!   then payload). With nothing to send, RX chains stay in the ring.
//! - Event queue: as in Firecracker, a snapshot *create* ([`VirtioDevice::prepare_save`], vCPUs
//!   paused, before the transport and guest memory are saved) writes
//!   `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET` into one event buffer and signals the event queue, so
//!   both the resumed source and every VM restored from the snapshot drop their connections.
//!   RX stays gated until the driver acknowledges the event by notifying the event queue
//!   (Firecracker's `pending_event_ack`, which the snapshot carries); a restored device whose
//!   saved event is still unacknowledged re-signals the event queue when it is activated
//!   (Firecracker's `kick`). Without a free event buffer the reset waits for one (RX gated).
//!
//! Activation and reset change which host sockets the event loop watches; both also signal the
//! TX queue eventfd so that the loop dispatches an event to the device promptly and applies
//! those changes (the transport calls them on a vCPU thread, outside the loop).
//!
//! Threading: `Send`, used behind `Arc<Mutex<Vsock>>`; see the [`virtio`](crate::virtio) docs.

use std::path::Path;
use std::sync::Arc;

use event_manager::EventSet;
use squib_core::GuestMemoryMmap;
use virtio_bindings::virtio_config::VIRTIO_F_IN_ORDER;
use virtio_queue::Queue;
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};
use vmm_sys_util::timerfd::TimerFd;

use super::metrics::VsockMetrics;
use super::muxer::{LISTENER_TOKEN, Muxer};
use super::packet::{self, HDR_SIZE, MAX_PKT_BUF_SIZE};
use super::{EVENT_TRANSPORT_RESET, NUM_QUEUES, VsockConfig, VsockError};
use crate::log::RateLimitedLog;
use crate::virtio::queue::{self, Step};
use crate::virtio::{
    ActivateError, EventSource, EventSourceChange, InterruptKind, MAX_QUEUE_SIZE, VirtioDevice,
    VirtioInterrupt, device_type, features,
};
use crate::{rl_error, rl_warn};

/// Index of the RX queue (device → driver packets).
pub const RXQ_INDEX: usize = 0;
/// Index of the TX queue (driver → device packets).
pub const TXQ_INDEX: usize = 1;
/// Index of the event queue.
pub const EVQ_INDEX: usize = 2;

struct Active {
    mem: GuestMemoryMmap,
    interrupt: Arc<dyn VirtioInterrupt>,
    queues: [Queue; NUM_QUEUES],
}

/// The virtio-vsock device (see the [module docs](super)).
pub struct Vsock {
    cid: u64,
    acked_features: u64,
    queue_sizes: [u16; NUM_QUEUES],
    queue_evts: [EventFd; NUM_QUEUES],
    pub(super) muxer: Muxer,
    scratch: Box<[u8]>,
    metrics: Arc<VsockMetrics>,
    log: RateLimitedLog,
    active: Option<Active>,
    /// Restored from a snapshot: the next activation re-signals (or delivers) the reset that
    /// the snapshot's creation announced.
    pub(super) restored: bool,
    /// A transport reset waits for an event-queue buffer.
    pub(super) reset_event_pending: bool,
    /// A transport reset was delivered and not yet acknowledged: RX is gated.
    pub(super) awaiting_event_ack: bool,
}

impl std::fmt::Debug for Vsock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vsock")
            .field("cid", &self.cid)
            .field("uds_path", &self.muxer.uds_path())
            .field("acked_features", &self.acked_features)
            .field("active", &self.active.is_some())
            .finish_non_exhaustive()
    }
}

impl Vsock {
    /// Creates the device and binds its listening socket at `config.uds_path`.
    pub fn new(config: &VsockConfig) -> Result<Self, VsockError> {
        let metrics = Arc::new(VsockMetrics::new());
        let muxer = Muxer::new(config.guest_cid, &config.uds_path, metrics.clone())
            .map_err(VsockError::CreateVsockBackend)?;
        let evt = || EventFd::new(EFD_NONBLOCK).map_err(VsockError::EventFd);
        Ok(Self {
            cid: config.guest_cid,
            acked_features: 0,
            queue_sizes: [MAX_QUEUE_SIZE; NUM_QUEUES],
            queue_evts: [evt()?, evt()?, evt()?],
            muxer,
            scratch: vec![0u8; MAX_PKT_BUF_SIZE as usize].into_boxed_slice(),
            metrics,
            log: RateLimitedLog::default(),
            active: None,
            restored: false,
            reset_event_pending: false,
            awaiting_event_ack: false,
        })
    }

    /// The guest's CID.
    pub fn cid(&self) -> u64 {
        self.cid
    }

    /// The listening socket's path.
    pub fn uds_path(&self) -> &Path {
        self.muxer.uds_path()
    }

    /// The `vsock` metric group.
    pub fn metrics(&self) -> &Arc<VsockMetrics> {
        &self.metrics
    }

    /// Open connections.
    pub fn connection_count(&self) -> usize {
        self.muxer.connection_count()
    }

    /// Host clients that have not finished their `CONNECT` line.
    pub fn handshake_count(&self) -> usize {
        self.muxer.handshake_count()
    }

    /// Wakes the event loop so it applies pending event-source changes.
    fn kick(&self) {
        let _ = self.queue_evts[TXQ_INDEX].write(1);
    }

    fn rx_gated(&self) -> bool {
        self.awaiting_event_ack || self.reset_event_pending
    }

    fn process_rx(&mut self) {
        if self.rx_gated() || !self.muxer.has_pending_rx() {
            return;
        }
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let mem = &active.mem;
        let (muxer, scratch, log) = (&mut self.muxer, &mut self.scratch, &self.log);
        let run = queue::drain(&mut active.queues[RXQ_INDEX], mem, |_, chain| {
            if !muxer.has_pending_rx() {
                return Step::Throttled;
            }
            let room = match packet::rx_room(&chain) {
                Ok(room) => room,
                Err(err) => {
                    rl_warn!(log, "vsock: RX queue error: {err}. Discarding the package.");
                    return Step::Used(0);
                }
            };
            let Some((hdr, n)) = muxer.recv_pkt(room, scratch) else {
                return Step::Throttled;
            };
            let payload = scratch.get(..n).unwrap_or_default();
            let written = packet::write_segments(mem, &chain.writable, 0, &hdr.to_bytes())
                .and_then(|()| {
                    packet::write_segments(mem, &chain.writable, HDR_SIZE as u64, payload)
                });
            match written {
                // n <= room <= 64 KiB.
                Ok(()) => Step::Used(u32::try_from(HDR_SIZE + n).unwrap_or(0)),
                Err(err) => {
                    rl_warn!(log, "vsock: error writing packet to guest memory: {err}");
                    Step::Used(0)
                }
            }
        });
        self.finish(RXQ_INDEX, &run);
    }

    fn process_tx(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let mem = &active.mem;
        let (muxer, scratch, log) = (&mut self.muxer, &mut self.scratch, &self.log);
        let run = queue::drain(&mut active.queues[TXQ_INDEX], mem, |_, chain| {
            let hdr = match packet::parse_tx(mem, &chain) {
                Ok(hdr) => hdr,
                Err(err) => {
                    rl_warn!(log, "vsock: error reading TX packet: {err}");
                    return Step::Used(0);
                }
            };
            // parse_tx bounded len by MAX_PKT_BUF_SIZE, the scratch size.
            let len = usize::try_from(hdr.len).unwrap_or(usize::MAX);
            let Some(buf) = scratch.get_mut(..len) else {
                return Step::Used(0);
            };
            if let Err(err) = packet::read_segments(mem, &chain.readable, HDR_SIZE as u64, buf) {
                rl_warn!(log, "vsock: error reading TX packet: {err}");
                return Step::Used(0);
            }
            muxer.send_pkt(&hdr, buf);
            Step::Used(0)
        });
        self.finish(TXQ_INDEX, &run);
    }

    /// Writes `TRANSPORT_RESET` into the first usable event buffer, or leaves it pending.
    fn deliver_reset_event(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let mem = &active.mem;
        let mut delivered = false;
        let run = queue::drain(&mut active.queues[EVQ_INDEX], mem, |_, chain| {
            if delivered {
                return Step::Throttled;
            }
            if chain.error.is_some() || !chain.readable.is_empty() || chain.writable_len() < 4 {
                return Step::Used(0);
            }
            match packet::write_segments(
                mem,
                &chain.writable,
                0,
                &EVENT_TRANSPORT_RESET.to_le_bytes(),
            ) {
                Ok(()) => {
                    delivered = true;
                    Step::Used(4)
                }
                Err(_) => Step::Used(0),
            }
        });
        if delivered {
            self.reset_event_pending = false;
            self.awaiting_event_ack = true;
        } else {
            self.reset_event_pending = true;
            self.metrics.ev_queue_event_fails.inc();
            rl_warn!(
                self.log,
                "vsock: no event buffer for the transport reset event"
            );
        }
        self.finish(EVQ_INDEX, &run);
    }

    /// First activation after a restore: the reset written when the snapshot was created is in
    /// the restored guest memory; if the driver had not acknowledged it, interrupt it again (its
    /// interrupt may have been lost with the source VM). A reset still waiting for a buffer is
    /// delivered now if one is free.
    fn resignal_reset_event(&mut self) {
        if self.reset_event_pending {
            self.deliver_reset_event();
        } else if self.awaiting_event_ack
            && let Some(active) = self.active.as_ref()
            && let Err(err) = active
                .interrupt
                .trigger(InterruptKind::Queue(u16::try_from(EVQ_INDEX).unwrap_or(2)))
        {
            self.metrics.ev_queue_event_fails.inc();
            rl_error!(self.log, "vsock: failed to signal the event queue: {err}");
        }
    }

    fn finish(&mut self, index: usize, run: &queue::Drain) {
        let fails = match index {
            RXQ_INDEX => &self.metrics.rx_queue_event_fails,
            TXQ_INDEX => &self.metrics.tx_queue_event_fails,
            _ => &self.metrics.ev_queue_event_fails,
        };
        if run.broken_ring {
            fails.inc();
            rl_warn!(
                self.log,
                "vsock: invalid available ring index on queue {index}"
            );
        }
        if run.ring_errors > 0 {
            fails.add(u64::from(run.ring_errors));
            rl_error!(
                self.log,
                "vsock: failed to update the used ring of queue {index}"
            );
        }
        let Some(active) = self.active.as_mut() else {
            return;
        };
        if run.used {
            // index < NUM_QUEUES.
            let qi = u16::try_from(index).unwrap_or(0);
            if let Err(err) = queue::signal_used(
                &mut active.queues[index],
                &active.mem,
                &*active.interrupt,
                qi,
            ) {
                fails.inc();
                rl_error!(self.log, "vsock: failed to signal used buffers: {err}");
            }
        }
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        device_type::VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn avail_features(&self) -> u64 {
        features::bit(features::VERSION_1)
            | features::bit(VIRTIO_F_IN_ORDER)
            | features::bit(features::RING_EVENT_IDX)
    }

    fn acked_features(&self) -> u64 {
        self.acked_features
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features & self.avail_features();
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        if !crate::virtio::read_config_bytes(&self.cid.to_le_bytes(), offset, data) {
            self.metrics.cfg_fails.inc();
            rl_warn!(
                self.log,
                "vsock: config read of {} bytes at {offset:#x} outside the config space",
                data.len()
            );
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        self.metrics.cfg_fails.inc();
        rl_warn!(
            self.log,
            "vsock: guest driver attempted to write device config (offset={offset:#x}, len={:#x})",
            data.len()
        );
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
        let queues: [Queue; NUM_QUEUES] = queues.try_into().map_err(|q: Vec<Queue>| {
            self.metrics.activate_fails.inc();
            ActivateError::QueueCount {
                expected: NUM_QUEUES,
                got: q.len(),
            }
        })?;
        self.active = Some(Active {
            mem,
            interrupt,
            queues,
        });
        self.muxer.set_listening(true);
        if std::mem::take(&mut self.restored) {
            self.resignal_reset_event();
        }
        self.kick();
        Ok(())
    }

    /// Snapshot creation: announce a transport reset (Firecracker's `prepare_save`), before the
    /// transport state and guest memory are saved so that both hold the event.
    fn prepare_save(&mut self) {
        if self.active.is_some() {
            self.deliver_reset_event();
        }
    }

    fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    fn reset(&mut self) {
        self.active = None;
        self.acked_features = 0;
        self.muxer.reset();
        self.muxer.set_listening(false);
        self.restored = false;
        self.reset_event_pending = false;
        self.awaiting_event_ack = false;
        for evt in &self.queue_evts {
            let _ = evt.read();
        }
        self.kick();
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    fn queues(&self) -> &[Queue] {
        self.active.as_ref().map_or(&[], |a| &a.queues[..])
    }

    fn process_queue_event(&mut self, idx: usize) {
        let Some(evt) = self.queue_evts.get(idx) else {
            return;
        };
        if let Err(err) = evt.read()
            && err.kind() != std::io::ErrorKind::WouldBlock
        {
            let fails = match idx {
                RXQ_INDEX => &self.metrics.rx_queue_event_fails,
                TXQ_INDEX => &self.metrics.tx_queue_event_fails,
                _ => &self.metrics.ev_queue_event_fails,
            };
            fails.inc();
            rl_error!(self.log, "vsock: failed to read queue event {idx}: {err}");
        }
        if self.active.is_none() {
            return;
        }
        match idx {
            RXQ_INDEX => {
                self.metrics.rx_queue_event_count.inc();
                self.process_rx();
            }
            TXQ_INDEX => {
                self.metrics.tx_queue_event_count.inc();
                self.process_tx();
                self.process_rx();
            }
            _ => {
                // The driver's event-queue notification acknowledges a transport reset.
                self.awaiting_event_ack = false;
                if self.reset_event_pending {
                    self.deliver_reset_event();
                }
                self.process_rx();
            }
        }
    }

    fn timer_events(&self) -> &[TimerFd] {
        self.muxer.timer_fds()
    }

    fn process_timer(&mut self, idx: usize) {
        if idx != 0 {
            return;
        }
        self.muxer.on_timer();
        self.process_rx();
    }

    fn host_event_sources(&self) -> Vec<EventSource> {
        vec![self.muxer.listener_source()]
    }

    fn process_host_event(&mut self, token: u32, events: EventSet) {
        if self.active.is_none() {
            // Clients wait in the listener's backlog until the driver is up.
            if token == LISTENER_TOKEN {
                self.muxer.set_listening(false);
            }
            return;
        }
        self.muxer.handle_event(token, events);
        self.process_rx();
    }

    fn take_event_source_changes(&mut self) -> Vec<EventSourceChange> {
        self.muxer.take_changes()
    }

    fn event_source_changes_applied(&mut self) {
        self.muxer.changes_applied();
    }
}
