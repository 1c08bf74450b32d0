//! Firecracker's boot-timer pseudo device.
//!
//! A 4 KiB MMIO region ([`BOOT_TIMER_BASE`] = 0xC000_0000 on x86_64, [`BOOT_TIMER_LEN`]), mapped
//! only with `--boot-timer`. The guest's init writes the magic byte **123** at offset 0 once it
//! has booted; the device then logs at INFO, in Firecracker's exact format,
//!
//! ```text
//! Guest-boot-time = {wall_us:>6} us {wall_ms} ms, {cpu_us:>6} CPU us {cpu_ms} CPU ms
//! ```
//!
//! measured from the [`BootTimestamp`] taken when the VMM started building the microVM, and
//! records the result ([`BootTimer::last_boot_time`]). Every other access is ignored; reads
//! return zeros.
//!
//! # Process CPU time
//!
//! This crate forbids `unsafe`, so it cannot call `clock_gettime(CLOCK_PROCESS_CPUTIME_ID)`.
//! CPU time is therefore an injected `fn() -> u64` (microseconds of process CPU time):
//! [`BootTimestamp::now_with`] / [`SystemBootClock::new`]. The VMM, which may use `unsafe`,
//! should pass a `clock_gettime(CLOCK_PROCESS_CPUTIME_ID)` reader for microsecond precision.
//! The default, [`proc_self_cpu_time_us`], reads `utime + stime` from `/proc/self/stat` and
//! assumes `_SC_CLK_TCK` = 100 (true on every mainstream Linux configuration), so it has 10 ms
//! granularity.
//!
//! Threading: owned by the MMIO bus mutex; the clock is `Send`.

use std::fmt;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::bus::BusDevice;
use crate::log::RateLimitedLog;
use crate::rl_info;

/// Guest-physical base of the boot timer on x86_64 (Firecracker's `BOOT_DEVICE_MEM_START`).
pub const BOOT_TIMER_BASE: u64 = 0xc000_0000;
/// Size of the boot timer's MMIO region.
pub const BOOT_TIMER_LEN: u64 = 0x1000;
/// The byte the guest writes at offset 0 to signal "boot complete".
pub const MAGIC_VALUE_SIGNAL_GUEST_BOOT_COMPLETE: u8 = 123;

/// Clock ticks per second assumed when parsing `/proc/self/stat` (Linux `USER_HZ`).
const ASSUMED_CLK_TCK: u64 = 100;

/// Process CPU time (user + system) in microseconds, from `/proc/self/stat`.
///
/// Assumes `_SC_CLK_TCK` = 100 (10 ms resolution). Returns 0 if the file cannot be read or
/// parsed.
pub fn proc_self_cpu_time_us() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| parse_proc_stat_cpu_ticks(&stat))
        .map_or(0, |ticks| ticks.saturating_mul(1_000_000 / ASSUMED_CLK_TCK))
}

/// `utime + stime` (fields 14 and 15) of a `/proc/<pid>/stat` line, in clock ticks.
fn parse_proc_stat_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is parenthesised and may contain spaces or ')': the fields
    // after it start after the *last* ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // `rest` starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime.saturating_add(stime))
}

/// A point in time for boot measurement: wall (monotonic) time and process CPU time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootTimestamp {
    /// Monotonic wall-clock instant.
    pub wall: Instant,
    /// Process CPU time in microseconds.
    pub cpu_us: u64,
}

impl BootTimestamp {
    /// Now, with CPU time from [`proc_self_cpu_time_us`].
    pub fn now() -> Self {
        Self::now_with(proc_self_cpu_time_us)
    }

    /// Now, with CPU time (µs) from `cpu_time_us`.
    pub fn now_with(cpu_time_us: fn() -> u64) -> Self {
        Self {
            wall: Instant::now(),
            cpu_us: cpu_time_us(),
        }
    }
}

/// Source of the "boot complete" timestamp.
pub trait BootClock: Send {
    /// The current time.
    fn now(&self) -> BootTimestamp;
}

/// The real clock: `Instant::now()` plus an injected process-CPU-time reader.
#[derive(Clone, Copy)]
pub struct SystemBootClock {
    cpu_time_us: fn() -> u64,
}

impl fmt::Debug for SystemBootClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SystemBootClock").finish_non_exhaustive()
    }
}

impl Default for SystemBootClock {
    /// CPU time from `/proc/self/stat` ([`proc_self_cpu_time_us`]).
    fn default() -> Self {
        Self::new(proc_self_cpu_time_us)
    }
}

impl SystemBootClock {
    /// A clock reading process CPU time (µs) with `cpu_time_us`.
    pub fn new(cpu_time_us: fn() -> u64) -> Self {
        Self { cpu_time_us }
    }
}

impl BootClock for SystemBootClock {
    fn now(&self) -> BootTimestamp {
        BootTimestamp::now_with(self.cpu_time_us)
    }
}

/// One measured boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct BootTime {
    /// Wall-clock time from the start timestamp to the guest's signal, in µs.
    pub wall_us: u64,
    /// Process CPU time spent in the same interval, in µs.
    pub cpu_us: u64,
}

impl fmt::Display for BootTime {
    /// Firecracker's log line, `Guest-boot-time = ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Guest-boot-time = {:>6} us {} ms, {:>6} CPU us {} CPU ms",
            self.wall_us,
            self.wall_us / 1000,
            self.cpu_us,
            self.cpu_us / 1000
        )
    }
}

/// The boot-timer MMIO device.
pub struct BootTimer {
    start: BootTimestamp,
    clock: Box<dyn BootClock>,
    last: Option<BootTime>,
    log: RateLimitedLog,
}

