//! The metrics system: Firecracker 1.17's metrics line, its sink, and the periodic flush.
//!
//! - [`MetricsWriter`] owns the sink (`PUT /metrics` or `--metrics-path`: a file, appended to, or
//!   a FIFO; opened once — a second initialisation is Firecracker's `Reinitialization of metrics
//!   not allowed.`) and builds one JSON object per line with Firecracker's groups, in its order:
//!   `utc_timestamp_ms`, `id`/`properties` when configured, then `api_server`, `balloon`,
//!   `block_<id>`…, `block`, `deprecated_api`, `get_api_requests`, `i8042`, `uart`,
//!   `latencies_us`, `logger`, `mmds`, `net_<id>`…, `net`, `patch_api_requests`,
//!   `put_api_requests`, `seccomp`, `vcpu`, `vmm`, `signals`, `vsock`, `entropy`, `pmem`,
//!   `pmem_<id>`…, `pmem`, `interrupts`, `memory_hotplug`.
//! - The process-wide groups come from [`squib_core::metrics::METRICS`]; device groups from the
//!   devices' own metric structs ([`DeviceGroups`], collected from the device manager once the
//!   microVM exists). `block`, `net` and `pmem` are aggregates: the sum of the per-device
//!   deltas, with `min_us`/`max_us` of their latency aggregates at 0 (Firecracker's `fetch_diff`
//!   sum). Groups of devices that were not configured are written with zero values so the key
//!   set is always Firecracker's.
//! - Counters write the delta since the previous line; store metrics their current value.
//! - [`PeriodicMetrics`] is the event-loop subscriber that writes a line when the microVM starts
//!   and then every [`WRITE_METRICS_PERIOD`] (a timerfd); `FlushMetrics` writes one on demand. A
//!   failed write is counted in `logger.missed_metrics_count` and logged, never fatal.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use event_manager::{EventOps, Events, MutEventSubscriber};
use serde::Serialize;
use serde_json::{Map, Value};
use squib_config::schemas::metrics::MetricsConfig;
use squib_config::schemas::snapshot::SnapshotType;
use squib_config::vm_config::METRICS_REINIT;
use squib_core::metrics::{METRICS, StoreMetric};
use squib_devices::legacy::i8042::metrics::I8042Metrics;
use squib_devices::legacy::serial::metrics::SerialMetrics;
use squib_devices::virtio::balloon::BalloonMetrics;
use squib_devices::virtio::block::BlockMetrics;
use squib_devices::virtio::mem::VirtioMemMetrics;
use squib_devices::virtio::net::NetMetrics;
use squib_devices::virtio::pmem::PmemMetrics;
use squib_devices::virtio::rng::EntropyMetrics;
use squib_devices::virtio::vsock::VsockMetrics;
use squib_mmds::{MmdsMetrics, MmdsMetricsSnapshot};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::timerfd::TimerFd;

use crate::device_manager::{DeviceManager, VirtioHandle};

/// Firecracker's `WRITE_METRICS_PERIOD_MS`.
pub const WRITE_METRICS_PERIOD: Duration = Duration::from_secs(60);

/// Shared handle to the writer (the VMM and the periodic subscriber, both on the VMM thread).
pub type SharedMetricsWriter = Arc<Mutex<MetricsWriter>>;

