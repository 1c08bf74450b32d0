//! The harness the side-by-side benches (`net`, `vsock`) share: a VMM process (squib or the
//! reference Firecracker) configured through a raw-HTTP client over its API socket, the test
//! guest's console polled for result lines, rounds that alternate between the VMMs, medians,
//! and the table with the squib/Firecracker ratio.
//!
//! Threading: used from the bench's main thread (or the thread that entered its network
//! namespace); nothing here is shared between threads.

#![allow(dead_code)]

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub type Res<T> = Result<T, String>;

/// One API request through the tests' client (`common::try_api_request`, which frames the answer
/// by `Content-Length`: Firecracker keeps the connection open); `Ok` on 204.
pub fn api(sock: &Path, method: &str, path: &str, body: &str) -> Res<()> {
    match crate::common::try_api_request(sock, method, path, Some(body)) {
        Ok((204, _)) => Ok(()),
        Ok((status, text)) => Err(format!("{method} {path}: {status} {text}")),
        Err(e) => Err(format!("{method} {path}: {e}")),
    }
}

/// `vmm --api-sock <api_sock> --no-seccomp`, output discarded; returns once the socket accepts
/// connections (within 10 s, else the process is killed and an error returned).
pub fn spawn_vmm(vmm: &Path, api_sock: &Path) -> Res<Child> {
    let mut child = Command::new(vmm)
        .args(["--api-sock", &api_sock.to_string_lossy(), "--no-seccomp"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", vmm.display()))?;
    let start = Instant::now();
    while UnixStream::connect(api_sock).is_err() {
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            return Err("API socket never came up".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(child)
}

/// Polls the console file `serial` every millisecond until it holds `needle`; returns its text
/// and the moment the needle was seen. Fails on the guest's `TEST fail` or after `limit`.
pub fn wait_console(serial: &Path, needle: &str, limit: Duration) -> Res<(String, Instant)> {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(serial).unwrap_or_default();
        if text.contains(needle) {
            return Ok((text, Instant::now()));
        }
        if text.contains("TEST fail") || start.elapsed() > limit {
            return Err(format!("no `{needle}`:\n{text}"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

pub fn median(v: &[f64]) -> f64 {
    percentile(v, 50)
}

/// The `p`-th percentile (nearest rank below; the median for 50).
pub fn percentile(v: &[f64], p: usize) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let i = (v.len() * p / 100).min(v.len().saturating_sub(1));
    v.get(i).copied().unwrap_or(f64::NAN)
}

/// `lo-hi` of `v`, no decimals (a per-round range next to a median).
pub fn range(v: &[f64]) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{lo:.0}-{hi:.0}")
}

/// The VMMs compared: squib, then the reference Firecracker when `fc` is `Some` (else the loud
/// `SKIPPED:` line about its column). Each comes with its own samples.
pub fn vmms<S: Default>(fc: Option<PathBuf>) -> Vec<(&'static str, PathBuf, S)> {
    let mut vmms = vec![(
        "squib",
        PathBuf::from(env!("CARGO_BIN_EXE_squib")),
        S::default(),
    )];
    match fc {
        Some(fc) => vmms.push(("firecracker", fc, S::default())),
        None => println!("SKIPPED: no reference firecracker (the firecracker column)"),
    }
    vmms
}

/// Runs `runs` rounds (`$SQUIB_BENCH_RUNS` overrides the count), each one `round` per VMM in
/// turn, so load from other work on the host hits both alike. Returns the round count.
pub fn alternate<S>(
    vmms: &mut [(&'static str, PathBuf, S)],
    runs: usize,
    mut round: impl FnMut(&str, &Path, &mut S),
) -> usize {
    let runs = std::env::var("SQUIB_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(runs);
    for _ in 0..runs {
        for (name, bin, samples) in vmms.iter_mut() {
            round(name, bin, samples);
        }
    }
    runs
}

/// The host's `/proc/loadavg`, trimmed (printed with each table).
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// One figure: the median and, when the table shows them, its per-round range.
pub type Cell = (f64, String);

/// Prints the table: a metric column `width` wide, squib, Firecracker (`-` without it) and the
/// squib/fc ratio; with `ranges`, each figure is followed by its range column.
pub fn print_table(
    width: usize,
    metric: &str,
    names: &[String],
    squib: &[Cell],
    fc: Option<&[Cell]>,
    ranges: bool,
) {
    let range_col = |r: &str| {
        if ranges {
            format!(" {r:>11}")
        } else {
            String::new()
        }
    };
    println!(
        "{metric:<width$} {:>11}{} {:>11}{} {:>9}",
        "squib",
        range_col(""),
        "firecracker",
        range_col(""),
        "squib/fc"
    );
    for (i, name) in names.iter().enumerate() {
        let (s, s_range) = &squib[i];
        let (f, f_range, ratio) = match fc {
            Some(fc) => {
                let (f, f_range) = &fc[i];
                (format!("{f:.2}"), f_range.as_str(), format!("{:.2}", s / f))
            }
            None => ("-".to_owned(), "", "-".to_owned()),
        };
        println!(
            "{name:<width$} {s:>11.2}{} {f:>11}{} {ratio:>9}",
            range_col(s_range),
            range_col(f_range)
        );
    }
}
