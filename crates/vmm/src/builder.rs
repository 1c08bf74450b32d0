//! `InstanceStart` and snapshot restore: build a microVM from the configuration or from a
//! saved state.
//!
//! Both paths share the steps (Firecracker's `build_microvm_for_boot` /
//! `build_microvm_from_snapshot`):
//!
//! 1. guest memory (fresh, or mapped from a memory file / served by a UFFD handler) and the VM
//!    ([`create_vm`]: map memory, platform, dirty log);
//! 2. devices through the [`DeviceManager`]: from the configuration, or from saved state at the
//!    same addresses;
//! 3. boot only: kernel, initrd, command line, boot structures (zero page or PVH info, MP table,
//!    ACPI tables describing the attached devices);
//! 4. vCPU threads ([`spawn_vcpus`]), started from a boot state or from saved vCPU state; a
//!    boot resumes them all, a restore leaves them paused.
//!
//! Runs on the VMM thread. Everything it creates is owned by the returned [`Microvm`].

use std::{
    fs::File,
    sync::{Arc, Mutex},
};

use squib_arch::{
    BootConfig, BootProtocol, BootStateConfig, CpuidConfig, DEFAULT_BOOT_ARGS, arch_memory_regions,
    configure_system, load_initrd, load_kernel, setup_acpi_tables, write_cmdline, x86_boot_state,
};
use squib_config::schemas::machine_config::HugePages;
use squib_config::vm_config::VmConfig;
use squib_core::GuestMemoryMmap;
use squib_devices::pseudo::{BootTimer, BootTimestamp};
use squib_hv::{CapabilityModifier, Hypervisor, Vm, VmConfig as HvVmConfig};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::{
    cpu_template::{self, GuestCpu},
    device_manager::{DeviceManager, LegacyArgs, Prepared, RestoreOverrides},
    error::StartMicrovmError,
    mmds::MmdsService,
    vcpu::{BusIo, ExitSignal, VcpuEvent, VcpuHandle, VcpuResponse, VcpuSetup, VcpuStart},
    virtio_devices::Subscriber,
    vmm::{BootProtocolChoice, VmmOptions},
};

/// Machine parameters a running microVM keeps (for snapshots).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MachineState {
    /// vCPUs.
    pub vcpu_count: u8,
    /// Guest RAM in MiB.
    pub mem_size_mib: usize,
    /// SMT as configured.
    pub smt: bool,
    /// Dirty-page tracking enabled.
    pub track_dirty_pages: bool,
    /// How guest memory is backed (recorded in snapshots, as Firecracker's `VmInfo`).
    pub huge_pages: HugePages,
}

/// A built microVM (running after boot, paused after restore).
#[derive(Debug)]
pub struct Microvm {
    pub(crate) vm: Arc<dyn Vm>,
    pub(crate) memory: GuestMemoryMmap,
    pub(crate) vcpus: Vec<VcpuHandle>,
    exit: Arc<ExitSignal>,
    pub(crate) devices: DeviceManager,
    paused: bool,
    pub(crate) machine: MachineState,
    /// Keeps a restore's memory backend alive (the UFFD and its handler connection).
    pub(crate) _backend: Option<Box<dyn std::any::Any + Send>>,
}

impl Microvm {
    /// The termination signal (its eventfd wakes the VMM thread).
    pub fn exit_signal(&self) -> &Arc<ExitSignal> {
        &self.exit
    }

    /// The VM.
    pub fn vm(&self) -> &Arc<dyn Vm> {
        &self.vm
    }

    /// The device manager.
    pub fn devices(&self) -> &DeviceManager {
        &self.devices
    }

    /// Guest memory.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    /// Machine parameters.
    pub fn machine(&self) -> MachineState {
        self.machine
    }

    /// Pause every vCPU (idempotent). If one vCPU does not acknowledge, the ones already
    /// paused are resumed again, so the VM is never left half-paused.
    pub fn pause(&mut self) -> Result<(), String> {
        self.broadcast(VcpuEvent::Pause, &VcpuResponse::Paused, VcpuEvent::Resume)?;
        self.paused = true;
        Ok(())
    }

    /// Resume every vCPU (idempotent); rolls back like [`pause`](Self::pause).
    pub fn resume(&mut self) -> Result<(), String> {
        self.broadcast(VcpuEvent::Resume, &VcpuResponse::Resumed, VcpuEvent::Pause)?;
        self.paused = false;
        Ok(())
    }

