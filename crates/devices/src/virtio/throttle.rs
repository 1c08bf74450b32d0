//! A [`RateLimiter`] paired with the timerfd that wakes the event loop when it unblocks.
//!
//! The limiter itself owns no fd: after a refused consume it reports
//! [`RateLimiter::blocked_for`]. [`Throttle`] arms a `TimerFd` for that delay and exposes it
//! through [`VirtioDevice::timer_events`](super::VirtioDevice::timer_events); when the event loop
//! sees it readable the device calls [`Throttle::on_timer`] and resumes its queue.
//!
//! `on_timer` disarms the timer with `timerfd_settime` instead of reading it: re-arming resets the
//! expiration count (so a level-triggered epoll stops reporting it) and never blocks, even when a
//! test calls it before the timer fired.
//!
//! [`TimedLimiter`] is the same logic with the timer owned by the caller (virtio-net keeps its RX
//! and TX timers in one array).
//!
//! Owned by one device; not synchronized.

use std::io;
use std::time::Duration;

use vmm_sys_util::timerfd::TimerFd;

use crate::rate_limiter::{BucketUpdate, RateLimiter, RateLimiterError, TokenType};

/// The shortest delay the timer is armed for (a zero `timerfd` delay would disarm it).
const MIN_DELAY: Duration = Duration::from_micros(1);

/// A rate limiter and its wake-up timer.
#[derive(Debug)]
pub(crate) struct Throttle {
    inner: TimedLimiter,
    timer: [TimerFd; 1],
}

impl Throttle {
    /// Wraps `limiter` with a fresh, disarmed timer.
    pub(crate) fn new(limiter: RateLimiter) -> io::Result<Self> {
        Ok(Self {
            inner: TimedLimiter::new(limiter),
            timer: [TimerFd::new()?],
        })
    }

    /// The timer, as a one-element slice for `timer_events`.
    pub(crate) fn timer_fds(&self) -> &[TimerFd] {
        &self.timer
    }

    /// The limiter.
    pub(crate) fn limiter(&self) -> &RateLimiter {
        self.inner.limiter()
    }

    /// Whether consumes fail until the timer fires.
    pub(crate) fn is_blocked(&self) -> bool {
        self.inner.is_blocked()
    }

    /// Consumes one operation and `bytes` bytes, both or neither. On refusal the limiter is
    /// blocked and the timer armed; returns `Err` only if arming the timer failed (the request
    /// is still refused).
    pub(crate) fn consume(&mut self, bytes: u64) -> Result<bool, io::Error> {
        self.inner.consume(bytes, &mut self.timer[0])
    }

    /// Handles the timer firing: disarms it and unblocks the limiter. `Err` if the limiter was not
    /// blocked (a spurious event).
    pub(crate) fn on_timer(&mut self) -> Result<(), RateLimiterError> {
        self.inner.on_timer(&mut self.timer[0])
    }

    /// Unblocks and disarms (device reset). The buckets keep their configuration and credit.
    pub(crate) fn reset(&mut self) {
        self.inner.reset(&mut self.timer[0]);
    }

    /// Changes the buckets (`PATCH` with a `rate_limiter`).
    pub(crate) fn update(&mut self, bytes: BucketUpdate, ops: BucketUpdate) {
        self.inner.update(bytes, ops);
    }
}

/// A rate limiter whose wake-up timer is owned by the caller (a device with several limiters
/// keeps their timers side by side, so that `timer_events` is one slice). Each method that may
/// arm or disarm the timer takes it; always pass the same one.
#[derive(Debug)]
pub(crate) struct TimedLimiter {
    limiter: RateLimiter,
    armed: bool,
}

impl TimedLimiter {
    /// Wraps `limiter`; its timer starts disarmed.
    pub(crate) fn new(limiter: RateLimiter) -> Self {
        Self {
            limiter,
            armed: false,
        }
    }

    /// The limiter.
    pub(crate) fn limiter(&self) -> &RateLimiter {
        &self.limiter
    }

    /// Whether consumes fail until the timer fires.
    pub(crate) fn is_blocked(&self) -> bool {
        self.limiter.is_blocked()
    }

    /// [`Throttle::consume`] with `timer`.
    pub(crate) fn consume(&mut self, bytes: u64, timer: &mut TimerFd) -> Result<bool, io::Error> {
        if !self.limiter.consume(1, TokenType::Ops) {
            self.arm(timer)?;
            return Ok(false);
        }
        if bytes > 0 && !self.limiter.consume(bytes, TokenType::Bytes) {
            self.limiter.manual_replenish(1, TokenType::Ops);
            self.arm(timer)?;
            return Ok(false);
        }
        // An over-consumption lets the request through but blocks what follows.
        if self.limiter.is_blocked() {
            self.arm(timer)?;
        }
        Ok(true)
    }

