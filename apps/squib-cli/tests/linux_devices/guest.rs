//! The Linux guest's shell console as a test sees it: commands typed on squib's stdin, answers
//! found in squib's stdout (the console and the VMM's log) after a mark taken before typing.
//!
//! Threading: used from the test thread only.

use std::io::Write;
use std::process::ChildStdin;
use std::time::{Duration, Instant};

use crate::common::{Squib, wait_for};

pub struct Guest {
    pub vm: Squib,
    stdin: ChildStdin,
}

impl Guest {
    pub fn new(vm: Squib, stdin: ChildStdin) -> Self {
        Self { vm, stdin }
    }

    /// Where the output ends now: answers to the next command are looked for after it.
    pub fn mark(&self) -> usize {
        self.vm.output().len()
    }

    pub fn type_line(&mut self, cmd: &str) {
        writeln!(self.stdin, "{cmd}").expect("write to the console");
    }

    /// The first complete output line after `mark` containing `needle`, within `limit`.
    pub fn wait_line(&self, mark: usize, needle: &str, limit: Duration) -> String {
        wait_for(limit, || {
            let out = self.vm.output();
            let new = out.get(mark..).unwrap_or_default();
            let complete = &new[..new.rfind('\n').map_or(0, |i| i + 1)];
            complete
                .lines()
                .find(|l| l.contains(needle))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| {
            panic!(
                "no `{needle}` within {limit:?}; output since the mark:\n{}",
                self.vm.output().get(mark..).unwrap_or_default()
            )
        })
    }

    /// Types `cmd` and waits for a line containing `needle`; returns the line and how long the
    /// answer took as seen from the host (typing and console echo included).
    pub fn run(&mut self, cmd: &str, needle: &str, limit: Duration) -> (String, Duration) {
        let mark = self.mark();
        let t0 = Instant::now();
        self.type_line(cmd);
        let line = self.wait_line(mark, needle, limit);
        (line, t0.elapsed())
    }

    /// Retries a trivial command until the shell answers (the first keystrokes may arrive
    /// before the shell reads its terminal).
    pub fn wait_shell(&mut self) {
        for _ in 0..20 {
            let mark = self.mark();
            self.type_line("echo SHELL-$((6*7))");
            let ok = wait_for(Duration::from_secs(15), || {
                let out = self.vm.output();
                out.get(mark..)
                    .unwrap_or_default()
                    .contains("SHELL-42")
                    .then_some(())
            });
            if ok.is_some() {
                return;
            }
        }
        panic!("the shell never answered:\n{}", self.vm.output());
    }

    /// A number the guest prints as `TAG=<n>` (the typed command holds `TAG""=`, so its echo
    /// on the console never matches).
    pub fn number(&mut self, tag: &str, expr: &str) -> u64 {
        let (line, _) = self.run(
            &format!("echo {tag}\"\"=$({expr})"),
            &format!("{tag}="),
            Duration::from_secs(60),
        );
        let mut found = None;
        for (i, _) in line.match_indices(&format!("{tag}=")) {
            let digits: String = line[i + tag.len() + 1..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if let Ok(n) = digits.parse() {
                found = Some(n);
            }
        }
        found.unwrap_or_else(|| panic!("no number in `{line}`"))
    }

    /// `MemTotal` or `MemFree` in KiB.
    pub fn meminfo_kib(&mut self, field: &str) -> u64 {
        let tag = format!("MI{}", field.to_ascii_uppercase());
        self.number(
            &tag,
            &format!("sed -n 's/^{field}: *\\([0-9]*\\).*/\\1/p' /proc/meminfo"),
        )
    }
}

/// Value of `key` (`VmRSS`, `RssAnon`, ...) in /proc/PID/status, bytes.
pub fn status_bytes(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        * 1024
}

/// `bytes` in `d`, as MiB/s.
#[allow(clippy::cast_precision_loss)]
pub fn mib_s(bytes: usize, d: Duration) -> f64 {
    let mib = bytes as f64 / f64::from(1u32 << 20);
    mib / d.as_secs_f64().max(1e-9)
}
