use proptest::prelude::*;

use super::*;

const MS: Duration = Duration::from_millis(1);

fn bucket(clock: &FakeClock, size: u64, burst: u64, refill_ms: u64) -> TokenBucket {
    TokenBucket::with_clock(size, burst, refill_ms, Arc::new(clock.clone())).unwrap()
}

#[test]
fn test_token_bucket_zero_size_or_refill_is_unlimited() {
    assert!(TokenBucket::new(0, 10, 100).is_none());
    assert!(TokenBucket::new(10, 10, 0).is_none());
    assert!(
        TokenBucket::new(10, 0, u64::MAX).is_none(),
        "refill time overflows ns"
    );
    assert!(TokenBucket::new(10, 0, 100).is_some());
}

#[test]
fn test_token_bucket_starts_full_and_fails_when_empty() {
    let clock = FakeClock::new();
    let mut tb = bucket(&clock, 1000, 0, 1000);
    assert_eq!(tb.reduce(600), BucketReduction::Success);
    assert_eq!(tb.budget(), 400);
    assert_eq!(tb.reduce(401), BucketReduction::Failure);
    assert_eq!(tb.budget(), 400, "a failure consumes nothing");
    assert_eq!(tb.reduce(400), BucketReduction::Success);
    assert_eq!(tb.reduce(1), BucketReduction::Failure);
}

#[test]
fn test_token_bucket_one_time_burst_is_spent_first_and_not_refilled() {
    let clock = FakeClock::new();
    let mut tb = bucket(&clock, 100, 50, 1000);
    assert_eq!(tb.reduce(30), BucketReduction::Success);
    assert_eq!((tb.one_time_burst(), tb.budget()), (20, 100));
    // Spans the rest of the burst and part of the budget.
    assert_eq!(tb.reduce(50), BucketReduction::Success);
    assert_eq!((tb.one_time_burst(), tb.budget()), (0, 70));
    clock.advance(Duration::from_secs(10));
    assert_eq!(tb.reduce(100), BucketReduction::Success);
    assert_eq!(tb.one_time_burst(), 0, "burst never comes back");
    assert_eq!(tb.initial_one_time_burst(), 50);
}

#[test]
fn test_token_bucket_refills_continuously_over_time() {
    let clock = FakeClock::new();
    let mut tb = bucket(&clock, 1000, 0, 1000); // 1 token per ms
    assert_eq!(tb.reduce(1000), BucketReduction::Success);
    clock.advance(250 * MS);
    assert_eq!(tb.reduce(251), BucketReduction::Failure);
    assert_eq!(tb.budget(), 250);
    assert_eq!(tb.reduce(250), BucketReduction::Success);
    clock.advance(5 * Duration::from_secs(1));
    assert_eq!(tb.reduce(1001), BucketReduction::OverConsumption(0.001));
}

#[test]
fn test_token_bucket_carries_fractional_tokens_over() {
    let clock = FakeClock::new();
    let mut tb = bucket(&clock, 2, 0, 3); // 2 tokens per 3 ms: one every 1.5 ms
    assert_eq!(tb.reduce(2), BucketReduction::Success);
    clock.advance(MS);
    assert_eq!(tb.reduce(1), BucketReduction::Failure); // 0.67 token
    clock.advance(MS);
    assert_eq!(tb.reduce(1), BucketReduction::Success); // 1.33: one whole, 0.33 carried
    clock.advance(MS);
    assert_eq!(tb.reduce(1), BucketReduction::Success); // 0.33 + 0.67 = 1
}

#[test]
fn test_token_bucket_over_consumption_empties_and_reports_ratio() {
    let clock = FakeClock::new();
    let mut tb = bucket(&clock, 100, 0, 1000);
    assert_eq!(tb.reduce(50), BucketReduction::Success);
    assert_eq!(tb.reduce(250), BucketReduction::OverConsumption(2.0));
    assert_eq!(tb.budget(), 0);
}

