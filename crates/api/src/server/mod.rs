//! The API server: Unix-socket listener, connection loop and the `serve` entry points.
//!
//! Each accepted connection runs on its own tokio task. Requests on one connection are parsed
//! with [`http1`] and answered strictly in order (pipelining works), each passed to the axum
//! [`router`] as an `http::Request`. Connections are kept alive until the client closes them or
//! asks to (`Connection: close`, HTTP/1.0), or until an error destroys the framing.
//! At most [`ServeOptions::max_connections`] connections are served at once (Firecracker: 10);
//! extra ones get a 503 and are closed.

pub mod http1;

use std::{
    io,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::{
        Arc, Condvar, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, body::Body};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{UnixListener, UnixStream},
};
use tower::ServiceExt;

pub use crate::handlers::router;
use crate::{controller::RuntimeApiController, error::ApiError};
use http1::{HeadError, HeadParse, ResponseParts};

/// The `Server` header value on every response.
pub const FIRECRACKER_SERVER_HEADER: &str = "Firecracker API";
/// Default request body limit (`--http-api-max-payload-size`), as Firecracker.
pub const DEFAULT_MAX_PAYLOAD: usize = 51_200;
/// Smallest accepted `--http-api-max-payload-size`.
pub const MIN_MAX_PAYLOAD: usize = 1024;
/// Largest accepted `--http-api-max-payload-size`.
pub const MAX_MAX_PAYLOAD: usize = 1_048_576;
/// Default concurrent-connection limit (Firecracker's `MAX_CONNECTIONS`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10;

/// How to serve the API.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeOptions {
    /// Unix socket path.
    pub socket_path: PathBuf,
    /// Request body limit in bytes.
    pub max_payload: usize,
    /// Concurrent connection limit.
    pub max_connections: usize,
}

impl ServeOptions {
    /// Defaults for `socket_path`.
    pub fn new(socket_path: impl AsRef<Path>) -> Self {
        Self {
            socket_path: socket_path.as_ref().to_path_buf(),
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }

    /// Set the payload limit; it must lie in `MIN_MAX_PAYLOAD..=MAX_MAX_PAYLOAD`.
    pub fn with_max_payload(mut self, limit: usize) -> Result<Self, String> {
        if !(MIN_MAX_PAYLOAD..=MAX_MAX_PAYLOAD).contains(&limit) {
            return Err(format!(
                "--http-api-max-payload-size must be in {MIN_MAX_PAYLOAD}..={MAX_MAX_PAYLOAD} (got {limit})"
            ));
        }
        self.max_payload = limit;
        Ok(self)
    }

    /// Set the connection limit (at least 1).
    #[must_use]
    pub fn with_max_connections(mut self, limit: usize) -> Self {
        self.max_connections = limit.max(1);
        self
    }
}

/// Remove a stale socket file at `path`, if any. Other file types are left alone (error).
///
/// Plain blocking calls (quick metadata operations at startup): `tokio::fs` would start a
/// blocking-pool thread before the API thread installs its seccomp filter, and that thread
/// would stay unfiltered.
pub async fn unlink_socket_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            use std::os::unix::fs::FileTypeExt;
            if meta.file_type().is_socket() {
                std::fs::remove_file(path)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ))
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Bind the API socket: refuse a socket some live process is serving, unlink a stale one,
/// bind, and restrict the socket to its owner (mode 0600).
pub async fn bind_listener(path: &Path) -> io::Result<UnixListener> {
    if UnixStream::connect(path).await.is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "Failed to open the API socket at: {}. Check that it is not already used.",
                path.display()
            ),
        ));
    }
    unlink_socket_if_exists(path).await?;
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Bind `opts.socket_path` and serve until an accept error.
pub async fn serve(opts: ServeOptions, controller: Arc<RuntimeApiController>) -> io::Result<()> {
    let listener = bind_listener(&opts.socket_path).await?;
    tracing::info!("API server started.");
    serve_bound(listener, opts, controller).await
}

/// Requests whose answer has not been written yet, across all connections.
///
/// A request counts from the moment its head is parsed until its response has been written to
/// the socket (or the connection failed). The process owner waits on [`InFlight::wait_idle`]
/// before exiting so that a final answer (e.g. the 400 of a fatal snapshot load) reaches the
/// client first, as Firecracker answers before it exits. Shared between the API thread (async
/// tasks increment/decrement; short critical sections) and the thread that waits.
#[derive(Debug, Default)]
pub struct InFlight {
    count: Mutex<usize>,
    idle: Condvar,
}

impl InFlight {
    /// A tracker with nothing in flight.
    #[must_use]
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// How many answers are still to be written.
    pub fn pending(&self) -> usize {
        *self.count.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Blocks until no answer is pending or `timeout` passed; true when idle.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        while *count > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            count = self
                .idle
                .wait_timeout(count, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    fn begin(self: &Arc<Self>) -> InFlightGuard {
        *self.count.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        InFlightGuard(Arc::clone(self))
    }
}

/// One pending answer; dropping it (written, or the connection failed) ends it.
struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let mut count = self.0.count.lock().unwrap_or_else(PoisonError::into_inner);
        *count = count.saturating_sub(1);
        if *count == 0 {
            self.0.idle.notify_all();
        }
    }
}

/// Serve on an already-bound listener until an accept error.
pub async fn serve_bound(
    listener: UnixListener,
    opts: ServeOptions,
    controller: Arc<RuntimeApiController>,
) -> io::Result<()> {
    serve_tracked(listener, opts, controller, InFlight::new()).await
}

