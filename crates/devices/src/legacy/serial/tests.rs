use std::time::Duration;

use super::*;
use crate::interrupt::CountingIrq;
use crate::rate_limiter::FakeClock;
use crate::testing::{FailingWriter, SharedBuffer};

const DATA: u64 = 0;
const IER: u64 = 1;
const IIR: u64 = 2;
const LCR: u64 = 3;
const MCR: u64 = 4;
const LSR: u64 = 5;
const SCR: u64 = 7;

const IER_RDA: u8 = 0x01;
const IER_THRE: u8 = 0x02;
const LSR_DR: u8 = 0x01;
const LSR_THRE: u8 = 0x20;
const LSR_TEMT: u8 = 0x40;

struct Fixture {
    dev: SerialDevice,
    irq: Arc<CountingIrq>,
    out: SharedBuffer,
}

fn fixture(limiter: Option<TokenBucket>) -> Fixture {
    let irq = Arc::new(CountingIrq::new());
    let out = SharedBuffer::new();
    let dev = SerialDevice::new(irq.clone(), Box::new(out.clone()), limiter);
    Fixture { dev, irq, out }
}

fn rd(dev: &mut SerialDevice, offset: u64) -> u8 {
    let mut b = [0u8];
    dev.read(offset, &mut b);
    b[0]
}

fn wr(dev: &mut SerialDevice, offset: u64, value: u8) {
    dev.write(offset, &[value]);
}

#[test]
fn test_serial_thr_write_reaches_sink() {
    let mut f = fixture(None);
    for b in b"hello\n" {
        wr(&mut f.dev, DATA, *b);
    }
    assert_eq!(f.out.contents(), b"hello\n");
    assert_eq!(f.dev.metrics().write_count.count(), 6);
    assert_eq!(f.irq.count(), 0, "no interrupt while IER is 0");
}

#[test]
fn test_serial_lsr_reports_transmitter_empty() {
    let mut f = fixture(None);
    let lsr = rd(&mut f.dev, LSR);
    assert_eq!(lsr & (LSR_THRE | LSR_TEMT), LSR_THRE | LSR_TEMT);
    assert_eq!(lsr & LSR_DR, 0);
    wr(&mut f.dev, DATA, b'x');
    assert_ne!(
        rd(&mut f.dev, LSR) & LSR_THRE,
        0,
        "THR is empty again at once"
    );
}

#[test]
fn test_serial_tx_interrupt_when_enabled_triggers_irq_line() {
    let mut f = fixture(None);
    wr(&mut f.dev, IER, IER_THRE);
    assert_eq!(
        f.irq.count(),
        1,
        "enabling THRE with an empty THR raises it"
    );
    assert_eq!(rd(&mut f.dev, IIR), 0xc2, "FIFO bits + THR empty");
    assert_eq!(rd(&mut f.dev, IIR), 0xc1, "reading IIR acknowledged it");
    wr(&mut f.dev, DATA, b'a');
    assert_eq!(f.irq.count(), 2);
    wr(&mut f.dev, DATA, b'b');
    assert_eq!(f.irq.count(), 2, "not re-raised until IIR is read");
    assert_eq!(rd(&mut f.dev, IIR), 0xc2);
    wr(&mut f.dev, DATA, b'c');
    assert_eq!(f.irq.count(), 3);
    assert_eq!(f.out.contents(), b"abc");
}

#[test]
fn test_serial_rate_limited_sink_drops_exactly_the_excess() {
    let clock = FakeClock::new();
    let bucket = TokenBucket::with_clock(10, 0, 1000, Arc::new(clock.clone())).unwrap();
    let mut f = fixture(Some(bucket));
    for b in b"0123456789ABCDE" {
        wr(&mut f.dev, DATA, *b);
    }
    assert_eq!(f.out.contents(), b"0123456789");
    let m = f.dev.metrics();
    assert_eq!(m.rate_limiter_dropped_bytes.count(), 5);
    assert_eq!(
        m.write_count.count(),
        15,
        "dropped bytes still count as written"
    );
    assert_eq!(m.error_count.count(), 0);

    clock.advance(Duration::from_millis(300)); // 3 tokens
    for b in b"wxyz" {
        wr(&mut f.dev, DATA, *b);
    }
    assert_eq!(f.out.contents(), b"0123456789wxy");
    assert_eq!(f.dev.metrics().rate_limiter_dropped_bytes.count(), 6);
}

#[test]
fn test_serial_rate_limiter_burst_and_replacement() {
    let clock = FakeClock::new();
    let bucket = TokenBucket::with_clock(1, 2, 1000, Arc::new(clock.clone())).unwrap();
    let mut f = fixture(Some(bucket));
    for b in b"abcd" {
        wr(&mut f.dev, DATA, *b);
    }
    assert_eq!(f.out.contents(), b"abc", "burst of 2 plus a bucket of 1");
    f.dev.set_rate_limiter(None);
    assert!(f.dev.rate_limiter().is_none());
    wr(&mut f.dev, DATA, b'e');
    assert_eq!(f.out.contents(), b"abce");
}

#[test]
fn test_serial_input_reaches_guest_with_rda_interrupt() {
    let mut f = fixture(None);
    wr(&mut f.dev, IER, IER_RDA);
    assert_eq!(f.dev.enqueue_input(b"ls\n"), 3);
    assert_eq!(f.irq.count(), 1);
    assert_ne!(rd(&mut f.dev, LSR) & LSR_DR, 0);
    let got: Vec<u8> = (0..3).map(|_| rd(&mut f.dev, DATA)).collect();
    assert_eq!(got, b"ls\n");
    assert_eq!(rd(&mut f.dev, LSR) & LSR_DR, 0);
    assert_eq!(f.dev.metrics().read_count.count(), 3);
}