    /// `true` while paused.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Inject Ctrl-Alt-Del through the i8042.
    pub fn send_ctrl_alt_del(&self) -> Result<(), String> {
        self.devices.send_ctrl_alt_del().map_err(|e| e.to_string())
    }

    /// Last measured guest boot time, if the boot timer fired.
    pub fn boot_timer(&self) -> Option<&Arc<Mutex<BootTimer>>> {
        self.devices.boot_timer()
    }

    /// Event-loop subscribers of devices registered since the last call.
    pub fn take_subscribers(&mut self) -> Vec<Subscriber> {
        self.devices.take_subscribers()
    }

    /// Stop and join every vCPU thread.
    pub fn stop(&mut self) {
        if self.vcpus.is_empty() {
            return;
        }
        tracing::info!("Vmm is stopping.");
        for v in &mut self.vcpus {
            v.finish();
        }
        self.vcpus.clear();
    }

    fn broadcast(
        &mut self,
        event: VcpuEvent,
        expect: &VcpuResponse,
        undo: VcpuEvent,
    ) -> Result<(), String> {
        for i in 0..self.vcpus.len() {
            match self.vcpus[i].request(event) {
                Some(r) if &r == expect => {}
                other => {
                    for v in &mut self.vcpus[..i] {
                        let _ = v.request(undo);
                    }
                    return Err(format!("vCPU {i} did not acknowledge {event:?}: {other:?}"));
                }
            }
        }
        Ok(())
    }

    /// Saves every vCPU's state (the vCPUs must be paused).
    pub fn save_vcpus(&mut self) -> Result<Vec<squib_hv::VcpuStateBlob>, String> {
        let mut out = Vec::with_capacity(self.vcpus.len());
        for v in &mut self.vcpus {
            match v.request(VcpuEvent::SaveState) {
                Some(VcpuResponse::Saved(Ok(blob))) => out.push(*blob),
                Some(VcpuResponse::Saved(Err(why))) => {
                    return Err(format!("vCPU {}: {why}", v.index()));
                }
                other => return Err(format!("vCPU {} did not save: {other:?}", v.index())),
            }
        }
        Ok(out)
    }
}

