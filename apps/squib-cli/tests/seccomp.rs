//! End-to-end: seccomp filters are on by default on every thread role, a denied system call is
//! fatal with Firecracker's log lines, `seccomp.num_faults` = 1 in the last metrics line and
//! exit code 148, `--no-seccomp` turns them off, and
//! `--seccomp-filter` loads Firecracker's binary filter format.
//!
//! The forbidden call is injected with the debug-build hook `SQUIB_TEST_BAD_SYSCALL=<role>`:
//! the thread issues `getppid` (110 on x86_64) right after installing its filter.

mod common;

use std::{path::PathBuf, time::Duration};

use common::{Squib, kvm_or_skip, test_guest, tmp_path, wait_for};
use squib_sys::seccomp::{SeccompFilters, ThreadCategory, policy};

const BAD_SYSCALL_LINE: &str = "Shutting down VM after intercepting a bad syscall (110).";
const SIGNAL_LINE: &str = "Shutting down VM after intercepting signal 31, code 1.";

fn config_file(scenario: &str) -> PathBuf {
    let path = tmp_path("config.json");
    let doc = serde_json::json!({
        "boot-source": {
            "kernel_image_path": test_guest(),
            "boot_args": format!("console=ttyS0 reboot=k panic=1 squibtest={scenario} squibtest.tick_shift=14"),
        },
        "drives": [],
        "machine-config": {"vcpu_count": 2, "mem_size_mib": 128},
    });
    std::fs::write(&path, doc.to_string()).expect("write config");
    path
}

fn squib_filters() -> SeccompFilters {
    policy::default_filters(&policy::HypervisorIoctls {
        vmm: squib_kvm::seccomp::vmm_ioctls(),
        vcpu: squib_kvm::seccomp::vcpu_ioctls(),
        kick_signal: Some(squib_kvm::seccomp::kick_signal()),
    })
    .expect("default filters")
}

/// A Firecracker-format filter file with `map` as its category → program map.
fn filter_file(map: &[(&str, &Vec<u64>)]) -> PathBuf {
    let map: std::collections::BTreeMap<String, Vec<u64>> = map
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).clone()))
        .collect();
    let path = tmp_path("filter.bpf");
    std::fs::write(&path, bitcode::serialize(&map).expect("bitcode")).expect("write filter");
    path
}

fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut vm = Squib::spawn_env(args, None, env);
    let code = vm.wait(Duration::from_secs(60));
    (code, vm.output())
}

#[test]
fn test_should_be_fatal_with_exit_148_on_a_forbidden_syscall_from_every_thread_role() {
    if !kvm_or_skip() {
        return;
    }
    let cfg = config_file("hello");
    let cfg = cfg.to_str().unwrap();
    // (role, thread names in the log prefix, squib's arguments); the VMM thread's helper
    // `fc_stdin` has the VMM's filter and may be the first to install it.
    let sock = tmp_path("api.sock");
    let cases: [(&str, &[&str], Vec<&str>); 3] = [
        (
            "api",
            &["fc_api"],
            vec!["--api-sock", sock.to_str().unwrap()],
        ),
        (
            "vmm",
            &["main", "fc_stdin"],
            vec!["--no-api", "--config-file", cfg],
        ),
        (
            "vcpu",
            &["fc_vcpu "],
            vec!["--no-api", "--config-file", cfg],
        ),
    ];
    for (role, threads, mut args) in cases {
        let metrics = tmp_path("metrics.json");
        let metrics_arg = metrics.to_str().unwrap().to_owned();
        args.extend(["--metrics-path", metrics_arg.as_str()]);
        let (code, out) = run_to_exit(&args, &[("SQUIB_TEST_BAD_SYSCALL", role)]);
        assert_eq!(code, Some(148), "{role}: {out}");
        // The handler's last word: a metrics line with the fault counted.
        let lines = std::fs::read_to_string(&metrics).unwrap_or_default();
        let last = lines
            .lines()
            .last()
            .unwrap_or_else(|| panic!("{role}: no metrics line on the fatal path: {out}"));
        let last: serde_json::Value = serde_json::from_str(last).expect("metrics line is JSON");
        assert_eq!(last["seccomp"]["num_faults"], 1, "{role}: {last}");
        let _ = std::fs::remove_file(&metrics);
        assert!(out.contains(SIGNAL_LINE), "{role}: {out}");
        let line = out
            .lines()
            .find(|l| l.ends_with(BAD_SYSCALL_LINE))
            .unwrap_or_else(|| panic!("{role}: no bad-syscall line: {out}"));
        assert!(
            threads
                .iter()
                .any(|t| line.contains(&format!("[anonymous-instance:{t}"))),
            "{role}: {line}"
        );
        assert!(!out.contains("survived getppid"), "{role}: {out}");
        let _ = std::fs::remove_file(&sock);
    }
}