impl fmt::Debug for BootTimer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BootTimer")
            .field("start", &self.start)
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

impl BootTimer {
    /// A boot timer measuring from `start`, on the [`SystemBootClock`] default.
    pub fn new(start: BootTimestamp) -> Self {
        Self::with_clock(start, Box::new(SystemBootClock::default()))
    }

    /// A boot timer measuring from `start`, reading "now" from `clock`.
    pub fn with_clock(start: BootTimestamp, clock: Box<dyn BootClock>) -> Self {
        Self {
            start,
            clock,
            last: None,
            log: RateLimitedLog::default(),
        }
    }

    /// The start timestamp.
    pub fn start(&self) -> BootTimestamp {
        self.start
    }

    /// The most recent boot time the guest signalled, if any.
    pub fn last_boot_time(&self) -> Option<BootTime> {
        self.last
    }

    fn record(&mut self) -> BootTime {
        let now = self.clock.now();
        let wall = now.wall.saturating_duration_since(self.start.wall);
        let boot = BootTime {
            wall_us: duration_us(wall),
            cpu_us: now.cpu_us.saturating_sub(self.start.cpu_us),
        };
        self.last = Some(boot);
        boot
    }
}

fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl BusDevice for BootTimer {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == 0 && data == [MAGIC_VALUE_SIGNAL_GUEST_BOOT_COMPLETE] {
            let boot = self.record();
            // The guest can repeat the write: rate-limit (the first lines always pass).
            rl_info!(self.log, "{}", boot);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Reports `start + wall` and `start.cpu_us + cpu_us` on every call.
    struct FixedClock {
        at: BootTimestamp,
    }

    impl BootClock for FixedClock {
        fn now(&self) -> BootTimestamp {
            self.at
        }
    }

    fn timer(wall: Duration, cpu_us: u64) -> BootTimer {
        let start = BootTimestamp {
            wall: Instant::now(),
            cpu_us: 1_000,
        };
        let at = BootTimestamp {
            wall: start.wall + wall,
            cpu_us: start.cpu_us + cpu_us,
        };
        BootTimer::with_clock(start, Box::new(FixedClock { at }))
    }

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn test_boot_timer_magic_write_records_and_logs_firecracker_line() {
        let capture = Capture::default();
        let sink = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .without_time()
            .with_level(true)
            .with_target(false)
            .finish();
        let mut t = timer(Duration::from_micros(1_234_567), 345_678);
        tracing::subscriber::with_default(subscriber, || {
            t.write(0, &[MAGIC_VALUE_SIGNAL_GUEST_BOOT_COMPLETE]);
        });
        assert_eq!(
            t.last_boot_time(),
            Some(BootTime {
                wall_us: 1_234_567,
                cpu_us: 345_678
            })
        );
        let logged = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            logged.trim_end(),
            " INFO Guest-boot-time = 1234567 us 1234 ms, 345678 CPU us 345 CPU ms"
        );
    }

    #[test]
    fn test_boot_time_format_pads_small_values_like_firecracker() {
        let line = BootTime {
            wall_us: 42,
            cpu_us: 7,
        }
        .to_string();
        assert_eq!(
            line,
            "Guest-boot-time =     42 us 0 ms,      7 CPU us 0 CPU ms"
        );
    }

    #[test]
    fn test_boot_timer_ignores_other_writes_and_reads_zero() {
        let mut t = timer(Duration::from_millis(5), 5);
        t.write(0, &[122]);
        t.write(1, &[MAGIC_VALUE_SIGNAL_GUEST_BOOT_COMPLETE]);
        t.write(0, &[MAGIC_VALUE_SIGNAL_GUEST_BOOT_COMPLETE, 0]);
        t.write(0, &[]);
        assert_eq!(t.last_boot_time(), None);
        let mut data = [0xffu8; 8];
        t.read(0, &mut data);
        assert_eq!(data, [0; 8]);
        t.write(0, &[MAGIC_VALUE_SIGNAL_GUEST_BOOT_COMPLETE]);
        assert_eq!(t.last_boot_time().unwrap().wall_us, 5_000);
    }

    #[test]
    fn test_boot_timer_clock_before_start_saturates_to_zero() {
        let start = BootTimestamp {
            wall: Instant::now(),
            cpu_us: 500,
        };
        let clock = FixedClock {
            at: BootTimestamp {
                wall: start.wall,
                cpu_us: 100,
            },
        };
        let mut t = BootTimer::with_clock(start, Box::new(clock));
        t.write(0, &[MAGIC_VALUE_SIGNAL_GUEST_BOOT_COMPLETE]);
        assert_eq!(
            t.last_boot_time(),
            Some(BootTime {
                wall_us: 0,
                cpu_us: 0
            })
        );
    }

    #[test]
    fn test_parse_proc_stat_cpu_ticks_handles_odd_comm() {
        let line = "1234 (a) b) c) S 1 2 3 4 5 6 7 8 9 10 250 17 0 0 20 0 1 0 100";
        assert_eq!(parse_proc_stat_cpu_ticks(line), Some(267));
        assert_eq!(parse_proc_stat_cpu_ticks("garbage"), None);
        assert_eq!(parse_proc_stat_cpu_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn test_boot_timestamp_now_with_injected_cpu_source() {
        fn fake_cpu() -> u64 {
            42
        }
        assert_eq!(BootTimestamp::now_with(fake_cpu).cpu_us, 42);
        assert_eq!(SystemBootClock::new(fake_cpu).now().cpu_us, 42);
        // The /proc reader works on Linux (any value is fine; it must not panic).
        let _ = BootTimestamp::now();
    }
}
