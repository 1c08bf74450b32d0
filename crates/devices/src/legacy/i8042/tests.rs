use vmm_sys_util::eventfd::EFD_NONBLOCK;

use super::*;
use crate::interrupt::CountingIrq;

struct Fixture {
    dev: I8042Device,
    reset: EventFd,
    irq: Arc<CountingIrq>,
}

fn fixture() -> Fixture {
    let reset = EventFd::new(EFD_NONBLOCK).unwrap();
    let irq = Arc::new(CountingIrq::new());
    let dev = I8042Device::new(reset.try_clone().unwrap(), irq.clone());
    Fixture { dev, reset, irq }
}

fn status(dev: &mut I8042Device) -> u8 {
    let mut b = [0u8];
    dev.read(OFS_STATUS, &mut b);
    b[0]
}

fn data(dev: &mut I8042Device) -> u8 {
    let mut b = [0u8];
    dev.read(OFS_DATA, &mut b);
    b[0]
}

fn command(dev: &mut I8042Device, cmd: u8) {
    dev.write(OFS_STATUS, &[cmd]);
}

fn send(dev: &mut I8042Device, value: u8) {
    dev.write(OFS_DATA, &[value]);
}

/// Reads the output buffer while OBF is set, like Linux's `i8042_flush`.
fn drain(dev: &mut I8042Device) -> Vec<u8> {
    let mut out = Vec::new();
    while status(dev) & SB_OUT_DATA_AVAIL != 0 && out.len() <= BUF_SIZE {
        out.push(data(dev));
    }
    out
}

#[test]
fn test_i8042_reset_command_signals_reset_eventfd() {
    let mut f = fixture();
    assert!(f.reset.read().is_err(), "nothing signalled yet (EAGAIN)");
    command(&mut f.dev, CMD_RESET_CPU);
    assert_eq!(f.reset.read().unwrap(), 1);
    assert_eq!(f.dev.metrics().reset_count.count(), 1);
    assert_eq!(f.dev.metrics().write_count.count(), 1);
    send(&mut f.dev, CMD_RESET_CPU);
    assert!(
        f.reset.read().is_err(),
        "0xFE on the data port is a keyboard byte"
    );
}

#[test]
fn test_i8042_ctrl_alt_del_queues_set2_make_codes_with_irqs() {
    let mut f = fixture();
    f.dev.trigger_ctrl_alt_del().unwrap();
    assert_eq!(f.irq.count(), 3, "one interrupt per key");
    assert_ne!(status(&mut f.dev) & SB_OUT_DATA_AVAIL, 0);
    assert_eq!(data(&mut f.dev), 0x14);
    assert_eq!(f.irq.count(), 4, "bytes remain: interrupt again");
    assert_eq!(data(&mut f.dev), 0x11);
    assert_eq!(data(&mut f.dev), 0xe0);
    assert_eq!(data(&mut f.dev), 0x71);
    assert_eq!(f.irq.count(), 6, "no interrupt after the last byte");
    assert_eq!(status(&mut f.dev) & SB_OUT_DATA_AVAIL, 0);
    assert_eq!(data(&mut f.dev), 0, "empty buffer reads 0");
}

#[test]
fn test_i8042_ctrl_alt_del_fails_when_buffer_full() {
    let mut f = fixture();
    for _ in 0..BUF_SIZE / 4 {
        f.dev.trigger_ctrl_alt_del().unwrap();
    }
    assert!(matches!(
        f.dev.trigger_ctrl_alt_del(),
        Err(I8042Error::BufferFull)
    ));
    assert_eq!(f.dev.state().buffer.len(), BUF_SIZE);
    data(&mut f.dev);
    assert!(
        f.dev.trigger_ctrl_alt_del().is_err(),
        "needs room for all 4 bytes"
    );
}

#[test]
fn test_i8042_ctrl_alt_del_without_guest_interrupt_still_queues() {
    let mut f = fixture();
    command(&mut f.dev, CMD_WRITE_CTR);
    send(&mut f.dev, CB_POST_OK); // keyboard interrupt disabled
    f.dev.trigger_ctrl_alt_del().unwrap();
    assert_eq!(f.irq.count(), 0);
    assert_eq!(drain(&mut f.dev), [0x14, 0x11, 0xe0, 0x71]);
}

#[test]
fn test_i8042_ctrl_alt_del_reports_interrupt_failure() {
    let mut f = fixture();
    f.irq.set_failing(true);
    assert!(matches!(
        f.dev.trigger_ctrl_alt_del(),
        Err(I8042Error::Interrupt(_))
    ));
}

