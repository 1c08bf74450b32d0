//! Host ends of the vsock checks: Firecracker's hybrid protocol on `uds_path`
//! (`CONNECT <port>\n` → `OK <host port>\n`) and listeners at `<uds_path>_<port>` for
//! guest-initiated connections.
//!
//! Threading: each listener runs on its own thread until it has served what it was started for.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Connects to `uds` and asks for guest port `port`; returns the stream and how long it took
/// from `connect(2)` to the `OK` line (the connection setup latency host→guest).
pub fn connect(uds: &Path, port: u32) -> (UnixStream, Duration) {
    let t0 = Instant::now();
    let mut s = UnixStream::connect(uds).expect("connect to uds_path");
    s.set_read_timeout(Some(Duration::from_secs(300)))
        .expect("timeout");
    s.write_all(format!("CONNECT {port}\n").as_bytes())
        .expect("CONNECT");
    let line = read_line(&mut s);
    let took = t0.elapsed();
    assert!(
        line.starts_with("OK ") && line.ends_with('\n'),
        "CONNECT {port} answered {line:?}"
    );
    (s, took)
}

/// One `\n`-terminated line (or what came before EOF).
pub fn read_line(s: &mut UnixStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.last() != Some(&b'\n') && line.len() < 4096 {
        match s.read(&mut b) {
            Ok(0) | Err(_) => break,
            Ok(_) => line.push(b[0]),
        }
    }
    String::from_utf8_lossy(&line).into_owned()
}

/// Writes `data` while reading as many bytes back; returns them and the time taken.
pub fn round_trip(s: &mut UnixStream, data: &[u8]) -> (Vec<u8>, Duration) {
    let mut reader = s.try_clone().expect("clone");
    let want = data.len();
    let t0 = Instant::now();
    let echo = std::thread::spawn(move || {
        let mut got = vec![0u8; want];
        reader.read_exact(&mut got).map(|()| got)
    });
    s.write_all(data).expect("write");
    let got = echo.join().expect("reader").expect("echo");
    (got, t0.elapsed())
}

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from((i * 7 + i / 256) % 256).expect("byte") ^ seed)
        .collect()
}

/// What a [`Listener::sink`] expects.
pub const SINK_BYTES: usize = 2 << 20;

/// Byte `i` of what `vsock-echo source` sends.
pub fn source_byte(i: usize) -> u8 {
    u8::try_from(i % (64 * 1024) % 251).expect("< 251")
}

/// A listener at `<uds>_<port>` that serves a fixed number of guest connections.
pub struct Listener {
    path: PathBuf,
    thread: Option<JoinHandle<Vec<Served>>>,
}

/// What one guest connection did.
#[derive(Debug)]
pub struct Served {
    /// Bytes received.
    pub bytes: usize,
    /// First received byte → EOF.
    pub took: Duration,
    /// The received bytes all matched `vsock-echo source`'s pattern.
    pub pattern_ok: bool,
    /// The first line received (line mode).
    pub line: String,
}

impl Listener {
    fn start(uds: &Path, port: u32, conns: usize, serve: fn(UnixStream) -> Served) -> Self {
        let path = PathBuf::from(format!("{}_{port}", uds.display()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind the port listener");
        let thread = std::thread::spawn(move || {
            let mut served = Vec::new();
            for _ in 0..conns {
                let Ok((s, _)) = listener.accept() else { break };
                s.set_read_timeout(Some(Duration::from_secs(300)))
                    .expect("timeout");
                served.push(serve(s));
            }
            served
        });
        Self {
            path,
            thread: Some(thread),
        }
    }

    /// Answers each connection's first line with `echo: <line>` (the guest's `connect` mode).
    pub fn lines(uds: &Path, port: u32, conns: usize) -> Self {
        Self::start(uds, port, conns, |mut s| {
            let line = read_line(&mut s);
            let _ = s.write_all(format!("echo: {line}").as_bytes());
            Served {
                bytes: line.len(),
                took: Duration::ZERO,
                pattern_ok: true,
                line,
            }
        })
    }

    /// Reads [`SINK_BYTES`] (or to EOF), checks the pattern, answers `GOT <n>\n` (the guest's
    /// `source` mode; hybrid vsock has no half-close, so the size is agreed beforehand).
    pub fn sink(uds: &Path, port: u32) -> Self {
        Self::start(uds, port, 1, |mut s| {
            let mut buf = vec![0u8; 64 * 1024];
            let (mut bytes, mut pattern_ok, mut t0) = (0usize, true, None);
            while bytes < SINK_BYTES {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        t0.get_or_insert_with(Instant::now);
                        pattern_ok &= buf[..n]
                            .iter()
                            .enumerate()
                            .all(|(i, b)| *b == source_byte(bytes + i));
                        bytes += n;
                    }
                }
            }
            let took = t0.map_or(Duration::ZERO, |t| t.elapsed());
            let _ = s.write_all(format!("GOT {bytes}\n").as_bytes());
            Served {
                bytes,
                took,
                pattern_ok,
                line: String::new(),
            }
        })
    }

    /// Waits for the thread (it has served its connections) and returns what it saw.
    pub fn join(mut self) -> Vec<Served> {
        self.thread
            .take()
            .map(|t| t.join().expect("listener thread"))
            .unwrap_or_default()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        // A thread still blocked in accept() is left to end with the test process.
    }
}
