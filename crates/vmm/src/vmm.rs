//! The VMM thread: resources, the running microVM, and the event loop.
//!
//! [`Vmm::handle`] executes one [`ApiAction`] synchronously and answers an [`ApiResponse`], like
//! Firecracker's pre-boot and runtime controllers: admission (again: the phase may have moved
//! since the API admitted it), host-side checks (files open), [`VmConfig::apply`], and the
//! lifecycle actions (start, pause/resume, Ctrl-Alt-Del). [`Vmm::run`] is the event loop: it
//! waits on the request eventfd and, once booted, on the microVM's exit eventfd, and returns the
//! process exit code when the guest (or a fatal error) ends the microVM.
//!
//! Every [`ApiAction`] variant is matched explicitly (no catch-all): resources squib cannot
//! realise yet are refused with an explicit 400, never accepted and ignored. After every
//! successful configuration change the VMM publishes its configuration document through
//! [`VmmObserver::config_changed`], so the API's read mirror follows the VMM even when the API
//! gave up waiting (504) on an action the VMM executed later.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
    mpsc::{Receiver, TryRecvError},
};

use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};

use squib_config::{
    action::{ApiAction, ApiResponse},
    schemas::{
        actions::InstanceAction,
        snapshot::{SnapshotCreateParams, SnapshotLoadParams},
        vm::VmStateUpdate,
    },
    vm_config::VmConfig,
};
use squib_core::{CapabilityProfile, LifecyclePhase};
use squib_devices::pseudo::BootTimestamp;
use squib_devices::virtio::Block;
use squib_hv::Hypervisor;
use vmm_sys_util::{epoll::EventSet, eventfd::EventFd};

use crate::{
    builder::{Microvm, RestoreArgs, build_microvm, restore_microvm},
    device_manager::{Prepared, RestoreOverrides},
    error::VmmInitError,
    exit_code::ExitCode,
    logger::LoggerControl,
    metrics::{DeviceGroups, MetricsWriter, PeriodicMetrics, SharedMetricsWriter},
    mmds::MmdsService,
    virtio_devices::{Subscriber, block_config, block_error, create_net, create_vsock},
};

/// Receives lifecycle changes for the API's read mirror.
pub trait VmmObserver: Send + Sync {
    /// The lifecycle phase changed.
    fn phase_changed(&self, phase: LifecyclePhase);

    /// The configuration document changed (the VMM's copy is authoritative).
    fn config_changed(&self, config: &VmConfig) {
        let _ = config;
    }

    /// A device's runtime status changed (balloon statistics, hinting, memory hotplug). May be
    /// called from a vCPU thread with a device lock held.
    fn runtime_status(&self, status: &crate::RuntimeStatus) {
        let _ = status;
    }
}

/// Which entry point to use for an ELF kernel that offers both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BootProtocolChoice {
    /// Firecracker's rule: PVH when the ELF has the Xen note, else the 64-bit Linux entry.
    #[default]
    Auto,
    /// Always the 64-bit Linux boot protocol.
    LinuxBoot,
}

/// Process-level options (from the command line).
#[derive(Debug, Clone)]
pub struct VmmOptions {
    /// `--boot-timer`: attach the boot-timer device.
    pub boot_timer: bool,
    /// Entry-point choice for ELF kernels.
    pub boot_protocol: BootProtocolChoice,
    /// `--mmds-size-limit` (bytes of the serialized MMDS document).
    pub mmds_size_limit: usize,
    /// `--id` (MMDS V2 tokens are bound to it).
    pub instance_id: String,
    /// Where devices publish runtime statuses ([`Vmm::new`] connects it to the observer).
    pub status_sink: Option<crate::StatusSink>,
    /// The process logger, for `PUT /logger` (`None`: refused).
    pub logger: Option<Arc<dyn LoggerControl>>,
}

impl Default for VmmOptions {
    fn default() -> Self {
        Self {
            boot_timer: false,
            boot_protocol: BootProtocolChoice::default(),
            mmds_size_limit: 51_200,
            instance_id: "anonymous-instance".to_owned(),
            status_sink: None,
            logger: None,
        }
    }
}

