//! Firecracker's token-bucket rate limiter, with time injected through a [`Clock`].
//!
//! # Semantics (same as Firecracker's `rate_limiter` module)
//!
//! - A [`TokenBucket`] holds up to `size` tokens and refills continuously at
//!   `size / refill_time_ms` tokens per millisecond (integer arithmetic in nanoseconds, carrying
//!   fractional tokens over to the next refill so nothing is lost at high call rates). It starts
//!   full.
//! - `one_time_burst` is extra credit on top of `size`, spent **first** and never refilled.
//! - [`TokenBucket::reduce`] returns [`BucketReduction::Success`] when enough tokens were
//!   available, [`BucketReduction::Failure`] (nothing consumed) when not, and
//!   [`BucketReduction::OverConsumption`]`(ratio)` when a single request is larger than the whole
//!   bucket: the bucket is emptied, the request is let through, and `ratio` says how many
//!   bucket-sizes were borrowed.
//! - A bucket with `size == 0` or `refill_time == 0` does not exist: constructors return `None`,
//!   which means "unlimited". (So does a `refill_time` too large to express in nanoseconds.)
//! - A [`RateLimiter`] combines an optional bandwidth (bytes) and an optional ops bucket. After a
//!   failed [`RateLimiter::consume`] it is *blocked*: every consume fails until the event loop
//!   calls [`RateLimiter::event_handler`]. Firecracker arms a timerfd for that; here the limiter
//!   has no fd and instead reports [`RateLimiter::blocked_for`], the delay after which to call
//!   `event_handler` (the exact time until the failed request fits, or `ratio × refill_time`
//!   after an over-consumption).
//!
//! # Time
//!
//! All time comes from a [`Clock`] (a monotonic `Duration` since an arbitrary origin).
//! Production code uses [`MonotonicClock`]; tests use [`FakeClock`] and never sleep.
//!
//! # Threading
//!
//! Buckets and limiters are plain `Send` values owned by one device; they are not internally
//! synchronized.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::log::RateLimitedLog;

const NANOS_PER_MILLI: u64 = 1_000_000;

/// Log limiter for the over-consumption error (a guest can trigger it in a loop).
static OVERCONSUMPTION_LOG: RateLimitedLog =
    RateLimitedLog::new(crate::log::DEFAULT_BURST, crate::log::DEFAULT_PERIOD);

/// A monotonic time source.
pub trait Clock: Send + Sync {
    /// Time elapsed since an arbitrary, fixed origin; never decreases.
    fn now(&self) -> Duration;
}

/// The process-wide monotonic clock (`std::time::Instant`, origin at first use).
///
/// All instances share one origin, so values from different instances are comparable.
#[derive(Clone, Copy, Debug, Default)]
pub struct MonotonicClock;

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        ORIGIN.get_or_init(Instant::now).elapsed()
    }
}

/// A manually driven clock for tests. Clones share the same time.
#[derive(Clone, Debug, Default)]
pub struct FakeClock(Arc<AtomicU64>);

impl FakeClock {
    /// A clock at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by` (saturating at `u64::MAX` nanoseconds).
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        // fetch_update never fails here: the closure always returns Some.
        let _ = self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                Some(t.saturating_add(by))
            });
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::SeqCst))
    }
}

fn gcd(mut x: u64, mut y: u64) -> u64 {
    while y != 0 {
        (x, y) = (y, x % y);
    }
    x
}

/// Outcome of [`TokenBucket::reduce`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BucketReduction {
    /// Not enough tokens; nothing was consumed.
    Failure,
    /// The tokens were consumed.
    Success,
    /// The request exceeded the bucket size: the bucket was emptied and the request let through,
    /// borrowing this many bucket-sizes of tokens.
    OverConsumption(f64),
}

/// The plain-data description of a token bucket, as in the API's `TokenBucket` object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBucketConfig {
    /// Bucket capacity in tokens.
    pub size: u64,
    /// Initial extra credit, spent first and never refilled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_time_burst: Option<u64>,
    /// Time in milliseconds to refill an empty bucket.
    pub refill_time: u64,
}

impl TokenBucketConfig {
    /// Builds the bucket on `clock`; `None` means unlimited (size or refill time is 0).
    pub fn build(&self, clock: Arc<dyn Clock>) -> Option<TokenBucket> {
        TokenBucket::with_clock(
            self.size,
            self.one_time_burst.unwrap_or(0),
            self.refill_time,
            clock,
        )
    }
}

