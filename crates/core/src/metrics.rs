//! The metrics registry: lock-free counters shaped like Firecracker's, and the process-wide
//! metric groups every crate counts into.
//!
//! # Primitives
//!
//! - [`Counter`] is Firecracker's `SharedIncMetric`: a monotonically increasing total. When it is
//!   **serialized** it writes the increase since the previous serialization (the "delta") and
//!   moves its flush mark, so every metrics line reports what happened since the previous line.
//!   [`Counter::count`] always returns the running total; [`Counter::fetch_diff`] reads the
//!   pending delta without moving the mark (Firecracker's `fetch_diff`, used for aggregates).
//! - [`StoreMetric`] is Firecracker's `SharedStoreMetric`: a current value, serialized as is.
//! - [`LatencyAggregate`] is Firecracker's `LatencyAggregateMetrics`: `min_us`/`max_us` are
//!   store metrics (they persist across flushes) and `sum_us` is a counter (a delta).
//!
//! Every operation is a relaxed atomic; nothing here takes a lock.
//!
//! # Groups
//!
//! Device groups live with their devices (for example the block device's `BlockMetrics`, one
//! per device, shared through an `Arc` with the VMM's metrics writer). The groups that belong to
//! the process rather than to a device (API request counters, vCPU exits, latencies, the logger,
//! signals, ...) are fields of [`ProcessMetrics`], reachable through the [`METRICS`] static from
//! any crate. Field names are Firecracker 1.17's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

/// A monotonically increasing event counter (Firecracker's `SharedIncMetric`).
///
/// Serializing it emits the increase since the previous serialization (see the module docs).
#[derive(Debug, Default)]
pub struct Counter {
    total: AtomicU64,
    flushed: AtomicU64,
}

