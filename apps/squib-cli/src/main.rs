//! `squib`: a microVM monitor that is driven exactly like Firecracker.
//!
//! Same flags (see `args.rs`), same API socket, same `--config-file`, same exit codes and last
//! log line (`Firecracker exiting successfully. exit_code=0`). This binary is the one crate
//! that links everything: it picks the KVM backend and hands it to the `squib` facade.

#![forbid(unsafe_code)]

mod args;
mod logger;
mod seccomp;

use std::{
    io::Write,
    os::fd::{AsFd, OwnedFd},
    path::PathBuf,
    process::ExitCode as ProcessExit,
    sync::Arc,
};

use args::{ArgError, Args};
use squib::{BootProtocolChoice, ExitCode, SquibOptions, StartTime, VmmOptions};
use squib_api::{DEFAULT_MAX_PAYLOAD, MAX_MAX_PAYLOAD, MIN_MAX_PAYLOAD};
use squib_core::{FIRECRACKER_API_VERSION, InstanceId};

/// The version launchers parse (`Firecracker v<api version>`), then squib's own.
fn version_text() -> String {
    format!(
        "Firecracker v{FIRECRACKER_API_VERSION}\nsquib v{}\n",
        env!("CARGO_PKG_VERSION")
    )
}

fn main() -> ProcessExit {
    let code = match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e}");
            tracing::error!("{e}");
            e.exit_code()
        }
    };
    if code == ExitCode::Ok {
        tracing::info!("Firecracker exiting successfully. exit_code=0");
    } else {
        tracing::error!("Firecracker exiting with error. exit_code={}", code.code());
    }
    ProcessExit::from(code.code())
}

#[derive(Debug, thiserror::Error)]
enum MainError {
    #[error("Arguments parsing error: {0}")]
    Args(#[from] ArgError),
    #[error("Invalid value for --level: {0}")]
    Level(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Startup(String),
    #[error("Seccomp error: {0}")]
    Seccomp(#[from] squib_sys::seccomp::FilterError),
}

impl MainError {
    fn exit_code(&self) -> ExitCode {
        match self {
            Self::Args(_) => ExitCode::ArgParsing,
            Self::Level(_) => ExitCode::BadConfiguration,
            Self::Unsupported(_) | Self::Startup(_) | Self::Seccomp(_) => ExitCode::GenericError,
        }
    }
}

/// Firecracker's fatal-signal handlers and panic hook: record the `signals`/`vmm` metric, log,
/// write a last metrics line (best effort), then exit with the signal's code (or abort).
fn install_last_words() {
    fn on_fatal_signal(signo: i32, code: i32) {
        tracing::error!("Shutting down VM after intercepting signal {signo}, code {code}.");
    }
    let hooks = squib_sys::signals::FatalHooks {
        log: on_fatal_signal,
        flush_metrics: squib::flush_metrics_best_effort,
    };
    if let Err(e) = squib_sys::signals::install(hooks) {
        tracing::warn!("Cannot install the signal handlers: {e}");
    }
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        squib_core::metrics::METRICS.vmm.panic_count.store(1);
        squib::flush_metrics_best_effort();
        default_hook(info);
    }));
}

