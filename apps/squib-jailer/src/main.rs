//! `squib-jailer`: Firecracker 1.17's jailer, for `squib` (or any Firecracker-compatible VMM).
//!
//! Same flags, defaults, error texts and exit status as Firecracker's `jailer`: it validates its
//! arguments, builds `<chroot-base-dir>/<exec name>/<id>/root`, copies the binary into it, joins
//! the cgroups (v1 or v2), network namespace and resource limits, pivots into the jail, creates
//! the device nodes, drops to `--uid`/`--gid` and execs the binary with `--id <id>` and the
//! start-time flags, followed by everything after `--`. See `run.rs` for the exact steps.
//!
//! Failure: the message on stderr, then Rust's `Error: <Debug>` line, exit status 1 (Firecracker's
//! `main` returns its `JailerError`). `--help`/`--version` print and exit 0.
//!
//! Modules: `args` (the command line), `env` (validation into a `Jail`), `cgroup` (v1/v2),
//! `run` (building and entering the jail), `error` (the texts). The system calls live in
//! `squib_sys::jail`.

#![forbid(unsafe_code)]

mod args;
mod cgroup;
mod env;
mod error;
mod run;

use std::path::Path;

use args::Parsed;
use error::JailerError;
use squib_core::FIRECRACKER_API_VERSION;

/// Where cgroup hierarchies are looked up.
const PROC_MOUNTS: &str = "/proc/mounts";

fn main() -> Result<(), JailerError> {
    let result = main_exec();
    if let Err(e) = &result {
        eprintln!("{e}");
    }
    result
}

fn main_exec() -> Result<(), JailerError> {
    let start = run::StartTimes {
        wall_us: squib_sys::monotonic_time_us(),
        cpu_us: squib_sys::process_cpu_time_us(),
    };
    // Nothing inherited beyond stdio reaches the jailed binary (its environment is cleared at
    // exec: `Command::env_clear`).
    if let Err(e) = squib_sys::jail::close_fds_above_stdio() {
        panic!(
            "Failed to sanitize the Jailer process: {}",
            JailerError::CloseRange(e)
        );
    }

    let argv: Vec<String> = std::env::args().skip(1).collect();
    match args::parse(&argv).map_err(JailerError::ArgumentParsing)? {
        Parsed::Help => {
            println!("Jailer v{FIRECRACKER_API_VERSION}\n");
            println!("{}\n", args::formatted_help());
            println!(
                "Any arguments after the -- separator will be supplied to the jailed binary.\n"
            );
            Ok(())
        }
        Parsed::Version => {
            println!("Jailer v{FIRECRACKER_API_VERSION}\n");
            Ok(())
        }
        Parsed::Run(a) => {
            let jail = env::Jail::from_args(&a, Path::new(PROC_MOUNTS))?;
            run::create_and_run(&jail, start)
        }
    }
}
