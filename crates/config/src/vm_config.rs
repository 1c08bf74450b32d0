//! The microVM configuration document: `GET /vm/config` and `--config-file`.
//!
//! [`VmConfig`] is the whole pre-boot configuration as Firecracker keeps it. Its `Default` is a
//! fresh process; [`VmConfig::apply`] applies one successful [`ApiAction`] with Firecracker's
//! stateful rules and texts (root-device uniqueness, duplicate MACs, balloon vs memory, MMDS
//! store initialisation, ...); its `Serialize` is byte-for-byte Firecracker's `GET /vm/config`
//! body. It also holds what `/vm/config` does not show: the MMDS data store, the serial
//! configuration, and the logger/metrics/cpu-config (which Firecracker always reports as
//! `null`).
//!
//! [`RawConfigFile`] is the `--config-file` document. It is parsed here but never read from
//! disk: this crate does no I/O. A `cpu-config` given as a **file path** must be resolved by the
//! caller with [`RawConfigFile::resolve_cpu_config`] (pass the file's contents) before
//! [`RawConfigFile::actions_in_order`]; an unresolved path is reported as an error of the
//! `cpu-config` member.

use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};
use squib_core::GuestArch;

use crate::action::ApiAction;
use crate::schemas::{
    balloon::{BalloonConfig, RawBalloonConfig},
    boot_source::{BootSource, RawBootSource},
    cpu_config::CpuConfig,
    drive::{DriveConfig, RawDriveConfig},
    entropy::{EntropyConfig, RawEntropyConfig},
    hotplug_memory::{HotplugMemoryConfig, RawHotplugMemoryConfig},
    limits::{MAX_LIST_ENTRIES, check_list_len},
    logger::{LoggerConfig, RawLoggerConfig},
    machine_config::{INCOMPATIBLE_BALLOON_SIZE, MachineConfig, RawMachineConfig},
    metrics::{MetricsConfig, RawMetricsConfig},
    mmds::{INVALID_IFACE_ID, MmdsConfig, RawMmdsConfig},
    network_interface::{NetworkInterfaceConfig, RawNetworkInterfaceConfig},
    pmem::{PmemConfig, RawPmemConfig},
    rate_limiter::RateLimiterConfig,
    serial::SerialConfig,
    vsock::{RawVsockConfig, VsockConfig},
};

/// `Drive config error` for a second root device (block or pmem).
pub const ROOT_BLOCK_DEVICE_EXISTS: &str =
    "Drive config error: A root block device already exists!";
/// Second root pmem device.
pub const ROOT_PMEM_DEVICE_EXISTS: &str = "Pmem config error: A root pmem device already exists";
/// Root pmem device while a root block device exists.
pub const ROOT_PMEM_WITH_BLOCK_ROOT: &str = "Pmem config error: Attempt to add pmem as a root device while the root device defined as a block device";
/// Prefix of the duplicate-MAC error (followed by the MAC).
pub const MAC_IN_USE: &str = "Network config error: The MAC address is already in use: ";
/// Balloon target above guest memory.
pub const BALLOON_TOO_LARGE: &str = "Balloon config error: Amount of pages requested is too large.";
/// No balloon configured.
pub const NO_BALLOON: &str = "Balloon config error: No balloon device found.";
/// Toggling balloon statistics after boot.
pub const BALLOON_STATS_STATE_CHANGE: &str =
    "Balloon update error: Balloon: Statistics cannot be enabled/disabled after activation.";
/// PATCH `/mmds` before any PUT.
pub const MMDS_NOT_INITIALIZED: &str = "MMDS error: The MMDS data store is not initialized.";
/// Second metrics initialisation.
pub const METRICS_REINIT: &str = "Metrics error: Cannot initialize the metrics system due to bad user input: Reinitialization of metrics not allowed.";

