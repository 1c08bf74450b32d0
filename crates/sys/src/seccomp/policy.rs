//! squib's default allow-lists, one per thread category, compiled to BPF with the rust-vmm
//! `seccompiler` crate. Mismatch action: `SECCOMP_RET_TRAP` (→ `SIGSYS`, handled by
//! [`crate::signals`]: exit 148), as Firecracker's filters.
//!
//! How the lists were derived (ARCHITECTURE.md has the procedure): the end-to-end suites
//! (`boot_test_guest`, `boot_virtio`, `snapshot`, `boot_linux`) ran under `strace -f` with every
//! thread installing a marker filter at its installation point; the system calls each thread role
//! issued *after* its marker are the lists below. To that, code paths the suites do not reach
//! were added from reading the code, each commented: device reset on a vCPU thread (io_uring
//! drain, timer disarm), vsock/tap I/O on the VMM thread (devices not yet wired to the API),
//! aborts on panic, glibc's per-thread arenas (`mprotect`, `mmap` `PROT_NONE`), `KVM_IRQ_LINE`
//! when irqfd is unavailable.
//!
//! Argument filtering (as far as Firecracker's, plus a few): `ioctl` (KVM request numbers per
//! category, from the backend; `FIONBIO`), `futex` (wait/wake/requeue operations only), `mmap`
//! and `mprotect` (never `PROT_EXEC`; `mmap` only private anonymous mappings), `madvise`
//! (`MADV_DONTNEED`), `fcntl` (fd flags, status flags, `F_DUPFD_CLOEXEC`), `tgkill` (`SIGABRT`,
//! and the vCPU kick signal on the VMM thread), `rt_sigaction` (`SIGABRT`), `socket`
//! (`AF_UNIX` stream), `openat` on the API thread (read-only, no `O_CREAT`), `timerfd_settime`
//! (relative). No thread may create a thread or process, `execve`, or open a new KVM object.

use std::collections::{BTreeMap, HashMap};

use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch,
};

use super::{BpfProgram, FilterError, SeccompFilters, ThreadCategory};

/// What the hypervisor backend adds to the lists (it alone knows its ioctl numbers).
#[derive(Debug, Clone, Default)]
pub struct HypervisorIoctls {
    /// `ioctl` requests of the VMM thread after the build.
    pub vmm: Vec<u64>,
    /// `ioctl` requests of vCPU threads after their setup.
    pub vcpu: Vec<u64>,
    /// The signal the VMM sends to kick vCPUs (`tgkill`), if any.
    pub kick_signal: Option<i32>,
}

type Rules = BTreeMap<i64, Vec<SeccompRule>>;
type Result<T> = std::result::Result<T, FilterError>;

fn policy_err(e: impl std::fmt::Display) -> FilterError {
    FilterError::Policy(e.to_string())
}

/// `arg == value` (32-bit compare).
fn eq(arg: u8, value: u64) -> Result<SeccompCondition> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value).map_err(policy_err)
}

