//! Conversions from the API's device configuration to device models (used by the VMM at
//! `PUT /drives` and by the device manager at boot).
//!
//! Runs on the VMM thread.

use std::sync::{Arc, Mutex};

use event_manager::MutEventSubscriber;
use squib_config::schemas::{drive::DriveConfig, rate_limiter::RateLimiterConfig};
use squib_devices::{
    rate_limiter::{RateLimiter, TokenBucket},
    virtio::BlockConfig,
};

/// A subscriber the VMM event loop drives.
pub type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

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

/// Creates a net device (opens the tap) from `PUT /network-interfaces`, with Firecracker's
/// error text.
pub fn create_net(
    n: &squib_config::schemas::network_interface::NetworkInterfaceConfig,
) -> Result<squib_devices::virtio::Net, String> {
    squib_devices::virtio::Net::new(squib_devices::virtio::NetConfig {
        iface_id: n.iface_id.clone(),
        host_dev_name: n.host_dev_name.clone(),
        guest_mac: n.guest_mac.map(|m| m.bytes()),
        mtu: n.mtu,
        rx_rate_limiter: rate_limiter(n.rx_rate_limiter.as_ref()),
        tx_rate_limiter: rate_limiter(n.tx_rate_limiter.as_ref()),
    })
    .map_err(|e| format!("Network config error: Could not create the network device: {e}"))
}

/// Creates the vsock device (binds `uds_path`) from `PUT /vsock`, with Firecracker's text.
pub fn create_vsock(
    v: &squib_config::schemas::vsock::VsockConfig,
) -> Result<squib_devices::virtio::Vsock, String> {
    squib_devices::virtio::Vsock::new(&squib_devices::virtio::VsockConfig {
        guest_cid: u64::from(v.guest_cid),
        uds_path: v.uds_path.clone().into(),
    })
    .map_err(|e| format!("Vsock config error: {e}"))
}