/// One API request for the VMM thread, answered through `reply`.
pub struct VmmRequest {
    /// The action.
    pub action: ApiAction,
    /// Called exactly once with the answer.
    pub reply: Box<dyn FnOnce(ApiResponse) + Send>,
}

impl std::fmt::Debug for VmmRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmmRequest")
            .field("action", &self.action)
            .finish_non_exhaustive()
    }
}

/// State owned by the VMM thread.
pub struct Vmm {
    hv: Arc<dyn Hypervisor>,
    profile: CapabilityProfile,
    options: VmmOptions,
    observer: Arc<dyn VmmObserver>,
    config: VmConfig,
    phase: LifecyclePhase,
    microvm: Option<Microvm>,
    shutdown: Option<ExitCode>,
    /// Devices created at `PUT` time (files/taps opened, sockets bound once; the boot attaches
    /// these very devices).
    prepared: Prepared,
    /// The MMDS data store and configuration.
    mmds: MmdsService,
    /// A boot-specific resource was configured: `/snapshot/load` is no longer allowed.
    boot_path: bool,
    /// The metrics sink and line builder (`PUT /metrics`, `FlushMetrics`, periodic flush).
    metrics: SharedMetricsWriter,
}

impl std::fmt::Debug for Vmm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vmm")
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

/// Watches one eventfd for the event loop and raises a flag the loop checks after each round.
struct FlagSubscriber {
    fd: EventFd,
    flag: Arc<AtomicBool>,
}

impl MutEventSubscriber for FlagSubscriber {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.fd, EventSet::IN)) {
            tracing::error!("cannot watch a VMM eventfd: {e:?}");
        }
    }

    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.fd.read();
        self.flag.store(true, Ordering::Release);
    }
}

fn flag_subscriber(fd: &EventFd) -> Option<(Subscriber, Arc<AtomicBool>)> {
    let flag = Arc::new(AtomicBool::new(false));
    let sub: Subscriber = Arc::new(Mutex::new(FlagSubscriber {
        fd: fd.try_clone().ok()?,
        flag: Arc::clone(&flag),
    }));
    Some((sub, flag))
}

impl Vmm {
    /// A VMM with no configuration.
    ///
    /// # Errors
    /// The MMDS token key cannot be drawn from the OS random source.
    pub fn new(
        hv: Arc<dyn Hypervisor>,
        options: VmmOptions,
        observer: Arc<dyn VmmObserver>,
    ) -> Result<Self, VmmInitError> {
        let profile = hv.profile();
        let mmds = MmdsService::new(options.mmds_size_limit, &options.instance_id)
            .map_err(VmmInitError::Mmds)?;
        let mut options = options;
        let sink_observer = Arc::clone(&observer);
        options.status_sink = Some(crate::StatusSink::new(move |s| {
            sink_observer.runtime_status(&s);
        }));
        let metrics = MetricsWriter::shared(&options.instance_id);
        Ok(Self {
            hv,
            profile,
            options,
            observer,
            config: VmConfig::default(),
            phase: LifecyclePhase::Uninitialized,
            microvm: None,
            shutdown: None,
            prepared: Prepared::default(),
            metrics,
            mmds,
            boot_path: false,
        })
    }

    /// `--metrics-path`: initialise the metrics sink before any request (a later `PUT /metrics`
    /// is then refused, as in Firecracker). The error is Firecracker's text.
    pub fn init_metrics(
        &mut self,
        config: &squib_config::schemas::metrics::MetricsConfig,
    ) -> Result<(), String> {
        self.metrics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .init(config)?;
        self.config.metrics = Some(config.clone());
        self.observer.config_changed(&self.config);
        Ok(())
    }

    /// Hands the microVM's device metric groups to the metrics writer.
    fn collect_device_metrics(&self) {
        if let Some(vm) = self.microvm.as_ref() {
            let groups = DeviceGroups::collect(vm.devices(), self.mmds.metrics());
            self.metrics
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .set_devices(groups);
        }
    }

    /// Current phase.
    pub fn phase(&self) -> LifecyclePhase {
        self.phase
    }

