//! The device manager: the one owner of every device of a microVM.
//!
//! Legacy devices (8250 COM1, i8042, boot timer) and every virtio device with its virtio-mmio
//! transport are registered here, by id, through one contract:
//!
//! - **bus range + IRQ**: a virtio device gets the next 4 KiB slot from `0xC000_1000` and GSI
//!   from 5 ([`MmioAllocator`]), or, on restore, the slot and GSI it had when it was saved;
//! - **interrupt**: an irqfd on the GSI (or an IRQ-line fallback);
//! - **queue notifications**: one ioeventfd per queue on `QueueNotify`;
//! - **event sources**: one `event-manager` subscriber per device ([`VirtioSubscriber`]) that
//!   registers its queue, timer, completion and host fds and applies the device's runtime
//!   add/modify/remove changes; the VMM loop takes new subscribers with
//!   [`DeviceManager::take_subscribers`];
//! - **metrics**: each handle exposes its device's metric group;
//! - **save/restore**: [`DeviceManager::save`] captures every device ([`DeviceManagerState`]),
//!   [`DeviceManager::restore`] rebuilds them at the same addresses, re-activating virtio devices
//!   with their saved queues.
//!
//! A new virtio device type adds one [`VirtioHandle`] variant and one [`VirtioDeviceState`]
//! variant; nothing else changes. Runs on the VMM thread; devices are shared with vCPU threads
//! through the buses.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use squib_arch::layout;
use squib_config::schemas::drive::DriveUpdate;
use squib_config::schemas::network_interface::NetworkInterfaceUpdate;
use squib_config::vm_config::VmConfig;
use squib_core::GuestMemoryMmap;
use squib_devices::legacy::{I8042Device, SerialDevice};
use squib_devices::persist::Persist;
use squib_devices::pseudo::{BootTimer, BootTimestamp, SystemBootClock};
use squib_devices::rate_limiter::{BucketUpdate, TokenBucket};
use squib_devices::virtio::balloon::BalloonState;
use squib_devices::virtio::block::persist::BlockState;
use squib_devices::virtio::mem::VirtioMemState;
use squib_devices::virtio::mmio::persist::MmioTransportState;
use squib_devices::virtio::net::persist::{NetConstructorArgs, NetState};
use squib_devices::virtio::pmem::PmemState;
use squib_devices::virtio::rng::EntropyState;
use squib_devices::virtio::vsock::persist::{VsockConstructorArgs, VsockState};
use squib_devices::virtio::{
    Balloon, Block, Entropy, MmioTransport, Net, Pmem, VirtioDevice, VirtioMem, VirtioSubscriber,
    Vsock,
};
use squib_devices::{Bus, BusDevice, I8042State};
use squib_hv::{DataMatch, HvError, IoEventAddress, Vm};
use squib_mmds::MmdsNetworkStackState;
use vmm_sys_util::eventfd::EventFd;

use crate::error::DeviceError;
use crate::mmds::SharedStack;
use crate::mmio_layout::{MMIO_SLOT_SIZE, MmioAllocator, MmioSlot, root_block_args};
use crate::runtime_status::StatusSink;
use crate::vcpu::BusIo;
use crate::virtio_devices::{Subscriber, block_error, rate_limiter};

/// COM1 port range and GSI.
const COM1_PORT: u64 = 0x3f8;
const COM1_GSI: u32 = 4;
/// i8042 ports 0x60..=0x64 and GSI.
const I8042_PORT: u64 = 0x60;
const I8042_GSI: u32 = 1;
/// Offset of the `QueueNotify` register in a virtio-mmio slot.
const QUEUE_NOTIFY_OFFSET: u64 = 0x50;

/// A registered virtio device, typed for host-side operations (PATCH, save).
#[derive(Debug, Clone)]
pub enum VirtioHandle {
    /// virtio-blk.
    Block(Arc<Mutex<Block>>),
    /// virtio-net (with its MMDS stack, if MMDS answers on this interface).
    Net(Arc<Mutex<Net>>, Option<SharedStack>),
    /// virtio-vsock.
    Vsock(Arc<Mutex<Vsock>>),
    /// virtio-rng.
    Entropy(Arc<Mutex<Entropy>>),
    /// virtio-balloon.
    Balloon(Arc<Mutex<Balloon>>),
    /// virtio-pmem.
    Pmem(Arc<Mutex<Pmem>>),
    /// virtio-mem (memory hotplug).
    Mem(Arc<Mutex<VirtioMem>>),
}

