//! The legacy devices mapped as the VMM maps them, exercised only through `Bus::read/write`.
//!
//! PIO bus: COM1 at 0x3F8..=0x3FF (IRQ 4), i8042 at 0x60..=0x64 (IRQ 1).
//! MMIO bus: the boot timer at 0xC000_0000 (4 KiB).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use squib_devices::legacy::i8042::{I8042_BASE, I8042_LEN};
use squib_devices::legacy::serial::{COM1_BASE, COM1_LEN};
use squib_devices::pseudo::boot_timer::{
    BOOT_TIMER_BASE, BOOT_TIMER_LEN, BootClock, MAGIC_VALUE_SIGNAL_GUEST_BOOT_COMPLETE,
};
use squib_devices::testing::{CountingIrq, FakeClock, SharedBuffer};
use squib_devices::{
    BootTime, BootTimer, BootTimestamp, Bus, BusError, I8042Device, SerialDevice, TokenBucket,
};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

const COM1_THR: u64 = COM1_BASE;
const COM1_IER: u64 = COM1_BASE + 1;
const COM1_IIR: u64 = COM1_BASE + 2;
const COM1_LSR: u64 = COM1_BASE + 5;
const I8042_DATA: u64 = 0x60;
const I8042_CMD: u64 = 0x64;

struct Later(BootTimestamp);

impl BootClock for Later {
    fn now(&self) -> BootTimestamp {
        self.0
    }
}

struct Vm {
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    serial: Arc<Mutex<SerialDevice>>,
    i8042: Arc<Mutex<I8042Device>>,
    boot_timer: Arc<Mutex<BootTimer>>,
    com1_irq: Arc<CountingIrq>,
    kbd_irq: Arc<CountingIrq>,
    reset: EventFd,
    console: SharedBuffer,
    clock: FakeClock,
}

fn build_vm() -> Vm {
    let com1_irq = Arc::new(CountingIrq::new());
    let kbd_irq = Arc::new(CountingIrq::new());
    let console = SharedBuffer::new();
    let clock = FakeClock::new();
    // PUT /serial {"rate_limiter": {"size": 8, "refill_time": 1000}}
    let limiter = TokenBucket::with_clock(8, 0, 1000, Arc::new(clock.clone()));
    let serial = Arc::new(Mutex::new(SerialDevice::new(
        com1_irq.clone(),
        Box::new(console.clone()),
        limiter,
    )));
    let reset = EventFd::new(EFD_NONBLOCK).unwrap();
    let i8042 = Arc::new(Mutex::new(I8042Device::new(
        reset.try_clone().unwrap(),
        kbd_irq.clone(),
    )));
    let start = BootTimestamp {
        wall: Instant::now(),
        cpu_us: 10,
    };
    let done = BootTimestamp {
        wall: start.wall + Duration::from_millis(125),
        cpu_us: 90_010,
    };
    let boot_timer = Arc::new(Mutex::new(BootTimer::with_clock(
        start,
        Box::new(Later(done)),
    )));

    let pio = Arc::new(Bus::new());
    pio.insert(serial.clone(), COM1_BASE, COM1_LEN).unwrap();
    pio.insert(i8042.clone(), I8042_BASE, I8042_LEN).unwrap();
    let mmio = Arc::new(Bus::new());
    mmio.insert(boot_timer.clone(), BOOT_TIMER_BASE, BOOT_TIMER_LEN)
        .unwrap();
    Vm {
        pio,
        mmio,
        serial,
        i8042,
        boot_timer,
        com1_irq,
        kbd_irq,
        reset,
        console,
        clock,
    }
}

fn inb(bus: &Bus, port: u64) -> u8 {
    let mut b = [0u8];
    if bus.read(port, &mut b) { b[0] } else { 0xff }
}

fn outb(bus: &Bus, port: u64, value: u8) -> bool {
    bus.write(port, &[value])
}

#[test]
fn test_layout_rejects_a_device_overlapping_com1() {
    let vm = build_vm();
    assert!(matches!(
        vm.pio.insert(vm.serial.clone(), 0x3ff, 1),
        Err(BusError::Overlap { .. })
    ));
    let ranges: Vec<_> = vm.pio.ranges().iter().map(|r| (r.base, r.len)).collect();
    assert_eq!(ranges, [(0x60, 5), (0x3f8, 8)]);
}

#[test]
fn test_unmapped_ports_float_high() {
    let vm = build_vm();
    assert_eq!(inb(&vm.pio, 0x2f8), 0xff, "no COM2");
    assert_eq!(inb(&vm.pio, 0x65), 0xff);
    assert!(!outb(&vm.pio, 0x80, 0x12), "POST port is unclaimed");
    let mut wide = [0u8; 16];
    assert!(!vm.mmio.read(BOOT_TIMER_BASE, &mut wide));
}

