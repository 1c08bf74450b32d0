//! Shared helpers for squib's end-to-end tests: the KVM gate, the test guest build, Linux guest
//! assets, a spawned `squib` process and a blocking raw-HTTP client over its API socket;
//! [`linux`]: the Linux guest's command line and shell console.

#![allow(dead_code)]

pub mod linux;

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

/// `true` when /dev/kvm exists; otherwise prints the one loud SKIPPED line.
pub fn kvm_or_skip() -> bool {
    if Path::new("/dev/kvm").exists() {
        return true;
    }
    println!("SKIPPED: no /dev/kvm");
    false
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// Build the freestanding test guest once per test binary (guest/build.sh) and return its path.
pub fn test_guest() -> PathBuf {
    static GUEST: OnceLock<PathBuf> = OnceLock::new();
    GUEST
        .get_or_init(|| {
            let root = repo_root();
            let out = root.join("target/guest");
            let status = Command::new("sh")
                .arg(root.join("guest/build.sh"))
                .arg(&out)
                .stdout(Stdio::null())
                .status()
                .expect("run guest/build.sh");
            assert!(status.success(), "guest/build.sh failed");
            out.join("squib-test-guest.elf")
        })
        .clone()
}

/// Linux guest assets: $SQUIB_GUEST_DIR, then ../shared/guest, then ~/.cache/squib-guest/out.
pub fn linux_guest_dir() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(d) = std::env::var("SQUIB_GUEST_DIR") {
        candidates.push(("$SQUIB_GUEST_DIR", PathBuf::from(d)));
    }
    candidates.push(("../shared/guest", repo_root().join("../shared/guest")));
    if let Ok(home) = std::env::var("HOME") {
        candidates.push((
            "the project cache",
            PathBuf::from(home).join(".cache/squib-guest/out"),
        ));
    }
    for (what, dir) in candidates {
        if dir.join("vmlinux").exists() {
            println!("Linux guest assets: using {what} ({})", dir.display());
            return Some(dir);
        }
    }
    println!(
        "SKIPPED: no Linux guest assets (set SQUIB_GUEST_DIR or build them: ../shared/guest/make-guest.sh ~/.cache/squib-guest/out)"
    );
    None
}

/// Extra kernel arguments a kvm_pvm host needs (see guest-notes.md).
pub fn pvm_args() -> &'static str {
    if Path::new("/sys/module/kvm_pvm").exists() {
        " noxsave nofsgsbase clearcpuid=popcnt,smap,rdrand,rdseed,invpcid,pcid,rdpid percpu_alloc=page"
    } else {
        ""
    }
}

pub fn tmp_path(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("squib-e2e-{}-{tag}-{n}", std::process::id()))
}

/// Where the reference Firecracker is looked for: `$SQUIB_REFERENCE_FIRECRACKER`, else
/// `../shared/peers/firecracker`.
fn reference_firecracker_candidate() -> PathBuf {
    std::env::var_os("SQUIB_REFERENCE_FIRECRACKER").map_or_else(
        || repo_root().join("../shared/peers/firecracker"),
        PathBuf::from,
    )
}

/// The reference Firecracker, if present; silent (see [`reference_firecracker`]).
pub fn reference_firecracker_path() -> Option<PathBuf> {
    let p = reference_firecracker_candidate();
    p.exists().then_some(p)
}

/// [`reference_firecracker_path`], or the loud SKIPPED line.
pub fn reference_firecracker() -> Option<PathBuf> {
    let p = reference_firecracker_path();
    if p.is_none() {
        println!(
            "SKIPPED: no reference firecracker at {}",
            reference_firecracker_candidate().display()
        );
    }
    p
}

/// `program` (squib or Firecracker) with `extra` arguments and an API socket on a fresh path,
/// output to a file; killed on drop.
pub fn spawn_vmm(program: &Path, extra: &[&str]) -> Squib {
    let mut cmd = Command::new(program);
    cmd.args(extra);
    Squib::spawn_command(cmd, Some(&tmp_path("vmm.sock")), Stdio::null())
}

/// A running `squib` process; killed on drop.
pub struct Squib {
    pub child: Child,
    pub socket: Option<PathBuf>,
    pub stdout_path: PathBuf,
}

impl Squib {
    /// Spawn `squib` with `args`, stdout+stderr to a file.
    pub fn spawn(args: &[&str], socket: Option<&Path>) -> Self {
        Self::spawn_env(args, socket, &[])
    }

    /// [`Squib::spawn`] with a piped stdin (the guest console's input).
    pub fn spawn_with_stdin(args: &[&str]) -> (Self, std::process::ChildStdin) {
        let mut me = Self::spawn_inner(args, None, &[], Stdio::piped());
        let stdin = me.child.stdin.take().expect("piped stdin");
        (me, stdin)
    }

    /// [`Squib::spawn`] with an API socket and a piped stdin (the guest console's input).
    pub fn spawn_api_with_stdin(args: &[&str], socket: &Path) -> (Self, std::process::ChildStdin) {
        let mut me = Self::spawn_inner(args, Some(socket), &[], Stdio::piped());
        let stdin = me.child.stdin.take().expect("piped stdin");
        (me, stdin)
    }

