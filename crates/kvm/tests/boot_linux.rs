//! Boots the project's Linux test guest (`shared/guest`) on real KVM through squib-hv,
//! squib-kvm and squib-arch, with a minimal serial + i8042 reset catcher implemented here.
//!
//! Slow on nested `kvm_pvm` hosts (20–90 s per boot), so boots are serialised by a lock.
//! Set `SQUIB_SKIP_LINUX_BOOT=1` to skip, `SQUIB_BOOT_ECHO=1` to echo the console to stderr.

mod common;

use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{guest_dir, hypervisor_or_skip};
use squib_arch::{
    BootConfig, BootProtocol, BootStateConfig, CpuidConfig, configure_system, create_guest_memory,
    load_initrd, load_kernel, write_cmdline, x86_boot_state,
};
use squib_hv::{Hypervisor, VcpuExit, VcpuIo, VmConfig};
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

const CMDLINE: &str = "console=ttyS0 reboot=k panic=1 pci=off nomodule i8042.noaux i8042.nomux \
    i8042.dumbkbd noxsave nofsgsbase clearcpuid=popcnt,smap,rdrand,rdseed,invpcid,pcid,rdpid \
    percpu_alloc=page";
/// Per-boot timeout (`SQUIB_BOOT_TIMEOUT_SECS` overrides). bzImage decompression alone is
/// emulated for ~100 s on nested PVM hosts, hence the larger default.
fn timeout(kernel: &str) -> Duration {
    let default = if kernel == "bzImage" { 600 } else { 300 };
    let secs = std::env::var("SQUIB_BOOT_TIMEOUT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    Duration::from_secs(secs)
}
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
struct Console {
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
    reset: Arc<AtomicBool>,
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
struct BootReport {
    console: String,
    last_exit: String,
    reset: bool,
    elapsed: Duration,
    t_linux: Option<Duration>,
    t_ready: Option<Duration>,
    t_done: Option<Duration>,
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn boot(hv: &squib_kvm::KvmHypervisor, kernel: &str, prefer_pvh: bool, vcpus: u8) -> BootReport {
    let _serial = BOOT_LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = guest_dir();
    let mem = create_guest_memory(256).unwrap();
    let mut kernel_file = File::open(dir.join(kernel)).unwrap();
    let loaded = load_kernel(&mem, &mut kernel_file).unwrap();
    let entry = loaded.entry(prefer_pvh);
    assert_eq!(entry.protocol == BootProtocol::Pvh, prefer_pvh);
    let mut initrd_file = File::open(dir.join("initramfs.cpio")).unwrap();
    let initrd_size = initrd_file.metadata().unwrap().len();
    let initrd = load_initrd(&mem, &mut initrd_file, initrd_size, loaded.kernel_end).unwrap();
    let cmdline_size = write_cmdline(&mem, CMDLINE).unwrap();
    configure_system(
        &mem,
        &BootConfig {
            protocol: entry.protocol,
            cmdline_size,
            initrd: Some(initrd),
            setup_header: loaded.setup_header,
            vcpu_count: vcpus,
        },
    )
    .unwrap();

    let vm = hv
        .create_vm(&VmConfig {
            vcpu_count: u32::from(vcpus),
        })
        .unwrap();
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
                            return format!("vCPU{index} {other:?} at rip {rip:#x?}");
                        }
                        Err(e) => return format!("vCPU{index} error: {e}"),
                    }
                }
            })
        })
        .collect();
    let kickers: Vec<_> = (0..vcpus).map(|_| kick_rx.recv().unwrap()).collect();
    let limit = timeout(kernel);
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

fn boot_and_check(kernel: &str, prefer_pvh: bool, vcpus: u8) {
    if std::env::var_os("SQUIB_SKIP_LINUX_BOOT").is_some() {
        println!("SKIPPED: SQUIB_SKIP_LINUX_BOOT set");
        return;
    }
    let Some(hv) = hypervisor_or_skip() else {
        return;
    };
    if !guest_dir().join(kernel).exists() {
        println!("SKIPPED: no {kernel} in {}", guest_dir().display());
        return;
    }
    let r = boot(&hv, kernel, prefer_pvh, vcpus);
    println!(
        "boot {kernel} pvh={prefer_pvh} vcpus={vcpus}: {:.1?} total, Linux banner {:.1?}, READY {:.1?}, DONE {:.1?}, reset={}, last exit: {}",
        r.elapsed, r.t_linux, r.t_ready, r.t_done, r.reset, r.last_exit
    );
    let report = format!(
        "last exit: {}\n--- last console lines ---\n{}",
        r.last_exit,
        tail(&r.console, 25)
    );
    assert!(r.console.contains("SQUIB-GUEST-READY"), "{report}");
    assert!(r.console.contains("SQUIB-GUEST-DONE"), "{report}");
    assert!(r.reset, "{report}");
    let cpus = format!("cpus={vcpus} ");
    assert!(
        r.console.contains(&cpus),
        "guest saw another CPU count\n{report}"
    );
}

#[test]
fn test_boot_vmlinux_linux_64bit_entry() {
    boot_and_check("vmlinux", false, 1);
}

#[test]
fn test_boot_vmlinux_pvh_entry() {
    boot_and_check("vmlinux", true, 1);
}

#[test]
fn test_boot_bzimage_linux_64bit_entry() {
    boot_and_check("bzImage", false, 1);
}

/// Two vCPUs: the MP table announces both, the AP waits for INIT/SIPI in KVM.
#[test]
fn test_boot_vmlinux_smp_two_vcpus() {
    boot_and_check("vmlinux", false, 2);
}
