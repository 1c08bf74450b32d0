//! End-to-end: the runtime logger (`PUT /logger`) and the start-up ordering of `--config-file`
//! with an API socket.

mod common;

use std::{
    io::{BufRead, BufReader, Read, Write},
    os::unix::net::UnixStream,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{Squib, kvm_or_skip, test_guest, tmp_path, wait_for};
use serde_json::json;

fn put(vm: &Squib, path: &str, body: &serde_json::Value) -> (u16, String) {
    vm.api("PUT", path, Some(&body.to_string()))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `<RFC 3339 ns> [<id>:<thread>` — the fixed prefix of every Firecracker log line.
fn has_firecracker_prefix(line: &str, id: &str, thread: &str) -> bool {
    let Some((ts, rest)) = line.split_once(' ') else {
        return false;
    };
    let b = ts.as_bytes();
    ts.len() == 29
        && b[4] == b'-'
        && b[10] == b'T'
        && b[19] == b'.'
        && ts[20..].bytes().all(|c| c.is_ascii_digit())
        && rest.starts_with(&format!("[{id}:{thread}"))
}

#[test]
fn test_put_logger_switches_destination_level_and_format() {
    let socket = tmp_path("log.sock");
    let (first, second) = (tmp_path("first.log"), tmp_path("second.log"));
    let vm = Squib::spawn(&["--log-path", first.to_str().unwrap()], Some(&socket));
    // The socket accepts (into the backlog) right after bind; the lines follow at once.
    let started = wait_for(Duration::from_secs(10), || {
        read(&first).contains("] API server started.").then_some(())
    });
    assert!(started.is_some(), "{}", read(&first));
    let startup = read(&first);
    for line in [
        "] Running Firecracker v1.17.0-dev".to_owned(),
        format!("] Listening on API socket ({socket:?})."),
        "] API server started.".to_owned(),
    ] {
        assert!(startup.contains(&line), "{line}: {startup}");
    }
    assert_eq!(vm.api("GET", "/", None).0, 200);
    assert!(
        read(&first).contains("] The API server received a Get request on \"/\"."),
        "{}",
        read(&first)
    );

    let (s, body) = put(
        &vm,
        "/logger",
        &json!({"log_path": second, "level": "Debug", "show_level": true,
                "show_log_origin": true, "module": "squib"}),
    );
    assert_eq!(s, 204, "{body}");
    let before = read(&first);
    let (s, _) = put(
        &vm,
        "/machine-config",
        &json!({"vcpu_count": 1, "mem_size_mib": 128}),
    );
    assert_eq!(s, 204);
    assert_eq!(
        read(&first),
        before,
        "nothing more goes to the old destination"
    );

    let text = read(&second);
    let received = text
        .lines()
        .find(|l| l.contains("The API server received a Put request on \"/machine-config\""))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        has_firecracker_prefix(received, "anonymous-instance", "fc_api"),
        "{received}"
    );
    // [id:thread:LEVEL:file:line] with the body, as Firecracker prints it.
    let tag = &received[received.find('[').unwrap()..=received.find(']').unwrap()];
    let fields: Vec<&str> = tag.trim_matches(['[', ']']).split(':').collect();
    assert_eq!(
        fields[..3],
        ["anonymous-instance", "fc_api", "INFO"],
        "{received}"
    );
    assert!(
        std::path::Path::new(fields[3])
            .extension()
            .is_some_and(|e| e == "rs")
            && fields[4].parse::<u32>().is_ok(),
        "{received}"
    );
    assert!(
        received.ends_with(r#"with body "{\"vcpu_count\":1,\"mem_size_mib\":128}"."#),
        "{received}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains(":DEBUG:") && l.contains("Total previous API call duration: ")),
        "Debug lines are on: {text}"
    );

    // Absent fields keep their values, an absent level resets to Info; Warning filters Info.
    let (s, _) = put(&vm, "/logger", &json!({"level": "Warning"}));
    assert_eq!(s, 204);
    let before = read(&second);
    assert_eq!(vm.api("GET", "/machine-config", None).0, 200);
    let (s, body) = put(
        &vm,
        "/logger",
        &json!({"log_path": "/nonexistent-dir/x.log"}),
    );
    assert_eq!(
        (s, body.as_str()),
        (
            400,
            r#"{"fault_message":"Logger error: Failed to open target file: No such file or directory (os error 2)"}"#
        )
    );
    assert_eq!(read(&second), before, "Info lines are filtered at Warning");
    let (s, _) = put(&vm, "/logger", &json!({"level": "bogus"}));
    assert_eq!(s, 400);
}

#[test]
fn test_put_logger_is_refused_after_boot_and_fifo_destinations_work() {
    if !kvm_or_skip() {
        return;
    }
    let socket = tmp_path("logfifo.sock");
    let fifo = tmp_path("log.fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let serial = tmp_path("logfifo.serial");
    let vm = Squib::spawn(&[], Some(&socket));
    assert_eq!(
        put(
            &vm,
            "/logger",
            &json!({"log_path": fifo, "show_level": true})
        )
        .0,
        204
    );
    let reader = {
        let fifo = fifo.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let f = std::fs::File::open(fifo).expect("open fifo");
            for line in BufReader::new(f).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        rx
    };
    assert_eq!(
        put(&vm, "/serial", &json!({"serial_out_path": serial})).0,
        204
    );
    let bs = json!({"kernel_image_path": test_guest(),
                    "boot_args": "console=ttyS0 reboot=k panic=1 squibtest=hello squibtest.hold=1"});
    assert_eq!(put(&vm, "/boot-source", &bs).0, 204);
    assert_eq!(
        put(&vm, "/actions", &json!({"action_type": "InstanceStart"})).0,
        204
    );
    let started = wait_for(Duration::from_secs(10), || {
        reader
            .try_iter()
            .find(|l| l.contains(":INFO] Successfully started microvm."))
    });
    assert!(started.is_some(), "the FIFO carries the log");
    let (s, body) = put(&vm, "/logger", &json!({"level": "Debug"}));
    assert_eq!(
        (s, body.as_str()),
        (
            400,
            r#"{"fault_message":"The requested operation is not supported after starting the microVM."}"#
        )
    );
    drop(vm);
    let _ = std::fs::remove_file(&fifo);
}

/// One `GET /` on a fresh connection, answered by its framing. `None` while nothing listens.
fn get_state(socket: &Path) -> Option<String> {
    let mut s = UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).ok()? != 1 {
            return None;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))?
        .trim()
        .parse()
        .ok()?;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    Some(v["state"].as_str()?.to_owned())
}

#[test]
fn test_config_file_boot_is_complete_before_the_first_api_answer() {
    if !kvm_or_skip() {
        return;
    }
    let cfg = tmp_path("race.json");
    let disk = tmp_path("race.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let doc = json!({
        "boot-source": {"kernel_image_path": test_guest(),
                        "boot_args": "console=ttyS0 reboot=k panic=1 squibtest=hello squibtest.hold=1"},
        "drives": [{"drive_id": "rootfs", "path_on_host": disk, "is_root_device": true,
                    "is_read_only": true}],
        "machine-config": {"vcpu_count": 2, "mem_size_mib": 256},
        "entropy": {},
    });
    std::fs::write(&cfg, doc.to_string()).unwrap();
    for round in 0..5 {
        let socket = tmp_path("race.sock");
        let mut child = Command::new(env!("CARGO_BIN_EXE_squib"))
            .args(["--config-file", cfg.to_str().unwrap(), "--api-sock"])
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn squib");
        // A client that connects as soon as the socket accepts connections.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut answers = Vec::new();
        while answers.len() < 3 && Instant::now() < deadline {
            if let Some(state) = get_state(&socket) {
                answers.push(state);
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_file(&socket);
        assert_eq!(
            answers, ["Running"; 3],
            "round {round}: never `Not started`"
        );
    }
}