#[test]
fn test_serial_input_queue_refills_fifo_and_drops_overflow() {
    let mut f = fixture(None);
    let total = RX_FIFO_SIZE + INPUT_QUEUE_CAPACITY;
    assert_eq!(f.dev.input_capacity(), total);
    let input: Vec<u8> = (0..total + 10)
        .map(|i| u8::try_from(i % 251).unwrap())
        .collect();
    assert_eq!(f.dev.enqueue_input(&input), total);
    assert_eq!(f.dev.metrics().input_dropped_bytes.count(), 10);
    assert_eq!(f.dev.queued_input(), INPUT_QUEUE_CAPACITY);
    assert_eq!(f.dev.input_capacity(), 0);
    assert_eq!(f.dev.enqueue_input(b"x"), 0);

    let got: Vec<u8> = (0..total).map(|_| rd(&mut f.dev, DATA)).collect();
    assert_eq!(got, input[..total]);
    assert_eq!(f.dev.queued_input(), 0);
    assert_eq!(rd(&mut f.dev, LSR) & LSR_DR, 0);
    assert_eq!(f.dev.input_capacity(), total);
}

#[test]
fn test_serial_input_in_loopback_mode_waits_in_queue() {
    let mut f = fixture(None);
    wr(&mut f.dev, MCR, 0x10); // loopback
    assert_eq!(f.dev.enqueue_input(b"ab"), 2);
    assert_eq!(f.dev.queued_input(), 2);
    wr(&mut f.dev, MCR, 0x08); // back to normal: queued input moves into the FIFO
    assert_eq!(f.dev.queued_input(), 0);
    assert_eq!(rd(&mut f.dev, DATA), b'a');
    assert_eq!(rd(&mut f.dev, DATA), b'b');
}

#[test]
fn test_serial_bad_access_sizes_and_offsets_are_missed() {
    let mut f = fixture(None);
    let mut two = [0xaa; 2];
    f.dev.read(DATA, &mut two);
    assert_eq!(two, [0xaa; 2]);
    f.dev.read(8, &mut [0]);
    f.dev.read(u64::MAX, &mut [0]);
    f.dev.write(DATA, b"ab");
    f.dev.write(8, b"a");
    f.dev.write(DATA, &[]);
    let m = f.dev.metrics();
    assert_eq!(m.missed_read_count.count(), 3);
    assert_eq!(m.missed_write_count.count(), 3);
    assert!(f.out.contents().is_empty());
}

#[test]
fn test_serial_sink_error_is_counted_not_fatal() {
    let irq = Arc::new(CountingIrq::new());
    let mut dev = SerialDevice::new(irq.clone(), Box::new(FailingWriter), None);
    wr(&mut dev, IER, IER_THRE);
    wr(&mut dev, DATA, b'a');
    assert_eq!(dev.metrics().error_count.count(), 1);
    assert_eq!(dev.metrics().missed_write_count.count(), 1);
    assert_eq!(irq.count(), 1, "THRE interrupt was already pending");
    assert!(dev.flush().is_err());
    assert_eq!(dev.metrics().flush_count.count(), 1);
}

#[test]
fn test_serial_irq_failure_is_counted_not_fatal() {
    let mut f = fixture(None);
    wr(&mut f.dev, IER, IER_RDA);
    f.irq.set_failing(true);
    assert_eq!(f.dev.enqueue_input(b"abc"), 3);
    assert_eq!(f.dev.metrics().error_count.count(), 1);
    assert_eq!(
        rd(&mut f.dev, DATA),
        b'a',
        "the bytes still reached the FIFO"
    );
}

#[test]
fn test_serial_state_round_trip() {
    let mut f = fixture(None);
    wr(&mut f.dev, LCR, 0x03);
    wr(&mut f.dev, SCR, 0x5a);
    wr(&mut f.dev, IER, IER_RDA);
    f.dev.enqueue_input(b"xy");
    let state = f.dev.state();
    let json = serde_json::to_string(&state).unwrap();
    let state: SerialState = serde_json::from_str(&json).unwrap();

    let irq = Arc::new(CountingIrq::new());
    let mut restored =
        SerialDevice::from_state(&state, irq.clone(), Box::new(SharedBuffer::new()), None).unwrap();
    assert_eq!(irq.count(), 1, "pending RDA interrupt is re-raised");
    assert_eq!(rd(&mut restored, SCR), 0x5a);
    assert_eq!(rd(&mut restored, DATA), b'x');
    assert_eq!(rd(&mut restored, DATA), b'y');
    assert_eq!(SerialState::default().line_status, LSR_THRE | LSR_TEMT);
}

#[test]
fn test_serial_from_state_rejects_oversized_fifo() {
    let state = SerialState {
        in_buffer: vec![0; RX_FIFO_SIZE + 1],
        ..SerialState::default()
    };
    let err = SerialDevice::from_state(
        &state,
        Arc::new(CountingIrq::new()),
        Box::new(SharedBuffer::new()),
        None,
    )
    .unwrap_err();
    assert!(matches!(err, SerialError::FifoOverflow(65)));
}