#[test]
fn test_token_bucket_force_replenish_caps_at_size_and_burst() {
    let clock = FakeClock::new();
    let mut tb = bucket(&clock, 100, 10, 1000);
    assert_eq!(tb.reduce(5), BucketReduction::Success);
    tb.force_replenish(100);
    assert_eq!(tb.one_time_burst(), 10);
    assert_eq!(tb.reduce(70), BucketReduction::Success);
    tb.force_replenish(1000);
    assert_eq!(tb.budget(), 100);
}

#[test]
fn test_token_bucket_time_until_is_exact() {
    let clock = FakeClock::new();
    let mut tb = bucket(&clock, 1000, 0, 1000);
    assert_eq!(tb.time_until(1), Duration::ZERO);
    assert_eq!(tb.reduce(1000), BucketReduction::Success);
    assert_eq!(tb.time_until(100), 100 * MS);
    clock.advance(40 * MS);
    assert_eq!(tb.time_until(100), 60 * MS);
    assert_eq!(
        tb.time_until(5000),
        Duration::ZERO,
        "over-consumption never waits"
    );
    clock.advance(60 * MS);
    assert_eq!(tb.time_until(100), Duration::ZERO);
    assert_eq!(tb.reduce(100), BucketReduction::Success);
}

#[test]
fn test_rate_limiter_unlimited_types_always_succeed() {
    let mut rl = RateLimiter::default();
    assert!(rl.consume(u64::MAX, TokenType::Bytes));
    assert!(rl.consume(u64::MAX, TokenType::Ops));
    assert!(!rl.is_blocked());
    assert_eq!(rl.event_handler(), Err(RateLimiterError::SpuriousEvent));
}

#[test]
fn test_rate_limiter_blocks_after_failure_until_event_handler() {
    let clock = FakeClock::new();
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let mut rl = RateLimiter::with_clock(Some(bucket(&clock, 1000, 0, 1000)), None, shared);
    assert!(rl.consume(900, TokenType::Bytes));
    assert!(!rl.consume(200, TokenType::Bytes));
    assert!(rl.is_blocked());
    assert_eq!(rl.blocked_for(), Some(100 * MS));
    assert!(
        !rl.consume(1, TokenType::Ops),
        "a blocked limiter fails every type (Firecracker)"
    );
    clock.advance(100 * MS);
    assert_eq!(rl.blocked_for(), Some(Duration::ZERO));
    assert!(
        !rl.consume(1, TokenType::Bytes),
        "still blocked until the timer is handled"
    );
    rl.event_handler().unwrap();
    assert!(rl.consume(200, TokenType::Bytes));
}

#[test]
fn test_rate_limiter_over_consumption_succeeds_then_blocks_for_ratio_times_refill() {
    let clock = FakeClock::new();
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let mut rl = RateLimiter::with_clock(None, Some(bucket(&clock, 10, 0, 100)), shared);
    assert!(rl.consume(30, TokenType::Ops));
    assert_eq!(rl.blocked_for(), Some(200 * MS));
}

#[test]
fn test_rate_limiter_manual_replenish_undoes_consume() {
    let clock = FakeClock::new();
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let mut rl = RateLimiter::with_clock(None, Some(bucket(&clock, 2, 0, 1000)), shared);
    assert!(rl.consume(2, TokenType::Ops));
    rl.manual_replenish(1, TokenType::Ops);
    rl.manual_replenish(1, TokenType::Bytes); // unlimited: no-op
    assert!(rl.consume(1, TokenType::Ops));
    assert_eq!(rl.ops().unwrap().budget(), 0);
}