#[test]
fn test_should_not_filter_with_no_seccomp() {
    if !kvm_or_skip() {
        return;
    }
    let cfg = config_file("hello");
    for role in ["vmm", "vcpu"] {
        let (code, out) = run_to_exit(
            &[
                "--no-seccomp",
                "--no-api",
                "--config-file",
                cfg.to_str().unwrap(),
            ],
            &[("SQUIB_TEST_BAD_SYSCALL", role)],
        );
        assert_eq!(code, Some(0), "{role}: {out}");
        assert!(out.contains("TEST ok hello"), "{role}: {out}");
        assert!(
            out.contains(&format!(
                "SQUIB_TEST_BAD_SYSCALL: the {role} thread survived getppid"
            )),
            "{role}: {out}"
        );
    }
}

/// Seccomp mode and filter count of every thread of `pid`, by thread name.
fn thread_seccomp(pid: u32) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let dir = task.expect("task").path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        let mode = status
            .lines()
            .find_map(|l| l.strip_prefix("Seccomp:"))
            .unwrap_or("?")
            .trim()
            .to_owned();
        out.push((comm.trim().to_owned(), mode));
    }
    out.sort();
    out
}

#[test]
fn test_should_filter_every_thread_of_a_running_microvm_unless_no_seccomp() {
    if !kvm_or_skip() {
        return;
    }
    let cfg = config_file("counter");
    for (flags, mode) in [(vec![], "2"), (vec!["--no-seccomp"], "0")] {
        let sock = tmp_path("api.sock");
        let mut args = flags.clone();
        args.extend(["--config-file", cfg.to_str().unwrap()]);
        let vm = Squib::spawn(&args, Some(&sock));
        let pid = vm.child.id();
        // Booted: the VMM thread installs its filter right after the build. Wait for
        // a tick, not the guest's first line: the VMM's "started" log lines share the
        // pipe and can split that line in two.
        let threads = wait_for(Duration::from_secs(90), || {
            let t = thread_seccomp(pid);
            let vcpus = t.iter().filter(|(n, _)| n.starts_with("fc_vcpu")).count();
            (vcpus == 2 && vm.output().contains("TICK 1")).then_some(t)
        })
        .unwrap_or_else(|| {
            panic!(
                "no running microVM: {:?}\n{}",
                thread_seccomp(pid),
                vm.output()
            )
        });
        std::thread::sleep(Duration::from_millis(200));
        let threads = if mode == "2" {
            thread_seccomp(pid)
        } else {
            threads
        };
        // KVM's own worker ("kvm-nx-lpage-recovery") lives in the process's task list but
        // never runs user code; its seccomp mode depends on which thread created it.
        for (name, m) in threads.iter().filter(|(n, _)| !n.starts_with("kvm-")) {
            assert_eq!(m, mode, "{flags:?}: thread {name}: {threads:?}");
        }
        for name in ["squib", "fc_api", "fc_vcpu 0", "fc_vcpu 1"] {
            assert!(
                threads.iter().any(|(n, _)| n == name),
                "{name} missing: {threads:?}"
            );
        }
        // The API still works under its filter.
        let (status, body) = vm.api("GET", "/vm/config", None);
        assert_eq!(status, 200, "{body}");
        let (status, _) = vm.api("PATCH", "/vm", Some(r#"{"state":"Paused"}"#));
        assert_eq!(status, 204);
    }
}

#[test]
fn test_should_load_a_firecracker_format_filter_file() {
    if !kvm_or_skip() {
        return;
    }
    let cfg = config_file("hello");
    let cfg = cfg.to_str().unwrap();
    let f = squib_filters();
    let (vmm, api, vcpu) = (
        f.get(ThreadCategory::Vmm),
        f.get(ThreadCategory::Api),
        f.get(ThreadCategory::Vcpu),
    );

    // squib's own lists, through a file: boots and exits 0.
    let file = filter_file(&[("vmm", vmm), ("api", api), ("vcpu", vcpu)]);
    let (code, out) = run_to_exit(
        &[
            "--seccomp-filter",
            file.to_str().unwrap(),
            "--no-api",
            "--config-file",
            cfg,
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("TEST ok hello"), "{out}");

    // The file's programs are the ones installed: a vCPU filter without ioctl traps KVM_RUN (16).
    let file = filter_file(&[("vmm", vmm), ("api", api), ("VCPU", api)]);
    let (code, out) = run_to_exit(
        &[
            "--seccomp-filter",
            file.to_str().unwrap(),
            "--no-api",
            "--config-file",
            cfg,
        ],
        &[],
    );
    assert_eq!(code, Some(148), "{out}");
    assert!(
        out.contains("Shutting down VM after intercepting a bad syscall (16)."),
        "{out}"
    );

    // Empty programs mean "no filter" for that category (Firecracker's semantics).
    let empty = Vec::new();
    let file = filter_file(&[("vmm", &empty), ("api", &empty), ("vcpu", &empty)]);
    let (code, out) = run_to_exit(
        &[
            "--seccomp-filter",
            file.to_str().unwrap(),
            "--no-api",
            "--config-file",
            cfg,
        ],
        &[("SQUIB_TEST_BAD_SYSCALL", "vcpu")],
    );
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn test_should_refuse_bad_seccomp_flags_like_firecracker() {
    let cases: [(Vec<&str>, i32, &str); 4] = [
        (
            vec!["--no-seccomp", "--seccomp-filter", "/x"],
            153,
            "Arguments parsing error: Argument 'seccomp-filter' cannot be used together with argument 'no-seccomp'.",
        ),
        (
            vec!["--seccomp-filter", "/nonexistent/filter.bpf"],
            1,
            "Seccomp error: Filter file open error: No such file or directory (os error 2)",
        ),
        (
            vec!["--seccomp-filter", "GARBAGE"],
            1,
            // bitcode's detail after the colon is "bitcode error" in release builds
            "Seccomp error: Filter deserialization failed: Bitcode deserialization failed: ",
        ),
        (
            vec!["--seccomp-filter", "MISSING_VCPU"],
            1,
            "Seccomp error: Missing thread category: vcpu",
        ),
    ];
    let garbage = tmp_path("garbage.bpf");
    std::fs::write(&garbage, b"garbage\n").unwrap();
    let empty = Vec::new();
    let missing = filter_file(&[("vmm", &empty), ("api", &empty)]);
    for (args, want_code, want_text) in cases {
        let args: Vec<&str> = args
            .into_iter()
            .map(|a| match a {
                "GARBAGE" => garbage.to_str().unwrap(),
                "MISSING_VCPU" => missing.to_str().unwrap(),
                a => a,
            })
            .collect();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_squib"))
            .args(&args)
            .args(["--api-sock", tmp_path("never.sock").to_str().unwrap()])
            .output()
            .expect("run squib");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(want_code), "{args:?}: {text}");
        assert!(text.contains(want_text), "{args:?}: {text}");
    }
}

/// The reference Firecracker reads squib's filter file (same binary format).
#[test]
fn test_should_write_filter_files_the_reference_firecracker_accepts() {
    let peer = common::repo_root().join("../shared/peers/firecracker");
    if !peer.exists() {
        println!("SKIPPED: no reference firecracker");
        return;
    }
    let f = squib_filters();
    let file = tmp_path("squib-filters.bpf");
    std::fs::write(&file, f.to_binary()).unwrap();
    let sock = tmp_path("fc.sock");
    let out = std::process::Command::new(&peer)
        .args(["--seccomp-filter", file.to_str().unwrap(), "--api-sock"])
        .arg(&sock)
        .args(["--no-api", "--config-file", "/nonexistent.json"])
        .output()
        .expect("run firecracker");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!text.contains("Seccomp error"), "{text}");
    // Firecracker went past filter loading (to the config file, which does not exist).
    assert!(text.contains("Running Firecracker"), "{text}");
}
