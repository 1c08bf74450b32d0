//! `InstanceStart`: build and boot a microVM from the configured resources.
//!
//! Order (Firecracker's `build_microvm_for_boot`): guest memory → VM + platform (irqchip, PIT)
//! → legacy devices (8250 COM1, i8042, boot timer) → kernel and initrd → command line → boot
//! structures (zero page or PVH start info, e820, GDT/IDT, page tables, MP table) → vCPU
//! threads, created paused and configured on their own threads → resume all.
//!
//! Runs on the VMM thread. Everything it creates is owned by the returned [`Microvm`].

use std::{
    fs::File,
    io::Write,
    sync::{Arc, Mutex},
};

use squib_arch::{
    BootConfig, BootProtocol, BootStateConfig, CpuidConfig, DEFAULT_BOOT_ARGS, configure_system,
    create_guest_memory, layout, load_initrd, load_kernel, write_cmdline, x86_boot_state,
};
use squib_config::{schemas::drive::DriveUpdate, vm_config::VmConfig};
use squib_core::GuestMemoryMmap;
use squib_devices::{
    Bus, BusDevice, EventFdIrq, IrqLine,
    legacy::{I8042Device, SerialDevice},
    pseudo::{BootTimer, BootTimestamp, SystemBootClock},
    rate_limiter::{BucketUpdate, TokenBucket},
};
use squib_hv::{Hypervisor, Vm, VmConfig as HvVmConfig};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::{
    error::StartMicrovmError,
    mmio_layout::MmioAllocator,
    vcpu::{BusIo, ExitSignal, VcpuEvent, VcpuHandle, VcpuResponse, VcpuSetup},
    virtio_devices::{AttachContext, Subscriber, VirtioDevices},
    vmm::{BootProtocolChoice, VmmOptions},
};

/// COM1 port range and GSI.
const COM1_PORT: u64 = 0x3f8;
const COM1_GSI: u32 = 4;
/// i8042 ports 0x60..=0x64 and GSI.
const I8042_PORT: u64 = 0x60;
const I8042_GSI: u32 = 1;

/// A built, running microVM.
#[derive(Debug)]
pub struct Microvm {
    vm: Arc<dyn Vm>,
    _memory: GuestMemoryMmap,
    vcpus: Vec<VcpuHandle>,
    exit: Arc<ExitSignal>,
    i8042: Arc<Mutex<I8042Device>>,
    boot_timer: Option<Arc<Mutex<BootTimer>>>,
    virtio: VirtioDevices,
    paused: bool,
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

    /// Pause every vCPU (idempotent).
    pub fn pause(&mut self) -> Result<(), String> {
        self.broadcast(VcpuEvent::Pause, &VcpuResponse::Paused)?;
        self.paused = true;
        Ok(())
    }

    /// Resume every vCPU (idempotent).
    pub fn resume(&mut self) -> Result<(), String> {
        self.broadcast(VcpuEvent::Resume, &VcpuResponse::Resumed)?;
        self.paused = false;
        Ok(())
    }

    /// `true` while paused.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Inject Ctrl-Alt-Del through the i8042.
    pub fn send_ctrl_alt_del(&self) -> Result<(), String> {
        self.i8042
            .lock()
            .map_err(|_| "i8042 lock poisoned".to_owned())?
            .trigger_ctrl_alt_del()
            .map_err(|e| e.to_string())
    }

    /// Last measured guest boot time, if the boot timer fired.
    pub fn boot_timer(&self) -> Option<&Arc<Mutex<BootTimer>>> {
        self.boot_timer.as_ref()
    }

    /// Event-loop subscribers of the virtio devices (taken once by the VMM loop).
    pub fn take_subscribers(&mut self) -> Vec<Subscriber> {
        std::mem::take(&mut self.virtio.subscribers)
    }

