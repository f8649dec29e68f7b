//! Trying again what may pass: the one retry helper of the I/O layer.
//!
//! Every retry loop in pgreplica — an HTTP call to pg-backup-api, a lock held for a moment by a
//! `clone status` — is [`with_retry`] (or [`poll_blocking`] where the caller is not async) with a
//! [`RetryPolicy`] from the `states` crate, the same type the machine uses for step retries, and
//! a classifier that tells a transient failure from a final one. Tests shrink a policy's delays
//! to milliseconds. Jitter is drawn here, because the machine never draws randomness.
//!
//! Decision: the `backoff` crate, which used to drive one of these loops, was dropped. It is
//! unmaintained (RUSTSEC-2025-0012), and its policy type could not be shared with the pure
//! machine; the exponential arithmetic is ten lines in `states::RetryPolicy`.

use states::RetryPolicy;
use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How a retried operation ended without succeeding.
#[derive(Debug, PartialEq, Eq)]
pub enum GaveUp<E> {
    /// An attempt failed in a way the classifier called final.
    Final(E),
    /// The policy's attempts or time ran out; the last transient failure.
    Exhausted(E),
}

/// Runs `op` until it succeeds, fails finally (`transient` says no) or the policy gives up.
/// Each retry is announced at INFO with the failure and the delay (repmgr's "Retrying..."), so
/// an operator watching a slow API sees why nothing moves.
pub async fn with_retry<T, E, Fut>(
    policy: &RetryPolicy,
    transient: impl Fn(&E) -> bool,
    mut op: impl FnMut() -> Fut,
) -> Result<T, GaveUp<E>>
where
    E: Display,
    Fut: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let mut attempts = 0;
    loop {
        let error = match op().await {
            Ok(value) => return Ok(value),
            Err(error) if !transient(&error) => return Err(GaveUp::Final(error)),
            Err(error) => error,
        };
        attempts += 1;
        let Some(delay) = next_delay(policy, attempts, started) else {
            return Err(GaveUp::Exhausted(error));
        };
        crate::info!("{error}");
        crate::info!("Retrying... (in {:.1} s)", delay.as_secs_f32());
        tokio::time::sleep(delay).await;
    }
}

/// [`with_retry`] for blocking callers, quietly: a poll that waits out a short hold (a lock a
/// `clone status` holds for milliseconds), where each retry is not news for the operator.
pub fn poll_blocking<T, E>(
    policy: &RetryPolicy,
    transient: impl Fn(&E) -> bool,
    mut op: impl FnMut() -> Result<T, E>,
) -> Result<T, GaveUp<E>> {
    let started = Instant::now();
    let mut attempts = 0;
    loop {
        let error = match op() {
            Ok(value) => return Ok(value),
            Err(error) if !transient(&error) => return Err(GaveUp::Final(error)),
            Err(error) => error,
        };
        attempts += 1;
        let Some(delay) = next_delay(policy, attempts, started) else {
            return Err(GaveUp::Exhausted(error));
        };
        std::thread::sleep(delay);
    }
}

impl<E> GaveUp<E> {
    /// The last failure, however the retrying ended.
    pub fn into_inner(self) -> E {
        match self {
            GaveUp::Final(error) | GaveUp::Exhausted(error) => error,
        }
    }
}

/// The delay before the next attempt after `attempts` failures, or `None` when the policy gives
/// up. A delay that would end past the policy's time limit is not started.
fn next_delay(policy: &RetryPolicy, attempts: u32, started: Instant) -> Option<Duration> {
    let elapsed = millis(started.elapsed());
    if !policy.allows_another(attempts, elapsed) {
        return None;
    }
    let delay = policy.jittered_delay_ms(attempts, sample());
    if policy
        .give_up_after_ms
        .is_some_and(|limit| elapsed.saturating_add(delay) > limit)
    {
        return None;
    }
    Some(Duration::from_millis(delay))
}

/// `base` spread by ±`percent` %: polls of many clones do not run in lock-step.
pub fn jittered(base: Duration, percent: u8) -> Duration {
    let policy = RetryPolicy {
        max_attempts: 1,
        first_delay_ms: millis(base),
        max_delay_ms: millis(base),
        give_up_after_ms: None,
        jitter_percent: percent,
    };
    Duration::from_millis(policy.jittered_delay_ms(1, sample()))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A number in `[0, 1)` for jitter: the clock's nanoseconds and a counter mixed with SplitMix64.
/// Jitter needs spread, not unpredictability.
fn sample() -> f64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut z = nanos
        ^ COUNTER
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1_u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn quick(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            first_delay_ms: 1,
            max_delay_ms: 2,
            give_up_after_ms: None,
            jitter_percent: 0,
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_success() {
        let calls = Cell::new(0);
        let result: Result<u32, GaveUp<String>> = with_retry(
            &quick(5),
            |_| true,
            || {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move {
                    if n < 3 {
                        Err(format!("attempt {n} refused"))
                    } else {
                        Ok(n)
                    }
                }
            },
        )
        .await;
        assert_eq!(result, Ok(3));
        assert_eq!(calls.get(), 3);
    }

    #[tokio::test]
    async fn a_final_failure_stops_at_once_and_exhaustion_keeps_the_last_failure() {
        let calls = Cell::new(0);
        let result: Result<(), _> = with_retry(
            &quick(5),
            |e: &String| e.contains("transient"),
            || {
                calls.set(calls.get() + 1);
                async { Err("denied".to_string()) }
            },
        )
        .await;
        assert_eq!(result, Err(GaveUp::Final("denied".to_string())));
        assert_eq!(calls.get(), 1, "a final failure is not tried again");

        calls.set(0);
        let result: Result<(), _> = with_retry(
            &quick(4),
            |_| true,
            || {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move { Err(format!("transient {n}")) }
            },
        )
        .await;
        assert_eq!(result, Err(GaveUp::Exhausted("transient 4".to_string())));
        assert_eq!(calls.get(), 4, "max_attempts counts every attempt");
    }

    #[test]
    fn a_time_limit_stops_a_blocking_poll_and_starts_no_delay_past_it() {
        let policy = RetryPolicy {
            max_attempts: u32::MAX,
            first_delay_ms: 5,
            max_delay_ms: 5,
            give_up_after_ms: Some(60),
            jitter_percent: 0,
        };
        let calls = Cell::new(0);
        let result: Result<(), GaveUp<&str>> = poll_blocking(
            &policy,
            |_| true,
            || {
                calls.set(calls.get() + 1);
                Err("held")
            },
        );
        assert_eq!(result, Err(GaveUp::Exhausted("held")));
        assert!(calls.get() >= 2, "it polled more than once");
        // No delay is started that would end past the limit: at most 60 / 5 delays.
        assert!(calls.get() <= 60 / 5 + 1, "{} polls", calls.get());
    }

    #[test]
    fn jitter_samples_spread_over_the_whole_range() {
        let samples: Vec<f64> = (0..1000).map(|_| sample()).collect();
        assert!(samples.iter().all(|s| (0.0..1.0).contains(s)));
        // Both ends of the range are reached: the jitter really spreads.
        assert!(samples.iter().any(|&s| s < 0.1) && samples.iter().any(|&s| s > 0.9));
        let spread: Vec<Duration> = (0..200)
            .map(|_| jittered(Duration::from_secs(10), 20))
            .collect();
        assert!(spread
            .iter()
            .all(|d| (Duration::from_secs(8)..=Duration::from_secs(12)).contains(d)));
        assert!(spread.iter().any(|d| *d < Duration::from_millis(8_500)));
        assert!(spread.iter().any(|d| *d > Duration::from_millis(11_500)));
    }
}
