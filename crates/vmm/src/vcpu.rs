//! vCPU threads and their state machine.
//!
//! Each vCPU lives on its own OS thread named `fc_vcpu <n>` (Firecracker's name, which launchers
//! pin by). The thread creates its vCPU through [`squib_hv::Vm::create_vcpu`], applies the boot
//! state, reports ready and then waits **paused** until the builder resumes every vCPU, so no
//! vCPU runs (or sends an IPI) before all exist.
//!
//! States: `Paused` ⇄ `Running` → `Exited`. Requests ([`VcpuEvent`]) arrive over a channel and
//! are noticed by a running vCPU through a kick ([`squib_hv::VcpuKicker`]); each request carries
//! a sequence number and is acknowledged with a [`VcpuResponse`] carrying the same number, so a
//! late acknowledgement of a request that timed out can never answer the next request. A paused
//! vCPU saves its state on request ([`VcpuEvent::SaveState`], on its own thread, as HVF needs);
//! a vCPU is started either from a boot state or from a saved state ([`VcpuStart`]). Guest-triggered terminations (reset, shutdown, fatal
//! exits) record an [`ExitCode`] in the shared [`ExitSignal`] and wake the VMM thread.

use std::{
    sync::{
        Arc, Mutex,
        mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError, channel},
    },
    thread::JoinHandle,
    time::Duration,
};

use squib_core::metrics::METRICS;
use squib_devices::Bus;
use squib_hv::{
    SystemEventKind, Vcpu, VcpuExit, VcpuIo, VcpuKicker, VcpuStateBlob, Vm, X86BootState,
};
use vmm_sys_util::eventfd::EventFd;

use crate::exit_code::ExitCode;

/// How long the VMM waits for one vCPU to acknowledge a request.
pub const VCPU_ACK_TIMEOUT: Duration = Duration::from_secs(2);

/// Requests to a vCPU thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VcpuEvent {
    /// Stop running guest code; acknowledge with [`VcpuResponse::Paused`].
    Pause,
    /// Run guest code; acknowledge with [`VcpuResponse::Resumed`].
    Resume,
    /// Leave the thread.
    Finish,
    /// Save the vCPU's state (only while paused); answered with [`VcpuResponse::Saved`].
    SaveState,
}

/// How a vCPU thread initialises its vCPU.
#[derive(Debug)]
pub enum VcpuStart {
    /// A fresh boot: registers, CPUID, MSRs computed by `squib-arch`.
    Boot(Box<X86BootState>),
    /// A snapshot restore: the backend's saved state.
    Restore(Box<VcpuStateBlob>),
}

/// Acknowledgements from a vCPU thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VcpuResponse {
    /// The vCPU is created and configured (paused).
    Ready,
    /// The vCPU could not be created or configured.
    SetupFailed(String),
    /// Now paused.
    Paused,
    /// Now running.
    Resumed,
    /// The saved state, or why it could not be saved (not paused, backend error).
    Saved(Result<Box<VcpuStateBlob>, String>),
}

/// The first termination reason wins; the VMM thread is woken through `evt`.
#[derive(Debug)]
pub struct ExitSignal {
    code: Mutex<Option<ExitCode>>,
    evt: EventFd,
}

impl ExitSignal {
    /// A signal waking `evt`.
    pub fn new(evt: EventFd) -> Self {
        Self {
            code: Mutex::new(None),
            evt,
        }
    }

    /// Record `code` (if none yet) and wake the VMM.
    pub fn raise(&self, code: ExitCode) {
        if let Ok(mut slot) = self.code.lock() {
            slot.get_or_insert(code);
        }
        let _ = self.evt.write(1);
    }

    /// The recorded code; `Ok` if the wake-up came from elsewhere (the i8042 reset line).
    pub fn code(&self) -> ExitCode {
        self.code
            .lock()
            .ok()
            .and_then(|c| *c)
            .unwrap_or(ExitCode::Ok)
    }

    /// The eventfd the VMM thread polls.
    pub fn event(&self) -> &EventFd {
        &self.evt
    }
}

/// Port-I/O and MMIO dispatch onto the device buses; unclaimed reads see all ones. Every exit is
/// counted, with its handling time, in the `vcpu` metric group (as Firecracker).
#[derive(Debug, Clone)]
pub struct BusIo {
    /// Port-I/O bus.
    pub pio: Arc<Bus>,
    /// MMIO bus.
    pub mmio: Arc<Bus>,
    /// Guest RAM for VMM-side instruction emulation ([`crate::emulation`]); set only when the
    /// backend reports `emulated_guests` (nested `kvm_pvm`).
    pub emulation_memory: Option<squib_core::GuestMemoryMmap>,
}