    /// [`Squib::spawn`] with extra environment variables for the child.
    pub fn spawn_env(args: &[&str], socket: Option<&Path>, env: &[(&str, &str)]) -> Self {
        Self::spawn_inner(args, socket, env, Stdio::null())
    }

    fn spawn_inner(
        args: &[&str],
        socket: Option<&Path>,
        env: &[(&str, &str)],
        stdin: Stdio,
    ) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_squib"));
        cmd.args(args).envs(env.iter().copied());
        Self::spawn_command(cmd, socket, stdin)
    }

    /// Spawn `cmd` (squib, the reference Firecracker, or either under a wrapper such as
    /// `setpriv`) with `--api-sock socket` when given, stdout+stderr to a file; waits for the
    /// socket to accept connections.
    pub fn spawn_command(mut cmd: Command, socket: Option<&Path>, stdin: Stdio) -> Self {
        let stdout_path = tmp_path("stdout");
        let out = std::fs::File::create(&stdout_path).expect("stdout file");
        let err = out.try_clone().expect("clone");
        cmd.stdout(out).stderr(err).stdin(stdin);
        if let Some(s) = socket {
            cmd.arg("--api-sock").arg(s);
        }
        let child = cmd.spawn().expect("spawn the VMM");
        let me = Self {
            child,
            socket: socket.map(Path::to_path_buf),
            stdout_path,
        };
        if let Some(s) = socket {
            let start = Instant::now();
            while UnixStream::connect(s).is_err() {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "API socket never came up: {}",
                    me.output()
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        me
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// Wait for exit (up to `limit`); returns the exit code.
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            if start.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Send one request on a fresh connection; returns (status, body).
    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let socket = self.socket.as_ref().expect("API socket");
        api_request(socket, method, path, body)
    }
}

impl Drop for Squib {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(s) = &self.socket {
            let _ = std::fs::remove_file(s);
        }
    }
}

pub fn api_request(socket: &Path, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    try_api_request(socket, method, path, body)
        .unwrap_or_else(|e| panic!("{method} {path} on {}: {e}", socket.display()))
}

/// [`api_request`] that reports a failed connect or write instead of panicking (benches).
pub fn try_api_request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let req = match body {
        Some(b) => format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
            b.len()
        ),
        None => format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    };
    s.write_all(req.as_bytes())?;
    Ok(read_response(&mut s))
}

/// One HTTP response from `s`: the status and the body, framed by `Content-Length` (Firecracker
/// keeps the connection open after answering, whatever `Connection: close` asks, so reading to
/// EOF would wait for the read timeout). Without a length, reads to EOF.
fn read_response(s: &mut UnixStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break Some(i + 4);
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end.unwrap_or(buf.len())]).into_owned();
    let status: u16 = head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let Some(head_end) = head_end else {
        return (status, String::new());
    };
    let length = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())
            .flatten()
    });
    let no_body = status == 204 || status == 304 || (100..200).contains(&status);
    match (no_body, length) {
        (true, _) => {}
        (false, Some(len)) => {
            while buf.len() < head_end + len {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        }
        (false, None) => {
            let _ = s.read_to_end(&mut buf);
        }
    }
    let body = String::from_utf8_lossy(&buf[head_end..]).into_owned();
    (status, body)
}

/// Poll `f` until it returns Some or `limit` passes.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
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

/// FNV-1a 64 over `bytes` (the test guest's checksum).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A file of `len` pseudo-random bytes (deterministic per `seed`).
pub fn random_file(tag: &str, len: usize, seed: u64) -> PathBuf {
    let mut x = seed | 1;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24).to_le_bytes()[0]
        })
        .collect();
    let p = tmp_path(tag);
    std::fs::write(&p, bytes).expect("write disk");
    p
}

/// `PUT /metrics` to a fresh file; returns its path (read it with [`metrics_total`]).
#[allow(dead_code)]
pub fn configure_metrics(vm: &Squib) -> PathBuf {
    let path = tmp_path("metrics.json");
    let body = serde_json::json!({ "metrics_path": path }).to_string();
    let (s, b) = vm.api("PUT", "/metrics", Some(&body));
    assert_eq!(s, 204, "{b}");
    path
}

/// `PUT /actions` `FlushMetrics`.
#[allow(dead_code)]
pub fn flush_metrics(vm: &Squib) {
    let (s, b) = vm.api("PUT", "/actions", Some(r#"{"action_type":"FlushMetrics"}"#));
    assert_eq!(s, 204, "{b}");
}

/// The sum of `group.key` over every line in the metrics file (counters are deltas, so the sum
/// is the total since the sink was configured).
#[allow(dead_code)]
pub fn metrics_total(path: &Path, group: &str, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("metrics line is JSON"))
        .map(|v| v[group][key].as_u64().expect("metric is a number"))
        .sum()
}
