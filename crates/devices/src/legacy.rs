//! Legacy PC devices on the x86 port-I/O bus: the COM1 8250 UART and the i8042 controller.
//!
//! Both are mapped by the VMM as Firecracker maps them (and as its ACPI DSDT announces them):
//!
//! | device | ports | IRQ |
//! |---|---|---|
//! | [`serial::SerialDevice`] (`ttyS0`) | 0x3F8..=0x3FF ([`serial::COM1_BASE`], [`serial::COM1_LEN`]) | 4 |
//! | [`i8042::I8042Device`] | 0x60 data, 0x64 status/command ([`i8042::I8042_BASE`], [`i8042::I8042_LEN`]) | 1 |

pub mod i8042;
pub mod serial;

pub use i8042::{I8042Device, I8042Error, I8042State};
pub use serial::{SerialDevice, SerialError, SerialState};
