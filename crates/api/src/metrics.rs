//! The API server's metrics: Firecracker's `get_api_requests`, `put_api_requests`,
//! `patch_api_requests`, `deprecated_api` and the API side of `latencies_us`, counted into
//! [`squib_core::metrics::METRICS`].
//!
//! As in Firecracker, a request is counted under its resource when it is routed (`*_count`), and
//! under `*_fails` when it is refused before it reaches the VMM (its body, id or path did not
//! parse or validate); errors the VMM answers are not `*_fails`. The request middleware does the
//! counting: [`request_counters`] names the counters, and [`mark_dispatched`] (called when a
//! request is handed to the controller) tells it the request got past parsing.

use std::cell::Cell;

use axum::http::Method;
use squib_config::{
    action::ApiAction,
    schemas::{snapshot::SnapshotType, vm::VmStateUpdate},
};
use squib_core::metrics::{Counter, METRICS, StoreMetric};

tokio::task_local! {
    /// Set when the current request was dispatched to the controller.
    static DISPATCHED: Cell<bool>;
}

/// The `(count, fails)` counters of a request, if Firecracker counts it.
pub(crate) fn request_counters(
    method: &Method,
    path: &str,
) -> Option<(&'static Counter, Option<&'static Counter>)> {
    let mut segments = path.trim_start_matches('/').split('/');
    let first = segments.next().unwrap_or_default();
    let second = segments.next();
    let (get, put, patch) = (
        &METRICS.get_api_requests,
        &METRICS.put_api_requests,
        &METRICS.patch_api_requests,
    );
    if *method == Method::GET {
        let count = match (first, second) {
            ("", _) => &get.instance_info_count,
            ("machine-config", _) => &get.machine_cfg_count,
            ("mmds", _) => &get.mmds_count,
            ("version", _) => &get.vmm_version_count,
            ("hotplug", Some("memory")) => &get.hotplug_memory_count,
            _ => return None,
        };
        return Some((count, None));
    }
    let (count, fails) = if *method == Method::PUT {
        match (first, second) {
            ("actions", _) => (&put.actions_count, &put.actions_fails),
            ("boot-source", _) => (&put.boot_source_count, &put.boot_source_fails),
            ("drives", _) => (&put.drive_count, &put.drive_fails),
            ("logger", _) => (&put.logger_count, &put.logger_fails),
            ("machine-config", _) => (&put.machine_cfg_count, &put.machine_cfg_fails),
            ("cpu-config", _) => (&put.cpu_cfg_count, &put.cpu_cfg_fails),
            ("metrics", _) => (&put.metrics_count, &put.metrics_fails),
            ("network-interfaces", _) => (&put.network_count, &put.network_fails),
            ("mmds", _) => (&put.mmds_count, &put.mmds_fails),
            ("vsock", _) => (&put.vsock_count, &put.vsock_fails),
            ("pmem", _) => (&put.pmem_count, &put.pmem_fails),
            ("serial", _) => (&put.serial_count, &put.serial_fails),
            ("hotplug", Some("memory")) => (&put.hotplug_memory_count, &put.hotplug_memory_fails),
            _ => return None,
        }
    } else if *method == Method::PATCH {
        match (first, second) {
            ("drives", _) => (&patch.drive_count, &patch.drive_fails),
            ("network-interfaces", _) => (&patch.network_count, &patch.network_fails),
            ("machine-config", _) => (&patch.machine_cfg_count, &patch.machine_cfg_fails),
            ("mmds", _) => (&patch.mmds_count, &patch.mmds_fails),
            ("hotplug", Some("memory")) => {
                (&patch.hotplug_memory_count, &patch.hotplug_memory_fails)
            }
            ("pmem", _) => (&patch.pmem_count, &patch.pmem_fails),
            _ => return None,
        }
    } else {
        return None;
    };
    Some((count, Some(fails)))
}

/// Runs `handler` (one request) and reports whether it reached the controller.
pub(crate) async fn track_dispatch<F: Future>(handler: F) -> (F::Output, bool) {
    DISPATCHED
        .scope(Cell::new(false), async {
            let out = handler.await;
            (out, DISPATCHED.with(Cell::get))
        })
        .await
}

/// Records that the current request was handed to the controller (it parsed).
pub(crate) fn mark_dispatched() {
    let _ = DISPATCHED.try_with(|d| d.set(true));
}

/// The API-side latency metric of `action` and its log label (Firecracker's
/// `'<label>' API request took N us.`).
pub(crate) fn latency_metric(action: &ApiAction) -> Option<(&'static StoreMetric, &'static str)> {
    let l = &METRICS.latencies_us;
    Some(match action {
        ApiAction::PatchVm(VmStateUpdate::Paused) => (&l.pause_vm, "pause vm"),
        ApiAction::PatchVm(VmStateUpdate::Resumed) => (&l.resume_vm, "resume vm"),
        ApiAction::CreateSnapshot(p) => match p.snapshot_type {
            SnapshotType::Full => (&l.full_create_snapshot, "create full snapshot"),
            SnapshotType::Diff => (&l.diff_create_snapshot, "create diff snapshot"),
        },
        ApiAction::LoadSnapshot(_) => (&l.load_snapshot, "load snapshot"),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_request_counters_follow_firecracker_routing() {
        let (c, f) = request_counters(&Method::GET, "/").unwrap();
        assert!(std::ptr::eq(
            c,
            &raw const METRICS.get_api_requests.instance_info_count
        ));
        assert!(f.is_none());
        let (c, f) = request_counters(&Method::PUT, "/mmds/config").unwrap();
        assert!(std::ptr::eq(
            c,
            &raw const METRICS.put_api_requests.mmds_count
        ));
        assert!(std::ptr::eq(
            f.unwrap(),
            &raw const METRICS.put_api_requests.mmds_fails
        ));
        let (c, _) = request_counters(&Method::PATCH, "/hotplug/memory").unwrap();
        assert!(std::ptr::eq(
            c,
            &raw const METRICS.patch_api_requests.hotplug_memory_count
        ));
        assert!(request_counters(&Method::GET, "/vm/config").is_none());
        assert!(request_counters(&Method::PUT, "/snapshot/create").is_none());
        assert!(request_counters(&Method::PUT, "/entropy").is_none());
        assert!(request_counters(&Method::DELETE, "/drives/a").is_none());
    }

    #[tokio::test]
    async fn test_track_dispatch_reports_the_mark() {
        assert!(!track_dispatch(async {}).await.1);
        assert!(track_dispatch(async { mark_dispatched() }).await.1);
        mark_dispatched(); // outside a request: ignored
    }
}