/// `arg & mask == value` (32-bit compare).
fn masked(arg: u8, mask: u64, value: u64) -> Result<SeccompCondition> {
    SeccompCondition::new(
        arg,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::MaskedEq(mask),
        value,
    )
    .map_err(policy_err)
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule> {
    SeccompRule::new(conditions).map_err(policy_err)
}

/// Allow `syscalls` whatever their arguments.
fn allow(rules: &mut Rules, syscalls: &[i64]) {
    for &nr in syscalls {
        rules.insert(nr, Vec::new());
    }
}

/// Allow `syscall` when argument `arg` equals one of `values`.
fn allow_values(rules: &mut Rules, syscall: i64, arg: u8, values: &[u64]) -> Result<()> {
    let chain = values
        .iter()
        .map(|&v| rule(vec![eq(arg, v)?]))
        .collect::<Result<Vec<_>>>()?;
    rules.entry(syscall).or_default().extend(chain);
    Ok(())
}

fn c(v: i32) -> u64 {
    u64::from(v.cast_unsigned())
}

/// What every squib thread needs: Rust std and glibc internals (thread exit, signal masks and
/// stacks, futexes, the allocator, aborts), logging (`write`, `clock_gettime` when the vDSO falls
/// back) and the `SIGSYS` handler itself (`write`, `exit_group`).
fn common(rules: &mut Rules) -> Result<()> {
    allow(
        rules,
        &[
            libc::SYS_brk,
            libc::SYS_clock_gettime,
            libc::SYS_close,
            libc::SYS_exit,
            libc::SYS_exit_group,
            libc::SYS_getpid,
            libc::SYS_gettid,
            libc::SYS_munmap,
            libc::SYS_mremap,
            libc::SYS_restart_syscall,
            libc::SYS_rt_sigprocmask,
            libc::SYS_rt_sigreturn,
            libc::SYS_sched_yield,
            libc::SYS_sigaltstack,
            libc::SYS_write,
        ],
    );
    // std's Mutex/Condvar/park/mpsc and pthread_join: wait/wake (+ bitset), requeue, wake-op,
    // private or shared, either clock.
    let cmd_mask = 0x7f; // FUTEX_CMD_MASK without FUTEX_PRIVATE_FLAG / FUTEX_CLOCK_REALTIME
    let futex_ops = [
        libc::FUTEX_WAIT,
        libc::FUTEX_WAKE,
        libc::FUTEX_REQUEUE,
        libc::FUTEX_CMP_REQUEUE,
        libc::FUTEX_WAKE_OP,
        libc::FUTEX_WAIT_BITSET,
        libc::FUTEX_WAKE_BITSET,
    ];
    let chain = futex_ops
        .iter()
        .map(|&op| rule(vec![masked(1, cmd_mask, c(op))?]))
        .collect::<Result<Vec<_>>>()?;
    rules.insert(libc::SYS_futex, chain);
    // The allocator: private anonymous mappings (glibc arenas reserve PROT_NONE with
    // MAP_NORESERVE), never executable; arena growth is mprotect(READ|WRITE).
    let no_exec = || masked(2, c(libc::PROT_EXEC), 0);
    let anon = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
    let chain = [anon, anon | libc::MAP_NORESERVE]
        .iter()
        .map(|&flags| rule(vec![no_exec()?, eq(3, c(flags))?]))
        .collect::<Result<Vec<_>>>()?;
    rules.insert(libc::SYS_mmap, chain);
    rules.insert(libc::SYS_mprotect, vec![rule(vec![no_exec()?])?]);
    // free() of large blocks and exited threads' stacks.
    allow_values(
        rules,
        libc::SYS_madvise,
        2,
        &[c(libc::MADV_DONTNEED), c(libc::MADV_REMOVE)],
    )?;
    // std checks a descriptor is open before closing it (debug builds).
    allow_values(rules, libc::SYS_fcntl, 1, &[c(libc::F_GETFD)])?;
    // abort() on a panic: restore SIGABRT's default action, raise it.
    allow_values(rules, libc::SYS_rt_sigaction, 0, &[c(libc::SIGABRT)])?;
    allow_values(rules, libc::SYS_tgkill, 2, &[c(libc::SIGABRT)])?;
    Ok(())
}

fn vmm(hv: &HypervisorIoctls) -> Result<Rules> {
    let mut rules = Rules::new();
    common(&mut rules)?;
    allow(
        &mut rules,
        &[
            // event loop; runtime event-source changes (vsock connections)
            libc::SYS_epoll_ctl,
            libc::SYS_epoll_pwait,
            libc::SYS_epoll_wait,
            // eventfds, block Sync engine, serial output file, stdin (fc_stdin), tap frames
            libc::SYS_read,
            libc::SYS_readv,
            libc::SYS_writev,
            libc::SYS_lseek,
            libc::SYS_pread64,
            libc::SYS_pwrite64,
            libc::SYS_fsync,
            libc::SYS_fdatasync,
            // virtio-pmem flush requests
            libc::SYS_msync,
            // block Async engine
            libc::SYS_io_uring_enter,
            // PATCH /drives (reopen), PUT /snapshot/create (atomic files, stale temps, sparse)
            libc::SYS_openat,
            libc::SYS_statx,
            libc::SYS_fstat,
            libc::SYS_newfstatat,
            libc::SYS_getdents64,
            libc::SYS_ftruncate,
            libc::SYS_rename,
            libc::SYS_unlink,
            libc::SYS_getrandom,
            // vsock: host-initiated connections on uds_path, guest-initiated to <uds_path>_<port>
            libc::SYS_accept4,
            libc::SYS_connect,
            libc::SYS_recvfrom,
            libc::SYS_sendto,
            libc::SYS_shutdown,
        ],
    );
    // vsock sockets only: AF_UNIX stream (any SOCK_CLOEXEC / SOCK_NONBLOCK).
    rules.insert(
        libc::SYS_socket,
        vec![rule(vec![
            eq(0, c(libc::AF_UNIX))?,
            masked(1, 0xf, c(libc::SOCK_STREAM))?,
        ])?],
    );
    // rate-limiter timers (relative only)
    allow_values(&mut rules, libc::SYS_timerfd_settime, 1, &[0])?;
    // set/clear CLOEXEC and O_NONBLOCK, duplicate descriptors (try_clone)
    allow_values(
        &mut rules,
        libc::SYS_fcntl,
        1,
        &[
            c(libc::F_SETFD),
            c(libc::F_GETFL),
            c(libc::F_SETFL),
            c(libc::F_DUPFD_CLOEXEC),
        ],
    )?;
    // vCPU kicks
    if let Some(sig) = hv.kick_signal {
        allow_values(&mut rules, libc::SYS_tgkill, 2, &[c(sig)])?;
    }
    let mut ioctls = hv.vmm.clone();
    ioctls.push(libc::FIONBIO); // set_nonblocking on vsock sockets
    allow_values(&mut rules, libc::SYS_ioctl, 1, &ioctls)?;
    Ok(rules)
}

fn api() -> Result<Rules> {
    let mut rules = Rules::new();
    common(&mut rules)?;
    allow(
        &mut rules,
        &[
            // tokio current_thread runtime (mio: epoll + an eventfd waker)
            libc::SYS_epoll_ctl,
            libc::SYS_epoll_pwait,
            libc::SYS_epoll_wait,
            // the API socket and its connections
            libc::SYS_accept4,
            libc::SYS_read,
            libc::SYS_recvfrom,
            libc::SYS_sendto,
            libc::SYS_shutdown,
            // --config-file / --metadata (read after the filter is on)
            libc::SYS_statx,
            libc::SYS_fstat,
            libc::SYS_newfstatat,
            libc::SYS_lseek,
            // HashMap seeds
            libc::SYS_getrandom,
        ],
    );
    // read-only opens: no O_CREAT / O_TRUNC, access mode O_RDONLY
    let mode_mask = c(libc::O_ACCMODE | libc::O_CREAT | libc::O_TRUNC);
    rules.insert(
        libc::SYS_openat,
        vec![rule(vec![masked(2, mode_mask, c(libc::O_RDONLY))?])?],
    );
    allow_values(&mut rules, libc::SYS_fcntl, 1, &[c(libc::F_GETFL)])?;
    Ok(rules)
}

fn vcpu(hv: &HypervisorIoctls) -> Result<Rules> {
    let mut rules = Rules::new();
    common(&mut rules)?;
    // A device reset written by the guest runs on the vCPU thread: drain the block Async
    // engine's ring, clear its queue eventfd, disarm the rate-limiter timer.
    // A virtio-net activation (the guest's DRIVER_OK write) sets the tap's offloads
    // (`TUNSETOFFLOAD`) and may move frames between the tap and the queues right away.
    allow(
        &mut rules,
        &[
            libc::SYS_read,
            libc::SYS_readv,
            libc::SYS_writev,
            libc::SYS_io_uring_enter,
        ],
    );
    allow_values(&mut rules, libc::SYS_timerfd_settime, 1, &[0])?;
    let mut ioctls = hv.vcpu.clone();
    ioctls.push(libc::TUNSETOFFLOAD);
    allow_values(&mut rules, libc::SYS_ioctl, 1, &ioctls)?;
    Ok(rules)
}

fn compile(rules: Rules, mismatch: SeccompAction) -> Result<BpfProgram> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(policy_err)?;
    let filter =
        SeccompFilter::new(rules, mismatch, SeccompAction::Allow, arch).map_err(policy_err)?;
    let bpf: seccompiler::BpfProgram = filter.try_into().map_err(policy_err)?;
    Ok(bpf
        .into_iter()
        .map(|i| {
            u64::from(i.code)
                | (u64::from(i.jt) << 16)
                | (u64::from(i.jf) << 24)
                | (u64::from(i.k) << 32)
        })
        .collect())
}

