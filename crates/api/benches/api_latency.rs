//! API read-path latency, with the VMM wedged.
//!
//! Starts the API server on a Unix socket with a stub VMM that never answers and an action
//! channel that is full (one PUT queued and unanswered, a second one blocked behind it), then
//! measures `GET /` and `GET /machine-config` round trips over one keep-alive connection and
//! prints p50/p90/p99/max. Run with `cargo bench -p squib-api --bench api_latency`.

use std::{sync::Arc, time::Instant};

use squib_api::{ControllerSnapshot, RuntimeApiController, ServeOptions, TimeoutTable, serve};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UnixStream,
};

const ITERATIONS: usize = 5_000;

async fn read_response(stream: &mut UnixStream, buf: &mut Vec<u8>) {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "server closed");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).expect("utf8 head");
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .map_or(0, |v| v.parse::<usize>().expect("length"));
            if buf.len() >= end + 4 + len {
                assert!(head.starts_with("HTTP/1.1 200"), "unexpected: {head}");
                return;
            }
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx]
}

async fn measure(socket: &std::path::Path, path: &str) -> Vec<f64> {
    let mut stream = UnixStream::connect(socket).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let mut buf = Vec::new();
    let mut samples = Vec::with_capacity(ITERATIONS);
    for _ in 0..ITERATIONS {
        let t = Instant::now();
        stream.write_all(req.as_bytes()).await.expect("write");
        read_response(&mut stream, &mut buf).await;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    samples.sort_by(f64::total_cmp);
    samples
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let socket = std::env::temp_dir().join(format!("squib-bench-{}.sock", std::process::id()));
        let snap = ControllerSnapshot::new("bench", "1.17.0-dev", "1.17.0-dev (squib bench)");
        let (ctrl, rx) = RuntimeApiController::new(snap, TimeoutTable::from_spec(), 1);
        let ctrl = Arc::new(ctrl);
        tokio::spawn(serve(ServeOptions::new(&socket), Arc::clone(&ctrl)));
        while !socket.exists() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // Wedge the VMM: hold the receiver, never read it; fill the channel with two PUTs.
        let _wedged = rx;
        for _ in 0..2 {
            let socket = socket.clone();
            tokio::spawn(async move {
                let mut s = UnixStream::connect(&socket).await.expect("connect");
                let body = r#"{"kernel_image_path":"/k"}"#;
                let req = format!(
                    "PUT /boot-source HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(req.as_bytes()).await.expect("write");
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink).await;
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;

        println!("squib-api read latency, VMM wedged and action channel full ({ITERATIONS} requests each, one keep-alive connection)");
        println!("{:<20} {:>10} {:>10} {:>10} {:>10}", "request", "p50 us", "p90 us", "p99 us", "max us");
        for path in ["/", "/machine-config", "/vm/config"] {
            let s = measure(&socket, path).await;
            println!(
                "{:<20} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
                format!("GET {path}"),
                percentile(&s, 0.50),
                percentile(&s, 0.90),
                percentile(&s, 0.99),
                s[s.len() - 1]
            );
        }
        let _ = std::fs::remove_file(&socket);
    });
}