/// A virtio device's own snapshot state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum VirtioDeviceState {
    /// virtio-blk.
    Block(BlockState),
    /// virtio-net, with its MMDS stack's state if MMDS answered on it.
    Net(NetState, Option<MmdsNetworkStackState>),
    /// virtio-vsock.
    Vsock(VsockState),
    /// virtio-rng.
    Entropy(EntropyState),
    /// virtio-balloon.
    Balloon(BalloonState),
    /// virtio-pmem.
    Pmem(PmemState),
    /// virtio-mem (memory hotplug).
    Mem(VirtioMemState),
}

/// Host-side replacements a snapshot load applies (`network_overrides`, `vsock_override`).
#[derive(Debug, Default)]
pub struct RestoreOverrides<'a> {
    /// `iface_id` → new tap name.
    pub taps: Vec<(String, String)>,
    /// New vsock `uds_path`.
    pub vsock_uds_path: Option<std::path::PathBuf>,
    /// The MMDS store, for interfaces that had an MMDS stack.
    pub mmds: Option<&'a crate::mmds::MmdsService>,
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl VirtioHandle {
    fn as_dyn(&self) -> Arc<Mutex<dyn VirtioDevice>> {
        match self {
            Self::Block(d) => d.clone(),
            Self::Net(d, _) => d.clone(),
            Self::Vsock(d) => d.clone(),
            Self::Entropy(d) => d.clone(),
            Self::Balloon(d) => d.clone(),
            Self::Pmem(d) => d.clone(),
            Self::Mem(d) => d.clone(),
        }
    }

    fn subscriber(&self) -> Subscriber {
        match self {
            Self::Block(d) => Arc::new(Mutex::new(VirtioSubscriber::new(Arc::clone(d)))),
            Self::Net(d, _) => Arc::new(Mutex::new(VirtioSubscriber::new(Arc::clone(d)))),
            Self::Vsock(d) => Arc::new(Mutex::new(VirtioSubscriber::new(Arc::clone(d)))),
            Self::Entropy(d) => Arc::new(Mutex::new(VirtioSubscriber::new(Arc::clone(d)))),
            Self::Balloon(d) => Arc::new(Mutex::new(VirtioSubscriber::new(Arc::clone(d)))),
            Self::Pmem(d) => Arc::new(Mutex::new(VirtioSubscriber::new(Arc::clone(d)))),
            Self::Mem(d) => Arc::new(Mutex::new(VirtioSubscriber::new(Arc::clone(d)))),
        }
    }

    fn save(&self) -> VirtioDeviceState {
        match self {
            Self::Block(d) => VirtioDeviceState::Block(lock(d).save()),
            Self::Net(d, stack) => {
                VirtioDeviceState::Net(lock(d).save(), stack.as_ref().map(|s| lock(&s.0).save()))
            }
            Self::Vsock(d) => VirtioDeviceState::Vsock(lock(d).save()),
            Self::Entropy(d) => VirtioDeviceState::Entropy(lock(d).save()),
            Self::Balloon(d) => VirtioDeviceState::Balloon(lock(d).save()),
            Self::Pmem(d) => VirtioDeviceState::Pmem(crate::pmem::save(d)),
            Self::Mem(d) => VirtioDeviceState::Mem(crate::hotplug::save(d)),
        }
    }

    fn restore(
        state: &VirtioDeviceState,
        overrides: &RestoreOverrides<'_>,
    ) -> Result<Self, DeviceError> {
        Ok(match state {
            VirtioDeviceState::Block(s) => Self::Block(Arc::new(Mutex::new(
                Block::restore((), s).map_err(|e| DeviceError::Restore(block_error(&e)))?,
            ))),
            VirtioDeviceState::Net(s, mmds) => {
                let host_dev_name_override = overrides
                    .taps
                    .iter()
                    .find(|(id, _)| id == &s.iface_id)
                    .map(|(_, tap)| tap.clone());
                let mut net = Net::restore(
                    NetConstructorArgs {
                        host_dev_name_override,
                    },
                    s,
                )
                .map_err(|e| {
                    DeviceError::Restore(format!(
                        "Network config error: Could not create the network device: {e}"
                    ))
                })?;
                let stack = match (mmds, overrides.mmds) {
                    (Some(saved), Some(service)) => Some(service.restore_stack(saved)),
                    _ => None,
                };
                if let Some(stack) = &stack {
                    net.set_interceptor(Some(Box::new(stack.clone())));
                }
                Self::Net(Arc::new(Mutex::new(net)), stack)
            }
            VirtioDeviceState::Vsock(s) => Self::Vsock(Arc::new(Mutex::new(
                Vsock::restore(
                    VsockConstructorArgs {
                        uds_path_override: overrides.vsock_uds_path.clone(),
                    },
                    s,
                )
                .map_err(|e| DeviceError::Restore(format!("Vsock config error: {e}")))?,
            ))),
            VirtioDeviceState::Entropy(s) => Self::Entropy(Arc::new(Mutex::new(
                Entropy::restore((), s)
                    .map_err(|e| DeviceError::Restore(format!("Entropy device error: {e}")))?,
            ))),
            VirtioDeviceState::Balloon(s) => Self::Balloon(Arc::new(Mutex::new(
                Balloon::restore((), s)
                    .map_err(|e| DeviceError::Restore(format!("Balloon: {e}")))?,
            ))),
            // Rebuilt with the VM by `DeviceManager::restore_virtio`.
            VirtioDeviceState::Pmem(_) | VirtioDeviceState::Mem(_) => {
                return Err(DeviceError::Restore(
                    "pmem and virtio-mem need the VM".into(),
                ));
            }
        })
    }
}