/// squib's filters for the three categories (unlisted calls trap: `SIGSYS`, exit 148).
pub fn default_filters(hv: &HypervisorIoctls) -> Result<SeccompFilters> {
    filters_with(hv, SeccompAction::Trap)
}

/// The same lists with `SECCOMP_RET_LOG` for unlisted calls: nothing is denied, the kernel
/// audit-logs what would have been. For re-deriving the lists (`scripts/seccomp-derive.sh`);
/// the binary offers it in debug builds only (`SQUIB_SECCOMP_AUDIT=1`).
pub fn audit_filters(hv: &HypervisorIoctls) -> Result<SeccompFilters> {
    filters_with(hv, SeccompAction::Log)
}

fn filters_with(hv: &HypervisorIoctls, mismatch: SeccompAction) -> Result<SeccompFilters> {
    let mut map = HashMap::new();
    let vmm = compile(vmm(hv)?, mismatch.clone())?;
    let api = compile(api()?, mismatch.clone())?;
    let vcpu = compile(vcpu(hv)?, mismatch)?;
    map.insert(ThreadCategory::Vmm.name().to_owned(), vmm);
    map.insert(ThreadCategory::Api.name().to_owned(), api);
    map.insert(ThreadCategory::Vcpu.name().to_owned(), vcpu);
    SeccompFilters::from_map(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::{BPF_MAX_LEN, apply_filter};

    fn filters() -> SeccompFilters {
        default_filters(&HypervisorIoctls {
            vmm: vec![0xae01],
            vcpu: vec![0xae80],
            kick_signal: Some(libc::SIGUSR2),
        })
        .unwrap()
    }

    #[test]
    fn test_should_compile_every_category_within_the_kernel_limit() {
        let f = filters();
        for cat in ThreadCategory::ALL {
            let len = f.get(cat).len();
            assert!(len > 20 && len <= BPF_MAX_LEN, "{}: {len}", cat.name());
        }
    }

    /// In a forked child (filters are per thread, but a trap kills the whole process), install
    /// `category`'s filter, run `probe`, and exit 0; returns the child's wait status.
    fn in_child(category: ThreadCategory, probe: fn()) -> i32 {
        let f = filters();
        // SAFETY: the child only installs a filter, issues raw syscalls and `_exit`s; it never
        // returns into the test harness, so forking a multi-threaded process is sound here.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = if apply_filter(f.get(category)).is_ok() {
                probe();
                0
            } else {
                3
            };
            // SAFETY: `_exit` in the child, no destructors run.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for the child we just forked; `status` is a valid out pointer.
        unsafe { libc::waitpid(pid, &raw mut status, 0) };
        status
    }

    #[test]
    fn test_should_allow_listed_calls_and_trap_others() {
        fn allowed() {
            // SAFETY: harmless calls with valid arguments.
            unsafe {
                libc::syscall(libc::SYS_gettid);
                libc::syscall(libc::SYS_fcntl, 0, libc::F_GETFD);
            }
        }
        fn denied() {
            // SAFETY: getppid has no arguments; the filter traps it.
            unsafe { libc::syscall(libc::SYS_getppid) };
        }
        fn bad_ioctl() {
            // SAFETY: an unknown ioctl on stdin; the filter traps it first.
            unsafe { libc::syscall(libc::SYS_ioctl, 0, 0xdead) };
        }
        fn exec_mapping() {
            // SAFETY: an anonymous mapping request the filter traps (PROT_EXEC).
            unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_EXEC,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
        }
        for cat in ThreadCategory::ALL {
            let st = in_child(cat, allowed);
            assert!(
                libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
                "{cat:?}: {st:#x}"
            );
            for probe in [denied as fn(), bad_ioctl, exec_mapping] {
                let st = in_child(cat, probe);
                assert!(
                    libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGSYS,
                    "{cat:?}: {st:#x}"
                );
            }
        }
    }
}