impl Drop for Microvm {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The kernel command line: `boot_args` (or Firecracker's default) plus what Firecracker always
/// appends on an MMIO-only machine (`pci=off`).
pub fn kernel_cmdline(config: &VmConfig) -> String {
    let mut cmdline = config
        .boot_source
        .boot_args
        .clone()
        .unwrap_or_else(|| DEFAULT_BOOT_ARGS.to_owned());
    if !cmdline.split_whitespace().any(|t| t == "pci=off") {
        cmdline.push_str(" pci=off");
    }
    cmdline
}

/// Step 1: a VM with `memory` mapped, its platform created and, if asked, dirty logging on.
/// `capabilities` are the CPU template's changes to the hypervisor's required capabilities.
pub fn create_vm(
    hv: &Arc<dyn Hypervisor>,
    memory: &GuestMemoryMmap,
    vcpu_count: u8,
    track_dirty_pages: bool,
    capabilities: Vec<CapabilityModifier>,
) -> Result<Arc<dyn Vm>, StartMicrovmError> {
    let vm = hv.create_vm(&HvVmConfig {
        vcpu_count: u32::from(vcpu_count),
        capabilities,
    })?;
    vm.map_memory(memory)?;
    vm.setup_platform()?;
    if track_dirty_pages {
        vm.enable_dirty_log()?;
    }
    Ok(vm)
}

fn exit_signal() -> Result<(Arc<ExitSignal>, EventFd), StartMicrovmError> {
    let exit_evt = EventFd::new(EFD_NONBLOCK).map_err(StartMicrovmError::EventFd)?;
    let reset_evt = exit_evt.try_clone().map_err(StartMicrovmError::EventFd)?;
    Ok((Arc::new(ExitSignal::new(exit_evt)), reset_evt))
}

/// Step 4: one thread per vCPU, each created and initialised (paused) on its own thread.
pub fn spawn_vcpus(
    vm: &Arc<dyn Vm>,
    io: &BusIo,
    exit: &Arc<ExitSignal>,
    starts: Vec<VcpuStart>,
) -> Result<Vec<VcpuHandle>, StartMicrovmError> {
    let mut vcpus = Vec::with_capacity(starts.len());
    for (index, start) in (0u32..).zip(starts) {
        let handle = VcpuHandle::spawn(VcpuSetup {
            index,
            vm: Arc::clone(vm),
            start,
            io: io.clone(),
            exit: Arc::clone(exit),
        })
        .map_err(|reason| StartMicrovmError::Vcpu { index, reason })?;
        vcpus.push(handle);
    }
    Ok(vcpus)
}

/// The vCPU threads' I/O context: the device buses, plus the guest RAM for VMM-side instruction
/// emulation when the backend emulates guests (nested `kvm_pvm`; see [`crate::emulation`]).
fn vcpu_io(hv: &Arc<dyn Hypervisor>, devices: &DeviceManager, ram: &GuestMemoryMmap) -> BusIo {
    let mut io = devices.bus_io();
    if hv.capabilities().emulated_guests {
        io.emulation_memory = Some(ram.clone());
    }
    io
}

/// Build and start a microVM. `start` is the boot-timer origin (taken when the VMM began
/// handling `InstanceStart`); `prepared` are the block devices opened at `PUT /drives`.
pub fn build_microvm(
    hv: &Arc<dyn Hypervisor>,
    config: &VmConfig,
    opts: &VmmOptions,
    start: BootTimestamp,
    prepared: &Prepared,
    mmds: &MmdsService,
) -> Result<Microvm, StartMicrovmError> {
    if config.boot_source.kernel_image_path.is_empty() {
        return Err(StartMicrovmError::MissingKernelConfig);
    }
    let mc = &config.machine_config;
    let ranges = arch_memory_regions(mc.mem_size_mib).map_err(StartMicrovmError::Memory)?;
    let memory = crate::huge_pages::guest_memory(&ranges, mc.huge_pages)?;
    // The CPU template first (Firecracker: static templates' vendor/model checks, then its
    // capability requirements when the VM is created).
    let x86 = hv.as_x86().ok_or(StartMicrovmError::NoX86)?;
    let supported = x86.supported_cpuid()?;
    let template = cpu_template::resolve(config, &supported)?;
    let vm = create_vm(
        hv,
        &memory,
        mc.vcpu_count,
        mc.track_dirty_pages,
        template.capabilities.clone(),
    )?;
    // RAM (`memory`) for the boot structures; RAM + the hotplug region for the devices.
    let full = crate::hotplug::guest_memory(
        &memory,
        config.memory_hotplug.as_ref(),
        crate::huge_pages::backing(mc.huge_pages),
    )?;

    let (exit, reset_evt) = exit_signal()?;
    let mut devices = DeviceManager::new(Arc::clone(&vm), full.clone());
    devices.set_status_sink(opts.status_sink.clone());
    devices.attach_legacy(
        LegacyArgs {
            config,
            reset_evt,
            boot_timer: opts.boot_timer.then_some(start),
        },
        None,
    )?;
    devices.attach_virtio_from_config(config, prepared, mmds)?;

    // Kernel, initrd, command line, boot structures.
    let open = |what: &'static str, path: &str| {
        File::open(path).map_err(|source| StartMicrovmError::OpenFile { what, source })
    };
    let mut kernel = open("kernel", &config.boot_source.kernel_image_path)?;
    let loaded = load_kernel(&memory, &mut kernel).map_err(StartMicrovmError::KernelLoad)?;
    let entry = loaded.entry(opts.boot_protocol != BootProtocolChoice::LinuxBoot);
    if entry.protocol == BootProtocol::Pvh {
        tracing::info!("Kernel loaded using PVH boot protocol");
    }
    let initrd = match &config.boot_source.initrd_path {
        Some(path) => {
            let mut f = open("initrd", path)?;
            let size = f
                .metadata()
                .map_err(|source| StartMicrovmError::OpenFile {
                    what: "initrd",
                    source,
                })?
                .len();
            Some(
                load_initrd(&memory, &mut f, size, loaded.kernel_end)
                    .map_err(StartMicrovmError::Configure)?,
            )
        }
        None => None,
    };
    let mut cmdline = kernel_cmdline(config);
    if hv.capabilities().emulated_guests {
        // The nested-PVM guest profile (squib_arch::pvm): only on kvm_pvm hosts.
        cmdline = squib_arch::pvm::append_absent(&cmdline, squib_arch::pvm::PVM_CMDLINE_ADDITIONS);
    }
    for token in devices.cmdline() {
        cmdline.push(' ');
        cmdline.push_str(token);
    }
    let cmdline_size = write_cmdline(&memory, &cmdline).map_err(StartMicrovmError::Configure)?;
    configure_system(
        &memory,
        &BootConfig {
            protocol: entry.protocol,
            cmdline_size,
            initrd,
            setup_header: loaded.setup_header,
            vcpu_count: mc.vcpu_count,
        },
    )
    .map_err(StartMicrovmError::Configure)?;
    setup_acpi_tables(&memory, mc.vcpu_count, &devices.virtio_mmio_devices())
        .map_err(StartMicrovmError::Configure)?;

    let caps = hv.capabilities();
    let cpuid_config = |vcpu_index| CpuidConfig {
        vcpu_index,
        vcpu_count: mc.vcpu_count,
        smt: mc.smt,
        hide_cx16: caps.emulated_guests,
    };
    // Every vCPU gets the templated CPUID (normalised for it) and the template's MSRs.
    let guest_cpu = GuestCpu::prepare(x86, &supported, &template, &cpuid_config(0))?;
    let mut starts = Vec::with_capacity(usize::from(mc.vcpu_count));
    for index in 0..mc.vcpu_count {
        let boot_state = x86_boot_state(&BootStateConfig {
            protocol: entry.protocol,
            entry: entry.addr,
            cpuid: cpuid_config(index),
            supported_cpuid: &guest_cpu.cpuid,
            template_msrs: &guest_cpu.msrs,
            lapic: caps.in_kernel_irqchip,
        })
        .map_err(StartMicrovmError::Configure)?;
        starts.push(VcpuStart::Boot(Box::new(boot_state)));
    }
    let vcpus = spawn_vcpus(&vm, &vcpu_io(hv, &devices, &full), &exit, starts)?;
    let mut microvm = Microvm {
        vm,
        memory: full,
        vcpus,
        exit,
        devices,
        paused: true,
        machine: MachineState {
            vcpu_count: mc.vcpu_count,
            mem_size_mib: mc.mem_size_mib,
            smt: mc.smt,
            track_dirty_pages: mc.track_dirty_pages,
            huge_pages: mc.huge_pages,
        },
        _backend: None,
    };
    microvm
        .resume()
        .map_err(|reason| StartMicrovmError::Vcpu { index: 0, reason })?;
    Ok(microvm)
}

/// What a restore needs besides the saved state.
#[derive(Debug)]
pub struct RestoreArgs<'a> {
    /// Guest memory, from the snapshot's memory backend.
    pub memory: GuestMemoryMmap,
    /// Keeps the memory backend alive.
    pub backend: Option<Box<dyn std::any::Any + Send>>,
    /// The configuration (serial output; the devices come from the state).
    pub config: &'a VmConfig,
    /// Track dirty pages after the restore.
    pub track_dirty_pages: bool,
    /// The page backing the memory was restored with (the load request's `huge_pages`
    /// resolved against the snapshot's).
    pub huge_pages: HugePages,
    /// `network_overrides`, `vsock_override`, the MMDS store.
    pub overrides: RestoreOverrides<'a>,
}