/// One registered virtio device.
#[derive(Debug)]
struct VirtioEntry {
    id: String,
    handle: VirtioHandle,
    slot: MmioSlot,
    transport: Arc<Mutex<MmioTransport>>,
}

/// One virtio device as a snapshot saves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VirtioEntryState {
    /// Device id (drive id, `"rng"`).
    pub id: String,
    /// MMIO slot base.
    pub base: u64,
    /// GSI.
    pub gsi: u32,
    /// Transport registers and active queues.
    pub transport: MmioTransportState,
    /// The device's own state.
    pub device: VirtioDeviceState,
}

/// Every device of a microVM as a snapshot saves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceManagerState {
    /// COM1.
    pub serial: squib_devices::legacy::serial::SerialState,
    /// The i8042.
    pub i8042: I8042State,
    /// Whether the boot timer was attached.
    pub boot_timer: bool,
    /// Virtio devices in registration order.
    pub virtio: Vec<VirtioEntryState>,
}

/// Host resources the legacy devices need.
#[derive(Debug)]
pub struct LegacyArgs<'a> {
    /// The configuration (serial output, serial rate limiter).
    pub config: &'a VmConfig,
    /// Written by the i8042 reset line.
    pub reset_evt: EventFd,
    /// Attach the boot timer, timing from this origin.
    pub boot_timer: Option<BootTimestamp>,
}

/// Owner of every device of one microVM (see the module docs).
pub struct DeviceManager {
    vm: Arc<dyn Vm>,
    memory: GuestMemoryMmap,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    slots: MmioAllocator,
    serial: Option<Arc<Mutex<SerialDevice>>>,
    i8042: Option<Arc<Mutex<I8042Device>>>,
    boot_timer: Option<Arc<Mutex<BootTimer>>>,
    virtio: Vec<VirtioEntry>,
    cmdline: Vec<String>,
    new_subscribers: Vec<Subscriber>,
    status_sink: Option<StatusSink>,
    high_mmio: crate::high_mmio::HighMmioAllocator,
}

impl std::fmt::Debug for DeviceManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceManager")
            .field("virtio", &self.virtio)
            .field("cmdline", &self.cmdline)
            .finish_non_exhaustive()
    }
}

/// An interrupt line that pulses a GSI through the VM (when irqfd is unavailable).
#[derive(Debug)]
struct VmIrq {
    vm: Arc<dyn Vm>,
    gsi: u32,
}

impl squib_devices::IrqLine for VmIrq {
    fn trigger(&self) -> std::io::Result<()> {
        self.vm
            .set_irq_line(self.gsi, true)
            .and_then(|()| self.vm.set_irq_line(self.gsi, false))
            .map_err(std::io::Error::other)
    }
}

