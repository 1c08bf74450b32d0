//! The 8250/16550A UART on COM1, as Firecracker exposes it.
//!
//! [`SerialDevice`] wraps `vm_superio::Serial` (the register-level state machine) and adds what
//! Firecracker adds around it:
//!
//! - the interrupt goes out through an injected [`IrqLine`] (IRQ 4, an irqfd in production);
//! - the output sink is any `Box<dyn Write + Send>`: stdout, the file from `PUT /serial
//!   {"serial_out_path"}`, or a test buffer;
//! - an optional output [`TokenBucket`] (bytes), from `PUT /serial {"rate_limiter"}`: when it is
//!   empty, transmitted bytes are **dropped** (the guest is never stalled) and counted in
//!   `uart.rate_limiter_dropped_bytes`;
//! - host input ([`SerialDevice::enqueue_input`], fed from stdin by the VMM) goes into the
//!   UART's 64-byte receive FIFO, with a bounded host-side queue of [`INPUT_QUEUE_CAPACITY`]
//!   bytes behind it that refills the FIFO as the guest reads. Bytes beyond that are dropped and
//!   counted. [`SerialDevice::input_capacity`] lets the VMM apply back-pressure instead;
//! - the `uart` metric group ([`metrics::SerialMetrics`]).
//!
//! On the bus the device answers one-byte accesses at offsets 0..8 (ports 0x3F8..=0x3FF);
//! anything else is counted as missed.
//!
//! Threading: owned by the bus mutex; vCPU threads call [`BusDevice`] methods, the VMM thread
//! calls `enqueue_input`, both under that lock.

pub mod metrics;

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Write};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vm_superio::serial::{Error as SuperioError, SerialEvents};
use vm_superio::{Serial, Trigger};

use self::metrics::SerialMetrics;
use crate::bus::BusDevice;
use crate::interrupt::IrqLine;
use crate::log::RateLimitedLog;
use crate::metrics::len_u64;
use crate::rate_limiter::{BucketReduction, TokenBucket};
use crate::rl_error;

/// First port of COM1.
pub const COM1_BASE: u64 = 0x3f8;
/// Number of COM1 ports (0x3F8..=0x3FF).
pub const COM1_LEN: u64 = 8;
/// COM1's ISA interrupt line.
pub const COM1_IRQ: u32 = 4;
/// Size of the UART's receive FIFO (vm-superio's).
pub const RX_FIFO_SIZE: usize = 64;
/// Host-side input queue behind the receive FIFO.
pub const INPUT_QUEUE_CAPACITY: usize = 4096;

/// Errors of the serial device.
#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    /// The receive FIFO is full.
    #[error("the serial receive FIFO is full")]
    FifoFull,
    /// A saved state holds more receive bytes than the FIFO can.
    #[error("serial state has {0} bytes in the receive FIFO (at most {RX_FIFO_SIZE})")]
    FifoOverflow(usize),
    /// Raising the serial interrupt failed.
    #[error("failed to raise the serial interrupt")]
    Interrupt(#[source] io::Error),
    /// Writing or flushing the output sink failed.
    #[error("failed to write the serial output")]
    Output(#[source] io::Error),
}

impl From<SuperioError<io::Error>> for SerialError {
    fn from(err: SuperioError<io::Error>) -> Self {
        match err {
            SuperioError::Trigger(e) => Self::Interrupt(e),
            SuperioError::IOError(e) => Self::Output(e),
            SuperioError::FullFifo => Self::FifoFull,
        }
    }
}

/// The UART's registers and receive FIFO as plain data (for snapshots).
///
/// The host-side input queue and the output sink are not part of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialState {
    /// Divisor latch, low byte (DLL).
    pub baud_divisor_low: u8,
    /// Divisor latch, high byte (DLM).
    pub baud_divisor_high: u8,
    /// Interrupt enable register (IER).
    pub interrupt_enable: u8,
    /// Interrupt identification register (IIR).
    pub interrupt_identification: u8,
    /// Line control register (LCR).
    pub line_control: u8,
    /// Line status register (LSR).
    pub line_status: u8,
    /// Modem control register (MCR).
    pub modem_control: u8,
    /// Modem status register (MSR).
    pub modem_status: u8,
    /// Scratch register (SCR).
    pub scratch: u8,
    /// Receive FIFO contents, oldest first (at most [`RX_FIFO_SIZE`] bytes).
    pub in_buffer: Vec<u8>,
}