/// The metric groups of one microVM's devices, shared with the devices through `Arc`s.
#[derive(Debug, Default, Clone)]
pub struct DeviceGroups {
    /// COM1 (`uart`).
    pub uart: Option<Arc<SerialMetrics>>,
    /// The i8042 controller (`i8042`).
    pub i8042: Option<Arc<I8042Metrics>>,
    /// Block devices by drive id (`block_<id>`, aggregated into `block`).
    pub blocks: Vec<(String, Arc<BlockMetrics>)>,
    /// Net devices by interface id (`net_<id>`, aggregated into `net`).
    pub nets: Vec<(String, Arc<NetMetrics>)>,
    /// The vsock device (`vsock`).
    pub vsock: Option<Arc<VsockMetrics>>,
    /// The entropy device (`entropy`).
    pub entropy: Option<Arc<EntropyMetrics>>,
    /// The MMDS (`mmds`).
    pub mmds: Option<Arc<MmdsMetrics>>,
    /// The balloon (`balloon`).
    pub balloon: Option<Arc<BalloonMetrics>>,
    /// pmem devices by id (`pmem_<id>`, aggregated into `pmem`).
    pub pmems: Vec<(String, Arc<PmemMetrics>)>,
    /// The virtio-mem device (`memory_hotplug`).
    pub memory_hotplug: Option<Arc<VirtioMemMetrics>>,
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl DeviceGroups {
    /// The groups of every device `devices` owns (each device is locked once, here), plus the
    /// MMDS counters.
    pub fn collect(devices: &DeviceManager, mmds: &Arc<MmdsMetrics>) -> Self {
        let mut groups = Self {
            uart: devices.serial().map(|s| Arc::clone(lock(s).metrics())),
            i8042: devices.i8042().map(|d| Arc::clone(lock(d).metrics())),
            mmds: Some(Arc::clone(mmds)),
            ..Self::default()
        };
        for (id, handle) in devices.virtio_devices() {
            if let VirtioHandle::Block(b) = handle {
                groups
                    .blocks
                    .push((id.to_owned(), Arc::clone(lock(b).metrics())));
            } else if let VirtioHandle::Net(n, _) = handle {
                groups
                    .nets
                    .push((id.to_owned(), Arc::clone(lock(n).metrics())));
            } else if let VirtioHandle::Vsock(v) = handle {
                groups.vsock = Some(Arc::clone(lock(v).metrics()));
            } else if let VirtioHandle::Entropy(e) = handle {
                groups.entropy = Some(Arc::clone(lock(e).metrics()));
            } else if let VirtioHandle::Balloon(b) = handle {
                groups.balloon = Some(Arc::clone(lock(b).metrics()));
            } else if let VirtioHandle::Pmem(p) = handle {
                groups
                    .pmems
                    .push((id.to_owned(), Arc::clone(lock(p).metrics())));
            } else if let VirtioHandle::Mem(m) = handle {
                groups.memory_hotplug = Some(Arc::clone(lock(m).metrics()));
            }
        }
        // Firecracker keeps per-device groups in a map ordered by id.
        groups.blocks.sort_by(|a, b| a.0.cmp(&b.0));
        groups.nets.sort_by(|a, b| a.0.cmp(&b.0));
        groups.pmems.sort_by(|a, b| a.0.cmp(&b.0));
        groups
    }
}

/// The configured metrics sink and the state of the line builder (see the module docs).
#[derive(Debug)]
pub struct MetricsWriter {
    sink: Option<File>,
    emit_id: bool,
    properties: BTreeMap<String, String>,
    instance_id: String,
    devices: DeviceGroups,
    mmds_flushed: MmdsMetricsSnapshot,
}

impl MetricsWriter {
    /// A writer with no sink yet; `instance_id` is the `id` written when `emit_id` is set.
    pub fn new(instance_id: &str) -> Self {
        Self {
            sink: None,
            emit_id: false,
            properties: BTreeMap::new(),
            instance_id: instance_id.to_owned(),
            devices: DeviceGroups::default(),
            mmds_flushed: MmdsMetricsSnapshot::default(),
        }
    }

    /// A shared writer. The first one created in the process is also the one
    /// [`flush_best_effort`] writes through (fatal signals, panics).
    pub fn shared(instance_id: &str) -> SharedMetricsWriter {
        let writer = Arc::new(Mutex::new(Self::new(instance_id)));
        let _ = LAST_WORD.set(Arc::clone(&writer));
        writer
    }

    /// Whether a sink is configured.
    pub fn is_initialized(&self) -> bool {
        self.sink.is_some()
    }