fn irq_line(vm: &Arc<dyn Vm>, gsi: u32) -> Result<Arc<dyn squib_devices::IrqLine>, DeviceError> {
    let evt = EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).map_err(DeviceError::Io)?;
    match vm.register_irqfd(&evt, gsi) {
        Ok(()) => Ok(Arc::new(squib_devices::EventFdIrq::new(evt))),
        Err(HvError::Unsupported(_)) => Ok(Arc::new(VmIrq {
            vm: Arc::clone(vm),
            gsi,
        })),
        Err(e) => Err(DeviceError::Hypervisor(e)),
    }
}

/// The serial output sink: `serial_out_path` (created/appended) or stdout.
fn serial_sink(config: &VmConfig) -> Result<Box<dyn Write + Send>, DeviceError> {
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
            .map_err(|source| DeviceError::SerialOut {
                path: path.to_owned(),
                source,
            }),
        None => Ok(Box::new(std::io::stdout())),
    }
}

fn serial_limit(config: &VmConfig) -> Option<TokenBucket> {
    config
        .serial
        .as_ref()
        .and_then(|s| s.rate_limiter.as_ref())
        .and_then(|tb| TokenBucket::new(tb.size, tb.one_time_burst.unwrap_or(0), tb.refill_time))
}

impl DeviceManager {
    /// An empty device manager for `vm` with guest memory `memory`.
    pub fn new(vm: Arc<dyn Vm>, memory: GuestMemoryMmap) -> Self {
        Self {
            vm,
            memory,
            pio: Arc::new(Bus::new()),
            mmio: Arc::new(Bus::new()),
            slots: MmioAllocator::default(),
            serial: None,
            i8042: None,
            boot_timer: None,
            virtio: Vec::new(),
            cmdline: Vec::new(),
            new_subscribers: Vec::new(),
            status_sink: None,
            high_mmio: crate::high_mmio::HighMmioAllocator::default(),
        }
    }

    /// Where devices publish runtime statuses (balloon statistics, hotplug status). Set before
    /// attaching or restoring devices.
    pub fn set_status_sink(&mut self, sink: Option<StatusSink>) {
        self.status_sink = sink;
    }

    /// Connects a device's runtime status to the sink, if it has one.
    fn connect_status(&self, handle: &VirtioHandle) {
        match (&self.status_sink, handle) {
            (Some(sink), VirtioHandle::Balloon(b)) => crate::balloon::connect(b, sink),
            (Some(sink), VirtioHandle::Mem(m)) => crate::hotplug::connect(m, sink),
            _ => {}
        }
    }

    /// The buses, for the vCPU threads.
    pub fn bus_io(&self) -> BusIo {
        BusIo {
            pio: Arc::clone(&self.pio),
            mmio: Arc::clone(&self.mmio),
            emulation_memory: None,
        }
    }

    /// Command-line tokens announcing the virtio devices (`virtio_mmio.device=`, `root=`).
    pub fn cmdline(&self) -> &[String] {
        &self.cmdline
    }

    /// Subscribers registered since the last call, for the VMM's event loop.
    pub fn take_subscribers(&mut self) -> Vec<Subscriber> {
        std::mem::take(&mut self.new_subscribers)
    }

    fn insert(
        bus: &Bus,
        base: u64,
        len: u64,
        dev: Arc<Mutex<dyn BusDevice>>,
    ) -> Result<(), DeviceError> {
        bus.insert(dev, base, len)
            .map_err(|e| DeviceError::Bus(e.to_string()))
    }

