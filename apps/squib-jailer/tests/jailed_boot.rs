//! End to end: `squib-jailer` builds a jail, execs `squib` in it, and the test guest boots through
//! the API socket inside the chroot.
//!
//! Needs root, `/dev/kvm` and the cgroup hierarchy each case uses; otherwise each test prints one
//! `SKIPPED: <reason>` line and passes. `target/debug/squib` is built with `cargo build -p
//! squib-cli` (a no-op when fresh) and the test guest with `guest/build.sh`. A dynamically linked
//! `squib` gets its shared libraries (from `ldd`) copied into the chroot first; a static one needs
//! nothing.
//!
//! Verified from outside: the pid file, uid/gid 65534, cgroup membership and the limit, the
//! process's root is the chroot, its environment is empty and its argv starts with the jailer's
//! `--id`/start-time flags; then boot, `GET /` → Running, serial output, Ctrl-Alt-Del → exit,
//! and cleanup (cgroups removed, chroot deleted).

use std::{
    fs,
    io::{Read, Write},
    os::unix::{fs::MetadataExt, net::UnixStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

const ID: &str = "t1";
const NOBODY: &str = "65534";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo_root().join("target"), PathBuf::from)
}

/// `(squib, test guest)`, built once per test binary.
fn artifacts() -> &'static (PathBuf, PathBuf) {
    static A: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    A.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "squib-cli"])
            .current_dir(repo_root())
            .status()
            .expect("run cargo build -p squib-cli");
        assert!(status.success(), "cargo build -p squib-cli failed");
        let out = target_dir().join("guest");
        let status = Command::new("sh")
            .arg(repo_root().join("guest/build.sh"))
            .arg(&out)
            .stdout(Stdio::null())
            .status()
            .expect("run guest/build.sh");
        assert!(status.success(), "guest/build.sh failed");
        (
            target_dir().join("debug/squib"),
            out.join("squib-test-guest.elf"),
        )
    })
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

/// The first mount of filesystem type `fstype` whose options contain `opt` (any when empty).
fn mount_of(fstype: &str, opt: &str) -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 3 && f[2] == fstype && (opt.is_empty() || f[3].split(',').any(|o| o == opt)))
            .then(|| PathBuf::from(f[1]))
    })
}

/// Common gates; prints the SKIPPED line and returns false when one fails.
fn gates(extra: Result<(), String>) -> bool {
    let reason = if !is_root() {
        Some("not root (the jailer needs CAP_SYS_ADMIN, mknod, chown)".to_owned())
    } else if !Path::new("/dev/kvm").exists() {
        Some("no /dev/kvm".to_owned())
    } else {
        extra.err()
    };
    if let Some(r) = reason {
        println!("SKIPPED: {r}");
        return false;
    }
    true
}

fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn api(socket: &Path, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut s = UnixStream::connect(socket).expect("connect to the jailed API socket");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let req = match body {
        Some(b) => format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{b}",
            b.len()
        ),
        None => format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    };
    s.write_all(req.as_bytes()).expect("write");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Copy `squib`'s shared libraries (per `ldd`) into the chroot, readable by everyone.
fn provide_shared_libs(squib: &Path, root: &Path) {
    let Ok(out) = Command::new("ldd").arg(squib).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let lib = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(PathBuf::from);
        if let Some(lib) = lib {
            let dst = root.join(lib.strip_prefix("/").unwrap());
            fs::create_dir_all(dst.parent().unwrap()).unwrap();
            fs::copy(&lib, &dst).unwrap_or_else(|e| panic!("copy {}: {e}", lib.display()));
        }
    }
}

fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

/// What one case varies.
struct Case {
    tag: &'static str,
    /// The cgroup flags for the jailer.
    cgroup_args: Vec<String>,
    /// The microVM's cgroup directory, to check membership in.
    cgroup_dir: PathBuf,
    /// A limit file in it and its expected value.
    limit: Option<(&'static str, &'static str)>,
    /// Directories to rmdir afterwards, innermost first.
    cleanup_cgroups: Vec<PathBuf>,
    daemonize_and_new_pid_ns: bool,
}