    /// `PUT /metrics` / `--metrics-path`: opens the sink once. Errors are Firecracker's texts.
    pub fn init(&mut self, config: &MetricsConfig) -> Result<(), String> {
        if self.is_initialized() {
            return Err(METRICS_REINIT.to_owned());
        }
        let file = squib_sys::sink::open_sink(std::path::Path::new(&config.metrics_path)).map_err(
            |e| {
                format!(
                    "Metrics error: Cannot initialize the metrics system due to bad user input: {e}"
                )
            },
        )?;
        self.sink = Some(file);
        self.emit_id = config.emit_id;
        self.properties.clone_from(&config.properties);
        Ok(())
    }

    /// The devices whose groups are written (set once the microVM exists).
    pub fn set_devices(&mut self, devices: DeviceGroups) {
        self.devices = devices;
    }

    /// Serializes the next line (without the newline) into `out` and moves every counter's
    /// flush mark. Every group streams straight from its atomics; the `block`/`net` aggregates
    /// are summed from the per-device pending deltas first (Firecracker's `fetch_diff`).
    pub fn serialize_line(&mut self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        let mmds = self.mmds_delta();
        // Aggregates first: they read the pending deltas the per-device entries then consume.
        let line = Line {
            w: self,
            mmds,
            block: aggregate(&self.devices.blocks),
            net: aggregate(&self.devices.nets),
            pmem: aggregate(&self.devices.pmems),
        };
        serde_json::to_writer(out, &line)
    }

    /// The next line as a JSON value (see [`serialize_line`](Self::serialize_line)).
    pub fn next_line(&mut self) -> Value {
        let mut out = Vec::new();
        if self.serialize_line(&mut out).is_err() {
            return Value::Null;
        }
        serde_json::from_slice(&out).unwrap_or(Value::Null)
    }

    /// Writes one line to the sink. `Ok(false)`: no sink configured (nothing written, as
    /// Firecracker). A failed write is counted in `logger.missed_metrics_count`; the error is
    /// Firecracker's `Metrics error: Failed to write metrics: ...`.
    pub fn write(&mut self) -> Result<bool, String> {
        if self.sink.is_none() {
            return Ok(false);
        }
        let mut bytes = Vec::with_capacity(8 * 1024);
        if let Err(e) = self.serialize_line(&mut bytes) {
            METRICS.logger.metrics_fails.inc();
            return Err(format!("Metrics error: {e}"));
        }
        bytes.push(b'\n');
        let result = match self.sink.as_mut() {
            Some(sink) => sink.write_all(&bytes),
            None => Ok(()),
        };
        result.map(|()| true).map_err(|e| {
            METRICS.logger.missed_metrics_count.inc();
            format!("Metrics error: Failed to write metrics: {e}")
        })
    }

    /// The `mmds` group: the MMDS counters are cumulative atomics, so the delta is computed
    /// against the values written last time.
    fn mmds_delta(&mut self) -> Value {
        let now = self
            .devices
            .mmds
            .as_ref()
            .map(|m| m.snapshot())
            .unwrap_or_default();
        let (Value::Object(mut cur), Value::Object(prev)) =
            (to_value(&now), to_value(&self.mmds_flushed))
        else {
            return Value::Object(Map::new());
        };
        for (k, v) in &mut cur {
            let before = prev.get(k).and_then(Value::as_u64).unwrap_or(0);
            *v = v.as_u64().unwrap_or(0).wrapping_sub(before).into();
        }
        self.mmds_flushed = now;
        Value::Object(cur)
    }
}

fn to_value<T: Serialize + ?Sized>(group: &T) -> Value {
    serde_json::to_value(group).unwrap_or_else(|_| {
        METRICS.logger.metrics_fails.inc();
        Value::Object(Map::new())
    })
}

/// A device's group, or the same group at zero when the device does not exist.
struct GroupOrZero<'a, T>(Option<&'a Arc<T>>);

impl<T: Serialize + Default> Serialize for GroupOrZero<'_, T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(g) => g.serialize(serializer),
            None => T::default().serialize(serializer),
        }
    }
}

/// A per-device group type that has a Firecracker aggregate (`block`, `net`): the sum of the
/// devices' pending deltas; latency aggregates contribute their `sum_us` only.
trait Aggregate: Default + Serialize {
    /// Every field summed (a unit test checks it is every field of the group).
    #[cfg(test)]
    const FIELDS: &'static [&'static str];

    /// `self += other`'s pending deltas (without moving `other`'s flush marks).
    fn add_pending(&self, other: &Self);
}