    /// The configuration document.
    pub fn config(&self) -> &VmConfig {
        &self.config
    }

    fn set_phase(&mut self, phase: LifecyclePhase) {
        self.phase = phase;
        self.observer.phase_changed(phase);
    }

    /// Execute one action.
    pub fn handle(&mut self, action: &ApiAction) -> ApiResponse {
        if let Err(e) = action.admit(self.phase, &self.profile) {
            return ApiResponse::bad_request(e.to_string());
        }
        match action {
            ApiAction::Instance(InstanceAction::InstanceStart) => self.start(),
            ApiAction::Instance(InstanceAction::SendCtrlAltDel) => {
                self.with_microvm(|vm| vm.send_ctrl_alt_del())
            }
            // Without a sink nothing is written and the answer is 204, as in Firecracker.
            ApiAction::Instance(InstanceAction::FlushMetrics) => {
                match crate::metrics::flush(&self.metrics) {
                    Ok(()) => ApiResponse::NoContent,
                    Err(msg) => ApiResponse::bad_request(msg),
                }
            }
            ApiAction::PutMetrics(m) => {
                let mut probe = self.config.clone();
                if let Err(msg) = probe.apply(action) {
                    return ApiResponse::bad_request(msg);
                }
                let opened = self
                    .metrics
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .init(m);
                match opened {
                    Ok(()) => self.apply(action),
                    Err(msg) => ApiResponse::bad_request(msg),
                }
            }
            ApiAction::PutLogger(l) => {
                match crate::logger::put_logger(self.options.logger.as_ref(), l) {
                    Ok(()) => self.apply(action),
                    Err(msg) => ApiResponse::bad_request(msg),
                }
            }
            ApiAction::PatchVm(update) => self.pause_resume(*update),
            ApiAction::Shutdown => {
                self.shutdown = Some(ExitCode::Ok);
                ApiResponse::NoContent
            }
            ApiAction::PutBootSource(bs) => {
                if let Err(e) = std::fs::File::open(&bs.kernel_image_path) {
                    return ApiResponse::bad_request(format!(
                        "Boot source error: The kernel file cannot be opened: {e}"
                    ));
                }
                if let Some(initrd) = &bs.initrd_path
                    && let Err(e) = std::fs::File::open(initrd)
                {
                    return ApiResponse::bad_request(format!(
                        "Boot source error: The initrd file cannot be opened: {e}"
                    ));
                }
                self.apply(action)
            }
            ApiAction::PutDrive(d) if self.phase.is_pre_boot() => {
                // Firecracker creates the device (opens the file) at PUT time; the boot attaches
                // this very device, so the file is opened once.
                let block =
                    block_config(d).and_then(|c| Block::new(c).map_err(|e| block_error(&e)));
                match block {
                    Ok(block) => {
                        let resp = self.apply(action);
                        if resp.is_success() {
                            self.prepared.blocks.retain(|(id, _)| id != &d.drive_id);
                            self.prepared
                                .blocks
                                .push((d.drive_id.clone(), Arc::new(Mutex::new(block))));
                        }
                        resp
                    }
                    Err(msg) => ApiResponse::bad_request(msg),
                }
            }
            ApiAction::PutDrive(_) => {
                ApiResponse::bad_request("Drive config error: PCI is not enabled")
            }
            ApiAction::PatchDrive(update) => {
                let Some(vm) = self.microvm.as_ref() else {
                    return ApiResponse::bad_request(
                        squib_config::action::NOT_SUPPORTED_BEFORE_START,
                    );
                };
                match vm.devices().update_drive(update) {
                    Ok(()) => self.apply(action),
                    Err(e) => ApiResponse::bad_request(e.to_string()),
                }
            }
            ApiAction::PutNetworkInterface(n) if self.phase.is_pre_boot() => {
                self.put_network_interface(action, n)
            }
            ApiAction::PutNetworkInterface(_) => {
                ApiResponse::bad_request("Network config error: PCI is not enabled")
            }
            ApiAction::PatchNetworkInterface(update) => {
                let Some(vm) = self.microvm.as_ref() else {
                    return ApiResponse::bad_request(
                        squib_config::action::NOT_SUPPORTED_BEFORE_START,
                    );
                };
                match vm.devices().update_net(update) {
                    Ok(()) => self.apply(action),
                    Err(e) => ApiResponse::bad_request(e.to_string()),
                }
            }
            ApiAction::PutVsock(v) => {
                // Re-PUT replaces the device and removes the old socket file (Firecracker).
                let mut probe = self.config.clone();
                if let Err(msg) = probe.apply(action) {
                    return ApiResponse::bad_request(msg);
                }
                if let Some(old) = self.prepared.vsock.take() {
                    let path = old
                        .lock()
                        .map(|d| d.uds_path().to_path_buf())
                        .unwrap_or_default();
                    drop(old);
                    let _ = std::fs::remove_file(path);
                }
                match create_vsock(v) {
                    Ok(dev) => {
                        self.prepared.vsock = Some(Arc::new(Mutex::new(dev)));
                        self.apply(action)
                    }
                    Err(msg) => ApiResponse::bad_request(msg),
                }
            }
            ApiAction::PutMmdsConfig(c) => {
                let resp = self.apply(action);
                if resp.is_success() {
                    self.mmds.configure(c);
                }
                resp
            }
            ApiAction::PutMmds(value) => match self.mmds.put(value.clone()) {
                Ok(()) => self.apply(action),
                Err(msg) => ApiResponse::Fault {
                    status: 413,
                    message: msg,
                },
            },
            ApiAction::PatchMmds(value) => match self.mmds.patch(value) {
                Ok(()) => self.apply(action),
                Err(msg) => ApiResponse::bad_request(msg),
            },
            ApiAction::CreateSnapshot(params) => self.create_snapshot(params),
            ApiAction::LoadSnapshot(params) => self.load_snapshot(params),
            ApiAction::PutMachineConfig(_)
            | ApiAction::PatchMachineConfig(_)
            | ApiAction::PutCpuConfig(_)
            | ApiAction::PutSerial(_)
            | ApiAction::PutEntropy(_) => self.apply(action),
            ApiAction::PutBalloon(_)
            | ApiAction::PatchBalloon(_)
            | ApiAction::PatchBalloonStatistics(_)
            | ApiAction::StartBalloonHinting(_)
            | ApiAction::BalloonHintingStatus
            | ApiAction::StopBalloonHinting
            | ApiAction::PutPmem(_)
            | ApiAction::PatchPmem(_)
            | ApiAction::DeletePmem(_)
            | ApiAction::PutHotplugMemory(_)
            | ApiAction::PatchHotplugMemory(_) => {
                match crate::memdev::handle(action, self.microvm.as_ref().map(Microvm::devices)) {
                    crate::memdev::Outcome::Apply => self.apply(action),
                    crate::memdev::Outcome::Reply(resp) => resp,
                }
            }
            ApiAction::DeleteDrive(_) | ApiAction::DeleteNetworkInterface(_) => {
                ApiResponse::bad_request(unsupported(action))
            }
        }
    }