    /// Attaches COM1, the i8042 and (optionally) the boot timer; `serial` restores COM1's
    /// registers and `i8042` the controller's from a snapshot.
    pub fn attach_legacy(
        &mut self,
        args: LegacyArgs<'_>,
        saved: Option<&DeviceManagerState>,
    ) -> Result<(), DeviceError> {
        let irq = irq_line(&self.vm, COM1_GSI)?;
        let sink = serial_sink(args.config)?;
        let serial = match saved {
            Some(s) => SerialDevice::from_state(&s.serial, irq, sink, serial_limit(args.config))
                .map_err(|e| DeviceError::Restore(format!("serial: {e}")))?,
            None => SerialDevice::new(irq, sink, serial_limit(args.config)),
        };
        let serial = Arc::new(Mutex::new(serial));
        Self::insert(&self.pio, COM1_PORT, 8, serial.clone())?;
        if args
            .config
            .serial
            .as_ref()
            .and_then(|s| s.serial_out_path.as_ref())
            .is_none()
        {
            spawn_stdin_reader(Arc::clone(&serial));
        }
        self.serial = Some(serial);

        let irq = irq_line(&self.vm, I8042_GSI)?;
        let i8042 = match saved {
            Some(s) => I8042Device::from_state(&s.i8042, args.reset_evt, irq),
            None => I8042Device::new(args.reset_evt, irq),
        };
        let i8042 = Arc::new(Mutex::new(i8042));
        Self::insert(&self.pio, I8042_PORT, 5, i8042.clone())?;
        self.i8042 = Some(i8042);

        if let Some(start) = args.boot_timer {
            let t = Arc::new(Mutex::new(BootTimer::with_clock(
                start,
                Box::new(SystemBootClock::new(squib_sys::process_cpu_time_us)),
            )));
            Self::insert(&self.mmio, layout::MMIO32_MEM_START, 0x1000, t.clone())?;
            self.boot_timer = Some(t);
        }
        Ok(())
    }

    /// Registers a virtio device: slot + GSI (new, or the saved ones), interrupt, transport
    /// (new, or restored and re-activated), bus range, ioeventfds, event-loop subscriber and
    /// command-line token.
    pub fn register_virtio(
        &mut self,
        id: &str,
        handle: VirtioHandle,
        saved: Option<(MmioSlot, &MmioTransportState)>,
    ) -> Result<(), DeviceError> {
        if self.virtio.iter().any(|e| e.id == id) {
            return Err(DeviceError::DuplicateId(id.to_owned()));
        }
        let slot = match saved {
            Some((slot, _)) => slot,
            None => self.slots.allocate().ok_or(DeviceError::NoSlot)?,
        };
        let irq = irq_line(&self.vm, slot.gsi)?;
        let device = handle.as_dyn();
        let transport = match saved {
            Some((_, state)) => {
                MmioTransport::restore(self.memory.clone(), irq, Arc::clone(&device), state)
                    .map_err(|e| DeviceError::Restore(format!("virtio device {id}: {e}")))?
            }
            None => MmioTransport::new(self.memory.clone(), irq, Arc::clone(&device))
                .map_err(DeviceError::Io)?,
        };
        let transport = Arc::new(Mutex::new(transport));
        Self::insert(&self.mmio, slot.base, MMIO_SLOT_SIZE, transport.clone())?;
        {
            let dev = lock(&device);
            for (i, evt) in dev.queue_events().iter().enumerate() {
                let idx =
                    u32::try_from(i).map_err(|_| DeviceError::Bus("too many queues".into()))?;
                let addr = IoEventAddress::Mmio(slot.base + QUEUE_NOTIFY_OFFSET);
                match self.vm.register_ioeventfd(evt, addr, DataMatch::U32(idx)) {
                    Ok(()) | Err(HvError::Unsupported(_)) => {}
                    Err(e) => return Err(DeviceError::Hypervisor(e)),
                }
            }
        }
        self.connect_status(&handle);
        self.new_subscribers.push(handle.subscriber());
        self.cmdline.push(slot.cmdline_token());
        self.virtio.push(VirtioEntry {
            id: id.to_owned(),
            handle,
            slot,
            transport,
        });
        Ok(())
    }

    /// Registers a pmem device and, for a read-only one, the bus device that drops the guest's
    /// writes to its window.
    fn attach_pmem(
        &mut self,
        id: &str,
        built: crate::pmem::BuiltPmem,
        saved: Option<(MmioSlot, &MmioTransportState)>,
    ) -> Result<(), DeviceError> {
        if let Some((base, len, window)) = built.read_only_window {
            Self::insert(&self.mmio, base, len, Arc::new(Mutex::new(window)))?;
        }
        self.register_virtio(id, VirtioHandle::Pmem(built.device), saved)
    }