impl Counter {
    /// A zeroed counter, usable in `const`/`static` context.
    pub const fn new() -> Self {
        Self {
            total: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
        }
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n` (wrapping on overflow, which takes centuries at any realistic rate).
    pub fn add(&self, n: u64) {
        self.total.fetch_add(n, Ordering::Relaxed);
    }

    /// The running total since creation.
    pub fn count(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The increase since the previous flush, without moving the flush mark.
    pub fn fetch_diff(&self) -> u64 {
        self.count()
            .wrapping_sub(self.flushed.load(Ordering::Relaxed))
    }

    /// Returns the increase since the previous call (or since creation) and moves the flush mark.
    pub fn take_delta(&self) -> u64 {
        let total = self.total.load(Ordering::Relaxed);
        let previous = self.flushed.swap(total, Ordering::Relaxed);
        total.wrapping_sub(previous)
    }
}

impl Serialize for Counter {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.take_delta())
    }
}

/// A value that is stored rather than counted (Firecracker's `SharedStoreMetric`): serialized as
/// its current value, never reset by a flush.
#[derive(Debug, Default)]
pub struct StoreMetric(AtomicU64);

impl StoreMetric {
    /// Zero, usable in `const`/`static` context.
    pub const fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    /// Replaces the value.
    pub fn store(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }

    /// The current value.
    pub fn fetch(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Serialize for StoreMetric {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.fetch())
    }
}

/// Firecracker's `LatencyAggregateMetrics`: minimum, maximum and sum of durations in
/// microseconds.
///
/// Serializes as `{"min_us":..,"max_us":..,"sum_us":..}`: the smallest and largest duration
/// ever recorded (0 before the first sample; like Firecracker's store metrics they are not reset
/// by a flush) and the increase of the sum since the previous flush.
#[derive(Debug)]
pub struct LatencyAggregate {
    min_us: AtomicU64,
    max_us: AtomicU64,
    /// Sum of all recorded durations.
    pub sum_us: Counter,
}

impl Default for LatencyAggregate {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyAggregate {
    /// No samples yet.
    pub const fn new() -> Self {
        Self {
            min_us: AtomicU64::new(u64::MAX),
            max_us: AtomicU64::new(0),
            sum_us: Counter::new(),
        }
    }

    /// Records one duration.
    pub fn record(&self, us: u64) {
        self.min_us.fetch_min(us, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
        self.sum_us.add(us);
    }

    /// Times a scope: the duration from now until the guard is dropped is recorded.
    pub fn start(&self) -> LatencyTimer<'_> {
        LatencyTimer {
            start: Instant::now(),
            metric: self,
        }
    }

    /// Smallest duration recorded (`None` before the first sample).
    pub fn min_us(&self) -> Option<u64> {
        let v = self.min_us.load(Ordering::Relaxed);
        (v != u64::MAX).then_some(v)
    }

    /// Largest duration recorded (0 before the first sample).
    pub fn max_us(&self) -> u64 {
        self.max_us.load(Ordering::Relaxed)
    }
}

impl Serialize for LatencyAggregate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("min_us", &self.min_us().unwrap_or(0))?;
        map.serialize_entry("max_us", &self.max_us())?;
        map.serialize_entry("sum_us", &self.sum_us)?;
        map.end()
    }
}

/// Records the time from its creation to its drop into a [`LatencyAggregate`].
#[derive(Debug)]
#[must_use = "the duration is recorded when the timer is dropped"]
pub struct LatencyTimer<'a> {
    start: Instant,
    metric: &'a LatencyAggregate,
}

impl Drop for LatencyTimer<'_> {
    fn drop(&mut self) {
        self.metric.record(elapsed_us(self.start));
    }
}

/// Microseconds since `start`, saturating.
pub fn elapsed_us(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Milliseconds since the Unix epoch (the `utc_timestamp_ms` of a metrics line).
pub fn utc_timestamp_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Declares a metric group: a `Serialize` struct of metrics with a `const fn new()`.
macro_rules! metric_group {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident: $ty:ident,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Default, Serialize)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
        }

        impl $name {
            /// Every metric at zero.
            pub const fn new() -> Self {
                Self { $($field: $ty::new(),)* }
            }
        }
    };
}

metric_group! {
    /// `api_server`: process start-up time, measured when the API server is ready.
    ApiServerMetrics {
        /// Wall-clock µs from the jailer's `--start-time-us` to the API server being ready.
        process_startup_time_us: StoreMetric,
        /// CPU µs from `--start-time-cpu-us` (plus `--parent-cpu-time-us`) to the same point.
        process_startup_time_cpu_us: StoreMetric,
    }
}

metric_group! {
    /// `get_api_requests`: GET requests by resource.
    GetRequestsMetrics {
        /// `GET /`.
        instance_info_count: Counter,
        /// `GET /machine-config`.
        machine_cfg_count: Counter,
        /// `GET /mmds`.
        mmds_count: Counter,
        /// `GET /version`.
        vmm_version_count: Counter,
        /// `GET /hotplug/memory`.
        hotplug_memory_count: Counter,
    }
}

metric_group! {
    /// `put_api_requests`: PUT requests by resource, and those whose body or path failed to parse.
    PutRequestsMetrics {
        /// `PUT /actions`.
        actions_count: Counter,
        /// Failed `PUT /actions`.
        actions_fails: Counter,
        /// `PUT /boot-source`.
        boot_source_count: Counter,
        /// Failed `PUT /boot-source`.
        boot_source_fails: Counter,
        /// `PUT /drives/{id}`.
        drive_count: Counter,
        /// Failed `PUT /drives/{id}`.
        drive_fails: Counter,
        /// `PUT /logger`.
        logger_count: Counter,
        /// Failed `PUT /logger`.
        logger_fails: Counter,
        /// `PUT /machine-config`.
        machine_cfg_count: Counter,
        /// Failed `PUT /machine-config`.
        machine_cfg_fails: Counter,
        /// `PUT /cpu-config`.
        cpu_cfg_count: Counter,
        /// Failed `PUT /cpu-config`.
        cpu_cfg_fails: Counter,
        /// `PUT /metrics`.
        metrics_count: Counter,
        /// Failed `PUT /metrics`.
        metrics_fails: Counter,
        /// `PUT /network-interfaces/{id}`.
        network_count: Counter,
        /// Failed `PUT /network-interfaces/{id}`.
        network_fails: Counter,
        /// `PUT /mmds`, `/mmds/config`.
        mmds_count: Counter,
        /// Failed `PUT /mmds`, `/mmds/config`.
        mmds_fails: Counter,
        /// `PUT /vsock`.
        vsock_count: Counter,
        /// Failed `PUT /vsock`.
        vsock_fails: Counter,
        /// `PUT /pmem/{id}`.
        pmem_count: Counter,
        /// Failed `PUT /pmem/{id}`.
        pmem_fails: Counter,
        /// `PUT /serial`.
        serial_count: Counter,
        /// Failed `PUT /serial`.
        serial_fails: Counter,
        /// `PUT /hotplug/memory`.
        hotplug_memory_count: Counter,
        /// Failed `PUT /hotplug/memory`.
        hotplug_memory_fails: Counter,
    }
}

metric_group! {
    /// `patch_api_requests`: PATCH requests by resource, and those that failed to parse.
    PatchRequestsMetrics {
        /// `PATCH /drives/{id}`.
        drive_count: Counter,
        /// Failed `PATCH /drives/{id}`.
        drive_fails: Counter,
        /// `PATCH /network-interfaces/{id}`.
        network_count: Counter,
        /// Failed `PATCH /network-interfaces/{id}`.
        network_fails: Counter,
        /// `PATCH /machine-config`.
        machine_cfg_count: Counter,
        /// Failed `PATCH /machine-config`.
        machine_cfg_fails: Counter,
        /// `PATCH /mmds`.
        mmds_count: Counter,
        /// Failed `PATCH /mmds`.
        mmds_fails: Counter,
        /// `PATCH /hotplug/memory`.
        hotplug_memory_count: Counter,
        /// Failed `PATCH /hotplug/memory`.
        hotplug_memory_fails: Counter,
        /// `PATCH /pmem/{id}`.
        pmem_count: Counter,
        /// Failed `PATCH /pmem/{id}`.
        pmem_fails: Counter,
    }
}

metric_group! {
    /// `deprecated_api`: requests that used a deprecated input.
    DeprecatedApiMetrics {
        /// Requests answered with `Deprecation: true`.
        deprecated_http_api_calls: Counter,
    }
}

metric_group! {
    /// `logger`: the telemetry system's own losses.
    LoggerSystemMetrics {
        /// Metrics lines that could not be written.
        missed_metrics_count: Counter,
        /// Metrics lines that could not be serialized.
        metrics_fails: Counter,
        /// Log lines that could not be written.
        missed_log_count: Counter,
        /// Log lines dropped by a rate-limited (guest-triggerable) call site.
        rate_limited_log_count: Counter,
    }
}

metric_group! {
    /// `latencies_us`: the duration of the last pause, resume, snapshot create and load, as seen
    /// by the API (whole request) and by the VMM (`vmm_*`, the action alone).
    PerformanceMetrics {
        /// Last full `PUT /snapshot/create`.
        full_create_snapshot: StoreMetric,
        /// Last diff `PUT /snapshot/create`.
        diff_create_snapshot: StoreMetric,
        /// Last `PUT /snapshot/load`.
        load_snapshot: StoreMetric,
        /// Last `PATCH /vm` Paused.
        pause_vm: StoreMetric,
        /// Last `PATCH /vm` Resumed.
        resume_vm: StoreMetric,
        /// VMM part of the last full snapshot.
        vmm_full_create_snapshot: StoreMetric,
        /// VMM part of the last diff snapshot.
        vmm_diff_create_snapshot: StoreMetric,
        /// VMM part of the last snapshot load.
        vmm_load_snapshot: StoreMetric,
        /// VMM part of the last pause.
        vmm_pause_vm: StoreMetric,
        /// VMM part of the last resume.
        vmm_resume_vm: StoreMetric,
    }
}

metric_group! {
    /// `seccomp`: seccomp violations.
    SeccompMetrics {
        /// Number of seccomp faults (squib installs no filter: always 0).
        num_faults: StoreMetric,
    }
}

metric_group! {
    /// `signals`: fatal and notable signals received by the process.
    SignalMetrics {
        /// SIGBUS received.
        sigbus: StoreMetric,
        /// SIGSEGV received.
        sigsegv: StoreMetric,
        /// SIGXFSZ received.
        sigxfsz: StoreMetric,
        /// SIGXCPU received.
        sigxcpu: StoreMetric,
        /// SIGPIPE received (a counter, as in Firecracker).
        sigpipe: Counter,
        /// SIGHUP received.
        sighup: StoreMetric,
        /// SIGILL received.
        sigill: StoreMetric,
    }
}

metric_group! {
    /// `vcpu`: exits handled by the VMM on vCPU threads, and their handling time.
    VcpuMetrics {
        /// Port reads.
        exit_io_in: Counter,
        /// Port writes.
        exit_io_out: Counter,
        /// MMIO reads.
        exit_mmio_read: Counter,
        /// MMIO writes.
        exit_mmio_write: Counter,
        /// Unexpected or faulty exits and failed runs.
        failures: Counter,
        /// Failed `KVM_KVMCLOCK_CTRL` calls.
        kvmclock_ctrl_fails: Counter,
        /// Time spent handling port reads.
        exit_io_in_agg: LatencyAggregate,
        /// Time spent handling port writes.
        exit_io_out_agg: LatencyAggregate,
        /// Time spent handling MMIO reads.
        exit_mmio_read_agg: LatencyAggregate,
        /// Time spent handling MMIO writes.
        exit_mmio_write_agg: LatencyAggregate,
    }
}

metric_group! {
    /// `vmm`: the VMM itself.
    VmmMetrics {
        /// 1 once the process panicked.
        panic_count: StoreMetric,
    }
}

metric_group! {
    /// `interrupts`: device interrupts raised towards the guest.
    InterruptMetrics {
        /// Interrupts triggered by virtio devices.
        triggers: Counter,
        /// MSI-X configuration updates (PCI only: always 0 with virtio-mmio).
        config_updates: Counter,
    }
}

metric_group! {
    /// `pvm_emulation` (squib only): instructions the VMM emulated after the nested `kvm_pvm`
    /// host's KVM refused them (`KVM_EXIT_INTERNAL_ERROR`, emulation failure). Serialized only
    /// once anything was counted ([`PvmEmulationMetrics::any`]), so a microVM that never needs
    /// it keeps Firecracker's exact key set.
    PvmEmulationMetrics {
        /// `fwait` retired.
        fwait: Counter,
        /// `clac` retired.
        clac: Counter,
        /// `stac` retired.
        stac: Counter,
        /// `popcnt` retired.
        popcnt: Counter,
        /// `ldmxcsr` retired.
        ldmxcsr: Counter,
        /// `stmxcsr` retired.
        stmxcsr: Counter,
        /// `xsave` retired.
        xsave: Counter,
        /// `xrstor` retired.
        xrstor: Counter,
        /// Emulated instructions that raised an architectural exception instead (injected).
        exceptions: Counter,
        /// Emulation failures the VMM could not emulate either (the microVM stops).
        refused: Counter,
    }
}

impl PvmEmulationMetrics {
    /// `true` once any counter of the group moved.
    pub fn any(&self) -> bool {
        [
            &self.fwait,
            &self.clac,
            &self.stac,
            &self.popcnt,
            &self.ldmxcsr,
            &self.stmxcsr,
            &self.xsave,
            &self.xrstor,
            &self.exceptions,
            &self.refused,
        ]
        .iter()
        .any(|c| c.count() > 0)
    }
}

/// The metric groups that belong to the process, not to one device (Firecracker's `METRICS`
/// minus its device groups). Serialized by the VMM's metrics writer in Firecracker's order.
#[derive(Debug, Default)]
pub struct ProcessMetrics {
    /// `api_server`.
    pub api_server: ApiServerMetrics,
    /// `deprecated_api`.
    pub deprecated_api: DeprecatedApiMetrics,
    /// `get_api_requests`.
    pub get_api_requests: GetRequestsMetrics,
    /// `latencies_us`.
    pub latencies_us: PerformanceMetrics,
    /// `logger`.
    pub logger: LoggerSystemMetrics,
    /// `patch_api_requests`.
    pub patch_api_requests: PatchRequestsMetrics,
    /// `put_api_requests`.
    pub put_api_requests: PutRequestsMetrics,
    /// `seccomp`.
    pub seccomp: SeccompMetrics,
    /// `vcpu`.
    pub vcpu: VcpuMetrics,
    /// `vmm`.
    pub vmm: VmmMetrics,
    /// `signals`.
    pub signals: SignalMetrics,
    /// `interrupts`.
    pub interrupts: InterruptMetrics,
    /// `pvm_emulation` (squib only, see [`PvmEmulationMetrics`]).
    pub pvm_emulation: PvmEmulationMetrics,
}

impl ProcessMetrics {
    /// Every metric at zero.
    pub const fn new() -> Self {
        Self {
            api_server: ApiServerMetrics::new(),
            deprecated_api: DeprecatedApiMetrics::new(),
            get_api_requests: GetRequestsMetrics::new(),
            latencies_us: PerformanceMetrics::new(),
            logger: LoggerSystemMetrics::new(),
            patch_api_requests: PatchRequestsMetrics::new(),
            put_api_requests: PutRequestsMetrics::new(),
            seccomp: SeccompMetrics::new(),
            vcpu: VcpuMetrics::new(),
            vmm: VmmMetrics::new(),
            signals: SignalMetrics::new(),
            interrupts: InterruptMetrics::new(),
            pvm_emulation: PvmEmulationMetrics::new(),
        }
    }
}

/// The process-wide metric groups. Count into them from anywhere:
/// `squib_core::metrics::METRICS.vcpu.exit_io_in.inc()`.
pub static METRICS: ProcessMetrics = ProcessMetrics::new();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_counter_serialize_emits_delta_since_previous_flush() {
        let c = Counter::new();
        c.add(3);
        assert_eq!(c.fetch_diff(), 3);
        assert_eq!(c.fetch_diff(), 3, "fetch_diff does not move the mark");
        assert_eq!(serde_json::to_string(&c).unwrap(), "3");
        assert_eq!(serde_json::to_string(&c).unwrap(), "0");
        c.inc();
        assert_eq!(c.fetch_diff(), 1);
        assert_eq!(serde_json::to_string(&c).unwrap(), "1");
        assert_eq!(c.count(), 4, "the total is unaffected by flushing");
    }

    #[test]
    fn test_counter_is_lock_free_across_threads() {
        let c = std::sync::Arc::new(Counter::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = std::sync::Arc::clone(&c);
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        c.inc();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(c.count(), 40_000);
    }

    #[test]
    fn test_store_metric_is_not_reset_by_flush() {
        let s = StoreMetric::new();
        s.store(7);
        assert_eq!(serde_json::to_string(&s).unwrap(), "7");
        assert_eq!(serde_json::to_string(&s).unwrap(), "7");
    }

    #[test]
    fn test_latency_aggregate_keeps_min_max_and_flushes_the_sum() {
        let l = LatencyAggregate::new();
        assert_eq!(
            serde_json::to_string(&l).unwrap(),
            r#"{"min_us":0,"max_us":0,"sum_us":0}"#
        );
        l.record(5);
        l.record(2);
        l.record(9);
        assert_eq!(l.min_us(), Some(2));
        assert_eq!(
            serde_json::to_string(&l).unwrap(),
            r#"{"min_us":2,"max_us":9,"sum_us":16}"#
        );
        // Firecracker: min/max are store metrics, the sum is a delta.
        assert_eq!(
            serde_json::to_string(&l).unwrap(),
            r#"{"min_us":2,"max_us":9,"sum_us":0}"#
        );
        assert_eq!(l.sum_us.count(), 16);
        {
            let _t = l.start();
        }
        assert_eq!(l.min_us(), Some(0));
    }

    #[test]
    fn test_process_groups_use_firecracker_names() {
        let m = ProcessMetrics::new();
        m.put_api_requests.actions_count.inc();
        m.latencies_us.pause_vm.store(12);
        let v = serde_json::to_value(&m.put_api_requests).unwrap();
        assert_eq!(v["actions_count"], 1);
        assert_eq!(v.as_object().unwrap().len(), 26);
        let v = serde_json::to_value(&m.latencies_us).unwrap();
        assert_eq!(v["pause_vm"], 12);
        let v = serde_json::to_value(&m.vcpu).unwrap();
        assert_eq!(v["exit_io_in_agg"]["sum_us"], 0);
        assert_eq!(
            serde_json::to_value(&m.signals).unwrap()["sigpipe"],
            0,
            "sigpipe is a counter"
        );
    }

    #[test]
    fn test_utc_timestamp_is_milliseconds_since_epoch() {
        let t = utc_timestamp_ms();
        assert!(t > 1_700_000_000_000 && t < 10_000_000_000_000, "{t}");
    }
}
