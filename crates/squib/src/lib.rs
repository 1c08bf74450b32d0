//! The embeddable squib facade: one microVM per process, Firecracker's thread model.
//!
//! - the **API thread** (`fc_api`) runs a tokio `current_thread` runtime with the
//!   `squib-api` server (unless `--no-api`), replays `--config-file`, seeds MMDS from
//!   `--metadata`, and forwards every admitted [`ApiAction`] to the VMM thread;
//! - the **VMM thread** (the caller of [`run`]) runs [`squib_vmm::Vmm::run`] and returns the
//!   process exit code when the microVM ends;
//! - **vCPU threads** are started by the VMM.
//!
//! The bridge: a tokio task drains the API's bounded action channel into a std channel and
//! writes an `EventFd` the VMM's epoll loop watches; replies travel back through the tokio
//! oneshot, called from the VMM thread. Lifecycle changes reach the API's read mirror through
//! [`squib_vmm::VmmObserver`].
//!
//! Start-up order: `--metrics-path` is opened first (a failure ends the process, as in
//! Firecracker); the API socket is bound (`API server started.`), then `--metadata` and
//! `--config-file` are applied and the microVM booted, and only then does the server accept
//! connections. A client that connects as soon as the socket exists therefore waits in the
//! listen backlog and finds the microVM `Running`, as with Firecracker, whose API thread
//! forwards every request to the VMM thread busy booting.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        mpsc::{Sender, channel},
    },
};

use squib_api::{
    ControllerSnapshot, InFlight, RuntimeApiController, ServeOptions, TimeoutTable, bind_listener,
    replay::{parse_config_file, replay_config},
    serve_tracked,
};
pub use squib_config::schemas::logger::{LogLevel, LoggerConfig};
use squib_config::{action::ApiAction, schemas::metrics::MetricsConfig};
use squib_core::{FIRECRACKER_API_VERSION, LifecyclePhase};
use squib_hv::Hypervisor;
pub use squib_vmm::metrics::flush_best_effort as flush_metrics_best_effort;
pub use squib_vmm::{BootProtocolChoice, ExitCode, LoggerControl, VmmOptions};
use squib_vmm::{Vmm, VmmObserver, VmmRequest};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

/// Capacity of the API → VMM action channel.
pub const ACTION_CHANNEL_CAPACITY: usize = 64;

/// Everything the facade needs from the command line.
#[derive(Debug, Clone)]
pub struct SquibOptions {
    /// Instance id (`--id`).
    pub id: String,
    /// API socket, or `None` for `--no-api`.
    pub api_sock: Option<PathBuf>,
    /// `--config-file`.
    pub config_file: Option<PathBuf>,
    /// `--metadata`: JSON to seed MMDS with.
    pub metadata: Option<PathBuf>,
    /// `--http-api-max-payload-size`.
    pub max_payload: usize,
    /// `--mmds-size-limit`.
    pub mmds_size_limit: usize,
    /// `--metrics-path`.
    pub metrics_path: Option<PathBuf>,
    /// `--start-time-us`, `--start-time-cpu-us`, `--parent-cpu-time-us` (from the jailer).
    pub start_time: StartTime,
    /// VMM options (`--boot-timer`, the logger, ...).
    pub vmm: VmmOptions,
}

/// The jailer's start-time flags, reported as `api_server.process_startup_time_us` and
/// `process_startup_time_cpu_us` once the API server is ready.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartTime {
    /// `--start-time-us` (`CLOCK_MONOTONIC` µs).
    pub wall_us: Option<u64>,
    /// `--start-time-cpu-us` (process CPU µs).
    pub cpu_us: Option<u64>,
    /// `--parent-cpu-time-us` (the jailer's CPU µs).
    pub parent_cpu_us: Option<u64>,
}

impl StartTime {
    /// Stores the start-up metrics (Firecracker's `ProcessTimeReporter`).
    fn report(self) {
        let api_server = &squib_core::metrics::METRICS.api_server;
        if let Some(start) = self.wall_us {
            api_server
                .process_startup_time_us
                .store(squib_sys::monotonic_time_us().saturating_sub(start));
        }
        if let Some(start) = self.cpu_us {
            api_server.process_startup_time_cpu_us.store(
                squib_sys::process_cpu_time_us()
                    .saturating_sub(start)
                    .saturating_add(self.parent_cpu_us.unwrap_or(0)),
            );
        }
    }
}

