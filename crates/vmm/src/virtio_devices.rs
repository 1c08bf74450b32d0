//! Attaching virtio devices to a microVM being built.
//!
//! For each configured device, in Firecracker's attach order (block with the root device first,
//! then rng): allocate a virtio-mmio slot and GSI ([`crate::mmio_layout`]), wrap the device model
//! in an [`MmioTransport`] on the MMIO bus, connect its interrupt through an irqfd (or an IRQ-line
//! fallback), register each queue's notify eventfd as an ioeventfd on `QueueNotify` (when the
//! backend cannot, the transport signals the same eventfd from the bus write), and hand back an
//! event-loop subscriber plus the command-line tokens announcing the device.
//!
//! Runs on the VMM thread during `InstanceStart`.

use std::sync::{Arc, Mutex};

use event_manager::MutEventSubscriber;
use squib_config::schemas::{drive::DriveConfig, rate_limiter::RateLimiterConfig};
use squib_core::GuestMemoryMmap;
use squib_devices::{
    Bus,
    rate_limiter::{RateLimiter, TokenBucket},
    virtio::{Block, BlockConfig, Entropy, MmioTransport, VirtioDevice, VirtioSubscriber},
};
use squib_hv::{DataMatch, HvError, IoEventAddress, Vm};

use crate::mmio_layout::{MmioAllocator, root_block_args};

/// Offset of the `QueueNotify` register in a virtio-mmio slot.
const QUEUE_NOTIFY_OFFSET: u64 = 0x50;

/// A subscriber the VMM event loop drives.
pub type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// The running virtio devices of a microVM, kept for post-boot updates (`PATCH /drives`).
#[derive(Default)]
pub struct VirtioDevices {
    /// Block devices by drive id.
    pub blocks: Vec<(String, Arc<Mutex<Block>>)>,
    /// The entropy device, if any.
    pub entropy: Option<Arc<Mutex<Entropy>>>,
    /// Event-loop subscribers (one per device).
    pub subscribers: Vec<Subscriber>,
    /// Command-line additions (`virtio_mmio.device=...`, `root=...`).
    pub cmdline: Vec<String>,
}

impl std::fmt::Debug for VirtioDevices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioDevices")
            .field("blocks", &self.blocks.len())
            .field("entropy", &self.entropy.is_some())
            .field("cmdline", &self.cmdline)
            .finish_non_exhaustive()
    }
}

/// Everything device attachment needs from the builder.
#[derive(Debug)]
pub struct AttachContext<'a> {
    /// The VM (irqfd, ioeventfd).
    pub vm: &'a Arc<dyn Vm>,
    /// Guest memory (queues live there).
    pub memory: &'a GuestMemoryMmap,
    /// The MMIO bus.
    pub mmio: &'a Bus,
    /// Slot allocator.
    pub slots: MmioAllocator,
}

/// Converts the API's rate limiter configuration into a device rate limiter.
pub fn rate_limiter(cfg: Option<&RateLimiterConfig>) -> RateLimiter {
    let bucket = |b: Option<&squib_config::schemas::rate_limiter::TokenBucketConfig>| {
        b.and_then(|b| TokenBucket::new(b.size, b.one_time_burst.unwrap_or(0), b.refill_time))
    };
    match cfg {
        Some(c) => RateLimiter::new(bucket(c.bandwidth.as_ref()), bucket(c.ops.as_ref())),
        None => RateLimiter::default(),
    }
}

/// The device-side configuration of a drive.
pub fn block_config(d: &DriveConfig) -> Result<BlockConfig, String> {
    let Some(path) = d.path_on_host.as_ref() else {
        return Err("vhost-user-block drives are not supported by this squib build yet.".into());
    };
    Ok(BlockConfig {
        id: d.drive_id.clone(),
        path: path.into(),
        read_only: d.read_only(),
        root: d.is_root_device,
        partuuid: d.partuuid.clone(),
        cache_type: d.cache_type,
        io_engine: d.io_engine,
        rate_limiter: rate_limiter(d.rate_limiter.as_ref()),
    })
}

/// The error text Firecracker gives when a block device cannot be created.
pub fn block_error(e: &impl std::fmt::Display) -> String {
    format!(
        "Drive config error: Unable to create the virtio block device: Virtio backend error: {e}"
    )
}

impl AttachContext<'_> {
    fn attach<D: VirtioDevice + 'static>(
        &mut self,
        device: Arc<Mutex<D>>,
        out: &mut VirtioDevices,
    ) -> Result<(), String> {
        let slot = self
            .slots
            .allocate()
            .ok_or("no free virtio-mmio slot (GSIs exhausted)")?;
        let irq = crate::builder::irq_line(self.vm, slot.gsi).map_err(|e| e.to_string())?;
        let dyn_dev: Arc<Mutex<dyn VirtioDevice>> = device.clone();
        let transport =
            MmioTransport::new(self.memory.clone(), irq, dyn_dev).map_err(|e| e.to_string())?;
        self.mmio
            .insert(
                Arc::new(Mutex::new(transport)),
                slot.base,
                crate::mmio_layout::MMIO_SLOT_SIZE,
            )
            .map_err(|e| e.to_string())?;
        {
            let dev = device.lock().map_err(|_| "device lock poisoned")?;
            for (i, evt) in dev.queue_events().iter().enumerate() {
                let idx = u32::try_from(i).map_err(|_| "too many queues")?;
                let addr = IoEventAddress::Mmio(slot.base + QUEUE_NOTIFY_OFFSET);
                match self.vm.register_ioeventfd(evt, addr, DataMatch::U32(idx)) {
                    Ok(()) | Err(HvError::Unsupported(_)) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        }
        out.subscribers
            .push(Arc::new(Mutex::new(VirtioSubscriber::new(device))));
        out.cmdline.push(slot.cmdline_token());
        Ok(())
    }

    /// Attach every configured block device (root first) and the entropy device.
    pub fn attach_all(
        mut self,
        drives: &[DriveConfig],
        entropy: Option<&RateLimiterConfig>,
        has_entropy: bool,
    ) -> Result<VirtioDevices, String> {
        let mut out = VirtioDevices::default();
        let mut ordered: Vec<&DriveConfig> = drives.iter().filter(|d| d.is_root_device).collect();
        ordered.extend(drives.iter().filter(|d| !d.is_root_device));
        for d in ordered {
            let block = Block::new(block_config(d)?).map_err(|e| block_error(&e))?;
            if d.is_root_device {
                out.cmdline
                    .push(root_block_args(d.partuuid.as_deref(), d.read_only()));
            }
            let block = Arc::new(Mutex::new(block));
            self.attach(Arc::clone(&block), &mut out)?;
            out.blocks.push((d.drive_id.clone(), block));
        }
        if has_entropy {
            let rng = Entropy::new(rate_limiter(entropy))
                .map_err(|e| format!("Entropy device error: {e}"))?;
            let rng = Arc::new(Mutex::new(rng));
            self.attach(Arc::clone(&rng), &mut out)?;
            out.entropy = Some(rng);
        }
        Ok(out)
    }
}
