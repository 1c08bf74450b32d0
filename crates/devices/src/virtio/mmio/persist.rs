//! Snapshot state of the virtio-mmio transport.
//!
//! [`MmioTransportState`] holds every register a driver can observe (status, feature selectors,
//! the driver's features, queue selector, each queue's configuration registers), the interrupt
//! status, and, when the device is active, its queues as the device last left them (next
//! avail/used indices included). [`MmioTransport::restore`] rebuilds the register file around an
//! already-restored, inactive device and re-activates it with those queues, validated against
//! guest memory: a state file is untrusted, so an inconsistent one is an error, never a panic.
//!
//! Runs on the VMM thread while the vCPUs are paused (save) or not yet created (restore).

use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use squib_core::GuestMemoryMmap;

use super::{MmioInterrupt, MmioTransport, MmioTransportMetrics, QueueRegs};
use crate::interrupt::IrqLine;
use crate::log::RateLimitedLog;
use crate::virtio::persist::{QueueRestoreError, QueueSnapshot, restore_queues, save_queues};
use crate::virtio::status::DRIVER_OK;
use crate::virtio::{ActivateError, VirtioDevice};

/// One queue's configuration registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRegsState {
    /// `QueueNumMax`.
    pub max_size: u16,
    /// `QueueNum`.
    pub size: u16,
    /// `QueueReady`.
    pub ready: bool,
    /// Descriptor table address.
    pub desc: u64,
    /// Available ring address.
    pub avail: u64,
    /// Used ring address.
    pub used: u64,
}

/// The transport as a snapshot saves it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmioTransportState {
    /// Virtio device id.
    pub device_type: u32,
    /// `Status`.
    pub status: u32,
    /// `DeviceFeaturesSel`.
    pub device_features_sel: u32,
    /// `DriverFeaturesSel`.
    pub driver_features_sel: u32,
    /// What the driver wrote to `DriverFeatures`.
    pub driver_features: u64,
    /// `QueueSel`.
    pub queue_sel: u32,
    /// Per-queue registers.
    pub queues: Vec<QueueRegsState>,
    /// `InterruptStatus`.
    pub interrupt_status: u32,
    /// The device's queues while active (empty otherwise).
    pub active_queues: Vec<QueueSnapshot>,
}

/// Why a transport cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum MmioRestoreError {
    /// The saved device type is not the device's.
    #[error("saved virtio device type {saved} does not match the device ({actual})")]
    DeviceType {
        /// In the state.
        saved: u32,
        /// Of the restored device.
        actual: u32,
    },
    /// The saved queue registers do not match the device's queues.
    #[error("saved virtio queue registers do not match the device: {0}")]
    QueueRegs(String),
    /// The saved active queues are invalid.
    #[error("{0}")]
    Queue(#[from] QueueRestoreError),
    /// The device refused activation.
    #[error("cannot re-activate the device: {0}")]
    Activate(#[from] ActivateError),
    /// Duplicating the device's queue eventfds failed.
    #[error("cannot duplicate queue eventfds: {0}")]
    Io(#[from] std::io::Error),
}

impl MmioTransport {
    /// Captures the transport and its device's queues (call with the vCPUs paused).
    pub fn save(&self) -> MmioTransportState {
        let active_queues = {
            let dev = self.lock_device();
            if dev.is_activated() {
                save_queues(dev.queues())
            } else {
                Vec::new()
            }
        };
        MmioTransportState {
            device_type: self.device_type,
            status: self.status,
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            driver_features: self.driver_features,
            queue_sel: self.queue_sel,
            queues: self
                .queues
                .iter()
                .map(|q| QueueRegsState {
                    max_size: q.max_size,
                    size: q.size,
                    ready: q.ready,
                    desc: q.desc,
                    avail: q.avail,
                    used: q.used,
                })
                .collect(),
            interrupt_status: self.interrupt.status(),
            active_queues,
        }
    }

    /// Rebuilds a transport around `device` (restored, inactive) from `state`; if the device
    /// was active, activates it with the saved queues.
    pub fn restore(
        mem: GuestMemoryMmap,
        irq: Arc<dyn IrqLine>,
        device: Arc<Mutex<dyn VirtioDevice>>,
        state: &MmioTransportState,
    ) -> Result<Self, MmioRestoreError> {
        let mut t = Self::new(mem.clone(), irq, device)?;
        if state.device_type != t.device_type {
            return Err(MmioRestoreError::DeviceType {
                saved: state.device_type,
                actual: t.device_type,
            });
        }
        if state.queues.len() != t.queues.len()
            || state
                .queues
                .iter()
                .zip(&t.queues)
                .any(|(s, q)| s.max_size != q.max_size || s.size > q.max_size)
        {
            return Err(MmioRestoreError::QueueRegs(format!(
                "{} saved, {} expected",
                state.queues.len(),
                t.queues.len()
            )));
        }
        t.status = state.status;
        t.device_features_sel = state.device_features_sel;
        t.driver_features_sel = state.driver_features_sel;
        t.driver_features = state.driver_features & t.avail_features;
        t.queue_sel = state.queue_sel;
        t.queues = state
            .queues
            .iter()
            .map(|s| QueueRegs {
                max_size: s.max_size,
                size: s.size,
                ready: s.ready,
                desc: s.desc,
                avail: s.avail,
                used: s.used,
            })
            .collect();
        t.interrupt = Arc::new(MmioInterrupt::restored(
            Arc::clone(t.interrupt.irq()),
            state.interrupt_status,
        ));
        t.metrics = Arc::new(MmioTransportMetrics::default());
        t.log = RateLimitedLog::default();
        if state.status & DRIVER_OK != 0 && !state.active_queues.is_empty() {
            let queues = restore_queues(&state.active_queues, t.queues.len(), &mem)?;
            let interrupt: Arc<dyn crate::virtio::VirtioInterrupt> = t.interrupt.clone();
            t.device
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .activate(mem, interrupt, queues)?;
        }
        Ok(t)
    }
}
