//! Pseudo devices: MMIO devices with no real-hardware counterpart.

pub mod boot_timer;

pub use boot_timer::{BootClock, BootTime, BootTimer, BootTimestamp, SystemBootClock};