struct MirrorObserver(Arc<RuntimeApiController>);

impl VmmObserver for MirrorObserver {
    fn phase_changed(&self, phase: LifecyclePhase) {
        self.0.set_phase(phase);
    }

    fn config_changed(&self, config: &squib_config::vm_config::VmConfig) {
        let config = config.clone();
        self.0.publish(move |s| s.vm_config = config.clone());
    }

    fn runtime_status(&self, status: &squib_vmm::RuntimeStatus) {
        use squib_vmm::RuntimeStatus;
        match status {
            RuntimeStatus::BalloonStats(v) => {
                self.0.publish(|s| s.balloon_stats = v.as_deref().cloned());
            }
            RuntimeStatus::BalloonHinting(v) => {
                self.0.publish(|s| s.balloon_hinting.clone_from(v));
            }
            RuntimeStatus::Hotplug(v) => self.0.publish(|s| s.hotplug_status.clone_from(v)),
        }
    }
}

/// Run one microVM process: API thread + VMM loop on the calling thread. Returns the exit code.
pub fn run(opts: &SquibOptions, hv: Arc<dyn Hypervisor>) -> ExitCode {
    let snapshot =
        ControllerSnapshot::new(&opts.id, FIRECRACKER_API_VERSION, FIRECRACKER_API_VERSION)
            .with_profile(hv.profile())
            .with_mmds_size_limit(opts.mmds_size_limit);
    let (controller, actions) =
        RuntimeApiController::new(snapshot, TimeoutTable::from_spec(), ACTION_CHANNEL_CAPACITY);
    let controller = Arc::new(controller);

    let Ok(wake) = EventFd::new(EFD_NONBLOCK) else {
        return ExitCode::UnexpectedError;
    };
    let Ok(wake_api) = wake.try_clone() else {
        return ExitCode::UnexpectedError;
    };
    let (req_tx, req_rx) = channel::<VmmRequest>();
    let fatal: Arc<Mutex<Option<ExitCode>>> = Arc::new(Mutex::new(None));

    let mut vmm_options = opts.vmm.clone();
    vmm_options.mmds_size_limit = opts.mmds_size_limit;
    vmm_options.instance_id.clone_from(&opts.id);
    let mut vmm = match Vmm::new(
        hv,
        vmm_options,
        Arc::new(MirrorObserver(Arc::clone(&controller))),
    ) {
        Ok(vmm) => vmm,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::UnexpectedError;
        }
    };
    if let Some(path) = &opts.metrics_path {
        let config = MetricsConfig::from_path(path.to_string_lossy());
        if let Err(e) = vmm.init_metrics(&config) {
            let detail = e.strip_prefix("Metrics error: ").unwrap_or(&e);
            tracing::error!("Could not initialize metrics: {detail}");
            return ExitCode::GenericError;
        }
    }

    let in_flight = InFlight::new();
    let api_thread = {
        let controller = Arc::clone(&controller);
        let in_flight = Arc::clone(&in_flight);
        let fatal = Arc::clone(&fatal);
        let opts = opts.clone();
        std::thread::Builder::new()
            .name("fc_api".into())
            .spawn(move || {
                api_thread_main(
                    &opts,
                    &controller,
                    actions,
                    (&req_tx, &wake_api),
                    &fatal,
                    in_flight,
                );
            })
    };
    if let Err(e) = api_thread {
        tracing::error!("Cannot start the API thread: {e}");
        return ExitCode::UnexpectedError;
    }

    let code = vmm.run(&req_rx, &wake);
    // Answers already produced (e.g. the 400 of a fatal snapshot load) reach their clients
    // before the process exits, as with Firecracker; bounded so a stuck client cannot hold the
    // exit.
    if !in_flight.wait_idle(FINAL_ANSWER_WAIT) {
        tracing::warn!(
            "{} API answer(s) not written before exit",
            in_flight.pending()
        );
    }
    fatal.lock().ok().and_then(|f| *f).unwrap_or(code)
}

/// How long the exit waits for the API thread to finish writing answers.
const FINAL_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

