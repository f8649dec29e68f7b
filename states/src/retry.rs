//! How often and how soon a failure is tried again: one [`RetryPolicy`] type for every retry in
//! pgreplica, and the in-run budget of step retries ([`RetryBudget`]).
//!
//! The policy is plain data with pure arithmetic, so both the machine (which decides whether a
//! failed step runs again in this run, and after how long) and the I/O layer's retry helper
//! (which adds jitter and sleeps) read the same numbers, and tests shrink the delays to
//! milliseconds. Nothing here sleeps or reads a clock: elapsed time comes in as an argument.

use serde::{Deserialize, Serialize};

/// When to try again and when to give up.
///
/// Delays grow exponentially from `first_delay_ms`, doubling up to `max_delay_ms`. A retry is
/// allowed while fewer than `max_attempts` attempts were made (the first one included) and,
/// when `give_up_after_ms` is set, while less than that much time has passed since the first
/// attempt began.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; `u32::MAX` for "bounded by time only".
    pub max_attempts: u32,
    /// Delay before the first retry, in milliseconds.
    pub first_delay_ms: u64,
    /// Upper bound of a delay, in milliseconds.
    pub max_delay_ms: u64,
    /// Give up once this much time has passed since the first attempt, if set.
    pub give_up_after_ms: Option<u64>,
    /// Spread of each delay in percent (50 = ±50 %), applied by the I/O layer so that many
    /// clients do not retry in lock-step. The machine's own step retries use none.
    pub jitter_percent: u8,
}

impl RetryPolicy {
    /// The in-run retries of a failed step: three attempts, 2 s then 4 s apart.
    pub const STEP: RetryPolicy = RetryPolicy {
        max_attempts: 3,
        first_delay_ms: 2_000,
        max_delay_ms: 30_000,
        give_up_after_ms: None,
        jitter_percent: 0,
    };

    /// The same policy with `max_attempts` attempts in all (at least one).
    pub fn with_attempts(self, max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts: max_attempts.max(1),
            ..self
        }
    }

    /// The delay before retry number `retry` (1-based), without jitter.
    pub fn delay_ms(&self, retry: u32) -> u64 {
        let factor = 1_u64
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u64::MAX);
        self.first_delay_ms
            .saturating_mul(factor)
            .min(self.max_delay_ms)
    }

    /// The delay before retry number `retry`, spread by `sample` (a number in `[0, 1)` drawn
    /// by the caller) within ±[`RetryPolicy::jitter_percent`].
    pub fn jittered_delay_ms(&self, retry: u32, sample: f64) -> u64 {
        let base = self.delay_ms(retry) as f64;
        let fraction = f64::from(self.jitter_percent.min(100)) / 100.0;
        let spread = fraction * (2.0 * sample.clamp(0.0, 1.0) - 1.0);
        (base * (1.0 + spread)).round().max(0.0) as u64
    }

    /// Whether another attempt may follow `attempts` attempts made over `elapsed_ms`.
    pub fn allows_another(&self, attempts: u32, elapsed_ms: u64) -> bool {
        attempts < self.max_attempts && self.give_up_after_ms.is_none_or(|limit| elapsed_ms < limit)
    }
}

/// What one run may still spend on retrying the current step. `clone resume` starts a new
/// budget: across runs, any failure may be tried again.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryBudget {
    policy: RetryPolicy,
    attempts: u32,
}

impl RetryBudget {
    /// A fresh budget for one run.
    pub fn new(policy: RetryPolicy) -> RetryBudget {
        RetryBudget {
            policy,
            attempts: 0,
        }
    }

    /// The policy this budget spends.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Counts a failed attempt at the current step; returns the delay before the next one,
    /// or `None` when the run must stop.
    pub(crate) fn spend(&mut self) -> Option<u64> {
        self.attempts += 1;
        self.policy
            .allows_another(self.attempts, 0)
            .then(|| self.policy.delay_ms(self.attempts))
    }

    /// The current step succeeded or ended otherwise: the next step starts with the full
    /// budget.
    pub(crate) fn reset(&mut self) {
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_the_first_and_stop_at_the_bound() {
        let policy = RetryPolicy::STEP;
        let delays: Vec<u64> = (1..=6).map(|n| policy.delay_ms(n)).collect();
        assert_eq!(delays, [2_000, 4_000, 8_000, 16_000, 30_000, 30_000]);
        assert_eq!(policy.delay_ms(200), 30_000, "no overflow for large counts");
    }

    #[test]
    fn jitter_spreads_a_delay_within_its_fraction_and_covers_both_ends() {
        let policy = RetryPolicy {
            jitter_percent: 50,
            ..RetryPolicy::STEP
        };
        assert_eq!(policy.jittered_delay_ms(1, 0.0), 1_000);
        assert_eq!(policy.jittered_delay_ms(1, 0.5), 2_000);
        assert_eq!(policy.jittered_delay_ms(1, 0.999_999), 3_000);
        // Out-of-range samples are clamped, never negative or wild.
        assert_eq!(policy.jittered_delay_ms(1, -3.0), 1_000);
        assert_eq!(policy.jittered_delay_ms(1, 7.0), 3_000);
        // Without jitter the sample does not matter.
        assert_eq!(RetryPolicy::STEP.jittered_delay_ms(2, 0.1), 4_000);
    }

    #[test]
    fn attempts_and_time_both_bound_the_retries() {
        let by_count = RetryPolicy::STEP.with_attempts(2);
        assert!(by_count.allows_another(1, 0));
        assert!(!by_count.allows_another(2, 0));
        assert_eq!(RetryPolicy::STEP.with_attempts(0).max_attempts, 1);
        let by_time = RetryPolicy {
            max_attempts: u32::MAX,
            give_up_after_ms: Some(5_000),
            ..RetryPolicy::STEP
        };
        assert!(by_time.allows_another(1_000, 4_999));
        assert!(!by_time.allows_another(1, 5_000));
    }

    #[test]
    fn a_budget_allows_its_attempts_then_stops_and_resets_per_step() {
        let mut budget = RetryBudget::new(RetryPolicy::STEP);
        assert_eq!(budget.spend(), Some(2_000));
        assert_eq!(budget.spend(), Some(4_000));
        assert_eq!(
            budget.spend(),
            None,
            "the third failure is the last attempt"
        );
        budget.reset();
        assert_eq!(budget.spend(), Some(2_000));
    }
}
