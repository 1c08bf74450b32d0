//! A minimal test VMM over squib-hv / squib-kvm / squib-arch: COM1 (vm-superio on an irqfd,
//! GSI 4), an i8042 reset catcher on port 0x64, one thread per vCPU (created, configured and
//! run there), kicks to stop. Boots are serialised by a process-wide lock.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use squib_arch::{
    BootConfig, BootProtocol, BootStateConfig, CpuidConfig, configure_system, create_guest_memory,
    load_initrd, load_kernel, write_cmdline, x86_boot_state,
};
use squib_hv::{Hypervisor, VcpuExit, VcpuIo, VmConfig};
use squib_kvm::KvmHypervisor;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

const COM1: u16 = 0x3f8;
const COM1_GSI: u32 = 4;

static BOOT_LOCK: Mutex<()> = Mutex::new(());

/// Serial interrupt line: an irqfd on GSI 4.
struct IrqFd(EventFd);

impl Trigger for IrqFd {
    type E = std::io::Error;
    fn trigger(&self) -> Result<(), std::io::Error> {
        self.0.write(1)
    }
}

/// Console sink shared with the test thread.
#[derive(Clone, Default)]
pub struct Console {
    buf: Arc<Mutex<Vec<u8>>>,
    echo: bool,
}

impl Write for Console {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.echo {
            std::io::stderr().write_all(data)?;
        }
        self.buf
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Console {
    fn text(&self) -> String {
        let buf = self
            .buf
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

type Com1 = Serial<IrqFd, vm_superio::serial::NoEvents, Console>;

/// The platform devices of this test, shared by all vCPU threads: COM1 and the i8042 reset line.
#[derive(Clone)]
struct BootIo {
    serial: Arc<Mutex<Com1>>,
    pub reset: Arc<AtomicBool>,
}

impl BootIo {
    fn com1(&self) -> std::sync::MutexGuard<'_, Com1> {
        self.serial
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl VcpuIo for BootIo {
    fn pio_read(&mut self, port: u16, data: &mut [u8]) {
        let value = match port {
            p if (COM1..COM1 + 8).contains(&p) => self.com1().read(u8::try_from(p - COM1).unwrap()),
            0x60 | 0x64 => 0, // i8042: no data, input buffer empty
            _ => 0xff,        // nothing there
        };
        data.fill(value);
    }
    fn pio_write(&mut self, port: u16, data: &[u8]) {
        match (port, data) {
            (p, [v]) if (COM1..COM1 + 8).contains(&p) => {
                let _ = self.com1().write(u8::try_from(p - COM1).unwrap(), *v);
            }
            (0x64, [0xfe]) => self.reset.store(true, Ordering::SeqCst),
            _ => {}
        }
    }
    fn mmio_read(&mut self, _addr: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn mmio_write(&mut self, _addr: u64, _data: &[u8]) {}
}

#[derive(Debug)]
pub struct BootReport {
    pub console: String,
    pub last_exit: String,
    pub reset: bool,
    pub elapsed: Duration,
    pub t_linux: Option<Duration>,
    pub t_ready: Option<Duration>,
    pub t_done: Option<Duration>,
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// What to boot.
pub struct BootSpec<'a> {
    pub kernel: &'a Path,
    pub initrd: Option<&'a Path>,
    pub cmdline: &'a str,
    pub mem_mib: usize,
    pub vcpus: u8,
    pub prefer_pvh: bool,
    pub timeout: Duration,
}

/// Boots `spec` with one thread per vCPU until reset, a vCPU stops, or the timeout.
pub fn boot(hv: &KvmHypervisor, spec: &BootSpec<'_>) -> BootReport {
    let _serial = BOOT_LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let vcpus = spec.vcpus;
    let mem = create_guest_memory(spec.mem_mib).unwrap();
    let mut kernel_file = File::open(spec.kernel).unwrap();
    let loaded = load_kernel(&mem, &mut kernel_file).unwrap();
    let entry = loaded.entry(spec.prefer_pvh);
    assert_eq!(entry.protocol == BootProtocol::Pvh, spec.prefer_pvh);
    let initrd = spec.initrd.map(|path| {
        let mut f = File::open(path).unwrap();
        let size = f.metadata().unwrap().len();
        load_initrd(&mem, &mut f, size, loaded.kernel_end).unwrap()
    });
    let cmdline_size = write_cmdline(&mem, spec.cmdline).unwrap();
    configure_system(
        &mem,
        &BootConfig {
            protocol: entry.protocol,
            cmdline_size,
            initrd,
            setup_header: loaded.setup_header,
            vcpu_count: vcpus,
        },
    )
    .unwrap();

    let vm = hv.create_vm(&VmConfig::new(u32::from(vcpus))).unwrap();
    vm.setup_platform().unwrap();
    vm.map_memory(&mem).unwrap();
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    vm.register_irqfd(&irq, COM1_GSI).unwrap();
    let supported = hv.as_x86().unwrap().supported_cpuid().unwrap();

    let console = Console {
        echo: std::env::var_os("SQUIB_BOOT_ECHO").is_some(),
        ..Default::default()
    };
    let reset = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let io = BootIo {
        serial: Arc::new(Mutex::new(Serial::new(
            IrqFd(irq.try_clone().unwrap()),
            console.clone(),
        ))),
        reset: Arc::clone(&reset),
    };
    let (kick_tx, kick_rx) = std::sync::mpsc::channel();
    let start = Instant::now();
    let threads: Vec<_> = (0..vcpus)
        .map(|index| {
            let state = x86_boot_state(&BootStateConfig {
                protocol: entry.protocol,
                entry: entry.addr,
                cpuid: CpuidConfig {
                    vcpu_index: index,
                    vcpu_count: vcpus,
                    smt: false,
                    hide_cx16: false,
                },
                supported_cpuid: &supported,
                template_msrs: &[],
                lapic: true,
            })
            .unwrap();
            let (vm, stop, kick_tx, mut io) = (
                Arc::clone(&vm),
                Arc::clone(&stop),
                kick_tx.clone(),
                io.clone(),
            );
            thread::spawn(move || {
                // Created, configured and run on its own thread.
                let mut vcpu = vm.create_vcpu(u32::from(index)).unwrap();
                vcpu.as_x86().unwrap().apply_boot_state(&state).unwrap();
                kick_tx.send(vcpu.kicker()).unwrap();
                loop {
                    let done = io.reset.load(Ordering::SeqCst) || stop.load(Ordering::SeqCst);
                    match vcpu.run(&mut io) {
                        Ok(VcpuExit::Handled | VcpuExit::Interrupted) if !done => {}
                        Ok(VcpuExit::Handled | VcpuExit::Interrupted) => {
                            return format!("vCPU{index} stopped");
                        }
                        Ok(other) => {
                            let rip = vcpu.as_x86().and_then(|x| x.regs().ok()).map(|r| r.rip);
                            return format!("vCPU{index} exit {other:?} at rip {rip:#x?}");
                        }
                        Err(e) => return format!("vCPU{index} error: {e}"),
                    }
                }
            })
        })
        .collect();
    let kickers: Vec<_> = (0..vcpus).map(|_| kick_rx.recv().unwrap()).collect();
    let limit = spec.timeout;
    let (mut t_linux, mut t_ready, mut t_done) = (None, None, None);
    while !threads.iter().all(thread::JoinHandle::is_finished) {
        thread::sleep(Duration::from_millis(100));
        let text = console.text();
        let now = start.elapsed();
        if t_linux.is_none() && text.contains("Linux version") {
            t_linux = Some(now);
        }
        if t_ready.is_none() && text.contains("SQUIB-GUEST-READY") {
            t_ready = Some(now);
        }
        if t_done.is_none() && text.contains("SQUIB-GUEST-DONE") {
            t_done = Some(now);
        }
        // Any vCPU ending (reset, error) or the timeout stops them all.
        if now > limit
            || reset.load(Ordering::SeqCst)
            || threads.iter().any(thread::JoinHandle::is_finished)
        {
            stop.store(true, Ordering::SeqCst);
            for k in &kickers {
                k.kick();
            }
        }
    }
    let exits: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let console_text = console.text();
    if t_done.is_none() && console_text.contains("SQUIB-GUEST-DONE") {
        t_done = Some(start.elapsed());
    }
    BootReport {
        console: console_text,
        last_exit: exits.join("; "),
        reset: reset.load(Ordering::SeqCst),
        elapsed: start.elapsed(),
        t_linux,
        t_ready,
        t_done,
    }
}