impl VcpuIo for BusIo {
    fn pio_read(&mut self, port: u16, data: &mut [u8]) {
        let vcpu = &METRICS.vcpu;
        let _t = vcpu.exit_io_in_agg.start();
        if !self.pio.read(u64::from(port), data) {
            data.fill(0xff);
        }
        vcpu.exit_io_in.inc();
    }

    fn pio_write(&mut self, port: u16, data: &[u8]) {
        let vcpu = &METRICS.vcpu;
        let _t = vcpu.exit_io_out_agg.start();
        let _ = self.pio.write(u64::from(port), data);
        vcpu.exit_io_out.inc();
    }

    fn mmio_read(&mut self, addr: u64, data: &mut [u8]) {
        let vcpu = &METRICS.vcpu;
        let _t = vcpu.exit_mmio_read_agg.start();
        if !self.mmio.read(addr, data) {
            data.fill(0xff);
        }
        vcpu.exit_mmio_read.inc();
    }

    fn mmio_write(&mut self, addr: u64, data: &[u8]) {
        let vcpu = &METRICS.vcpu;
        let _t = vcpu.exit_mmio_write_agg.start();
        let _ = self.mmio.write(addr, data);
        vcpu.exit_mmio_write.inc();
    }
}

/// Everything a vCPU thread needs.
#[derive(Debug)]
pub struct VcpuSetup {
    /// vCPU index (0 = boot processor).
    pub index: u32,
    /// The VM.
    pub vm: Arc<dyn Vm>,
    /// Boot or restore state.
    pub start: VcpuStart,
    /// Device buses.
    pub io: BusIo,
    /// Where to report termination.
    pub exit: Arc<ExitSignal>,
}

/// The VMM's handle on one vCPU thread.
#[derive(Debug)]
pub struct VcpuHandle {
    index: u32,
    next_seq: u64,
    events: Sender<(u64, VcpuEvent)>,
    responses: Receiver<(u64, VcpuResponse)>,
    kicker: Arc<dyn VcpuKicker>,
    thread: Option<JoinHandle<()>>,
}

impl VcpuHandle {
    /// Spawn the thread, create and configure the vCPU there, and wait until it is ready.
    pub fn spawn(setup: VcpuSetup) -> Result<Self, String> {
        let index = setup.index;
        let (ev_tx, ev_rx) = channel();
        let (resp_tx, resp_rx) = channel();
        let (kick_tx, kick_rx) = channel();
        let thread = std::thread::Builder::new()
            .name(format!("fc_vcpu {index}"))
            .spawn(move || vcpu_thread(setup, &ev_rx, &resp_tx, &kick_tx))
            .map_err(|e| e.to_string())?;
        let kicker = kick_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| "the vCPU thread did not start".to_owned())?;
        let mut handle = Self {
            index,
            next_seq: 1,
            events: ev_tx,
            responses: resp_rx,
            kicker,
            thread: Some(thread),
        };
        match handle.await_response(0) {
            Some(VcpuResponse::Ready) => Ok(handle),
            Some(VcpuResponse::SetupFailed(why)) => {
                handle.join();
                Err(why)
            }
            other => Err(format!("unexpected vCPU answer: {other:?}")),
        }
    }

    /// Send `event`, kick the vCPU, and wait for the acknowledgement of this very request
    /// (acknowledgements of earlier, timed-out requests are discarded).
    pub fn request(&mut self, event: VcpuEvent) -> Option<VcpuResponse> {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.events.send((seq, event)).ok()?;
        self.kicker.kick();
        self.await_response(seq)
    }

    fn await_response(&self, seq: u64) -> Option<VcpuResponse> {
        let deadline = std::time::Instant::now() + VCPU_ACK_TIMEOUT;
        loop {
            let left = deadline.checked_duration_since(std::time::Instant::now())?;
            match self.responses.recv_timeout(left).ok()? {
                (s, r) if s == seq => return Some(r),
                (s, r) => tracing::warn!(
                    "vCPU {}: discarding a late answer to request {s}: {r:?}",
                    self.index
                ),
            }
        }
    }

    /// The vCPU index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Ask the thread to finish and join it.
    pub fn finish(&mut self) {
        let _ = self.events.send((0, VcpuEvent::Finish));
        self.kicker.kick();
        self.join();
    }

    fn join(&mut self) {
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("vCPU {} thread panicked", self.index);
        }
    }
}

