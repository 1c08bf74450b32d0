//! The metrics system: Firecracker 1.17's metrics line, its sink, and the periodic flush.
//!
//! - [`MetricsWriter`] owns the sink (`PUT /metrics` or `--metrics-path`: a file, appended to, or
//!   a FIFO; opened once — a second initialisation is Firecracker's `Reinitialization of metrics
//!   not allowed.`) and builds one JSON object per line with Firecracker's groups, in its order:
//!   `utc_timestamp_ms`, `id`/`properties` when configured, then `api_server`, `balloon`,
//!   `block_<id>`…, `block`, `deprecated_api`, `get_api_requests`, `i8042`, `uart`,
//!   `latencies_us`, `logger`, `mmds`, `net_<id>`…, `net`, `patch_api_requests`,
//!   `put_api_requests`, `seccomp`, `vcpu`, `vmm`, `signals`, `vsock`, `entropy`, `pmem`,
//!   `interrupts`, `memory_hotplug`.
//! - The process-wide groups come from [`squib_core::metrics::METRICS`]; device groups from the
//!   devices' own metric structs ([`DeviceGroups`], collected from the device manager once the
//!   microVM exists). `block` and `net` are aggregates: the sum of the per-device deltas, with
//!   `min_us`/`max_us` of their latency aggregates at 0 (Firecracker's `fetch_diff` sum). Groups
//!   of devices this build does not have (`balloon`, `pmem`, `memory_hotplug`), or that were not
//!   configured, are written with zero values so the key set is always Firecracker's.
//! - Counters write the delta since the previous line; store metrics their current value.
//! - [`PeriodicMetrics`] is the event-loop subscriber that writes a line when the microVM starts
//!   and then every [`WRITE_METRICS_PERIOD`] (a timerfd); `FlushMetrics` writes one on demand. A
//!   failed write is counted in `logger.missed_metrics_count` and logged, never fatal.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use event_manager::{EventOps, Events, MutEventSubscriber};
use serde::Serialize;
use serde_json::{Map, Value};
use squib_config::schemas::metrics::MetricsConfig;
use squib_config::vm_config::METRICS_REINIT;
use squib_core::metrics::{Counter, LatencyAggregate, METRICS};
use squib_devices::legacy::i8042::metrics::I8042Metrics;
use squib_devices::legacy::serial::metrics::SerialMetrics;
use squib_devices::virtio::block::BlockMetrics;
use squib_devices::virtio::net::NetMetrics;
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

/// Firecracker's `balloon` group (no balloon device in this build: always zero).
#[derive(Debug, Default, Serialize)]
struct BalloonMetrics {
    activate_fails: Counter,
    inflate_count: Counter,
    stats_updates_count: Counter,
    stats_update_fails: Counter,
    deflate_count: Counter,
    event_fails: Counter,
    free_page_report_count: Counter,
    free_page_report_freed: Counter,
    free_page_report_fails: Counter,
    free_page_hint_count: Counter,
    free_page_hint_freed: Counter,
    free_page_hint_fails: Counter,
}

/// Firecracker's `pmem` aggregate (no pmem device in this build: always zero).
#[derive(Debug, Default, Serialize)]
struct PmemMetrics {
    activate_fails: Counter,
    cfg_fails: Counter,
    event_fails: Counter,
    queue_event_count: Counter,
    rate_limiter_throttled_events: Counter,
    rate_limiter_event_count: Counter,
}