    /// Gives back one operation and `bytes` bytes consumed for a request that did not happen
    /// after all (a frame the MMDS stack took instead of the tap).
    pub(crate) fn replenish(&mut self, bytes: u64) {
        self.limiter.manual_replenish(1, TokenType::Ops);
        self.limiter.manual_replenish(bytes, TokenType::Bytes);
    }

    fn arm(&mut self, timer: &mut TimerFd) -> io::Result<()> {
        if self.armed {
            return Ok(());
        }
        let delay = self
            .limiter
            .blocked_for()
            .unwrap_or_default()
            .max(MIN_DELAY);
        timer.reset(delay, None)?;
        self.armed = true;
        Ok(())
    }

    /// [`Throttle::on_timer`] with `timer`.
    pub(crate) fn on_timer(&mut self, timer: &mut TimerFd) -> Result<(), RateLimiterError> {
        self.disarm(timer);
        self.limiter.event_handler()
    }

    fn disarm(&mut self, timer: &mut TimerFd) {
        // Clearing cannot fail on a valid timerfd; if it did, the next wake-up is merely spurious.
        let _ = timer.clear();
        self.armed = false;
    }

    /// [`Throttle::reset`] with `timer`.
    pub(crate) fn reset(&mut self, timer: &mut TimerFd) {
        self.disarm(timer);
        let _ = self.limiter.event_handler();
    }

    /// [`Throttle::update`].
    pub(crate) fn update(&mut self, bytes: BucketUpdate, ops: BucketUpdate) {
        self.limiter.update_buckets(bytes, ops);
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::sync::Arc;

    use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

    use super::*;
    use crate::rate_limiter::{FakeClock, TokenBucket};

    fn ops_limited(size: u64, refill_ms: u64, clock: &FakeClock) -> Throttle {
        let clock: Arc<FakeClock> = Arc::new(clock.clone());
        let ops = TokenBucket::with_clock(size, 0, refill_ms, clock.clone());
        Throttle::new(RateLimiter::with_clock(None, ops, clock)).unwrap()
    }

    #[test]
    fn test_throttle_blocks_arms_and_resumes() {
        let clock = FakeClock::new();
        let mut t = ops_limited(2, 1000, &clock);
        assert!(t.consume(0).unwrap());
        assert!(t.consume(0).unwrap());
        assert!(!t.consume(0).unwrap());
        assert!(t.is_blocked());
        assert!(t.timer[0].is_armed().unwrap());
        assert!(!t.consume(0).unwrap(), "stays blocked until the timer");
        clock.advance(Duration::from_secs(1));
        t.on_timer().unwrap();
        assert!(!t.timer[0].is_armed().unwrap());
        assert!(t.consume(0).unwrap());
        assert!(t.on_timer().is_err(), "spurious");
    }

    #[test]
    fn test_throttle_bytes_refusal_gives_the_op_back() {
        let clock = FakeClock::new();
        let c: Arc<FakeClock> = Arc::new(clock.clone());
        let bw = TokenBucket::with_clock(100, 0, 1000, c.clone());
        let ops = TokenBucket::with_clock(10, 0, 1000, c.clone());
        let mut t = Throttle::new(RateLimiter::with_clock(bw, ops, c)).unwrap();
        assert!(t.consume(60).unwrap());
        assert!(!t.consume(60).unwrap());
        assert_eq!(t.limiter().ops().unwrap().budget(), 9);
        t.reset();
        assert!(!t.is_blocked());
    }

    #[test]
    fn test_on_timer_resets_expirations_without_reading() {
        let clock = FakeClock::new();
        let mut t = ops_limited(1, 1, &clock);
        let epoll = Epoll::new().unwrap();
        epoll
            .ctl(
                ControlOperation::Add,
                t.timer[0].as_raw_fd(),
                EpollEvent::new(EventSet::IN, 7),
            )
            .unwrap();
        assert!(t.consume(0).unwrap());
        assert!(!t.consume(0).unwrap());
        // Wait (without a deadline assertion) until the armed timer expires.
        let mut events = [EpollEvent::default(); 1];
        while epoll.wait(1000, &mut events).unwrap() == 0 {}
        t.on_timer().unwrap();
        assert_eq!(epoll.wait(0, &mut events).unwrap(), 0, "no longer readable");
    }
}
