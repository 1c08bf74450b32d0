//! virtio-blk throughput as the test guest sees it, per I/O engine.
//!
//! The guest (`squibtest=blk-throughput`, one request in flight) reads `MIB` MiB sequentially in
//! 64 KiB requests, then `OPS` random 4 KiB reads. The host timestamps the guest's
//! `BLK-T0`/`BLK-T1` console markers (polling the serial file every 1 ms) and prints MiB/s and
//! IOPS, with squib's default seccomp filters and with `--no-seccomp`
//! (`SQUIB_BENCH_SECCOMP=on|off|both`, default both).
//! Run: `cargo bench -p squib-cli --bench virtio_blk` (needs /dev/kvm).

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

const MIB: u64 = 32;
const OPS: u64 = 2048;
const RUNS: usize = 3;

fn api(sock: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = UnixStream::connect(sock).expect("connect");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (
        code,
        out.split_once("\r\n\r\n")
            .map(|x| x.1.to_owned())
            .unwrap_or_default(),
    )
}

fn wait_marker(serial: &Path, marker: &str) -> Instant {
    let start = Instant::now();
    loop {
        if std::fs::read_to_string(serial)
            .unwrap_or_default()
            .contains(marker)
        {
            return Instant::now();
        }
        assert!(start.elapsed() < Duration::from_secs(300), "no {marker}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// One run: Ok((MiB/s, IOPS)) or Err(the API's refusal).
fn run(
    engine: &str,
    flags: &[&str],
    guest: &Path,
    disk: &Path,
    i: usize,
) -> Result<(f64, f64), String> {
    let tmp = std::env::temp_dir();
    let sock = tmp.join(format!(
        "squib-blkbench-{}-{engine}-{i}.sock",
        std::process::id()
    ));
    let serial = tmp.join(format!(
        "squib-blkbench-{}-{engine}-{i}.serial",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&serial);
    let mut child = Command::new(env!("CARGO_BIN_EXE_squib"))
        .args(["--api-sock", sock.to_str().expect("utf8")])
        .args(flags)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    while UnixStream::connect(&sock).is_err() {
        std::thread::sleep(Duration::from_millis(1));
    }
    let drive = format!(
        r#"{{"drive_id":"d0","path_on_host":"{}","is_root_device":false,"is_read_only":true,"io_engine":"{engine}"}}"#,
        disk.display()
    );
    let result = (|| {
        let (code, body) = api(&sock, "PUT", "/drives/d0", &drive);
        if code != 204 {
            return Err(body);
        }
        api(
            &sock,
            "PUT",
            "/serial",
            &format!(r#"{{"serial_out_path":"{}"}}"#, serial.display()),
        );
        let bs = format!(
            r#"{{"kernel_image_path":"{}","boot_args":"console=ttyS0 squibtest=blk-throughput squibtest.mib={MIB} squibtest.iops_ops={OPS}"}}"#,
            guest.display()
        );
        api(&sock, "PUT", "/boot-source", &bs);
        api(
            &sock,
            "PUT",
            "/actions",
            r#"{"action_type":"InstanceStart"}"#,
        );
        let (s0, s1) = (
            wait_marker(&serial, "BLK-T0 seq"),
            wait_marker(&serial, "BLK-T1 seq"),
        );
        let (r0, r1) = (
            wait_marker(&serial, "BLK-T0 rand"),
            wait_marker(&serial, "BLK-T1 rand"),
        );
        let mib = f64::from(u32::try_from(MIB).unwrap_or(0));
        let ops = f64::from(u32::try_from(OPS).unwrap_or(0));
        Ok((mib / (s1 - s0).as_secs_f64(), ops / (r1 - r0).as_secs_f64()))
    })();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&sock);
    let _ = std::fs::remove_file(&serial);
    result
}

fn main() {
    if !Path::new("/dev/kvm").exists() {
        println!("SKIPPED: no /dev/kvm");
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = repo.join("target/guest");
    let built = Command::new("sh")
        .arg(repo.join("guest/build.sh"))
        .arg(&out)
        .stdout(Stdio::null())
        .status();
    assert!(built.is_ok_and(|s| s.success()), "guest build failed");
    let guest = out.join("squib-test-guest.elf");
    let disk = std::env::temp_dir().join(format!("squib-blkbench-{}.img", std::process::id()));
    std::fs::write(
        &disk,
        vec![0x5au8; usize::try_from(MIB + 1).unwrap_or(0) << 20],
    )
    .expect("disk");

    println!(
        "virtio-blk as seen by the test guest ({MIB} MiB sequential in 64 KiB requests, {OPS} random 4 KiB reads, queue depth 1, {RUNS} runs)"
    );
    let on: (&str, &[&str]) = ("on", &[]);
    let off: (&str, &[&str]) = ("off", &["--no-seccomp"]);
    let modes = match std::env::var("SQUIB_BENCH_SECCOMP").as_deref() {
        Ok("on") => vec![on],
        Ok("off") => vec![off],
        _ => vec![on, off],
    };
    println!(
        "{:<8} {:<8} {:>14} {:>14}",
        "engine", "seccomp", "seq MiB/s", "4K rand IOPS"
    );
    for (engine, (mode, flags)) in ["Sync", "Async"]
        .into_iter()
        .flat_map(|e| modes.iter().map(move |m| (e, *m)))
    {
        let mut rows = Vec::new();
        for i in 0..RUNS {
            match run(engine, flags, &guest, &disk, i) {
                Ok(r) => rows.push(r),
                Err(refusal) => {
                    println!("{engine:<8} refused by the API: {refusal}");
                    break;
                }
            }
        }
        if !rows.is_empty() {
            let n = f64::from(u32::try_from(rows.len()).unwrap_or(1));
            let (mib, iops) = rows.iter().fold((0.0, 0.0), |a, r| (a.0 + r.0, a.1 + r.1));
            println!("{engine:<8} {mode:<8} {:>14.1} {:>14.0}", mib / n, iops / n);
        }
    }
    let _ = std::fs::remove_file(&disk);
}
