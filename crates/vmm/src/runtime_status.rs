//! Runtime statuses the API's read mirror shows but only devices know: balloon statistics,
//! the free-page-hinting status and the memory-hotplug status.
//!
//! Devices push changes through a [`StatusSink`] (built by [`crate::Vmm::new`] from the
//! [`crate::VmmObserver`]); the facade publishes them with `RuntimeApiController::publish`, so
//! `GET /balloon/statistics`, `GET /balloon/hinting/status` and `GET /hotplug/memory` never wait
//! for the VMM thread. A sink may be called from the VMM thread or a vCPU thread (a driver's
//! configuration write), with a device lock held: it must not call into devices.

use std::sync::Arc;

use squib_config::schemas::{
    balloon::{BalloonHintingStatus, BalloonStats},
    hotplug_memory::HotplugMemoryStatus,
};

/// One runtime status change. `None` clears the status (a new microVM, or statistics off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeStatus {
    /// `GET /balloon/statistics`.
    BalloonStats(Option<Box<BalloonStats>>),
    /// `GET /balloon/hinting/status`.
    BalloonHinting(Option<BalloonHintingStatus>),
    /// `GET /hotplug/memory`.
    Hotplug(Option<HotplugMemoryStatus>),
}

/// Where devices send [`RuntimeStatus`] changes.
#[derive(Clone)]
pub struct StatusSink(Arc<dyn Fn(RuntimeStatus) + Send + Sync>);

impl std::fmt::Debug for StatusSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatusSink")
    }
}

impl StatusSink {
    /// A sink calling `f` for every change.
    pub fn new(f: impl Fn(RuntimeStatus) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// Publishes one change.
    pub fn publish(&self, status: RuntimeStatus) {
        (self.0)(status);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn test_sink_forwards_every_change() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = Arc::clone(&seen);
        let sink = StatusSink::new(move |s| s2.lock().unwrap().push(s));
        sink.clone().publish(RuntimeStatus::Hotplug(None));
        sink.publish(RuntimeStatus::BalloonStats(None));
        assert_eq!(seen.lock().unwrap().len(), 2);
        assert_eq!(format!("{sink:?}"), "StatusSink");
    }
}