#[test]
fn test_i8042_linux_probe_sequence_gets_sane_answers() {
    let mut f = fixture();
    // i8042_controller_check: the status port is not floating.
    assert_ne!(status(&mut f.dev), 0xff);
    assert!(drain(&mut f.dev).is_empty());
    // i8042_controller_selftest.
    command(&mut f.dev, CMD_SELF_TEST);
    assert_eq!(drain(&mut f.dev), [SELF_TEST_OK]);
    assert_ne!(status(&mut f.dev) & SB_SYSTEM_FLAG, 0);
    // i8042_controller_init: read CTR, write it back modified, read it again.
    command(&mut f.dev, CMD_READ_CTR);
    let ctr = drain(&mut f.dev);
    assert_eq!(ctr, [CB_POST_OK | CB_KBD_INT]);
    command(&mut f.dev, CMD_WRITE_CTR);
    assert_ne!(status(&mut f.dev) & SB_I8042_CMD_DATA, 0);
    let new_ctr = (ctr[0] & !CB_KBD_INT) | CB_AUX_DISABLE;
    send(&mut f.dev, new_ctr);
    assert_eq!(status(&mut f.dev) & SB_I8042_CMD_DATA, 0);
    command(&mut f.dev, CMD_READ_CTR);
    assert_eq!(drain(&mut f.dev), [new_ctr]);
    // Keyboard port test, then enable.
    command(&mut f.dev, CMD_KBD_TEST);
    assert_eq!(drain(&mut f.dev), [KBD_TEST_OK]);
    command(&mut f.dev, CMD_KBD_DISABLE);
    command(&mut f.dev, CMD_READ_CTR);
    assert_ne!(drain(&mut f.dev)[0] & CB_KBD_DISABLE, 0);
    command(&mut f.dev, CMD_KBD_ENABLE);
    command(&mut f.dev, CMD_READ_CTR);
    assert_eq!(drain(&mut f.dev)[0] & CB_KBD_DISABLE, 0);
    // IBF never set: the driver never waits to write.
    assert_eq!(status(&mut f.dev) & 0x02, 0);
    let m = f.dev.metrics();
    assert_eq!(m.missed_write_count.count(), 0);
    assert_eq!(m.missed_read_count.count(), 0);
}

#[test]
fn test_i8042_atkbd_probe_commands() {
    let mut f = fixture();
    send(&mut f.dev, KBD_RESET);
    assert_eq!(drain(&mut f.dev), [KBD_ACK, KBD_SELF_TEST_PASSED]);
    send(&mut f.dev, KBD_IDENTIFY);
    assert_eq!(drain(&mut f.dev), [KBD_ACK, 0xab, 0x83]);
    send(&mut f.dev, KBD_SET_LEDS);
    assert_eq!(drain(&mut f.dev), [KBD_ACK]);
    send(&mut f.dev, 0x07);
    assert_eq!(drain(&mut f.dev), [KBD_ACK]);
    send(&mut f.dev, KBD_SCANCODE_SET);
    assert_eq!(drain(&mut f.dev), [KBD_ACK]);
    send(&mut f.dev, 0x00);
    assert_eq!(drain(&mut f.dev), [KBD_ACK, 0x02]);
    send(&mut f.dev, KBD_ECHO);
    assert_eq!(drain(&mut f.dev), [KBD_ECHO]);
    send(&mut f.dev, 0xf4); // enable scanning
    assert_eq!(drain(&mut f.dev), [KBD_ACK]);
    assert!(f.irq.count() >= 8, "every keyboard response raises IRQ 1");
}

#[test]
fn test_i8042_output_port_and_kbd_outbuf_commands() {
    let mut f = fixture();
    command(&mut f.dev, CMD_WRITE_OUTP);
    send(&mut f.dev, 0x52);
    command(&mut f.dev, CMD_READ_OUTP);
    assert_eq!(drain(&mut f.dev), [0x52]);
    command(&mut f.dev, CMD_WRITE_KBD_OUTBUF);
    send(&mut f.dev, 0x1c);
    assert_eq!(f.irq.count(), 1);
    assert_eq!(drain(&mut f.dev), [0x1c]);
}

#[test]
fn test_i8042_new_command_cancels_pending_parameter() {
    let mut f = fixture();
    command(&mut f.dev, CMD_WRITE_CTR);
    command(&mut f.dev, CMD_READ_CTR);
    assert_eq!(status(&mut f.dev) & SB_I8042_CMD_DATA, 0);
    assert_eq!(drain(&mut f.dev), [CB_POST_OK | CB_KBD_INT]);
    send(&mut f.dev, 0x00); // now a keyboard byte, not a CTR value
    assert_eq!(drain(&mut f.dev), [KBD_ACK]);
    command(&mut f.dev, CMD_READ_CTR);
    assert_eq!(drain(&mut f.dev), [CB_POST_OK | CB_KBD_INT]);
}

#[test]
fn test_i8042_bad_accesses_are_missed_without_side_effects() {
    let mut f = fixture();
    let mut two = [1u8, 2];
    f.dev.read(OFS_DATA, &mut two);
    f.dev.read(1, &mut [0]);
    f.dev.read(u64::MAX, &mut [0]);
    assert_eq!(two, [1, 2]);
    f.dev.write(OFS_STATUS, &[CMD_RESET_CPU, CMD_RESET_CPU]);
    f.dev.write(1, &[CMD_RESET_CPU]);
    f.dev.write(OFS_STATUS, &[]);
    command(&mut f.dev, 0xa9); // aux test: unsupported, no answer
    let m = f.dev.metrics();
    assert_eq!(m.missed_read_count.count(), 3);
    assert_eq!(m.missed_write_count.count(), 4);
    assert_eq!(m.reset_count.count(), 0);
    assert!(f.reset.read().is_err());
    assert!(drain(&mut f.dev).is_empty());
}

#[test]
fn test_i8042_state_round_trip() {
    let mut f = fixture();
    command(&mut f.dev, CMD_WRITE_OUTP);
    send(&mut f.dev, 0x03);
    f.dev.trigger_ctrl_alt_del().unwrap();
    command(&mut f.dev, CMD_WRITE_CTR);
    let state = f.dev.state();
    let state: I8042State = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
    let mut restored = I8042Device::from_state(
        &state,
        EventFd::new(EFD_NONBLOCK).unwrap(),
        Arc::new(CountingIrq::new()),
    );
    assert_eq!(restored.state(), state);
    send(&mut restored, 0x45); // completes the pending CTR write
    command(&mut restored, CMD_READ_CTR);
    assert_eq!(drain(&mut restored), [0x45]);
}