/// Kills the microVM and removes its cgroups and chroot, even when an assertion failed.
struct Cleanup {
    base: PathBuf,
    pid: Option<u32>,
    child: Option<Child>,
    cgroups: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.filter(|p| alive(*p)) {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(pid) = self.pid {
            wait_for(Duration::from_secs(5), || (!alive(pid)).then_some(()));
        }
        for cg in &self.cgroups {
            // A dying process leaves its cgroup asynchronously.
            wait_for(Duration::from_secs(5), || fs::remove_dir(cg).ok());
        }
        let _ = fs::remove_dir_all(&self.base);
    }
}

fn boot_jailed(case: &Case) {
    let (squib, guest) = artifacts();
    let base = std::env::temp_dir().join(format!(
        "squib-jailer-e2e-{}-{}",
        std::process::id(),
        case.tag
    ));
    let _ = fs::remove_dir_all(&base);
    let root = base.join("squib").join(ID).join("root");
    fs::create_dir_all(&root).unwrap();
    let mut cleanup = Cleanup {
        base: base.clone(),
        pid: None,
        child: None,
        cgroups: case.cleanup_cgroups.clone(),
    };
    provide_shared_libs(squib, &root);
    fs::copy(guest, root.join("guest.elf")).unwrap();

    let log = base.join("jailer.log");
    let out = fs::File::create(&log).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_squib-jailer"));
    cmd.args(["--id", ID, "--exec-file"])
        .arg(squib)
        .args(["--uid", NOBODY, "--gid", NOBODY, "--chroot-base-dir"])
        .arg(&base)
        .args(&case.cgroup_args);
    if case.daemonize_and_new_pid_ns {
        cmd.args(["--daemonize", "--new-pid-ns"]);
    }
    cmd.args(["--", "--api-sock", "/run/api.sock"])
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    let mut child = cmd.spawn().expect("spawn squib-jailer");
    let log_text = || fs::read_to_string(&log).unwrap_or_default();

    if case.daemonize_and_new_pid_ns {
        let status = child.wait().unwrap();
        assert!(status.success(), "jailer: {status}\n{}", log_text());
    } else {
        cleanup.child = Some(child);
    }
    let pid_file = root.join("squib.pid");
    let pid: u32 = wait_for(Duration::from_secs(10), || {
        fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
    })
    .unwrap_or_else(|| panic!("no pid file\n{}", log_text()));
    cleanup.pid = Some(pid);
    if let Some(c) = &cleanup.child {
        // Without --new-pid-ns the jailer execs squib in place.
        assert_eq!(c.id(), pid);
    }
    let socket = root.join("run/api.sock");
    wait_for(Duration::from_secs(10), || {
        UnixStream::connect(&socket).ok()
    })
    .unwrap_or_else(|| panic!("API socket never came up\n{}", log_text()));

    // Seen from outside: identity, cgroup, root, environment, argv.
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    for key in ["Uid:", "Gid:"] {
        let line = status.lines().find(|l| l.starts_with(key)).unwrap();
        assert!(
            line.split_whitespace().skip(1).all(|v| v == NOBODY),
            "{line}"
        );
    }
    let procs = fs::read_to_string(case.cgroup_dir.join("cgroup.procs")).unwrap();
    assert!(
        procs.lines().any(|l| l == pid.to_string()),
        "pid {pid} not in {}: {procs}",
        case.cgroup_dir.display()
    );
    if let Some((file, value)) = case.limit {
        let got = fs::read_to_string(case.cgroup_dir.join(file)).unwrap();
        assert_eq!(got.trim(), value);
    }
    let proc_root = fs::metadata(format!("/proc/{pid}/root")).unwrap();
    let chroot = fs::metadata(&root).unwrap();
    assert_eq!(
        (proc_root.dev(), proc_root.ino()),
        (chroot.dev(), chroot.ino()),
        "the process's root is not the chroot"
    );
    assert_eq!(fs::read(format!("/proc/{pid}/environ")).unwrap(), b"");
    let cmdline = fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    let argv: Vec<&str> = cmdline.trim_end_matches('\0').split('\0').collect();
    assert_eq!(argv[..3], ["/squib", "--id", ID], "{argv:?}");
    assert_eq!(argv[3], "--start-time-us");
    assert_eq!(argv[5], "--start-time-cpu-us");
    assert_eq!(argv[7], "--parent-cpu-time-us");
    assert_eq!(argv[9..], ["--api-sock", "/run/api.sock"]);
    let owner = fs::metadata(root.join("dev/kvm")).unwrap();
    assert_eq!((owner.uid(), owner.gid()), (65534, 65534));

    // Boot the test guest through the jailed socket; paths are inside the jail.
    let put = |path: &str, body: &str| api(&socket, "PUT", path, Some(body));
    assert_eq!(
        put("/serial", r#"{"serial_out_path":"/serial.out"}"#).0,
        204
    );
    let bs = r#"{"kernel_image_path":"/guest.elf","boot_args":"console=ttyS0 reboot=k panic=1 squibtest=cad"}"#;
    assert_eq!(put("/boot-source", bs), (204, String::new()));
    assert_eq!(
        put("/machine-config", r#"{"vcpu_count":1,"mem_size_mib":128}"#).0,
        204
    );
    let (s, body) = put("/actions", r#"{"action_type":"InstanceStart"}"#);
    assert_eq!(s, 204, "{body}\n{}", log_text());
    let (s, body) = api(&socket, "GET", "/", None);
    assert_eq!(s, 200);
    assert!(body.contains(r#""state":"Running""#), "{body}");
    let serial = root.join("serial.out");
    let serial_text = || fs::read_to_string(&serial).unwrap_or_default();
    wait_for(Duration::from_secs(30), || {
        serial_text()
            .contains("TEST info cad waiting")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("guest never waited\n{}\n{}", serial_text(), log_text()));
    assert_eq!(
        put("/actions", r#"{"action_type":"SendCtrlAltDel"}"#).0,
        204
    );
    if let Some(c) = &mut cleanup.child {
        let code = wait_for(Duration::from_secs(30), || c.try_wait().unwrap());
        assert_eq!(code.and_then(|s| s.code()), Some(0), "{}", log_text());
    } else {
        wait_for(Duration::from_secs(30), || (!alive(pid)).then_some(()))
            .expect("squib did not exit after Ctrl-Alt-Del");
    }
    assert!(
        serial_text().contains("TEST ok cad scancodes=4"),
        "{}",
        serial_text()
    );
    drop(cleanup);
    assert!(!base.exists(), "chroot not removed");
    for cg in &case.cleanup_cgroups {
        assert!(!cg.exists(), "cgroup {} not removed", cg.display());
    }
}

/// The calling process's own cgroup path in the v1 hierarchy of `controller`.
fn own_v1_cgroup(controller: &str) -> Option<String> {
    fs::read_to_string("/proc/self/cgroup")
        .ok()?
        .lines()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            ctrls
                .split(',')
                .any(|c| c == controller)
                .then(|| path.trim_start_matches('/').to_owned())
        })
}

#[test]
fn test_should_boot_jailed_squib_with_cgroup_v2_memory_max() {
    let v2 = mount_of("cgroup2", "");
    let memory = v2.as_ref().is_some_and(|m| {
        fs::read_to_string(m.join("cgroup.controllers"))
            .unwrap_or_default()
            .split_whitespace()
            .any(|c| c == "memory")
    });
    let gate = match &v2 {
        None => Err("no cgroup v2 hierarchy mounted".to_owned()),
        Some(m) if !memory => Err(format!(
            "the cgroup v2 hierarchy at {} offers no memory controller (bound to v1 on this host)",
            m.display()
        )),
        Some(_) => Ok(()),
    };
    if !gates(gate) {
        return;
    }
    let v2 = v2.unwrap();
    let parent = format!("squib-e2e-{}", std::process::id());
    let dir = v2.join(&parent).join(ID);
    boot_jailed(&Case {
        tag: "v2",
        cgroup_args: [
            "--cgroup-version",
            "2",
            "--cgroup",
            "memory.max=268435456",
            "--parent-cgroup",
            &parent,
        ]
        .map(str::to_owned)
        .to_vec(),
        cgroup_dir: dir.clone(),
        limit: Some(("memory.max", "268435456")),
        cleanup_cgroups: vec![dir, v2.join(&parent)],
        daemonize_and_new_pid_ns: false,
    });
}

#[test]
fn test_should_boot_jailed_squib_with_cgroup_v1_memory_limit() {
    let mount = mount_of("cgroup", "memory");
    let own = own_v1_cgroup("memory");
    let gate = match (&mount, &own) {
        (Some(_), Some(_)) => Ok(()),
        _ => Err("no cgroup v1 memory hierarchy".to_owned()),
    };
    if !gates(gate) {
        return;
    }
    // Nest under our own memory cgroup, so the microVM stays within the limits we run under.
    let own = own.unwrap();
    let parent = Path::new(&own).join(format!("squib-e2e-{}", std::process::id()));
    let parent_dir = mount.unwrap().join(&parent);
    let dir = parent_dir.join(ID);
    boot_jailed(&Case {
        tag: "v1",
        cgroup_args: vec![
            "--cgroup-version".into(),
            "1".into(),
            "--cgroup".into(),
            "memory.limit_in_bytes=268435456".into(),
            "--parent-cgroup".into(),
            parent.to_str().unwrap().to_owned(),
        ],
        cgroup_dir: dir.clone(),
        limit: Some(("memory.limit_in_bytes", "268435456")),
        cleanup_cgroups: vec![dir, parent_dir],
        daemonize_and_new_pid_ns: false,
    });
}

#[test]
fn test_should_daemonize_into_new_pid_ns_and_join_existing_v2_parent_cgroup() {
    let v2 = mount_of("cgroup2", "");
    if !gates(
        v2.clone()
            .ok_or_else(|| "no cgroup v2 hierarchy mounted".to_owned())
            .map(drop),
    ) {
        return;
    }
    // Firecracker's rule: v2, no --cgroup, an existing --parent-cgroup → the process joins it.
    let parent = format!("squib-e2e-{}-join", std::process::id());
    let dir = v2.unwrap().join(&parent);
    fs::create_dir_all(&dir).unwrap();
    boot_jailed(&Case {
        tag: "join",
        cgroup_args: ["--cgroup-version", "2", "--parent-cgroup", &parent]
            .map(str::to_owned)
            .to_vec(),
        cgroup_dir: dir.clone(),
        limit: None,
        cleanup_cgroups: vec![dir],
        daemonize_and_new_pid_ns: true,
    });
}

#[test]
fn test_should_fail_like_firecracker_on_bad_arguments() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_squib-jailer"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _, err) = run(&["--id", "a"]);
    assert_eq!(code, Some(1));
    assert_eq!(
        err,
        "Failed to parse arguments: Argument 'exec-file' required, but not found.\n\
         Error: ArgumentParsing(MissingArgument(\"exec-file\"))\n"
    );
    let (code, _, err) = run(&[
        "--id",
        "a:b",
        "--exec-file",
        "/x",
        "--uid",
        "0",
        "--gid",
        "0",
    ]);
    assert_eq!(code, Some(1));
    assert!(
        err.starts_with("Invalid instance ID: Invalid char (:) at position 1\n"),
        "{err}"
    );
    let (code, out, _) = run(&["--version"]);
    assert_eq!((code, out.as_str()), (Some(0), "Jailer v1.17.0-dev\n\n"));
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("Jailer v1.17.0-dev\n\nrequired arguments:\n"));
    assert!(out.ends_with(
        "Any arguments after the -- separator will be supplied to the jailed binary.\n\n"
    ));
}
