//! The minimal Linux guest as the end-to-end tests drive it: its kernel command line, and its
//! `squib.mode=shell` console — commands typed on squib's stdin, answers found in squib's stdout
//! (the console and the VMM's log) after a mark taken before typing — up to the `reboot -f`
//! that ends the boot with exit code 0.
//!
//! Threading: a [`Guest`] is used from one thread (the test's, or its network-namespace thread).

use std::io::Write;
use std::path::Path;
use std::process::ChildStdin;
use std::time::{Duration, Instant};

use super::{Squib, pvm_args, tmp_path, wait_for};

/// The arguments every Linux boot of the tests starts with.
pub const BASE_ARGS: &str = "console=ttyS0 reboot=k panic=1 i8042.noaux i8042.nomux i8042.dumbkbd";

/// [`BASE_ARGS`], then `extra` (with its leading space), then what a kvm_pvm host needs.
pub fn cmdline(extra: &str) -> String {
    format!("{BASE_ARGS}{extra}{}", pvm_args())
}

/// A squib process running the Linux guest, with the console's stdin.
pub struct Guest {
    pub vm: Squib,
    stdin: ChildStdin,
}

impl Guest {
    pub fn new(vm: Squib, stdin: ChildStdin) -> Self {
        Self { vm, stdin }
    }

    /// squib with an API socket at `socket` and the console's stdin (configure it through the
    /// API, then `InstanceStart`).
    pub fn spawn_api(socket: &Path) -> Self {
        let (vm, stdin) = Squib::spawn_api_with_stdin(&[], socket);
        Self::new(vm, stdin)
    }

    /// squib `--no-api --config-file` with the Firecracker configuration document `doc`.
    pub fn spawn_config(doc: &serde_json::Value) -> Self {
        let cfg = tmp_path("linux.json");
        std::fs::write(&cfg, doc.to_string()).expect("config");
        let (vm, stdin) =
            Squib::spawn_with_stdin(&["--no-api", "--config-file", cfg.to_str().expect("utf8")]);
        Self::new(vm, stdin)
    }

    /// Waits up to `limit` for the guest's `SQUIB-SHELL` marker; panics if the VMM exits first.
    pub fn wait_shell_marker(&self, limit: Duration) {
        let shell = wait_for(limit, || {
            let out = self.vm.output();
            if out.contains("SQUIB-SHELL") {
                Some(true)
            } else if out.contains("exiting") {
                Some(false)
            } else {
                None
            }
        });
        assert_eq!(shell, Some(true), "no shell:\n{}", self.vm.output());
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

    /// Types `reboot -f`: squib must exit 0 within `limit` with Firecracker's exit line.
    /// Returns the whole output.
    pub fn reboot(&mut self, limit: Duration) -> String {
        self.type_line("reboot -f");
        let code = self.vm.wait(limit);
        let out = self.vm.output();
        assert_eq!(code, Some(0), "{out}");
        assert!(
            out.contains("Firecracker exiting successfully. exit_code=0"),
            "{out}"
        );
        out
    }
}