    /// Attaches the configured virtio devices in Firecracker's order: balloon, block devices
    /// (root first), net devices (with their MMDS stacks), vsock, pmem, entropy, then
    /// virtio-mem (over the hotplug region already in the guest memory). `prepared` holds the
    /// devices created at `PUT` time (files opened, taps opened, sockets bound), attached as
    /// they are.
    pub fn attach_virtio_from_config(
        &mut self,
        config: &VmConfig,
        prepared: &Prepared,
        mmds: &crate::mmds::MmdsService,
    ) -> Result<(), DeviceError> {
        let prepared_blocks = &prepared.blocks;
        // The virtio-mem region comes first past the 64-bit MMIO gap, then the pmem windows.
        if let Some(h) = &config.memory_hotplug {
            let g = crate::hotplug::geometry(h);
            if self.high_mmio.allocate(g.region_size, g.slot_size) != Some(g.addr) {
                return Err(DeviceError::Config(
                    "Cannot allocate the memory hotplug region".into(),
                ));
            }
        }
        if let Some(b) = &config.balloon {
            let balloon = crate::balloon::create(b)?;
            self.register_virtio(
                crate::balloon::BALLOON_DEV_ID,
                VirtioHandle::Balloon(balloon),
                None,
            )?;
        }
        let mut ordered: Vec<_> = config.drives.iter().filter(|d| d.is_root_device).collect();
        ordered.extend(config.drives.iter().filter(|d| !d.is_root_device));
        for d in ordered {
            let block = match prepared_blocks.iter().find(|(id, _)| id == &d.drive_id) {
                Some((_, b)) => Arc::clone(b),
                None => Arc::new(Mutex::new(
                    Block::new(
                        crate::virtio_devices::block_config(d).map_err(DeviceError::Config)?,
                    )
                    .map_err(|e| DeviceError::Config(block_error(&e)))?,
                )),
            };
            if d.is_root_device {
                self.cmdline
                    .push(root_block_args(d.partuuid.as_deref(), d.read_only()));
            }
            self.register_virtio(&d.drive_id, VirtioHandle::Block(block), None)?;
        }
        for n in &config.network_interfaces {
            let net = match prepared.nets.iter().find(|(id, _)| id == &n.iface_id) {
                Some((_, d)) => Arc::clone(d),
                None => Arc::new(Mutex::new(
                    crate::virtio_devices::create_net(n).map_err(DeviceError::Config)?,
                )),
            };
            let stack = mmds.stack_for(&n.iface_id);
            lock(&net).set_interceptor(
                stack.clone().map(|s| {
                    Box::new(s) as Box<dyn squib_devices::virtio::FrameInterceptor + Send>
                }),
            );
            self.register_virtio(&n.iface_id, VirtioHandle::Net(net, stack), None)?;
        }
        if let Some(v) = &config.vsock {
            let vsock = match &prepared.vsock {
                Some(d) => Arc::clone(d),
                None => Arc::new(Mutex::new(
                    crate::virtio_devices::create_vsock(v).map_err(DeviceError::Config)?,
                )),
            };
            self.register_virtio("vsock", VirtioHandle::Vsock(vsock), None)?;
        }
        for (index, p) in config.pmem.iter().enumerate() {
            let built = crate::pmem::create(&self.vm, &mut self.high_mmio, p)?;
            if p.root_device {
                self.cmdline
                    .push(crate::pmem::root_args(index, p.read_only));
            }
            self.attach_pmem(&p.id, built, None)?;
        }
        if let Some(e) = &config.entropy {
            let rng = Entropy::new(rate_limiter(e.rate_limiter.as_ref()))
                .map_err(|e| DeviceError::Config(format!("Entropy device error: {e}")))?;
            self.register_virtio(
                "rng",
                VirtioHandle::Entropy(Arc::new(Mutex::new(rng))),
                None,
            )?;
        }
        if let Some(h) = &config.memory_hotplug {
            let mem = crate::hotplug::create(&self.vm, &self.memory, h)?;
            self.register_virtio(crate::hotplug::MEM_DEV_ID, VirtioHandle::Mem(mem), None)?;
        }
        Ok(())
    }

    /// Captures every device. Call with the vCPUs paused: in-flight device work is finished
    /// first ([`VirtioDevice::prepare_save`]).
    pub fn save(&self) -> Result<DeviceManagerState, DeviceError> {
        let (Some(serial), Some(i8042)) = (&self.serial, &self.i8042) else {
            return Err(DeviceError::Restore("legacy devices missing".into()));
        };
        let mut virtio = Vec::with_capacity(self.virtio.len());
        for e in &self.virtio {
            lock(&e.handle.as_dyn()).prepare_save();
            virtio.push(VirtioEntryState {
                id: e.id.clone(),
                base: e.slot.base,
                gsi: e.slot.gsi,
                transport: lock(&e.transport).save(),
                device: e.handle.save(),
            });
        }
        Ok(DeviceManagerState {
            serial: lock(serial).state(),
            i8042: lock(i8042).state(),
            boot_timer: self.boot_timer.is_some(),
            virtio,
        })
    }