impl Default for SerialState {
    /// The power-on state.
    fn default() -> Self {
        vm_superio::serial::SerialState::default().into()
    }
}

impl From<vm_superio::serial::SerialState> for SerialState {
    fn from(s: vm_superio::serial::SerialState) -> Self {
        Self {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }
}

impl From<&SerialState> for vm_superio::serial::SerialState {
    fn from(s: &SerialState) -> Self {
        Self {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer.clone(),
        }
    }
}

/// vm-superio `Trigger` over an injected [`IrqLine`].
struct IrqTrigger(Arc<dyn IrqLine>);

impl Trigger for IrqTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.trigger()
    }
}

/// vm-superio `SerialEvents` feeding the `uart` metrics.
struct MetricEvents(Arc<SerialMetrics>);

impl SerialEvents for MetricEvents {
    fn buffer_read(&self) {
        self.0.read_count.inc();
    }

    fn out_byte(&self) {
        self.0.write_count.inc();
    }

    fn tx_lost_byte(&self) {
        self.0.missed_write_count.inc();
    }

    fn in_buffer_empty(&self) {
        // The device refills the FIFO from its input queue after every data read.
    }
}

/// The output side: the sink behind the optional byte rate limiter.
struct SerialOut {
    sink: Box<dyn Write + Send>,
    limiter: Option<TokenBucket>,
    metrics: Arc<SerialMetrics>,
}

impl Write for SerialOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(limiter) = self.limiter.as_mut() {
            match limiter.reduce(len_u64(buf.len())) {
                BucketReduction::Success => {}
                BucketReduction::Failure | BucketReduction::OverConsumption(_) => {
                    // Drop rather than stall the vCPU (Firecracker's behaviour).
                    self.metrics
                        .rate_limiter_dropped_bytes
                        .add(len_u64(buf.len()));
                    return Ok(buf.len());
                }
            }
        }
        self.sink.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sink.flush()
    }
}

type Uart = Serial<IrqTrigger, MetricEvents, SerialOut>;

/// The COM1 UART: vm-superio's 8250 plus sink, rate limiter, input queue and metrics.
pub struct SerialDevice {
    serial: Uart,
    input: VecDeque<u8>,
    metrics: Arc<SerialMetrics>,
    log: RateLimitedLog,
}

impl fmt::Debug for SerialDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SerialDevice")
            .field("state", &self.serial.state())
            .field("queued_input", &self.input.len())
            .field("rate_limiter", &self.serial.writer().limiter)
            .finish_non_exhaustive()
    }
}

impl SerialDevice {
    /// A UART in its power-on state, interrupting through `irq` and writing to `out`, with an
    /// optional output rate limit (`None`: unlimited).
    pub fn new(
        irq: Arc<dyn IrqLine>,
        out: Box<dyn Write + Send>,
        rate_limiter: Option<TokenBucket>,
    ) -> Self {
        let metrics = Arc::new(SerialMetrics::new());
        let out = SerialOut {
            sink: out,
            limiter: rate_limiter,
            metrics: metrics.clone(),
        };
        let serial = Serial::with_events(IrqTrigger(irq), MetricEvents(metrics.clone()), out);
        Self::assemble(serial, metrics)
    }

    /// A UART restored from `state` (re-raising pending interrupts, as vm-superio does).
    pub fn from_state(
        state: &SerialState,
        irq: Arc<dyn IrqLine>,
        out: Box<dyn Write + Send>,
        rate_limiter: Option<TokenBucket>,
    ) -> Result<Self, SerialError> {
        if state.in_buffer.len() > RX_FIFO_SIZE {
            return Err(SerialError::FifoOverflow(state.in_buffer.len()));
        }
        let metrics = Arc::new(SerialMetrics::new());
        let out = SerialOut {
            sink: out,
            limiter: rate_limiter,
            metrics: metrics.clone(),
        };
        let serial = Serial::from_state(
            &state.into(),
            IrqTrigger(irq),
            MetricEvents(metrics.clone()),
            out,
        )?;
        Ok(Self::assemble(serial, metrics))
    }

    fn assemble(serial: Uart, metrics: Arc<SerialMetrics>) -> Self {
        Self {
            serial,
            input: VecDeque::new(),
            metrics,
            log: RateLimitedLog::default(),
        }
    }

    /// The registers and receive FIFO as plain data.
    pub fn state(&self) -> SerialState {
        self.serial.state().into()
    }

