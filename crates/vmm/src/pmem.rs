//! virtio-pmem's VMM side: at boot, each `PUT /pmem/{id}` device gets its backing file mapped
//! as a 2 MiB-aligned window past the 64-bit MMIO gap ([`HighMmioAllocator`]), added to the
//! guest through [`Vm::add_region`] (read-only for a read-only device, whose window also gets
//! a [`ReadOnlyWindow`] on the MMIO bus for the writes that then exit); a root device adds
//! `root=/dev/pmem<N> ro|rw` as Firecracker does. Also the restore of a saved device at its
//! saved address, and the post-boot actions (`PATCH` = rate limiter; `PUT`/`DELETE` would be
//! PCI hot-plug).
//!
//! Runs on the VMM thread.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use squib_config::{
    action::{ApiAction, ApiResponse},
    schemas::pmem::{PmemConfig, PmemUpdate, RawPmemConfig},
};
use squib_devices::persist::Persist;
use squib_devices::rate_limiter::{BucketUpdate, Clock, MonotonicClock, TokenBucketConfig};
use squib_devices::virtio::pmem::PmemState;
use squib_devices::virtio::{Pmem, PmemDeviceConfig, ReadOnlyWindow};
use squib_hv::Vm;
use squib_sys::pmem::{PMEM_ALIGNMENT, PmemMapError, PmemMapping, open_backing_file, window_len};
use vm_memory::GuestAddress;

use crate::device_manager::DeviceManager;
use crate::error::DeviceError;
use crate::high_mmio::HighMmioAllocator;
use crate::memdev::Outcome;
use crate::virtio_devices::rate_limiter;

/// Firecracker's text for hot-plug without PCI.
pub const PCI_NOT_ENABLED: &str = "PCI is not enabled";

/// A pmem device ready to register: the device, and the read-only window's bus device.
#[derive(Debug)]
pub struct BuiltPmem {
    /// The device.
    pub device: Arc<Mutex<Pmem>>,
    /// For a read-only device: `(window base, window length, bus device)`.
    pub read_only_window: Option<(u64, u64, ReadOnlyWindow)>,
}

fn create_error(e: &impl std::fmt::Display) -> DeviceError {
    DeviceError::Config(format!("Cannot create pmem device: {e}"))
}

/// Adds `mapping`'s window to the guest and builds the device around it.
fn build(
    vm: &Arc<dyn Vm>,
    mapping: PmemMapping,
    make: impl FnOnce(PmemMapping) -> Result<Pmem, String>,
) -> Result<BuiltPmem, DeviceError> {
    let read_only = mapping.read_only();
    let (base, len) = (mapping.guest_addr(), mapping.len());
    vm.add_region(Arc::clone(mapping.region()), 0, len, read_only)
        .map_err(|e| create_error(&format!("Cannot set the memory regions: {e}")))?;
    let device = make(mapping).map_err(|e| create_error(&e))?;
    let read_only_window = read_only.then(|| (base, len, device.read_only_window()));
    Ok(BuiltPmem {
        device: Arc::new(Mutex::new(device)),
        read_only_window,
    })
}

/// Creates the pmem device of `cfg` at boot: opens and maps the file at the next window.
pub fn create(
    vm: &Arc<dyn Vm>,
    alloc: &mut HighMmioAllocator,
    cfg: &PmemConfig,
) -> Result<BuiltPmem, DeviceError> {
    let (file, file_len) = open_backing_file(Path::new(&cfg.path_on_host), cfg.read_only)
        .map_err(|e| create_error(&e))?;
    let size =
        window_len(file_len).ok_or_else(|| create_error(&PmemMapError::TooLarge(file_len)))?;
    let base = alloc
        .allocate(size, PMEM_ALIGNMENT)
        .ok_or_else(|| create_error(&"Failed to allocate memory region"))?;
    let mapping = PmemMapping::map(file, file_len, cfg.read_only, GuestAddress(base))
        .map_err(|e| create_error(&e))?;
    let config = PmemDeviceConfig {
        id: cfg.id.clone(),
        path_on_host: cfg.path_on_host.clone(),
        root_device: cfg.root_device,
    };
    let limiter = rate_limiter(cfg.rate_limiter.as_ref());
    build(vm, mapping, move |m| {
        Pmem::new(config, m, limiter).map_err(|e| e.to_string())
    })
}