/// As [`serve_bound`], counting unanswered requests in `in_flight`.
pub async fn serve_tracked(
    listener: UnixListener,
    opts: ServeOptions,
    controller: Arc<RuntimeApiController>,
    in_flight: Arc<InFlight>,
) -> io::Result<()> {
    let app = router(controller);
    let live = Arc::new(AtomicUsize::new(0));
    loop {
        let (stream, _addr) = listener.accept().await?;
        if live.fetch_add(1, Ordering::AcqRel) >= opts.max_connections {
            live.fetch_sub(1, Ordering::AcqRel);
            tokio::spawn(refuse(stream));
            continue;
        }
        let app = app.clone();
        let live = Arc::clone(&live);
        let max_payload = opts.max_payload;
        let in_flight = Arc::clone(&in_flight);
        tokio::spawn(async move {
            if let Err(e) = serve_connection(stream, app, max_payload, &in_flight).await {
                tracing::debug!("API connection ended with an error: {e}");
            }
            live.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

async fn refuse(mut stream: UnixStream) {
    let body = serde_json::to_vec(&ApiError::TooManyConnections.fault()).unwrap_or_default();
    let mut out = Vec::new();
    http1::write_response(
        &mut out,
        &ResponseParts {
            status: 503,
            deprecation: false,
            close: true,
            body: &body,
        },
    );
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}

/// Largest read buffer kept between requests.
const READ_CHUNK: usize = 4096;

/// Serve one connection: parse, route, answer, in order, until close.
pub(crate) async fn serve_connection(
    mut stream: UnixStream,
    app: Router,
    max_payload: usize,
    in_flight: &Arc<InFlight>,
) -> io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut out: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    loop {
        // Read until a complete head is buffered.
        let (head, head_len) = loop {
            if !buf.is_empty() {
                match http1::parse_head(&buf, max_payload) {
                    Ok(HeadParse::Complete(h, n)) => break (h, n),
                    Ok(HeadParse::Partial) => {}
                    Err(e) => return fail_connection(&mut stream, &e).await,
                }
            }
            if read_more(&mut stream, &mut buf).await? == 0 {
                return Ok(());
            }
        };
        buf.drain(..head_len);
        let _pending = in_flight.begin();

        if head.expect_continue && head.content_length > buf.len() {
            stream.write_all(&http1::continue_response()).await?;
        }
        while buf.len() < head.content_length {
            if read_more(&mut stream, &mut buf).await? == 0 {
                return Ok(());
            }
        }
        let body: Vec<u8> = buf.drain(..head.content_length).collect();

        let response = route(&app, &head, body).await;
        out.clear();
        http1::write_response(
            &mut out,
            &ResponseParts {
                status: response.status,
                deprecation: response.deprecation,
                close: head.close,
                body: &response.body,
            },
        );
        stream.write_all(&out).await?;
        if head.close {
            stream.shutdown().await?;
            return Ok(());
        }
    }
}

async fn read_more(stream: &mut UnixStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    let start = buf.len();
    buf.resize(start + READ_CHUNK, 0);
    let n = stream.read(&mut buf[start..]).await;
    buf.truncate(start + *n.as_ref().unwrap_or(&0));
    n
}

async fn fail_connection(stream: &mut UnixStream, err: &HeadError) -> io::Result<()> {
    let api_err = ApiError::BadRequest(err.to_string());
    tracing::info!("Received Error. Status code: 400 Bad Request. Message: {api_err}");
    let body = serde_json::to_vec(&api_err.fault()).unwrap_or_default();
    let mut out = Vec::new();
    http1::write_response(
        &mut out,
        &ResponseParts {
            status: 400,
            deprecation: false,
            close: true,
            body: &body,
        },
    );
    stream.write_all(&out).await?;
    stream.shutdown().await
}

/// A routed response, reduced to what the codec writes.
#[derive(Debug)]
pub(crate) struct RoutedResponse {
    pub(crate) status: u16,
    pub(crate) deprecation: bool,
    pub(crate) body: Vec<u8>,
}

/// Run one request through the axum router.
pub(crate) async fn route(
    app: &Router,
    head: &http1::RequestHead,
    body: Vec<u8>,
) -> RoutedResponse {
    let mut builder = http::Request::builder()
        .method(head.method.as_str())
        .uri(head.target.as_str());
    for (name, value) in &head.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let request = match builder.body(Body::from(body)) {
        Ok(r) => r,
        Err(e) => return error_response(&ApiError::BadRequest(format!("Invalid request: {e}."))),
    };
    let response = match app.clone().oneshot(request).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let status = response.status().as_u16();
    let deprecation = response.headers().contains_key("deprecation");
    let body = axum::body::to_bytes(response.into_body(), MAX_MAX_PAYLOAD * 4)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    RoutedResponse {
        status,
        deprecation,
        body,
    }
}

fn error_response(err: &ApiError) -> RoutedResponse {
    RoutedResponse {
        status: err.status().as_u16(),
        deprecation: false,
        body: serde_json::to_vec(&err.fault()).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_waits_for_the_last_answer() {
        let tracker = InFlight::new();
        assert!(tracker.wait_idle(Duration::ZERO));
        let first = tracker.begin();
        let second = tracker.begin();
        assert_eq!(tracker.pending(), 2);
        assert!(!tracker.wait_idle(Duration::from_millis(20)));
        drop(first);
        let waiter = {
            let tracker = Arc::clone(&tracker);
            std::thread::spawn(move || tracker.wait_idle(Duration::from_secs(10)))
        };
        std::thread::sleep(Duration::from_millis(20));
        drop(second);
        assert!(waiter.join().expect("waiter"));
        assert_eq!(tracker.pending(), 0);
    }
}