    /// The `uart` metric group of this device.
    pub fn metrics(&self) -> &Arc<SerialMetrics> {
        &self.metrics
    }

    /// The output rate limiter, if any.
    pub fn rate_limiter(&self) -> Option<&TokenBucket> {
        self.serial.writer().limiter.as_ref()
    }

    /// Replaces the output rate limiter (`None`: unlimited).
    pub fn set_rate_limiter(&mut self, rate_limiter: Option<TokenBucket>) {
        self.serial.writer_mut().limiter = rate_limiter;
    }

    /// Flushes the output sink (counted in `flush_count`).
    pub fn flush(&mut self) -> Result<(), SerialError> {
        self.metrics.flush_count.inc();
        self.serial
            .writer_mut()
            .flush()
            .map_err(SerialError::Output)
    }

    /// How many input bytes [`enqueue_input`](Self::enqueue_input) would accept now.
    pub fn input_capacity(&self) -> usize {
        let fifo = if self.input.is_empty() {
            self.serial.fifo_capacity()
        } else {
            0
        };
        fifo + (INPUT_QUEUE_CAPACITY - self.input.len())
    }

    /// Host input bytes accepted but not yet in the guest-visible FIFO.
    pub fn queued_input(&self) -> usize {
        self.input.len()
    }

    /// Delivers host input (stdin) to the guest: into the receive FIFO (raising the
    /// received-data interrupt if the guest enabled it), then into the bounded input queue.
    ///
    /// Returns how many bytes were accepted; the rest are dropped and counted in
    /// `input_dropped_bytes`.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        let mut rest = bytes;
        if self.input.is_empty() {
            let n = push_to_fifo(&mut self.serial, &self.metrics, &self.log, rest);
            rest = &rest[n..];
        }
        let room = INPUT_QUEUE_CAPACITY - self.input.len();
        let queued = rest.len().min(room);
        self.input.extend(&rest[..queued]);
        let dropped = rest.len() - queued;
        if dropped > 0 {
            self.metrics.input_dropped_bytes.add(len_u64(dropped));
            crate::rl_warn!(
                self.log,
                "Serial input queue full: dropped {} bytes",
                dropped
            );
        }
        bytes.len() - dropped
    }

    /// Moves queued input into the FIFO as far as it has room.
    fn refill_fifo(&mut self) {
        while !self.input.is_empty() {
            let (head, _) = self.input.as_slices();
            let n = push_to_fifo(&mut self.serial, &self.metrics, &self.log, head);
            if n == 0 {
                break;
            }
            self.input.drain(..n);
        }
    }
}

/// Puts as much of `data` as fits into the FIFO; returns the number of bytes taken.
fn push_to_fifo(
    serial: &mut Uart,
    metrics: &SerialMetrics,
    log: &RateLimitedLog,
    data: &[u8],
) -> usize {
    let room = serial.fifo_capacity();
    if data.is_empty() || room == 0 {
        return 0;
    }
    match serial.enqueue_raw_bytes(data) {
        Ok(n) => n,
        Err(SuperioError::Trigger(err)) => {
            // The bytes are in the FIFO; only the interrupt was lost.
            metrics.error_count.inc();
            rl_error!(log, "Failed to raise the serial interrupt: {}", err);
            data.len().min(room)
        }
        Err(_) => 0,
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let (Ok(reg), [byte]) = (u8::try_from(offset), data) else {
            self.metrics.missed_read_count.inc();
            return;
        };
        if offset >= COM1_LEN {
            self.metrics.missed_read_count.inc();
            return;
        }
        *byte = self.serial.read(reg);
        if offset == 0 {
            self.refill_fifo();
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let (Ok(reg), [byte]) = (u8::try_from(offset), data) else {
            self.metrics.missed_write_count.inc();
            return;
        };
        if offset >= COM1_LEN {
            self.metrics.missed_write_count.inc();
            return;
        }
        if let Err(err) = self.serial.write(reg, *byte) {
            self.metrics.error_count.inc();
            let err = SerialError::from(err);
            rl_error!(
                self.log,
                "Failed the write to serial: {}",
                DisplayChain(&err)
            );
        }
        // Leaving loopback mode (or any register write) may make room for queued input.
        if !self.input.is_empty() {
            self.refill_fifo();
        }
    }
}

/// Displays an error with its sources, `outer: inner: ...`.
struct DisplayChain<'a>(&'a dyn std::error::Error);

impl fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(err) = source {
            write!(f, ": {err}")?;
            source = err.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
