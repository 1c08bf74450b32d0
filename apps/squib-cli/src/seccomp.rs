//! seccomp for the `squib` binary, as Firecracker's `main`: the `SIGSYS` handler is always
//! registered (with the other fatal-signal handlers, `squib_sys::signals`); the filters are squib's defaults, none (`--no-seccomp`), or a Firecracker-format
//! file (`--seccomp-filter`); every thread role installs its own filter later
//! (`squib_sys::seccomp::install_for_current_thread`).

use std::os::fd::OwnedFd;

use squib_sys::seccomp::{self, SeccompFilters, policy, sigsys::FatalLog};

use crate::{MainError, args::Args};

/// Register the `SIGSYS` handler and set the process's filters.
pub fn setup(
    args: &Args,
    id: &str,
    log_fd: Option<OwnedFd>,
    show_level: bool,
) -> Result<(), MainError> {
    // The SIGSYS handler itself is the process's one fatal-signal handler
    // (`squib_sys::signals`, installed with the others); here it learns where to log.
    if let Some(fd) = log_fd {
        seccomp::sigsys::set_fatal_log(FatalLog {
            fd,
            id: id.to_owned(),
            show_level,
        });
    }
    let filters = if args.flag("no-seccomp") {
        SeccompFilters::none()
    } else if let Some(path) = args.value("seccomp-filter") {
        seccomp::load_filter_file(std::path::Path::new(&path))?
    } else {
        let ioctls = policy::HypervisorIoctls {
            vmm: squib_kvm::seccomp::vmm_ioctls(),
            vcpu: squib_kvm::seccomp::vcpu_ioctls(),
            kick_signal: Some(squib_kvm::seccomp::kick_signal()),
        };
        if audit_mode() {
            tracing::warn!("SQUIB_SECCOMP_AUDIT: seccomp filters log instead of denying");
            policy::audit_filters(&ioctls)?
        } else {
            policy::default_filters(&ioctls)?
        }
    };
    seccomp::set_process_filters(filters);
    Ok(())
}

/// Debug builds only: `SQUIB_SECCOMP_AUDIT=1` installs the lists in log mode (nothing denied),
/// for re-deriving them under `strace` (`scripts/seccomp-derive.sh`).
fn audit_mode() -> bool {
    cfg!(debug_assertions) && std::env::var("SQUIB_SECCOMP_AUDIT").is_ok_and(|v| v == "1")
}
