//! Shared helpers for the squib-api integration tests: a server on a unique socket, stub VMMs
//! and a raw HTTP/1.1 client over `UnixStream` (no HTTP client library: the wire is what an SDK
//! sees).

#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use squib_api::{
    ActionReceiver, ApiAction, ApiResponse, ControllerSnapshot, RuntimeApiController, ServeOptions,
    TimeoutTable, serve,
};
use squib_core::{CapabilityProfile, LifecyclePhase};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UnixStream,
    sync::mpsc,
    time::timeout,
};

pub fn unique_socket_path(tag: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("squib-{tag}-{}-{n}.sock", std::process::id()))
}

pub fn controller(
    profile: CapabilityProfile,
    timeouts: TimeoutTable,
    capacity: usize,
) -> (Arc<RuntimeApiController>, ActionReceiver) {
    let snap = ControllerSnapshot::new(
        "anonymous-instance",
        "1.17.0-dev",
        "1.17.0-dev (squib test)",
    )
    .with_profile(profile);
    let (c, rx) = RuntimeApiController::new(snap, timeouts, capacity);
    (Arc::new(c), rx)
}

pub async fn start(controller: Arc<RuntimeApiController>, opts: ServeOptions) -> PathBuf {
    let socket = opts.socket_path.clone();
    tokio::spawn(async move {
        if let Err(e) = serve(opts, controller).await {
            panic!("serve failed: {e}");
        }
    });
    for _ in 0..200 {
        if UnixStream::connect(&socket).await.is_ok() {
            return socket;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("server did not come up at {}", socket.display());
}

/// A stub VMM that answers every action with `204` and records it. Phase changes that a real
/// VMM would publish (InstanceStart → Running, pause/resume) are published too.
pub fn stub_vmm(
    controller: Arc<RuntimeApiController>,
    mut rx: ActionReceiver,
) -> mpsc::UnboundedReceiver<ApiAction> {
    let (seen_tx, seen_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some((action, reply)) = rx.recv().await {
            if let ApiAction::Instance(squib_api::schemas::actions::InstanceAction::InstanceStart) =
                &action
            {
                controller.set_phase(LifecyclePhase::Running);
            }
            let _ = seen_tx.send(action);
            let _ = reply.send(ApiResponse::NoContent);
        }
    });
    seen_rx
}

/// One parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// The `fault_message` of an error body, asserting the body is exactly that one key.
    pub fn fault(&self) -> String {
        let v = self.json();
        let obj = v
            .as_object()
            .unwrap_or_else(|| panic!("not an object: {v}"));
        assert_eq!(
            obj.len(),
            1,
            "error body must have exactly fault_message: {v}"
        );
        obj["fault_message"]
            .as_str()
            .expect("fault_message string")
            .to_owned()
    }
}

/// Parse every complete response at the start of `buf`.
pub fn parse_responses(mut buf: &[u8]) -> Vec<Resp> {
    let mut out = Vec::new();
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(n)) = r.parse(buf) else {
            return out;
        };
        let headers: Vec<(String, String)> = r
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let len = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse::<usize>().expect("content-length"));
        if buf.len() < n + len {
            return out;
        }
        out.push(Resp {
            status: r.code.unwrap_or(0),
            headers,
            body: buf[n..n + len].to_vec(),
        });
        buf = &buf[n + len..];
    }
}

/// A keep-alive client connection.
pub struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl Conn {
    pub async fn open(socket: &Path) -> Self {
        Self {
            stream: UnixStream::connect(socket).await.expect("connect"),
            buf: Vec::new(),
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Read until `n` complete responses are buffered (5 s limit).
    pub async fn read_n(&mut self, n: usize) -> Vec<Resp> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let parsed = parse_responses(&self.buf);
            if parsed.len() >= n {
                let consumed: usize = raw_len(&self.buf, n);
                self.buf.drain(..consumed);
                return parsed.into_iter().take(n).collect();
            }
            let mut chunk = [0u8; 8192];
            let read = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .expect("response timed out")
                .expect("read");
            assert!(
                read > 0,
                "connection closed after {} responses",
                parsed.len()
            );
            self.buf.extend_from_slice(&chunk[..read]);
        }
    }

    pub async fn request(&mut self, method: &str, path: &str, body: Option<&str>) -> Resp {
        self.send_raw(request_bytes(method, path, body).as_bytes())
            .await;
        self.read_n(1).await.remove(0)
    }

    /// `true` if the server closed the connection (EOF within 2 s).
    pub async fn closed_by_server(&mut self) -> bool {
        let mut chunk = [0u8; 64];
        matches!(
            timeout(Duration::from_secs(2), self.stream.read(&mut chunk)).await,
            Ok(Ok(0) | Err(_))
        )
    }
}

fn raw_len(buf: &[u8], n: usize) -> usize {
    let mut off = 0;
    for _ in 0..n {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(h)) = r.parse(&buf[off..]) else {
            break;
        };
        let len = r
            .headers
            .iter()
            .find(|x| x.name.eq_ignore_ascii_case("content-length"))
            .and_then(|x| std::str::from_utf8(x.value).ok()?.parse::<usize>().ok())
            .unwrap_or(0);
        off += h + len;
    }
    off
}

pub fn request_bytes(method: &str, path: &str, body: Option<&str>) -> String {
    match body {
        Some(b) => format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{b}",
            b.len()
        ),
        None => format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"),
    }
}

/// Spin up a server with the x86 KVM profile and a 204 stub VMM.
pub async fn kvm_server() -> (
    Arc<RuntimeApiController>,
    PathBuf,
    mpsc::UnboundedReceiver<ApiAction>,
) {
    let (c, rx) = controller(
        CapabilityProfile::x86_64_kvm(),
        TimeoutTable::from_spec(),
        64,
    );
    let seen = stub_vmm(Arc::clone(&c), rx);
    let socket = start(Arc::clone(&c), ServeOptions::new(unique_socket_path("api"))).await;
    (c, socket, seen)
}
