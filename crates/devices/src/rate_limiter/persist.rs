//! Snapshot state of the rate limiter: each bucket's configuration and current credit.
//!
//! What Firecracker persists: size, one-time burst (initial and remaining), refill time and the
//! budget. The refill clock restarts at restore (elapsed time while the snapshot sat on disk
//! does not grant credit), and a limiter is restored unblocked: the device re-evaluates its
//! queues after activation.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Clock, MonotonicClock, RateLimiter, TokenBucket};
use crate::persist::Persist;

/// One token bucket as a snapshot saves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenBucketState {
    /// Capacity.
    pub size: u64,
    /// One-time burst as configured.
    pub initial_one_time_burst: u64,
    /// Burst credit left.
    pub one_time_burst: u64,
    /// Refill period of a full bucket, ms.
    pub refill_time_ms: u64,
    /// Current credit.
    pub budget: u64,
}

/// A rate limiter as a snapshot saves it (`None` = unlimited).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimiterState {
    /// The bandwidth bucket.
    pub bandwidth: Option<TokenBucketState>,
    /// The ops bucket.
    pub ops: Option<TokenBucketState>,
}

/// Why a saved rate limiter cannot be restored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RateLimiterRestoreError {
    /// Size or refill time is zero or out of range.
    #[error("invalid saved token bucket: {0:?}")]
    InvalidBucket(TokenBucketState),
}

impl TokenBucketState {
    /// Captures `bucket`.
    pub fn save(bucket: &TokenBucket) -> Self {
        Self {
            size: bucket.capacity(),
            initial_one_time_burst: bucket.initial_one_time_burst(),
            one_time_burst: bucket.one_time_burst(),
            refill_time_ms: bucket.refill_time_ms(),
            budget: bucket.budget(),
        }
    }

    /// Rebuilds the bucket on `clock`.
    pub fn restore(&self, clock: Arc<dyn Clock>) -> Result<TokenBucket, RateLimiterRestoreError> {
        let mut bucket = TokenBucket::with_clock(
            self.size,
            self.initial_one_time_burst,
            self.refill_time_ms,
            clock,
        )
        .ok_or(RateLimiterRestoreError::InvalidBucket(*self))?;
        bucket.one_time_burst = self.one_time_burst.min(self.initial_one_time_burst);
        bucket.budget = self.budget.min(self.size);
        Ok(bucket)
    }
}

impl Persist for RateLimiter {
    type State = RateLimiterState;
    type ConstructorArgs = ();
    type Error = RateLimiterRestoreError;

    fn save(&self) -> RateLimiterState {
        RateLimiterState {
            bandwidth: self.bandwidth.as_ref().map(TokenBucketState::save),
            ops: self.ops.as_ref().map(TokenBucketState::save),
        }
    }

    fn restore((): (), state: &RateLimiterState) -> Result<Self, RateLimiterRestoreError> {
        let clock: Arc<dyn Clock> = Arc::new(MonotonicClock);
        let bucket = |s: Option<&TokenBucketState>| s.map(|s| s.restore(Arc::clone(&clock)));
        Ok(RateLimiter::new(
            bucket(state.bandwidth.as_ref()).transpose()?,
            bucket(state.ops.as_ref()).transpose()?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate_limiter::TokenType;

    #[test]
    fn test_round_trip_keeps_credit() {
        let mut rl = RateLimiter::new(
            TokenBucket::new(1000, 500, 100),
            TokenBucket::new(10, 0, 1000),
        );
        assert!(rl.consume(600, TokenType::Bytes));
        assert!(rl.consume(3, TokenType::Ops));
        let saved = rl.save();
        assert_eq!(saved.bandwidth.unwrap().one_time_burst, 0);
        assert_eq!(saved.ops.unwrap().budget, 7);
        let json = serde_json::to_string(&saved).unwrap();
        let back = RateLimiter::restore((), &serde_json::from_str(&json).unwrap()).unwrap();
        assert_eq!(back.save().ops, saved.ops);
        assert_eq!(back.save().bandwidth.unwrap().size, 1000);
        assert_eq!(
            RateLimiter::restore((), &RateLimiterState::default()).unwrap(),
            RateLimiter::default()
        );
    }

    #[test]
    fn test_bad_state_is_an_error() {
        let bad = TokenBucketState {
            size: 0,
            initial_one_time_burst: 0,
            one_time_burst: 0,
            refill_time_ms: 5,
            budget: 0,
        };
        let state = RateLimiterState {
            bandwidth: Some(bad),
            ops: None,
        };
        assert_eq!(
            RateLimiter::restore((), &state).unwrap_err(),
            RateLimiterRestoreError::InvalidBucket(bad)
        );
        let huge = TokenBucketState {
            size: 10,
            refill_time_ms: u64::MAX,
            budget: u64::MAX,
            ..bad
        };
        // refill_time_ms * 1e6 overflows → refused, not a panic.
        assert!(
            RateLimiter::restore(
                (),
                &RateLimiterState {
                    bandwidth: None,
                    ops: Some(huge)
                }
            )
            .is_err()
        );
    }
}