/// A token bucket with capacity, continuous refill and a one-time initial burst.
#[derive(Clone)]
pub struct TokenBucket {
    size: u64,
    initial_one_time_burst: u64,
    refill_time_ms: u64,
    one_time_burst: u64,
    budget: u64,
    /// Clock time up to which refill has been accounted for.
    last_update: Duration,
    /// `size / gcd` and `refill_time_ns / gcd`: the refill rate as a reduced fraction.
    processed_capacity: u64,
    processed_refill_time: u64,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for TokenBucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenBucket")
            .field("size", &self.size)
            .field("initial_one_time_burst", &self.initial_one_time_burst)
            .field("refill_time_ms", &self.refill_time_ms)
            .field("one_time_burst", &self.one_time_burst)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

/// Two buckets are equal when they have the same configuration and the same current credit.
impl PartialEq for TokenBucket {
    fn eq(&self, other: &Self) -> bool {
        self.size == other.size
            && self.initial_one_time_burst == other.initial_one_time_burst
            && self.refill_time_ms == other.refill_time_ms
            && self.one_time_burst == other.one_time_burst
            && self.budget == other.budget
    }
}

impl TokenBucket {
    /// A full bucket of `size` tokens refilling in `refill_time_ms`, plus `one_time_burst`, on
    /// the [`MonotonicClock`]. `None` (unlimited) if `size` or `refill_time_ms` is 0.
    pub fn new(size: u64, one_time_burst: u64, refill_time_ms: u64) -> Option<Self> {
        Self::with_clock(
            size,
            one_time_burst,
            refill_time_ms,
            Arc::new(MonotonicClock),
        )
    }

    /// Like [`new`](Self::new), on an explicit clock.
    pub fn with_clock(
        size: u64,
        one_time_burst: u64,
        refill_time_ms: u64,
        clock: Arc<dyn Clock>,
    ) -> Option<Self> {
        if size == 0 || refill_time_ms == 0 {
            return None;
        }
        let refill_time_ns = refill_time_ms.checked_mul(NANOS_PER_MILLI)?;
        let common = gcd(size, refill_time_ns);
        let last_update = clock.now();
        Some(Self {
            size,
            initial_one_time_burst: one_time_burst,
            refill_time_ms,
            one_time_burst,
            budget: size,
            last_update,
            processed_capacity: size / common,
            processed_refill_time: refill_time_ns / common,
            clock,
        })
    }

    /// The budget and refill mark the bucket would have at `now` (pure).
    fn replenished(&self, now: Duration) -> (u64, Duration) {
        let delta = now.saturating_sub(self.last_update).as_nanos();
        let refill_ns = u128::from(self.refill_time_ms) * u128::from(NANOS_PER_MILLI);
        if delta >= refill_ns {
            return (self.size, now);
        }
        // delta < refill_ns <= u64::MAX, so none of these u128 products overflow.
        let capacity = u128::from(self.processed_capacity);
        let refill = u128::from(self.processed_refill_time);
        let tokens = delta * capacity / refill;
        // Advance the mark only by the time that produced whole tokens (rounded up so no
        // fraction of a nanosecond is spent twice); the remainder carries over.
        let used_ns = (tokens * refill).div_ceil(capacity);
        let tokens = u64::try_from(tokens).unwrap_or(u64::MAX);
        let used_ns = u64::try_from(used_ns).unwrap_or(u64::MAX);
        (
            self.budget.saturating_add(tokens).min(self.size),
            self.last_update + Duration::from_nanos(used_ns),
        )
    }

    fn auto_replenish(&mut self) {
        (self.budget, self.last_update) = self.replenished(self.clock.now());
    }