#[test]
fn test_rate_limiter_update_buckets_like_patch() {
    let clock = FakeClock::new();
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let mut rl = RateLimiter::with_clock(
        Some(bucket(&clock, 100, 0, 1000)),
        Some(bucket(&clock, 5, 0, 1000)),
        shared.clone(),
    );
    assert!(rl.consume(100, TokenType::Bytes));

    let new_bw = TokenBucketConfig {
        size: 500,
        one_time_burst: Some(10),
        refill_time: 50,
    };
    let disable = TokenBucketConfig {
        size: 0,
        one_time_burst: None,
        refill_time: 100,
    };
    rl.update_buckets(
        BucketUpdate::from_config(Some(&new_bw), shared.clone()),
        BucketUpdate::from_config(None, shared.clone()),
    );
    let bw = rl.bandwidth().unwrap();
    assert_eq!(
        (bw.capacity(), bw.budget(), bw.one_time_burst()),
        (500, 500, 10)
    );
    assert_eq!(bw.refill_time_ms(), 50);
    assert_eq!(bw.config(), new_bw);
    assert_eq!(
        rl.ops().unwrap().capacity(),
        5,
        "absent field keeps the bucket"
    );

    rl.update_buckets(
        BucketUpdate::None,
        BucketUpdate::from_config(Some(&disable), shared),
    );
    assert!(rl.ops().is_none());
    assert!(rl.consume(1_000_000, TokenType::Ops));
    rl.update_buckets(BucketUpdate::Disabled, BucketUpdate::None);
    assert_eq!(rl, RateLimiter::default());
}

#[test]
fn test_token_bucket_config_serde_matches_api_shape() {
    let cfg: TokenBucketConfig =
        serde_json::from_str(r#"{"size": 1024, "one_time_burst": 65536, "refill_time": 1000}"#)
            .unwrap();
    assert_eq!(cfg.one_time_burst, Some(65536));
    let cfg: TokenBucketConfig = serde_json::from_str(r#"{"size":1,"refill_time":2}"#).unwrap();
    assert_eq!(
        serde_json::to_string(&cfg).unwrap(),
        r#"{"size":1,"refill_time":2}"#
    );
    assert!(
        serde_json::from_str::<TokenBucketConfig>(r#"{"size":1,"refill_time":2,"x":0}"#).is_err()
    );
}

#[test]
fn test_monotonic_clock_never_goes_back() {
    let a = MonotonicClock.now();
    let b = MonotonicClock.now();
    assert!(b >= a);
}

#[derive(Clone, Debug)]
enum Op {
    Advance(u64),
    Reduce(u64),
    Replenish(u64),
    TimeUntil(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u64..5_000_000_000).prop_map(Op::Advance),
        any::<u64>().prop_map(Op::Advance),
        (0u64..2_000).prop_map(Op::Reduce),
        any::<u64>().prop_map(Op::Reduce),
        any::<u64>().prop_map(Op::Replenish),
        any::<u64>().prop_map(Op::TimeUntil),
    ]
}

proptest! {
    #[test]
    fn prop_token_bucket_never_panics_and_stays_within_bounds(
        size in prop_oneof![1u64..2_000, any::<u64>()],
        burst in prop_oneof![0u64..2_000, any::<u64>()],
        refill_ms in prop_oneof![1u64..10_000, 1u64..(u64::MAX / 1_000_000)],
        ops in proptest::collection::vec(op(), 0..64),
    ) {
        let clock = FakeClock::new();
        let mut tb = bucket(&clock, size, burst, refill_ms);
        for op in ops {
            let before = (tb.budget(), tb.one_time_burst());
            match op {
                Op::Advance(ns) => clock.advance(Duration::from_nanos(ns)),
                Op::Reduce(n) => {
                    if tb.reduce(n) == BucketReduction::Failure {
                        prop_assert_eq!(tb.one_time_burst(), before.1);
                    }
                }
                Op::Replenish(n) => tb.force_replenish(n),
                Op::TimeUntil(n) => {
                    let _ = tb.time_until(n);
                }
            }
            prop_assert!(tb.budget() <= tb.capacity());
            prop_assert!(tb.one_time_burst() <= tb.initial_one_time_burst());
            prop_assert!(
                u128::from(tb.budget()) + u128::from(tb.one_time_burst())
                    <= u128::from(size) + u128::from(burst)
            );
        }
    }

    #[test]
    fn prop_time_until_is_sufficient(
        size in 1u64..10_000,
        refill_ms in 1u64..10_000,
        first in 0u64..10_000,
        want in 0u64..10_000,
    ) {
        let clock = FakeClock::new();
        let mut tb = bucket(&clock, size, 0, refill_ms);
        let _ = tb.reduce(first);
        let wait = tb.time_until(want);
        clock.advance(wait);
        prop_assert_ne!(tb.reduce(want), BucketReduction::Failure);
    }
}
