//! Retry delays: capped exponential backoff with jitter, as in the AWS architecture blog's "Exponential Backoff and
//! Jitter" — full jitter by default because it spreads a thundering herd of failing jobs best.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::SpoolError;

/// How the computed backoff is randomised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    /// Exactly the exponential delay.
    None,
    /// Uniform in `[0, delay]`.
    #[default]
    Full,
    /// Uniform in `[delay/2, delay]`.
    Equal,
}

/// When a failed job runs again: `min(max_ms, initial_ms × multiplier^(failures − 1))`, then jittered.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Delay before the first retry, in milliseconds.
    pub initial_ms: u64,
    /// Growth factor per further failure (≥ 1.0).
    pub multiplier: f64,
    /// Cap on the delay, in milliseconds.
    pub max_ms: u64,
    /// Randomisation applied to the capped delay.
    pub jitter: Jitter,
}

impl Default for RetryPolicy {
    /// 1 s, doubling, capped at 1 h, full jitter.
    fn default() -> Self {
        Self {
            initial_ms: 1_000,
            multiplier: 2.0,
            max_ms: 3_600_000,
            jitter: Jitter::Full,
        }
    }
}

impl RetryPolicy {
    /// Checks the policy's numbers.
    pub fn validate(&self) -> Result<(), SpoolError> {
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0 && self.multiplier <= 100.0) {
            return Err(SpoolError::invalid(format!(
                "retry multiplier must be between 1 and 100, got {}",
                self.multiplier
            )));
        }
        if self.initial_ms > self.max_ms {
            return Err(SpoolError::invalid(format!(
                "retry initial delay ({} ms) exceeds its cap ({} ms)",
                self.initial_ms, self.max_ms
            )));
        }
        Ok(())
    }

    /// The delay before the retry that follows failure number `failures` (1 for the first failure), given a uniform
    /// random `unit` in `[0, 1)` (passed in so tests can pin it).
    pub fn delay(&self, failures: u32, unit: f64) -> Duration {
        let exp = self.multiplier.powi(failures.saturating_sub(1).min(1_000) as i32);
        // 0 × an exponent grown to infinity is NaN, which `min` would turn into the cap: no initial delay stays none.
        let raw = match self.initial_ms {
            0 => 0.0,
            initial => (initial as f64 * exp).min(self.max_ms as f64),
        };
        let unit = unit.clamp(0.0, 1.0);
        let ms = match self.jitter {
            Jitter::None => raw,
            Jitter::Full => raw * unit,
            Jitter::Equal => raw / 2.0 + raw / 2.0 * unit,
        };
        Duration::from_millis(ms.round() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn grows_exponentially_then_caps() {
        let p = RetryPolicy {
            initial_ms: 100,
            multiplier: 2.0,
            max_ms: 1_000,
            jitter: Jitter::None,
        };
        let delays: Vec<u64> = (1..=6).map(|n| p.delay(n, 0.5).as_millis() as u64).collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1_000, 1_000]);
    }

    #[test]
    fn no_initial_delay_stays_none_however_many_failures() {
        let p = RetryPolicy {
            initial_ms: 0,
            multiplier: 100.0,
            max_ms: 60_000,
            jitter: Jitter::None,
        };
        // 100^155 overflows to infinity, and 0 × infinity is NaN.
        assert_eq!(p.delay(1, 0.5), Duration::ZERO);
        assert_eq!(p.delay(200, 0.5), Duration::ZERO);
    }

    #[test]
    fn rejects_nonsense() {
        let shrinking = RetryPolicy {
            multiplier: 0.5,
            ..RetryPolicy::default()
        };
        assert!(shrinking.validate().is_err());
        let inverted = RetryPolicy {
            initial_ms: 10,
            max_ms: 5,
            ..RetryPolicy::default()
        };
        assert!(inverted.validate().is_err());
    }

    proptest! {
        #[test]
        fn jitter_stays_within_bounds(failures in 1u32..100, unit in 0.0f64..1.0, initial in 1u64..10_000, cap in 10_000u64..10_000_000) {
            for jitter in [Jitter::None, Jitter::Full, Jitter::Equal] {
                let p = RetryPolicy { initial_ms: initial, multiplier: 2.0, max_ms: cap, jitter };
                let full = RetryPolicy { jitter: Jitter::None, ..p }.delay(failures, 0.0).as_millis() as u64;
                let d = p.delay(failures, unit).as_millis() as u64;
                prop_assert!(d <= cap);
                prop_assert!(d <= full);
                if jitter == Jitter::Equal { prop_assert!(d + 1 >= full / 2); }
            }
        }
    }
}