    /// Tries to consume `tokens` (burst credit first, then the refilling budget).
    pub fn reduce(&mut self, mut tokens: u64) -> BucketReduction {
        if self.one_time_burst > 0 {
            if self.one_time_burst >= tokens {
                self.one_time_burst -= tokens;
                self.last_update = self.clock.now();
                return BucketReduction::Success;
            }
            tokens -= self.one_time_burst;
            self.one_time_burst = 0;
        }

        if tokens > self.budget {
            self.auto_replenish();
            if tokens > self.size {
                crate::rl_error!(
                    OVERCONSUMPTION_LOG,
                    "Consumed {} tokens from bucket of size {}",
                    tokens,
                    self.size
                );
                tokens -= self.budget;
                self.budget = 0;
                #[expect(
                    clippy::cast_precision_loss,
                    reason = "a ratio; f64 precision is plenty (Firecracker does the same)"
                )]
                let ratio = tokens as f64 / self.size as f64;
                return BucketReduction::OverConsumption(ratio);
            }
            if tokens > self.budget {
                return BucketReduction::Failure;
            }
        }
        self.budget -= tokens;
        BucketReduction::Success
    }

    /// Adds `tokens` back (for example to undo a consume), capped at the configured maximum.
    ///
    /// While burst credit remains, the tokens go back to the burst (Firecracker's behaviour).
    pub fn force_replenish(&mut self, tokens: u64) {
        if self.one_time_burst > 0 {
            self.one_time_burst = self
                .one_time_burst
                .saturating_add(tokens)
                .min(self.initial_one_time_burst);
            return;
        }
        self.budget = self.budget.saturating_add(tokens).min(self.size);
    }

    /// How long until `reduce(tokens)` would succeed; zero if it would now.
    ///
    /// A request larger than the bucket never waits: `reduce` lets it through as an
    /// over-consumption.
    pub fn time_until(&self, tokens: u64) -> Duration {
        let tokens = tokens.saturating_sub(self.one_time_burst);
        if tokens == 0 || tokens > self.size {
            return Duration::ZERO;
        }
        let now = self.clock.now();
        let (budget, mark) = self.replenished(now);
        if tokens <= budget {
            return Duration::ZERO;
        }
        let deficit = u128::from(tokens - budget);
        // deficit <= size, so this is at most the full refill time, which fits in u64 ns.
        let need = (deficit * u128::from(self.processed_refill_time))
            .div_ceil(u128::from(self.processed_capacity));
        let need = Duration::from_nanos(u64::try_from(need).unwrap_or(u64::MAX));
        (mark + need).saturating_sub(now)
    }

    /// Capacity in tokens.
    pub fn capacity(&self) -> u64 {
        self.size
    }

    /// Remaining one-time burst credit.
    pub fn one_time_burst(&self) -> u64 {
        self.one_time_burst
    }

    /// The configured one-time burst.
    pub fn initial_one_time_burst(&self) -> u64 {
        self.initial_one_time_burst
    }

    /// Milliseconds to refill an empty bucket.
    pub fn refill_time_ms(&self) -> u64 {
        self.refill_time_ms
    }

    /// Current budget as of the last operation (burst credit not included).
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// The configuration this bucket was built from.
    pub fn config(&self) -> TokenBucketConfig {
        TokenBucketConfig {
            size: self.size,
            one_time_burst: Some(self.initial_one_time_burst),
            refill_time: self.refill_time_ms,
        }
    }
}

/// Which bucket of a [`RateLimiter`] a request draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenType {
    /// Bandwidth, in bytes.
    Bytes,
    /// Operations.
    Ops,
}

/// How [`RateLimiter::update_buckets`] changes one bucket (PATCH semantics).
#[derive(Clone, Debug, PartialEq)]
pub enum BucketUpdate {
    /// Keep the bucket as it is (field absent from the PATCH body).
    None,
    /// Remove the limit (size or refill time 0).
    Disabled,
    /// Replace the bucket with this new, full one.
    Update(TokenBucket),
}

impl BucketUpdate {
    /// The update a PATCH body field describes: absent → `None`; size or refill time 0 →
    /// `Disabled`; otherwise a new full bucket on `clock`.
    pub fn from_config(config: Option<&TokenBucketConfig>, clock: Arc<dyn Clock>) -> Self {
        match config {
            None => Self::None,
            Some(cfg) => cfg.build(clock).map_or(Self::Disabled, Self::Update),
        }
    }
}

/// Errors from [`RateLimiter::event_handler`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RateLimiterError {
    /// The timer fired while the limiter was not blocked.
    #[error("rate limiter event handler called while not blocked")]
    SpuriousEvent,
}

/// A bandwidth and/or ops limiter built from two optional [`TokenBucket`]s.
pub struct RateLimiter {
    bandwidth: Option<TokenBucket>,
    ops: Option<TokenBucket>,
    clock: Arc<dyn Clock>,
    /// Clock time at which the event loop should call `event_handler`, while blocked.
    blocked_until: Option<Duration>,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("bandwidth", &self.bandwidth)
            .field("ops", &self.ops)
            .field("blocked_until", &self.blocked_until)
            .finish_non_exhaustive()
    }
}

