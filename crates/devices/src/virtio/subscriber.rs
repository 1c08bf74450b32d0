//! Running a virtio device in an `event-manager` `EventManager` (the VMM's event loop).
//!
//! [`VirtioSubscriber`] is written once for every [`VirtioDevice`]: `init` registers the device's
//! queue eventfds (token = queue index), its timer fds (token = [`TIMER_TOKEN_BASE`] + index) and
//! its I/O completion eventfds (token = [`COMPLETION_TOKEN_BASE`] + index); `process` locks the
//! device and calls [`VirtioDevice::process_queue_event`], [`VirtioDevice::process_timer`] or
//! [`VirtioDevice::process_completion_event`]. The fds never change over the device's life (a reset keeps
//! them), so registration happens once. Host event sources ([`super::EventSource`]: taps, Unix
//! sockets) use token [`HOST_TOKEN_BASE`] + the device's token, are registered at `init` from
//! [`VirtioDevice::host_event_sources`], and change at runtime: after every dispatched event the
//! subscriber applies [`VirtioDevice::take_event_source_changes`] to the event loop.
//!
//! Threading: the subscriber lives in the `EventManager` on the VMM thread and shares the device
//! (`Arc<Mutex<D>>`) with the device's transport on the bus.

use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, PoisonError};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};

use super::{EventSource, EventSourceChange, MAX_HOST_TOKEN, VirtioDevice};

/// Event token of timer 0; queue events use their queue index.
pub const TIMER_TOKEN_BASE: u32 = 1 << 16;
/// Event token of completion event 0.
pub const COMPLETION_TOKEN_BASE: u32 = 2 << 16;
/// Event token of host event source token 0 ([`super::EventSource`]).
pub const HOST_TOKEN_BASE: u32 = 3 << 16;

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
        let completions = device.completion_events().iter().map(AsRawFd::as_raw_fd);
        let fds = queues
            .enumerate()
            .map(|(i, fd)| (token(i, 0), fd))
            .chain(
                timers
                    .enumerate()
                    .map(|(i, fd)| (token(i, TIMER_TOKEN_BASE), fd)),
            )
            .chain(
                completions
                    .enumerate()
                    .map(|(i, fd)| (token(i, COMPLETION_TOKEN_BASE), fd)),
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
        for source in device.host_event_sources() {
            apply_change(ops, EventSourceChange::Add(source));
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let data = events.data();
        let mut device = self.device.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(host) = data.checked_sub(HOST_TOKEN_BASE) {
            device.process_host_event(host, events.event_set());
        } else if let Some(completion) = data.checked_sub(COMPLETION_TOKEN_BASE) {
            device.process_completion_event(completion as usize);
        } else if let Some(timer) = data.checked_sub(TIMER_TOKEN_BASE) {
            device.process_timer(timer as usize);
        } else {
            device.process_queue_event(data as usize);
        }
        let changes = device.take_event_source_changes();
        if !changes.is_empty() {
            for change in changes {
                apply_change(ops, change);
            }
            device.event_source_changes_applied();
        }
    }
}

/// Applies one host event-source change to the event loop (errors are logged: the device keeps
/// running without that source).
fn apply_change(ops: &mut EventOps, change: EventSourceChange) {
    let event = |s: EventSource| {
        (s.token < MAX_HOST_TOKEN)
            .then(|| Events::with_data_raw(s.fd, HOST_TOKEN_BASE + s.token, s.events))
    };
    let result = match change {
        EventSourceChange::Add(s) => event(s).map(|e| ops.add(e)),
        EventSourceChange::Modify(s) => event(s).map(|e| ops.modify(e)),
        EventSourceChange::Remove(s) => event(s).map(|e| ops.remove(e)),
    };
    match result {
        None => tracing::error!("virtio device host event token out of range: {change:?}"),
        Some(Err(err)) => tracing::error!("virtio device event source {change:?} failed: {err}"),
        Some(Ok(())) => {}
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use event_manager::{EventManager, SubscriberOps};

    use super::*;
    use crate::rate_limiter::{RateLimiter, TokenBucket};
    use crate::virtio::rng::Entropy;
    use crate::virtio::test_utils::{RecordingInterrupt, TestQueue, guest_memory, wr};

    #[test]
    fn test_queue_and_timer_events_are_dispatched() {
        // One op per millisecond on the real clock: the second request waits for the timer.
        let ops = TokenBucket::new(1, 0, 1);
        let dev = Arc::new(Mutex::new(
            Entropy::new(RateLimiter::new(None, ops)).unwrap(),
        ));
        let mem = guest_memory(0x1_0000);
        let mut q = TestQueue::new(&mem, 0, 8);
        dev.lock()
            .unwrap()
            .activate(
                mem.clone(),
                RecordingInterrupt::new(),
                vec![q.create_queue()],
            )
            .unwrap();
        let mut em = EventManager::<VirtioSubscriber<Entropy>>::new().unwrap();
        let sub = VirtioSubscriber::new(dev.clone());
        assert!(format!("{sub:?}").starts_with("VirtioSubscriber"));
        em.add_subscriber(sub);

        q.add_chain(&[wr(0x4000, 16)]);
        q.add_chain(&[wr(0x5000, 16)]);
        dev.lock().unwrap().queue_events()[0].write(1).unwrap();
        assert_eq!(em.run_with_timeout(10_000).unwrap(), 1);
        assert_eq!(q.used_idx(), 1);
        // The rate-limiter timer fires and the subscriber resumes the queue. No deadline is
        // asserted: each round blocks until an event arrives.
        for _ in 0..100 {
            if q.used_idx() == 2 {
                break;
            }
            em.run_with_timeout(10_000).unwrap();
        }
        assert_eq!(q.used_idx(), 2);
        let m = dev.lock().unwrap().metrics().clone();
        assert_eq!(m.rate_limiter_event_count.count(), 1);
        assert_eq!(m.entropy_rate_limiter_throttled.count(), 1);
    }

    #[test]
    fn test_tokens() {
        assert_eq!(token(3, 0), Some(3));
        assert_eq!(token(0, TIMER_TOKEN_BASE), Some(TIMER_TOKEN_BASE));
        assert_eq!(token(1 << 20, 0), None);
        assert_eq!(
            token(2, COMPLETION_TOKEN_BASE),
            Some(COMPLETION_TOKEN_BASE + 2)
        );
    }
}