    fn apply(&mut self, action: &ApiAction) -> ApiResponse {
        match self.config.apply(action) {
            Ok(()) => {
                if sets_boot_path(action) {
                    self.boot_path = true;
                }
                if self.phase == LifecyclePhase::Uninitialized {
                    self.set_phase(LifecyclePhase::NotStarted);
                }
                self.observer.config_changed(&self.config);
                ApiResponse::NoContent
            }
            Err(msg) => ApiResponse::bad_request(msg),
        }
    }

    /// `PUT /network-interfaces/{id}` before boot: Firecracker's rules first (duplicate MAC),
    /// then the tap is opened (the old device of the same id is dropped first so its tap can be
    /// reopened); the boot attaches this device.
    fn put_network_interface(
        &mut self,
        action: &ApiAction,
        n: &squib_config::schemas::network_interface::NetworkInterfaceConfig,
    ) -> ApiResponse {
        let mut probe = self.config.clone();
        if let Err(msg) = probe.apply(action) {
            return ApiResponse::bad_request(msg);
        }
        if self
            .config
            .network_interfaces
            .iter()
            .any(|x| x.host_dev_name == n.host_dev_name && x.iface_id != n.iface_id)
        {
            return ApiResponse::bad_request(format!(
                "Network config error: Could not create the network device: Open tap device failed: Error while creating ifreq structure: Device or resource busy (os error 16). Invalid TUN/TAP Backend provided by {}. Check our documentation on setting up the network devices.",
                n.host_dev_name
            ));
        }
        self.prepared.nets.retain(|(id, _)| id != &n.iface_id);
        match create_net(n) {
            Ok(dev) => {
                let resp = self.apply(action);
                if resp.is_success() {
                    self.prepared
                        .nets
                        .push((n.iface_id.clone(), Arc::new(Mutex::new(dev))));
                }
                resp
            }
            Err(msg) => ApiResponse::bad_request(msg),
        }
    }