fn api_thread_main(
    opts: &SquibOptions,
    controller: &Arc<RuntimeApiController>,
    mut actions: squib_api::ActionReceiver,
    (req_tx, wake): (&Sender<VmmRequest>, &EventFd),
    fatal: &Arc<Mutex<Option<ExitCode>>>,
    in_flight: Arc<InFlight>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("Cannot build the API runtime: {e}");
            return shutdown(req_tx, wake, fatal, ExitCode::UnexpectedError);
        }
    };
    runtime.block_on(async {
        // Bridge: API channel → VMM thread.
        let forward_tx = req_tx.clone();
        let Ok(forward_wake) = wake.try_clone() else {
            return shutdown(req_tx, wake, fatal, ExitCode::UnexpectedError);
        };
        tokio::spawn(async move {
            while let Some((action, reply)) = actions.recv().await {
                let request = VmmRequest {
                    action,
                    reply: Box::new(move |r| {
                        let _ = reply.send(r);
                    }),
                };
                if forward_tx.send(request).is_err() {
                    break;
                }
                let _ = forward_wake.write(1);
            }
        });

        let listener = match &opts.api_sock {
            Some(path) => match bind_listener(path).await {
                Ok(l) => {
                    tracing::info!("Listening on API socket ({path:?}).");
                    Some(l)
                }
                Err(e) => {
                    tracing::error!("{e}");
                    return shutdown(req_tx, wake, fatal, ExitCode::GenericError);
                }
            },
            None => None,
        };
        // seccomp: after the socket is bound, before serving (Firecracker's order).
        if let Err(e) = squib_sys::install_thread_filter(squib_sys::ThreadCategory::Api) {
            tracing::error!("Failed to set the requested seccomp filters on the API thread: {e}");
            return shutdown(req_tx, wake, fatal, ExitCode::GenericError);
        }
        if listener.is_some() {
            opts.start_time.report();
            tracing::info!("API server started.");
        }
        // The socket exists (clients may connect and wait in the backlog) but connections are
        // accepted only once the files are applied and the microVM booted: nobody can observe
        // the configuration half-applied (see the module docs).
        if let Some(code) = boot_from_files(opts, controller).await {
            return shutdown(req_tx, wake, fatal, code);
        }
        let server = listener.map(|l| {
            tokio::spawn(serve_tracked(
                l,
                api_options(opts),
                Arc::clone(controller),
                in_flight,
            ))
        });
        match server {
            Some(task) => {
                if let Ok(Err(e)) = task.await {
                    tracing::error!("API server failed: {e}");
                }
            }
            None => std::future::pending::<()>().await,
        }
    });
}

fn api_options(opts: &SquibOptions) -> ServeOptions {
    let base = ServeOptions::new(opts.api_sock.clone().unwrap_or_default());
    base.clone()
        .with_max_payload(opts.max_payload)
        .unwrap_or(base)
}

/// `--metadata` then `--config-file` (booting immediately, as Firecracker does).
async fn boot_from_files(
    opts: &SquibOptions,
    controller: &RuntimeApiController,
) -> Option<ExitCode> {
    if let Some(path) = &opts.metadata {
        let parsed = std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|b| {
                serde_json::from_slice::<serde_json::Value>(&b).map_err(|e| e.to_string())
            });
        let result = match parsed {
            Ok(value) => controller
                .dispatch(ApiAction::PutMmds(value))
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::error!("Cannot load --metadata {}: {e}", path.display());
            return Some(ExitCode::GenericError);
        }
    }
    let path = opts.config_file.as_ref()?;
    let config = match parse_config_file(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("Configuration for VMM from one single json failed: {e}");
            return Some(ExitCode::GenericError);
        }
    };
    match replay_config(controller, config, true).await {
        Ok(()) => {
            tracing::info!("Successfully started microvm that was configured from one single json");
            None
        }
        Err(e) => {
            tracing::error!("Could not Start MicroVM from one single json: {e}");
            Some(ExitCode::GenericError)
        }
    }
}

fn shutdown(
    req_tx: &Sender<VmmRequest>,
    wake: &EventFd,
    fatal: &Mutex<Option<ExitCode>>,
    code: ExitCode,
) {
    if let Ok(mut f) = fatal.lock() {
        f.get_or_insert(code);
    }
    let _ = req_tx.send(VmmRequest {
        action: ApiAction::Shutdown,
        reply: Box::new(|_| {}),
    });
    let _ = wake.write(1);
}