impl Default for RateLimiter {
    /// An unlimited limiter.
    fn default() -> Self {
        Self::new(None, None)
    }
}

impl PartialEq for RateLimiter {
    fn eq(&self, other: &Self) -> bool {
        self.bandwidth == other.bandwidth && self.ops == other.ops
    }
}

impl RateLimiter {
    /// A limiter on the [`MonotonicClock`]; `None` buckets are unlimited.
    pub fn new(bandwidth: Option<TokenBucket>, ops: Option<TokenBucket>) -> Self {
        Self::with_clock(bandwidth, ops, Arc::new(MonotonicClock))
    }

    /// A limiter whose blocking deadlines use `clock` (give its buckets the same clock).
    pub fn with_clock(
        bandwidth: Option<TokenBucket>,
        ops: Option<TokenBucket>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            bandwidth,
            ops,
            clock,
            blocked_until: None,
        }
    }

    fn bucket_mut(&mut self, token_type: TokenType) -> Option<&mut TokenBucket> {
        match token_type {
            TokenType::Bytes => self.bandwidth.as_mut(),
            TokenType::Ops => self.ops.as_mut(),
        }
    }

    /// Tries to consume `tokens` of `token_type`; always succeeds for an unlimited type.
    ///
    /// Fails without consuming while the limiter is blocked. A failure blocks the limiter until
    /// the failed request would fit; an over-consumption succeeds but blocks it for
    /// `ratio × refill_time`.
    pub fn consume(&mut self, tokens: u64, token_type: TokenType) -> bool {
        if self.blocked_until.is_some() {
            return false;
        }
        let now = self.clock.now();
        let Some(bucket) = self.bucket_mut(token_type) else {
            return true;
        };
        match bucket.reduce(tokens) {
            BucketReduction::Success => true,
            BucketReduction::Failure => {
                let wait = bucket.time_until(tokens);
                self.blocked_until = Some(now.saturating_add(wait));
                false
            }
            BucketReduction::OverConsumption(ratio) => {
                #[expect(
                    clippy::cast_precision_loss,
                    reason = "milliseconds to f64 for a ratio; sub-ms precision is irrelevant"
                )]
                let secs = ratio * bucket.refill_time_ms() as f64 / 1000.0;
                let wait = Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX);
                self.blocked_until = Some(now.saturating_add(wait));
                true
            }
        }
    }

    /// Gives `tokens` back to the `token_type` bucket (to undo part of a consume).
    pub fn manual_replenish(&mut self, tokens: u64, token_type: TokenType) {
        if let Some(bucket) = self.bucket_mut(token_type) {
            bucket.force_replenish(tokens);
        }
    }

    /// Whether consumes currently fail until [`event_handler`](Self::event_handler) is called.
    pub fn is_blocked(&self) -> bool {
        self.blocked_until.is_some()
    }

    /// While blocked: how long the event loop should wait before calling
    /// [`event_handler`](Self::event_handler) (zero if that time has passed). `None` if not
    /// blocked.
    pub fn blocked_for(&self) -> Option<Duration> {
        self.blocked_until
            .map(|until| until.saturating_sub(self.clock.now()))
    }

    /// Unblocks the limiter; call it when the timer armed for [`blocked_for`](Self::blocked_for)
    /// fires. Errors if the limiter was not blocked.
    pub fn event_handler(&mut self) -> Result<(), RateLimiterError> {
        self.blocked_until
            .take()
            .map(|_| ())
            .ok_or(RateLimiterError::SpuriousEvent)
    }

    /// Changes the buckets (PATCH). A replaced bucket starts full; a blocked limiter stays
    /// blocked until its timer fires, as in Firecracker.
    pub fn update_buckets(&mut self, bytes: BucketUpdate, ops: BucketUpdate) {
        fn apply(slot: &mut Option<TokenBucket>, update: BucketUpdate) {
            match update {
                BucketUpdate::None => {}
                BucketUpdate::Disabled => *slot = None,
                BucketUpdate::Update(bucket) => *slot = Some(bucket),
            }
        }
        apply(&mut self.bandwidth, bytes);
        apply(&mut self.ops, ops);
    }

    /// The bandwidth bucket, if limited.
    pub fn bandwidth(&self) -> Option<&TokenBucket> {
        self.bandwidth.as_ref()
    }

    /// The ops bucket, if limited.
    pub fn ops(&self) -> Option<&TokenBucket> {
        self.ops.as_ref()
    }
}

pub mod persist;

#[cfg(test)]
mod tests;
