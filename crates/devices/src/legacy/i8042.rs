//! A minimal i8042 PS/2 controller with a dumb AT keyboard behind it.
//!
//! Modelled on Firecracker's `devices/legacy/i8042.rs` (not vm-superio's reset-only device),
//! with a few more controller and keyboard commands so Linux's `i8042` and `atkbd` probes get
//! sane answers even without `i8042.dumbkbd`. What it is for:
//!
//! - **guest reboot**: the command 0xFE ("pulse reset line") on port 0x64 signals the reset
//!   `EventFd` the VMM watches, and counts `i8042.reset_count`. Guests use `reboot=k`, so a
//!   reboot becomes a clean VMM exit;
//! - **`SendCtrlAltDel`**: [`I8042Device::trigger_ctrl_alt_del`] queues the AT scan-code set 2
//!   make codes of Left Ctrl (`0x14`), Left Alt (`0x11`) and Delete (`0xE0 0x71`) — no break
//!   codes, exactly as Firecracker — and raises IRQ 1 once per key.
//!
//! # Registers
//!
//! - port 0x60 (offset 0), data: reads pop the output buffer (0 when empty; another IRQ 1 is
//!   raised while bytes remain); writes are either the parameter of a pending controller
//!   command (0x60, 0xD1, 0xD2) or a keyboard command.
//! - port 0x64 (offset 4), status on read / command on write. Status bits: OBF (0x01, output
//!   buffer full), IBF (0x02, never set: commands complete synchronously), SYS (0x04, set by
//!   the self-test), CMD (0x08, a command parameter is expected at 0x60), KBD_ENABLED (0x10).
//!
//! Controller commands: 0x20 read CTR, 0x60 write CTR, 0xAA self-test (→ 0x55), 0xAB keyboard
//! interface test (→ 0x00), 0xAD/0xAE disable/enable keyboard (CTR bit 4), 0xA7/0xA8
//! disable/enable aux (CTR bit 5), 0xD0 read output port, 0xD1 write output port, 0xD2 write
//! keyboard output buffer, 0xFE CPU reset. Others are counted in `missed_write_count` and get no
//! answer (a probing driver times out, as on hardware without the feature). No AUX (mouse)
//! port is emulated; guests boot with `i8042.noaux`.
//!
//! Keyboard commands (answered with ACK 0xFA, Firecracker acks everything): 0xFF reset
//! (→ FA AA), 0xF2 identify (→ FA AB 83), 0xEE echo (→ EE), 0xED set LEDs, 0xF3 typematic and
//! 0xF0 scan-code set take one parameter byte (acked; 0xF0 0x00 → FA FA 02).
//!
//! Responses replace whatever was still unread in the 16-byte output buffer.
//!
//! Threading: owned by the bus mutex; the VMM thread calls `trigger_ctrl_alt_del` under it.

pub mod metrics;

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vmm_sys_util::eventfd::EventFd;

use self::metrics::I8042Metrics;
use crate::bus::BusDevice;
use crate::interrupt::IrqLine;
use crate::log::RateLimitedLog;
use crate::{rl_error, rl_warn};

/// First port of the controller (data port 0x60).
pub const I8042_BASE: u64 = 0x60;
/// Ports 0x60..=0x64 (the status/command port is at offset 4).
pub const I8042_LEN: u64 = 5;
/// The keyboard's ISA interrupt line.
pub const I8042_KBD_IRQ: u32 = 1;
/// Capacity of the output buffer, in bytes.
pub const BUF_SIZE: usize = 16;

const OFS_DATA: u64 = 0;
const OFS_STATUS: u64 = 4;

// Controller commands (port 0x64).
const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_AUX_DISABLE: u8 = 0xa7;
const CMD_AUX_ENABLE: u8 = 0xa8;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_KBD_DISABLE: u8 = 0xad;
const CMD_KBD_ENABLE: u8 = 0xae;
const CMD_READ_OUTP: u8 = 0xd0;
const CMD_WRITE_OUTP: u8 = 0xd1;
const CMD_WRITE_KBD_OUTBUF: u8 = 0xd2;
const CMD_RESET_CPU: u8 = 0xfe;