macro_rules! impl_aggregate {
    ($ty:ty; $($counter:ident),*; $($latency:ident),*) => {
        impl Aggregate for $ty {
            #[cfg(test)]
            const FIELDS: &'static [&'static str] =
                &[$(stringify!($counter),)* $(stringify!($latency),)*];

            fn add_pending(&self, other: &Self) {
                $(self.$counter.add(other.$counter.fetch_diff());)*
                $(self.$latency.sum_us.add(other.$latency.sum_us.fetch_diff());)*
            }
        }
    };
}

impl_aggregate!(BlockMetrics;
    activate_fails, cfg_fails, no_avail_buffer, event_fails, execute_fails, invalid_reqs_count,
    flush_count, queue_event_count, rate_limiter_event_count, update_count, update_fails,
    read_bytes, write_bytes, read_count, write_count, rate_limiter_throttled_events,
    io_engine_throttled_events, remaining_reqs_count;
    read_agg, write_agg);

impl_aggregate!(NetMetrics;
    activate_fails, cfg_fails, no_rx_avail_buffer, no_tx_avail_buffer, event_fails,
    rx_queue_event_count, rx_event_rate_limiter_count, rx_rate_limiter_throttled,
    rx_tap_event_count, rx_bytes_count, rx_packets_count, rx_fails, rx_count, tap_read_fails,
    tap_write_fails, tx_bytes_count, tx_malformed_frames, tx_fails, tx_count, tx_packets_count,
    tx_queue_event_count, tx_rate_limiter_event_count, tx_rate_limiter_throttled,
    tx_spoofed_mac_count, tx_remaining_reqs_count;
    tap_write_agg);

impl_aggregate!(PmemMetrics;
activate_fails, cfg_fails, event_fails, queue_event_count, rate_limiter_throttled_events,
rate_limiter_event_count;
);

/// The aggregate of `devs` (to be serialized before their own groups).
fn aggregate<T: Aggregate>(devs: &[(String, Arc<T>)]) -> T {
    let sum = T::default();
    for (_, group) in devs {
        sum.add_pending(group);
    }
    sum
}

/// One metrics line, serialized in Firecracker's order (see the module docs).
struct Line<'a> {
    w: &'a MetricsWriter,
    mmds: Value,
    block: BlockMetrics,
    net: NetMetrics,
    pmem: PmemMetrics,
}

impl Serialize for Line<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let (w, m) = (self.w, &METRICS);
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("utc_timestamp_ms", &squib_core::metrics::utc_timestamp_ms())?;
        if w.emit_id {
            map.serialize_entry("id", &w.instance_id)?;
        }
        if !w.properties.is_empty() {
            map.serialize_entry("properties", &w.properties)?;
        }
        map.serialize_entry("api_server", &m.api_server)?;
        map.serialize_entry("balloon", &GroupOrZero(w.devices.balloon.as_ref()))?;
        for (id, group) in &w.devices.blocks {
            map.serialize_entry(&format_args!("block_{id}"), &**group)?;
        }
        map.serialize_entry("block", &self.block)?;
        map.serialize_entry("deprecated_api", &m.deprecated_api)?;
        map.serialize_entry("get_api_requests", &m.get_api_requests)?;
        map.serialize_entry("i8042", &GroupOrZero(w.devices.i8042.as_ref()))?;
        map.serialize_entry("uart", &GroupOrZero(w.devices.uart.as_ref()))?;
        map.serialize_entry("latencies_us", &m.latencies_us)?;
        map.serialize_entry("logger", &m.logger)?;
        map.serialize_entry("mmds", &self.mmds)?;
        for (id, group) in &w.devices.nets {
            map.serialize_entry(&format_args!("net_{id}"), &**group)?;
        }
        map.serialize_entry("net", &self.net)?;
        map.serialize_entry("patch_api_requests", &m.patch_api_requests)?;
        map.serialize_entry("put_api_requests", &m.put_api_requests)?;
        map.serialize_entry("seccomp", &m.seccomp)?;
        map.serialize_entry("vcpu", &m.vcpu)?;
        map.serialize_entry("vmm", &m.vmm)?;
        map.serialize_entry("signals", &m.signals)?;
        map.serialize_entry("vsock", &GroupOrZero(w.devices.vsock.as_ref()))?;
        map.serialize_entry("entropy", &GroupOrZero(w.devices.entropy.as_ref()))?;
        for (id, group) in &w.devices.pmems {
            map.serialize_entry(&format_args!("pmem_{id}"), &**group)?;
        }
        map.serialize_entry("pmem", &self.pmem)?;
        map.serialize_entry("interrupts", &m.interrupts)?;
        map.serialize_entry(
            "memory_hotplug",
            &GroupOrZero(w.devices.memory_hotplug.as_ref()),
        )?;
        if m.pvm_emulation.any() {
            map.serialize_entry("pvm_emulation", &m.pvm_emulation)?;
        }
        map.end()
    }
}