    fn create_snapshot(&mut self, params: &SnapshotCreateParams) -> ApiResponse {
        let started = std::time::Instant::now();
        let Some(vm) = self.microvm.as_mut() else {
            return ApiResponse::bad_request(squib_config::action::NOT_SUPPORTED_BEFORE_START);
        };
        match crate::snapshot::create(vm, params, self.mmds.save()) {
            Ok(()) => {
                let (metric, label) = crate::metrics::snapshot_create_latency(params.snapshot_type);
                crate::metrics::record_vmm_action(metric, label, started);
                ApiResponse::NoContent
            }
            Err(e) => ApiResponse::bad_request(format!("Create snapshot error: {e}")),
        }
    }

    /// `PUT /snapshot/load`: only in a fresh process; a failure is fatal (the 400 is sent, then
    /// the process exits with code 1, as Firecracker).
    fn load_snapshot(&mut self, params: &SnapshotLoadParams) -> ApiResponse {
        let started = std::time::Instant::now();
        if self.boot_path {
            return ApiResponse::bad_request(
                "Load snapshot error: Loading a microVM snapshot not allowed after configuring boot-specific resources.",
            );
        }
        let result = crate::snapshot::load_state(std::path::Path::new(&params.snapshot_path))
            .and_then(|state| {
                let huge_pages = crate::snapshot::restore_huge_pages(params, &state);
                let (memory, backend) = crate::snapshot::load_memory(
                    params,
                    &state.memory,
                    huge_pages,
                    state.machine.mem_size_mib,
                )?;
                Ok((state, memory, backend, huge_pages))
            })
            .map_err(|e| e.to_string())
            .and_then(|(state, memory, backend, huge_pages)| {
                if let Some(m) = &state.mmds {
                    self.mmds.restore(m)?;
                }
                let args = RestoreArgs {
                    memory,
                    backend,
                    config: &self.config,
                    track_dirty_pages: params.track_dirty_pages,
                    huge_pages,
                    overrides: RestoreOverrides {
                        taps: params
                            .network_overrides
                            .iter()
                            .map(|o| (o.iface_id.clone(), o.host_dev_name.clone()))
                            .collect(),
                        vsock_uds_path: params
                            .vsock_override
                            .as_ref()
                            .map(|v| v.uds_path.clone().into()),
                        mmds: Some(&self.mmds),
                    },
                };
                restore_microvm(&self.hv, &state, args, &self.options)
                    .map(|vm| (state, vm))
                    .map_err(|e| e.to_string())
            });
        let (state, vm) = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("Loading a snapshot failed: {e}");
                self.shutdown = Some(ExitCode::GenericError);
                return ApiResponse::bad_request(format!("Load snapshot error: {e}"));
            }
        };
        let huge_pages = vm.machine().huge_pages;
        self.microvm = Some(vm);
        let mc = &mut self.config.machine_config;
        mc.vcpu_count = state.machine.vcpu_count;
        mc.mem_size_mib = state.machine.mem_size_mib;
        mc.track_dirty_pages = params.track_dirty_pages;
        mc.huge_pages = huge_pages;
        if let Some(vm) = self.microvm.as_ref() {
            crate::memdev::sync_config_from_devices(&mut self.config, vm.devices());
        }
        self.observer.config_changed(&self.config);
        self.set_phase(LifecyclePhase::Paused);
        if params.resume_vm {
            let resumed = self.microvm.as_mut().map(Microvm::resume);
            if let Some(Err(e)) = resumed {
                self.shutdown = Some(ExitCode::GenericError);
                return ApiResponse::bad_request(format!("Load snapshot error: {e}"));
            }
            self.set_phase(LifecyclePhase::Running);
        }
        self.collect_device_metrics();
        let metric = &squib_core::metrics::METRICS.latencies_us.vmm_load_snapshot;
        crate::metrics::record_vmm_action(metric, "load snapshot", started);
        ApiResponse::NoContent
    }

    fn start(&mut self) -> ApiResponse {
        let origin = BootTimestamp::now_with(squib_sys::process_cpu_time_us);
        tracing::debug!("event_start: build microvm for boot");
        let previous = self.phase;
        self.set_phase(LifecyclePhase::Starting);
        match build_microvm(
            &self.hv,
            &self.config,
            &self.options,
            origin,
            &self.prepared,
            &self.mmds,
        ) {
            Ok(vm) => {
                tracing::debug!("event_end: build microvm for boot");
                self.microvm = Some(vm);
                self.collect_device_metrics();
                self.set_phase(LifecyclePhase::Running);
                tracing::info!("Successfully started microvm.");
                ApiResponse::NoContent
            }
            Err(e) => {
                self.set_phase(previous);
                ApiResponse::bad_request(format!("Start microvm error: {e}"))
            }
        }
    }

    fn with_microvm(&mut self, f: impl FnOnce(&mut Microvm) -> Result<(), String>) -> ApiResponse {
        match self.microvm.as_mut() {
            Some(vm) => match f(vm) {
                Ok(()) => ApiResponse::NoContent,
                Err(msg) => ApiResponse::bad_request(msg),
            },
            None => ApiResponse::bad_request(squib_config::action::NOT_SUPPORTED_BEFORE_START),
        }
    }

    fn pause_resume(&mut self, update: VmStateUpdate) -> ApiResponse {
        let started = std::time::Instant::now();
        let latencies = &squib_core::metrics::METRICS.latencies_us;
        let (label, phase, metric) = match update {
            VmStateUpdate::Paused => ("pause vm", LifecyclePhase::Paused, &latencies.vmm_pause_vm),
            VmStateUpdate::Resumed => (
                "resume vm",
                LifecyclePhase::Running,
                &latencies.vmm_resume_vm,
            ),
        };
        let resp = self.with_microvm(|vm| match update {
            VmStateUpdate::Paused => vm.pause(),
            VmStateUpdate::Resumed => vm.resume(),
        });
        if resp.is_success() {
            self.set_phase(phase);
            crate::metrics::record_vmm_action(metric, label, started);
        }
        resp
    }

    /// Run the event loop until the microVM ends (or a `Shutdown` action). Requests arrive on
    /// `requests`; `wake` is written once per request. Devices are driven by the same
    /// `event-manager` loop on this thread, as in Firecracker.
    pub fn run(mut self, requests: &Receiver<VmmRequest>, wake: &EventFd) -> ExitCode {
        let Ok(mut events) = EventManager::<Subscriber>::new() else {
            return ExitCode::UnexpectedError;
        };
        let Some((wake_sub, woken)) = flag_subscriber(wake) else {
            return ExitCode::UnexpectedError;
        };
        events.add_subscriber(wake_sub);
        let mut exited: Option<Arc<AtomicBool>> = None;
        let mut api_gone = false;
        loop {
            if api_gone && self.microvm.is_none() {
                return self.finish(ExitCode::Ok);
            }
            if let Err(e) = events.run() {
                if matches!(e, event_manager::Error::Epoll(errno) if errno.errno() == libc_eintr())
                {
                    continue;
                }
                tracing::error!("VMM event loop failed: {e:?}");
                return self.finish(ExitCode::UnexpectedError);
            }
            if exited.as_ref().is_some_and(|f| f.load(Ordering::Acquire)) {
                let code = self
                    .microvm
                    .as_ref()
                    .map_or(ExitCode::Ok, |vm| vm.exit_signal().code());
                return self.finish(code);
            }
            if !woken.swap(false, Ordering::AcqRel) {
                continue;
            }
            loop {
                match requests.try_recv() {
                    Ok(req) => {
                        let resp = self.handle(&req.action);
                        (req.reply)(resp);
                        if let Some(code) = self.shutdown.take() {
                            // A fatal answer (failed snapshot load) is written by the API
                            // thread; the process owner waits for it before exiting.
                            return self.finish(code);
                        }
                        if exited.is_none() && self.microvm.is_some() {
                            // A microVM was just built: wire it (and write the first metrics
                            // line) before the next request, as Firecracker; the wake-up
                            // brings the loop back for the requests still queued.
                            let _ = wake.write(1);
                            break;
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        api_gone = true;
                        break;
                    }
                }
            }
            // A microVM was just built: drive its devices and watch its exit eventfd.
            if exited.is_none()
                && let Some(vm) = self.microvm.as_mut()
            {
                for sub in vm.take_subscribers() {
                    events.add_subscriber(sub);
                }
                let Some((exit_sub, flag)) = flag_subscriber(vm.exit_signal().event()) else {
                    return self.finish(ExitCode::UnexpectedError);
                };
                events.add_subscriber(exit_sub);
                exited = Some(flag);
                // The periodic metrics line starts with the microVM, as in Firecracker.
                match PeriodicMetrics::new(
                    Arc::clone(&self.metrics),
                    crate::metrics::WRITE_METRICS_PERIOD,
                ) {
                    Ok(mut periodic) => {
                        periodic.start();
                        events.add_subscriber(Arc::new(Mutex::new(periodic)));
                    }
                    Err(e) => tracing::error!("Cannot create the metrics timer: {e}"),
                }
                // seccomp: once the microVM is built, before the loop drives it (Firecracker's order).
                if let Err(e) = squib_sys::install_thread_filter(squib_sys::ThreadCategory::Vmm) {
                    tracing::error!("Failed to install vmm seccomp filter: {e}");
                    return self.finish(ExitCode::GenericError);
                }
            }
        }
    }

    fn finish(&mut self, code: ExitCode) -> ExitCode {
        if let Some(mut vm) = self.microvm.take() {
            vm.stop();
        }
        // Firecracker's `Vmm::stop`: a last metrics line (the counters since the previous one).
        if let Err(e) = crate::metrics::flush(&self.metrics) {
            tracing::error!("Failed to write metrics while stopping: {e}");
        }
        self.set_phase(LifecyclePhase::Shutdown);
        code
    }
}