const SELF_TEST_OK: u8 = 0x55;
const KBD_TEST_OK: u8 = 0x00;

// Status register bits.
const SB_OUT_DATA_AVAIL: u8 = 0x01;
const SB_SYSTEM_FLAG: u8 = 0x04;
const SB_I8042_CMD_DATA: u8 = 0x08;
const SB_KBD_ENABLED: u8 = 0x10;

// Control register (CTR) bits.
const CB_KBD_INT: u8 = 0x01;
const CB_POST_OK: u8 = 0x04;
const CB_KBD_DISABLE: u8 = 0x10;
const CB_AUX_DISABLE: u8 = 0x20;

// Keyboard commands (port 0x60) and replies.
const KBD_SET_LEDS: u8 = 0xed;
const KBD_ECHO: u8 = 0xee;
const KBD_SCANCODE_SET: u8 = 0xf0;
const KBD_IDENTIFY: u8 = 0xf2;
const KBD_TYPEMATIC: u8 = 0xf3;
const KBD_RESET: u8 = 0xff;
const KBD_ACK: u8 = 0xfa;
const KBD_SELF_TEST_PASSED: u8 = 0xaa;
const KBD_ID: [u8; 2] = [0xab, 0x83];

/// Scan-code set 2 make codes: Left Ctrl, Left Alt, Delete (extended).
const CTRL_ALT_DEL: [&[u8]; 3] = [&[0x14], &[0x11], &[0xe0, 0x71]];

/// Errors of the i8042 device.
#[derive(Debug, thiserror::Error)]
pub enum I8042Error {
    /// The output buffer has no room for the whole key sequence.
    #[error("i8042 output buffer full")]
    BufferFull,
    /// Raising the keyboard interrupt failed.
    #[error("failed to raise the i8042 keyboard interrupt")]
    Interrupt(#[source] io::Error),
}

/// The controller's state as plain data (for snapshots).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct I8042State {
    /// Status register.
    pub status: u8,
    /// Control register (CTR, "command byte").
    pub control: u8,
    /// Output port.
    pub outp: u8,
    /// Controller command awaiting its parameter byte at port 0x60, if any.
    pub pending_cmd: Option<u8>,
    /// Keyboard command awaiting its parameter byte, if any.
    pub pending_kbd_cmd: Option<u8>,
    /// Unread output bytes, oldest first (at most [`BUF_SIZE`]; extra bytes are dropped on
    /// restore).
    pub buffer: Vec<u8>,
}

/// The i8042 controller: reset line, keyboard IRQ 1 and a 16-byte output buffer.
pub struct I8042Device {
    reset_evt: EventFd,
    kbd_irq: Arc<dyn IrqLine>,
    status: u8,
    control: u8,
    outp: u8,
    pending_cmd: Option<u8>,
    pending_kbd_cmd: Option<u8>,
    buf: VecDeque<u8>,
    metrics: Arc<I8042Metrics>,
    log: RateLimitedLog,
}

impl std::fmt::Debug for I8042Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("I8042Device")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl I8042Device {
    /// A controller that writes 1 to `reset_evt` when the guest resets the CPU and raises
    /// keyboard interrupts on `kbd_irq`.
    pub fn new(reset_evt: EventFd, kbd_irq: Arc<dyn IrqLine>) -> Self {
        Self {
            reset_evt,
            kbd_irq,
            status: SB_KBD_ENABLED,
            control: CB_POST_OK | CB_KBD_INT,
            outp: 0,
            pending_cmd: None,
            pending_kbd_cmd: None,
            buf: VecDeque::with_capacity(BUF_SIZE),
            metrics: Arc::new(I8042Metrics::new()),
            log: RateLimitedLog::default(),
        }
    }

