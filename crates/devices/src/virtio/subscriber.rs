//! Running a virtio device in an `event-manager` `EventManager` (the VMM's event loop).
//!
//! [`VirtioSubscriber`] is written once for every [`VirtioDevice`]: `init` registers the device's
//! queue eventfds (token = queue index) and its timer fds (token = [`TIMER_TOKEN_BASE`] + index);
//! `process` locks the device and calls [`VirtioDevice::process_queue_event`] or
//! [`VirtioDevice::process_timer`]. The fds never change over the device's life (a reset keeps
//! them), so registration happens once.
//!
//! Threading: the subscriber lives in the `EventManager` on the VMM thread and shares the device
//! (`Arc<Mutex<D>>`) with the device's transport on the bus.

use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, PoisonError};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};

use super::VirtioDevice;

/// Event token of timer 0; queue events use their queue index.
pub const TIMER_TOKEN_BASE: u32 = 1 << 16;

/// An `event-manager` subscriber that drives one virtio device.
pub struct VirtioSubscriber<D: VirtioDevice + ?Sized> {
    device: Arc<Mutex<D>>,
}

impl<D: VirtioDevice + ?Sized> std::fmt::Debug for VirtioSubscriber<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioSubscriber").finish_non_exhaustive()
    }
}

impl<D: VirtioDevice + ?Sized> VirtioSubscriber<D> {
    /// A subscriber for `device` (shared with its transport).
    pub fn new(device: Arc<Mutex<D>>) -> Self {
        Self { device }
    }

    /// The device.
    pub fn device(&self) -> &Arc<Mutex<D>> {
        &self.device
    }
}

fn token(index: usize, base: u32) -> Option<u32> {
    u32::try_from(index)
        .ok()
        .filter(|&i| i < TIMER_TOKEN_BASE)
        .map(|i| base + i)
}

impl<D: VirtioDevice + ?Sized> MutEventSubscriber for VirtioSubscriber<D> {
    fn init(&mut self, ops: &mut EventOps) {
        let device = self.device.lock().unwrap_or_else(PoisonError::into_inner);
        let queues = device.queue_events().iter().map(AsRawFd::as_raw_fd);
        let timers = device.timer_events().iter().map(AsRawFd::as_raw_fd);
        let fds = queues.enumerate().map(|(i, fd)| (token(i, 0), fd)).chain(
            timers
                .enumerate()
                .map(|(i, fd)| (token(i, TIMER_TOKEN_BASE), fd)),
        );
        for (token, fd) in fds {
            let Some(token) = token else {
                tracing::error!("virtio device has too many queues or timers to register");
                continue;
            };
            if let Err(err) = ops.add(Events::with_data_raw(fd, token, EventSet::IN)) {
                tracing::error!("failed to register a virtio device fd: {err}");
            }
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let data = events.data();
        let mut device = self.device.lock().unwrap_or_else(PoisonError::into_inner);
        match data.checked_sub(TIMER_TOKEN_BASE) {
            None => device.process_queue_event(data as usize),
            Some(timer) => device.process_timer(timer as usize),
        }
    }
}