/// Rebuilds a microVM from a snapshot; it is left paused.
pub fn restore_microvm(
    hv: &Arc<dyn Hypervisor>,
    state: &crate::snapshot::MicrovmState,
    args: RestoreArgs<'_>,
    opts: &VmmOptions,
) -> Result<Microvm, StartMicrovmError> {
    let memory = args.memory;
    let machine = MachineState {
        track_dirty_pages: args.track_dirty_pages,
        huge_pages: args.huge_pages,
        ..state.machine
    };
    let ram = crate::hotplug::ram_only(&memory, crate::hotplug::restored_addr(&state.devices));
    // The VM state carries the CPU template's capability requirements; restoring it checks them.
    let vm = create_vm(
        hv,
        &ram,
        machine.vcpu_count,
        machine.track_dirty_pages,
        Vec::new(),
    )?;
    vm.restore_state(&state.vm)?;
    let (exit, reset_evt) = exit_signal()?;
    let mut devices = DeviceManager::new(Arc::clone(&vm), memory.clone());
    devices.set_status_sink(opts.status_sink.clone());
    devices.attach_legacy(
        LegacyArgs {
            config: args.config,
            reset_evt,
            boot_timer: (opts.boot_timer && state.devices.boot_timer)
                .then(|| BootTimestamp::now_with(squib_sys::process_cpu_time_us)),
        },
        Some(&state.devices),
    )?;
    devices.restore_virtio(&state.devices, &args.overrides)?;
    let starts = state
        .vcpus
        .iter()
        .map(|b| VcpuStart::Restore(Box::new(b.clone())))
        .collect();
    let vcpus = spawn_vcpus(&vm, &vcpu_io(hv, &devices, &memory), &exit, starts)?;
    Ok(Microvm {
        vm,
        memory,
        vcpus,
        exit,
        devices,
        paused: true,
        machine,
        _backend: args.backend,
    })
}