    /// A controller restored from `state`.
    pub fn from_state(state: &I8042State, reset_evt: EventFd, kbd_irq: Arc<dyn IrqLine>) -> Self {
        let mut dev = Self::new(reset_evt, kbd_irq);
        dev.control = state.control;
        dev.outp = state.outp;
        dev.pending_cmd = state.pending_cmd;
        dev.pending_kbd_cmd = state.pending_kbd_cmd;
        dev.buf.extend(state.buffer.iter().take(BUF_SIZE));
        dev.status = state.status;
        dev.sync_obf();
        dev
    }

    /// The controller state as plain data.
    pub fn state(&self) -> I8042State {
        I8042State {
            status: self.status,
            control: self.control,
            outp: self.outp,
            pending_cmd: self.pending_cmd,
            pending_kbd_cmd: self.pending_kbd_cmd,
            buffer: self.buf.iter().copied().collect(),
        }
    }

    /// The `i8042` metric group of this device.
    pub fn metrics(&self) -> &Arc<I8042Metrics> {
        &self.metrics
    }

    /// Queues the Ctrl, Alt, Del key presses (scan-code set 2) and raises IRQ 1 per key.
    ///
    /// Fails without queuing anything if the output buffer lacks room for all four bytes. If
    /// the guest disabled the keyboard interrupt, the bytes are queued without an interrupt.
    pub fn trigger_ctrl_alt_del(&mut self) -> Result<(), I8042Error> {
        let needed: usize = CTRL_ALT_DEL.iter().map(|key| key.len()).sum();
        if BUF_SIZE - self.buf.len() < needed {
            return Err(I8042Error::BufferFull);
        }
        for key in CTRL_ALT_DEL {
            for &byte in key {
                self.push_byte(byte);
            }
            self.raise_kbd_irq()?;
        }
        Ok(())
    }

    /// Raises IRQ 1 unless the guest disabled the keyboard interrupt in the CTR.
    fn raise_kbd_irq(&self) -> Result<(), I8042Error> {
        if self.control & CB_KBD_INT == 0 {
            return Ok(());
        }
        self.kbd_irq.trigger().map_err(I8042Error::Interrupt)
    }

    /// Raises IRQ 1 for a guest-triggered event, counting and logging a failure.
    fn notify_guest(&self) {
        if let Err(err) = self.raise_kbd_irq() {
            self.metrics.error_count.inc();
            rl_warn!(self.log, "Failed to trigger i8042 kbd interrupt: {:?}", err);
        }
    }

    fn sync_obf(&mut self) {
        if self.buf.is_empty() {
            self.status &= !SB_OUT_DATA_AVAIL;
        } else {
            self.status |= SB_OUT_DATA_AVAIL;
        }
    }

    /// Appends a byte to the output buffer; a byte that does not fit is dropped.
    fn push_byte(&mut self, byte: u8) {
        if self.buf.len() < BUF_SIZE {
            self.buf.push_back(byte);
        }
        self.sync_obf();
    }

    fn pop_byte(&mut self) -> Option<u8> {
        let byte = self.buf.pop_front();
        self.sync_obf();
        byte
    }

    fn flush_buf(&mut self) {
        self.buf.clear();
        self.sync_obf();
    }

    /// Replaces any unread output with `bytes` (a command response).
    fn respond(&mut self, bytes: &[u8]) {
        self.flush_buf();
        for &b in bytes {
            self.push_byte(b);
        }
    }