/// Firecracker's `memory_hotplug` group (no virtio-mem device in this build: always zero).
#[derive(Debug, Default, Serialize)]
struct MemoryHotplugMetrics {
    activate_fails: Counter,
    queue_event_fails: Counter,
    queue_event_count: Counter,
    plug_agg: LatencyAggregate,
    plug_count: Counter,
    plug_bytes: Counter,
    plug_fails: Counter,
    unplug_agg: LatencyAggregate,
    unplug_count: Counter,
    unplug_bytes: Counter,
    unplug_fails: Counter,
    unplug_discard_fails: Counter,
    unplug_all_agg: LatencyAggregate,
    unplug_all_count: Counter,
    unplug_all_fails: Counter,
    state_agg: LatencyAggregate,
    state_count: Counter,
    state_fails: Counter,
}

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
            }
        }
        // Firecracker keeps per-device groups in a map ordered by id.
        groups.blocks.sort_by(|a, b| a.0.cmp(&b.0));
        groups.nets.sort_by(|a, b| a.0.cmp(&b.0));
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
    balloon: BalloonMetrics,
    pmem: PmemMetrics,
    memory_hotplug: MemoryHotplugMetrics,
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
            balloon: BalloonMetrics::default(),
            pmem: PmemMetrics::default(),
            memory_hotplug: MemoryHotplugMetrics::default(),
        }
    }

    /// A shared writer.
    pub fn shared(instance_id: &str) -> SharedMetricsWriter {
        Arc::new(Mutex::new(Self::new(instance_id)))
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

    /// Builds the next line (without the newline) and moves every counter's flush mark.
    pub fn next_line(&mut self) -> Value {
        let mut line = Map::new();
        line.insert(
            "utc_timestamp_ms".into(),
            squib_core::metrics::utc_timestamp_ms().into(),
        );
        if self.emit_id {
            line.insert("id".into(), self.instance_id.clone().into());
        }
        if !self.properties.is_empty() {
            line.insert("properties".into(), to_value(&self.properties));
        }
        line.insert("api_server".into(), to_value(&METRICS.api_server));
        line.insert("balloon".into(), to_value(&self.balloon));
        per_device(&mut line, "block", &self.devices.blocks);
        line.insert("deprecated_api".into(), to_value(&METRICS.deprecated_api));
        line.insert(
            "get_api_requests".into(),
            to_value(&METRICS.get_api_requests),
        );
        line.insert("i8042".into(), group_or_zero(self.devices.i8042.as_ref()));
        line.insert("uart".into(), group_or_zero(self.devices.uart.as_ref()));
        line.insert("latencies_us".into(), to_value(&METRICS.latencies_us));
        line.insert("logger".into(), to_value(&METRICS.logger));
        line.insert("mmds".into(), self.mmds_delta());
        per_device(&mut line, "net", &self.devices.nets);
        line.insert(
            "patch_api_requests".into(),
            to_value(&METRICS.patch_api_requests),
        );
        line.insert(
            "put_api_requests".into(),
            to_value(&METRICS.put_api_requests),
        );
        line.insert("seccomp".into(), to_value(&METRICS.seccomp));
        line.insert("vcpu".into(), to_value(&METRICS.vcpu));
        line.insert("vmm".into(), to_value(&METRICS.vmm));
        line.insert("signals".into(), to_value(&METRICS.signals));
        line.insert("vsock".into(), group_or_zero(self.devices.vsock.as_ref()));
        line.insert(
            "entropy".into(),
            group_or_zero(self.devices.entropy.as_ref()),
        );
        line.insert("pmem".into(), to_value(&self.pmem));
        line.insert("interrupts".into(), to_value(&METRICS.interrupts));
        line.insert("memory_hotplug".into(), to_value(&self.memory_hotplug));
        Value::Object(line)
    }

    /// Writes one line to the sink. `Ok(false)`: no sink configured (nothing written, as
    /// Firecracker). A failed write is counted in `logger.missed_metrics_count`; the error is
    /// Firecracker's `Metrics error: Failed to write metrics: ...`.
    pub fn write(&mut self) -> Result<bool, String> {
        if self.sink.is_none() {
            return Ok(false);
        }
        let mut bytes = match serde_json::to_vec(&self.next_line()) {
            Ok(b) => b,
            Err(e) => {
                METRICS.logger.metrics_fails.inc();
                return Err(format!("Metrics error: {e}"));
            }
        };
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
fn group_or_zero<T: Serialize + Default>(group: Option<&Arc<T>>) -> Value {
    match group {
        Some(g) => to_value(&**g),
        None => to_value(&T::default()),
    }
}

/// `<kind>_<id>` for each device, then `<kind>`: the sum of their deltas (Firecracker's
/// aggregate: latency `min_us`/`max_us` stay 0).
fn per_device<T: Serialize + Default>(
    line: &mut Map<String, Value>,
    kind: &str,
    devs: &[(String, Arc<T>)],
) {
    let mut aggregate = to_value(&T::default());
    for (id, group) in devs {
        let value = to_value(&**group);
        add_into(&mut aggregate, &value);
        line.insert(format!("{kind}_{id}"), value);
    }
    line.insert(kind.to_owned(), aggregate);
}

/// `acc += v`, field by field; `min_us`/`max_us` are not summed.
fn add_into(acc: &mut Value, v: &Value) {
    match (acc, v) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, av) in a.iter_mut() {
                if k == "min_us" || k == "max_us" {
                    continue;
                }
                if let Some(bv) = b.get(k) {
                    add_into(av, bv);
                }
            }
        }
        (a @ Value::Number(_), Value::Number(b)) => {
            let sum = a
                .as_u64()
                .unwrap_or(0)
                .wrapping_add(b.as_u64().unwrap_or(0));
            *a = sum.into();
        }
        _ => {}
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