/// The full microVM configuration. See the module docs.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct VmConfig {
    /// Balloon device.
    pub balloon: Option<BalloonConfig>,
    /// Block devices; a root device, if any, is first.
    pub drives: Vec<DriveConfig>,
    /// Boot source (unconfigured: empty kernel path).
    pub boot_source: BootSource,
    /// Custom CPU template (reported as `null`, like Firecracker).
    pub cpu_config: Option<CpuConfig>,
    /// Logger (reported as `null`).
    pub logger: Option<LoggerConfig>,
    /// vCPUs and memory.
    pub machine_config: MachineConfig,
    /// Metrics (reported as `null`). Set it before replaying if `--metrics-path` was given, so
    /// that a later `PUT /metrics` is refused as in Firecracker.
    pub metrics: Option<MetricsConfig>,
    /// MMDS configuration.
    pub mmds_config: Option<MmdsConfig>,
    /// Network interfaces.
    pub network_interfaces: Vec<NetworkInterfaceConfig>,
    /// Vsock device.
    pub vsock: Option<VsockConfig>,
    /// Entropy device.
    pub entropy: Option<EntropyConfig>,
    /// pmem devices.
    pub pmem: Vec<PmemConfig>,
    /// virtio-mem configuration.
    pub memory_hotplug: Option<HotplugMemoryConfig>,
    /// Serial device (not part of `/vm/config`).
    pub serial: Option<SerialConfig>,
    mmds: Option<Value>,
}

#[derive(Serialize)]
struct VmConfigView<'a> {
    balloon: Option<&'a BalloonConfig>,
    drives: &'a [DriveConfig],
    #[serde(rename = "boot-source")]
    boot_source: &'a BootSource,
    #[serde(rename = "cpu-config")]
    cpu_config: Option<()>,
    logger: Option<()>,
    #[serde(rename = "machine-config")]
    machine_config: &'a MachineConfig,
    metrics: Option<()>,
    #[serde(rename = "mmds-config")]
    mmds_config: Option<&'a MmdsConfig>,
    #[serde(rename = "network-interfaces")]
    network_interfaces: &'a [NetworkInterfaceConfig],
    vsock: Option<&'a VsockConfig>,
    entropy: Option<&'a EntropyConfig>,
    pmem: &'a [PmemConfig],
    #[serde(rename = "memory-hotplug")]
    memory_hotplug: Option<&'a HotplugMemoryConfig>,
}

impl Serialize for VmConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        VmConfigView {
            balloon: self.balloon.as_ref(),
            drives: &self.drives,
            boot_source: &self.boot_source,
            cpu_config: None,
            logger: None,
            machine_config: &self.machine_config,
            metrics: None,
            mmds_config: self.mmds_config.as_ref(),
            network_interfaces: &self.network_interfaces,
            vsock: self.vsock.as_ref(),
            entropy: self.entropy.as_ref(),
            pmem: &self.pmem,
            memory_hotplug: self.memory_hotplug.as_ref(),
        }
        .serialize(serializer)
    }
}

