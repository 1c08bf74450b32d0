//! Race-free vCPU kicks: `immediate_exit` set from a real-time signal handler.
//!
//! Scheme (Firecracker's, plus a latch):
//!
//! 1. While a vCPU is inside [`crate::KvmVcpu`]'s `run`, a thread-local points at its `kvm_run`
//!    page and its [`KickState`] records the running pthread.
//! 2. [`KvmKicker::kick`] sets the `pending` latch, then (under the state lock) sends
//!    `SIGRTMIN + KICK_SIGNAL_OFFSET` to the recorded thread, if any.
//! 3. The handler sets `kvm_run.immediate_exit = 1` through the thread-local pointer, so an
//!    in-flight `KVM_RUN` returns `EINTR` and one about to start returns at once.
//! 4. `run` checks the latch after publishing itself and before `KVM_RUN`, so a kick that lands
//!    before the thread is registered is never lost.
//!
//! The lock guarantees the recorded pthread is alive while it is signalled: `run` must take the
//! lock to unregister before it returns. Spurious `Interrupted` exits are possible and allowed.

use std::cell::Cell;
use std::os::raw::{c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use kvm_bindings::kvm_run;
use squib_hv::{HvError, VcpuKicker};
use vmm_sys_util::signal::{SIGRTMIN, register_signal_handler};

/// Offset from `SIGRTMIN` of the kick signal (Firecracker uses `SIGRTMIN + 0` too).
pub const KICK_SIGNAL_OFFSET: c_int = 0;

thread_local! {
    /// `kvm_run` of the vCPU currently inside `run` on this thread, or null.
    static RUNNING_KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn handle_kick(_num: c_int, _info: *mut libc::siginfo_t, _ctx: *mut c_void) {
    // A const-initialised thread-local without destructor is plain TLS: async-signal-safe.
    let ptr = RUNNING_KVM_RUN.with(Cell::get);
    if !ptr.is_null() {
        // SAFETY: the pointer is non-null only while `RunGuard` is alive on this very thread,
        // i.e. while the owning `VcpuFd` (and so its mmapped `kvm_run`) exists. Writing the
        // one-byte `immediate_exit` field is the KVM-documented way to abort `KVM_RUN`.
        unsafe { std::ptr::addr_of_mut!((*ptr).immediate_exit).write_volatile(1) };
    }
}

/// The kick signal number.
pub fn kick_signal() -> c_int {
    SIGRTMIN() + KICK_SIGNAL_OFFSET
}

/// Installs the process-wide kick handler once.
pub(crate) fn install_kick_handler() -> Result<(), HvError> {
    static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            register_signal_handler(kick_signal(), handle_kick)
                .map_err(vmm_sys_util::errno::Error::errno)
        })
        .map_err(|errno| HvError::errno("install vCPU kick signal handler", errno))
}

/// Shared between a vCPU and its kickers.
#[derive(Debug, Default)]
pub(crate) struct KickState {
    pending: AtomicBool,
    thread: Mutex<Option<libc::pthread_t>>,
}

impl KickState {
    fn lock(&self) -> MutexGuard<'_, Option<libc::pthread_t>> {
        // The guarded value is a plain `Option<pthread_t>`; a poisoned lock still holds a valid one.
        self.thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Consumes a pending kick.
    pub(crate) fn take_pending(&self) -> bool {
        self.pending.swap(false, Ordering::SeqCst)
    }
}

/// Publishes "this thread is running this vCPU" for the duration of one `run`.
pub(crate) struct RunGuard<'a> {
    state: &'a KickState,
}

impl<'a> RunGuard<'a> {
    /// Registers the current thread; `run` must call [`KickState::take_pending`] afterwards.
    pub(crate) fn enter(state: &'a KickState, run: *mut kvm_run) -> Self {
        RUNNING_KVM_RUN.with(|c| c.set(run));
        // SAFETY: `pthread_self` has no preconditions.
        let me = unsafe { libc::pthread_self() };
        *state.lock() = Some(me);
        Self { state }
    }
}

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        *self.state.lock() = None;
        RUNNING_KVM_RUN.with(|c| c.set(std::ptr::null_mut()));
    }
}

/// Kick handle of a [`crate::KvmVcpu`].
#[derive(Debug)]
pub struct KvmKicker {
    pub(crate) state: std::sync::Arc<KickState>,
}

impl VcpuKicker for KvmKicker {
    fn kick(&self) {
        self.state.pending.store(true, Ordering::SeqCst);
        let thread = self.state.lock();
        if let Some(t) = *thread {
            // SAFETY: `t` is the pthread currently inside `run`; it cannot return from `run` (and
            // so cannot exit) while we hold the lock, because `RunGuard::drop` takes it first.
            // The signal has a handler installed before any vCPU could run.
            unsafe { libc::pthread_kill(t, kick_signal()) };
        }
    }
}