    /// Rebuilds every saved virtio device at its saved slot and re-activates it (legacy devices
    /// come from [`attach_legacy`](Self::attach_legacy) with the same state).
    pub fn restore_virtio(
        &mut self,
        state: &DeviceManagerState,
        overrides: &RestoreOverrides<'_>,
    ) -> Result<(), DeviceError> {
        for e in &state.virtio {
            let valid_slot = e.base >= crate::mmio_layout::MMIO_SLOTS_START
                && (e.base - crate::mmio_layout::MMIO_SLOTS_START).is_multiple_of(MMIO_SLOT_SIZE)
                && (crate::mmio_layout::FIRST_DEVICE_GSI..=crate::mmio_layout::LAST_DEVICE_GSI)
                    .contains(&e.gsi);
            if !valid_slot {
                return Err(DeviceError::Restore(format!(
                    "virtio device {} has an invalid slot {:#x}/GSI {}",
                    e.id, e.base, e.gsi
                )));
            }
            let slot = MmioSlot {
                base: e.base,
                gsi: e.gsi,
            };
            if let VirtioDeviceState::Pmem(p) = &e.device {
                let built = crate::pmem::restore(&self.vm, p)?;
                self.attach_pmem(&e.id, built, Some((slot, &e.transport)))?;
                continue;
            }
            if let VirtioDeviceState::Mem(m) = &e.device {
                let mem = crate::hotplug::restore(&self.vm, &self.memory, m)?;
                self.register_virtio(&e.id, VirtioHandle::Mem(mem), Some((slot, &e.transport)))?;
                continue;
            }
            let handle = VirtioHandle::restore(&e.device, overrides)?;
            self.register_virtio(&e.id, handle, Some((slot, &e.transport)))?;
        }
        Ok(())
    }

    /// The block device with drive id `id`.
    pub fn block(&self, id: &str) -> Option<&Arc<Mutex<Block>>> {
        self.virtio.iter().find_map(|e| match &e.handle {
            VirtioHandle::Block(b) if e.id == id => Some(b),
            _ => None,
        })
    }

    /// The net device with interface id `id`.
    pub fn net(&self, id: &str) -> Option<&Arc<Mutex<Net>>> {
        self.virtio.iter().find_map(|e| match &e.handle {
            VirtioHandle::Net(n, _) if e.id == id => Some(n),
            _ => None,
        })
    }

    /// The balloon, if attached.
    pub fn balloon(&self) -> Option<&Arc<Mutex<Balloon>>> {
        self.virtio.iter().find_map(|e| match &e.handle {
            VirtioHandle::Balloon(b) => Some(b),
            _ => None,
        })
    }

    /// `PATCH /network-interfaces/{id}`: update the rate limiters.
    pub fn update_net(&self, update: &NetworkInterfaceUpdate) -> Result<(), DeviceError> {
        let net = self
            .net(&update.iface_id)
            .ok_or_else(|| DeviceError::NoNet(update.iface_id.clone()))?;
        let (rx_b, rx_o) = bucket_updates(update.rx_rate_limiter.as_ref());
        let (tx_b, tx_o) = bucket_updates(update.tx_rate_limiter.as_ref());
        lock(net).update_rate_limiters(rx_b, rx_o, tx_b, tx_o);
        Ok(())
    }

    /// The virtio-mem device, if attached.
    pub fn virtio_mem(&self) -> Option<&Arc<Mutex<VirtioMem>>> {
        self.virtio.iter().find_map(|e| match &e.handle {
            VirtioHandle::Mem(m) => Some(m),
            _ => None,
        })
    }

    /// The pmem device with id `id`.
    pub fn pmem(&self, id: &str) -> Option<&Arc<Mutex<Pmem>>> {
        self.virtio.iter().find_map(|e| match &e.handle {
            VirtioHandle::Pmem(p) if e.id == id => Some(p),
            _ => None,
        })
    }