/// RFC 7396 JSON merge patch. Recursion depth is bounded by the nesting of `patch`, which
/// `serde_json` caps at 128 when parsing.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(map) = target {
        for (key, value) in patch {
            if value.is_null() {
                map.remove(key);
            } else {
                merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

fn merge_rate_limiter(slot: &mut Option<RateLimiterConfig>, update: Option<RateLimiterConfig>) {
    let Some(update) = update else { return };
    match slot {
        Some(current) => {
            if update.bandwidth.is_some() {
                current.bandwidth = update.bandwidth;
            }
            if update.ops.is_some() {
                current.ops = update.ops;
            }
        }
        None => *slot = Some(update),
    }
}

fn check_append(field: &str, len: usize) -> Result<(), String> {
    check_list_len(field, len + 1)
}

impl VmConfig {
    /// The MMDS data store, once a `PUT /mmds` (or `--metadata`) initialised it.
    pub fn mmds(&self) -> Option<&Value> {
        self.mmds.as_ref()
    }

    /// Apply one action with Firecracker's stateful rules. On error `self` is unchanged and the
    /// error is the `fault_message`. Actions that do not change the configuration (instance
    /// actions, pause/resume, snapshots, hinting, hot-plug memory resizing, shutdown) are
    /// accepted as no-ops; hot-unplug and post-boot updates only adjust the document when the
    /// device exists (the VMM reports unknown devices).
    pub fn apply(&mut self, action: &ApiAction) -> Result<(), String> {
        match action {
            ApiAction::PutMachineConfig(cfg) => {
                let next = self.machine_config.replaced_by(cfg)?;
                self.set_machine_config(next)?;
                self.static_template_given(cfg.cpu_template.is_some());
                Ok(())
            }
            ApiAction::PatchMachineConfig(upd) => {
                let next = self.machine_config.updated(upd)?;
                self.set_machine_config(next)?;
                self.static_template_given(upd.cpu_template.is_some());
                Ok(())
            }
            ApiAction::PutCpuConfig(c) => {
                // Firecracker keeps one template slot: the last one configured wins.
                self.cpu_config = Some(c.clone());
                self.machine_config.cpu_template = None;
                Ok(())
            }
            ApiAction::PutBootSource(b) => {
                self.boot_source = b.clone();
                Ok(())
            }
            ApiAction::PutDrive(d) => self.put_drive(d),
            ApiAction::PatchDrive(upd) => {
                if let Some(d) = self.drives.iter_mut().find(|d| d.drive_id == upd.drive_id) {
                    if let Some(p) = &upd.path_on_host {
                        d.path_on_host = Some(p.clone());
                    }
                    merge_rate_limiter(&mut d.rate_limiter, upd.rate_limiter);
                }
                Ok(())
            }
            ApiAction::DeleteDrive(id) => {
                self.drives.retain(|d| d.drive_id != *id);
                Ok(())
            }
            ApiAction::PutPmem(p) => self.put_pmem(p),
            ApiAction::PatchPmem(upd) => {
                if let Some(p) = self.pmem.iter_mut().find(|p| p.id == upd.id) {
                    merge_rate_limiter(&mut p.rate_limiter, upd.rate_limiter);
                }
                Ok(())
            }
            ApiAction::DeletePmem(id) => {
                self.pmem.retain(|p| p.id != *id);
                Ok(())
            }
            ApiAction::PutNetworkInterface(n) => self.put_network_interface(n),
            ApiAction::PatchNetworkInterface(upd) => {
                if let Some(n) = self
                    .network_interfaces
                    .iter_mut()
                    .find(|n| n.iface_id == upd.iface_id)
                {
                    merge_rate_limiter(&mut n.rx_rate_limiter, upd.rx_rate_limiter);
                    merge_rate_limiter(&mut n.tx_rate_limiter, upd.tx_rate_limiter);
                }
                Ok(())
            }
            ApiAction::DeleteNetworkInterface(id) => {
                self.network_interfaces.retain(|n| n.iface_id != *id);
                Ok(())
            }
            ApiAction::PutVsock(v) => {
                self.vsock = Some(v.clone());
                Ok(())
            }
            ApiAction::PutBalloon(b) => {
                self.check_balloon_amount(b.amount_mib)?;
                self.balloon = Some(b.clone());
                Ok(())
            }
            ApiAction::PatchBalloon(upd) => {
                if self.balloon.is_none() {
                    return Err(NO_BALLOON.to_owned());
                }
                self.check_balloon_amount(upd.amount_mib)?;
                if let Some(balloon) = self.balloon.as_mut() {
                    balloon.amount_mib = upd.amount_mib;
                }
                Ok(())
            }
            ApiAction::PatchBalloonStatistics(upd) => {
                let balloon = self.balloon.as_mut().ok_or(NO_BALLOON)?;
                if (balloon.stats_polling_interval_s == 0) != (upd.stats_polling_interval_s == 0) {
                    return Err(BALLOON_STATS_STATE_CHANGE.to_owned());
                }
                balloon.stats_polling_interval_s = upd.stats_polling_interval_s;
                Ok(())
            }
            ApiAction::PutLogger(l) => {
                self.logger = Some(l.clone());
                Ok(())
            }
            ApiAction::PutMetrics(m) => {
                if self.metrics.is_some() {
                    return Err(METRICS_REINIT.to_owned());
                }
                self.metrics = Some(m.clone());
                Ok(())
            }
            ApiAction::PutSerial(s) => {
                self.serial = Some(s.clone());
                Ok(())
            }
            ApiAction::PutEntropy(e) => {
                self.entropy = Some(e.clone());
                Ok(())
            }
            ApiAction::PutMmds(v) => {
                self.mmds = Some(v.clone());
                Ok(())
            }
            ApiAction::PatchMmds(patch) => {
                let store = self.mmds.as_mut().ok_or(MMDS_NOT_INITIALIZED)?;
                merge_patch(store, patch);
                Ok(())
            }
            ApiAction::PutMmdsConfig(c) => {
                let known = |id: &String| self.network_interfaces.iter().any(|n| &n.iface_id == id);
                if !c.network_interfaces.iter().all(known) {
                    return Err(INVALID_IFACE_ID.to_owned());
                }
                self.mmds_config = Some(c.clone());
                Ok(())
            }
            ApiAction::PutHotplugMemory(h) => {
                self.memory_hotplug = Some(h.clone());
                Ok(())
            }
            // Everything else leaves the document unchanged (`ApiAction::changes_config`).
            _ => Ok(()),
        }
    }

    /// A machine-config update that names a static template (or `"None"`) replaces a custom
    /// template too: Firecracker has one template slot.
    fn static_template_given(&mut self, given: bool) {
        if given {
            self.cpu_config = None;
        }
    }

    fn set_machine_config(&mut self, next: MachineConfig) -> Result<(), String> {
        if let Some(b) = &self.balloon
            && u64::try_from(next.mem_size_mib).unwrap_or(u64::MAX) < b.amount_mib
        {
            return Err(INCOMPATIBLE_BALLOON_SIZE.to_owned());
        }
        self.machine_config = next;
        Ok(())
    }

    fn check_balloon_amount(&self, amount_mib: u64) -> Result<(), String> {
        if amount_mib > u64::try_from(self.machine_config.mem_size_mib).unwrap_or(u64::MAX) {
            return Err(BALLOON_TOO_LARGE.to_owned());
        }
        Ok(())
    }

    fn put_drive(&mut self, d: &DriveConfig) -> Result<(), String> {
        let position = self.drives.iter().position(|x| x.drive_id == d.drive_id);
        let has_block_root = self.drives.first().is_some_and(|x| x.is_root_device);
        let has_pmem_root = self.pmem.iter().any(|p| p.root_device);
        if d.is_root_device && ((has_block_root && position != Some(0)) || has_pmem_root) {
            return Err(ROOT_BLOCK_DEVICE_EXISTS.to_owned());
        }
        match position {
            None => {
                check_append("drives", self.drives.len())?;
                if d.is_root_device {
                    self.drives.insert(0, d.clone());
                } else {
                    self.drives.push(d.clone());
                }
            }
            Some(index) => {
                self.drives[index] = d.clone();
                if index != 0 && d.is_root_device {
                    self.drives.swap(0, index);
                }
            }
        }
        Ok(())
    }

    fn put_pmem(&mut self, p: &PmemConfig) -> Result<(), String> {
        let position = self.pmem.iter().position(|x| x.id == p.id);
        if p.root_device {
            if self.drives.iter().any(|d| d.is_root_device) {
                return Err(ROOT_PMEM_WITH_BLOCK_ROOT.to_owned());
            }
            if self.pmem.iter().any(|x| x.root_device && x.id != p.id) {
                return Err(ROOT_PMEM_DEVICE_EXISTS.to_owned());
            }
        }
        if let Some(index) = position {
            self.pmem[index] = p.clone();
        } else {
            check_append("pmem", self.pmem.len())?;
            self.pmem.push(p.clone());
        }
        Ok(())
    }

    fn put_network_interface(&mut self, n: &NetworkInterfaceConfig) -> Result<(), String> {
        if let Some(mac) = n.guest_mac
            && self
                .network_interfaces
                .iter()
                .any(|x| x.guest_mac == Some(mac) && x.iface_id != n.iface_id)
        {
            return Err(format!("{MAC_IN_USE}{mac}"));
        }
        // Firecracker removes the old device with `swap_remove` and appends the new one.
        if let Some(index) = self
            .network_interfaces
            .iter()
            .position(|x| x.iface_id == n.iface_id)
        {
            self.network_interfaces.swap_remove(index);
        } else {
            check_append("network-interfaces", self.network_interfaces.len())?;
        }
        self.network_interfaces.push(n.clone());
        Ok(())
    }
}

/// `cpu-config` in a config file: an inline template or a path to a template file.
///
/// The template's schema depends on the guest architecture, which is not known while the
/// document is parsed: an inline template is kept as JSON and validated by
/// [`RawConfigFile::actions_in_order`].
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawCpuConfigSource {
    /// Path to a JSON template file (resolved by the caller).
    Path(String),
    /// Inline template, validated later for the guest architecture.
    Inline(Value),
    /// The contents of the template file the caller read ([`RawConfigFile::resolve_cpu_config`]),
    /// validated later for the guest architecture.
    #[serde(skip)]
    FileContents(String),
}

/// The `--config-file` document: Firecracker's `VmmConfig`. Kebab-case keys; unknown top-level
/// keys are ignored; `boot-source` and `drives` are required; the serial device cannot be
/// configured here (as in Firecracker).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RawConfigFile {
    /// Balloon device.
    #[serde(default)]
    pub balloon: Option<RawBalloonConfig>,
    /// Block devices (required, may be `[]`).
    pub drives: Vec<RawDriveConfig>,
    /// Boot source (required).
    pub boot_source: RawBootSource,
    /// Custom CPU template, inline or as a file path.
    #[serde(default)]
    pub cpu_config: Option<RawCpuConfigSource>,
    /// Logger.
    #[serde(default)]
    pub logger: Option<RawLoggerConfig>,
    /// vCPUs and memory.
    #[serde(default)]
    pub machine_config: Option<RawMachineConfig>,
    /// Metrics.
    #[serde(default)]
    pub metrics: Option<RawMetricsConfig>,
    /// MMDS configuration.
    #[serde(default)]
    pub mmds_config: Option<RawMmdsConfig>,
    /// Network interfaces.
    #[serde(default)]
    pub network_interfaces: Vec<RawNetworkInterfaceConfig>,
    /// Vsock device.
    #[serde(default)]
    pub vsock: Option<RawVsockConfig>,
    /// Entropy device.
    #[serde(default)]
    pub entropy: Option<RawEntropyConfig>,
    /// pmem devices.
    #[serde(default)]
    pub pmem: Vec<RawPmemConfig>,
    /// virtio-mem configuration.
    #[serde(default)]
    pub memory_hotplug: Option<RawHotplugMemoryConfig>,
}

/// Error text for a `cpu-config` path that was not resolved before replay.
pub const UNRESOLVED_CPU_CONFIG_PATH: &str = "cpu-config file paths are not supported yet";

type MemberError = (String, String);

fn member<R, T>(name: &'static str, raw: R) -> Result<T, MemberError>
where
    T: TryFrom<R, Error = String>,
{
    T::try_from(raw).map_err(|e| (name.to_owned(), e))
}

fn list_cap(name: &'static str, len: usize) -> Result<(), MemberError> {
    if len > MAX_LIST_ENTRIES {
        return Err((
            name.to_owned(),
            format!("Invalid {name}: exceeds {MAX_LIST_ENTRIES} entries (got {len})"),
        ));
    }
    Ok(())
}

impl RawConfigFile {
    /// The `cpu-config` file path, if the template was given as a path.
    pub fn cpu_config_path(&self) -> Option<&str> {
        match &self.cpu_config {
            Some(RawCpuConfigSource::Path(p)) => Some(p),
            _ => None,
        }
    }

    /// Replace a `cpu-config` path by the contents of the file the caller read. They are
    /// validated by [`RawConfigFile::actions_in_order`] for the guest architecture, with
    /// Firecracker's texts (positions in the file).
    pub fn resolve_cpu_config(&mut self, contents: String) {
        self.cpu_config = Some(RawCpuConfigSource::FileContents(contents));
    }

    /// Validate every member and return the actions in Firecracker's application order
    /// (logger, metrics, machine-config, cpu-config, boot-source, drives, network-interfaces,
    /// vsock, balloon, mmds-config, entropy, pmem, memory-hotplug), each with its member name.
    /// The error is `(member, fault_message)` for the first invalid member. Stateful rules run
    /// when the actions are applied, exactly as for HTTP requests. `arch` selects the
    /// `cpu-config` schema.
    pub fn actions_in_order(
        self,
        arch: GuestArch,
    ) -> Result<Vec<(&'static str, ApiAction)>, MemberError> {
        list_cap("drives", self.drives.len())?;
        list_cap("network-interfaces", self.network_interfaces.len())?;
        list_cap("pmem", self.pmem.len())?;
        let mut out = Vec::new();
        if let Some(raw) = self.logger {
            out.push(("logger", ApiAction::PutLogger(member("logger", raw)?)));
        }
        if let Some(raw) = self.metrics {
            out.push(("metrics", ApiAction::PutMetrics(member("metrics", raw)?)));
        }
        if let Some(raw) = self.machine_config {
            out.push((
                "machine-config",
                ApiAction::PutMachineConfig(member("machine-config", raw)?),
            ));
        }
        match self.cpu_config {
            Some(RawCpuConfigSource::Inline(value)) => {
                let template = CpuConfig::from_value(value, arch)
                    .map_err(|e| ("cpu-config".to_owned(), e.to_string()))?;
                out.push(("cpu-config", ApiAction::PutCpuConfig(template)));
            }
            Some(RawCpuConfigSource::FileContents(text)) => {
                let template = CpuConfig::from_json(text.as_bytes(), arch)
                    .map_err(|e| ("cpu-config".to_owned(), e.to_string()))?;
                out.push(("cpu-config", ApiAction::PutCpuConfig(template)));
            }
            Some(RawCpuConfigSource::Path(path)) => {
                return Err((
                    "cpu-config".to_owned(),
                    format!("{UNRESOLVED_CPU_CONFIG_PATH} (unresolved path: {path})"),
                ));
            }
            None => {}
        }
        out.push((
            "boot-source",
            ApiAction::PutBootSource(member("boot-source", self.boot_source)?),
        ));
        for raw in self.drives {
            out.push(("drives", ApiAction::PutDrive(member("drives", raw)?)));
        }
        for raw in self.network_interfaces {
            let cfg = member("network-interfaces", raw)?;
            out.push(("network-interfaces", ApiAction::PutNetworkInterface(cfg)));
        }
        if let Some(raw) = self.vsock {
            out.push(("vsock", ApiAction::PutVsock(member("vsock", raw)?)));
        }
        if let Some(raw) = self.balloon {
            out.push(("balloon", ApiAction::PutBalloon(member("balloon", raw)?)));
        }
        if let Some(raw) = self.mmds_config {
            out.push((
                "mmds-config",
                ApiAction::PutMmdsConfig(member("mmds-config", raw)?),
            ));
        }
        if let Some(raw) = self.entropy {
            out.push(("entropy", ApiAction::PutEntropy(member("entropy", raw)?)));
        }
        for raw in self.pmem {
            out.push(("pmem", ApiAction::PutPmem(member("pmem", raw)?)));
        }
        if let Some(raw) = self.memory_hotplug {
            let cfg = member("memory-hotplug", raw)?;
            out.push(("memory-hotplug", ApiAction::PutHotplugMemory(cfg)));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