fn real_main() -> Result<ExitCode, MainError> {
    let args = Args::parse(std::env::args().skip(1))?;
    if args.flag("help") {
        print!("{}", args::help_text(FIRECRACKER_API_VERSION));
        return Ok(ExitCode::Ok);
    }
    if args.flag("version") {
        print!("{}", version_text());
        return Ok(ExitCode::Ok);
    }
    if args.flag("snapshot-version") {
        println!("{}", squib_snapshot::SNAPSHOT_VERSION_TEXT);
        return Ok(ExitCode::Ok);
    }
    if let Some(path) = args.value("describe-snapshot") {
        return match squib_snapshot::describe(&path) {
            Ok(version) => {
                println!("{version}");
                Ok(ExitCode::Ok)
            }
            Err(e) => {
                eprintln!("{}", e.describe_failure_text());
                Ok(ExitCode::GenericError)
            }
        };
    }

    let id = args.value("id").unwrap_or_default();
    InstanceId::try_from(id.as_str()).map_err(|e| ArgError::Invalid(e.to_string()))?;
    let level = match args.value("level") {
        Some(l) => logger::parse_level(&l).ok_or(MainError::Level(l))?,
        None => tracing::level_filters::LevelFilter::INFO,
    };
    let (sink, log_fd): (Box<dyn Write + Send>, _) = match args.value("log-path") {
        Some(p) => {
            let file = logger::open_log_file(std::path::Path::new(&p)).map_err(|e| {
                MainError::Startup(format!(
                    "Could not initialize logger: Failed to open target file: {e}"
                ))
            })?;
            let fd = file.try_clone().ok().map(OwnedFd::from);
            (Box::new(file), fd)
        }
        None => (
            Box::new(std::io::stdout()),
            std::io::stdout().as_fd().try_clone_to_owned().ok(),
        ),
    };
    let show_level = args.flag("show-level");
    let log_handle = logger::init(
        logger::LogSettings {
            id: id.clone(),
            level,
            show_level,
            show_origin: args.flag("show-log-origin"),
            module: args.value("module"),
        },
        sink,
    );

    install_last_words();

    // Knobs this build cannot honour are refused, never silently ignored.
    for (flag, why) in [(
        "enable-pci",
        "the PCI transport is not supported by squib (virtio-mmio only)",
    )] {
        if args.flag(flag) {
            return Err(MainError::Unsupported(format!("--{flag}: {why}")));
        }
    }
    let start_time = StartTime {
        wall_us: args.number::<u64>("start-time-us")?,
        cpu_us: args.number::<u64>("start-time-cpu-us")?,
        parent_cpu_us: args.number::<u64>("parent-cpu-time-us")?,
    };

    let max_payload = args
        .number::<usize>("http-api-max-payload-size")?
        .unwrap_or(DEFAULT_MAX_PAYLOAD);
    if !(MIN_MAX_PAYLOAD..=MAX_MAX_PAYLOAD).contains(&max_payload) {
        return Err(ArgError::Invalid(format!(
            "--http-api-max-payload-size must be in {MIN_MAX_PAYLOAD}..={MAX_MAX_PAYLOAD}"
        ))
        .into());
    }
    let no_api = args.flag("no-api");
    let config_file = args.value("config-file").map(PathBuf::from);
    if no_api && config_file.is_none() {
        return Err(ArgError::Invalid("--no-api requires --config-file".into()).into());
    }
    let boot_protocol = match std::env::var("SQUIB_BOOT_PROTOCOL").as_deref() {
        Ok("linux") => BootProtocolChoice::LinuxBoot,
        _ => BootProtocolChoice::Auto,
    };
    let opts = SquibOptions {
        id,
        api_sock: (!no_api).then(|| PathBuf::from(args.value("api-sock").unwrap_or_default())),
        config_file,
        metadata: args.value("metadata").map(PathBuf::from),
        max_payload,
        mmds_size_limit: args
            .number::<usize>("mmds-size-limit")?
            .unwrap_or(max_payload),
        metrics_path: args.value("metrics-path").map(PathBuf::from),
        start_time,
        vmm: VmmOptions {
            boot_timer: args.flag("boot-timer"),
            boot_protocol,
            logger: Some(Arc::new(log_handle)),
            ..VmmOptions::default()
        },
    };

    tracing::info!(
        "Running Firecracker v{FIRECRACKER_API_VERSION} (squib v{})",
        env!("CARGO_PKG_VERSION")
    );
    seccomp::setup(&args, &opts.id, log_fd, show_level)?;
    let hv = squib_kvm::KvmHypervisor::new()
        .map_err(|e| MainError::Startup(format!("Cannot open the hypervisor (/dev/kvm): {e}")))?;
    if hv.is_pvm() {
        tracing::info!(
            "Nested kvm_pvm host detected: guest instructions are emulated (slow guests)"
        );
    }
    Ok(squib::run(&opts, Arc::new(hv)))
}