    /// Every pmem device, in attach order.
    pub fn pmem_devices(&self) -> impl Iterator<Item = &Arc<Mutex<Pmem>>> {
        self.virtio.iter().filter_map(|e| match &e.handle {
            VirtioHandle::Pmem(p) => Some(p),
            _ => None,
        })
    }

    /// `PATCH /drives/{id}`: swap the backing file and/or update the rate limiter.
    pub fn update_drive(&self, update: &DriveUpdate) -> Result<(), DeviceError> {
        let block = self
            .block(&update.drive_id)
            .ok_or_else(|| DeviceError::NoDrive(update.drive_id.clone()))?;
        let mut block = lock(block);
        if let Some(path) = &update.path_on_host {
            block
                .update_disk(std::path::Path::new(path))
                .map_err(|e| DeviceError::PatchDrive(e.to_string()))?;
        }
        if update.rate_limiter.is_some() {
            let (bytes, ops) = bucket_updates(update.rate_limiter.as_ref());
            block.update_rate_limiter(bytes, ops);
        }
        Ok(())
    }

    /// Inject Ctrl-Alt-Del through the i8042.
    pub fn send_ctrl_alt_del(&self) -> Result<(), DeviceError> {
        let i8042 = self.i8042.as_ref().ok_or(DeviceError::NoI8042)?;
        lock(i8042)
            .trigger_ctrl_alt_del()
            .map_err(|e| DeviceError::CtrlAltDel(e.to_string()))
    }

    /// The boot timer, if attached.
    pub fn boot_timer(&self) -> Option<&Arc<Mutex<BootTimer>>> {
        self.boot_timer.as_ref()
    }

    /// Window (base, size) and GSI of every virtio-mmio device, in attach order (the ACPI
    /// DSDT's `LNRO0005` nodes).
    pub fn virtio_mmio_devices(&self) -> Vec<squib_arch::MmioDeviceInfo> {
        self.virtio
            .iter()
            .map(|e| squib_arch::MmioDeviceInfo {
                addr: e.slot.base,
                len: MMIO_SLOT_SIZE,
                gsi: e.slot.gsi,
            })
            .collect()
    }

    /// COM1, once the legacy devices are attached.
    pub fn serial(&self) -> Option<&Arc<Mutex<SerialDevice>>> {
        self.serial.as_ref()
    }

    /// The i8042 controller, once the legacy devices are attached.
    pub fn i8042(&self) -> Option<&Arc<Mutex<I8042Device>>> {
        self.i8042.as_ref()
    }

    /// Ids and handles of the virtio devices, in registration order.
    pub fn virtio_devices(&self) -> impl Iterator<Item = (&str, &VirtioHandle)> {
        self.virtio.iter().map(|e| (e.id.as_str(), &e.handle))
    }
}

/// PATCH semantics of a rate limiter: absent → keep both buckets; present → each bucket
/// replaced or (when absent in the body) kept, as Firecracker.
fn bucket_updates(
    rl: Option<&squib_config::schemas::rate_limiter::RateLimiterConfig>,
) -> (BucketUpdate, BucketUpdate) {
    let Some(rl) = rl else {
        return (BucketUpdate::None, BucketUpdate::None);
    };
    let clock: Arc<dyn squib_devices::rate_limiter::Clock> =
        Arc::new(squib_devices::rate_limiter::MonotonicClock);
    (
        BucketUpdate::from_config(
            rl.bandwidth.as_ref().map(to_bucket_cfg).as_ref(),
            Arc::clone(&clock),
        ),
        BucketUpdate::from_config(rl.ops.as_ref().map(to_bucket_cfg).as_ref(), clock),
    )
}

/// Devices created at `PUT` time, before boot.
#[derive(Debug, Default)]
pub struct Prepared {
    /// Drives, by id (files opened).
    pub blocks: Vec<(String, Arc<Mutex<Block>>)>,
    /// Net devices, by interface id (taps opened).
    pub nets: Vec<(String, Arc<Mutex<Net>>)>,
    /// The vsock device (socket bound).
    pub vsock: Option<Arc<Mutex<Vsock>>>,
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
            // seccomp: a helper of the VMM thread, filtered like it.
            if squib_sys::install_thread_filter(squib_sys::ThreadCategory::Vmm).is_err() {
                return;
            }
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