impl Drop for VcpuHandle {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.finish();
        }
    }
}

fn vcpu_thread(
    setup: VcpuSetup,
    events: &Receiver<(u64, VcpuEvent)>,
    responses: &Sender<(u64, VcpuResponse)>,
    kick_tx: &Sender<Arc<dyn VcpuKicker>>,
) {
    let VcpuSetup {
        index,
        vm,
        start,
        mut io,
        exit,
    } = setup;
    let mut vcpu = match vm.create_vcpu(index) {
        Ok(v) => v,
        Err(e) => {
            let _ = kick_tx.send(Arc::new(NoKick));
            let _ = responses.send((0, VcpuResponse::SetupFailed(e.to_string())));
            return;
        }
    };
    let _ = kick_tx.send(vcpu.kicker());
    let configured = match start {
        VcpuStart::Boot(boot_state) => match vcpu.as_x86() {
            Some(x86) => x86.apply_boot_state(&boot_state).map_err(|e| e.to_string()),
            None => Err("the backend has no x86_64 vCPU support".to_owned()),
        },
        VcpuStart::Restore(state) => vcpu.restore_state(&state).map_err(|e| e.to_string()),
    };
    if let Err(why) = configured {
        let _ = responses.send((0, VcpuResponse::SetupFailed(why)));
        return;
    }
    // seccomp: after the setup ioctls, before any guest code runs (Firecracker's order).
    if let Err(e) = squib_sys::install_thread_filter(squib_sys::ThreadCategory::Vcpu) {
        let why =
            format!("Failed to set the requested seccomp filters on vCPU {index}: Error: {e}");
        let _ = responses.send((0, VcpuResponse::SetupFailed(why)));
        return;
    }
    let _ = responses.send((0, VcpuResponse::Ready));
    run_state_machine(index, vcpu.as_mut(), events, responses, &mut io, &exit);
}

#[derive(Debug)]
struct NoKick;
impl VcpuKicker for NoKick {
    fn kick(&self) {}
}

enum Next {
    Continue,
    Stop,
}