/// Rebuilds a saved pmem device: the file mapped again at the saved window.
pub fn restore(vm: &Arc<dyn Vm>, state: &PmemState) -> Result<BuiltPmem, DeviceError> {
    let restore_error = |e: &dyn std::fmt::Display| DeviceError::Restore(format!("Pmem: {e}"));
    if !HighMmioAllocator::contains(state.guest_addr, state.size)
        || !state.guest_addr.is_multiple_of(PMEM_ALIGNMENT)
    {
        return Err(restore_error(&format!(
            "invalid saved window {:#x} (+{:#x})",
            state.guest_addr, state.size
        )));
    }
    let mapping = PmemMapping::open(
        Path::new(&state.path_on_host),
        state.read_only,
        GuestAddress(state.guest_addr),
    )
    .map_err(|e| restore_error(&e))?;
    build(vm, mapping, |m| {
        Pmem::restore(m, state).map_err(|e| e.to_string())
    })
    .map_err(|e| restore_error(&e))
}

/// `root=/dev/pmem<index> ro|rw`, Firecracker's arguments for a root pmem device.
pub fn root_args(index: usize, read_only: bool) -> String {
    format!(
        "root=/dev/pmem{index} {}",
        if read_only { "ro" } else { "rw" }
    )
}

/// The `PUT /pmem/{id}` configuration of a running device (after a restore). The rate
/// limiter's configuration is not kept in the device, so it reads back as `null`.
pub fn api_config(pmem: &Mutex<Pmem>) -> Option<PmemConfig> {
    let dev = pmem.lock().unwrap_or_else(PoisonError::into_inner);
    PmemConfig::try_from(RawPmemConfig {
        id: dev.config().id.clone(),
        path_on_host: dev.config().path_on_host.clone(),
        root_device: dev.config().root_device,
        read_only: dev.mapping().read_only(),
        rate_limiter: None,
    })
    .ok()
}

fn to_bucket(b: &squib_config::schemas::rate_limiter::TokenBucketConfig) -> TokenBucketConfig {
    TokenBucketConfig {
        size: b.size,
        one_time_burst: b.one_time_burst,
        refill_time: b.refill_time,
    }
}

fn patch(upd: &PmemUpdate, devices: Option<&DeviceManager>) -> Outcome {
    let Some(pmem) = devices.and_then(|d| d.pmem(&upd.id)) else {
        return Outcome::Reply(ApiResponse::bad_request(
            "Pmem config error: Unable to patch the pmem device: Failed perform action on device: Device not found Please verify the request arguments.",
        ));
    };
    if let Some(rl) = &upd.rate_limiter {
        let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
        let bytes = BucketUpdate::from_config(
            rl.bandwidth.as_ref().map(to_bucket).as_ref(),
            Arc::clone(&clock),
        );
        let ops = BucketUpdate::from_config(rl.ops.as_ref().map(to_bucket).as_ref(), clock);
        pmem.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .update_rate_limiter(bytes, ops);
    }
    Outcome::Apply
}

/// `PUT`, `PATCH`, `DELETE /pmem/{id}`. Before boot a `PUT` only records the configuration
/// (Firecracker opens the file at boot); after boot `PUT` and `DELETE` are PCI hot-plug.
pub fn handle(action: &ApiAction, devices: Option<&DeviceManager>) -> Outcome {
    match action {
        ApiAction::PutPmem(_) if devices.is_none() => Outcome::Apply,
        ApiAction::PutPmem(_) | ApiAction::DeletePmem(_) => {
            Outcome::Reply(ApiResponse::bad_request(PCI_NOT_ENABLED))
        }
        ApiAction::PatchPmem(upd) => patch(upd, devices),
        _ => Outcome::Reply(ApiResponse::bad_request(
            "Pmem config error: unexpected action",
        )),
    }
}

/// Persistence of a pmem device (re-exported for the device manager).
pub fn save(pmem: &Mutex<Pmem>) -> PmemState {
    pmem.lock().unwrap_or_else(PoisonError::into_inner).save()
}