    /// Handles a write to port 0x64; returns whether the command is supported.
    fn write_command(&mut self, cmd: u8) -> bool {
        // A new command cancels a pending parameter.
        self.pending_cmd = None;
        self.status &= !SB_I8042_CMD_DATA;
        match cmd {
            CMD_RESET_CPU => {
                if let Err(err) = self.reset_evt.write(1) {
                    self.metrics.error_count.inc();
                    rl_error!(self.log, "Failed to trigger i8042 reset event: {:?}", err);
                }
                self.metrics.reset_count.inc();
            }
            CMD_READ_CTR => self.respond(&[self.control]),
            CMD_READ_OUTP => self.respond(&[self.outp]),
            CMD_WRITE_CTR | CMD_WRITE_OUTP | CMD_WRITE_KBD_OUTBUF => {
                if cmd == CMD_WRITE_CTR {
                    self.flush_buf();
                }
                self.pending_cmd = Some(cmd);
                self.status |= SB_I8042_CMD_DATA;
            }
            CMD_SELF_TEST => {
                self.status |= SB_SYSTEM_FLAG;
                self.respond(&[SELF_TEST_OK]);
            }
            CMD_KBD_TEST => self.respond(&[KBD_TEST_OK]),
            CMD_KBD_DISABLE => self.control |= CB_KBD_DISABLE,
            CMD_KBD_ENABLE => self.control &= !CB_KBD_DISABLE,
            CMD_AUX_DISABLE => self.control |= CB_AUX_DISABLE,
            CMD_AUX_ENABLE => self.control &= !CB_AUX_DISABLE,
            _ => return false,
        }
        true
    }

    /// Handles a write to port 0x60.
    fn write_data(&mut self, value: u8) {
        if let Some(cmd) = self.pending_cmd.take() {
            self.status &= !SB_I8042_CMD_DATA;
            match cmd {
                CMD_WRITE_CTR => self.control = value,
                CMD_WRITE_OUTP => self.outp = value,
                CMD_WRITE_KBD_OUTBUF => {
                    self.respond(&[value]);
                    self.notify_guest();
                }
                _ => {}
            }
            return;
        }
        self.keyboard_command(value);
        self.notify_guest();
    }

    /// The dumb keyboard: acknowledges everything, answers reset, identify and echo.
    fn keyboard_command(&mut self, value: u8) {
        if let Some(cmd) = self.pending_kbd_cmd.take() {
            // Parameter byte of SET_LEDS, TYPEMATIC or SCANCODE_SET.
            if cmd == KBD_SCANCODE_SET && value == 0 {
                // "Get current set": ACK, then the set number (2: untranslated set 2).
                self.respond(&[KBD_ACK, 0x02]);
            } else {
                self.respond(&[KBD_ACK]);
            }
            return;
        }
        match value {
            KBD_RESET => self.respond(&[KBD_ACK, KBD_SELF_TEST_PASSED]),
            KBD_IDENTIFY => self.respond(&[KBD_ACK, KBD_ID[0], KBD_ID[1]]),
            KBD_ECHO => self.respond(&[KBD_ECHO]),
            KBD_SET_LEDS | KBD_TYPEMATIC | KBD_SCANCODE_SET => {
                self.pending_kbd_cmd = Some(value);
                self.respond(&[KBD_ACK]);
            }
            _ => self.respond(&[KBD_ACK]),
        }
    }
}

impl BusDevice for I8042Device {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let [byte] = data else {
            self.metrics.missed_read_count.inc();
            return;
        };
        match offset {
            OFS_STATUS => *byte = self.status,
            OFS_DATA => {
                *byte = self.pop_byte().unwrap_or(0);
                if !self.buf.is_empty() {
                    // More bytes: interrupt again so the guest comes back for them.
                    self.notify_guest();
                }
            }
            _ => {
                self.metrics.missed_read_count.inc();
                return;
            }
        }
        self.metrics.read_count.inc();
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let handled = match (offset, data) {
            (OFS_STATUS, [cmd]) => self.write_command(*cmd),
            (OFS_DATA, [value]) => {
                self.write_data(*value);
                true
            }
            _ => false,
        };
        if handled {
            self.metrics.write_count.inc();
        } else {
            self.metrics.missed_write_count.inc();
        }
    }
}

#[cfg(test)]
mod tests;