/// Records the VMM-side duration of an action (`latencies_us.vmm_*`) and logs Firecracker's
/// `'<label>' VMM action took N us.` line.
pub fn record_vmm_action(metric: &StoreMetric, label: &str, started: Instant) {
    let us = squib_core::metrics::elapsed_us(started);
    metric.store(us);
    tracing::info!("'{label}' VMM action took {us} us.");
}

/// The VMM-side latency metric and label of a snapshot creation.
pub fn snapshot_create_latency(kind: SnapshotType) -> (&'static StoreMetric, &'static str) {
    let l = &METRICS.latencies_us;
    match kind {
        SnapshotType::Full => (&l.vmm_full_create_snapshot, "create full snapshot"),
        SnapshotType::Diff => (&l.vmm_diff_create_snapshot, "create diff snapshot"),
    }
}

/// The writer of the process's (first) VMM, for [`flush_best_effort`].
static LAST_WORD: OnceLock<SharedMetricsWriter> = OnceLock::new();

/// Writes one metrics line if the writer is free, without blocking: the last word of a process
/// that is about to die (a fatal signal, a panic), as Firecracker writes its metrics then.
pub fn flush_best_effort() {
    if let Some(writer) = LAST_WORD.get()
        && let Ok(mut w) = writer.try_lock()
    {
        let _ = w.write();
    }
}

/// `FlushMetrics`: one line now. Errors are Firecracker's texts (a write failure is
/// `Internal VMM error: Metrics error: Failed to write metrics: ...`).
pub fn flush(writer: &SharedMetricsWriter) -> Result<(), String> {
    lock(writer)
        .write()
        .map(drop)
        .map_err(|e| format!("Internal VMM error: {e}"))
}

/// The event-loop subscriber that writes the periodic metrics line (a timerfd).
#[derive(Debug)]
pub struct PeriodicMetrics {
    timer: TimerFd,
    writer: SharedMetricsWriter,
    period: Duration,
}

impl PeriodicMetrics {
    /// A subscriber writing through `writer` every `period` once [`start`](Self::start)ed.
    pub fn new(writer: SharedMetricsWriter, period: Duration) -> std::io::Result<Self> {
        Ok(Self {
            timer: TimerFd::new()?,
            writer,
            period,
        })
    }

    /// Arms the timer and writes the first line now (Firecracker does both when the microVM
    /// starts).
    pub fn start(&mut self) {
        if let Err(e) = self.timer.reset(self.period, Some(self.period)) {
            tracing::error!("Failed to arm the metrics timer: {e}");
        }
        self.write();
    }

    fn write(&self) {
        if let Err(e) = lock(&self.writer).write() {
            tracing::error!("Failed to write metrics: {e}");
        }
    }
}

impl MutEventSubscriber for PeriodicMetrics {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.timer, EventSet::IN)) {
            tracing::error!("Failed to register metrics event: {e:?}");
        }
    }

    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        // Expirations are coalesced: one line per wake-up.
        let _ = self.timer.wait();
        self.write();
    }
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