/// Whether a successful `action` configures a boot-specific resource (Firecracker's
/// `boot_path`: such a process can no longer load a snapshot). Logger, metrics, cpu-config,
/// serial and MMDS data do not.
fn sets_boot_path(action: &ApiAction) -> bool {
    matches!(
        action,
        ApiAction::PutBootSource(_)
            | ApiAction::PutDrive(_)
            | ApiAction::PutNetworkInterface(_)
            | ApiAction::PutPmem(_)
            | ApiAction::PutBalloon(_)
            | ApiAction::PutVsock(_)
            | ApiAction::PutEntropy(_)
            | ApiAction::PutMmdsConfig(_)
            | ApiAction::PutMachineConfig(_)
            | ApiAction::PatchMachineConfig(_)
            | ApiAction::PutHotplugMemory(_)
    )
}

/// The explicit refusal of an action this build does not implement yet.
fn unsupported(action: &ApiAction) -> String {
    let (category, what) = match action {
        ApiAction::DeleteDrive(_) => ("Drive config", "hot-unplug (it needs PCI)"),
        ApiAction::DeleteNetworkInterface(_) => ("Network config", "hot-unplug (it needs PCI)"),
        other => ("Request", other.class().label()),
    };
    format!("{category} error: {what} is not supported by this squib build yet.")
}

/// `EINTR`, without a libc dependency (Linux value).
const fn libc_eintr() -> i32 {
    4
}
