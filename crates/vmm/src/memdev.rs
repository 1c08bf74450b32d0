//! The VMM's handling of the memory devices' API actions (balloon, pmem, virtio-mem), kept out
//! of `vmm.rs`: [`handle`] says whether the action only needs to be applied to the
//! configuration document or has been answered already.
//!
//! Runs on the VMM thread.

use squib_config::{
    action::{ApiAction, ApiResponse},
    vm_config::VmConfig,
};

use crate::device_manager::DeviceManager;

/// What the VMM does after [`handle`].
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The device accepted it (or there is no device yet): apply the action to the
    /// configuration document and answer 204.
    Apply,
    /// Answer this.
    Reply(ApiResponse),
}

/// Balloon, pmem and memory-hotplug actions. `devices` is the running microVM's, if any.
pub fn handle(action: &ApiAction, devices: Option<&DeviceManager>) -> Outcome {
    match action {
        ApiAction::PutBalloon(_)
        | ApiAction::PatchBalloon(_)
        | ApiAction::PatchBalloonStatistics(_)
        | ApiAction::StartBalloonHinting(_)
        | ApiAction::BalloonHintingStatus
        | ApiAction::StopBalloonHinting => crate::balloon::handle(action, devices),
        ApiAction::PutPmem(_) | ApiAction::PatchPmem(_) | ApiAction::DeletePmem(_) => {
            crate::pmem::handle(action, devices)
        }
        ApiAction::PutHotplugMemory(_) | ApiAction::PatchHotplugMemory(_) => {
            crate::hotplug::handle(action, devices)
        }
        _ => Outcome::Reply(ApiResponse::bad_request(format!(
            "{} is not a memory device action",
            action.class().label()
        ))),
    }
}

/// After a snapshot restore: the memory devices' configuration, read back from the restored
/// devices (as Firecracker rebuilds its resources from the restored VMM), so that `GET
/// /balloon`, `GET /vm/config` and the post-boot `PATCH`es see them.
pub fn sync_config_from_devices(config: &mut VmConfig, devices: &DeviceManager) {
    config.balloon = devices
        .balloon()
        .and_then(|b| crate::balloon::api_config(b));
    config.pmem = devices
        .pmem_devices()
        .filter_map(|p| crate::pmem::api_config(p))
        .collect();
    config.memory_hotplug = devices
        .virtio_mem()
        .and_then(|m| crate::hotplug::api_config(m));
}