fn run_state_machine(
    index: u32,
    vcpu: &mut dyn Vcpu,
    events: &Receiver<(u64, VcpuEvent)>,
    responses: &Sender<(u64, VcpuResponse)>,
    io: &mut BusIo,
    exit: &ExitSignal,
) {
    let mut running = false;
    loop {
        // Serve requests: block while paused, poll while running.
        let event = if running {
            match events.try_recv() {
                Ok(e) => Some(e),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => return,
            }
        } else {
            match events.recv_timeout(Duration::from_secs(1)) {
                Ok(e) => Some(e),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        };
        match event {
            Some((seq, VcpuEvent::Pause)) => {
                running = false;
                let _ = responses.send((seq, VcpuResponse::Paused));
                continue;
            }
            Some((seq, VcpuEvent::Resume)) => {
                running = true;
                let _ = responses.send((seq, VcpuResponse::Resumed));
            }
            Some((seq, VcpuEvent::SaveState)) => {
                // Only a paused vCPU (stopped after a kick, or never run) has no pending exit.
                let saved = if running {
                    Err("the vCPU is running".to_owned())
                } else {
                    vcpu.save_state().map(Box::new).map_err(|e| e.to_string())
                };
                let _ = responses.send((seq, VcpuResponse::Saved(saved)));
                continue;
            }
            Some((_, VcpuEvent::Finish)) => return,
            None => {}
        }
        if !running {
            continue;
        }
        if let Next::Stop = run_until_event(index, vcpu, io, exit) {
            // Terminated by the guest: wait for Finish (answer pauses so the VMM never blocks).
            while let Ok((seq, e)) = events.recv() {
                let answer = match e {
                    VcpuEvent::Finish => return,
                    VcpuEvent::Pause => VcpuResponse::Paused,
                    VcpuEvent::Resume => VcpuResponse::Resumed,
                    VcpuEvent::SaveState => {
                        VcpuResponse::Saved(Err("the vCPU has exited".to_owned()))
                    }
                };
                let _ = responses.send((seq, answer));
            }
            return;
        }
    }
}

/// Run guest code until a kick (→ `Continue`) or a terminal exit (→ `Stop`).
fn run_until_event(index: u32, vcpu: &mut dyn Vcpu, io: &mut BusIo, exit: &ExitSignal) -> Next {
    loop {
        match vcpu.run(io) {
            Ok(VcpuExit::Handled) => {}
            Ok(VcpuExit::Interrupted) => return Next::Continue,
            Ok(VcpuExit::Halted) => {
                tracing::info!("vCPU {index} halted.");
                exit.raise(ExitCode::Ok);
                return Next::Stop;
            }
            Ok(VcpuExit::SystemEvent(kind)) => {
                tracing::info!("Received KVM_SYSTEM_EVENT: type: {kind:?}");
                let code = match kind {
                    SystemEventKind::Shutdown | SystemEventKind::Reset => ExitCode::Ok,
                    _ => ExitCode::GenericError,
                };
                exit.raise(code);
                return Next::Stop;
            }
            Ok(VcpuExit::Shutdown) => {
                tracing::error!("vCPU {index}: guest triple fault (KVM_EXIT_SHUTDOWN).");
                exit.raise(ExitCode::GenericError);
                return Next::Stop;
            }
            Ok(VcpuExit::InternalError(e)) => {
                if let Some(memory) = io.emulation_memory.as_ref()
                    && crate::emulation::complete(index, vcpu, memory, &e).is_ok()
                {
                    continue;
                }
                METRICS.vcpu.failures.inc();
                tracing::error!(
                    "Received KVM_EXIT_INTERNAL_ERROR signal on vCPU {index}: {:?} suberror {} rip {:x?} insn {:02x?}",
                    e.kind,
                    e.suberror,
                    e.rip,
                    e.insn
                );
                exit.raise(ExitCode::GenericError);
                return Next::Stop;
            }
            Ok(VcpuExit::FailEntry {
                hardware_reason,
                cpu,
            }) => {
                METRICS.vcpu.failures.inc();
                tracing::error!(
                    "vCPU {index}: KVM_EXIT_FAIL_ENTRY reason {hardware_reason:#x} on cpu {cpu}"
                );
                exit.raise(ExitCode::GenericError);
                return Next::Stop;
            }
            Ok(other) => {
                METRICS.vcpu.failures.inc();
                tracing::error!("vCPU {index}: unexpected exit {other:?}");
                exit.raise(ExitCode::GenericError);
                return Next::Stop;
            }
            Err(e) => {
                METRICS.vcpu.failures.inc();
                tracing::error!("vCPU {index}: run failed: {e}");
                exit.raise(ExitCode::GenericError);
                return Next::Stop;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handle whose "vCPU thread" is the test: it sees the requests and answers them.
    type Fake = (
        VcpuHandle,
        Receiver<(u64, VcpuEvent)>,
        Sender<(u64, VcpuResponse)>,
    );

    fn fake() -> Fake {
        let (ev_tx, ev_rx) = channel();
        let (resp_tx, resp_rx) = channel();
        let handle = VcpuHandle {
            index: 0,
            next_seq: 1,
            events: ev_tx,
            responses: resp_rx,
            kicker: Arc::new(NoKick),
            thread: None,
        };
        (handle, ev_rx, resp_tx)
    }

    #[test]
    fn test_late_ack_never_answers_the_next_request() {
        let (mut handle, events, responses) = fake();
        // Request 1 (Pause) gets no answer in time.
        assert_eq!(handle.request(VcpuEvent::Pause), None, "timed out");
        assert_eq!(events.recv().unwrap(), (1, VcpuEvent::Pause));
        // Its acknowledgement arrives late, just before request 2's own answer: request 2
        // must get its own answer, not the stale one.
        responses.send((1, VcpuResponse::Paused)).unwrap();
        responses.send((2, VcpuResponse::Resumed)).unwrap();
        assert_eq!(
            handle.request(VcpuEvent::Resume),
            Some(VcpuResponse::Resumed)
        );
        assert_eq!(events.recv().unwrap(), (2, VcpuEvent::Resume));
    }

    #[test]
    fn test_exit_signal_first_code_wins() {
        let evt = EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap();
        let sig = ExitSignal::new(evt);
        assert_eq!(sig.code(), ExitCode::Ok);
        sig.raise(ExitCode::GenericError);
        sig.raise(ExitCode::Ok);
        assert_eq!(sig.code(), ExitCode::GenericError);
        assert_eq!(sig.event().read().unwrap(), 2);
    }
}