#[test]
fn test_serial_console_through_the_pio_bus() {
    let vm = build_vm();
    assert_ne!(inb(&vm.pio, COM1_LSR) & 0x20, 0, "THR empty");
    assert!(outb(&vm.pio, COM1_IER, 0x02));
    assert_eq!(vm.com1_irq.count(), 1);
    assert_eq!(inb(&vm.pio, COM1_IIR) & 0x0f, 0x02);
    for b in b"Linux version\n" {
        assert!(outb(&vm.pio, COM1_THR, *b));
    }
    // The limiter lets 8 bytes through, drops the other 6.
    assert_eq!(vm.console.contents(), b"Linux ve");
    vm.clock.advance(Duration::from_secs(1));
    outb(&vm.pio, COM1_THR, b'!');
    assert_eq!(vm.console.contents(), b"Linux ve!");
    let serial = vm.serial.lock().unwrap();
    assert_eq!(serial.metrics().rate_limiter_dropped_bytes.count(), 6);
    assert_eq!(serial.metrics().write_count.count(), 15);
}

#[test]
fn test_serial_input_from_host_is_read_through_the_bus() {
    let vm = build_vm();
    outb(&vm.pio, COM1_IER, 0x01);
    assert_eq!(vm.serial.lock().unwrap().enqueue_input(b"root\n"), 5);
    assert_eq!(vm.com1_irq.count(), 1);
    let mut got = Vec::new();
    while inb(&vm.pio, COM1_LSR) & 0x01 != 0 {
        got.push(inb(&vm.pio, COM1_THR));
    }
    assert_eq!(got, b"root\n");
}

#[test]
fn test_i8042_probe_ctrl_alt_del_and_reboot_through_the_pio_bus() {
    let vm = build_vm();
    // Linux i8042 probe.
    outb(&vm.pio, I8042_CMD, 0xaa);
    assert_eq!(inb(&vm.pio, I8042_CMD) & 0x01, 0x01);
    assert_eq!(inb(&vm.pio, I8042_DATA), 0x55);
    outb(&vm.pio, I8042_CMD, 0x20);
    let ctr = inb(&vm.pio, I8042_DATA);
    assert_eq!(ctr & 0x01, 0x01, "keyboard interrupt enabled");
    outb(&vm.pio, I8042_CMD, 0x60);
    outb(&vm.pio, I8042_DATA, ctr);

    // SendCtrlAltDel.
    vm.i8042.lock().unwrap().trigger_ctrl_alt_del().unwrap();
    assert_eq!(vm.kbd_irq.count(), 3);
    let mut scancodes = Vec::new();
    while inb(&vm.pio, I8042_CMD) & 0x01 != 0 {
        scancodes.push(inb(&vm.pio, I8042_DATA));
    }
    assert_eq!(scancodes, [0x14, 0x11, 0xe0, 0x71]);

    // The guest reboots with reboot=k.
    assert!(vm.reset.read().is_err());
    assert!(outb(&vm.pio, I8042_CMD, 0xfe));
    assert_eq!(vm.reset.read().unwrap(), 1);
    assert_eq!(vm.i8042.lock().unwrap().metrics().reset_count.count(), 1);
}

#[test]
fn test_boot_timer_through_the_mmio_bus() {
    let vm = build_vm();
    let mut word = [0xffu8; 4];
    assert!(vm.mmio.read(BOOT_TIMER_BASE + 0x10, &mut word));
    assert_eq!(word, [0; 4]);
    assert!(vm.mmio.write(
        BOOT_TIMER_BASE + 1,
        &[MAGIC_VALUE_SIGNAL_GUEST_BOOT_COMPLETE]
    ));
    assert_eq!(vm.boot_timer.lock().unwrap().last_boot_time(), None);
    assert!(
        vm.mmio
            .write(BOOT_TIMER_BASE, &[MAGIC_VALUE_SIGNAL_GUEST_BOOT_COMPLETE])
    );
    let boot = vm.boot_timer.lock().unwrap().last_boot_time();
    assert_eq!(
        boot,
        Some(BootTime {
            wall_us: 125_000,
            cpu_us: 90_000
        })
    );
    assert_eq!(
        boot.unwrap().to_string(),
        "Guest-boot-time = 125000 us 125 ms,  90000 CPU us 90 CPU ms"
    );
}

#[test]
fn test_buses_are_shared_across_vcpu_threads() {
    let vm = build_vm();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let pio = Arc::clone(&vm.pio);
            std::thread::spawn(move || {
                for _ in 0..100 {
                    outb(&pio, I8042_DATA, 0xf4);
                    inb(&pio, I8042_DATA);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(vm.i8042.lock().unwrap().metrics().write_count.count(), 400);
}