    /// `PATCH /drives/{id}`: swap the backing file and/or update the rate limiter.
    pub fn update_drive(&self, update: &DriveUpdate) -> Result<(), String> {
        let (_, block) = self
            .virtio
            .blocks
            .iter()
            .find(|(id, _)| id == &update.drive_id)
            .ok_or_else(|| {
                format!(
                    "Drive config error: No block device with id {} found.",
                    update.drive_id
                )
            })?;
        let mut block = block
            .lock()
            .map_err(|_| "block device lock poisoned".to_owned())?;
        if let Some(path) = &update.path_on_host {
            block.update_disk(std::path::Path::new(path)).map_err(|e| {
                format!("Drive config error: Unable to patch the block device: {e}")
            })?;
        }
        if let Some(rl) = &update.rate_limiter {
            let clock: Arc<dyn squib_devices::rate_limiter::Clock> =
                Arc::new(squib_devices::rate_limiter::MonotonicClock);
            block.update_rate_limiter(
                BucketUpdate::from_config(
                    rl.bandwidth.as_ref().map(to_bucket_cfg).as_ref(),
                    Arc::clone(&clock),
                ),
                BucketUpdate::from_config(rl.ops.as_ref().map(to_bucket_cfg).as_ref(), clock),
            );
        }
        Ok(())
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

    fn broadcast(&mut self, event: VcpuEvent, expect: &VcpuResponse) -> Result<(), String> {
        for (i, v) in self.vcpus.iter_mut().enumerate() {
            match v.request(event) {
                Some(r) if &r == expect => {}
                other => return Err(format!("vCPU {i} did not acknowledge {event:?}: {other:?}")),
            }
        }
        Ok(())
    }
}

impl Drop for Microvm {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An interrupt line that pulses a GSI through the VM (when irqfd is unavailable).
#[derive(Debug)]
struct VmIrq {
    vm: Arc<dyn Vm>,
    gsi: u32,
}

impl IrqLine for VmIrq {
    fn trigger(&self) -> std::io::Result<()> {
        self.vm
            .set_irq_line(self.gsi, true)
            .and_then(|()| self.vm.set_irq_line(self.gsi, false))
            .map_err(std::io::Error::other)
    }
}

pub(crate) fn irq_line(vm: &Arc<dyn Vm>, gsi: u32) -> Result<Arc<dyn IrqLine>, StartMicrovmError> {
    let evt = EventFd::new(EFD_NONBLOCK).map_err(|e| StartMicrovmError::Device(e.to_string()))?;
    match vm.register_irqfd(&evt, gsi) {
        Ok(()) => Ok(Arc::new(EventFdIrq::new(evt))),
        Err(squib_hv::HvError::Unsupported(_)) => Ok(Arc::new(VmIrq {
            vm: Arc::clone(vm),
            gsi,
        })),
        Err(e) => Err(e.into()),
    }
}

/// The serial output sink: `serial_out_path` (created/appended) or stdout.
fn serial_sink(config: &VmConfig) -> Result<Box<dyn Write + Send>, StartMicrovmError> {
    match config
        .serial
        .as_ref()
        .and_then(|s| s.serial_out_path.as_deref())
    {
        Some(path) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(|f| Box::new(f) as Box<dyn Write + Send>)
            .map_err(|e| {
                StartMicrovmError::Device(format!("cannot open serial_out_path {path}: {e}"))
            }),
        None => Ok(Box::new(std::io::stdout())),
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

/// Build and start a microVM. `start` is the boot-timer origin (taken when the VMM began
/// handling `InstanceStart`).
pub fn build_microvm(
    hv: &Arc<dyn Hypervisor>,
    config: &VmConfig,
    opts: &VmmOptions,
    start: BootTimestamp,
) -> Result<Microvm, StartMicrovmError> {
    if config.boot_source.kernel_image_path.is_empty() {
        return Err(StartMicrovmError::MissingKernelConfig);
    }
    let mc = &config.machine_config;
    let memory = create_guest_memory(mc.mem_size_mib).map_err(StartMicrovmError::Memory)?;
    let vm = hv.create_vm(&HvVmConfig {
        vcpu_count: u32::from(mc.vcpu_count),
    })?;
    vm.map_memory(&memory)?;
    vm.setup_platform()?;

    // Legacy devices.
    let exit_evt =
        EventFd::new(EFD_NONBLOCK).map_err(|e| StartMicrovmError::Device(e.to_string()))?;
    let reset_evt = exit_evt
        .try_clone()
        .map_err(|e| StartMicrovmError::Device(e.to_string()))?;
    let exit = Arc::new(ExitSignal::new(exit_evt));
    let pio = Bus::new();
    let mmio = Bus::new();
    let serial_limit = config
        .serial
        .as_ref()
        .and_then(|s| s.rate_limiter.as_ref())
        .and_then(|tb| TokenBucket::new(tb.size, tb.one_time_burst.unwrap_or(0), tb.refill_time));
    let serial = Arc::new(Mutex::new(SerialDevice::new(
        irq_line(&vm, COM1_GSI)?,
        serial_sink(config)?,
        serial_limit,
    )));
    insert(
        &pio,
        COM1_PORT,
        8,
        Arc::clone(&serial) as Arc<Mutex<dyn BusDevice>>,
    )?;
    if config
        .serial
        .as_ref()
        .and_then(|s| s.serial_out_path.as_ref())
        .is_none()
    {
        spawn_stdin_reader(serial);
    }
    let i8042 = Arc::new(Mutex::new(I8042Device::new(
        reset_evt,
        irq_line(&vm, I8042_GSI)?,
    )));
    insert(
        &pio,
        I8042_PORT,
        5,
        Arc::clone(&i8042) as Arc<Mutex<dyn BusDevice>>,
    )?;
    let boot_timer = if opts.boot_timer {
        let t = Arc::new(Mutex::new(BootTimer::with_clock(
            start,
            Box::new(SystemBootClock::new(squib_sys::process_cpu_time_us)),
        )));
        insert(
            &mmio,
            layout::MMIO32_MEM_START,
            0x1000,
            Arc::clone(&t) as Arc<Mutex<dyn BusDevice>>,
        )?;
        Some(t)
    } else {
        None
    };

    // virtio devices (block with the root first, then rng), announced on the command line.
    let virtio = AttachContext {
        vm: &vm,
        memory: &memory,
        mmio: &mmio,
        slots: MmioAllocator::default(),
    }
    .attach_all(
        &config.drives,
        config
            .entropy
            .as_ref()
            .and_then(|e| e.rate_limiter.as_ref()),
        config.entropy.is_some(),
    )
    .map_err(StartMicrovmError::Device)?;

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
    for token in &virtio.cmdline {
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

    // vCPUs: created and configured paused on their own threads, then resumed together.
    let supported = hv
        .as_x86()
        .ok_or_else(|| StartMicrovmError::Device("the hypervisor cannot run x86_64 guests".into()))?
        .supported_cpuid()?;
    let caps = hv.capabilities();
    let io = BusIo {
        pio: Arc::new(pio),
        mmio: Arc::new(mmio),
    };
    let mut vcpus = Vec::with_capacity(usize::from(mc.vcpu_count));
    for index in 0..mc.vcpu_count {
        let boot_state = x86_boot_state(&BootStateConfig {
            protocol: entry.protocol,
            entry: entry.addr,
            cpuid: CpuidConfig {
                vcpu_index: index,
                vcpu_count: mc.vcpu_count,
                smt: mc.smt,
                hide_cx16: caps.emulated_guests,
            },
            supported_cpuid: &supported,
            lapic: caps.in_kernel_irqchip,
        })
        .map_err(StartMicrovmError::Configure)?;
        let handle = VcpuHandle::spawn(VcpuSetup {
            index: u32::from(index),
            vm: Arc::clone(&vm),
            boot_state,
            io: io.clone(),
            exit: Arc::clone(&exit),
        })
        .map_err(|reason| StartMicrovmError::Vcpu {
            index: u32::from(index),
            reason,
        })?;
        vcpus.push(handle);
    }
    let mut microvm = Microvm {
        vm,
        _memory: memory,
        vcpus,
        exit,
        i8042,
        boot_timer,
        virtio,
        paused: true,
    };
    microvm
        .resume()
        .map_err(|reason| StartMicrovmError::Vcpu { index: 0, reason })?;
    Ok(microvm)
}

fn insert(
    bus: &Bus,
    base: u64,
    len: u64,
    dev: Arc<Mutex<dyn BusDevice>>,
) -> Result<(), StartMicrovmError> {
    bus.insert(dev, base, len)
        .map_err(|e| StartMicrovmError::Device(e.to_string()))
}

fn to_bucket_cfg(
    b: &squib_config::schemas::rate_limiter::TokenBucketConfig,
) -> squib_devices::rate_limiter::TokenBucketConfig {
    squib_devices::rate_limiter::TokenBucketConfig {
        size: b.size,
        one_time_burst: b.one_time_burst,
        refill_time: b.refill_time,
    }
}

/// The console's input side, as in Firecracker: when the serial port writes to stdout, bytes
/// read from stdin are fed to the UART (bounded by its input queue). A detached thread
/// (`fc_stdin`) does blocking reads and ends at EOF (e.g. stdin is /dev/null).
fn spawn_stdin_reader(serial: Arc<Mutex<SerialDevice>>) {
    let spawned = std::thread::Builder::new()
        .name("fc_stdin".into())
        .spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 256];
            let mut stdin = std::io::stdin().lock();
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 {
                    break;
                }
                match serial.lock() {
                    Ok(mut s) => {
                        s.enqueue_input(&buf[..n]);
                    }
                    Err(_) => break,
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("serial input from stdin is unavailable: {e}");
    }
}
